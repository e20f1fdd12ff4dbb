//! Transactions: `WATCH`, `MULTI`, queued commands, `EXEC`/`DISCARD`, `UNWATCH`.
//!
//! Commands between `MULTI` and `EXEC` are checked here (unknown commands, arity, keys in
//! another slot, which like any queuing error in Redis make `EXEC` fail with `EXECABORT`), then
//! queued by the transaction's node itself: once the transaction's slot is known, `MULTI` and
//! each command go to that slot's master on the client's own connection, and the client gets
//! the node's reply (`+QUEUED`, or `-BUSY` while a script runs there, ...), so what is queued
//! and what aborts `EXEC` is what Redis decides. Commands before the first key are answered
//! `+QUEUED` by the proxy and sent with it. Pipelined requests join one write (see
//! [`TxnBatch`]).
//!
//! The session comes here for the commands whose [`Policy`] is
//! `Own(OwnKind::Transaction(..))`, and for every request while `MULTI` is open.

use bytes::{Bytes, BytesMut};

use super::ClientState;
use super::action::{Action, unknown_command, unknown_subcommand, wrong_arity};
use super::own::{OwnOp, Part, TxnBatch};
use super::route::{RouteError, route, route_positions};
use crate::cluster::Backend;
use crate::command::{Lookup, OwnKind, Policy, Transaction};
use crate::keyspace::Place;
use crate::protocol::reply::{self, CROSSSLOT};
use crate::protocol::request::encode_command;
use crate::protocol::{Protocol, Request};
use crate::proxy::ProxyRef;

/// A transaction being queued.
#[derive(Debug, Default)]
pub struct Txn {
    /// `MULTI` and the commands queued before the transaction's node was known, in RESP, until
    /// they are sent.
    unsent: BytesMut,
    /// Number of commands in `unsent`.
    unsent_count: usize,
    /// Number of commands queued (`multi=` in `CLIENT LIST`).
    count: usize,
    /// The one backend and slot every key must be in, once known.
    place: Option<Place>,
    /// Whether `place` is a `WATCH`'s: the transaction runs on the watch's connection.
    watched: bool,
    /// Whether `MULTI` went to the node.
    sent: bool,
    /// A queuing error happened: `EXEC` aborts.
    dirty: bool,
    /// Something queued runs only as the user's twin on the node (see [`TxnBatch`]).
    needs_user: bool,
    /// Something queued writes or may replicate: a `CLIENT PAUSE ... WRITE` holds `EXEC`.
    writes: bool,
    /// What the queued commands read and write, for client-side caching at `EXEC`; boxed, made
    /// on the first such command (most transactions have none: no key is tracked).
    noted: Option<Box<super::tracked_keys::Noted>>,
}

/// What the transaction does with one request.
#[derive(Debug)]
pub enum TxnStep {
    /// Answered by the proxy.
    Reply(Bytes),
    /// Work on the own connection.
    Own(OwnOp),
}

impl From<TxnStep> for Action {
    fn from(step: TxnStep) -> Action {
        match step {
            TxnStep::Reply(bytes) => Action::Reply(bytes),
            TxnStep::Own(op) => Action::Own(op),
        }
    }
}

impl Txn {
    /// Whether something queued writes or may replicate.
    pub(super) fn writes(&self) -> bool {
        self.writes
    }

    /// A batch of `payload` with its reply `part`: the first also opens the transaction on the
    /// node with `MULTI` and the commands queued so far.
    fn batch(&mut self, payload: &[u8], part: Part) -> TxnBatch {
        let opens = !self.sent;
        let (mut out, mut parts) = if opens {
            self.sent = true;
            let skipped = 1 + std::mem::take(&mut self.unsent_count);
            let parts = std::iter::repeat_with(|| Part::Skip)
                .take(skipped)
                .collect();
            (std::mem::take(&mut self.unsent), parts)
        } else {
            (
                BytesMut::with_capacity(payload.len()),
                Vec::with_capacity(1),
            )
        };
        out.extend_from_slice(payload);
        parts.push(part);
        TxnBatch {
            place: self.place,
            watched: self.watched,
            opens,
            payload: out,
            parts,
            release: false,
            needs_user: self.needs_user,
        }
    }
}

impl TxnBatch {
    /// Adds `step`, the next request of the same transaction, to this batch.
    pub fn join(&mut self, step: TxnStep) {
        match step {
            TxnStep::Reply(bytes) => self.parts.push(Part::Local(bytes)),
            TxnStep::Own(OwnOp::Txn(next)) => {
                self.payload.extend_from_slice(&next.payload);
                self.parts.extend(next.parts);
                self.release |= next.release;
                self.needs_user |= next.needs_user;
            }
            TxnStep::Own(OwnOp::Release { reply }) => {
                self.parts.push(Part::Local(reply));
                self.release = true;
            }
            // The transaction never makes these; answered rather than lost should it happen.
            TxnStep::Own(OwnOp::Blocking { .. } | OwnOp::Script { .. } | OwnOp::Watch { .. }) => {
                self.parts.push(Part::Local(reply::error(
                    "ERR respgate: not allowed inside a transaction",
                )))
            }
        }
    }
}

/// Marks the open transaction, if any, as one that runs only as the user's twin on the node:
/// a command the node must hold to the user's rights was queued.
pub(super) fn needs_user(state: &mut ClientState) {
    if let Some(txn) = state.txn.as_mut() {
        txn.needs_user = true;
    }
}

/// Ends the client's transaction as Redis's `discardTransaction` does: the queue and every
/// watch go (the caller closes the own connection that held them). Gives back the queue, if
/// one was open, and whether a reload had broken the watch.
pub(super) fn discard(state: &mut ClientState) -> (Option<Txn>, bool) {
    let txn = state.txn.take();
    state.note_multi(-1);
    state.watched = None;
    (txn, std::mem::take(&mut state.watch_broken))
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
                watched: state.watched.is_some(),
                ..Txn::default()
            };
            encode_command(&mut txn.unsent, &["MULTI"]);
            state.txn = Some(txn);
            state.note_multi(0);
            Action::Reply(Bytes::from_static(reply::OK))
        }
        Transaction::Exec if argc == 1 => Action::Reply(reply::error("ERR EXEC without MULTI")),
        Transaction::Discard if argc == 1 => {
            Action::Reply(reply::error("ERR DISCARD without MULTI"))
        }
        Transaction::Unwatch if argc == 1 => {
            state.watched = None;
            state.watch_broken = false;
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
    cluster: &Backend,
    own: Option<Policy>,
    request: &Request,
) -> TxnStep {
    let kind = match own {
        Some(Policy::Own(OwnKind::Transaction(kind))) => Some(kind),
        _ => None,
    };
    match kind {
        Some(end @ (Transaction::Exec | Transaction::Discard)) => {
            return end_multi(state, proxy, end);
        }
        Some(Transaction::Multi) => {
            return TxnStep::Reply(reply::error("ERR MULTI calls can not be nested"));
        }
        Some(Transaction::Watch) => {
            return TxnStep::Reply(reply::error("ERR WATCH inside MULTI is not allowed"));
        }
        Some(Transaction::Unwatch) | None => {}
    }
    let checked = check_queued(state, proxy, cluster, request);
    let Some(txn) = state.txn.as_mut() else {
        return TxnStep::Reply(reply::error("ERR respgate: no transaction"));
    };
    let (queued, writes) = match checked {
        Ok(queued) => queued,
        Err(error) => {
            txn.dirty = true;
            return TxnStep::Reply(reply::error(&error));
        }
    };
    txn.count += 1;
    txn.writes |= writes;
    let count = txn.count as i64;
    let step = match (txn.dirty, txn.place) {
        // `EXEC` aborts whatever the node would say.
        (true, _) => TxnStep::Reply(Bytes::from_static(QUEUED)),
        (false, Some(_)) => TxnStep::Own(OwnOp::Txn(txn.batch(&queued, Part::Queued))),
        (false, None) => {
            txn.unsent.extend_from_slice(&queued);
            txn.unsent_count += 1;
            TxnStep::Reply(Bytes::from_static(QUEUED))
        }
    };
    state.note_multi(count);
    step
}

/// `EXEC` or `DISCARD` inside `MULTI`: the transaction ends either way, and `EXEC` sends it to
/// run only when nothing spoiled it (a refused command, a watched key changed, the user's
/// rights changed by a reload).
fn end_multi(state: &mut ClientState, proxy: ProxyRef<'_>, end: Transaction) -> TxnStep {
    let (txn, watch_broken) = discard(state);
    let mut txn = txn.unwrap_or_default();
    if end == Transaction::Discard {
        return TxnStep::Own(OwnOp::Release {
            reply: Bytes::from_static(reply::OK),
        });
    }
    if txn.dirty {
        return TxnStep::Own(OwnOp::Release {
            reply: reply::error("EXECABORT Transaction discarded because of previous errors."),
        });
    }
    if watch_broken {
        // Redis's reply to EXEC after a watched key changed: a null array.
        let null: &'static [u8] = match state.protocol {
            Protocol::Resp2 => b"*-1\r\n",
            Protocol::Resp3 => b"_\r\n",
        };
        return TxnStep::Own(OwnOp::Release {
            reply: Bytes::from_static(null),
        });
    }
    if state
        .user
        .as_deref()
        .is_some_and(|user| proxy.rights_changed(user))
    {
        // Redis checks each queued command again at EXEC; the node holds this queue,
        // so the proxy discards it whole.
        return TxnStep::Own(OwnOp::Release {
            reply: reply::error(RIGHTS_CHANGED),
        });
    }
    if let Some(noted) = txn.noted.take() {
        super::tracked_keys::at_exec(state, proxy, *noted);
    }
    let mut exec = BytesMut::new();
    encode_command(&mut exec, &["EXEC"]);
    TxnStep::Own(OwnOp::Txn(txn.batch(&exec, Part::Exec)))
}

/// Checks a command to queue as Redis does when queuing (known, arity, allowed in a
/// transaction) and routes it, fixing the transaction's place with the first command that has
/// one. What to queue (the payload as routed) and whether it writes; else the refusal, which
/// makes `EXEC` abort.
fn check_queued(
    state: &mut ClientState,
    proxy: ProxyRef<'_>,
    cluster: &Backend,
    request: &Request,
) -> Result<(Bytes, bool), String> {
    // Any backend's table: the default backend may not have answered yet while another has.
    let Some(table) = proxy.commands() else {
        return Err(cluster.unreachable_error());
    };
    let spec = match table.lookup(&request.args) {
        Lookup::Unknown => return Err(unknown_command(&request.args)),
        Lookup::UnknownSubcommand => return Err(unknown_subcommand(&request.args)),
        Lookup::Found(spec) => spec,
    };
    if !spec.arity_ok(request.args.len()) {
        return Err(wrong_arity(spec));
    }
    if spec.has_flag("no_multi") {
        return Err("ERR Command not allowed inside a transaction".to_string());
    }
    if proxy.routes().has_moving() && matches!(spec.name.as_str(), "flushall" | "flushdb") {
        return Err(super::route::NO_FLUSH.to_string());
    }
    // Queued, they would pause the node itself at EXEC: the pause is the proxy's.
    if matches!(spec.name.as_str(), "client|pause" | "client|unpause") {
        return Err(PAUSE_IN_MULTI.to_string());
    }
    let writes = super::pause::writes(proxy, spec, &request.args);
    if spec.runs_code && state.as_node_user() {
        needs_user(state);
    }
    let routes = proxy.routes();
    let txn_place = state.txn.as_ref().and_then(|t| t.place);
    let mut routed = route(state, routes, spec, &request.args).map_err(|e| e.message(proxy))?;
    let queued = routed.payload(request.raw.clone());
    join_place(state, proxy, routed.place(), txn_place)?;
    if state.tracking.is_on() || proxy.tracking.has_keys() {
        let mut noted = state
            .txn
            .as_mut()
            .and_then(|t| t.noted.take())
            .unwrap_or_default();
        super::tracked_keys::note_queued(state, proxy, spec, &request.args, &mut noted);
        if let Some(txn) = state.txn.as_mut() {
            txn.noted = Some(noted);
        }
    }
    Ok((queued, writes))
}

/// Checks that a queued command's `place` is the transaction's (`txn_place`), or makes it the
/// transaction's when it has none yet: a transaction runs on one node.
fn join_place(
    state: &mut ClientState,
    proxy: ProxyRef<'_>,
    place: Option<Place>,
    txn_place: Option<Place>,
) -> Result<(), String> {
    match (place, txn_place) {
        (None, _) => Ok(()),
        (Some(place), None) => {
            if let Some(txn) = state.txn.as_mut() {
                txn.place = Some(place);
            }
            Ok(())
        }
        (Some(place), Some(txn_place)) if place == txn_place => Ok(()),
        (Some(place), Some(txn_place)) if place.backend != txn_place.backend => {
            Err(RouteError::CrossBackend(vec![txn_place.backend, place.backend]).message(proxy))
        }
        _ => Err(CROSSSLOT.to_string()),
    }
}

/// `EXEC`'s reply when a reload changed the user's rights since `MULTI`.
const RIGHTS_CHANGED: &str = "EXECABORT Transaction discarded because of: NOPERM ACLs rules changed between the moment the transaction was accumulated and the EXEC call";

/// The proxy's refusal of `CLIENT PAUSE`/`UNPAUSE` inside `MULTI`.
const PAUSE_IN_MULTI: &str =
    "ERR respgate: CLIENT PAUSE and CLIENT UNPAUSE are not supported inside MULTI by this proxy";

/// Redis's reply to a command queued in a transaction.
const QUEUED: &[u8] = b"+QUEUED\r\n";
