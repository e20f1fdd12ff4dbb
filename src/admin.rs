//! The operator's side door: a small HTTP listener with `/metrics` (Prometheus text), `/ready`
//! (200 once every cluster serves every slot, for a readiness probe), `/live`, `/config` (the
//! configuration in force as TOML, every secret redacted) and `POST /reload` (see
//! [`crate::reload`]).

use std::sync::{Arc, OnceLock};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::cluster::SLOT_COUNT;
use crate::metrics as m;
use crate::proxy::Proxy;
use crate::reload::{Outcome, Reloader, Trigger};

/// Longest HTTP request head read.
const MAX_REQUEST_BYTES: usize = 8 * 1024;

static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The Prometheus recorder, installed as the process's metrics recorder on first use.
pub fn metrics_handle() -> &'static PrometheusHandle {
    METRICS.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            warn!("a metrics recorder was already installed; /metrics shows only respgate's own");
        }
        handle
    })
}

/// Serves the admin endpoints on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    reloader: Arc<Reloader>,
    mut shutdown: watch::Receiver<bool>,
) {
    let handle = metrics_handle();
    if let Ok(addr) = listener.local_addr() {
        info!(listen = %addr, "admin endpoints listening (/metrics, /ready, /live, /config, POST /reload)");
    }
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let reloader = Arc::clone(&reloader);
                    tokio::spawn(async move {
                        if let Err(error) = answer(stream, &reloader, handle).await {
                            debug!(%error, "admin request failed");
                        }
                    });
                }
                Err(error) => {
                    warn!(%error, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Copies the counters kept as plain atomics on the hot path into the recorder.
fn publish(proxy: &Proxy) {
    use std::sync::atomic::Ordering::Relaxed;
    let stats = &proxy.stats;
    metrics::counter!(m::COMMANDS).absolute(stats.total_commands.load(Relaxed));
    metrics::counter!(m::CLIENT_CONNECTIONS).absolute(stats.total_connections.load(Relaxed));
    metrics::gauge!(m::CLIENTS_CONNECTED).set(stats.connected_clients.load(Relaxed) as f64);
    for cluster in proxy.snapshot().backends() {
        let map = cluster.slot_map();
        let name = cluster.name().to_string();
        metrics::gauge!(m::SLOTS_SERVED, "backend" => name.clone()).set(map.slots_served() as f64);
        metrics::gauge!(m::MASTERS, "backend" => name).set(map.masters().len() as f64);
    }
    let reloads = &proxy.reloads;
    metrics::gauge!(m::CONFIG_GENERATION).set(proxy.generation() as f64);
    metrics::gauge!(m::CONFIG_LAST_RELOAD).set(reloads.last_unix.load(Relaxed) as f64);
    metrics::gauge!(m::CONFIG_LAST_RELOAD_OK).set(if reloads.last_status() == "failed" {
        0.0
    } else {
        1.0
    });
    // Both outcomes are listed from the start, so that a rate over them is defined.
    for outcome in ["ok", "failed"] {
        metrics::counter!(m::CONFIG_RELOADS, "outcome" => outcome).increment(0);
    }
}

async fn answer(
    mut stream: TcpStream,
    reloader: &Reloader,
    metrics: &PrometheusHandle,
) -> std::io::Result<()> {
    let proxy = reloader.proxy();
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_BYTES {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        if n == 0 {
            break;
        }
        head.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
    let line = String::from_utf8_lossy(&head);
    let mut words = line.split_whitespace();
    let method = words.next().unwrap_or("GET");
    let path = words.next().unwrap_or("/");
    let (status, body) = match path {
        "/reload" if method == "POST" => {
            let outcome = reloader.try_reload(Trigger::Http).await;
            let status = match &outcome {
                Outcome::Applied { .. } | Outcome::Unchanged { .. } => "200 OK",
                Outcome::Refused { .. } => "400 Bad Request",
                Outcome::Busy => "409 Conflict",
            };
            (status, outcome.report())
        }
        "/reload" => (
            "405 Method Not Allowed",
            "POST /reload reloads the configuration\n".to_string(),
        ),
        "/metrics" => {
            publish(proxy);
            ("200 OK", metrics.render())
        }
        "/live" => ("200 OK", "live\n".to_string()),
        "/config" => match proxy.config().to_redacted_toml() {
            Ok(text) => ("200 OK", text),
            Err(error) => (
                "500 Internal Server Error",
                format!("the configuration could not be shown: {error}\n"),
            ),
        },
        "/ready" => {
            let snapshot = proxy.snapshot();
            let unready: Vec<&str> = snapshot
                .backends()
                .iter()
                .filter(|c| c.slot_map().slots_served() < usize::from(SLOT_COUNT))
                .map(|c| c.name())
                .collect();
            if unready.is_empty() {
                ("200 OK", "ready\n".to_string())
            } else {
                (
                    "503 Service Unavailable",
                    format!("not every slot is served yet: {}\n", unready.join(",")),
                )
            }
        }
        _ => (
            "404 Not Found",
            "try /metrics, /ready, /live, /config or POST /reload\n".to_string(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
