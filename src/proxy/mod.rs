//! The proxy's shared state, handed to every session: what lives as long as the process
//! (counters, the client list, identity) and the [`Snapshot`] of the configuration in force with
//! what is built from it (users, backends, routes), replaced whole by a reload.
//!
//! A session pins one snapshot and reads through a [`ProxyRef`]: a request sees one snapshot from
//! start to end, so a [`BackendId`] always indexes the backends its route table was made for,
//! and a user's id the users its command table's permissions were granted for.

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::watch;

use crate::acl::Users;
use crate::clients::ClientRegistry;
use crate::cluster::{Backend, Lifeline};
use crate::command::CommandTable;
use crate::config::Config;
use crate::errorstats::ErrorStats;
use crate::keyspace::{BackendId, Marks, RouteTable};
use crate::metrics as m;
use crate::pause::ClientPause;
use crate::slowlog::SlowLog;
use crate::subscribers::Subscribers;
use crate::tracking::Tracking;

mod marks;

/// Counters shown by `INFO`.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Client connections open now.
    pub connected_clients: AtomicU64,
    /// Client connections accepted since start.
    pub total_connections: AtomicU64,
    /// Commands received since start.
    pub total_commands: AtomicU64,
    /// Clients refused because `max_clients` was reached.
    pub rejected_connections: AtomicU64,
    /// Clients closed for overcoming their output limit.
    pub closed_by_output_limit: AtomicU64,
    /// Failed logins (`acl_access_denied_auth`).
    pub auth_failures: AtomicU64,
    /// When a failed login was last logged, in whole seconds since start plus one (0: never).
    pub auth_failure_logged_s: AtomicU64,
    /// `auth_failures` when a failed login was last logged.
    pub auth_failures_at_log: AtomicU64,
    /// Requests refused for their command (`acl_access_denied_cmd`).
    pub denied_commands: AtomicU64,
    /// Requests refused for a key, or the backend a key or command reaches
    /// (`acl_access_denied_key`).
    pub denied_keys: AtomicU64,
    /// Requests refused for a channel (`acl_access_denied_channel`).
    pub denied_channels: AtomicU64,
    /// Clients closed for staying idle past `client_idle_timeout_s`.
    pub closed_by_idle_timeout: AtomicU64,
    /// Clients closed for a protocol error (a request over a size limit included).
    pub protocol_errors: AtomicU64,
    /// Bytes read from clients.
    pub net_input_bytes: AtomicU64,
    /// Bytes written to clients.
    pub net_output_bytes: AtomicU64,
    /// Error replies sent to clients, in all and by prefix (`total_error_replies`,
    /// `errorstat_*`).
    pub errors: ErrorStats,
}

/// A backend, with the lifeline of its background tasks.
pub type RunningBackend = (Arc<Backend>, Arc<Lifeline>);

/// The configuration in force and what is built from it, immutable: a reload makes a new one.
///
/// Whatever else is derived from the configuration belongs here too, so that it changes with
/// it in one step: the users of `[users.*]` and the permissions recorded for them on the
/// command table ([`Snapshot::commands`]).
pub struct Snapshot {
    /// The configuration.
    pub config: Config,
    /// The users clients log in as, compiled from `config` (passwords read from their files
    /// and variables when the snapshot was made).
    users: Users,
    /// Whether any user is restricted: only then do command tables carry permissions.
    restricted_users: bool,
    /// The command table with the permissions of `users` recorded on it, made the first time
    /// a request needs it (a backend loads its table after the snapshot is made), and again
    /// if the table it came from changes.
    granted: ArcSwapOption<Granted>,
    /// The backends, in name order: a backend's index is its [`BackendId`] in `routes`.
    backends: Vec<Arc<Backend>>,
    /// Keep the backends' topology refreshers running while a snapshot names them; shared with
    /// the other snapshots that hold the same backends.
    lifelines: Vec<Arc<Lifeline>>,
    /// Which keys go to which of `backends`.
    routes: RouteTable,
    /// 1 for the configuration the proxy started with, one more at each reload that changed it.
    pub generation: u64,
}

/// A backend's command table, and the copy of it that records which users may run each
/// command.
struct Granted {
    source: Arc<CommandTable>,
    table: Arc<CommandTable>,
}

impl Snapshot {
    /// A snapshot of `config`, with its compiled `users`, over `backends` (each with its
    /// lifeline), which must be `config.backend_list()` in order.
    pub fn new(
        config: Config,
        users: Users,
        backends: Vec<RunningBackend>,
        generation: u64,
    ) -> Snapshot {
        let (backends, lifelines): (Vec<_>, Vec<_>) = backends.into_iter().unzip();
        let names: Vec<String> = backends.iter().map(|c| c.name().to_string()).collect();
        let routes = RouteTable::from_config(&config, &names);
        // The users and what is derived from them (a user's backends by id, the permissions
        // recorded on the command table) belong to the snapshot beside the routes, so that a
        // reload replaces them in the same step and a request sees one consistent set. The
        // users are compiled by the caller, before any backend starts: compiling reads files
        // and can fail, and a reload that fails must start nothing.
        Snapshot {
            config,
            restricted_users: users.any_restricted(),
            users,
            granted: ArcSwapOption::empty(),
            backends,
            lifelines,
            routes,
            generation,
        }
    }

    /// This snapshot with other `routes` (the migrations' marks laid over the configuration's),
    /// as `generation`: everything else shared, the command table's permissions included.
    fn rerouted(&self, routes: RouteTable, generation: u64) -> Snapshot {
        Snapshot {
            config: self.config.clone(),
            users: self.users.clone(),
            restricted_users: self.restricted_users,
            granted: ArcSwapOption::new(self.granted.load_full()),
            backends: self.backends.clone(),
            lifelines: self.lifelines.clone(),
            routes,
            generation,
        }
    }

    /// The backends' names, in order (a backend's index is its id).
    fn names(&self) -> Vec<String> {
        self.backends.iter().map(|c| c.name().to_string()).collect()
    }

    /// Each backend with its lifeline, for a reload to carry the unchanged ones over.
    pub fn running(&self) -> impl Iterator<Item = (&Arc<Backend>, &Arc<Lifeline>)> {
        self.backends.iter().zip(&self.lifelines)
    }

    /// The backends; a backend's index is its [`BackendId`].
    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    /// Which keys go to which backend.
    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// The backend of keys no route matches, and of keyless commands.
    pub fn default_backend(&self) -> Option<&Arc<Backend>> {
        self.backends
            .get(self.routes.default_backend().index())
            .or_else(|| self.backends.first())
    }

    /// The backend `id` names (the default one for an id out of range, which routes never
    /// give).
    pub fn backend(&self, id: BackendId) -> Option<&Arc<Backend>> {
        self.backends
            .get(id.index())
            .or_else(|| self.default_backend())
    }

    /// The id of the backend called `name`.
    pub fn backend_id(&self, name: &str) -> Option<BackendId> {
        self.backends
            .iter()
            .position(|c| c.name() == name)
            .and_then(|i| u16::try_from(i).ok())
            .map(BackendId)
    }

    /// The id here of backend `id` of `older`, if it carried over to this snapshot: the same
    /// cluster, under the same name (its connections and what was sent on them are the same).
    pub fn carried_over(&self, older: &Snapshot, id: BackendId) -> Option<BackendId> {
        let cluster = older.backends.get(id.index())?;
        let here = self.backend_id(cluster.name())?;
        self.backends
            .get(here.index())
            .filter(|c| Arc::ptr_eq(c, cluster))
            .map(|_| here)
    }

    /// The users clients log in as.
    pub fn users(&self) -> &Users {
        &self.users
    }

    /// The command table: the default backend's, or the first other backend's that has loaded
    /// one (every backend runs Redis, whose commands are the same), with the permissions of
    /// this snapshot's users recorded on it when any user is restricted.
    pub fn commands(&self) -> Option<Arc<CommandTable>> {
        let source = self
            .default_backend()
            .and_then(|c| c.commands())
            .or_else(|| self.backends.iter().find_map(|c| c.commands()))?;
        if !self.restricted_users {
            return Some(source);
        }
        if let Some(granted) = self.granted.load().as_ref()
            && Arc::ptr_eq(&granted.source, &source)
        {
            return Some(Arc::clone(&granted.table));
        }
        // Once per snapshot and table: a backend's table is loaded once, and carried-over
        // backends keep theirs, but another snapshot's users may differ. Two requests racing
        // here both make the same table; either is kept.
        let mut table = CommandTable::clone(&source);
        table.grant(&self.users);
        let table = Arc::new(table);
        self.granted.store(Some(Arc::new(Granted {
            source,
            table: Arc::clone(&table),
        })));
        Some(table)
    }
}

/// State shared by all sessions.
pub struct Proxy {
    /// The configuration in force and its backends and routes; swapped whole on reload.
    current: ArcSwap<Snapshot>,
    /// The generation of `current`, read by every session before each request: a plain load,
    /// cheaper than looking at `current` itself.
    generation: AtomicU64,
    /// Wakes every session: to drain, or to let go of an old snapshot.
    announcements: watch::Sender<Announcement>,
    /// Reloads and their outcomes, for `INFO` and `/metrics`.
    pub reloads: ReloadStats,
    /// Counters.
    pub stats: ProxyStats,
    /// When the proxy started.
    pub started: Instant,
    /// The address clients connect to: the plain listener's, else the TLS listener's.
    pub listen_addr: SocketAddr,
    /// The TLS listener's address, when there is one.
    pub tls_listen_addr: Option<SocketAddr>,
    /// Connected clients, for `CLIENT LIST` and `CLIENT KILL`.
    pub clients: Arc<ClientRegistry>,
    /// Starting, ready or shutting down (see [`crate::health`]).
    pub lifecycle: Lifecycle,
    /// The slowest requests (`SLOWLOG`).
    pub slowlog: SlowLog,
    /// What the subscribed clients hold, for the count `PUBLISH` answers.
    pub subscribers: Arc<Subscribers>,
    /// The proxy's own `CLIENT PAUSE`, which its clients' commands wait behind.
    pub pause: ClientPause,
    /// Client-side caching: who read which key.
    pub tracking: Arc<Tracking>,
    /// The migrations' marks on the routes, laid over every snapshot installed; the lock also
    /// keeps a reload and a migration's change from installing over each other.
    marks: Mutex<Marks>,
    /// Every snapshot put in force that may still be held (see [`Proxy::holds_older_than`]).
    history: Mutex<Vec<std::sync::Weak<Snapshot>>>,
    /// This replica's id in the migrations' roster, once it takes part (see [`crate::migrate`]).
    pub replica_id: std::sync::OnceLock<String>,
    next_client_id: AtomicU64,
}

impl Proxy {
    /// The shared state, with `snapshot` in force, for clients connecting to `listen_addr`
    /// (and to `tls_listen_addr` with TLS).
    pub fn new(
        snapshot: Snapshot,
        listen_addr: SocketAddr,
        tls_listen_addr: Option<SocketAddr>,
    ) -> Arc<Proxy> {
        let generation = snapshot.generation;
        let clients = Arc::new(ClientRegistry::default());
        let tracking = Arc::new(Tracking::new(
            Arc::clone(&clients),
            snapshot.config.tracking.max_keys,
        ));
        Arc::new(Proxy {
            current: ArcSwap::from_pointee(snapshot),
            generation: AtomicU64::new(generation),
            announcements: watch::Sender::new(Announcement {
                draining: false,
                generation,
            }),
            reloads: ReloadStats::default(),
            stats: ProxyStats::default(),
            started: Instant::now(),
            listen_addr,
            tls_listen_addr,
            clients,
            tracking,
            lifecycle: Lifecycle::default(),
            slowlog: SlowLog::default(),
            subscribers: Arc::default(),
            pause: ClientPause::default(),
            marks: Mutex::default(),
            history: Mutex::default(),
            replica_id: std::sync::OnceLock::new(),
            next_client_id: AtomicU64::new(1),
        })
    }

    /// The listen address of the listener a client reached at `local` came through, and
    /// whether it is the TLS one (whose announce setting is `server.tls.announce_address`).
    pub fn listener_of(&self, local: SocketAddr) -> (SocketAddr, bool) {
        match self.tls_listen_addr {
            Some(tls)
                if tls.port() == local.port()
                    && (tls.ip().is_unspecified() || tls.ip() == local.ip()) =>
            {
                (tls, true)
            }
            _ => (self.listen_addr, false),
        }
    }

    /// The snapshot in force, for a session to pin: a reference-count increment, so not per
    /// request.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The configuration in force now, through a guard: no reference-count traffic. Sessions
    /// read the one of their pinned snapshot instead, through [`ProxyRef::config`].
    pub fn config(&self) -> ConfigGuard {
        ConfigGuard(self.current.load())
    }

    /// The generation of the snapshot in force.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Makes `snapshot`, with the migrations' marks laid over its routes, the one in force.
    /// Each session moves to it before its next request, once the requests it has in flight
    /// are answered; idle ones at once.
    pub fn install(&self, mut snapshot: Snapshot) {
        let marks = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
        if !marks.overlays.is_empty() || marks.fence.is_some() {
            snapshot.routes = snapshot
                .routes
                .with_overlays(&marks.overlays, marks.fence.as_ref());
        }
        // A migration's change may have come in since the reload read the generation.
        snapshot.generation = snapshot.generation.max(self.generation() + 1);
        self.tracking
            .set_max_keys(snapshot.config.tracking.max_keys);
        self.put(Arc::new(snapshot));
        // Routes, backends and users may all have changed: what clients read under the old
        // configuration is dropped rather than followed.
        self.tracking.flush_all();
    }

    /// Puts `snapshot` in force and tells every session.
    fn put(&self, snapshot: Arc<Snapshot>) {
        let generation = snapshot.generation;
        self.tracking
            .set_prefixes(snapshot.backends().iter().enumerate().map(|(i, backend)| {
                let id = BackendId(u16::try_from(i).unwrap_or(u16::MAX));
                (
                    backend.serial(),
                    snapshot.routes().stripped_prefix(id).cloned(),
                )
            }));
        self.remember(&snapshot);
        self.current.store(snapshot);
        self.generation.store(generation, Ordering::Release);
        self.announcements
            .send_modify(|a| a.generation = generation);
        self.clients.wake_all();
    }

    /// Tells every session the proxy is shutting down: each finishes what it owes and closes.
    pub fn drain(&self) {
        self.announcements.send_modify(|a| a.draining = true);
        self.clients.wake_all();
    }

    /// Whether a newer snapshot than `pinned` is in force: a session checks before each
    /// request.
    pub fn is_newer_than(&self, pinned: &Snapshot) -> bool {
        self.generation.load(Ordering::Relaxed) != pinned.generation
    }

    /// What a session listens to: shutdown, and new snapshots. It sees changes made after
    /// this call; whether the proxy is draining already, [`Announcement::draining`] of the
    /// current value says.
    pub fn announcements(&self) -> watch::Receiver<Announcement> {
        self.announcements.subscribe()
    }

    /// A fresh client id, as `CLIENT ID` reports.
    pub fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// What the proxy tells every session at once. One channel for both, so that an idle session
/// waits on one thing more than its socket, as cheap as waiting for shutdown alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announcement {
    /// The proxy is shutting down: finish what is owed, then close.
    pub draining: bool,
    /// The generation of the snapshot in force.
    pub generation: u64,
}

/// The configuration in force, held for a moment (see [`Proxy::config`]).
pub struct ConfigGuard(arc_swap::Guard<Arc<Snapshot>>);

impl Deref for ConfigGuard {
    type Target = Config;

    fn deref(&self) -> &Config {
        &self.0.config
    }
}

/// The proxy as one request sees it: the process-wide state (through `Deref`) and the snapshot
/// the request started under, for the configuration, backends and routes. Two references,
/// copied freely; it costs no reference-count traffic.
#[derive(Clone, Copy)]
pub struct ProxyRef<'a> {
    proxy: &'a Proxy,
    snapshot: &'a Snapshot,
}

impl<'a> ProxyRef<'a> {
    /// `proxy` as seen through `snapshot`.
    pub fn new(proxy: &'a Proxy, snapshot: &'a Snapshot) -> Self {
        ProxyRef { proxy, snapshot }
    }

    /// Whether `user` (of the pinned snapshot) has other rights, or is gone, in the configuration
    /// in force now: a reload changed them meanwhile.
    pub fn rights_changed(self, user: &crate::acl::User) -> bool {
        if !self.proxy.is_newer_than(self.snapshot) {
            return false;
        }
        let newest = self.proxy.snapshot();
        newest
            .users()
            .get(&user.name)
            .is_none_or(|now| !now.same_rights(user))
    }

    /// The shared state, whose newest snapshot may be newer than the pinned one.
    pub fn proxy(self) -> &'a Proxy {
        self.proxy
    }

    /// The pinned snapshot.
    pub fn snapshot(self) -> &'a Snapshot {
        self.snapshot
    }

    /// The configuration of the pinned snapshot.
    pub fn config(self) -> &'a Config {
        &self.snapshot.config
    }

    /// See [`Snapshot::backends`].
    pub fn backends(self) -> &'a [Arc<Backend>] {
        self.snapshot.backends()
    }

    /// See [`Snapshot::routes`].
    pub fn routes(self) -> &'a RouteTable {
        self.snapshot.routes()
    }

    /// See [`Snapshot::default_backend`].
    pub fn default_backend(self) -> Option<&'a Arc<Backend>> {
        self.snapshot.default_backend()
    }

    /// See [`Snapshot::backend`].
    pub fn backend(self, id: BackendId) -> Option<&'a Arc<Backend>> {
        self.snapshot.backend(id)
    }

    /// See [`Snapshot::users`].
    pub fn users(self) -> &'a Users {
        self.snapshot.users()
    }

    /// See [`Snapshot::commands`].
    pub fn commands(self) -> Option<Arc<CommandTable>> {
        self.snapshot.commands()
    }
}

impl Deref for ProxyRef<'_> {
    type Target = Proxy;

    fn deref(&self) -> &Proxy {
        self.proxy
    }
}

/// The proxy's place in its life: starting, ready, shutting down.
#[derive(Debug, Default)]
pub struct Lifecycle {
    /// Set once every backend served its routed slots; it stays set while the proxy runs: a
    /// master lost later is for the cluster's failover to mend, and taking every proxy out of
    /// the Service at once (they all see the same cluster) would turn a partial outage into a
    /// total one.
    started: AtomicBool,
    /// Set when shutdown begins (`SIGTERM`).
    shutting_down: AtomicBool,
}

impl Lifecycle {
    /// Whether every backend has served its routed slots once.
    pub fn has_started(&self) -> bool {
        self.started.load(Ordering::Relaxed)
    }

    /// Notes that every backend serves its routed slots; true the first time.
    pub fn mark_started(&self) -> bool {
        !self.started.swap(true, Ordering::Relaxed)
    }

    /// Marks the start of shutdown: from now on the proxy is not ready.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }
}

/// Reloads and their outcomes, for `INFO` and `/metrics`.
#[derive(Debug, Default)]
pub struct ReloadStats {
    /// Reloads that put a configuration in force or found it unchanged.
    pub succeeded: AtomicU64,
    /// Reloads refused.
    pub failed: AtomicU64,
    /// When the last reload ended, in seconds since the Unix epoch; 0 before any.
    pub last_unix: AtomicU64,
    /// Whether the last reload succeeded.
    pub last_ok: AtomicBool,
}

impl ReloadStats {
    /// `ok`, `failed`, or `none` before any reload: the last reload's status as `INFO` shows it.
    pub fn last_status(&self) -> &'static str {
        if self.last_unix.load(Ordering::Relaxed) == 0 {
            "none"
        } else if self.last_ok.load(Ordering::Relaxed) {
            "ok"
        } else {
            "failed"
        }
    }

    /// Records the end of a reload that succeeded (`ok`) or was refused.
    pub(crate) fn record(&self, ok: bool) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_secs().max(1));
        let counter = if ok { &self.succeeded } else { &self.failed };
        counter.fetch_add(1, Ordering::Relaxed);
        self.last_ok.store(ok, Ordering::Relaxed);
        self.last_unix.store(now, Ordering::Relaxed);
        metrics::counter!(m::CONFIG_RELOADS, "outcome" => if ok { "ok" } else { "failed" })
            .increment(1);
    }
}
