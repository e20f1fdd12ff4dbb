//! The migration endpoints (see [`crate::migrate`]): `GET /migrations` lists them with their
//! progress; `POST /migrations?prefix=P&to=B[&max_keys_per_s=N][&max_bytes_per_s=N]` starts
//! one, driven by this replica; `POST /migrations/ID/{pause,resume,abort,verify,forget}` acts on one.
//! The `POST`s need the admin token, and each is logged with who asked.

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::json;
use tracing::{info, warn};

use super::{Request, Response, auth};
use crate::migrate::{self, Act, ControlError, Plan};
use crate::proxy::Proxy;

/// Answers a request whose path starts with `/migrations`.
pub async fn route(request: &Request, peer: SocketAddr, proxy: &Arc<Proxy>) -> Response {
    let rest = request.path.trim_start_matches("/migrations");
    match (request.method.as_str(), rest) {
        ("GET", "" | "/") => list(proxy).await,
        ("POST", "" | "/") => {
            let action = "POST /migrations";
            if let Err(refused) = auth::authorize(request, &proxy.config().server, action) {
                warn!(%peer, status = refused.status, "admin {action} refused");
                return refused;
            }
            start(request, peer, proxy).await
        }
        ("POST", rest) => {
            let Some((id, act)) = rest.trim_start_matches('/').split_once('/') else {
                return not_found();
            };
            let act = match act {
                "pause" => Act::Pause,
                "resume" => Act::Resume,
                "abort" => Act::Abort,
                "verify" => Act::Verify,
                "forget" => Act::Forget,
                _ => return not_found(),
            };
            let action = format!("POST /migrations/{id}/{act:?}");
            if let Err(refused) = auth::authorize(request, &proxy.config().server, &action) {
                warn!(%peer, status = refused.status, "admin {action} refused");
                return refused;
            }
            info!(%peer, migration = %id, act = ?act, "admin migration action, by the holder of the admin token");
            match migrate::act(proxy, id, act).await {
                Ok(migration) => Response::json(&json!(migration)),
                Err(error) => refused(&error),
            }
        }
        _ => Response::text("405 Method Not Allowed", "GET or POST\n"),
    }
}

async fn list(proxy: &Proxy) -> Response {
    let Some(store) = migrate::store_of(proxy).filter(|_| proxy.config().migration.enabled) else {
        return refused(&ControlError::Off);
    };
    match store.migrations().await {
        Ok(mut migrations) => {
            migrations.retain(|m| m.forgotten_ms == 0);
            migrations.sort_by_key(|m| m.started_ms);
            Response::json(&json!(migrations))
        }
        Err(error) => refused(&error.into()),
    }
}

async fn start(request: &Request, peer: SocketAddr, proxy: &Arc<Proxy>) -> Response {
    let mut plan = Plan::default();
    for (name, value) in query_pairs(&request.query) {
        let number = || value.parse::<u64>().ok();
        match name.as_str() {
            "prefix" => plan.prefix = value,
            "to" => plan.to = value,
            "max_keys_per_s" => match number() {
                Some(n) => plan.max_keys_per_s = n,
                None => return bad(&format!("max_keys_per_s={value} is not a count")),
            },
            "max_bytes_per_s" => match number() {
                Some(n) => plan.max_bytes_per_s = n,
                None => return bad(&format!("max_bytes_per_s={value} is not a count")),
            },
            other => return bad(&format!("unknown parameter {other:?}")),
        }
    }
    if plan.prefix.is_empty() || plan.to.is_empty() {
        return bad("give prefix=PREFIX and to=BACKEND");
    }
    let Some(me) = proxy.replica_id.get().cloned() else {
        return refused(&ControlError::Off);
    };
    info!(%peer, prefix = %plan.prefix, to = %plan.to, "admin POST /migrations, by the holder of the admin token");
    // In a task of its own: the admin connection's timeout may end this answer, but never
    // between storing the migration and starting its driver (nothing else would drive it).
    let starting = {
        let proxy = Arc::clone(proxy);
        tokio::spawn(async move {
            let started = migrate::start(&proxy, &me, plan).await;
            if let Ok(migration) = &started {
                tokio::spawn(migrate::drive(proxy, me, migration.id.clone()));
            }
            started
        })
    };
    let Ok(started) = starting.await else {
        return Response::text(
            "500 Internal Server Error",
            "the start failed; see the log\n",
        );
    };
    match started {
        Ok(migration) => {
            let mut response = Response::json(&json!(migration));
            response.status = "201 Created";
            response
        }
        Err(error) => refused(&error),
    }
}

fn refused(error: &ControlError) -> Response {
    let status = match error {
        ControlError::Off => "403 Forbidden",
        ControlError::Unknown(_) => "404 Not Found",
        ControlError::Refused(_) | ControlError::InTheWay(_) | ControlError::NotNow { .. } => {
            "409 Conflict"
        }
        ControlError::Store(_) => "503 Service Unavailable",
    };
    Response::text(status, format!("{error}\n"))
}

fn bad(why: &str) -> Response {
    Response::text("400 Bad Request", format!("{why}\n"))
}

fn not_found() -> Response {
    Response::text(
        "404 Not Found",
        "try GET /migrations, POST /migrations?prefix=P&to=B or POST /migrations/ID/{pause,resume,abort,verify,forget}\n",
    )
}

/// The `name=value` pairs of a query string, percent-decoded (`+` is a space).
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_is_split_and_decoded() {
        assert_eq!(
            query_pairs("prefix=user%3A%7Bx%7D&to=archive+2&max_keys_per_s=10&bad=%zz%4"),
            vec![
                ("prefix".into(), "user:{x}".into()),
                ("to".into(), "archive 2".into()),
                ("max_keys_per_s".into(), "10".into()),
                ("bad".into(), "%zz%4".into()),
            ]
        );
        assert!(query_pairs("").is_empty());
    }

    proptest::proptest! {
        #[test]
        fn any_query_decodes_without_panic(query in "[ -~]{0,64}") {
            let _ = query_pairs(&query);
        }
    }
}
