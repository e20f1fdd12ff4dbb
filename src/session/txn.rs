//! Transactions: `WATCH`, `MULTI`, queued commands, `EXEC`/`DISCARD`, `UNWATCH`.
//!
//! Commands between `MULTI` and `EXEC` are checked and queued here (the client gets `+QUEUED`
//! as from Redis); `EXEC` sends `MULTI`, the queue and `EXEC` in one write on the client's own
//! connection, to the master of the transaction's one slot. A key in another slot is refused
//! with `CROSSSLOT` and, like any queuing error in Redis, makes `EXEC` fail with `EXECABORT`.
//!
//! The session comes here for the commands whose [`Policy`] is
//! `Own(OwnKind::Transaction(..))`, and for every request while `MULTI` is open.

use bytes::{Bytes, BytesMut};

use super::ClientState;
use super::dispatch::{Action, unknown_command, unknown_subcommand, wrong_arity};
use super::own::OwnOp;
use super::route::{RouteError, route, route_positions};
use crate::cluster::Cluster;
use crate::command::{Lookup, OwnKind, Policy, Transaction};
use crate::keyspace::Place;
use crate::protocol::Request;
use crate::protocol::reply::{self, CROSSSLOT};
use crate::protocol::request::encode_command;
use crate::proxy::ProxyRef;

/// A transaction being queued.
#[derive(Debug, Default)]
pub struct Txn {
    /// `MULTI` and the queued commands, in RESP.
    queued: BytesMut,
    /// Number of queued commands.
    count: usize,
    /// The one backend and slot every key must be in, once known.
    place: Option<Place>,
    /// A queuing error happened: `EXEC` aborts.
    dirty: bool,
}

/// Makes the open transaction, if any, fail at `EXEC`: a command was refused while queuing
/// (by the permission check, before it reached [`in_multi`]).
pub(super) fn fail_queued(state: &mut ClientState) {
    if let Some(txn) = state.txn.as_mut() {
        txn.dirty = true;
    }
}

/// Handles a transaction command outside `MULTI`. `None` means a request Redis would refuse for
/// its argument count, which follows the normal path to get Redis's error.
pub fn handle(
    state: &mut ClientState,
    proxy: ProxyRef<'_>,
    kind: Transaction,
    request: &Request,
) -> Option<Action> {
    let argc = request.args.len();
    let action = match kind {
        Transaction::Multi if argc == 1 => {
            let mut txn = Txn {
                place: state.watched,
                ..Txn::default()
            };
            encode_command(&mut txn.queued, &["MULTI"]);
            state.txn = Some(txn);
            Action::Reply(Bytes::from_static(reply::OK))
        }
        Transaction::Exec if argc == 1 => Action::Reply(reply::error("ERR EXEC without MULTI")),
        Transaction::Discard if argc == 1 => {
            Action::Reply(reply::error("ERR DISCARD without MULTI"))
        }
        Transaction::Unwatch if argc == 1 => {
            state.watched = None;
            Action::Own(OwnOp::Release {
                reply: Bytes::from_static(reply::OK),
            })
        }
        Transaction::Watch if argc >= 2 => {
            // WATCH's keys are every argument after the name.
            state.positions.clear();
            state.positions.extend(1..argc);
            let routes = proxy.routes();
            let mut routed = match route_positions(state, routes, &request.args) {
                Ok(routed) => routed,
                Err(error) => return Some(Action::Reply(reply::error(&error.message(proxy)))),
            };
            let place = match routed.place() {
                Some(place) if state.watched.is_none_or(|w| w == place) => place,
                _ => return Some(Action::Reply(reply::error(CROSSSLOT))),
            };
            state.watched = Some(place);
            Action::Own(OwnOp::Watch {
                payload: routed.payload(request.raw.clone()),
                place,
            })
        }
        _ => return None,
    };
    Some(action)
}

/// Handles any request while `MULTI` is open: `EXEC`/`DISCARD` end it, anything else is
/// checked and queued. `own` is the request's policy if it is one of the proxy's own commands.
pub fn in_multi(
    state: &mut ClientState,
    proxy: ProxyRef<'_>,
    cluster: &Cluster,
    own: Option<Policy>,
    request: &Request,
) -> Action {
    let kind = match own {
        Some(Policy::Own(OwnKind::Transaction(kind))) => Some(kind),
        _ => None,
    };
    match kind {
        Some(end @ (Transaction::Exec | Transaction::Discard)) => {
            let txn = state.txn.take().unwrap_or_default();
            state.watched = None;
            if end == Transaction::Discard {
                return Action::Own(OwnOp::Release {
                    reply: Bytes::from_static(reply::OK),
                });
            }
            if txn.dirty {
                return Action::Own(OwnOp::Release {
                    reply: reply::error(
                        "EXECABORT Transaction discarded because of previous errors.",
                    ),
                });
            }
            let mut payload = txn.queued;
            encode_command(&mut payload, &["EXEC"]);
            return Action::Own(OwnOp::Exec {
                payload: payload.freeze(),
                replies: txn.count + 2,
                place: txn.place,
            });
        }
        Some(Transaction::Multi) => {
            return Action::Reply(reply::error("ERR MULTI calls can not be nested"));
        }
        Some(Transaction::Watch) => {
            return Action::Reply(reply::error("ERR WATCH inside MULTI is not allowed"));
        }
        Some(Transaction::Unwatch) | None => {}
    }
    let mut queued = request.raw.clone();
    // Any backend's table: the default backend may not have answered yet while another has.
    let refusal = match proxy.commands() {
        None => Some(cluster.unreachable_error()),
        Some(table) => match table.lookup(&request.args) {
            Lookup::Unknown => Some(unknown_command(&request.args)),
            Lookup::UnknownSubcommand => Some(unknown_subcommand(&request.args)),
            Lookup::Found(spec) if !spec.arity_ok(request.args.len()) => Some(wrong_arity(spec)),
            Lookup::Found(spec) if spec.has_flag("no_multi") => {
                Some("ERR Command not allowed inside a transaction".to_string())
            }
            Lookup::Found(spec) => {
                let routes = proxy.routes();
                let txn_place = state.txn.as_ref().and_then(|t| t.place);
                match route(state, routes, spec, &request.args) {
                    Err(error) => Some(error.message(proxy)),
                    Ok(mut routed) => {
                        queued = routed.payload(queued);
                        match (routed.place(), txn_place) {
                            (None, _) => None,
                            (Some(place), None) => {
                                if let Some(txn) = state.txn.as_mut() {
                                    txn.place = Some(place);
                                }
                                None
                            }
                            (Some(place), Some(txn_place)) if place == txn_place => None,
                            (Some(place), Some(txn_place))
                                if place.backend != txn_place.backend =>
                            {
                                Some(
                                    RouteError::CrossBackend(vec![
                                        txn_place.backend,
                                        place.backend,
                                    ])
                                    .message(proxy),
                                )
                            }
                            _ => Some(CROSSSLOT.to_string()),
                        }
                    }
                }
            }
        },
    };
    let Some(txn) = state.txn.as_mut() else {
        return Action::Reply(reply::error("ERR respgate: no transaction"));
    };
    match refusal {
        Some(error) => {
            txn.dirty = true;
            Action::Reply(reply::error(&error))
        }
        None => {
            txn.queued.extend_from_slice(&queued);
            txn.count += 1;
            Action::Reply(Bytes::from_static(b"+QUEUED\r\n"))
        }
    }
}
