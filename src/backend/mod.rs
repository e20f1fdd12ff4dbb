//! Backend side: connections to Redis nodes (one [`NodeConn`] type reads every reply), the
//! shared pipelined connections built on it, and per-node pools.
//!
//! Every client's request for a node goes over one of a few long-lived connections to it; a
//! client connection never costs a backend connection.

mod hold;
mod job;
mod node_conn;
mod outbox;
mod pool;
pub mod ring;
#[cfg(test)]
pub(crate) mod scripted;
mod shared;
mod spare;
mod stall;
pub mod transport;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;
use tokio::sync::Notify;

use crate::config::BackendConfig;
use crate::protocol::ReplyKind;

/// Shortest and longest silence after which a node counts as stalled (a quarter of the request
/// timeout, within these): long enough that a busy node is not suspected at every slow
/// command, short enough that a failover is noticed well before a request times out.
const STALL_MIN: Duration = Duration::from_millis(100);
const STALL_MAX: Duration = Duration::from_millis(500);

pub use hold::{HOLD_AFTER, Hints};
pub use job::{Batched, ReplyTo};
pub use node_conn::{NodeConn, NodeReader, NodeWriter, request_once};
pub use pool::{NodePool, NodePools, PendingBatch};
pub use shared::SharedConn;
pub use transport::{Connector, TcpConnector, TlsConnector, Transport};

/// A node's `host:port`, as the cluster announces it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeAddr(Arc<str>);

impl NodeAddr {
    /// Wraps a `host:port` string.
    pub fn new(addr: &str) -> Self {
        NodeAddr(Arc::from(addr))
    }

    /// The `host:port` text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host part.
    pub fn host(&self) -> &str {
        self.0.rsplit_once(':').map_or(&self.0, |(host, _)| host)
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One complete reply from a backend, as the bytes it sent.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The raw reply.
    pub bytes: Bytes,
    /// Whether it is an error.
    pub kind: ReplyKind,
}

impl Reply {
    /// The error text (`MOVED 1 h:p`, `ERR ...`) if the reply is an error.
    pub fn error_text(&self) -> Option<&[u8]> {
        match self.kind {
            ReplyKind::Error(start, end) => self.bytes.get(start..end),
            _ => None,
        }
    }
}

/// Who a connection acts as on its node when not as the backend's own user: one of the proxy's
/// restricted users, made on the node with `ACL SETUSER`, so that the node holds what runs
/// there (a script's calls above all) to that user's rights. Built by
/// [`NodeUser::login`](crate::acl::NodeUser::login).
#[derive(Clone, PartialEq, Eq)]
pub struct NodeLogin {
    /// The user's name on the node.
    pub user: String,
    /// Its password there: derived, never configured, never shown.
    pub password: String,
    /// `ACL SETUSER` with all its arguments, which makes the user (or resets it to these
    /// rules) when logging in fails.
    pub setuser: Vec<String>,
}

impl std::fmt::Debug for NodeLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeLogin")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// A request to a backend failed without a reply.
#[derive(Debug, Clone, Error)]
pub enum BackendError {
    /// The node could not be reached; the request was not sent.
    #[error("backend {addr} unreachable: {reason}")]
    Unreachable {
        /// The node.
        addr: NodeAddr,
        /// Why, as the operating system or the timeout said.
        reason: String,
    },
    /// The node rejected the configured credentials; the request was not sent.
    #[error("backend {addr} rejected authentication: {reason}")]
    Auth {
        /// The node.
        addr: NodeAddr,
        /// The node's error reply.
        reason: String,
    },
    /// The connection failed after the request was sent: it may or may not have run.
    #[error(
        "connection to backend {addr} lost before it replied; the command may or may not have run"
    )]
    Lost {
        /// The node.
        addr: NodeAddr,
    },
    /// No reply within the request timeout: the command may or may not have run.
    #[error(
        "backend {addr} did not reply within {timeout_ms} ms; the command may or may not have run"
    )]
    Timeout {
        /// The node.
        addr: NodeAddr,
        /// The timeout that passed.
        timeout_ms: u64,
    },
    /// The node left the topology before the request was written; it was not sent.
    #[error("backend {addr} left the topology before the command was sent")]
    Retired {
        /// The node.
        addr: NodeAddr,
    },
    /// Too many requests already queued for the node; the request was not sent.
    #[error("backend {addr} is overloaded: too many requests in flight")]
    Overloaded {
        /// The node.
        addr: NodeAddr,
    },
    /// The node refused to set the connection up as asked (a `SELECT` of a database it does
    /// not have); nothing was sent.
    #[error("backend {addr} refused the connection's setup: {reason}")]
    Refused {
        /// The node.
        addr: NodeAddr,
        /// The node's error reply.
        reason: String,
    },
    /// The node sent bytes that are not RESP; the connection was closed.
    #[error("backend {addr} sent a malformed reply")]
    Protocol {
        /// The node.
        addr: NodeAddr,
    },
}

impl BackendError {
    /// Whether the request surely did not reach the node, so sending it again cannot run it twice.
    pub fn surely_not_sent(&self) -> bool {
        matches!(
            self,
            BackendError::Unreachable { .. }
                | BackendError::Auth { .. }
                | BackendError::Overloaded { .. }
                | BackendError::Retired { .. }
        )
    }
}

/// How to reach and talk to the nodes of one cluster.
#[derive(Debug, Clone)]
pub struct ConnSettings {
    /// Opens the byte streams: TCP, or scripted nodes in tests.
    pub connector: Arc<dyn Connector>,
    /// ACL user, if any.
    pub username: Option<String>,
    /// Password, if any.
    pub password: Option<String>,
    /// Send `READONLY` on every connection, so replicas serve reads (harmless on masters).
    pub readonly: bool,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Time allowed for one reply.
    pub request_timeout: Duration,
    /// Connections per node and protocol, for each worker thread.
    pub connections_per_node: usize,
    /// Requests queued or in flight per connection.
    pub max_inflight: usize,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// How long a node may leave every command on a connection unanswered before it counts
    /// as stalled.
    pub stall_after: Duration,
    /// Woken when a connection stalls: the backend's topology refresher listens.
    pub on_stall: Arc<Notify>,
}

impl From<&BackendConfig> for ConnSettings {
    fn from(c: &BackendConfig) -> Self {
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        ConnSettings {
            connector: Arc::new(TcpConnector),
            username: non_empty(&c.username),
            password: non_empty(&c.password),
            readonly: c.read_from != crate::config::ReadFrom::Master,
            connect_timeout: c.connect_timeout(),
            request_timeout: c.request_timeout(),
            connections_per_node: c.connections_per_node.max(1),
            max_inflight: c.max_inflight_per_connection.max(1),
            backoff_min: Duration::from_millis(c.reconnect_backoff_min_ms),
            backoff_max: Duration::from_millis(c.reconnect_backoff_max_ms),
            stall_after: (c.request_timeout() / 4).clamp(STALL_MIN, STALL_MAX),
            on_stall: Arc::new(Notify::new()),
        }
    }
}
