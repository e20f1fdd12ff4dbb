//! The listeners (plain, TLS or both): socket options, the accept loop, TLS handshakes, the
//! client limit, and shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use socket2::{Domain, SockRef, Socket, TcpKeepalive, Type};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::{Instrument, debug, debug_span, info, warn};

use crate::acl::Users;
use crate::config::Config;
use crate::health;
use crate::proxy::{Proxy, Snapshot};
use crate::reload::{self, Reloader, Starter};
use crate::session::{self, ClientStream};
use crate::tls::Reloading;
use crate::workers::Workers;

/// The sockets clients connect to: plain, TLS, or both.
#[derive(Debug, Default)]
pub struct Listeners {
    /// The plain listener (`server.listen`).
    pub plain: Option<TcpListener>,
    /// The TLS listener (`server.tls.listen`).
    pub tls: Option<TcpListener>,
}

/// The TLS listener's settings, as each accepted connection needs them (shared: a plain
/// client's task carries one pointer for them).
struct TlsSide {
    config: Arc<Reloading<rustls::ServerConfig>>,
    handshake_timeout: Duration,
}

/// Binds the client listener with address reuse and the configured backlog.
pub fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    TcpListener::from_std(socket.into())
}

/// Serves clients on `listener` until `shutdown` completes, with `config` fixed: a reload is
/// refused, having nothing to read again.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    run_with(listener, config, reload::Options::default(), shutdown).await
}

/// Serves clients on `listener`, and on the TLS listener `server.tls.listen` when it is set,
/// until `shutdown` completes, reloading the configuration as `options` allow (see
/// [`crate::reload`]).
pub async fn run_with(
    listener: TcpListener,
    config: Config,
    options: reload::Options,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let tls = match config.server.tls.listen.as_str() {
        "" => None,
        addr => Some(bind_configured(
            addr,
            config.server.backlog,
            "server.tls.listen",
        )?),
    };
    let listeners = Listeners {
        plain: Some(listener),
        tls,
    };
    serve(listeners, config, options, shutdown).await
}

/// Binds `addr`, the value of `key`; an error names both.
pub fn bind_configured(addr: &str, backlog: u32, key: &str) -> std::io::Result<TcpListener> {
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
    let parsed: SocketAddr = addr
        .parse()
        .map_err(|_| invalid(format!("{key}: {addr:?} is not an IP:port address")))?;
    bind(parsed, backlog)
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr} ({key}): {e}")))
}

/// Serves clients on `listeners` until `shutdown` completes, reloading the configuration as
/// `options` allow. The TLS listener's certificate and every TLS backend's files are loaded
/// first: a file that does not load stops the start. They are read again when they change
/// (see [`crate::tls`]). On shutdown it drains in phases:
///
/// 1. at once: not ready (`/ready` answers 503), yet still accepting and serving new clients
///    for `shutdown_delay_ms`, so the load balancer stops sending clients before the sockets
///    close;
/// 2. then accepting stops; every client gets the replies it is owed and is closed between
///    requests (an idle one at once);
/// 3. at `shutdown_timeout_ms` after shutdown began, whatever is still open is dropped.
pub async fn serve(
    listeners: Listeners,
    config: Config,
    options: reload::Options,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let (local, tls_addr) = local_addrs(&listeners)?;
    let tls_side = tls_side(&listeners, &config)?;
    // Before any backend or command table resolves its metric handles.
    crate::metrics::install();
    // The refreshers, the reload triggers and the admin endpoint stop when `stop` turns true:
    // once the clients are gone, so that `/ready` says 503 (not "refused") while they drain.
    let (stop_tx, stop_rx) = watch::channel(false);
    let workers = Workers::start(worker_threads(config.server.threads))?;
    let users = compile_users(&config)?;
    let starter = Starter::new(workers.set().clone(), stop_rx.clone());
    let (backends, _) = starter.build(&config, None);
    let proxy = Proxy::new(Snapshot::new(config, users, backends, 1), local, tls_addr);
    let reloader = Arc::new(Reloader::new(
        Arc::clone(&proxy),
        starter,
        options.source,
        options.log_filter,
    ));
    spawn_reload_triggers(&reloader, options.requests, &stop_rx);
    spawn_admin(&proxy, &reloader, &stop_rx).await?;
    crate::migrate::follow(&proxy, stop_rx.clone()).await;
    tokio::spawn(health::watch_start(
        Arc::clone(&proxy),
        Duration::from_millis(200),
    ));
    info!(
        listen = %local,
        tls_listen = ?tls_addr,
        backends = proxy.snapshot().backends().len(),
        threads = workers.set().len(),
        "listening"
    );
    let mut acceptor = Acceptor {
        listeners: &listeners,
        tls: tls_side.as_ref(),
        proxy: &proxy,
        workers: &workers,
        at_limit: false,
    };
    acceptor.until(shutdown).await;
    let deadline = acceptor.through_shutdown_delay().await;
    drop(listeners);
    info!(
        clients = proxy.stats.connected_clients.load(Ordering::Relaxed),
        "shutdown: stopped accepting; draining clients"
    );
    drain(&proxy, deadline).await;
    let _ = stop_tx.send(true);
    reloader.join_refreshers().await;
    // Ends the worker threads, and with them the backend connections.
    drop(workers);
    info!("stopped");
    Ok(())
}

/// The plain and TLS listeners' addresses, and the one the proxy announces as its own (the
/// plain one when there is one): serving needs at least one listener.
fn local_addrs(listeners: &Listeners) -> std::io::Result<(SocketAddr, Option<SocketAddr>)> {
    let plain_addr = listeners.plain.as_ref().map(TcpListener::local_addr);
    let tls_addr = listeners.tls.as_ref().map(TcpListener::local_addr);
    let (plain_addr, tls_addr) = (plain_addr.transpose()?, tls_addr.transpose()?);
    let Some(local) = plain_addr.or(tls_addr) else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "no listener: server.listen and server.tls.listen are both empty",
        ));
    };
    Ok((local, tls_addr))
}

/// Loads every TLS backend's files and the TLS listener's certificate before anything starts,
/// so that a file that does not load stops the start; the listener's settings when there is a
/// TLS listener.
fn tls_side(listeners: &Listeners, config: &Config) -> std::io::Result<Option<Arc<TlsSide>>> {
    let invalid = |e: crate::tls::TlsError| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
    };
    crate::tls::check_backends(config).map_err(invalid)?;
    let tls_config = crate::tls::listener(config).map_err(invalid)?;
    match (&listeners.tls, tls_config) {
        (Some(_), Some(reloading)) => Ok(Some(Arc::new(TlsSide {
            config: reloading,
            handshake_timeout: Duration::from_millis(config.server.tls.handshake_timeout_ms),
        }))),
        (Some(_), None) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a TLS listener without server.tls.listen, cert_file and key_file",
        )),
        (None, _) => Ok(None),
    }
}

/// The users of the starting configuration, reading passwords from the process environment;
/// every problem is listed in the one error, as a reload lists them.
fn compile_users(config: &Config) -> std::io::Result<Users> {
    Users::compile(config, &|name| std::env::var(name).ok()).map_err(|problems| {
        let listed: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        std::io::Error::new(std::io::ErrorKind::InvalidInput, listed.join("; "))
    })
}

/// Starts what asks `reloader` for reloads: the configuration file's watcher, when there is
/// a file, and the binary's requests (one per `SIGHUP`), when there are any.
fn spawn_reload_triggers(
    reloader: &Arc<Reloader>,
    requests: Option<tokio::sync::mpsc::Receiver<reload::Trigger>>,
    stop_rx: &watch::Receiver<bool>,
) {
    if let Some(file) = reloader.file() {
        let file = file.to_path_buf();
        tokio::spawn(reload::watch_file(
            Arc::clone(reloader),
            file,
            stop_rx.clone(),
        ));
    }
    if let Some(mut requests) = requests {
        let reloader = Arc::clone(reloader);
        tokio::spawn(async move {
            while let Some(trigger) = requests.recv().await {
                reloader.reload(trigger).await;
            }
        });
    }
}

/// Starts the admin endpoint when `server.admin_listen` is set; an address it cannot listen
/// on stops the start, naming the key.
async fn spawn_admin(
    proxy: &Proxy,
    reloader: &Arc<Reloader>,
    stop_rx: &watch::Receiver<bool>,
) -> std::io::Result<()> {
    let admin_listen = proxy.config().server.admin_listen.clone();
    if admin_listen.is_empty() {
        return Ok(());
    }
    let addr = admin_listen;
    match TcpListener::bind(&addr).await {
        Ok(admin) => {
            tokio::spawn(crate::admin::serve(
                admin,
                Arc::clone(reloader),
                stop_rx.clone(),
            ));
            Ok(())
        }
        Err(e) => Err(std::io::Error::new(
            e.kind(),
            format!("cannot listen on {addr} (server.admin_listen): {e}"),
        )),
    }
}

/// Shutdown's last phases: waits for the clients to finish what they are owed and leave, until
/// `deadline`, past which whatever is still open is dropped with the workers.
async fn drain(proxy: &Proxy, deadline: tokio::time::Instant) {
    proxy.drain();
    while proxy.stats.connected_clients.load(Ordering::Relaxed) > 0
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = proxy.stats.connected_clients.load(Ordering::Relaxed);
    if left > 0 {
        warn!(
            clients = left,
            "shutdown: drain deadline passed; closing the remaining clients"
        );
    }
}

/// The number of worker threads for `server.threads`: 0 means one per core.
fn worker_threads(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The accept loop's state.
struct Acceptor<'a> {
    listeners: &'a Listeners,
    tls: Option<&'a Arc<TlsSide>>,
    proxy: &'a Arc<Proxy>,
    workers: &'a Workers,
    /// Whether `max_clients` was reached and not left since: the limit is logged once per
    /// episode, not once per refused client.
    at_limit: bool,
}

impl Acceptor<'_> {
    /// Accepts clients on both listeners until `until` completes.
    async fn until(&mut self, until: impl Future<Output = ()>) {
        tokio::pin!(until);
        loop {
            let (accepted, tls) = tokio::select! {
                _ = &mut until => return,
                accepted = accept_on(self.listeners.plain.as_ref()) => (accepted, None),
                accepted = accept_on(self.listeners.tls.as_ref()) => (accepted, self.tls),
            };
            match accepted {
                Ok((stream, peer)) => {
                    let refused = accept(stream, peer, self.proxy, self.workers, tls);
                    match refused {
                        Some(max_clients) if !self.at_limit => {
                            warn!(%peer, max_clients, "client limit reached; refusing new clients");
                        }
                        None if self.at_limit => {
                            info!("below the client limit again; accepting clients");
                        }
                        _ => {}
                    }
                    self.at_limit = refused.is_some();
                }
                Err(error) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Shutdown's first phase: not ready from now on, yet still accepting clients for
    /// `shutdown_delay_ms`, so that the load balancer stops sending clients before the sockets
    /// close. Returns when the drain must end (`shutdown_timeout_ms` after shutdown began).
    async fn through_shutdown_delay(&mut self) -> tokio::time::Instant {
        let proxy = self.proxy;
        let (delay_ms, timeout_ms) = {
            let config = proxy.config();
            (
                config.server.shutdown_delay_ms,
                config.server.shutdown_timeout_ms,
            )
        };
        let began = tokio::time::Instant::now();
        let deadline = began + Duration::from_millis(timeout_ms);
        let accept_until = began + Duration::from_millis(delay_ms.min(timeout_ms));
        proxy.lifecycle.begin_shutdown();
        info!(
            clients = proxy.stats.connected_clients.load(Ordering::Relaxed),
            shutdown_delay_ms = delay_ms,
            shutdown_timeout_ms = timeout_ms,
            "shutdown: not ready; still accepting clients until the delay ends"
        );
        self.until(tokio::time::sleep_until(accept_until)).await;
        deadline
    }
}

/// The next connection on `listener`; never without one.
async fn accept_on(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Completes the TLS handshake of a client on the TLS listener, within the handshake timeout.
/// A failure is the client's (a wrong CA, no certificate where one is required, a plain-text
/// client): it is logged at debug level, as Redis logs it at its verbose level.
async fn handshake(
    stream: TcpStream,
    tls: &TlsSide,
) -> Option<Box<tokio_rustls::server::TlsStream<TcpStream>>> {
    let acceptor = TlsAcceptor::from(tls.config.current());
    match tokio::time::timeout(tls.handshake_timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(Box::new(stream)),
        Ok(Err(error)) => {
            debug!(%error, "TLS handshake failed");
            None
        }
        Err(_) => {
            debug!(
                timeout_ms = tls.handshake_timeout.as_millis() as u64,
                "TLS handshake timed out"
            );
            None
        }
    }
}

/// Tells a client over the limit so, as Redis does, and closes it.
async fn refuse(stream: TcpStream, tls: Option<Arc<TlsSide>>) {
    const REFUSAL: &[u8] = b"-ERR max number of clients reached\r\n";
    async fn say(mut stream: impl AsyncWrite + Unpin) {
        let _ = stream.write_all(REFUSAL).await;
        let _ = stream.shutdown().await;
    }
    match tls {
        None => say(stream).await,
        Some(tls) => {
            if let Some(stream) = handshake(stream, &tls).await {
                let _ = tokio::time::timeout(tls.handshake_timeout, say(stream)).await;
            }
        }
    }
}

/// Starts a session for the client on `stream`; `Some(max_clients)` when it was refused at
/// that limit.
fn accept(
    stream: TcpStream,
    peer: SocketAddr,
    proxy: &Arc<Proxy>,
    workers: &Workers,
    tls: Option<&Arc<TlsSide>>,
) -> Option<usize> {
    let tls = tls.cloned();
    let (keepalive_s, max_clients) = {
        let config = proxy.config();
        (config.server.tcp_keepalive_s, config.server.max_clients)
    };
    let stats = &proxy.stats;
    stats.total_connections.fetch_add(1, Ordering::Relaxed);
    let _ = stream.set_nodelay(true);
    if keepalive_s > 0 {
        let _ = SockRef::from(&stream)
            .set_tcp_keepalive(&TcpKeepalive::new().with_time(Duration::from_secs(keepalive_s)));
    }
    let connected = stats.connected_clients.fetch_add(1, Ordering::Relaxed) + 1;
    let proxy = Arc::clone(proxy);
    if connected as usize > max_clients {
        stats.connected_clients.fetch_sub(1, Ordering::Relaxed);
        stats.rejected_connections.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(refuse(stream, tls));
        return Some(max_clients);
    }
    // A debug-level span: free when debug logging is off, yet every session line carries the
    // peer when it is on.
    let span = debug_span!("client", %peer);
    // The socket moves to the worker's runtime: it is registered with that thread's poller.
    let stream = match stream.into_std() {
        Ok(stream) => stream,
        Err(error) => {
            debug!(%error, "client gone before its session started");
            stats.connected_clients.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
    };
    workers.spawn(
        async move {
            debug!("client connected");
            match TcpStream::from_std(stream) {
                // Every client's task is as large as its largest state, so TLS must not add
                // to the plain path's: the handshake (rustls's state) is boxed, and it runs
                // here, on the worker, not on the accept loop.
                Ok(stream) => match &tls {
                    None => {
                        let stream = ClientStream::Tcp(stream);
                        session::serve(stream, peer, Arc::clone(&proxy)).await;
                    }
                    Some(tls) => {
                        if let Some(stream) = Box::pin(handshake(stream, tls)).await {
                            let stream = ClientStream::Tls(stream);
                            session::serve(stream, peer, Arc::clone(&proxy)).await;
                        }
                    }
                },
                Err(error) => debug!(%error, "cannot register the client socket"),
            }
            proxy
                .stats
                .connected_clients
                .fetch_sub(1, Ordering::Relaxed);
            debug!("client disconnected");
        }
        .instrument(span),
    );
    None
}
