//! One Redis Cluster: its slot map, how the map is learned and refreshed, and how a command is
//! sent to the node owning its slot, following `MOVED` and `ASK` so the client never sees them.

mod ask;
mod batch;
mod lifeline;
mod redirect;
mod retry;
mod scripts;
mod sentinel;
mod slot_map;
#[cfg(test)]
mod tests;
mod topology;

use crate::slot::Slot;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::Bytes;
use tokio::sync::Notify;
use tracing::debug;

use crate::backend::ring::RingTicket;
use crate::backend::{BackendError, Backends, ConnSettings, Connector, NodeAddr, NodePool, Reply};
use crate::command::{Access, CommandTable};
use crate::config::{BackendKind, ClusterConfig, ReadFrom};
use crate::protocol::{Protocol, reply};
use crate::workers::WorkerSet;

pub use ask::TopologyError;
pub use batch::{FirstNode, Settled};
pub use lifeline::{Lifeline, StopSignal};
pub use redirect::Redirect;
pub use retry::{Attempts, Next, RETRYABLE_ERRORS, RetryBudget};
pub use scripts::ScriptCache;
pub use slot_map::SlotMap;
pub use topology::{NodeInfo, View, parse_cluster_nodes};

/// The command [`Cluster::serve_after`] sends, as each attempt needs it.
#[derive(Clone, Copy)]
struct Sending<'s> {
    payload: &'s Bytes,
    target: &'s Target,
    access: Access,
    protocol: Protocol,
    db: u8,
    affinity: usize,
}

/// What [`Cluster::serve_after`]'s attempts so far leave for the next.
struct Progress {
    attempts: Attempts,
    /// Whether a missing script was loaded already (once per command).
    script_loaded: bool,
    /// Set by a redirect: the node to send to next, and whether `ASKING` goes first.
    redirected: Option<(Arc<NodePool>, bool)>,
    /// Whether a read still goes to a replica.
    to_replica: bool,
}

/// What follows one attempt in [`Cluster::serve_after`].
enum Step {
    /// The reply to give, and the node that gave it.
    Done(Bytes, Option<Arc<NodePool>>),
    /// Another attempt.
    Again,
}

/// Where a command goes.
#[derive(Clone)]
pub enum Target {
    /// The master owning this slot.
    Slot(Slot),
    /// Any master: the command has no keys.
    AnyMaster,
    /// This node: one part of a command sent to every master.
    Node(Arc<NodePool>),
    /// This node, on its control connection: a command about the server (`SCRIPT`,
    /// `FUNCTION`) that must not wait behind clients' requests on the shared connections.
    Control(Arc<NodePool>),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Slot(slot) => write!(f, "Slot({})", slot.get()),
            Target::AnyMaster => f.write_str("AnyMaster"),
            Target::Node(pool) => write!(f, "Node({})", pool.addr()),
            Target::Control(pool) => write!(f, "Control({})", pool.addr()),
        }
    }
}

/// Counters shown by `INFO`.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Topology refreshes that succeeded.
    pub refreshes: AtomicU64,
    /// Topology refreshes that failed.
    pub refresh_failures: AtomicU64,
    /// When the last refresh ended, ok or not, in milliseconds since the Unix epoch; 0 before
    /// any.
    pub last_refresh_attempt_unix_ms: AtomicU64,
    /// When the last successful refresh ended, in milliseconds since the Unix epoch; 0 before
    /// any.
    pub last_refresh_unix_ms: AtomicU64,
    /// Connections to this backend's nodes held by one client each (blocking commands,
    /// transactions, subscriptions), open now.
    pub own_connections: Arc<AtomicU64>,
    /// `MOVED` replies followed.
    pub moved: AtomicU64,
    /// `ASK` replies followed.
    pub ask: AtomicU64,
    /// Requests answered with an error because a backend failed.
    pub backend_errors: AtomicU64,
    /// Requests sent again after a node could not take them.
    pub retries: AtomicU64,
}

/// A Redis Cluster behind the proxy.
pub struct Cluster {
    name: String,
    config: ClusterConfig,
    backends: Backends,
    map: ArcSwap<SlotMap>,
    commands: ArcSwapOption<CommandTable>,
    redis_version: ArcSwapOption<String>,
    /// Databases the nodes have (`CONFIG GET databases`), once known; 0 until then. Only a
    /// backend without slots has more than one.
    databases: AtomicU64,
    /// Wakes the refresher: a request saw the topology change, or a node stalled.
    refresh: Arc<Notify>,
    /// When writes may go to the master again, in milliseconds after `created`; 0 when they
    /// are not held. Set when a sentinel announces a failover of this backend's master, so no
    /// write is acknowledged by a master about to be demoted (and lose it).
    writes_held_until_ms: AtomicU64,
    /// Wakes the writes held for a failover when they may go on.
    writes_released: Notify,
    /// When the cluster was made: the origin of `writes_held_until_ms`.
    created: tokio::time::Instant,
    /// The master when writes were held: they go on once another one is in the map.
    held_master: Mutex<Option<NodeAddr>>,
    /// Every node of the latest view: with the configured seeds, who to ask next time.
    known_nodes: Mutex<Vec<NodeAddr>>,
    /// Why the last refresh failed, for the error clients get while no map is known.
    last_error: ArcSwapOption<String>,
    round_robin: AtomicUsize,
    /// The retry limits every request of this cluster stays within.
    retry_budget: RetryBudget,
    /// Scripts seen in `EVAL` and `SCRIPT LOAD`, to heal `NOSCRIPT` after a failover.
    pub scripts: ScriptCache,
    /// Counters for `INFO`.
    pub stats: ClusterStats,
    /// Handles for `/metrics`.
    pub instruments: crate::metrics::BackendInstruments,
}

impl Cluster {
    /// A cluster with an empty slot map; [`Cluster::spawn_refresher`] learns the topology.
    pub fn new(name: &str, config: ClusterConfig, workers: WorkerSet) -> Arc<Cluster> {
        let connector = crate::tls::connector(name, &config);
        Cluster::with_connector(name, config, workers, connector)
    }

    /// A cluster whose nodes are reached through `connector`: TCP or TLS in production (as
    /// [`Cluster::new`] chooses from the configuration), scripted in-process nodes in tests.
    pub fn with_connector(
        name: &str,
        config: ClusterConfig,
        workers: WorkerSet,
        connector: Arc<dyn Connector>,
    ) -> Arc<Cluster> {
        let refresh = Arc::new(Notify::new());
        let settings = ConnSettings {
            connector,
            on_stall: Arc::clone(&refresh),
            ..ConnSettings::from(&config)
        };
        Arc::new(Cluster {
            name: name.to_string(),
            backends: Backends::new(name, settings, workers),
            retry_budget: RetryBudget::from(&config),
            config,
            map: ArcSwap::from_pointee(SlotMap::empty()),
            commands: ArcSwapOption::empty(),
            redis_version: ArcSwapOption::empty(),
            databases: AtomicU64::new(0),
            refresh,
            writes_held_until_ms: AtomicU64::new(0),
            writes_released: Notify::new(),
            created: tokio::time::Instant::now(),
            held_master: Mutex::new(None),
            known_nodes: Mutex::new(Vec::new()),
            last_error: ArcSwapOption::empty(),
            round_robin: AtomicUsize::new(0),
            scripts: ScriptCache::default(),
            stats: ClusterStats::default(),
            instruments: crate::metrics::BackendInstruments::new(name),
        })
    }

    /// The configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What kind of backend it is.
    pub fn kind(&self) -> BackendKind {
        self.config.kind
    }

    /// Why the last refresh failed, if it did.
    pub fn last_error(&self) -> Option<Arc<String>> {
        self.last_error.load_full()
    }

    /// The configuration this cluster was made from.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The current slot map.
    pub fn slot_map(&self) -> Arc<SlotMap> {
        self.map.load_full()
    }

    /// Whether a node has told the proxy where the keys live and what the commands are: the
    /// backend can serve requests without making them wait.
    pub fn is_known(&self) -> bool {
        !self.map.load().is_empty() && self.commands.load().is_some()
    }

    /// The command table read from the cluster, once a node has answered.
    pub fn commands(&self) -> Option<Arc<CommandTable>> {
        self.commands.load_full()
    }

    /// The Redis version the nodes report, once a node has answered.
    pub fn redis_version(&self) -> Option<Arc<String>> {
        self.redis_version.load_full()
    }

    /// Holds writes until `release_writes`, or for `retry_timeout_ms` at most: a failover of
    /// the master is under way.
    pub fn hold_writes(&self) {
        let master = self.map.load().masters().first().map(|p| p.addr().clone());
        *self.held_master.lock().unwrap_or_else(|p| p.into_inner()) = master;
        let until = self.created.elapsed() + self.config.retry_timeout();
        self.writes_held_until_ms
            .store(until.as_millis().max(1) as u64, Ordering::Relaxed);
    }

    /// Whether the map's master is another than when writes were held: the failover is done.
    pub fn failover_moved_master(&self) -> bool {
        let held = self.held_master.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.map.load().masters().first().map(|p| p.addr().clone());
        now.is_some() && *held != now
    }

    /// Lets writes go to the master again, and wakes those held.
    pub fn release_writes(&self) {
        self.writes_held_until_ms.store(0, Ordering::Relaxed);
        self.writes_released.notify_waiters();
    }

    /// Waits `delay`, or less if held writes are released meanwhile: a held write goes on the
    /// moment the new master is known, not at its next retry.
    pub async fn wait_while_held(&self, delay: std::time::Duration) {
        let released = self.writes_released.notified();
        tokio::pin!(released);
        // Registered before the look, so a release between the look and the wait still wakes.
        released.as_mut().enable();
        if !self.writes_held() {
            return;
        }
        tokio::select! {
            () = released => {}
            () = tokio::time::sleep(delay) => {}
        }
    }

    /// Whether writes are held now.
    pub fn writes_held(&self) -> bool {
        let until = self.writes_held_until_ms.load(Ordering::Relaxed);
        until != 0 && (self.created.elapsed().as_millis() as u64) < until
    }

    /// How many databases `SELECT` may choose from on this backend: 1 for a Redis Cluster,
    /// what the node reported for the other kinds (0 while not known).
    pub fn databases(&self) -> u64 {
        if self.config.kind.has_slots() {
            1
        } else {
            self.databases.load(Ordering::Relaxed)
        }
    }

    /// Asks the refresher for a topology refresh soon; calls coalesce.
    pub fn request_refresh(&self) {
        self.refresh.notify_one();
    }

    /// Sends `payload` (one command in RESP) to `target` and returns the reply bytes to give
    /// the client: the backend's reply, or an error reply.
    ///
    /// What follows each attempt (a redirect, a retry after a pause, the reply) is decided by
    /// [`Cluster::judge`], the one retry engine. Here are only the shared connection's own
    /// concerns: reads on replicas, and `NOSCRIPT` healed by loading the script.
    pub async fn execute(
        &self,
        payload: Bytes,
        target: Target,
        access: Access,
        protocol: Protocol,
        db: u8,
        affinity: usize,
    ) -> Bytes {
        self.serve(payload, target, access, protocol, db, affinity)
            .await
            .0
    }

    /// [`Cluster::execute`], also returning the node that answered last (none when no node
    /// was reached): what the slow log names. The pool is the one the request already held,
    /// moved out, so knowing it costs nothing.
    pub async fn serve(
        &self,
        payload: Bytes,
        target: Target,
        access: Access,
        protocol: Protocol,
        db: u8,
        affinity: usize,
    ) -> (Bytes, Option<Arc<NodePool>>) {
        self.serve_after(None, payload, target, access, protocol, db, affinity)
            .await
    }

    /// Makes the first attempt of a command at once, its reply going to `ticket` of the client's
    /// ring: the session's path for a forwarded command. `None` when the command needs more than
    /// one plain attempt can give (a replica read, a control connection, writes held during a
    /// failover, no route yet, a full queue): the caller gives the ticket up and runs
    /// [`Cluster::serve`]. The outcome, once in the ring, goes to [`Cluster::settle`].
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        &self,
        payload: &Bytes,
        target: &Target,
        access: Access,
        protocol: Protocol,
        db: u8,
        affinity: usize,
        ticket: RingTicket,
    ) -> Option<Arc<NodePool>> {
        if matches!(target, Target::Control(_))
            || access == Access::Read && self.config.read_from != ReadFrom::Master
            || access == Access::Write && self.writes_held()
        {
            return None;
        }
        let pool = self.resolve(target)?;
        pool.submit(protocol, affinity, payload.clone(), db, ticket)
            .ok()?;
        Some(pool)
    }

    /// What the first attempt made by [`Cluster::start`] on `pool` came to: the reply bytes
    /// when they are final (a reply that is not an error, from the node that still serves the
    /// ticket), else the outcome back, for [`Cluster::serve_after`] to judge.
    pub fn settle(
        &self,
        pool: &NodePool,
        target: &Target,
        access: Access,
        outcome: Result<Reply, BackendError>,
    ) -> Result<Bytes, Result<Reply, BackendError>> {
        pool.note(&outcome);
        match outcome {
            Ok(reply)
                if reply.error_text().is_none()
                    && !self.replaced_while_writing(target, access, pool, &reply) =>
            {
                Ok(reply.bytes)
            }
            outcome => Err(outcome),
        }
    }

    /// [`Cluster::serve`], after a first attempt on a pool that came to an outcome (`first`),
    /// when there was one: the one retry engine for every forwarded command.
    #[allow(clippy::too_many_arguments)]
    pub async fn serve_after(
        &self,
        mut first: Option<(Arc<NodePool>, Result<Reply, BackendError>)>,
        payload: Bytes,
        target: Target,
        access: Access,
        protocol: Protocol,
        db: u8,
        affinity: usize,
    ) -> (Bytes, Option<Arc<NodePool>>) {
        let sending = Sending {
            payload: &payload,
            target: &target,
            access,
            protocol,
            db,
            affinity,
        };
        // The budget counts from the first attempt, made before this engine was asked: one that
        // timed out began a request timeout ago (any other outcome came at once), so a retry
        // after it still ends within `request_timeout_ms` + `retry_timeout_ms` of the request.
        let now = tokio::time::Instant::now();
        let started = match &first {
            Some((_, Err(BackendError::Timeout { .. }))) => now
                .checked_sub(self.conn_settings().request_timeout)
                .unwrap_or(now),
            _ => now,
        };
        let mut progress = Progress {
            attempts: Attempts::since(self.retry_budget, started),
            script_loaded: false,
            redirected: None,
            to_replica: access == Access::Read && self.config.read_from != ReadFrom::Master,
        };
        loop {
            if let Some((pool, outcome)) = first.take() {
                match self
                    .judge_outcome(&sending, &mut progress, outcome, (pool, false, false))
                    .await
                {
                    Step::Done(bytes, pool) => return (bytes, pool),
                    Step::Again => continue,
                }
            }
            let replica = match (progress.to_replica, &target, &progress.redirected) {
                (true, Target::Slot(slot), None) => {
                    self.map.load().replica(*slot, affinity).cloned()
                }
                _ => None,
            };
            let on_replica = replica.is_some();
            let (pool, asking) = match progress.redirected.take().or(replica.map(|r| (r, false))) {
                Some(next) => next,
                None => match self.resolve(&target) {
                    Some(pool) => (pool, false),
                    None => match progress.attempts.next_delay() {
                        Some(delay) => {
                            tokio::time::sleep(delay).await;
                            continue;
                        }
                        None => return (reply::error(&self.no_route_error(&target)), None),
                    },
                },
            };
            if access == Access::Write && self.writes_held() {
                // A failover is under way: a write now could be acknowledged by the master
                // about to be demoted, and lost. Wait for the new master.
                match progress.attempts.next_delay() {
                    Some(delay) => {
                        self.wait_while_held(delay).await;
                        continue;
                    }
                    None => return (reply::error(&self.failing_over_error()), Some(pool)),
                }
            }
            let sent = match &target {
                Target::Control(_) => pool.send_control(protocol, payload.clone(), db).await,
                _ => {
                    pool.send(protocol, affinity, payload.clone(), asking, db)
                        .await
                }
            };
            match self
                .judge_outcome(&sending, &mut progress, sent, (pool, asking, on_replica))
                .await
            {
                Step::Done(bytes, pool) => return (bytes, pool),
                Step::Again => {}
            }
        }
    }

    /// One attempt's outcome on `pool` (sent with `ASKING` when `asking`, to a replica when
    /// `on_replica`): the reply to give, or another attempt (after the pause or redirect
    /// [`Cluster::judge`] chose, noted in `redirected`).
    async fn judge_outcome(
        &self,
        sending: &Sending<'_>,
        progress: &mut Progress,
        sent: Result<Reply, BackendError>,
        (pool, asking, on_replica): (Arc<NodePool>, bool, bool),
    ) -> Step {
        let Sending {
            payload,
            target,
            access,
            protocol,
            db,
            affinity,
        } = *sending;
        let Progress {
            attempts,
            script_loaded,
            redirected,
            to_replica,
        } = progress;
        let outcome = match sent {
            Ok(reply) if self.replaced_while_writing(target, access, &pool, &reply) => {
                // The node acknowledged a write after the cluster made another node master
                // of the slot (it was paused, then resumed): the write will be undone when
                // it rejoins as a replica, so an OK would be a lie.
                Err(BackendError::Lost {
                    addr: pool.addr().clone(),
                })
            }
            Ok(reply)
                if !*script_loaded
                    && reply
                        .error_text()
                        .is_some_and(|text| text.starts_with(b"NOSCRIPT")) =>
            {
                // The node lacks a script the proxy has seen (a promoted replica does not
                // inherit the script cache): load it there and send the command again.
                *script_loaded = true;
                let Some(load) = self.scripts.load_command_for(payload) else {
                    return Step::Done(reply.bytes, Some(pool));
                };
                let loaded = pool.send(protocol, affinity, load, false, db).await;
                if !matches!(&loaded, Ok(done) if done.error_text().is_none()) {
                    return Step::Done(reply.bytes, Some(pool));
                }
                *redirected = Some((pool, asking));
                return Step::Again;
            }
            Err(error) if on_replica && self.config.read_from == ReadFrom::PreferReplica => {
                // The replica failed this read: the master answers it instead.
                debug!(backend = %self.name, %error, "replica failed a read; asking the master");
                *to_replica = false;
                return Step::Again;
            }
            outcome => outcome,
        };
        match self.judge(attempts, outcome, access, pool.addr()) {
            Next::Reply(reply) => Step::Done(reply.bytes, Some(pool)),
            Next::Fail(error) => Step::Done(error, Some(pool)),
            Next::Redirect { to, asking } => {
                *redirected = Some((self.backends.pool(&to), asking));
                Step::Again
            }
            Next::Retry(delay) => {
                tokio::time::sleep(delay).await;
                Step::Again
            }
        }
    }

    /// The pool of the node `target` routes to on the current map.
    /// Whether `pool` answered a write for a slot that, by now, another master serves.
    fn replaced_while_writing(
        &self,
        target: &Target,
        access: Access,
        pool: &NodePool,
        reply: &Reply,
    ) -> bool {
        let Target::Slot(slot) = target else {
            return false;
        };
        if access != Access::Write || reply.error_text().is_some() {
            return false;
        }
        let map = self.map.load();
        map.master(*slot)
            .is_some_and(|now| now.addr() != pool.addr())
            && !map.is_master(pool.addr())
    }

    /// `request_timeout_ms` of this cluster.
    pub fn request_timeout_ms(&self) -> u64 {
        self.config.request_timeout_ms
    }

    /// The node `target` routes to now, for a client's own connection.
    pub fn node_for(&self, target: &Target) -> Option<NodeAddr> {
        self.resolve(target).map(|pool| pool.addr().clone())
    }

    /// The shared connections to `addr`, for a command meant for that one node.
    pub fn pool(&self, addr: &NodeAddr) -> Arc<NodePool> {
        self.backends.pool(addr)
    }

    /// The connection settings of this cluster's nodes.
    pub fn conn_settings(&self) -> &ConnSettings {
        self.backends.settings()
    }

    /// Points `slot` at `addr` until the next refresh, after a `MOVED` seen on a client's own
    /// connection.
    pub fn moved(&self, slot: Slot, addr: &NodeAddr) {
        let pool = self.backends.pool(addr);
        self.note_moved(slot, &pool);
    }

    fn resolve(&self, target: &Target) -> Option<Arc<NodePool>> {
        let map = self.map.load();
        match target {
            Target::Slot(slot) => map.master(*slot).cloned(),
            Target::Node(pool) | Target::Control(pool) => Some(Arc::clone(pool)),
            Target::AnyMaster => {
                let n = self.round_robin.fetch_add(1, Ordering::Relaxed);
                map.any_master(n).cloned()
            }
        }
    }

    fn no_route_error(&self, target: &Target) -> String {
        match target {
            Target::Slot(slot) if !self.map.load().is_empty() => {
                format!("CLUSTERDOWN Hash slot {} not served", slot.get())
            }
            _ => self.unreachable_error(),
        }
    }

    /// The error for a write held past the retry budget while a failover goes on.
    pub fn failing_over_error(&self) -> String {
        format!(
            "TRYAGAIN respgate: backend '{}' is failing over; the write was not sent, try again",
            self.name
        )
    }

    /// The error for requests while no node has told the proxy the topology.
    pub fn unreachable_error(&self) -> String {
        let reason = self
            .last_error
            .load()
            .as_ref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        let asked = match self.config.kind {
            BackendKind::Cluster => format!("seeds: {}", self.config.seeds.join(",")),
            BackendKind::Sentinel => format!(
                "master '{}' of sentinels {}",
                self.config.master_name,
                self.config.sentinels.join(",")
            ),
            BackendKind::Standalone => format!("server {}", self.config.address),
        };
        format!(
            "CLUSTERDOWN respgate: no node of backend '{}' reachable yet ({asked}){reason}",
            self.name
        )
    }

    /// Makes `addr` the master of every slot, as if a refresh had said so (unit tests).
    #[cfg(test)]
    pub(crate) fn serve_all_slots_from(&self, addr: &NodeAddr) {
        let ranges = [topology::SlotRange {
            start: 0,
            end: crate::slot::SLOT_COUNT - 1,
            master: addr.clone(),
            replicas: Vec::new(),
        }];
        self.map
            .store(Arc::new(SlotMap::from_ranges(&ranges, &self.backends)));
    }

    /// Nodes to ask for the topology: the configured seeds, then every node last seen.
    fn seeds(&self) -> Vec<NodeAddr> {
        let mut seeds: Vec<NodeAddr> = self.config.seeds.iter().map(|s| NodeAddr::new(s)).collect();
        let known = self.known_nodes.lock().unwrap_or_else(|p| p.into_inner());
        for node in known.iter() {
            if !seeds.contains(node) {
                seeds.push(node.clone());
            }
        }
        seeds
    }

    /// Makes every live node of `view` a seed for later refreshes; nodes that left are dropped.
    fn remember_nodes(&self, view: &View) {
        let nodes = view
            .nodes
            .iter()
            .filter(|n| !n.failed)
            .map(|n| n.addr.clone())
            .collect();
        *self.known_nodes.lock().unwrap_or_else(|p| p.into_inner()) = nodes;
    }

    /// Points `slot` at `pool` in the current map until the next refresh confirms it.
    fn note_moved(&self, slot: Slot, pool: &Arc<NodePool>) {
        self.map.rcu(|map| map.with_slot_moved(slot, pool));
        self.request_refresh();
    }
}

/// A redirect's `host:port`, which may leave the host empty (meaning: the node that replied).
pub trait ResolveAgainst {
    /// The address, with the replying node's host filled in when the redirect left it empty.
    fn resolve_against(&self, replier: &NodeAddr) -> NodeAddr;
}

impl ResolveAgainst for NodeAddr {
    fn resolve_against(&self, replier: &NodeAddr) -> NodeAddr {
        if self.host().is_empty() {
            NodeAddr::new(&format!("{}{}", replier.host(), self.as_str()))
        } else {
            self.clone()
        }
    }
}
