//! How bytes reach a node: a TCP socket normally, or any other byte stream a [`Connector`]
//! hands out (scripted in-process nodes in tests; TLS later). Everything above this module
//! (handshake, framing, pipelining, retries) is the same whatever the transport.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::NodeAddr;

/// TCP keepalive idle time on node connections: a node that vanished without a FIN (a deleted
/// pod) is noticed even on a connection with nothing in flight.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);

/// A byte stream other than plain TCP.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// An open byte stream to a node.
pub enum Transport {
    /// A TCP socket: split without a lock, the hot path.
    Tcp(TcpStream),
    /// Any other stream.
    Other(Box<dyn Stream>),
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Tcp(stream) => write!(f, "Tcp({:?})", stream.peer_addr().ok()),
            Transport::Other(_) => f.write_str("Other"),
        }
    }
}

impl Transport {
    /// Splits into halves that a reader and a writer can use at once.
    pub fn split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Transport::Tcp(stream) => {
                let (rd, wr) = stream.into_split();
                (ReadHalf::Tcp(rd), WriteHalf::Tcp(wr))
            }
            Transport::Other(stream) => {
                let (rd, wr) = tokio::io::split(stream);
                (ReadHalf::Other(rd), WriteHalf::Other(wr))
            }
        }
    }
}

/// The reading half of a [`Transport`].
pub enum ReadHalf {
    /// Of a TCP socket.
    Tcp(OwnedReadHalf),
    /// Of another stream.
    Other(tokio::io::ReadHalf<Box<dyn Stream>>),
}

/// The writing half of a [`Transport`].
pub enum WriteHalf {
    /// Of a TCP socket.
    Tcp(OwnedWriteHalf),
    /// Of another stream.
    Other(tokio::io::WriteHalf<Box<dyn Stream>>),
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Tcp(rd) => Pin::new(rd).poll_read(cx, buf),
            ReadHalf::Other(rd) => Pin::new(rd).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Tcp(wr) => Pin::new(wr).poll_write(cx, buf),
            WriteHalf::Other(wr) => Pin::new(wr).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(wr) => Pin::new(wr).poll_flush(cx),
            WriteHalf::Other(wr) => Pin::new(wr).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(wr) => Pin::new(wr).poll_shutdown(cx),
            WriteHalf::Other(wr) => Pin::new(wr).poll_shutdown(cx),
        }
    }
}

/// A future that opens a transport.
pub type Connecting<'a> = Pin<Box<dyn Future<Output = io::Result<Transport>> + Send + 'a>>;

/// Opens byte streams to nodes: the one seam between the proxy and the network.
pub trait Connector: Send + Sync + 'static {
    /// Opens a stream to `addr`; the caller bounds the wait with its connect timeout.
    fn connect<'a>(&'a self, addr: &'a NodeAddr) -> Connecting<'a>;
}

impl fmt::Debug for dyn Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Connector")
    }
}

/// Plain TCP with `TCP_NODELAY` and keepalive.
#[derive(Debug, Default, Clone, Copy)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    fn connect<'a>(&'a self, addr: &'a NodeAddr) -> Connecting<'a> {
        Box::pin(async move {
            let stream = TcpStream::connect(addr.as_str()).await?;
            stream.set_nodelay(true)?;
            let keepalive = socket2::TcpKeepalive::new().with_time(KEEPALIVE_IDLE);
            socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive)?;
            Ok(Transport::Tcp(stream))
        })
    }
}
