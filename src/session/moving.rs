//! Requests for keys whose prefix is moving between backends ([`crate::migrate`]): each
//! passes the migration's gate, which says where it goes now, and a key still on the side it
//! leaves is moved first, so that the request finds it where it is sent.
//!
//! Carried so far: a command forwarded by its keys (or a multi-key command) whose keys all
//! belong to one migration and share a hash slot. Anything else naming a moving key gets
//! [`NOT_CARRIED`], and is never routed as if nothing moved.

use std::sync::Arc;

use bytes::Bytes;

use super::ClientState;
use super::action::{Action, Gather};
use crate::cluster::{Sending, Target};
use crate::command::{Access, CommandSpec, Policy};
use crate::keyspace::{Moving, Way};
use crate::migrate::move_key;
use crate::protocol::reply;
use crate::protocol::{Protocol, Request};
use crate::proxy::ProxyRef;
use crate::slot::Slot;

/// The refusal of a command the gate does not carry yet.
pub(super) const NOT_CARRIED: &str = "TRYAGAIN respgate: some keys of this command are being moved to another backend; send it again once the move is done, or with keys of one prefix and one slot";

/// The refusal of `FLUSHALL` and `FLUSHDB` while keys move: they would delete the
/// migrations' state (kept in a backend) under the replicas that follow it.
pub(super) const NO_FLUSH: &str = "ERR respgate: a migration is under way; FLUSHALL and FLUSHDB would delete its state. Wait until it is done, or abort it";

/// A request for moving keys, as [`divert`] made it.
#[derive(Debug)]
pub struct MovingRequest {
    /// The migration its keys belong to.
    moving: Arc<Moving>,
    /// Its keys as the backends store them (any prefix a route strips removed).
    keys: Vec<Bytes>,
    /// The command as sent to the backend.
    payload: Bytes,
    /// Whether it only reads.
    access: Access,
}

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
    let mut mixed = false;
    for key in state.positions.iter().filter_map(|&p| request.args.get(p)) {
        match (routes.moving(key), moving) {
            (Some(found), None) => moving = Some(found),
            (Some(found), Some(first)) if Arc::ptr_eq(found, first) => {}
            _ => mixed = true,
        }
    }
    let moving = Arc::clone(moving?);
    let refused = || Some(Action::Reply(reply::error(NOT_CARRIED)));
    let access = match spec.policy {
        Policy::Forward { access } | Policy::Split { access, .. } => access,
        _ => return refused(),
    };
    if mixed || state.db != 0 {
        return refused();
    }
    let mut args = request.args.clone();
    let mut keys = Vec::with_capacity(state.positions.len());
    let mut stripped = false;
    for &position in &state.positions {
        let Some(key) = args.get_mut(position) else {
            continue;
        };
        let strip = routes.route(key).strip.min(key.len());
        stripped |= strip > 0;
        *key = key.slice(strip..);
        keys.push(key.clone());
    }
    let slot = keys.first().map(|k| Slot::for_key(k));
    if keys.iter().any(|k| Some(Slot::for_key(k)) != slot) {
        return refused();
    }
    let payload = if stripped {
        Request::from_args(args).raw
    } else {
        request.raw.clone()
    };
    Some(
        Gather::Moving(MovingRequest {
            moving,
            keys,
            payload,
            access,
        })
        .into(),
    )
}

/// Runs `request` through its migration's gate: waits while the keys are held, moves them to
/// the side their requests go to now, and sends it there. The gate stays passed until the
/// reply is in, so that the way cannot change under it.
pub(super) async fn run(
    proxy: ProxyRef<'_>,
    request: MovingRequest,
    protocol: Protocol,
    affinity: usize,
) -> Bytes {
    let moving = &request.moving;
    let (Some(from), Some(to)) = (proxy.backend(moving.from), proxy.backend(moving.to)) else {
        return reply::error("TRYAGAIN respgate: a backend of this migration is gone");
    };
    let settings = from.conn_settings();
    let budget = settings.request_timeout + from.config().retry_timeout();
    let Some(pass) = moving.pass(budget).await else {
        return reply::error(&format!(
            "TRYAGAIN respgate: the keys of migration {} were held for {} ms while replicas agree on its next phase",
            moving.id,
            budget.as_millis()
        ));
    };
    let (side, id, away) = match pass.way {
        Way::Source => (from, moving.from, None),
        Way::Target => (to, moving.to, None),
        Way::SourceToTarget => (to, moving.to, Some(from)),
        Way::TargetToSource => (from, moving.from, Some(to)),
        Way::Hold | Way::Fenced => {
            return reply::error(
                "TRYAGAIN respgate: this replica cannot read the migrations' state (migration.state_backend); keys are not served until it can",
            );
        }
    };
    if let Some(away) = away {
        let timeout = u64::try_from(settings.request_timeout.as_millis()).unwrap_or(u64::MAX);
        for key in &request.keys {
            if let Err(error) = move_key(away, side, key, timeout).await {
                return reply::error(&format!(
                    "TRYAGAIN respgate: a key of migration {} could not be moved: {error}",
                    moving.id
                ));
            }
        }
    }
    let slot = request
        .keys
        .first()
        .map_or(Slot::ZERO, |key| proxy.routes().slot_on(id, key));
    let reply = side
        .execute(Sending {
            payload: request.payload,
            target: Target::Slot(slot),
            access: request.access,
            protocol,
            db: 0,
            affinity,
        })
        .await;
    drop(pass);
    reply
}
