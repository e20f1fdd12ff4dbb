//! The operator's side door: a small HTTP/1.1 listener, one request per connection.
//!
//! | path | answer |
//! |---|---|
//! | `/metrics` | every metric in Prometheus's text format ([`crate::metrics`]) |
//! | `/live` | 200 while the process serves |
//! | `/ready` | 200 once every backend serves the slots routed to it, 503 before and from the moment shutdown begins ([`crate::health`]) |
//! | `/topology` | JSON: each backend's nodes, their roles, slot ranges and connection states, and its last refresh |
//! | `/config` | the configuration in force as TOML, every secret redacted |
//! | `/migrations` | JSON: every migration with its phase and progress; `POST` starts one or acts on one (`admin/migrations.rs`), with the admin token |
//! | `POST /reload` | reads the configuration again and puts it in force (see [`crate::reload`]); needs the admin token (`server.admin_token_file`, as `Authorization: Bearer TOKEN`) |
//!
//! The listener is bounded like the client side: at most `server.admin_max_connections` at
//! once (further ones are closed at accept), each given `server.admin_timeout_ms` from accept
//! to the end of its answer, so a slow or silent client cannot hold tasks without bound.

mod auth;
mod migrations;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tracing::{debug, info, warn};

use crate::config::Secret;
use crate::health::{self, Readiness};
use crate::proxy::Proxy;
use crate::reload::{Outcome, Reloader, Trigger};

/// Longest HTTP request head read.
const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// Serves the admin endpoints on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    reloader: Arc<Reloader>,
    mut shutdown: watch::Receiver<bool>,
) {
    crate::metrics::install();
    // Fixed at start: a reload does not resize the admin listener.
    let (max_connections, timeout_ms) = {
        let config = reloader.proxy().config();
        (
            config.server.admin_max_connections.max(1),
            config.server.admin_timeout_ms.max(1),
        )
    };
    let limit = Arc::new(Semaphore::new(max_connections));
    let timeout = Duration::from_millis(timeout_ms);
    if let Ok(addr) = listener.local_addr() {
        info!(listen = %addr, "admin endpoints listening (/metrics, /ready, /live, /topology, /config, POST /reload)");
    }
    let mut warned_full = false;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
                        // Dropped unanswered: answering would take the task the limit is for.
                        if !warned_full {
                            warn!(%peer, limit = max_connections, "admin connection limit reached; closing new admin connections");
                            warned_full = true;
                        }
                        continue;
                    };
                    warned_full = false;
                    let reloader = Arc::clone(&reloader);
                    tokio::spawn(async move {
                        let answered = tokio::time::timeout(timeout, answer(stream, peer, &reloader)).await;
                        match answered {
                            Ok(Ok(())) => {}
                            Ok(Err(error)) => debug!(%peer, %error, "admin request failed"),
                            Err(_) => debug!(%peer, "admin connection timed out"),
                        }
                        drop(permit);
                    });
                }
                Err(error) => {
                    warn!(%error, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// What the endpoints read of a request: the request line's method and path (without a query
/// string), and the token of an `Authorization: Bearer` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// `/metrics`, ...
    pub path: String,
    /// What follows the path's `?`, as sent (percent-encoded).
    pub query: String,
    /// The token of an `Authorization: Bearer` header, if one was sent.
    pub bearer: Option<Secret>,
}

/// What an endpoint answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status line after the version, such as `200 OK`.
    pub status: &'static str,
    /// The `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
    /// Whether to ask for a bearer token (`WWW-Authenticate`), with a 401.
    pub authenticate: bool,
}

impl Response {
    fn text(status: &'static str, body: impl Into<String>) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            authenticate: false,
        }
    }

    fn json(value: &Value) -> Self {
        Response {
            status: "200 OK",
            content_type: "application/json",
            body: format!("{value}\n"),
            authenticate: false,
        }
    }
}

async fn answer(
    mut stream: TcpStream,
    peer: SocketAddr,
    reloader: &Reloader,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    // The head ends at a blank line, written with CRLFs or, as some clients do, bare LFs.
    let ended = |head: &[u8]| {
        head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n")
    };
    while !ended(&head) && head.len() < MAX_REQUEST_BYTES {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
    let response = match parse_request(&head) {
        Some(request) => route(&request, peer, reloader).await,
        None => Response::text("400 Bad Request", "no request line\n"),
    };
    let authenticate = if response.authenticate {
        "WWW-Authenticate: Bearer realm=\"respgate\"\r\n"
    } else {
        ""
    };
    let bytes = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{authenticate}Connection: close\r\n\r\n{}",
        response.status,
        response.content_type,
        response.body.len(),
        response.body
    );
    stream.write_all(bytes.as_bytes()).await?;
    stream.shutdown().await
}

/// The method, path and bearer token of an HTTP request head.
pub fn parse_request(head: &[u8]) -> Option<Request> {
    let mut lines = head.split(|&b| b == b'\n');
    let line = String::from_utf8_lossy(lines.next()?);
    let mut words = line.split_whitespace();
    let method = words.next()?.to_ascii_uppercase();
    let target = words.next()?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (path, query) = (path.to_string(), query.to_string());
    let bearer = lines
        .map(String::from_utf8_lossy)
        .take_while(|header| !header.trim().is_empty())
        .find_map(|header| {
            let (name, value) = header.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("authorization")
                .then(|| auth::bearer(value))
                .flatten()
        });
    Some(Request {
        method,
        path,
        query,
        bearer,
    })
}

/// Which endpoint answers `request` from `peer`: one arm per endpoint.
pub async fn route(request: &Request, peer: SocketAddr, reloader: &Reloader) -> Response {
    let proxy: &Proxy = reloader.proxy();
    match (request.method.as_str(), request.path.as_str()) {
        ("POST", "/reload") => {
            if let Err(refused) = auth::authorize(request, &proxy.config().server, "POST /reload") {
                warn!(%peer, status = refused.status, "admin POST /reload refused");
                return refused;
            }
            info!(%peer, "admin POST /reload, by the holder of the admin token");
            let outcome = reloader.try_reload(Trigger::Http).await;
            let status = match &outcome {
                Outcome::Applied { .. } | Outcome::Unchanged { .. } => "200 OK",
                Outcome::Refused { .. } => "400 Bad Request",
                Outcome::Busy => "409 Conflict",
            };
            Response::text(status, outcome.report())
        }
        (_, "/reload") => Response::text(
            "405 Method Not Allowed",
            "POST /reload reloads the configuration\n",
        ),
        ("GET", "/config") => match proxy.config().to_redacted_toml() {
            Ok(text) => Response::text("200 OK", text),
            Err(error) => Response::text(
                "500 Internal Server Error",
                format!("the configuration could not be shown: {error}\n"),
            ),
        },
        ("GET", "/metrics") => Response {
            status: "200 OK",
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: crate::metrics::render(proxy),
            authenticate: false,
        },
        ("GET", "/live") => Response::text("200 OK", "live\n"),
        ("GET", "/ready") => {
            let readiness = health::readiness(proxy);
            let status = if readiness.is_ready() {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            Response::text(status, readiness.describe())
        }
        ("GET", "/topology") => Response::json(&topology(proxy)),
        (_, path) if path == "/migrations" || path.starts_with("/migrations/") => {
            migrations::route(request, peer, reloader.proxy()).await
        }
        (_, "/metrics" | "/live" | "/ready" | "/topology" | "/config") => {
            Response::text("405 Method Not Allowed", "use GET\n")
        }
        _ => Response::text(
            "404 Not Found",
            "try /metrics, /ready, /live, /topology, /config, /migrations or POST /reload\n",
        ),
    }
}

/// Every backend: its kind, whether it serves its slots, its last refresh, and its nodes with
/// role, slot ranges (masters), master (replicas) and connection state.
pub fn topology(proxy: &Proxy) -> Value {
    let readiness = health::readiness(proxy);
    let snapshot = proxy.snapshot();
    let backends: Vec<Value> = snapshot
        .backends()
        .iter()
        .map(|cluster| {
            let map = cluster.slot_map();
            let mut nodes = Vec::new();
            let ranges = map.ranges();
            for (index, master) in map.masters().iter().enumerate() {
                let slots: Vec<Value> = ranges
                    .iter()
                    .filter(|(_, _, owner)| *owner == index)
                    .map(|(first, last, _)| json!([first, last]))
                    .collect();
                nodes.push(json!({
                    "address": master.addr().as_str(),
                    "role": "master",
                    "slots": slots,
                    "connected": master.is_healthy(),
                    "connections_up": master.connections_up(),
                }));
                for replica in map.replicas_of(index) {
                    nodes.push(json!({
                        "address": replica.addr().as_str(),
                        "role": "replica",
                        "master": master.addr().as_str(),
                        "connected": replica.is_healthy(),
                        "connections_up": replica.connections_up(),
                    }));
                }
            }
            let stats = &cluster.stats;
            let unix_ms = |v: u64| if v == 0 { Value::Null } else { json!(v) };
            json!({
                "name": cluster.name(),
                "kind": format!("{:?}", cluster.kind()).to_ascii_lowercase(),
                "slots_served": map.slots_served(),
                "masters": map.masters().len(),
                "nodes": nodes,
                "last_refresh": {
                    "attempt_unix_ms": unix_ms(stats.last_refresh_attempt_unix_ms.load(Ordering::Relaxed)),
                    "success_unix_ms": unix_ms(stats.last_refresh_unix_ms.load(Ordering::Relaxed)),
                    "error": cluster.last_error().map(|e| e.to_string()),
                    "refreshes": stats.refreshes.load(Ordering::Relaxed),
                    "failures": stats.refresh_failures.load(Ordering::Relaxed),
                },
            })
        })
        .collect();
    json!({
        "ready": readiness.is_ready(),
        "shutting_down": readiness == Readiness::ShuttingDown,
        "backends": backends,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_line_gives_method_and_path_without_query() {
        assert_eq!(
            parse_request(b"get /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Some(Request {
                method: "GET".into(),
                path: "/metrics".into(),
                query: "x=1".into(),
                bearer: None,
            })
        );
        assert_eq!(parse_request(b"\r\n\r\n"), None);
    }

    #[test]
    fn a_bearer_token_is_read_from_the_headers_only() {
        let request =
            parse_request(b"POST /reload HTTP/1.1\r\nHost: a\r\nauthorization: Bearer t0k\r\n\r\n")
                .unwrap();
        assert_eq!(request.bearer, Some(Secret::from("t0k")));
        // After the blank line is the body, not a header.
        let request =
            parse_request(b"POST /reload HTTP/1.1\r\n\r\nAuthorization: Bearer t0k\r\n").unwrap();
        assert_eq!(request.bearer, None);
    }

    proptest::proptest! {
        /// Any bytes a client sends: parsed or refused, never a panic; a bearer header among
        /// any others is found, whatever the case of its name.
        #[test]
        fn any_head_parses_without_panic(head in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse_request(&head);
        }

        #[test]
        fn a_bearer_header_is_found_among_others(
            token in "[A-Za-z0-9._~+/-]{1,40}",
            before in proptest::collection::vec("[A-Za-z-]{1,12}: [ -~]{0,20}", 0..4),
            upper in proptest::bool::ANY,
        ) {
            let name = if upper { "AUTHORIZATION" } else { "authorization" };
            let mut head = String::from("POST /reload HTTP/1.1\r\n");
            for header in &before {
                if !header.to_ascii_lowercase().starts_with("authorization") {
                    head.push_str(header);
                    head.push_str("\r\n");
                }
            }
            head.push_str(&format!("{name}: Bearer {token}\r\n\r\n"));
            let request = parse_request(head.as_bytes()).unwrap();
            proptest::prop_assert_eq!(request.bearer, Some(Secret::from(token.as_str())));
        }
    }
}
