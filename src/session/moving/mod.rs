//! Requests for keys whose prefix is moving between backends ([`crate::migrate`]): each
//! passes the migration's gate, which says where it goes now, and a key still on the side it
//! leaves is moved first, so that the request finds it where it is sent.
//!
//! Carried so far: a command forwarded by its keys, a multi-key command (split as the routes
//! would split it with the keys where they are now) and a script with keys, whose moving keys
//! all belong to one migration. Anything else naming a moving key (a blocking command, one
//! queued in `MULTI`, a restricted user's script) gets [`NOT_CARRIED`], and is never routed
//! as if nothing moved.

use std::sync::Arc;

use bytes::Bytes;

pub(super) mod request;

use request::How;
pub use request::MovingRequest;

use super::ClientState;
use super::action::{Action, Gather};
use super::route::{NO_FLUSH, NOT_CARRIED, RouteError, route_keys};
use crate::cluster::{ScriptCache, Sending};
use crate::command::{CommandSpec, Policy, ScriptKind};
use crate::keyspace::{Moving, RouteTable, Way};
use crate::migrate::move_key;
use crate::multikey;
use crate::protocol::reply;
use crate::protocol::{Protocol, Request};
use crate::proxy::ProxyRef;

/// The action for a request naming a key of a moving prefix; `None` when it names none.
pub(super) fn divert(
    state: &mut ClientState,
    proxy: ProxyRef<'_>,
    spec: &CommandSpec,
    request: &Request,
) -> Option<Action> {
    if matches!(spec.name.as_str(), "flushall" | "flushdb") {
        return Some(Action::Reply(reply::error(NO_FLUSH)));
    }
    let routes = proxy.routes();
    state.positions.clear();
    spec.key_positions(&request.args, &mut state.positions);
    let mut moving: Option<&Arc<Moving>> = None;
    let mut several = false;
    let mut keys = Vec::new();
    for key in state.positions.iter().filter_map(|&p| request.args.get(p)) {
        let Some(found) = routes.moving(key) else {
            continue;
        };
        several |= moving.is_some_and(|first| !Arc::ptr_eq(first, found));
        moving = Some(found);
        let strip = routes.route(key).strip.min(key.len());
        keys.push(key.slice(strip..));
    }
    let moving = Arc::clone(moving?);
    let refused = || Some(Action::Reply(reply::error(NOT_CARRIED)));
    let policy = match spec.policy {
        // The node checks a restricted user's script against its twin, on a connection of
        // the client's own: not carried yet.
        Policy::Script(kind @ ScriptKind::Eval { .. }) if !state.as_node_user() => {
            if let Some(body) = request.args.get(1) {
                ScriptCache::remember_in(proxy.backends().iter().map(|b| &b.scripts), body);
            }
            kind.then()
        }
        policy => policy,
    };
    let how = match policy {
        Policy::Forward { access } => How::Forward(access),
        Policy::Split { kind, access } => How::Split(kind, access),
        _ => return refused(),
    };
    if several || state.db != 0 {
        return refused();
    }
    let turn = moving.turn(state.id);
    Some(
        Gather::Moving(MovingRequest {
            turn,
            moving,
            request: Request {
                raw: request.raw.clone(),
                args: request.args.clone(),
            },
            positions: state.positions.clone(),
            keys,
            how,
        })
        .into(),
    )
}

/// Runs `request` through its migration's gate: waits while the keys are held, moves them to
/// the side their requests go to now, and sends it as the routes would with the keys there.
/// The gate stays passed until the reply is in, so that the way cannot change under it.
pub(super) async fn run(
    proxy: ProxyRef<'_>,
    request: MovingRequest,
    protocol: Protocol,
    affinity: usize,
) -> Bytes {
    let moving = Arc::clone(&request.moving);
    let (Some(from), Some(to)) = (proxy.backend(moving.from), proxy.backend(moving.to)) else {
        return reply::error("TRYAGAIN respgate: a backend of this migration is gone");
    };
    let settings = from.conn_settings();
    let budget = settings.request_timeout + from.config().retry_timeout();
    // After the client's earlier requests through a gate, in its order.
    if tokio::time::timeout(budget, request.turn.wait())
        .await
        .is_err()
    {
        return reply::error(&format!(
            "TRYAGAIN respgate: an earlier request for keys of migration {} took {} ms",
            moving.id,
            budget.as_millis()
        ));
    }
    let Some(pass) = moving.pass(budget).await else {
        return reply::error(&format!(
            "TRYAGAIN respgate: the keys of migration {} were held for {} ms while replicas agree on its next phase",
            moving.id,
            budget.as_millis()
        ));
    };
    if pass.way == Way::Ended {
        // Over: sent as the routes in force send it, which no longer name the migration.
        drop(pass);
        let newest = proxy.proxy().snapshot();
        let proxy = ProxyRef::new(proxy.proxy(), &newest);
        let routes = proxy.routes();
        let still = request.request.args.iter().any(|key| {
            routes.has_moving() && routes.moving(key).is_some_and(|m| Arc::ptr_eq(m, &moving))
        });
        if still {
            return reply::error(NOT_CARRIED);
        }
        return send(proxy, routes, request, protocol, affinity).await;
    }
    let (side, away) = match pass.way {
        Way::Source => (moving.from, None),
        Way::Target => (moving.to, None),
        Way::SourceToTarget => (moving.to, Some((from, to))),
        Way::TargetToSource => (moving.from, Some((to, from))),
        Way::Hold | Way::Fenced | Way::Ended => {
            return reply::error(
                "TRYAGAIN respgate: this replica cannot read the migrations' state (migration.state_backend); keys are not served until it can",
            );
        }
    };
    // The pass is held at most the request's budget, moves and all: a controller counts a
    // replica that went silent as done with its requests a budget after its lease.
    let work = async {
        if let Some((away, here)) = away {
            let timeout = u64::try_from(settings.request_timeout.as_millis()).unwrap_or(u64::MAX);
            for key in &request.keys {
                if let Err(error) = move_key(away, here, key, timeout).await {
                    return reply::error(&format!(
                        "TRYAGAIN respgate: a key of migration {} could not be moved: {error}",
                        moving.id
                    ));
                }
            }
        }
        let routes = proxy.routes().resolved(&moving, side);
        send(proxy, &routes, request, protocol, affinity).await
    };
    let reply = tokio::time::timeout(budget, work).await.unwrap_or_else(|_| {
        reply::error(&format!(
            "TRYAGAIN respgate: a request for keys of migration {} did not finish within {} ms; a write may or may not have been applied",
            moving.id,
            budget.as_millis()
        ))
    });
    drop(pass);
    reply
}

/// Sends `request` as `routes` (the keys of its migration on the side they are now) route it.
async fn send(
    proxy: ProxyRef<'_>,
    routes: &RouteTable,
    request: MovingRequest,
    protocol: Protocol,
    affinity: usize,
) -> Bytes {
    let MovingRequest {
        request,
        positions,
        how,
        ..
    } = request;
    let (access, split) = match how {
        How::Forward(access) => (access, None),
        How::Split(kind, access) => (access, Some(kind)),
    };
    match route_keys(routes, &request.args, &positions) {
        Ok(mut routed) => match proxy.backend(routed.backend) {
            Some(backend) => {
                backend
                    .execute(Sending {
                        payload: routed.payload(request.raw),
                        target: routed.target,
                        access,
                        protocol,
                        db: 0,
                        affinity,
                    })
                    .await
            }
            None => reply::error("TRYAGAIN respgate: a backend of this migration is gone"),
        },
        Err(error @ (RouteError::CrossSlot | RouteError::CrossBackend(_))) if split.is_some() => {
            let message = error.message(proxy);
            match split.and_then(|kind| multikey::plan(kind, request, routes)) {
                Some(split) => multikey::run(proxy, split, protocol, 0, affinity).await,
                None => reply::error(&message),
            }
        }
        Err(error) => reply::error(&error.message(proxy)),
    }
}
