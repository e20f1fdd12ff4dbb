//! The listener: socket options, the accept loop, the client limit, and shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use socket2::{Domain, SockRef, Socket, TcpKeepalive, Type};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{Instrument, debug, debug_span, info, warn};

use crate::acl::Users;
use crate::config::Config;
use crate::proxy::{Proxy, Snapshot};
use crate::reload::{self, Reloader, Starter};
use crate::session;
use crate::workers::Workers;

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

/// Serves clients on `listener` until `shutdown` completes, reloading the configuration as
/// `options` allow (see [`crate::reload`]).
pub async fn run_with(
    listener: TcpListener,
    config: Config,
    options: reload::Options,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let workers = Workers::start(worker_threads(config.server.threads))?;
    let users = Users::compile(&config, &|name| std::env::var(name).ok()).map_err(|problems| {
        let listed: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        std::io::Error::new(std::io::ErrorKind::InvalidInput, listed.join("; "))
    })?;
    let starter = Starter::new(workers.set().clone(), stop_rx.clone());
    let (backends, _) = starter.build(&config, None);
    let proxy = Proxy::new(Snapshot::new(config, users, backends, 1), local);
    let reloader = Arc::new(Reloader::new(
        Arc::clone(&proxy),
        starter,
        options.source,
        options.log_filter,
    ));
    if let Some(file) = reloader.file() {
        let file = file.to_path_buf();
        tokio::spawn(reload::watch_file(
            Arc::clone(&reloader),
            file,
            stop_rx.clone(),
        ));
    }
    if let Some(mut requests) = options.requests {
        let reloader = Arc::clone(&reloader);
        tokio::spawn(async move {
            while let Some(trigger) = requests.recv().await {
                reloader.reload(trigger).await;
            }
        });
    }
    let admin_listen = proxy.config().server.admin_listen.clone();
    if !admin_listen.is_empty() {
        let addr = admin_listen;
        match TcpListener::bind(&addr).await {
            Ok(admin) => {
                tokio::spawn(crate::admin::serve(
                    admin,
                    Arc::clone(&reloader),
                    stop_rx.clone(),
                ));
            }
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("cannot listen on {addr} (server.admin_listen): {e}"),
                ));
            }
        }
    }
    info!(
        listen = %local,
        backends = proxy.snapshot().backends().len(),
        threads = workers.set().len(),
        "listening"
    );

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => accept(stream, peer, &proxy, &workers),
                Err(error) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    // Drain: no new clients; each session stops reading, sends the replies it owes, and
    // closes; whatever is still open at the deadline is dropped.
    drop(listener);
    let open = proxy.stats.connected_clients.load(Ordering::Relaxed);
    info!(clients = open, "shutting down; draining clients");
    proxy.drain();
    let _ = stop_tx.send(true);
    let deadline = tokio::time::Instant::now()
        + Duration::from_millis(proxy.config().server.shutdown_timeout_ms);
    while proxy.stats.connected_clients.load(Ordering::Relaxed) > 0
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = proxy.stats.connected_clients.load(Ordering::Relaxed);
    if left > 0 {
        warn!(
            clients = left,
            "drain deadline passed; closing the remaining clients"
        );
    }
    reloader.join_refreshers().await;
    // Ends the worker threads, and with them the backend connections.
    drop(workers);
    info!("stopped");
    Ok(())
}

/// The number of worker threads for `server.threads`: 0 means one per core.
fn worker_threads(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn accept(stream: TcpStream, peer: SocketAddr, proxy: &Arc<Proxy>, workers: &Workers) {
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
        tokio::spawn(async move {
            let mut stream = stream;
            let _ = stream
                .write_all(b"-ERR max number of clients reached\r\n")
                .await;
        });
        return;
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
            return;
        }
    };
    workers.spawn(
        async move {
            debug!("client connected");
            match TcpStream::from_std(stream) {
                Ok(stream) => session::serve(stream, peer, Arc::clone(&proxy)).await,
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
}
