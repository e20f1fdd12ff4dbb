//! Per-node pools of shared connections, and the registry of pools for one cluster.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::time::timeout;

use super::{BackendError, ConnSettings, NodeAddr, Reply, SharedConn};
use crate::protocol::Protocol;
use crate::workers::WorkerSet;
use bytes::Bytes;

/// SharedConns of one worker to one node: a few per protocol, opened when first needed.
type SlotConns = [OnceLock<Vec<SharedConn>>; 2];

/// The connections to one node. Each worker thread has its own (see [`crate::workers`]), so a
/// request and its reply stay on the thread of the client that sent it.
pub struct NodePool {
    addr: NodeAddr,
    settings: Arc<ConnSettings>,
    workers: WorkerSet,
    /// One per worker, indexed by [`WorkerSet::current_slot`].
    per_worker: Box<[SlotConns]>,
    /// For every other thread (the topology refresher, tests).
    elsewhere: SlotConns,
    /// One connection per protocol that carries no client's data commands: administrative
    /// commands and `INFO` go there, so they are never queued behind a long script or a
    /// `WAIT` that holds a shared connection, as on one Redis they would not be.
    control: [OnceLock<SharedConn>; 2],
}

impl NodePool {
    fn new(addr: NodeAddr, settings: Arc<ConnSettings>, workers: WorkerSet) -> Self {
        let per_worker = (0..workers.len())
            .map(|_| [OnceLock::new(), OnceLock::new()])
            .collect();
        NodePool {
            addr,
            settings,
            workers,
            per_worker,
            elsewhere: [OnceLock::new(), OnceLock::new()],
            control: [OnceLock::new(), OnceLock::new()],
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
        db: u8,
    ) -> Result<Reply, BackendError> {
        let conn = self.connection(protocol, affinity);
        self.await_reply(conn, payload, asking, db).await
    }

    /// Sends one command on the node's control connection (see [`NodePool`]'s `control`) and
    /// waits for its reply within the request timeout.
    pub async fn send_control(
        &self,
        protocol: Protocol,
        payload: Bytes,
        db: u8,
    ) -> Result<Reply, BackendError> {
        let conn = self.control[protocol.index()].get_or_init(|| {
            SharedConn::spawn(
                self.addr.clone(),
                protocol,
                Arc::clone(&self.settings),
                &self.workers,
                self.workers.current_slot(),
            )
        });
        self.await_reply(conn, payload, false, db).await
    }

    async fn await_reply(
        &self,
        conn: &SharedConn,
        payload: Bytes,
        asking: bool,
        db: u8,
    ) -> Result<Reply, BackendError> {
        let reply = conn.send(payload, asking, db)?;
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
        self.per_worker.iter().chain([&self.elsewhere]).any(|slot| {
            slot[Protocol::Resp2.index()]
                .get()
                .is_some_and(|conns| conns.iter().any(SharedConn::is_up))
        })
    }

    /// Opens every worker's RESP2 connections now, so the first requests do not wait for a dial.
    pub fn warm_up(&self) {
        for slot in 0..self.workers.len() {
            let _ = self.connections(slot, Protocol::Resp2);
        }
    }

    fn connection(&self, protocol: Protocol, affinity: usize) -> &SharedConn {
        let conns = self.connections(self.workers.current_slot(), protocol);
        // `connections` never returns an empty list; index 0 exists.
        &conns[affinity % conns.len()]
    }

    fn connections(&self, slot: usize, protocol: Protocol) -> &Vec<SharedConn> {
        let conns = self.per_worker.get(slot).unwrap_or(&self.elsewhere);
        conns[protocol.index()].get_or_init(|| {
            (0..self.settings.connections_per_node.max(1))
                .map(|_| {
                    SharedConn::spawn(
                        self.addr.clone(),
                        protocol,
                        Arc::clone(&self.settings),
                        &self.workers,
                        slot,
                    )
                })
                .collect()
        })
    }
}

/// All pools of one cluster, by node address.
pub struct Backends {
    settings: Arc<ConnSettings>,
    workers: WorkerSet,
    pools: Mutex<HashMap<NodeAddr, Arc<NodePool>>>,
}

impl Backends {
    /// An empty registry whose pools use `settings`, with connections for each of `workers`.
    pub fn new(settings: ConnSettings, workers: WorkerSet) -> Self {
        Backends {
            settings: Arc::new(settings),
            workers,
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
        Arc::clone(pools.entry(addr.clone()).or_insert_with(|| {
            Arc::new(NodePool::new(
                addr.clone(),
                Arc::clone(&self.settings),
                self.workers.clone(),
            ))
        }))
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
