//! Per-node pools of shared connections, and the registry of pools for one cluster.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::oneshot;
use tokio::time::{Instant, timeout, timeout_at};
use tracing::{info, warn};

use super::ring::RingTicket;
use super::spare::Spares;
use super::{BackendError, Batched, ConnSettings, NodeAddr, NodeConn, Reply, ReplyTo, SharedConn};
use crate::metrics::NodeInstruments;
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
    /// One per worker, indexed by [`WorkerSet::current_index`].
    per_worker: Box<[SlotConns]>,
    /// For every other thread (the topology refresher, tests).
    elsewhere: SlotConns,
    /// One more connection per worker (the last for every other thread) and protocol, opened
    /// when first needed: where requests go round a script that holds the node on their usual
    /// connection (see `backend::hold`).
    side: Box<[[OnceLock<SharedConn>; 2]]>,
    /// One connection per protocol that carries no client's data commands: administrative
    /// commands and `INFO` go there, so they are never queued behind a long script or a
    /// `WAIT` that holds a shared connection, as on one Redis they would not be.
    control: [OnceLock<SharedConn>; 2],
    /// Connections opened ahead of need for clients' own connections (see `backend::spare`).
    spares: Arc<Spares>,
    /// Requests, failures and timeouts, for `/metrics`.
    instruments: NodeInstruments,
    /// Whether any of its connections is up, for one log line when the node comes or goes.
    health: Arc<NodeHealth>,
}

impl NodePool {
    fn new(backend: &str, addr: NodeAddr, settings: Arc<ConnSettings>, workers: WorkerSet) -> Self {
        let per_worker = (0..workers.len())
            .map(|_| [OnceLock::new(), OnceLock::new()])
            .collect();
        let side = (0..=workers.len())
            .map(|_| [OnceLock::new(), OnceLock::new()])
            .collect();
        NodePool {
            side,
            spares: Arc::new(Spares::new(workers.len())),
            instruments: NodeInstruments::new(backend, addr.as_str()),
            health: Arc::new(NodeHealth::new(backend, &addr)),
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

    /// A connection to the node for a client of its own, as the backend's user on database 0:
    /// this worker's spare when it has one, else one opened now. Either way a new spare is
    /// opened in the background, for the next client.
    pub async fn own_connection(&self, protocol: Protocol) -> Result<NodeConn, BackendError> {
        let worker = self.workers.current_index();
        let spare = self.spares.take(worker, protocol);
        self.spares
            .refill(worker, protocol, &self.addr, &self.settings);
        match spare {
            Some(conn) => Ok(conn),
            None => NodeConn::open(&self.addr, protocol, &self.settings).await,
        }
    }

    /// Retires every connection to the node: it left the topology.
    fn retire(&self) {
        let shared = self
            .per_worker
            .iter()
            .chain(std::iter::once(&self.elsewhere))
            .flatten()
            .filter_map(OnceLock::get)
            .flatten();
        let control = self.control.iter().filter_map(OnceLock::get);
        let side = self.side.iter().flatten().filter_map(OnceLock::get);
        for conn in shared.chain(control).chain(side) {
            conn.retire();
        }
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

    /// Queues one command whose reply goes to `ticket` of its client's ring, on the connection
    /// `affinity` picks (as [`NodePool::send`] does), or round it when a script holds the node
    /// there and the command need not follow anything of its client's (see `backend::hold`).
    /// The session that holds the ring keeps the time limit; [`NodePool::note`] counts the
    /// outcome.
    pub fn submit(
        &self,
        protocol: Protocol,
        affinity: usize,
        payload: Bytes,
        db: u8,
        ticket: RingTicket,
    ) -> Result<(), BackendError> {
        self.instruments.requests.increment(1);
        let hints = ticket.hints();
        let mut conn = self.connection(protocol, affinity);
        if hints.unordered && conn.is_held() {
            conn = self.side_connection(protocol);
        }
        conn.send_to(payload, false, db, hints.runs_code, ReplyTo::Ring(ticket))
            .inspect_err(|_| self.instruments.errors.increment(1))
    }

    /// Counts the outcome of a command queued with [`NodePool::submit`].
    pub fn note(&self, outcome: &Result<Reply, BackendError>) {
        match outcome {
            Ok(_) => {}
            Err(BackendError::Timeout { .. }) => self.instruments.timeouts.increment(1),
            Err(_) => self.instruments.errors.increment(1),
        }
    }

    /// The time allowed for one reply.
    pub fn request_timeout(&self) -> std::time::Duration {
        self.settings.request_timeout
    }

    /// Sends one command on the node's control connection (see [`NodePool`]'s `control`) and
    /// waits for its reply within the request timeout.
    pub async fn send_control(
        &self,
        protocol: Protocol,
        payload: Bytes,
        db: u8,
    ) -> Result<Reply, BackendError> {
        let conn = self.control[protocol.index()]
            .get_or_init(|| self.spawn(protocol, self.workers.current_index()));
        self.await_reply(conn, payload, false, db).await
    }

    async fn await_reply(
        &self,
        conn: &SharedConn,
        payload: Bytes,
        asking: bool,
        db: u8,
    ) -> Result<Reply, BackendError> {
        self.instruments.requests.increment(1);
        let result = match conn.send(payload, asking, db) {
            Ok(reply) => match timeout(self.settings.request_timeout, reply).await {
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
            },
            Err(overloaded) => Err(overloaded),
        };
        match &result {
            Ok(_) => {}
            Err(BackendError::Timeout { .. }) => self.instruments.timeouts.increment(1),
            Err(_) => self.instruments.errors.increment(1),
        }
        result
    }

    /// Queues `commands` commands (`payload`, one after the other) as one job on the connection
    /// [`NodePool::send`] would use for `affinity`, and returns at once: several batches to
    /// several nodes are in flight together, each awaited with [`PendingBatch::replies`]
    /// within the request timeout from now.
    pub fn send_batch(
        &self,
        protocol: Protocol,
        affinity: usize,
        payload: Bytes,
        commands: usize,
        db: u8,
    ) -> PendingBatch<'_> {
        self.instruments.requests.increment(commands as u64);
        let conn = self.connection(protocol, affinity);
        PendingBatch {
            pool: self,
            deadline: Instant::now() + self.settings.request_timeout,
            queued: conn.send_batch(payload, commands, db),
        }
    }

    /// Shared connections to the node established now, over every worker and protocol.
    pub fn connections_up(&self) -> usize {
        self.health.up.load(Ordering::Relaxed)
    }

    /// Whether some RESP2 connection to the node is established.
    pub fn is_healthy(&self) -> bool {
        self.per_worker
            .iter()
            .chain([&self.elsewhere])
            .any(|conns| {
                conns[Protocol::Resp2.index()]
                    .get()
                    .is_some_and(|conns| conns.iter().any(SharedConn::is_up))
            })
    }

    /// Opens every worker's RESP2 connections now, so the first requests do not wait for a dial.
    pub fn warm_up(&self) {
        for worker in 0..self.workers.len() {
            let _ = self.connections(worker, Protocol::Resp2);
        }
    }

    fn connection(&self, protocol: Protocol, affinity: usize) -> &SharedConn {
        let conns = self.connections(self.workers.current_index(), protocol);
        // `connections` never returns an empty list; index 0 exists.
        &conns[affinity % conns.len()]
    }

    /// This worker's side connection to the node.
    fn side_connection(&self, protocol: Protocol) -> &SharedConn {
        // `side` has one more entry than there are workers: `current_index` is at most that.
        let worker = self.workers.current_index().min(self.side.len() - 1);
        self.side[worker][protocol.index()].get_or_init(|| self.spawn(protocol, worker))
    }

    /// A new connection to the node for `protocol`, its task on worker `worker`.
    fn spawn(&self, protocol: Protocol, worker: usize) -> SharedConn {
        SharedConn::spawn(
            self.addr.clone(),
            protocol,
            Arc::clone(&self.settings),
            &self.workers,
            worker,
            Arc::clone(&self.health),
        )
    }

    fn connections(&self, worker: usize, protocol: Protocol) -> &Vec<SharedConn> {
        let conns = self.per_worker.get(worker).unwrap_or(&self.elsewhere);
        conns[protocol.index()].get_or_init(|| {
            (0..self.settings.connections_per_node.max(1))
                .map(|_| self.spawn(protocol, worker))
                .collect()
        })
    }
}

/// A batch of commands queued by [`NodePool::send_batch`], its replies not yet awaited.
pub struct PendingBatch<'a> {
    pool: &'a NodePool,
    deadline: Instant,
    queued: Result<oneshot::Receiver<Batched>, BackendError>,
}

impl PendingBatch<'_> {
    /// The batch's replies, waiting until the request timeout that began when it was queued.
    /// Past it, or when the connection ended with the batch unwritten, no command has a reply
    /// and `failure` says why (`Timeout`: they may have run).
    pub async fn replies(self) -> Batched {
        let pool = self.pool;
        let batched = match self.queued {
            Ok(reply) => match timeout_at(self.deadline, reply).await {
                Ok(Ok(batched)) => batched,
                // The connection task ended with the batch queued: it was never written.
                Ok(Err(_)) => Batched {
                    replies: Vec::new(),
                    failure: Some(BackendError::Unreachable {
                        addr: pool.addr.clone(),
                        reason: "connection closed".into(),
                    }),
                },
                Err(_) => Batched {
                    replies: Vec::new(),
                    failure: Some(BackendError::Timeout {
                        addr: pool.addr.clone(),
                        timeout_ms: pool.settings.request_timeout.as_millis() as u64,
                    }),
                },
            },
            Err(overloaded) => Batched {
                replies: Vec::new(),
                failure: Some(overloaded),
            },
        };
        match &batched.failure {
            None => {}
            Some(BackendError::Timeout { .. }) => pool.instruments.timeouts.increment(1),
            Some(_) => pool.instruments.errors.increment(1),
        }
        batched
    }
}

/// Whether a node is reachable, as its shared connections find it: one log line when the first
/// connection comes up, one when the last goes down (or the node cannot be reached at all),
/// however many workers and protocols have connections to it.
#[derive(Debug)]
pub struct NodeHealth {
    backend: String,
    addr: NodeAddr,
    /// Connections up now.
    up: AtomicUsize,
    /// Whether the node was reported down since it was last up.
    reported_down: AtomicBool,
}

impl NodeHealth {
    pub(super) fn new(backend: &str, addr: &NodeAddr) -> Self {
        NodeHealth {
            backend: backend.to_string(),
            addr: addr.clone(),
            up: AtomicUsize::new(0),
            reported_down: AtomicBool::new(false),
        }
    }

    /// A connection came up.
    pub fn connected(&self) {
        if self.up.fetch_add(1, Ordering::Relaxed) == 0 {
            self.reported_down.store(false, Ordering::Relaxed);
            info!(backend = %self.backend, node = %self.addr, "backend node up");
        }
    }

    /// A connection that was up failed.
    pub fn lost(&self, reason: &str) {
        if self.up.fetch_sub(1, Ordering::Relaxed) == 1
            && !self.reported_down.swap(true, Ordering::Relaxed)
        {
            warn!(backend = %self.backend, node = %self.addr, %reason, "backend node down");
        }
    }

    /// A connection that was up ended because the node left the topology.
    pub fn closed(&self) {
        self.up.fetch_sub(1, Ordering::Relaxed);
    }

    /// A connection could not be opened.
    pub fn unreachable(&self, reason: &str) {
        if self.up.load(Ordering::Relaxed) == 0 && !self.reported_down.swap(true, Ordering::Relaxed)
        {
            warn!(backend = %self.backend, node = %self.addr, %reason, "backend node down");
        }
    }
}

/// The node pools of one backend, by node address.
pub struct NodePools {
    backend: String,
    settings: Arc<ConnSettings>,
    workers: WorkerSet,
    pools: Mutex<HashMap<NodeAddr, Arc<NodePool>>>,
}

impl NodePools {
    /// An empty registry of backend `backend`'s pools, which use `settings`, with connections
    /// for each of `workers`.
    pub fn new(backend: &str, settings: ConnSettings, workers: WorkerSet) -> Self {
        NodePools {
            backend: backend.to_string(),
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
                &self.backend,
                addr.clone(),
                Arc::clone(&self.settings),
                self.workers.clone(),
            ))
        }))
    }

    /// Drops the pools of nodes not in `keep` and retires their connections (see
    /// [`SharedConn::retire`]): requests still holding such a pool are not left waiting on a
    /// node that no longer serves them.
    pub fn retain(&self, keep: &[NodeAddr]) {
        self.retire_where(|addr| !keep.contains(addr));
    }

    /// Drops the pools of `nodes` and retires their connections, as [`NodePools::retain`] does:
    /// for masters a failover demoted, whose connections carry commands sent to a master.
    pub fn retire(&self, nodes: &[NodeAddr]) {
        self.retire_where(|addr| nodes.contains(addr));
    }

    fn retire_where(&self, leaves: impl Fn(&NodeAddr) -> bool) {
        let mut left = Vec::new();
        {
            let mut pools = self
                .pools
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            pools.retain(|addr, pool| {
                let stays = !leaves(addr);
                if !stays {
                    left.push(Arc::clone(pool));
                }
                stays
            });
        }
        for pool in left {
            pool.retire();
        }
    }
}
