//! Whether the proxy should be sent clients: not while it starts (until every backend serves
//! every slot routed to it) and not once it shuts down. What `/ready`, `INFO` and the
//! `respgate_ready` gauge report.

use std::time::Duration;

use tracing::info;

use crate::keyspace::BackendId;
use crate::proxy::Proxy;
use crate::slot::SLOT_COUNT;

/// What `/ready` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Send it clients.
    Ready,
    /// Still starting: these backends (name, routed slots not served yet) are not serving.
    Starting(Vec<(String, usize)>),
    /// Shutting down: send clients elsewhere.
    ShuttingDown,
}

impl Readiness {
    /// Whether clients may be sent.
    pub fn is_ready(&self) -> bool {
        *self == Readiness::Ready
    }

    /// A line saying why, for `/ready`'s body.
    pub fn describe(&self) -> String {
        match self {
            Readiness::Ready => "ready\n".into(),
            Readiness::ShuttingDown => "shutting down\n".into(),
            Readiness::Starting(unready) => {
                let list: Vec<String> = unready
                    .iter()
                    .map(|(name, slots)| format!("{name} ({slots} routed slots not served)"))
                    .collect();
                format!("starting: {}\n", list.join(", "))
            }
        }
    }
}

/// Whether the proxy is ready now; the first time every backend serves its routed slots it is
/// ready for good (until shutdown), and says so in the log.
pub fn readiness(proxy: &Proxy) -> Readiness {
    let life = &proxy.lifecycle;
    if life.is_shutting_down() {
        return Readiness::ShuttingDown;
    }
    if life.has_started() {
        return Readiness::Ready;
    }
    let unready = unserved(proxy);
    if !unready.is_empty() {
        return Readiness::Starting(unready);
    }
    if life.mark_started() {
        info!(
            backends = proxy.snapshot().backends().len(),
            "ready: every backend serves the slots routed to it"
        );
    }
    Readiness::Ready
}

/// Backends with routed slots that no master serves over a live connection, with how many.
fn unserved(proxy: &Proxy) -> Vec<(String, usize)> {
    let snapshot = proxy.snapshot();
    let routes = snapshot.routes();
    let mut unready = Vec::new();
    for (index, cluster) in snapshot.backends().iter().enumerate() {
        let id = BackendId(u16::try_from(index).unwrap_or(u16::MAX));
        let map = cluster.slot_map();
        let healthy: Vec<bool> = map.masters().iter().map(|p| p.is_healthy()).collect();
        let missing = (0..SLOT_COUNT)
            .filter(|&slot| routes.routes_slot_to(id, slot))
            .filter(|&slot| {
                crate::slot::Slot::new(slot)
                    .and_then(|slot| map.master_index(slot))
                    .and_then(|i| healthy.get(i))
                    .is_none_or(|up| !up)
            })
            .count();
        if missing > 0 {
            unready.push((cluster.name().to_string(), missing));
        }
    }
    unready
}

/// Checks readiness every `every` until the proxy is ready or shutting down, so the log says
/// when it became ready even before any probe asks.
pub async fn watch_start(proxy: std::sync::Arc<Proxy>, every: Duration) {
    loop {
        match readiness(&proxy) {
            Readiness::Starting(_) => tokio::time::sleep(every).await,
            Readiness::Ready | Readiness::ShuttingDown => return,
        }
    }
}
