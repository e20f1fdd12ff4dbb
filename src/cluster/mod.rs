//! One backend of any kind (a Redis Cluster, a Sentinel group or a standalone server), as a
//! [`Backend`]: its slot map, how the map is learned and refreshed, and how a command is sent
//! to the node owning its slot, following `MOVED` and `ASK` so the client never sees them.
//! A Sentinel group or a standalone server is a backend whose one master holds every slot.

mod ask;
mod batch;
mod engine;
mod lifeline;
mod redirect;
mod retry;
mod scripts;
mod sentinel;
mod serve;
mod slot_map;
#[cfg(test)]
mod tests;
mod topology;

use crate::slot::Slot;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::Notify;

use crate::backend::{ConnSettings, Connector, NodeAddr, NodePool, NodePools};
use crate::command::CommandTable;
use crate::config::{BackendConfig, BackendKind};
use crate::workers::WorkerSet;

pub use ask::TopologyError;
pub use batch::Settled;
pub use engine::{Carrier, Course};
pub use lifeline::{Lifeline, StopSignal};
pub use redirect::Redirect;
pub use retry::{Attempts, Next, RETRYABLE_ERRORS, RetryBudget, Tried};
pub use scripts::ScriptCache;
pub use serve::{FirstNode, Sending};
pub use slot_map::SlotMap;
pub use topology::{NodeInfo, View, parse_cluster_nodes};

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
pub struct BackendStats {
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

/// One backend behind the proxy: a Redis Cluster, a Sentinel group or a standalone server.
pub struct Backend {
    name: String,
    /// Unique among the backends this process ever made: what client-side caching knows the
    /// backend by, as a reload may give a new backend the name of an old one.
    serial: u64,
    config: BackendConfig,
    pools: NodePools,
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
    pub stats: BackendStats,
    /// Handles for `/metrics`.
    pub instruments: crate::metrics::BackendInstruments,
}

impl Backend {
    /// A cluster with an empty slot map; [`Backend::spawn_refresher`] learns the topology.
    pub fn new(name: &str, config: BackendConfig, workers: WorkerSet) -> Arc<Backend> {
        let connector = crate::tls::connector(name, &config);
        Backend::with_connector(name, config, workers, connector)
    }

    /// A cluster whose nodes are reached through `connector`: TCP or TLS in production (as
    /// [`Backend::new`] chooses from the configuration), scripted in-process nodes in tests.
    pub fn with_connector(
        name: &str,
        config: BackendConfig,
        workers: WorkerSet,
        connector: Arc<dyn Connector>,
    ) -> Arc<Backend> {
        let refresh = Arc::new(Notify::new());
        let settings = ConnSettings {
            connector,
            on_stall: Arc::clone(&refresh),
            ..ConnSettings::from(&config)
        };
        static SERIALS: AtomicU64 = AtomicU64::new(1);
        Arc::new(Backend {
            name: name.to_string(),
            serial: SERIALS.fetch_add(1, Ordering::Relaxed),
            pools: NodePools::new(name, settings, workers),
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
            stats: BackendStats::default(),
            instruments: crate::metrics::BackendInstruments::new(name),
        })
    }

    /// The configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This backend's serial number, unique in the process.
    pub fn serial(&self) -> u64 {
        self.serial
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
    pub fn config(&self) -> &BackendConfig {
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

    /// `request_timeout_ms` of this cluster.
    pub fn request_timeout_ms(&self) -> u64 {
        self.config.request_timeout_ms
    }

    /// The node `target` routes to now, for a client's own connection.
    pub fn node_for(&self, target: &Target) -> Option<NodeAddr> {
        self.serving(&self.map.load(), target)
            .map(|pool| pool.addr().clone())
    }

    /// The shared connections to `addr`, for a command meant for that one node.
    pub fn pool(&self, addr: &NodeAddr) -> Arc<NodePool> {
        self.pools.pool(addr)
    }

    /// The connection settings of this cluster's nodes.
    pub fn conn_settings(&self) -> &ConnSettings {
        self.pools.settings()
    }

    /// Points `slot` at `addr` until the next refresh, after a `MOVED` seen on a client's own
    /// connection.
    pub fn moved(&self, slot: Slot, addr: &NodeAddr) {
        let pool = self.pools.pool(addr);
        self.note_moved(slot, &pool);
    }

    /// The node that serves `target` on `map`: the slot's master, the node named, or a master
    /// in turn for a command without keys. The masters' part of [`Backend::first_node`].
    fn serving(&self, map: &SlotMap, target: &Target) -> Option<Arc<NodePool>> {
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
            .store(Arc::new(SlotMap::from_ranges(&ranges, &self.pools)));
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
