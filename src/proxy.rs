//! The proxy's shared state: its clusters, counters and identity, handed to every session.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::watch;

use crate::clients::ClientRegistry;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::keyspace::{BackendId, RouteTable};
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
    /// The address clients connect to: the plain listener's, else the TLS listener's.
    pub listen_addr: SocketAddr,
    /// The TLS listener's address, when there is one.
    pub tls_listen_addr: Option<SocketAddr>,
    /// Connected clients, for `CLIENT LIST` and `CLIENT KILL`.
    pub clients: Arc<ClientRegistry>,
    /// Turns true when the proxy shuts down: sessions finish what they owe and close.
    pub shutdown: watch::Receiver<bool>,
    next_client_id: AtomicU64,
}

impl Proxy {
    /// Builds the shared state for `config`, creating one [`Cluster`] per configured cluster,
    /// with backend connections for each of `workers`. `listen` holds the address clients
    /// connect to and the TLS listener's, if any.
    pub fn new(
        config: Config,
        listen: (SocketAddr, Option<SocketAddr>),
        shutdown: watch::Receiver<bool>,
        workers: WorkerSet,
    ) -> Arc<Proxy> {
        let list = config.backend_list();
        let names: Vec<String> = list.iter().map(|(name, _)| name.clone()).collect();
        let backends = list
            .into_iter()
            .map(|(name, c)| Cluster::new(&name, c, workers.clone()))
            .collect();
        let (listen_addr, tls_listen_addr) = listen;
        let routes = ArcSwap::from_pointee(RouteTable::from_config(&config, &names));
        Arc::new(Proxy {
            config,
            backends,
            routes,
            stats: ProxyStats::default(),
            started: Instant::now(),
            listen_addr,
            tls_listen_addr,
            clients: Arc::new(ClientRegistry::default()),
            shutdown,
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

    /// What to announce to a client that reached the proxy at `local`: the announce setting and
    /// the listen address of the listener it came through (the TLS one, or the plain one).
    pub fn listener_of(&self, local: SocketAddr) -> (&str, SocketAddr) {
        match self.tls_listen_addr {
            Some(tls)
                if tls.port() == local.port()
                    && (tls.ip().is_unspecified() || tls.ip() == local.ip()) =>
            {
                (&self.config.server.tls.announce_address, tls)
            }
            _ => (&self.config.server.announce_address, self.listen_addr),
        }
    }

    /// A fresh client id, as `CLIENT ID` reports.
    pub fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }
}
