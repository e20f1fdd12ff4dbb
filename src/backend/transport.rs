//! How bytes reach a node: a TCP socket normally, TLS over it for a backend with `tls = true`,
//! or any other byte stream a [`Connector`] hands out (scripted in-process nodes in tests).
//! Everything above this module (handshake, framing, pipelining, retries, Sentinel queries) is
//! the same whatever the transport, so every kind of backend connection gets TLS from here.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::NodeAddr;
use crate::config::BackendConfig;
use crate::tls::{Reloading, client_config};

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

impl TcpConnector {
    async fn open(addr: &NodeAddr) -> io::Result<TcpStream> {
        let stream = TcpStream::connect(addr.as_str()).await?;
        stream.set_nodelay(true)?;
        let keepalive = socket2::TcpKeepalive::new().with_time(KEEPALIVE_IDLE);
        socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive)?;
        Ok(stream)
    }
}

impl Connector for TcpConnector {
    fn connect<'a>(&'a self, addr: &'a NodeAddr) -> Connecting<'a> {
        Box::pin(async move { Ok(Transport::Tcp(TcpConnector::open(addr).await?)) })
    }
}

/// TLS over [`TcpConnector`]'s sockets, with the backend's configuration as it is when the
/// connection opens: its files are read at the first connection and looked at again (see
/// [`Reloading`]) when later ones open.
pub struct TlsConnector {
    /// `backends.NAME`, for messages.
    section: String,
    settings: BackendConfig,
    /// Built at the first connection; until then (or while it does not load) each connection
    /// fails with the reason, naming the key and file.
    config: Mutex<Option<Arc<Reloading<rustls::ClientConfig>>>>,
    /// The name every node's certificate must be valid for; `None` checks each node's own
    /// host (nodes announce IPs, so their certificates then need IP subject names).
    server_name: Option<ServerName<'static>>,
}

impl TlsConnector {
    /// Connects to the nodes of the backend `section` (`backends.NAME`) configured by
    /// `settings`, checking certificates against its `tls_server_name` unless that is empty
    /// (validated with the configuration: a name that does not parse counts as empty).
    pub fn new(section: &str, settings: &BackendConfig) -> TlsConnector {
        TlsConnector {
            section: section.into(),
            server_name: ServerName::try_from(settings.tls_server_name.clone()).ok(),
            settings: settings.clone(),
            config: Mutex::new(None),
        }
    }

    /// The configuration in force, built the first time.
    fn config(&self) -> io::Result<Arc<rustls::ClientConfig>> {
        let mut slot = self.config.lock().unwrap_or_else(|p| p.into_inner());
        let reloading = match slot.as_ref() {
            Some(reloading) => Arc::clone(reloading),
            None => {
                let (section, settings) = (self.section.clone(), self.settings.clone());
                let files = [
                    &self.settings.tls_ca_file,
                    &self.settings.tls_cert_file,
                    &self.settings.tls_key_file,
                ];
                let built = Reloading::load(&self.section, &files, move || {
                    client_config(&section, &settings)
                })
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
                Arc::clone(slot.insert(Arc::new(built)))
            }
        };
        drop(slot);
        Ok(reloading.current())
    }
}

impl Connector for TlsConnector {
    fn connect<'a>(&'a self, addr: &'a NodeAddr) -> Connecting<'a> {
        Box::pin(async move {
            let name = match &self.server_name {
                Some(name) => name.clone(),
                None => {
                    let host = addr.host().trim_start_matches('[').trim_end_matches(']');
                    ServerName::try_from(host.to_string()).map_err(|e| {
                        io::Error::new(io::ErrorKind::InvalidInput, format!("TLS: {host}: {e}"))
                    })?
                }
            };
            let config = self.config()?;
            let stream = TcpConnector::open(addr).await?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, stream)
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake: {e}")))?;
            Ok(Transport::Other(Box::new(tls)))
        })
    }
}
