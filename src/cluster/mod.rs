//! One Redis Cluster: its slot map, how the map is learned and refreshed, and how a command is
//! sent to the node owning its slot, following `MOVED` and `ASK` so the client never sees them.

mod redirect;
pub mod slot;
mod slot_map;
mod topology;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::Bytes;
use tokio::sync::Notify;
use tracing::debug;

use crate::backend::{BackendError, Backends, ConnSettings, NodeAddr, NodePool};
use crate::command::CommandTable;
use crate::config::ClusterConfig;
use crate::metrics as m;
use crate::protocol::{Protocol, reply};

pub use redirect::Redirect;
pub use slot::{SLOT_COUNT, Slot};
pub use slot_map::SlotMap;
pub use topology::{TopologyError, parse_cluster_slots};

/// Where a command goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The master owning this slot.
    Slot(Slot),
    /// Any master: the command has no keys.
    AnyMaster,
}

/// Counters shown by `INFO`.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Topology refreshes that succeeded.
    pub refreshes: AtomicU64,
    /// `MOVED` replies followed.
    pub moved: AtomicU64,
    /// `ASK` replies followed.
    pub ask: AtomicU64,
    /// Requests answered with an error because a backend failed.
    pub backend_errors: AtomicU64,
}

/// A Redis Cluster behind the proxy.
pub struct Cluster {
    name: String,
    config: ClusterConfig,
    backends: Backends,
    map: ArcSwap<SlotMap>,
    commands: ArcSwapOption<CommandTable>,
    redis_version: ArcSwapOption<String>,
    refresh: Notify,
    round_robin: AtomicUsize,
    /// Counters for `INFO`.
    pub stats: ClusterStats,
}

impl Cluster {
    /// A cluster with an empty slot map; [`Cluster::spawn_refresher`] learns the topology.
    pub fn new(name: &str, config: ClusterConfig) -> Arc<Cluster> {
        Arc::new(Cluster {
            name: name.to_string(),
            backends: Backends::new(ConnSettings::from(&config)),
            config,
            map: ArcSwap::from_pointee(SlotMap::empty()),
            commands: ArcSwapOption::empty(),
            redis_version: ArcSwapOption::empty(),
            refresh: Notify::new(),
            round_robin: AtomicUsize::new(0),
            stats: ClusterStats::default(),
        })
    }

    /// The configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current slot map.
    pub fn slot_map(&self) -> Arc<SlotMap> {
        self.map.load_full()
    }

    /// The command table read from the cluster, once a node has answered.
    pub fn commands(&self) -> Option<Arc<CommandTable>> {
        self.commands.load_full()
    }

    /// The Redis version the nodes report, once a node has answered.
    pub fn redis_version(&self) -> Option<Arc<String>> {
        self.redis_version.load_full()
    }

    /// Asks the refresher for a topology refresh soon; calls coalesce.
    pub fn request_refresh(&self) {
        self.refresh.notify_one();
    }

    /// Sends `payload` (one command in RESP) to `target` and returns the reply bytes to give
    /// the client: the backend's reply, or an error reply. Redirects are followed here.
    pub async fn execute(
        &self,
        payload: Bytes,
        target: Target,
        protocol: Protocol,
        affinity: usize,
    ) -> Bytes {
        let map = self.map.load();
        let pool = match target {
            Target::Slot(slot) => map.master(slot).cloned(),
            Target::AnyMaster => {
                let n = self.round_robin.fetch_add(1, Ordering::Relaxed);
                map.any_master(n).cloned()
            }
        };
        drop(map);
        let Some(mut pool) = pool else {
            self.request_refresh();
            return reply::error(&self.no_route_error(target));
        };
        let mut asking = false;
        let mut redirects = 0;
        loop {
            let result = pool.send(protocol, affinity, payload.clone(), asking).await;
            let reply = match result {
                Ok(reply) => reply,
                Err(error) => return self.backend_failed(&error),
            };
            let Some(redirect) = reply.error_text().and_then(Redirect::parse) else {
                return reply.bytes;
            };
            redirects += 1;
            if redirects > self.config.max_redirects {
                return reply::error(&format!(
                    "ERR respgate: gave up after {} redirects; the cluster is changing, try again",
                    self.config.max_redirects
                ));
            }
            let to = redirect.addr().resolve_against(pool.addr());
            debug!(cluster = %self.name, ?redirect, "following redirect");
            match redirect {
                Redirect::Moved { slot, .. } => {
                    self.stats.moved.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(m::REDIRECTS, "kind" => "moved").increment(1);
                    pool = self.backends.pool(&to);
                    self.note_moved(slot, &pool);
                    asking = false;
                }
                Redirect::Ask { .. } => {
                    self.stats.ask.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(m::REDIRECTS, "kind" => "ask").increment(1);
                    pool = self.backends.pool(&to);
                    asking = true;
                }
            }
        }
    }

    fn backend_failed(&self, error: &BackendError) -> Bytes {
        self.stats.backend_errors.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(m::BACKEND_ERRORS).increment(1);
        if matches!(
            error,
            BackendError::Unreachable { .. }
                | BackendError::Lost { .. }
                | BackendError::Timeout { .. }
        ) {
            // The node may have failed over or moved: look again.
            self.request_refresh();
        }
        reply::error(&format!("ERR respgate: {error}"))
    }

    fn no_route_error(&self, target: Target) -> String {
        match target {
            Target::Slot(slot) if !self.map.load().is_empty() => {
                format!("CLUSTERDOWN Hash slot {} not served", slot.get())
            }
            _ => format!(
                "CLUSTERDOWN respgate: no node of cluster '{}' reachable yet (seeds: {})",
                self.name,
                self.config.seeds.join(",")
            ),
        }
    }

    /// Points `slot` at `pool` in the current map until the next refresh confirms it.
    fn note_moved(&self, slot: Slot, pool: &Arc<NodePool>) {
        self.map.rcu(|map| map.with_slot_moved(slot, pool));
        self.request_refresh();
    }
}

/// A redirect's `host:port`, which may leave the host empty (meaning: the node that replied).
trait ResolveAgainst {
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
