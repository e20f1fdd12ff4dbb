//! Client-side caching through the proxy (`CLIENT TRACKING`): which client read which key, and
//! telling it when the key may have changed.
//!
//! A node's own tracking cannot serve the proxy's clients: many clients share each backend
//! connection, so the node would not know who read what. The proxy keeps the table itself,
//! here, and learns of every change from the nodes: a watcher per node
//! ([`crate::cluster::watch`]) holds one connection in `CLIENT TRACKING ON BCAST` mode, on
//! which the node reports every key written there, by any client, a script, an expiry or an
//! eviction, and `FLUSHALL`. Where the proxy cannot know (a watcher's connection lost or just
//! made, a node added or gone, a backend replaced by a reload), every client that read through
//! that backend is told to forget everything, never left with silence.
//!
//! A write through this proxy also invalidates the keys it names at once, before the node has
//! answered, so a client of this proxy that reads after a write's reply never finds the value
//! from before it in its cache; the node's report follows and finds nothing more to do.
//!
//! Invalidations reach a client through its [`Mailbox`](crate::clients::Mailbox): the session
//! writes them after every reply it owed when they came. A read's reply that may predate a
//! change therefore always reaches the client before that change's invalidation, whichever of
//! the node's two connections (the read's, the watcher's) spoke first.

mod frames;
mod table;
pub mod watch;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use crate::backend::NodeAddr;
use crate::clients::ClientRegistry;
use table::Table;

pub use frames::{flush_frame, invalidation_frame};

/// Most bytes of invalidations that may wait for one client; past it they are replaced by one
/// "forget everything".
const MAILBOX_LIMIT_BYTES: usize = 1024 * 1024;

/// How a client asked to be told of changes: `CLIENT TRACKING ON` and its options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mode {
    /// `REDIRECT id`: invalidations go to that client instead.
    pub redirect: Option<u64>,
    /// `BCAST`: every change of a key under one of `prefixes`, read or not.
    pub bcast: bool,
    /// `PREFIX`es of `BCAST` mode; none means every key.
    pub prefixes: Vec<Bytes>,
    /// `OPTIN`: only reads after `CLIENT CACHING YES` are tracked.
    pub optin: bool,
    /// `OPTOUT`: reads after `CLIENT CACHING NO` are not tracked.
    pub optout: bool,
    /// `NOLOOP`: not told of its own writes.
    pub noloop: bool,
}

/// One key a client read through the proxy.
#[derive(Debug, Clone)]
pub struct ReadKey {
    /// The backend it lives on ([`crate::cluster::Backend::serial`]).
    pub backend: u64,
    /// The key as the backend stores it (its route's prefix stripped).
    pub stored: Bytes,
    /// The key as the client named it, which is what its invalidation names.
    pub named: Bytes,
}

/// Counters of client-side caching, for `INFO` and `/metrics`.
#[derive(Debug, Default)]
pub struct TrackingStats {
    /// Keys whose invalidation was sent to some client.
    pub invalidations: AtomicU64,
    /// "Forget everything" messages sent.
    pub flushes: AtomicU64,
    /// Keys dropped from the table to stay within `tracking_table_max_keys`.
    pub evictions: AtomicU64,
}

/// The proxy's table of tracked keys and the clients that track them.
#[derive(Debug)]
pub struct Tracking {
    state: Mutex<State>,
    /// Keys in the table, read without the lock by every write, which has nothing to do while
    /// it is 0.
    keys: AtomicUsize,
    /// Clients with tracking on.
    clients: AtomicUsize,
    /// Most keys the table holds; 0 for no limit.
    max_keys: AtomicUsize,
    registry: Arc<ClientRegistry>,
    /// Counters.
    pub stats: TrackingStats,
}

#[derive(Debug, Default)]
struct State {
    clients: HashMap<u64, Tracker>,
    table: Table,
    /// The backends watched, by serial.
    watched: HashMap<u64, Watch>,
}

/// What is known of one backend's watcher.
#[derive(Debug)]
struct Watch {
    /// Stops the watcher.
    stop: tokio::task::AbortHandle,
    /// The prefix the backend's route strips from keys, put back on the keys its nodes report.
    prefix: Option<Bytes>,
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

/// A client with tracking on.
#[derive(Debug)]
struct Tracker {
    mode: Mode,
    /// The client its invalidations are redirected to was found gone.
    broken: bool,
    /// The backends it has read keys of since it was last told to forget everything.
    backends: Vec<u64>,
}

/// What to tell one client.
enum Notice {
    Keys(Vec<Bytes>),
    Flush,
}

impl Tracking {
    /// An empty table whose messages go to the clients of `registry`.
    pub fn new(registry: Arc<ClientRegistry>, max_keys: usize) -> Tracking {
        Tracking {
            state: Mutex::new(State::default()),
            keys: AtomicUsize::new(0),
            clients: AtomicUsize::new(0),
            max_keys: AtomicUsize::new(max_keys),
            registry,
            stats: TrackingStats::default(),
        }
    }

    /// Sets the most keys the table holds (0: no limit), as a reload may change it; the keys
    /// past it are evicted when the next read is remembered.
    pub fn set_max_keys(&self, max_keys: usize) {
        self.max_keys.store(max_keys, Ordering::Relaxed);
    }

    /// Whether any key is tracked: a write has nothing to invalidate while none is.
    pub fn has_keys(&self) -> bool {
        self.keys.load(Ordering::Relaxed) > 0
    }

    /// Keys tracked now (`tracking_total_keys`).
    pub fn keys(&self) -> usize {
        self.keys.load(Ordering::Relaxed)
    }

    /// Clients with tracking on (`tracking_clients`).
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    /// Pairs of a key and a client that tracks it (`tracking_total_items`), and `BCAST`
    /// prefixes (`tracking_total_prefixes`).
    pub fn items_and_prefixes(&self) -> (usize, usize) {
        let state = self.lock();
        let prefixes = state
            .clients
            .values()
            .filter(|t| t.mode.bcast)
            .map(|t| t.mode.prefixes.len().max(1))
            .sum();
        (state.table.items(), prefixes)
    }

    /// Turns tracking on for `client` in `mode`. As in Redis, turning it on again replaces
    /// the options and adds the prefixes to those it had.
    pub fn turn_on(&self, client: u64, mut mode: Mode) {
        // In byte order, as Redis keeps them (and `CLIENT TRACKINGINFO` lists them).
        mode.prefixes.sort();
        let mut state = self.lock();
        match state.clients.get_mut(&client) {
            Some(tracker) => {
                let mut prefixes = std::mem::take(&mut tracker.mode.prefixes);
                for prefix in mode.prefixes.drain(..) {
                    if !prefixes.contains(&prefix) {
                        prefixes.push(prefix);
                    }
                }
                prefixes.sort();
                mode.prefixes = prefixes;
                tracker.mode = mode;
                // As Redis clears it when tracking is turned on again.
                tracker.broken = false;
            }
            None => {
                state.clients.insert(
                    client,
                    Tracker {
                        mode,
                        broken: false,
                        backends: Vec::new(),
                    },
                );
                self.clients.store(state.clients.len(), Ordering::Relaxed);
            }
        }
    }

    /// Turns tracking off for `client` (also when it disconnects). The keys it read stay in
    /// the table, as in Redis, until they change or are evicted.
    pub fn turn_off(&self, client: u64) {
        let mut state = self.lock();
        if state.clients.remove(&client).is_some() {
            self.clients.store(state.clients.len(), Ordering::Relaxed);
        }
    }

    /// What `CLIENT LIST` and `CLIENT TRACKINGINFO` show of `client`'s tracking.
    pub fn shown(&self, client: u64) -> crate::clients::TrackingShown {
        let state = self.lock();
        match state.clients.get(&client) {
            None => crate::clients::TrackingShown::default(),
            Some(tracker) => crate::clients::TrackingShown {
                on: true,
                bcast: tracker.mode.bcast,
                broken_redirect: tracker.broken,
                redirect: tracker
                    .mode
                    .redirect
                    .map_or(0, |id| i64::try_from(id).unwrap_or(i64::MAX)),
            },
        }
    }

    /// The mode of `client`, if its tracking is on.
    pub fn mode(&self, client: u64) -> Option<Mode> {
        self.lock().clients.get(&client).map(|t| t.mode.clone())
    }

    /// Starts `backend`'s watcher with `start` unless it runs, and records the prefix its
    /// route strips (`None`: none), which a reload may change.
    pub fn watch_once(
        &self,
        backend: u64,
        prefix: Option<Bytes>,
        start: impl FnOnce() -> tokio::task::AbortHandle,
    ) {
        let mut state = self.lock();
        match state.watched.get_mut(&backend) {
            Some(watch) => watch.prefix = prefix,
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
    fn fully_watched(state: &State, backend: u64) -> bool {
        state
            .watched
            .get(&backend)
            .is_some_and(|w| w.ready && w.down.is_empty())
    }

    /// Remembers that `client` read `keys`.
    pub fn remember(&self, client: u64, keys: impl IntoIterator<Item = ReadKey>) {
        let mut notices = Vec::new();
        {
            let mut state = self.lock();
            let watched: Vec<(u64, bool)> = state
                .watched
                .keys()
                .map(|&b| (b, Tracking::fully_watched(&state, b)))
                .collect();
            let State { clients, table, .. } = &mut *state;
            let Some(tracker) = clients.get_mut(&client) else {
                return;
            };
            let mut unseen = Vec::new();
            for key in keys {
                if !watched.contains(&(key.backend, true)) {
                    unseen.push(key.named);
                    continue;
                }
                if !tracker.backends.contains(&key.backend) {
                    tracker.backends.push(key.backend);
                }
                table.add(key.backend, key.stored, client, key.named);
            }
            if !unseen.is_empty() && !tracker.mode.bcast {
                notices.push((client, Notice::Keys(unseen)));
            }
            let max = self.max_keys.load(Ordering::Relaxed);
            while max > 0 && table.len() > max {
                let Some(readers) = table.evict_one() else {
                    break;
                };
                self.stats.evictions.fetch_add(1, Ordering::Relaxed);
                collect_readers(clients, readers, None, &mut notices);
            }
            self.keys.store(table.len(), Ordering::Relaxed);
        }
        self.deliver(notices);
    }

    /// `keys` (as `backend` stores them) changed: tells the clients that read them and, when
    /// `writer` is `None` (the node reported the change), the `BCAST` clients whose prefixes
    /// they fall under. `writer` is the client of this proxy that is writing them, not told
    /// when it asked for `NOLOOP`.
    pub fn invalidate(&self, backend: u64, keys: &[Bytes], writer: Option<u64>) {
        let mut notices = Vec::new();
        {
            let mut state = self.lock();
            let prefix = state.watched.get(&backend).and_then(|w| w.prefix.clone());
            let named = |key: &Bytes| match &prefix {
                Some(prefix) => Bytes::from([&prefix[..], &key[..]].concat()),
                None => key.clone(),
            };
            let State { clients, table, .. } = &mut *state;
            for key in keys {
                if let Some(readers) = table.remove(backend, key) {
                    collect_readers(clients, readers, writer, &mut notices);
                }
            }
            if writer.is_none() {
                for (&id, tracker) in clients.iter().filter(|(_, t)| t.mode.bcast) {
                    let matching: Vec<Bytes> = keys
                        .iter()
                        .map(&named)
                        .filter(|name| tracker.mode.matches(name))
                        .collect();
                    if !matching.is_empty() {
                        notices.push((id, Notice::Keys(matching)));
                    }
                }
            }
            self.keys.store(table.len(), Ordering::Relaxed);
        }
        self.deliver(notices);
    }

    /// Whatever was read from `backend` may have changed unseen: every client that read from it
    /// since it was last told, and every `BCAST` client, is told to forget everything.
    pub fn flush_backend(&self, backend: u64) {
        self.flush(backend, false);
    }

    /// A node of `backend` was flushed (`FLUSHALL`, `FLUSHDB`): as Redis does, every client
    /// with tracking on is told to forget everything.
    pub fn node_flushed(&self, backend: u64) {
        self.flush(backend, true);
    }

    fn flush(&self, backend: u64, everyone: bool) {
        let mut notices = Vec::new();
        {
            let mut state = self.lock();
            let State { clients, table, .. } = &mut *state;
            table.drop_backend(backend);
            for (&id, tracker) in clients.iter_mut() {
                let read_there = tracker.backends.contains(&backend);
                if everyone || read_there || tracker.mode.bcast {
                    tracker.backends.retain(|b| *b != backend);
                    notices.push((id, Notice::Flush));
                }
            }
            self.keys.store(table.len(), Ordering::Relaxed);
        }
        self.deliver(notices);
    }

    /// Every client with tracking on that read something, and every `BCAST` one, is told to
    /// forget everything (a new configuration came into force).
    pub fn flush_all(&self) {
        let mut notices = Vec::new();
        {
            let mut state = self.lock();
            let State { clients, table, .. } = &mut *state;
            *table = Table::default();
            for (&id, tracker) in clients.iter_mut() {
                if !tracker.backends.is_empty() || tracker.mode.bcast {
                    tracker.backends.clear();
                    notices.push((id, Notice::Flush));
                }
            }
            self.keys.store(0, Ordering::Relaxed);
        }
        self.deliver(notices);
    }

    /// Sends each notice to its client, or to the client its tracking redirects to.
    fn deliver(&self, notices: Vec<(u64, Notice)>) {
        for (id, notice) in notices {
            let Some(mode) = self.mode(id) else { continue };
            let target_id = mode.redirect.unwrap_or(id);
            let Some(target) = self.registry.get(target_id) else {
                // Redis tells the client itself, in RESP3, each time a message cannot go.
                if mode.redirect.is_some() {
                    if let Some(tracker) = self.lock().clients.get_mut(&id) {
                        tracker.broken = true;
                    }
                    if self.registry.get(id).is_some_and(|c| c.resp() >= 3) {
                        let frame = frames::redirect_broken(target_id);
                        self.registry
                            .post(id, frame, MAILBOX_LIMIT_BYTES, || flush_frame(3, 3));
                    }
                }
                continue;
            };
            let resp = target.resp();
            let redirected = mode.redirect.is_some();
            // RESP2 has no pushes: only a subscribed client that another redirects to can be
            // told, with a Pub/Sub message.
            if resp < 3 && !(redirected && target.subscribed.load(Ordering::Relaxed)) {
                continue;
            }
            let frame = match &notice {
                Notice::Keys(keys) => {
                    self.stats
                        .invalidations
                        .fetch_add(keys.len() as u64, Ordering::Relaxed);
                    invalidation_frame(resp, keys)
                }
                Notice::Flush => {
                    self.stats.flushes.fetch_add(1, Ordering::Relaxed);
                    let tracker_resp = match redirected {
                        true => self.registry.get(id).map_or(resp, |c| c.resp()),
                        false => resp,
                    };
                    flush_frame(resp, tracker_resp)
                }
            };
            self.registry
                .post(target_id, frame, MAILBOX_LIMIT_BYTES, || {
                    flush_frame(resp, resp)
                });
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Mode {
    /// Whether a `BCAST` client is told of a change to `key`.
    fn matches(&self, key: &[u8]) -> bool {
        self.prefixes.is_empty() || self.prefixes.iter().any(|p| key.starts_with(p))
    }
}

/// Adds to `notices` the key each of `readers` is to be told of, but for those that turned
/// tracking off or to `BCAST` since (as Redis skips them), and `writer` when it asked not to
/// hear of its own writes.
fn collect_readers(
    clients: &HashMap<u64, Tracker>,
    readers: Vec<(u64, Bytes)>,
    writer: Option<u64>,
    notices: &mut Vec<(u64, Notice)>,
) {
    for (id, named) in readers {
        let Some(tracker) = clients.get(&id) else {
            continue;
        };
        if tracker.mode.bcast || (tracker.mode.noloop && writer == Some(id)) {
            continue;
        }
        match notices
            .iter_mut()
            .find(|(other, n)| *other == id && matches!(n, Notice::Keys(_)))
        {
            Some((_, Notice::Keys(keys))) => keys.push(named),
            _ => notices.push((id, Notice::Keys(vec![named]))),
        }
    }
}

#[cfg(test)]
mod tests;
