//! Per-node pools of shared connections, and the registry of pools for one cluster.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::time::timeout;

use super::{BackendError, ConnSettings, Connection, NodeAddr, Reply};
use crate::protocol::Protocol;
use bytes::Bytes;

/// The connections to one node: a few per protocol, opened when first needed.
pub struct NodePool {
    addr: NodeAddr,
    settings: Arc<ConnSettings>,
    by_protocol: [OnceLock<Vec<Connection>>; 2],
}

impl NodePool {
    fn new(addr: NodeAddr, settings: Arc<ConnSettings>) -> Self {
        NodePool {
            addr,
            settings,
            by_protocol: [OnceLock::new(), OnceLock::new()],
        }
    }

    /// The node's address.
    pub fn addr(&self) -> &NodeAddr {
        &self.addr
    }

    /// Sends one command and waits for its reply within the request timeout.
    ///
    /// `affinity` picks the connection: one client always uses the same connection to a node,
    /// so its pipelined commands to that node run in the order it sent them.
    pub async fn send(
        &self,
        protocol: Protocol,
        affinity: usize,
        payload: Bytes,
        asking: bool,
    ) -> Result<Reply, BackendError> {
        let conn = self.connection(protocol, affinity);
        let reply = conn.send(payload, asking)?;
        match timeout(self.settings.request_timeout, reply).await {
            Ok(Ok(result)) => result,
            // The connection task ended with the request queued: it was never written.
            Ok(Err(_)) => Err(BackendError::Unreachable {
                addr: self.addr.clone(),
                reason: "connection closed".into(),
            }),
            Err(_) => Err(BackendError::Timeout {
                addr: self.addr.clone(),
                timeout_ms: self.settings.request_timeout.as_millis() as u64,
            }),
        }
    }

    /// Whether some RESP2 connection to the node is established.
    pub fn is_healthy(&self) -> bool {
        self.by_protocol[Protocol::Resp2.index()]
            .get()
            .is_some_and(|conns| conns.iter().any(Connection::is_up))
    }

    /// Opens the RESP2 connections now, so the first requests do not wait for a dial.
    pub fn warm_up(&self) {
        let _ = self.connections(Protocol::Resp2);
    }

    fn connection(&self, protocol: Protocol, affinity: usize) -> &Connection {
        let conns = self.connections(protocol);
        // `connections` never returns an empty list; index 0 exists.
        &conns[affinity % conns.len()]
    }

    fn connections(&self, protocol: Protocol) -> &Vec<Connection> {
        self.by_protocol[protocol.index()].get_or_init(|| {
            (0..self.settings.connections_per_node.max(1))
                .map(|_| Connection::spawn(self.addr.clone(), protocol, Arc::clone(&self.settings)))
                .collect()
        })
    }
}

/// All pools of one cluster, by node address.
pub struct Backends {
    settings: Arc<ConnSettings>,
    pools: Mutex<HashMap<NodeAddr, Arc<NodePool>>>,
}

impl Backends {
    /// An empty registry whose pools use `settings`.
    pub fn new(settings: ConnSettings) -> Self {
        Backends {
            settings: Arc::new(settings),
            pools: Mutex::new(HashMap::new()),
        }
    }

    /// The connection settings.
    pub fn settings(&self) -> &ConnSettings {
        &self.settings
    }

    /// The pool for `addr`, created on first use.
    pub fn pool(&self, addr: &NodeAddr) -> Arc<NodePool> {
        let mut pools = self
            .pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Arc::clone(
            pools.entry(addr.clone()).or_insert_with(|| {
                Arc::new(NodePool::new(addr.clone(), Arc::clone(&self.settings)))
            }),
        )
    }

    /// Drops the pools of nodes not in `keep`; their connections close once no request holds them.
    pub fn retain(&self, keep: &[NodeAddr]) {
        let mut pools = self
            .pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        pools.retain(|addr, _| keep.contains(addr));
    }
}
