//! Deciding what to do with one request: answer it here, refuse it, or route it to a slot.
//!
//! What a command is (forwarded by key, split, sent to every master, own connection,
//! subscription, answered here, refused) is its [`Policy`], decided when the command table
//! loaded; here a request costs a lookup in the proxy's own table, one in the backend's, and
//! one `match` on the policy. Only the client's state (not authenticated, subscribed, inside
//! `MULTI`) and what depends on the arguments are checked per request.

use bytes::Bytes;

use super::acl::{self, Permit};
use super::action::{Action, Gather, Postponed, unknown_command, unknown_subcommand, wrong_arity};
use super::own::OwnOp;
use super::pubsub::{
    ALLOWED_WHILE_SUBSCRIBED, Publish, home_of_channel, nothing_to_unsubscribe, subscribed_pong,
};
use super::route::{forward, forward_to, route};
use super::tally::Dispatched;
use super::{ClientState, local, txn};
use crate::broadcast::{Broadcast, Reach};
use crate::cluster::{Backend, ScriptCache, Target};
use crate::command::ResponsePolicy;
use crate::command::{
    Access, CommandSpec, LocalKind, Lookup, MAX_NAME_LEN, OwnKind, Policy, Refusal, ScriptKind,
    SplitKind, SubscriptionKind, lowercase, proxy_command,
};
use crate::fanout;
use crate::multikey;
use crate::protocol::Protocol;
use crate::protocol::Request;
use crate::protocol::reply::ReplyBuf;
use crate::protocol::reply::{self, CROSSSLOT};
use crate::protocol::request::{encode_command, is_option, parse_int};
use crate::proxy::ProxyRef;
use crate::slot::Slot;
use bytes::BytesMut;

/// Decides what to do with `request`: the proxy's own commands by their static table, any
/// other by the backend's, then one `match` on the command's [`Policy`].
pub fn dispatch(
    state: &mut ClientState,
    proxy: ProxyRef<'_>,
    cluster: &Backend,
    request: Request,
) -> Action {
    // Lowercased once, on the stack, and looked up once: the backend's table also says
    // whether the command is one of the proxy's own; the proxy's static table answers alone
    // only while the backend's is not known (or does not know the name).
    let mut name_buf = [0u8; MAX_NAME_LEN];
    let name = lowercase(request.name(), &mut name_buf);
    let table = proxy.commands();
    let lookup = match (&table, name) {
        (Some(table), Some(name)) => table.lookup_lowercased(name, &request.args),
        _ => Lookup::Unknown,
    };
    let own = match lookup {
        Lookup::Found(spec) => spec.proxy_policy,
        _ => name.and_then(proxy_command),
    };
    let previous = std::mem::take(&mut state.dispatched);
    // `CLIENT CACHING` speaks of the next command but `CLIENT`, or of a whole transaction.
    let caching = state.caching
        && !matches!(name, Some("client" | "multi"))
        && state.txn.is_none()
        && std::mem::take(&mut state.caching);
    if !state.authenticated && !own.is_some_and(Policy::allowed_before_auth) {
        return Action::Reply(reply::error("NOAUTH Authentication required."));
    }
    // AUTH, HELLO, QUIT and RESET are everyone's (Redis's `no_auth`), even before the
    // command table is known.
    if state.restricted && !own.is_some_and(Policy::allowed_before_auth) {
        match acl::permit(state, proxy, name, &request) {
            Permit::Allowed => {}
            Permit::Refused(action) => return action,
            Permit::AwaitTable => return await_backend(proxy, request),
        }
    }
    if let Some(name) = name {
        // Rare (a subscribed RESP2 client), so the list stays with the rest of Pub/Sub.
        if state.subscribed
            && state.protocol == Protocol::Resp2
            && !ALLOWED_WHILE_SUBSCRIBED.contains(&name)
        {
            return Action::Reply(reply::error(&format!(
                "ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
            )));
        }
        if let Some(ticket) = super::pause::gate(state, proxy, own, &request) {
            // Decided again once released: the command it was is still its last.
            state.dispatched = previous;
            return Action::Postpone(Postponed { request, ticket });
        }
        if own.is_some() || state.txn.is_some() {
            note_command(state, proxy, name, &request.args, previous);
        }
        if let Some(action) = before_table(state, proxy, cluster, own, &request) {
            return action;
        }
    }
    if table.is_none() {
        return await_backend(proxy, request);
    }
    let spec = match lookup {
        Lookup::Found(spec) => spec,
        Lookup::Unknown => return Action::Reply(reply::error(&unknown_command(&request.args))),
        Lookup::UnknownSubcommand => {
            return Action::Reply(reply::error(&unknown_subcommand(&request.args)));
        }
    };
    state.dispatched = Dispatched::of(spec);
    if !spec.arity_ok(request.args.len()) {
        // A proxy command refused here inside MULTI (a `SUBSCRIBE` without channels) is a
        // queuing error as any other: EXEC aborts.
        txn::fail_queued(state);
        state.dispatched.slowlog = false;
        return Action::Reply(reply::error(&wrong_arity(spec)));
    }
    state.note_command(&spec.name);
    if state.tracking.is_on() || proxy.tracking.has_keys() {
        super::tracked_keys::note(state, proxy, spec, &request.args, caching);
    }
    if proxy.routes().has_moving()
        && let Some(action) = super::moving::divert(state, proxy, spec, &request)
    {
        return action;
    }
    by_policy(state, proxy, spec, spec.policy, request)
}

/// Notes the command `name` (lowercase) with `args` as the client's last, by its full name
/// (`client|list`) when the backend's table knows it.
/// `previous` is what the client's last command was dispatched as: its counters and family,
/// kept when the command is the same again.
fn note_command(
    state: &mut ClientState,
    proxy: ProxyRef<'_>,
    name: &str,
    args: &[Bytes],
    previous: Dispatched,
) {
    if state.last_command() == name {
        // The same command without subcommands again (`PING` after `PING`): nothing to look up.
        state.dispatched = previous;
        return;
    }
    match proxy.commands() {
        Some(table) => {
            if let Lookup::Found(spec) = table.lookup_lowercased(name, args) {
                state.note_command(&spec.name);
                state.dispatched = Dispatched::of(spec);
            }
        }
        None => state.note_command(name),
    }
}

/// No backend has answered yet (all down at start, a Sentinel group without a known master):
/// the request waits for one within the retry budget, as routed requests do.
fn await_backend(proxy: ProxyRef<'_>, request: Request) -> Action {
    for backend in proxy.backends() {
        backend.request_refresh();
    }
    Action::AwaitBackend(request)
}

/// What is decided before the backend's table is needed: subscriptions (taken even inside
/// `MULTI`), every request while `MULTI` is open, and the proxy's own commands. `None` sends
/// the request on to the backend's table, which also answers a proxy command with an argument
/// count Redis refuses (with Redis's error).
fn before_table(
    state: &mut ClientState,
    proxy: ProxyRef<'_>,
    cluster: &Backend,
    own: Option<Policy>,
    request: &Request,
) -> Option<Action> {
    let subscribed_resp2 = state.subscribed && state.protocol == Protocol::Resp2;
    let taken = match own {
        Some(Policy::Subscription(kind)) => subscription(state, kind, request),
        // A subscribed RESP2 connection answers PING itself, in its own format.
        Some(Policy::Local(LocalKind::Ping)) if subscribed_resp2 && request.args.len() <= 2 => {
            Some(Action::Reply(subscribed_pong(
                request.args.get(1).map(|m| m.as_ref()),
            )))
        }
        _ => None,
    };
    if taken.is_some() {
        return taken;
    }
    if state.txn.is_some() && queued_in_multi(own) {
        return Some(txn::in_multi(state, proxy, cluster, own, request).into());
    }
    match own? {
        Policy::Own(OwnKind::Transaction(kind)) => txn::handle(state, proxy, kind, request),
        Policy::Local(kind) => local::handle(state, proxy, cluster, kind, request),
        _ => None,
    }
}

/// Whether a request with this own-command policy (`None`: not one of the proxy's commands) is
/// for the transaction while `MULTI` is open. As in Redis, `QUIT` and `RESET` act at once; the
/// subscriptions are taken before.
fn queued_in_multi(own: Option<Policy>) -> bool {
    !matches!(
        own,
        Some(Policy::Subscription(_) | Policy::Local(LocalKind::Quit | LocalKind::Reset))
    )
}

/// Decides `request` as the next step of the open transaction, for a session whose earlier
/// steps wait to be sent together; gives the request back when it is not a step of the
/// transaction (the transaction ended, or the request acts at once), to be dispatched as usual
/// once they are done.
pub fn in_transaction(
    state: &mut ClientState,
    proxy: ProxyRef<'_>,
    cluster: &Backend,
    request: Request,
) -> Result<txn::TxnStep, Request> {
    if state.txn.is_none() || state.subscribed || !state.authenticated {
        return Err(request);
    }
    let mut name_buf = [0u8; MAX_NAME_LEN];
    let Some(name) = lowercase(request.name(), &mut name_buf) else {
        return Err(request);
    };
    let own = proxy_command(name);
    if !queued_in_multi(own) {
        return Err(request);
    }
    if state.restricted && !own.is_some_and(Policy::allowed_before_auth) {
        match acl::permit(state, proxy, Some(name), &request) {
            Permit::Allowed => {}
            // A refusal inside MULTI is a reply, and has made EXEC fail.
            Permit::Refused(Action::Reply(refused)) => return Ok(txn::TxnStep::Reply(refused)),
            Permit::Refused(_) | Permit::AwaitTable => return Err(request),
        }
    }
    if super::pause::gate(state, proxy, own, &request).is_some() {
        // Held by CLIENT PAUSE: the batch goes without it, and it waits on the usual path.
        return Err(request);
    }
    let previous = std::mem::take(&mut state.dispatched);
    note_command(state, proxy, name, &request.args, previous);
    // Joined to the batch, it is never a reply of its own to count: counted here, as queued.
    state.dispatched.counters.count(false);
    Ok(txn::in_multi(state, proxy, cluster, own, &request))
}

/// Acts on `policy`, the policy of `spec`, for a request whose arity is already checked. The
/// common policies are acted on here or in an inlined helper; the rare ones each have a
/// function of their own.
fn by_policy(
    state: &mut ClientState,
    proxy: ProxyRef<'_>,
    spec: &CommandSpec,
    policy: Policy,
    request: Request,
) -> Action {
    match policy {
        Policy::Forward { access } => forward(state, proxy, spec, request, access),
        Policy::Split { kind, access } => split(state, proxy, spec, kind, access, request),
        Policy::EveryMaster { response, access } => Gather::FanOut(fanout::plan(
            response,
            access,
            &spec.name,
            &request.raw,
            &request.args,
        ))
        .into(),
        Policy::Scan => Gather::Scan(request.args).into(),
        Policy::Wait => wait(state, proxy, &request.args),
        Policy::Publish => publish(state, proxy, request),
        Policy::Own(OwnKind::Blocking) => blocking(state, proxy, spec, request),
        Policy::Own(OwnKind::BlockingWithBlockArg { access }) => {
            if request.args.iter().any(|a| is_option(a, "BLOCK")) {
                blocking(state, proxy, spec, request)
            } else {
                forward(state, proxy, spec, request, access)
            }
        }
        Policy::Script(kind) => script(state, proxy, spec, kind, request),
        Policy::Admin(reach) => {
            if proxy.config().server.allow_admin_commands {
                super::admin::admin(state, proxy, spec, reach, request)
            } else {
                Action::Reply(reply::error(&Refusal::Admin.message(&spec.name)))
            }
        }
        Policy::OneMaster => Gather::Broadcast(Broadcast::new(
            &spec.name,
            request.raw,
            Reach::OneMaster,
            ResponsePolicy::AllSucceeded,
        ))
        .into(),
        Policy::KillScript => Gather::Broadcast(Broadcast::new(
            &spec.name,
            request.raw,
            Reach::EveryNode,
            ResponsePolicy::AnyKilled,
        ))
        .into(),
        Policy::Refused(refusal) => Action::Reply(reply::error(&refusal.message(&spec.name))),
        // The proxy's own commands come here only when `before_table` left them to the
        // backend's table, whose arity check then refuses them; should a backend accept the
        // arguments all the same, it judges the command.
        Policy::Local(_) | Policy::Subscription(_) | Policy::Own(OwnKind::Transaction(_)) => {
            forward(state, proxy, spec, request, Access::Write)
        }
    }
}

/// A multi-key command (`MGET`, `MSET`, `DEL` ...): forwarded whole when its keys share a
/// slot, else split by slot and the parts' replies merged. Inlined: the one-slot case is as
/// common as any forward.
#[inline]
fn split(
    state: &mut ClientState,
    proxy: ProxyRef<'_>,
    spec: &CommandSpec,
    kind: SplitKind,
    access: Access,
    request: Request,
) -> Action {
    let routes = proxy.routes();
    match route(state, routes, spec, &request.args) {
        Ok(mut routed) => {
            let payload = routed.payload(request.raw);
            forward_to(state, routed.backend, payload, routed.target, access)
        }
        Err(error @ (super::route::RouteError::Reserved | super::route::RouteError::Moving)) => {
            Action::Reply(reply::error(&error.message(proxy)))
        }
        Err(error) => match multikey::plan(kind, request, routes) {
            Some(split) => Gather::Split(split).into(),
            None => Action::Reply(reply::error(&error.message(proxy))),
        },
    }
}

/// `PUBLISH channel message`, to the Pub/Sub home of the channel. When some client of the
/// proxy is subscribed, the node's receiver count is completed with the proxy's own.
#[inline]
fn publish(state: &mut ClientState, proxy: ProxyRef<'_>, request: Request) -> Action {
    // Arity is checked: the channel is there.
    let routes = proxy.routes();
    let (backend, target) = match request.args.get(1) {
        Some(channel) => {
            let place = home_of_channel(routes, channel);
            (place.backend, Target::Slot(place.slot))
        }
        None => (routes.default_backend(), Target::AnyMaster),
    };
    match request.args.get(1) {
        // Some client of the proxy is subscribed: the count is completed.
        Some(channel) if !proxy.subscribers.is_empty() => Gather::Publish(Publish {
            backend,
            payload: request.raw,
            target,
            channel: channel.clone(),
        })
        .into(),
        // None is: the node's count is every receiver the proxy could add to.
        _ => forward_to(state, backend, request.raw, target, Access::Write),
    }
}

/// A script command (`EVAL`, `SCRIPT LOAD`, `SCRIPT FLUSH` ...): every backend's cache hears
/// of it, since an `EVALSHA` may name keys of any backend and `SCRIPT LOAD`/`FLUSH` reach
/// every backend's masters; then it is acted on as the policy it routes like.
fn script(
    state: &mut ClientState,
    proxy: ProxyRef<'_>,
    spec: &CommandSpec,
    kind: ScriptKind,
    request: Request,
) -> Action {
    let body = match kind {
        ScriptKind::Eval { .. } => request.args.get(1),
        ScriptKind::Load => request.args.get(2),
        ScriptKind::Flush => None,
    };
    match body {
        Some(body) => ScriptCache::remember_in(proxy.backends().iter().map(|b| &b.scripts), body),
        None if kind == ScriptKind::Flush => {
            for backend in proxy.backends() {
                backend.scripts.flush();
            }
        }
        None => {}
    }
    by_policy(state, proxy, spec, kind.then(), request)
}

/// A command that may block, on the client's own connection to the slot of its keys.
fn blocking(
    state: &mut ClientState,
    proxy: ProxyRef<'_>,
    spec: &CommandSpec,
    request: Request,
) -> Action {
    let routes = proxy.routes();
    match route(state, routes, spec, &request.args) {
        Ok(mut routed) => Action::Own(OwnOp::Blocking {
            backend: routed.backend,
            payload: routed.payload(request.raw),
            target: routed.target,
        }),
        Err(error) => Action::Reply(reply::error(&error.message(proxy))),
    }
}

/// (Un)subscriptions. `None` for a (p|s)subscribe without channels, left to the backend's
/// table for Redis's arity error.
fn subscription(
    state: &mut ClientState,
    kind: SubscriptionKind,
    request: &Request,
) -> Option<Action> {
    let argc = request.args.len();
    let names = || request.args.get(1..).unwrap_or_default().to_vec();
    match kind {
        SubscriptionKind::Subscribe | SubscriptionKind::Psubscribe if argc >= 2 => {
            state.subscribed = true;
            Some(Action::Pubsub {
                kind,
                names: names(),
            })
        }
        SubscriptionKind::Unsubscribe
        | SubscriptionKind::Punsubscribe
        | SubscriptionKind::Sunsubscribe
            if state.subscribed =>
        {
            Some(Action::Pubsub {
                kind,
                names: names(),
            })
        }
        SubscriptionKind::Unsubscribe
        | SubscriptionKind::Punsubscribe
        | SubscriptionKind::Sunsubscribe => {
            let name = kind.name();
            let mut out = BytesMut::new();
            let channels = request.args.get(1..).unwrap_or_default();
            if channels.is_empty() {
                out.extend_from_slice(&nothing_to_unsubscribe(name, state.protocol));
            }
            for channel in channels {
                let mut reply = ReplyBuf::new(state.protocol);
                reply.push(3).bulk(name.as_bytes()).bulk(channel).integer(0);
                out.extend_from_slice(&reply.finish());
            }
            Some(Action::Push(out.freeze()))
        }
        SubscriptionKind::Ssubscribe if argc >= 2 => {
            let channels = request.args.get(1..).unwrap_or_default();
            let slot = Slot::for_key(channels.first()?);
            if channels.iter().any(|c| Slot::for_key(c) != slot) {
                return Some(Action::Reply(reply::error(CROSSSLOT)));
            }
            state.subscribed = true;
            Some(Action::Pubsub {
                kind,
                names: names(),
            })
        }
        SubscriptionKind::Subscribe
        | SubscriptionKind::Psubscribe
        | SubscriptionKind::Ssubscribe => None,
    }
}

/// `WAIT numreplicas timeout`, sent on the shared connection that carried the client's last
/// write, so Redis waits for that write (and any later one on that connection) to reach the
/// replicas. WAIT holds that connection while it waits, so its timeout is capped at half the
/// request timeout: when replicas lag, the client gets the count reached so far, as from any
/// WAIT that times out, and other clients are held no longer than that.
fn wait(state: &ClientState, proxy: ProxyRef<'_>, args: &[Bytes]) -> Action {
    let (Some(replicas), Some(timeout)) = (
        args.get(1).and_then(|a| parse_int(a)),
        args.get(2).and_then(|a| parse_int(a)),
    ) else {
        return Action::Reply(reply::error("ERR value is not an integer or out of range"));
    };
    if timeout < 0 {
        return Action::Reply(reply::error("ERR timeout is negative"));
    }
    let cap = proxy
        .default_backend()
        .map_or(1000, |c| c.request_timeout_ms() / 2)
        .max(1) as i64;
    let timeout = if timeout == 0 { cap } else { timeout.min(cap) };
    let mut payload = BytesMut::new();
    encode_command(
        &mut payload,
        &[
            "WAIT".to_string(),
            replicas.to_string(),
            timeout.to_string(),
        ],
    );
    let (backend, target) = match state.last_write {
        Some(place) => (place.backend, Target::Slot(place.slot)),
        None => (proxy.routes().default_backend(), Target::AnyMaster),
    };
    Action::Forward {
        backend,
        payload: payload.freeze(),
        target,
        // On the master, where the write went, whatever `read_from` says.
        access: Access::Write,
    }
}
