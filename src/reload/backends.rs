//! The backends of a new snapshot. A backend whose settings did not change carries over with
//! its slot map, its node connections and its topology refresher; a new or changed one is
//! started afresh. One left out keeps serving the requests of the snapshots that still hold it,
//! and stops (refresher, then connections) once the last of them is dropped.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cluster::{Backend, StopSignal};
use crate::config::{BackendConfig, Config};
use crate::proxy::{RunningBackend, Snapshot};
use crate::workers::WorkerSet;

/// How a snapshot's backends differ from the previous one's, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendChanges {
    /// New names.
    pub added: Vec<String>,
    /// Names whose settings changed: started afresh.
    pub changed: Vec<String>,
    /// Names no longer configured.
    pub removed: Vec<String>,
    /// Names carried over with their connections.
    pub kept: Vec<String>,
}

impl BackendChanges {
    /// Whether any backend was added, changed or removed.
    pub fn any(&self) -> bool {
        !(self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty())
    }
}

/// Makes backends and starts their refreshers; keeps the refreshers' handles, so that the
/// proxy can wait for them when it stops.
pub struct Starter {
    workers: WorkerSet,
    shutdown: watch::Receiver<bool>,
    refreshers: Mutex<Vec<JoinHandle<()>>>,
}

impl Starter {
    /// Backends with connections on `workers`, whose refreshers stop when `shutdown` turns
    /// true (or their lifeline ends).
    pub fn new(workers: WorkerSet, shutdown: watch::Receiver<bool>) -> Starter {
        Starter {
            workers,
            shutdown,
            refreshers: Mutex::new(Vec::new()),
        }
    }

    /// The backends of `config`, in id order: `previous`'s where their settings are the same,
    /// new ones otherwise.
    pub fn build(
        &self,
        config: &Config,
        previous: Option<&Snapshot>,
    ) -> (Vec<RunningBackend>, BackendChanges) {
        let mut changes = BackendChanges::default();
        let mut backends = Vec::new();
        for (name, settings) in config.backend_list() {
            let old = previous.and_then(|p| p.running().find(|(c, _)| c.name() == name));
            match old {
                Some((cluster, lifeline)) if *cluster.config() == settings => {
                    backends.push((Arc::clone(cluster), Arc::clone(lifeline)));
                    changes.kept.push(name);
                }
                Some(_) => {
                    backends.push(self.start(&name, settings));
                    changes.changed.push(name);
                }
                None => {
                    backends.push(self.start(&name, settings));
                    changes.added.push(name);
                }
            }
        }
        if let Some(previous) = previous {
            changes.removed = previous
                .backends()
                .iter()
                .map(|c| c.name().to_string())
                .filter(|name| !backends.iter().any(|(c, _)| c.name() == name))
                .collect();
        }
        (backends, changes)
    }

    /// A new backend `name`, its refresher started.
    fn start(&self, name: &str, settings: BackendConfig) -> RunningBackend {
        let cluster = Backend::new(name, settings, self.workers.clone());
        let (lifeline, stop) = StopSignal::new(self.shutdown.clone());
        let handle = cluster.spawn_refresher(stop);
        let mut refreshers = self
            .refreshers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        refreshers.retain(|r| !r.is_finished());
        refreshers.push(handle);
        (cluster, Arc::new(lifeline))
    }

    /// Waits until every refresher has stopped (after shutdown).
    pub async fn join(&self) {
        let refreshers = std::mem::take(
            &mut *self
                .refreshers
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        for refresher in refreshers {
            let _ = refresher.await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::acl::Users;

    /// A configuration with a Redis Cluster backend per (name, seed).
    fn config(backends: &[(&str, &str)]) -> Config {
        let mut config = Config::default();
        for (name, seed) in backends {
            let backend = BackendConfig {
                seeds: vec![(*seed).into()],
                ..BackendConfig::default()
            };
            config.backends.insert((*name).into(), backend);
        }
        config
    }

    #[tokio::test]
    async fn unchanged_backends_carry_over_changed_ones_start_and_removed_ones_stop() {
        let (_shutdown, shutdown_rx) = watch::channel(false);
        let starter = Starter::new(WorkerSet::inline(), shutdown_rx);
        let first = config(&[
            ("a", "127.0.0.1:1"),
            ("b", "127.0.0.1:2"),
            ("c", "127.0.0.1:3"),
        ]);
        let (backends, changes) = starter.build(&first, None);
        assert_eq!(changes.added, ["a", "b", "c"]);
        let old = Snapshot::new(first.clone(), Users::default(), backends, 1);

        let second = config(&[
            ("a", "127.0.0.1:1"),
            ("b", "127.0.0.1:9"),
            ("d", "127.0.0.1:4"),
        ]);
        let (backends, changes) = starter.build(&second, Some(&old));
        assert_eq!(
            changes,
            BackendChanges {
                added: vec!["d".into()],
                changed: vec!["b".into()],
                removed: vec!["c".into()],
                kept: vec!["a".into()],
            }
        );
        let new = Snapshot::new(second, Users::default(), backends, 2);
        let same = |name: &str| {
            let id = |s: &Snapshot| s.backend_id(name).unwrap();
            Arc::ptr_eq(
                &old.backends()[id(&old).index()],
                &new.backends()[id(&new).index()],
            )
        };
        assert!(same("a"), "a carries over");
        assert!(!same("b"), "b starts afresh");
        assert_eq!(
            new.carried_over(&old, old.backend_id("a").unwrap()),
            new.backend_id("a")
        );
        assert_eq!(new.carried_over(&old, old.backend_id("b").unwrap()), None);

        // Once the old snapshot is gone, the refreshers of b's old cluster and of c stop; the
        // others run on.
        let running = |starter: &Starter| {
            let refreshers = starter.refreshers.lock().unwrap();
            refreshers.iter().filter(|r| !r.is_finished()).count()
        };
        assert_eq!(running(&starter), 5);
        drop(old);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while running(&starter) > 3 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(running(&starter), 3);
        drop(new);
    }
}
