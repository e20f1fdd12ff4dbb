//! The proxy's shared state: its clusters, counters and identity, handed to every session.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::watch;

use crate::clients::ClientRegistry;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::health::Lifecycle;
use crate::keyspace::{BackendId, RouteTable};
use crate::slowlog::SlowLog;
use crate::workers::WorkerSet;
use arc_swap::ArcSwap;

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
    /// Clients closed for staying idle past `client_idle_timeout_s`.
    pub closed_by_idle_timeout: AtomicU64,
    /// Clients closed for a protocol error (a request over a size limit included).
    pub protocol_errors: AtomicU64,
    /// Bytes read from clients.
    pub net_input_bytes: AtomicU64,
    /// Bytes written to clients.
    pub net_output_bytes: AtomicU64,
    /// Commands answered with an error reply.
    pub error_replies: AtomicU64,
}

/// State shared by all sessions.
pub struct Proxy {
    /// The configuration in force.
    pub config: Config,
    /// The backends, in name order: a backend's index is its [`BackendId`].
    pub backends: Vec<Arc<Cluster>>,
    /// Which keys go to which backend; swapped whole on reload.
    routes: ArcSwap<RouteTable>,
    /// Counters.
    pub stats: ProxyStats,
    /// When the proxy started.
    pub started: Instant,
    /// The address clients connect to.
    pub listen_addr: SocketAddr,
    /// Connected clients, for `CLIENT LIST` and `CLIENT KILL`.
    pub clients: Arc<ClientRegistry>,
    /// Turns true when the proxy drains: sessions finish what they owe and close between
    /// requests.
    pub shutdown: watch::Receiver<bool>,
    /// Starting, ready or shutting down (see [`crate::health`]).
    pub lifecycle: Lifecycle,
    /// The slowest requests (`SLOWLOG`).
    pub slowlog: SlowLog,
    next_client_id: AtomicU64,
}

impl Proxy {
    /// Builds the shared state for `config`, creating one [`Cluster`] per configured cluster,
    /// with backend connections for each of `workers`.
    pub fn new(
        config: Config,
        listen_addr: SocketAddr,
        shutdown: watch::Receiver<bool>,
        workers: WorkerSet,
    ) -> Arc<Proxy> {
        // Before any backend or command table resolves its metric handles.
        crate::metrics::install();
        let list = config.backend_list();
        let names: Vec<String> = list.iter().map(|(name, _)| name.clone()).collect();
        let backends = list
            .into_iter()
            .map(|(name, c)| Cluster::new(&name, c, workers.clone()))
            .collect();
        let routes = ArcSwap::from_pointee(RouteTable::from_config(&config, &names));
        let slowlog = SlowLog::new(
            config.server.slowlog_log_slower_than_us,
            config.server.slowlog_max_len,
        );
        Arc::new(Proxy {
            config,
            backends,
            routes,
            stats: ProxyStats::default(),
            started: Instant::now(),
            listen_addr,
            clients: Arc::new(ClientRegistry::default()),
            shutdown,
            lifecycle: Lifecycle::default(),
            slowlog,
            next_client_id: AtomicU64::new(1),
        })
    }

    /// The backend of keys no route matches, and of keyless commands.
    pub fn default_cluster(&self) -> Option<&Arc<Cluster>> {
        self.backends
            .get(self.routes.load().default_backend().index())
            .or_else(|| self.backends.first())
    }

    /// The backend `id` names (the default one for an id out of range, which routes never
    /// give).
    pub fn backend(&self, id: BackendId) -> Option<&Arc<Cluster>> {
        self.backends
            .get(id.index())
            .or_else(|| self.default_cluster())
    }

    /// The route table in force. A guard, not a clone of the `Arc`: every routed request
    /// reads it, and a guard costs no reference-count traffic shared across worker threads.
    pub fn routes(&self) -> arc_swap::Guard<Arc<RouteTable>> {
        self.routes.load()
    }

    /// The command table: the first backend's that has loaded one (every backend runs Redis,
    /// whose commands are the same).
    pub fn commands(&self) -> Option<Arc<crate::command::CommandTable>> {
        self.default_cluster()
            .and_then(|c| c.commands())
            .or_else(|| self.backends.iter().find_map(|c| c.commands()))
    }

    /// A fresh client id, as `CLIENT ID` reports.
    pub fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }
}
