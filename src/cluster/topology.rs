//! Learning the slot map: `CLUSTER SLOTS` from known nodes, on a timer and on demand, at most
//! one refresh in flight, the old map serving until a new one is ready.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::protocol::Value;
use tracing::{debug, error, info, warn};

use super::ask::{TopologyError, answers_within_grace, ask};
use super::{Backend, SlotMap, StopSignal};
use crate::backend::{BackendError, NodeAddr};
use crate::command::parse_command_reply;
use crate::config::{BackendKind, ReadFrom};
use crate::slot::SLOT_COUNT;

/// One range of `CLUSTER SLOTS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRange {
    /// First slot.
    pub start: u16,
    /// Last slot, inclusive.
    pub end: u16,
    /// The master serving the range.
    pub master: NodeAddr,
    /// Its replicas.
    pub replicas: Vec<NodeAddr>,
}

/// One node as `CLUSTER NODES` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node id, stable across restarts and address changes.
    pub id: String,
    /// Where to reach it.
    pub addr: NodeAddr,
    /// Whether it is a master.
    pub master: bool,
    /// The id of its master, for a replica.
    pub replica_of: Option<String>,
    /// Whether the cluster considers it failed (or it has no address yet).
    pub failed: bool,
    /// Its config epoch.
    pub epoch: u64,
    /// Slot ranges it serves, inclusive.
    pub slots: Vec<(u16, u16)>,
}

/// One node's view of the whole cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// Every node it knows.
    pub nodes: Vec<NodeInfo>,
}

impl View {
    /// The highest config epoch in the view: the view that has seen the latest failover or
    /// slot move has the highest.
    pub fn max_epoch(&self) -> u64 {
        self.nodes.iter().map(|n| n.epoch).max().unwrap_or(0)
    }

    /// Slots some master serves.
    pub fn slots_covered(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.master)
            .flat_map(|n| &n.slots)
            .map(|&(a, b)| usize::from(b.saturating_sub(a)) + 1)
            .sum()
    }

    /// The slot ranges with their master and healthy replicas, in slot order, each range's
    /// replicas in address order.
    ///
    /// Every node lists the cluster's nodes in its own order, and refreshes ask whichever node
    /// answers best; the order fixed here makes maps built from the same cluster compare equal
    /// (see [`SlotMap::same_routes`]), so a refresh that changed nothing is not taken for a change.
    pub fn ranges(&self) -> Vec<SlotRange> {
        let mut ranges = Vec::new();
        for master in self.nodes.iter().filter(|n| n.master) {
            let mut replicas: Vec<NodeAddr> = self
                .nodes
                .iter()
                .filter(|n| !n.failed && n.replica_of.as_deref() == Some(master.id.as_str()))
                .map(|n| n.addr.clone())
                .collect();
            replicas.sort_unstable();
            for &(start, end) in &master.slots {
                ranges.push(SlotRange {
                    start,
                    end,
                    master: master.addr.clone(),
                    replicas: replicas.clone(),
                });
            }
        }
        ranges.sort_unstable_by_key(|r| r.start);
        ranges
    }
}

/// Parses `CLUSTER NODES` text. An empty host means the node that was asked.
pub fn parse_cluster_nodes(text: &str, asked: &NodeAddr) -> Option<View> {
    let mut nodes = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.split_ascii_whitespace();
        let id = fields.next()?.to_string();
        // ip:port@cport[,hostname]
        let endpoint = fields.next()?;
        let host_port = endpoint.split(['@', ',']).next()?;
        let (host, port) = host_port.rsplit_once(':')?;
        let port: u16 = port.parse().ok()?;
        let flags: Vec<&str> = fields.next()?.split(',').collect();
        let master_id = fields.next()?;
        let (_ping, _pong) = (fields.next()?, fields.next()?);
        let epoch: u64 = fields.next()?.parse().ok()?;
        let _link = fields.next()?;
        let mut slots = Vec::new();
        for slot in fields {
            // Migration markers such as [93->-id] are not ownership.
            if slot.starts_with('[') {
                continue;
            }
            let (a, b) = match slot.split_once('-') {
                Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
                None => {
                    let n = slot.parse().ok()?;
                    (n, n)
                }
            };
            slots.push((a, b));
        }
        let host = if host.is_empty() { asked.host() } else { host };
        let has = |f: &str| flags.contains(&f);
        nodes.push(NodeInfo {
            id,
            addr: NodeAddr::new(&format!("{host}:{port}")),
            master: has("master"),
            replica_of: (master_id != "-").then(|| master_id.to_string()),
            failed: has("fail") || has("noaddr") || has("handshake") || port == 0,
            epoch,
            slots,
        });
    }
    Some(View { nodes })
}

async fn query(
    cluster: &Backend,
    addr: &NodeAddr,
    command: &'static str,
) -> Result<Value, TopologyError> {
    let args: Vec<&str> = command.split(' ').collect();
    ask(addr, &args, cluster.pools.settings(), command).await
}

/// Asks `addr` for its view of the cluster.
async fn view_of(cluster: &Backend, addr: NodeAddr) -> (NodeAddr, Result<View, TopologyError>) {
    let result = async {
        let malformed = || TopologyError::Malformed {
            addr: addr.clone(),
            command: "CLUSTER NODES",
        };
        match query(cluster, &addr, "CLUSTER NODES").await? {
            Value::Bulk(text) => {
                parse_cluster_nodes(&String::from_utf8_lossy(&text), &addr).ok_or_else(malformed)
            }
            _ => Err(malformed()),
        }
    }
    .await;
    (addr, result)
}

/// Loads the command table and version from `addr` if not known yet.
async fn learn_commands(cluster: &Backend, addr: &NodeAddr) -> Result<(), TopologyError> {
    if cluster.commands.load().is_some() {
        return Ok(());
    }
    let reply = query(cluster, addr, "COMMAND").await?;
    let table = parse_command_reply(&reply).map_err(|_| TopologyError::Malformed {
        addr: addr.clone(),
        command: "COMMAND",
    })?;
    info!(backend = %cluster.name, commands = table.len(), "command table loaded");
    if let Value::Bulk(info) = query(cluster, addr, "INFO server").await? {
        let text = String::from_utf8_lossy(&info);
        if let Some(version) = text.lines().find_map(|l| l.strip_prefix("redis_version:")) {
            cluster
                .redis_version
                .store(Some(Arc::new(version.trim().to_string())));
        }
    }
    if !cluster.config.kind.has_slots() {
        // `CONFIG GET databases` answers [name, value]; a node that refuses CONFIG keeps
        // SELECT of other databases refused.
        if let Ok(Value::Array(pair)) = query(cluster, addr, "CONFIG GET databases").await
            && let Some(Value::Bulk(value)) = pair.get(1)
            && let Some(count) = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok())
        {
            cluster.databases.store(count, Ordering::Relaxed);
        }
    }
    cluster.commands.store(Some(Arc::new(table)));
    Ok(())
}

/// How long to wait for more views once one has arrived: a stopped node must not hold up a
/// refresh, but the views of live nodes arrive within a few milliseconds of each other.
const MORE_VIEWS_GRACE: Duration = Duration::from_millis(100);

/// One refresh: learns where the backend's keys live, the way its kind says, and installs the
/// map if routes changed.
pub(super) async fn refresh(cluster: &Backend) -> Result<(), TopologyError> {
    let (from, ranges) = match cluster.config.kind {
        BackendKind::Cluster => cluster_ranges(cluster).await?,
        BackendKind::Standalone => {
            let master = NodeAddr::new(&cluster.config.address);
            let replicas = cluster
                .config
                .replicas
                .iter()
                .map(|r| NodeAddr::new(r))
                .collect();
            (master.clone(), one_node(master, replicas))
        }
        BackendKind::Sentinel => {
            let (master, replicas) = super::sentinel::discover(cluster).await?;
            (master.clone(), one_node(master, replicas))
        }
    };
    install(cluster, &from, &ranges);
    // Writes held for a failover go on once the map names another master (confirmed by its
    // `ROLE`); while the sentinels still name the old one, they wait on.
    if cluster.writes_held() && cluster.failover_moved_master() {
        cluster.release_writes();
    }
    learn_commands(cluster, &from).await
}

/// Every slot on `master`: a backend whose keys all live on one node.
fn one_node(master: NodeAddr, replicas: Vec<NodeAddr>) -> Vec<SlotRange> {
    vec![SlotRange {
        start: 0,
        end: SLOT_COUNT - 1,
        master,
        replicas,
    }]
}

/// Asks every known node and the seeds of a Redis Cluster at once and takes the view with the
/// highest config epoch (then the most slots covered); returns the node that gave it and its
/// slot ranges.
async fn cluster_ranges(cluster: &Backend) -> Result<(NodeAddr, Vec<SlotRange>), TopologyError> {
    let current = cluster.map.load_full();
    let mut candidates = current.nodes();
    for seed in cluster.seeds() {
        if !candidates.contains(&seed) {
            candidates.push(seed);
        }
    }
    let views = answers_within_grace(
        candidates.into_iter().map(|addr| view_of(cluster, addr)),
        MORE_VIEWS_GRACE,
        |(_, view)| view.as_ref().is_ok_and(|v| v.slots_covered() > 0),
    )
    .await;
    let mut best: Option<(NodeAddr, View)> = None;
    let mut last_error = None;
    for (addr, result) in views {
        match result {
            Ok(view) if view.slots_covered() > 0 => {
                let better = best.as_ref().is_none_or(|(_, b)| {
                    (view.max_epoch(), view.slots_covered()) > (b.max_epoch(), b.slots_covered())
                });
                if better {
                    best = Some((addr, view));
                }
            }
            Ok(_) => debug!(backend = %cluster.name, node = %addr, "node knows no slots yet"),
            Err(error) => {
                debug!(backend = %cluster.name, node = %addr, %error, "topology query failed");
                last_error = Some(error);
            }
        }
    }
    let Some((from, view)) = best else {
        return Err(last_error.unwrap_or(TopologyError::NoSlots));
    };
    cluster.remember_nodes(&view);
    Ok((from, view.ranges()))
}

/// Installs the map of `ranges` (learned from `from`) if it routes differently from the current
/// one, and warms up connections to its nodes.
fn install(cluster: &Backend, from: &NodeAddr, ranges: &[SlotRange]) {
    let current = cluster.map.load_full();
    // A master the new map lists only as a replica was demoted: what its connections still
    // wait for was sent to a master. Fresh pools serve it as a replica, and a stopped old
    // master's unanswered writes end now rather than when it leaves the map too.
    let demoted: Vec<NodeAddr> = current
        .masters()
        .iter()
        .map(|pool| pool.addr().clone())
        .filter(|addr| !ranges.iter().any(|range| range.master == *addr))
        .collect();
    if !demoted.is_empty() {
        cluster.pools.retire(&demoted);
    }
    let map = SlotMap::from_ranges(ranges, &cluster.pools);
    if !map.same_routes(&current) {
        cluster.instruments.changed.increment(1);
        info!(
            backend = %cluster.name,
            masters = map.masters().len(),
            nodes = map.nodes().len(),
            slots = map.slots_served(),
            from = %from,
            "topology changed"
        );
        cluster.pools.retain(&map.nodes());
        for pool in map.masters() {
            pool.warm_up();
        }
        if cluster.config.read_from != ReadFrom::Master {
            for pool in map.replicas() {
                pool.warm_up();
            }
        }
        cluster.map.store(Arc::new(map));
    }
}

impl Backend {
    /// Counts a refresh that ended now, for `INFO`, `/metrics` and `/topology`.
    fn count_refresh(&self, ok: bool) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.stats
            .last_refresh_attempt_unix_ms
            .store(now_ms, Ordering::Relaxed);
        if ok {
            self.stats.refreshes.fetch_add(1, Ordering::Relaxed);
            self.stats
                .last_refresh_unix_ms
                .store(now_ms, Ordering::Relaxed);
            self.instruments.refreshed.increment(1);
        } else {
            self.stats.refresh_failures.fetch_add(1, Ordering::Relaxed);
            self.instruments.refresh_failed.increment(1);
        }
    }

    /// Starts the task that keeps the slot map current until `stop` fires (and, for a
    /// Sentinel group, the tasks that listen to the sentinels' events).
    pub fn spawn_refresher(self: &Arc<Self>, mut stop: StopSignal) -> tokio::task::JoinHandle<()> {
        let cluster = Arc::clone(self);
        if cluster.config.kind == BackendKind::Sentinel {
            super::sentinel::watch_sentinels(&cluster, &stop);
        }
        tokio::spawn(async move {
            let interval = Duration::from_millis(cluster.config.refresh_interval_ms);
            let min_gap = Duration::from_millis(cluster.config.min_refresh_interval_ms);
            let retry =
                Duration::from_millis(cluster.config.reconnect_backoff_max_ms.clamp(100, 1000));
            let mut failing = false;
            loop {
                let outcome = refresh(&cluster).await;
                cluster.count_refresh(outcome.is_ok());
                let auth_failed = match outcome {
                    Ok(()) => {
                        cluster.last_error.store(None);
                        if failing {
                            info!(backend = %cluster.name, "topology reachable again");
                        }
                        failing = false;
                        false
                    }
                    Err(error) => {
                        let auth_failed =
                            matches!(error, TopologyError::Backend(BackendError::Auth { .. }));
                        if auth_failed {
                            if !failing {
                                error!(
                                    backend = %cluster.name,
                                    %error,
                                    "backend authentication failed: check clusters.{}.username and password",
                                    cluster.name
                                );
                            }
                        } else if !failing {
                            warn!(backend = %cluster.name, %error, "topology refresh failed; retrying");
                        }
                        cluster.last_error.store(Some(Arc::new(error.to_string())));
                        failing = true;
                        auth_failed
                    }
                };
                // Wrong credentials will not fix themselves: ask again only on the timer, not on
                // every client request, so a bad password cannot become a storm of logins.
                let wait = if auth_failed {
                    interval.max(Duration::from_secs(5))
                } else if failing {
                    retry
                } else {
                    interval
                };
                let on_request = async {
                    if auth_failed {
                        std::future::pending::<()>().await;
                    }
                    cluster.refresh.notified().await;
                };
                // Coalesce requests that arrive during the minimum gap into one refresh.
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = on_request => {}
                    _ = stop.stopped() => return,
                }
                tokio::time::sleep(min_gap).await;
                if stop.is_stopped() {
                    return;
                }
            }
        })
    }
}

#[cfg(test)]
#[path = "topology_tests.rs"]
mod tests;
