//! Where a request goes: each key mapped to its backend by the route table and to its slot
//! there, before anything else; keys on several slots or backends are an error, and a route
//! that strips a prefix gets the request rewritten.

use bytes::Bytes;

use super::ClientState;
use super::action::Action;
use super::own::OwnOp;
use crate::cluster::Target;
use crate::command::{Access, CommandSpec};
use crate::keyspace::{BackendId, Place, RouteTable};
use crate::protocol::Request;
use crate::protocol::reply::{self, CROSSSLOT};
use crate::proxy::ProxyRef;

/// The error for a command that names one of the proxy's own keys.
pub(super) const RESERVED_KEY: &str = "ERR respgate: keys starting with {respgate} hold the proxy's own state; no client may use them";

/// The refusal of a command the gate does not carry yet.
pub(super) const NOT_CARRIED: &str = "TRYAGAIN respgate: some keys of this command are being moved to another backend, and the proxy cannot carry this command across the move yet; send it again once the move is done";

/// The refusal of `FLUSHALL` and `FLUSHDB` while keys move: they would delete the
/// migrations' state (kept in a backend) under the replicas that follow it.
pub(super) const NO_FLUSH: &str = "ERR respgate: a migration is under way; FLUSHALL and FLUSHDB would delete its state. Wait until it is done, or abort it";

/// Where a request goes, from its keys.
#[derive(Debug)]
pub(super) struct Routed {
    /// The backend of every key (the default backend for a keyless command).
    pub backend: BackendId,
    /// The node within it: the keys' slot, or any master when keyless.
    pub target: Target,
    /// The request with its keys rewritten, when a route strips their prefix.
    pub rewritten: Option<Bytes>,
}

impl Routed {
    /// The place of the keys, if the request has any.
    pub fn place(&self) -> Option<Place> {
        match self.target {
            Target::Slot(slot) => Some(Place {
                backend: self.backend,
                slot,
            }),
            _ => None,
        }
    }

    /// The bytes to send: the rewritten request, or the client's own.
    pub fn payload(&mut self, raw: Bytes) -> Bytes {
        self.rewritten.take().unwrap_or(raw)
    }
}

/// Why a request's keys cannot go to one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RouteError {
    /// Different slots of one backend.
    CrossSlot,
    /// Different backends.
    CrossBackend(Vec<BackendId>),
    /// A key of the proxy's own (see [`crate::keyspace::RESERVED`]).
    Reserved,
    /// A key moving between backends, in a command the proxy cannot yet carry across a
    /// migration (see [`super::moving`]).
    Moving,
}

impl RouteError {
    /// The error reply: Redis Cluster's `CROSSSLOT`, naming the backends when keys span
    /// several, so clients treat both alike.
    pub fn message(&self, proxy: ProxyRef<'_>) -> String {
        match self {
            RouteError::CrossSlot => CROSSSLOT.to_string(),
            RouteError::Reserved => RESERVED_KEY.to_string(),
            RouteError::Moving => NOT_CARRIED.to_string(),
            RouteError::CrossBackend(ids) => {
                let names: Vec<String> = ids
                    .iter()
                    .filter_map(|id| proxy.backend(*id).map(|c| format!("'{}'", c.name())))
                    .collect();
                format!(
                    "{CROSSSLOT} (the keys live on backends {})",
                    names.join(" and ")
                )
            }
        }
    }
}

/// The backend and slot of the request's keys; an error when they differ. A route that strips
/// a prefix gets the request rewritten with the keys as the backend knows them.
pub(super) fn route(
    state: &mut ClientState,
    routes: &RouteTable,
    spec: &CommandSpec,
    args: &[Bytes],
) -> Result<Routed, RouteError> {
    state.positions.clear();
    spec.key_positions(args, &mut state.positions);
    route_positions(state, routes, args)
}

/// [`route`] for keys already listed in `state.positions`.
pub(super) fn route_positions(
    state: &mut ClientState,
    routes: &RouteTable,
    args: &[Bytes],
) -> Result<Routed, RouteError> {
    route_keys(routes, args, &state.positions)
}

/// [`route`] for the keys at `positions` of `args`.
pub(super) fn route_keys(
    routes: &RouteTable,
    args: &[Bytes],
    positions: &[usize],
) -> Result<Routed, RouteError> {
    let mut routed = Routed {
        backend: routes.default_backend(),
        target: Target::AnyMaster,
        rewritten: None,
    };
    let mut first: Option<Place> = None;
    let mut strips = false;
    let mut backends: Vec<BackendId> = Vec::new();
    let mut cross_slot = false;
    for &position in positions {
        let Some(key) = args.get(position) else {
            continue;
        };
        if crate::keyspace::is_reserved(key) {
            return Err(RouteError::Reserved);
        }
        let place = if routes.is_single() {
            let backend = routes.default_backend();
            Place {
                backend,
                slot: routes.slot_on(backend, key),
            }
        } else {
            if routes.has_moving() && routes.moving(key).is_some() {
                // What reaches here for a moving key is not carried by the migration's gate
                // (see `super::moving::divert`): never routed as if nothing moved.
                return Err(RouteError::Moving);
            }
            let route = routes.route(key);
            strips |= route.strip > 0;
            // Under the name the backend stores it by, too.
            if crate::keyspace::is_reserved(key.get(route.strip..).unwrap_or_default()) {
                return Err(RouteError::Reserved);
            }
            Place {
                backend: route.backend,
                slot: routes.slot_on(route.backend, key.get(route.strip..).unwrap_or_default()),
            }
        };
        match first {
            None => first = Some(place),
            Some(first) if first == place => {}
            Some(first) if first.backend == place.backend => cross_slot = true,
            Some(first) => {
                for id in [first.backend, place.backend] {
                    if !backends.contains(&id) {
                        backends.push(id);
                    }
                }
            }
        }
    }
    if !backends.is_empty() {
        return Err(RouteError::CrossBackend(backends));
    }
    if cross_slot {
        return Err(RouteError::CrossSlot);
    }
    if let Some(place) = first {
        routed.backend = place.backend;
        routed.target = Target::Slot(place.slot);
    }
    if strips {
        routed.rewritten = Some(rewrite_keys(routes, args, positions));
    }
    Ok(routed)
}

/// The request with the keys at `positions` stripped of their routes' prefixes.
fn rewrite_keys(routes: &RouteTable, args: &[Bytes], positions: &[usize]) -> Bytes {
    let mut rewritten: Vec<Bytes> = args.to_vec();
    for &position in positions {
        if let Some(key) = rewritten.get_mut(position) {
            let strip = routes.route(key).strip;
            *key = key.slice(strip.min(key.len())..);
        }
    }
    Request::from_args(rewritten).raw
}

/// Forwards `request` whole to the backend and slot of its keys; `CROSSSLOT` when they
/// differ.
pub(super) fn forward(
    state: &mut ClientState,
    proxy: ProxyRef<'_>,
    spec: &CommandSpec,
    request: Request,
    access: Access,
) -> Action {
    let routes = proxy.routes();
    match route(state, routes, spec, &request.args) {
        Ok(mut routed) if spec.runs_code && state.as_node_user() => {
            // The node checks each call the script makes against the user's twin.
            Action::Own(OwnOp::Script {
                backend: routed.backend,
                payload: routed.payload(request.raw),
                target: routed.target,
            })
        }
        Ok(mut routed) => {
            let payload = routed.payload(request.raw);
            forward_to(state, routed.backend, payload, routed.target, access)
        }
        Err(error) => Action::Reply(reply::error(&error.message(proxy))),
    }
}

/// Forwards `payload` to `target` on `backend`, remembering the place of a write for `WAIT`.
pub(super) fn forward_to(
    state: &mut ClientState,
    backend: BackendId,
    payload: Bytes,
    target: Target,
    access: Access,
) -> Action {
    if let (Target::Slot(slot), Access::Write) = (&target, access) {
        state.last_write = Some(Place {
            backend,
            slot: *slot,
        });
    }
    Action::Forward {
        backend,
        payload,
        target,
        access,
    }
}
