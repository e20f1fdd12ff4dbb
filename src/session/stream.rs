//! The client's byte stream, plain TCP or TLS over it, as the session uses it: wait until
//! readable or writable, then read or write what is possible without waiting.
//!
//! Plain TCP is the hot path and stays exactly as it was (one `recv` per readable socket, one
//! `writev` per batch of replies). TLS keeps the same shape with two differences: rustls may
//! hold decrypted bytes the socket no longer signals (so such a stream counts as readable), and
//! encrypted bytes the socket did not take yet (so the session is not done writing until they
//! are out).

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// Longest wait for a TLS client to take the `close_notify` alert when its session ends.
const TLS_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// A client connection.
pub enum ClientStream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS, after its handshake. Boxed: rustls's state is large, and plain sessions should not
    /// carry its size.
    Tls(Box<TlsStream<TcpStream>>),
}

impl ClientStream {
    /// The proxy's address the client connected to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().local_addr()
    }

    /// The proxy's file descriptor of the client's socket, as Redis shows its own in
    /// `CLIENT LIST`; -1 where the platform has none.
    pub fn fd(&self) -> i32 {
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            self.tcp().as_raw_fd()
        }
        #[cfg(not(unix))]
        {
            -1
        }
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            ClientStream::Tcp(stream) => stream,
            ClientStream::Tls(stream) => stream.get_ref().0,
        }
    }

    /// Completes when a read may find bytes (or the end of the stream).
    pub(super) async fn readable(&self) -> io::Result<()> {
        match self {
            // The socket's one reader slot (`poll_read_ready`), not `readable()`: that adds a
            // waiter to a shared list under a lock on every wait, and only the session reads.
            ClientStream::Tcp(stream) => poll_fn(|cx| stream.poll_read_ready(cx)).await,
            ClientStream::Tls(stream) => {
                // rustls wants no more input while it holds decrypted bytes not read yet, or
                // once the client said close_notify: either way a read answers at once.
                if !stream.get_ref().1.wants_read() {
                    return Ok(());
                }
                let tcp = stream.get_ref().0;
                poll_fn(|cx| tcp.poll_read_ready(cx)).await
            }
        }
    }

    /// Completes when the socket may take bytes.
    pub(super) async fn writable(&self) -> io::Result<()> {
        let tcp = self.tcp();
        poll_fn(|cx| tcp.poll_write_ready(cx)).await
    }

    /// Reads what is there into `buf` without waiting: `None` when nothing is, `Some(Ok(0))` at
    /// the end of the stream.
    ///
    /// Polled once rather than `try_read`: tokio clears the socket's readiness after a short
    /// read, so the next wait needs no extra `recv` that would only answer EAGAIN, and a socket
    /// already known to be drained costs no syscall at all.
    pub(super) fn read_now(&mut self, buf: &mut BytesMut) -> Option<io::Result<usize>> {
        match self {
            ClientStream::Tcp(stream) => stream.read_buf(buf).now_or_never(),
            ClientStream::Tls(stream) => stream.read_buf(buf).now_or_never(),
        }
    }

    /// [`ClientStream::read_now`] through a buffer of `N` bytes on the stack: what came, in a
    /// buffer of its own size (empty at the end of the stream).
    pub(super) fn read_now_sized<const N: usize>(&mut self) -> Option<io::Result<BytesMut>> {
        let mut scratch = [MaybeUninit::<u8>::uninit(); N];
        let mut cx = Context::from_waker(Waker::noop());
        let mut read = ReadBuf::uninit(&mut scratch);
        let polled = match self {
            ClientStream::Tcp(stream) => Pin::new(stream).poll_read(&mut cx, &mut read),
            ClientStream::Tls(stream) => Pin::new(stream.as_mut()).poll_read(&mut cx, &mut read),
        };
        match polled {
            Poll::Ready(Ok(())) => Some(Ok(BytesMut::from(read.filled()))),
            Poll::Ready(Err(e)) => Some(Err(e)),
            Poll::Pending => None,
        }
    }

    /// Writes what the socket takes now, as `try_write_vectored` does: `WouldBlock` when it
    /// takes nothing. Over TLS the bytes count as written once rustls has encrypted them; its
    /// buffer of encrypted bytes is bounded (64 KiB by default).
    pub(super) fn write_now(&mut self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            ClientStream::Tcp(stream) => stream.try_write_vectored(slices),
            ClientStream::Tls(stream) => {
                let mut cx = Context::from_waker(Waker::noop());
                match Pin::new(stream.as_mut()).poll_write_vectored(&mut cx, slices) {
                    Poll::Ready(written) => written,
                    Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
                }
            }
        }
    }

    /// Sends encrypted bytes rustls still holds, as far as the socket takes them now; plain
    /// TCP holds none.
    pub(super) fn flush_now(&mut self) -> io::Result<()> {
        match self {
            ClientStream::Tcp(_) => Ok(()),
            ClientStream::Tls(stream) => {
                let mut cx = Context::from_waker(Waker::noop());
                match Pin::new(stream.as_mut()).poll_flush(&mut cx) {
                    Poll::Ready(result) => result,
                    Poll::Pending => Ok(()),
                }
            }
        }
    }

    /// Whether bytes already counted as written still wait to go out (over TLS only).
    pub(super) fn holds_output(&self) -> bool {
        match self {
            ClientStream::Tcp(_) => false,
            ClientStream::Tls(stream) => stream.get_ref().1.wants_write(),
        }
    }

    /// Ends the connection: shuts the write side down, after TLS's `close_notify` when the
    /// client takes it in time.
    pub(super) async fn close(&mut self) {
        match self {
            ClientStream::Tcp(stream) => {
                let _ = stream.shutdown().await;
            }
            ClientStream::Tls(stream) => {
                // Boxed: the timer would otherwise size every session's future.
                let closing = Box::pin(tokio::time::timeout(TLS_CLOSE_TIMEOUT, stream.shutdown()));
                let _ = closing.await;
            }
        }
    }
}
