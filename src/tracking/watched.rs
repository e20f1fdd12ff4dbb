//! What the table knows of each backend's watcher: whether it runs, which nodes it watches
//! now, and the prefix the backend's route strips.

use std::collections::HashMap;

use bytes::Bytes;

use super::{State, Tracking};
use crate::backend::NodeAddr;

/// What is known of one backend's watcher.
#[derive(Debug)]
pub(super) struct Watch {
    /// Stops the watcher.
    stop: tokio::task::AbortHandle,
    /// The prefix the backend's route strips from keys, put back on the keys its nodes report.
    pub(super) prefix: Option<Bytes>,
    /// Whether the watcher has looked at the backend's nodes once.
    ready: bool,
    /// The nodes it should watch but does not now, each with whether it has tried yet.
    down: HashMap<NodeAddr, bool>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.abort();
    }
}

impl Tracking {
    /// Starts `backend`'s watcher with `start` unless it runs, with the prefix its route strips
    /// (`None`: none); a reload changes it with [`Tracking::set_prefixes`].
    pub fn watch_once(
        &self,
        backend: u64,
        prefix: Option<Bytes>,
        start: impl FnOnce() -> tokio::task::AbortHandle,
    ) {
        let mut state = self.lock();
        match state.watched.get_mut(&backend) {
            // Kept: a session still on an older configuration must not put back the prefix of
            // that configuration (see `set_prefixes`).
            Some(_) => {}
            None => {
                let watch = Watch {
                    stop: start(),
                    prefix,
                    ready: false,
                    down: HashMap::new(),
                };
                state.watched.insert(backend, watch);
            }
        }
    }

    /// The prefix each backend's route strips, as a new configuration says (`None`: none), for
    /// the backends watched.
    pub fn set_prefixes(&self, prefixes: impl IntoIterator<Item = (u64, Option<Bytes>)>) {
        let mut state = self.lock();
        for (backend, prefix) in prefixes {
            if let Some(watch) = state.watched.get_mut(&backend) {
                watch.prefix = prefix;
            }
        }
    }

    /// `backend`'s watcher has ended: forgets it, and whatever was read from the backend.
    pub fn unwatch(&self, backend: u64) {
        let watch = self.lock().watched.remove(&backend);
        drop(watch);
        self.flush_backend(backend);
    }

    /// `backend`'s watcher now watches `nodes`: those it did not are not watched yet, those
    /// it no longer does are forgotten.
    pub fn watching(&self, backend: u64, nodes: &[NodeAddr]) {
        if let Some(watch) = self.lock().watched.get_mut(&backend) {
            watch.down.retain(|n, _| nodes.contains(n));
            // A backend whose nodes are not known yet is not watched: nothing is.
            watch.ready = !nodes.is_empty();
        }
    }

    /// Whether `node` of `backend` is watched now (`Some(true)`), could not be or was lost
    /// (`Some(false)`), or is to be watched and has not been tried yet (`None`).
    pub fn node_watched(&self, backend: u64, node: &NodeAddr, up: Option<bool>) {
        if let Some(watch) = self.lock().watched.get_mut(&backend) {
            match up {
                Some(true) => {
                    watch.down.remove(node);
                }
                Some(false) => {
                    watch.down.insert(node.clone(), true);
                }
                None => {
                    watch.down.insert(node.clone(), false);
                }
            }
        }
    }

    /// Whether every node of `backend` is watched or has failed to be at least once: what
    /// `CLIENT TRACKING ON` waits for, so that a node that cannot be watched does not hold
    /// every new tracking client up.
    pub fn is_settled(&self, backend: u64) -> bool {
        self.lock()
            .watched
            .get(&backend)
            .is_some_and(|w| w.ready && w.down.values().all(|tried| *tried))
    }

    /// Whether every node of `backend` is watched: a read of a backend that is not is
    /// invalidated as soon as it is answered, as no change to it could be told.
    pub(super) fn fully_watched(state: &State, backend: u64) -> bool {
        state
            .watched
            .get(&backend)
            .is_some_and(|w| w.ready && w.down.is_empty())
    }
}
