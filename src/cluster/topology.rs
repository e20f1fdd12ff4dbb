//! Learning the slot map: `CLUSTER SLOTS` from known nodes, on a timer and on demand, at most
//! one refresh in flight, the old map serving until a new one is ready.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;
use thiserror::Error;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{Cluster, SlotMap};
use crate::backend::{BackendError, NodeAddr, request_once};
use crate::command::parse_command_reply;
use crate::metrics as m;

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

/// The topology could not be learned from a node.
#[derive(Debug, Error)]
pub enum TopologyError {
    /// The node could not be asked.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The node answered with an error (for example, cluster support disabled).
    #[error("{addr} answered {command} with: {reply}")]
    Refused {
        /// The node.
        addr: NodeAddr,
        /// The command asked.
        command: &'static str,
        /// The error reply.
        reply: String,
    },
    /// The reply did not have the documented shape.
    #[error("{addr} sent an unexpected {command} reply")]
    Malformed {
        /// The node.
        addr: NodeAddr,
        /// The command asked.
        command: &'static str,
    },
}

/// Parses a RESP2 `CLUSTER SLOTS` reply. An empty host means the node that was asked.
pub fn parse_cluster_slots(reply: &OwnedFrame, asked: &NodeAddr) -> Option<Vec<SlotRange>> {
    let OwnedFrame::Array(ranges) = reply else {
        return None;
    };
    let node = |frame: &OwnedFrame| -> Option<NodeAddr> {
        let OwnedFrame::Array(fields) = frame else {
            return None;
        };
        let host = match fields.first()? {
            OwnedFrame::BulkString(b) | OwnedFrame::SimpleString(b) => {
                String::from_utf8(b.clone()).ok()?
            }
            _ => return None,
        };
        let OwnedFrame::Integer(port) = fields.get(1)? else {
            return None;
        };
        let host = if host.is_empty() || host == "?" {
            asked.host().to_string()
        } else {
            host
        };
        Some(NodeAddr::new(&format!("{host}:{port}")))
    };
    ranges
        .iter()
        .map(|range| {
            let OwnedFrame::Array(fields) = range else {
                return None;
            };
            let (OwnedFrame::Integer(start), OwnedFrame::Integer(end)) =
                (fields.first()?, fields.get(1)?)
            else {
                return None;
            };
            Some(SlotRange {
                start: u16::try_from(*start).ok()?,
                end: u16::try_from(*end).ok()?,
                master: node(fields.get(2)?)?,
                replicas: fields.iter().skip(3).filter_map(node).collect(),
            })
        })
        .collect()
}

async fn query(
    cluster: &Cluster,
    addr: &NodeAddr,
    command: &'static str,
) -> Result<OwnedFrame, TopologyError> {
    let args: Vec<&str> = command.split(' ').collect();
    let reply = request_once(addr, &args, cluster.backends.settings()).await?;
    if let Some(text) = reply.error_text() {
        return Err(TopologyError::Refused {
            addr: addr.clone(),
            command,
            reply: String::from_utf8_lossy(text).into_owned(),
        });
    }
    match decode(&reply.bytes) {
        Ok(Some((frame, _))) => Ok(frame),
        _ => Err(TopologyError::Malformed {
            addr: addr.clone(),
            command,
        }),
    }
}

/// Asks `addr` for the slot map, and for the command table and version when not known yet.
async fn learn_from(cluster: &Cluster, addr: &NodeAddr) -> Result<SlotMap, TopologyError> {
    let slots = query(cluster, addr, "CLUSTER SLOTS").await?;
    let ranges = parse_cluster_slots(&slots, addr).ok_or_else(|| TopologyError::Malformed {
        addr: addr.clone(),
        command: "CLUSTER SLOTS",
    })?;
    if cluster.commands.load().is_none() {
        let reply = query(cluster, addr, "COMMAND").await?;
        let table = parse_command_reply(&reply).map_err(|_| TopologyError::Malformed {
            addr: addr.clone(),
            command: "COMMAND",
        })?;
        info!(cluster = %cluster.name, commands = table.len(), "command table loaded");
        cluster.commands.store(Some(Arc::new(table)));
        if let OwnedFrame::BulkString(info) = query(cluster, addr, "INFO server").await? {
            let text = String::from_utf8_lossy(&info);
            if let Some(version) = text.lines().find_map(|l| l.strip_prefix("redis_version:")) {
                cluster
                    .redis_version
                    .store(Some(Arc::new(version.trim().to_string())));
            }
        }
    }
    Ok(SlotMap::from_ranges(&ranges, &cluster.backends))
}

/// One refresh: asks known nodes, then seeds, until one answers; installs the map if it changed.
async fn refresh(cluster: &Cluster) -> Result<(), TopologyError> {
    let current = cluster.map.load_full();
    let mut candidates = current.nodes();
    for seed in &cluster.config.seeds {
        let seed = NodeAddr::new(seed);
        if !candidates.contains(&seed) {
            candidates.push(seed);
        }
    }
    let mut last_error = None;
    for addr in candidates {
        match learn_from(cluster, &addr).await {
            Ok(map) if map.is_empty() => {
                debug!(cluster = %cluster.name, node = %addr, "node knows no slots yet");
            }
            Ok(map) => {
                cluster.stats.refreshes.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(m::TOPOLOGY_REFRESHES).increment(1);
                if !map.same_routes(&current) {
                    info!(
                        cluster = %cluster.name,
                        masters = map.masters().len(),
                        slots = map.slots_served(),
                        from = %addr,
                        "topology changed"
                    );
                    cluster.backends.retain(&map.nodes());
                    for pool in map.masters() {
                        pool.warm_up();
                    }
                    cluster.map.store(Arc::new(map));
                }
                return Ok(());
            }
            Err(error) => {
                debug!(cluster = %cluster.name, node = %addr, %error, "topology query failed");
                last_error = Some(error);
            }
        }
    }
    Err(last_error.unwrap_or(TopologyError::Malformed {
        addr: NodeAddr::new("-"),
        command: "CLUSTER SLOTS",
    }))
}

impl Cluster {
    /// Starts the task that keeps the slot map current until `shutdown` turns true.
    pub fn spawn_refresher(
        self: &Arc<Self>,
        mut shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let cluster = Arc::clone(self);
        tokio::spawn(async move {
            let interval = Duration::from_millis(cluster.config.refresh_interval_ms);
            let min_gap = Duration::from_millis(cluster.config.min_refresh_interval_ms);
            let retry =
                Duration::from_millis(cluster.config.reconnect_backoff_max_ms.clamp(100, 1000));
            let mut failing = false;
            loop {
                match refresh(&cluster).await {
                    Ok(()) => {
                        if failing {
                            info!(cluster = %cluster.name, "topology reachable again");
                        }
                        failing = false;
                    }
                    Err(error) => {
                        if !failing {
                            warn!(cluster = %cluster.name, %error, "topology refresh failed; retrying");
                        }
                        failing = true;
                    }
                }
                // Coalesce requests that arrive during the minimum gap into one refresh.
                let wait = if failing { retry } else { interval };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = cluster.refresh.notified() => {}
                    _ = shutdown.changed() => return,
                }
                tokio::time::sleep(min_gap).await;
                if *shutdown.borrow() {
                    return;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> OwnedFrame {
        OwnedFrame::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn parses_ranges_with_replicas_and_empty_hosts() {
        let node = |host: &str, port: i64| {
            OwnedFrame::Array(vec![bulk(host), OwnedFrame::Integer(port), bulk("id")])
        };
        let reply = OwnedFrame::Array(vec![OwnedFrame::Array(vec![
            OwnedFrame::Integer(0),
            OwnedFrame::Integer(5460),
            node("", 7000),
            node("10.0.0.2", 7003),
        ])]);
        let ranges = parse_cluster_slots(&reply, &NodeAddr::new("127.0.0.1:7000")).unwrap();
        assert_eq!(
            ranges,
            vec![SlotRange {
                start: 0,
                end: 5460,
                master: NodeAddr::new("127.0.0.1:7000"),
                replicas: vec![NodeAddr::new("10.0.0.2:7003")],
            }]
        );
    }
}
