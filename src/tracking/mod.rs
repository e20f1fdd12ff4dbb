//! Client-side caching through the proxy (`CLIENT TRACKING`): which client read which key, and
//! telling it when the key may have changed.
//!
//! A node's own tracking cannot serve the proxy's clients: many clients share each backend
//! connection, so the node would not know who read what. The proxy keeps the table itself,
//! here, and learns of every change from the nodes: a watcher per node
//! ([`watch`]) holds one connection in `CLIENT TRACKING ON BCAST` mode, on
//! which the node reports every key written there, by any client, a script, an expiry or an
//! eviction, and `FLUSHALL`. Where the proxy cannot know (a watcher's connection lost or just
//! made, a node added or gone, a backend replaced by a reload), every client that read through
//! that backend is told to forget everything, never left with silence.
//!
//! A write through this proxy also invalidates the keys it names at once, before the node has
//! answered, so a client of this proxy that reads after a write's reply never finds the value
//! from before it in its cache; the node's report follows and finds nothing more to do.
//!
//! Invalidations reach a client through its mailbox ([`ClientRegistry::post`]): the session
//! writes them after every reply it owed when they came. A read's reply that may predate a
//! change therefore always reaches the client before that change's invalidation, whichever of
//! the node's two connections (the read's, the watcher's) spoke first.

mod frames;
mod table;
pub mod watch;
mod watched;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::clients::ClientRegistry;
use table::Table;
use watched::Watch;

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
    /// The key as the client named it, which is what its invalidation names; `None` when it is
    /// `stored` (no prefix stripped), so that the key is held once.
    pub named: Option<Bytes>,
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

/// A client with tracking on.
#[derive(Debug)]
struct Tracker {
    mode: Mode,
    /// The client its invalidations are redirected to was found gone.
    broken: bool,
    /// The backends it has read keys of since it was last told to forget everything.
    backends: Vec<u64>,
    /// In `BCAST` and `NOLOOP` mode: the keys (backend serial, stored key) it wrote through
    /// the proxy whose report from the node has not come yet, with when, so that the report is
    /// not passed back to it. At most [`OWN_WRITES_MAX`]; past it a write is not remembered,
    /// and its report is passed on (a message more, never one fewer).
    own_writes: HashMap<(u64, Bytes), Instant>,
}

/// Most writes a `BCAST` `NOLOOP` client's reports are held back for at once.
const OWN_WRITES_MAX: usize = 1024;
/// How long a `BCAST` `NOLOOP` client's write waits for its node's report: past it, the write
/// is taken to have had none (a write that failed).
const OWN_WRITE_REPORT: Duration = Duration::from_secs(2);

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

    /// Sets the most keys the table holds (0: no limit), as a reload or a `CONFIG SET
    /// tracking-table-max-keys` may change it; the keys past it are evicted now, their readers
    /// told.
    pub fn set_max_keys(&self, max_keys: usize) {
        self.max_keys.store(max_keys, Ordering::Relaxed);
        let mut notices = Vec::new();
        {
            let mut state = self.lock();
            let State { clients, table, .. } = &mut *state;
            self.evict_past_limit(clients, table, &mut notices);
        }
        self.deliver(notices);
    }

    /// Takes `tracking-table-max-keys` among the `name value` pairs of a `CONFIG SET` every
    /// node accepted, as Redis matches names, without regard to case.
    pub fn config_set(&self, pairs: &[Bytes]) {
        for pair in pairs.chunks_exact(2) {
            if let [name, value] = pair
                && name.eq_ignore_ascii_case(b"tracking-table-max-keys")
                && let Some(max) =
                    crate::protocol::request::parse_int(value).and_then(|v| usize::try_from(v).ok())
            {
                self.set_max_keys(max);
            }
        }
    }

    /// Evicts the keys past `max_keys`, adding what their readers are to be told to `notices`.
    fn evict_past_limit(
        &self,
        clients: &HashMap<u64, Tracker>,
        table: &mut Table,
        notices: &mut Vec<(u64, Notice)>,
    ) {
        let max = self.max_keys.load(Ordering::Relaxed);
        if max > 0 && table.len() > max {
            for readers in table.evict(table.len() - max) {
                self.stats.evictions.fetch_add(1, Ordering::Relaxed);
                collect_readers(clients, readers, None, notices);
            }
        }
        self.keys.store(table.len(), Ordering::Relaxed);
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
                        own_writes: HashMap::new(),
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
                    unseen.push(key.named.unwrap_or(key.stored));
                } else if !tracker.mode.bcast {
                    if !tracker.backends.contains(&key.backend) {
                        tracker.backends.push(key.backend);
                    }
                    table.add(key.backend, key.stored, client, key.named);
                }
            }
            if tracker.mode.bcast {
                // No node would report a change: told at once, under the prefix it falls
                // under, as any change.
                for prefix in &tracker.mode.prefixes {
                    let matching: Vec<Bytes> = unseen
                        .iter()
                        .filter(|k| k.starts_with(prefix))
                        .cloned()
                        .collect();
                    if !matching.is_empty() {
                        notices.push((client, Notice::Keys(matching)));
                    }
                }
            } else {
                notices.extend(unseen.into_iter().map(|k| (client, Notice::Keys(vec![k]))));
            }
            self.evict_past_limit(clients, table, &mut notices);
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
            match writer.and_then(|w| clients.get_mut(&w)) {
                Some(tracker) if tracker.mode.bcast && tracker.mode.noloop => {
                    let now = Instant::now();
                    tracker
                        .own_writes
                        .retain(|_, at| now.duration_since(*at) < OWN_WRITE_REPORT);
                    for key in keys {
                        if tracker.own_writes.len() < OWN_WRITES_MAX {
                            tracker.own_writes.insert((backend, key.clone()), now);
                        }
                    }
                }
                Some(_) => {}
                None if writer.is_some() => {}
                // One message per prefix, in the prefixes' order, as Redis sends them.
                None => {
                    for (&id, tracker) in clients.iter_mut().filter(|(_, t)| t.mode.bcast) {
                        let own = &mut tracker.own_writes;
                        let told: Vec<&Bytes> = keys
                            .iter()
                            .filter(|key| {
                                own.remove(&(backend, Bytes::clone(key)))
                                    .is_none_or(|at| at.elapsed() >= OWN_WRITE_REPORT)
                            })
                            .collect();
                        for prefix in &tracker.mode.prefixes {
                            let matching: Vec<Bytes> = told
                                .iter()
                                .map(|key| named(key))
                                .filter(|name| name.starts_with(prefix))
                                .collect();
                            if !matching.is_empty() {
                                notices.push((id, Notice::Keys(matching)));
                            }
                        }
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

    /// `client` is told to forget everything (what it read could not all be remembered).
    pub fn forget_everything(&self, client: u64) {
        if let Some(tracker) = self.lock().clients.get_mut(&client) {
            tracker.backends.clear();
        } else {
            return;
        }
        self.deliver(vec![(client, Notice::Flush)]);
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
            // The redirect alone: cloning the whole mode would copy a `BCAST` client's
            // prefixes for every message.
            let Some(redirect) = self.lock().clients.get(&id).map(|t| t.mode.redirect) else {
                continue;
            };
            let target_id = redirect.unwrap_or(id);
            let Some(target) = self.registry.get(target_id) else {
                // Redis tells the client itself, in RESP3, each time a message cannot go.
                if redirect.is_some() {
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
            let redirected = redirect.is_some();
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
        // One message per key, as Redis sends them to a client that is not in `BCAST` mode.
        notices.push((id, Notice::Keys(vec![named])));
    }
}

#[cfg(test)]
mod tests;
