//! Commands the proxy answers itself: connection state (`HELLO`, `CLIENT`, `SELECT`, ...), and
//! views of the proxy as one Redis node owning every slot (`INFO`, `CLUSTER SLOTS`, ...), so
//! that plain and cluster-aware clients both find a server they understand.
//!
//! Which commands these are is their [`Policy`](crate::command::Policy), `Local(..)`, from the
//! static table of the proxy's own commands ([`PROXY_COMMANDS`](crate::command::PROXY_COMMANDS)),
//! so they work before the backend's command table is known.

use bytes::Bytes;

use super::ClientState;
use super::action::{Action, Gather, wrong_arity_named};
use super::client_command::{BAD_NAME, valid_client_name};
use crate::acl::LoginError;
use crate::cluster::Backend;
use crate::command::LocalKind;
use crate::protocol::reply::{self, ReplyBuf};
use crate::protocol::request::{is_option, parse_int};
use crate::protocol::{Protocol, Request};
use crate::proxy::ProxyRef;

/// Answers `request`, one of the proxy's own commands (its policy is `Local(kind)`). `None`
/// means a request to follow the normal path instead.
pub fn handle(
    state: &mut ClientState,
    proxy: ProxyRef<'_>,
    cluster: &Backend,
    kind: LocalKind,
    request: &Request,
) -> Option<Action> {
    let args = &request.args;
    let mut out = ReplyBuf::new(state.protocol);
    let argc = args.len();
    let arity = |ok: bool| {
        if ok {
            None
        } else {
            Some(Action::Reply(reply::error(&wrong_arity_named(
                request.name(),
            ))))
        }
    };
    match kind {
        LocalKind::Ping => {
            if let Some(bad) = arity(argc <= 2) {
                return Some(bad);
            }
            match args.get(1) {
                Some(message) => out.bulk(message),
                None => out.simple("PONG"),
            };
        }
        LocalKind::Echo => {
            if let Some(bad) = arity(argc == 2) {
                return Some(bad);
            }
            out.bulk(args.get(1).map(|a| a.as_ref()).unwrap_or_default());
        }
        LocalKind::Quit => return Some(Action::Close(Bytes::from_static(reply::OK))),
        LocalKind::Select => {
            if let Some(bad) = arity(argc == 2) {
                return Some(bad);
            }
            select(state, proxy, args, &mut out);
        }
        LocalKind::Auth => {
            if let Some(bad) = arity((2..=3).contains(&argc)) {
                return Some(bad);
            }
            return auth(state, proxy, args);
        }
        LocalKind::Hello => {
            let action = hello(state, proxy, cluster, args);
            state.publish();
            return Some(action);
        }
        LocalKind::Client => {
            let action = super::client_command::command(state, proxy, args);
            state.publish();
            return Some(action);
        }
        LocalKind::Info => {
            return Some(match super::info::answer(proxy, args, state.protocol) {
                Ok(now) => Action::Reply(now),
                Err(from_masters) => Gather::Info(from_masters).into(),
            });
        }
        LocalKind::Slowlog => {
            return proxy
                .slowlog
                .command(args, state.protocol)
                .map(Action::Reply);
        }
        LocalKind::Cluster => return super::cluster_node::command(state, proxy, args),
        LocalKind::Acl => return Some(super::acl::command(state, proxy, args)),
        LocalKind::ReadOnly | LocalKind::ReadWrite | LocalKind::Asking => {
            if let Some(bad) = arity(argc == 1) {
                return Some(bad);
            }
            out.simple("OK");
        }
        LocalKind::Reset => return Some(reset(state, proxy)),
    }
    Some(Action::Reply(out.finish()))
}

/// `SELECT db`, into `out`. Another database only where every backend a key can reach has
/// one: Sentinel groups and standalone servers, never a Redis Cluster (which has only
/// database 0).
fn select(state: &mut ClientState, proxy: ProxyRef<'_>, args: &[Bytes], out: &mut ReplyBuf) {
    let databases = proxy
        .backends()
        .iter()
        .map(|b| b.databases())
        .min()
        .unwrap_or(1);
    match args.get(1).and_then(|a| parse_int(a)) {
        None => out.error("ERR value is not an integer or out of range"),
        Some(0) => {
            state.db = 0;
            out.simple("OK")
        }
        Some(_) if databases <= 1 => out.error("ERR SELECT is not allowed in cluster mode"),
        Some(n) => match u8::try_from(n) {
            Ok(db) if u64::from(db) < databases => {
                state.db = db;
                out.simple("OK")
            }
            _ => out.error("ERR DB index is out of range"),
        },
    };
}

/// `AUTH [user] password`, its arity checked. `None` (the normal path) for no other arity,
/// which cannot come here.
fn auth(state: &mut ClientState, proxy: ProxyRef<'_>, args: &[Bytes]) -> Option<Action> {
    let mut out = ReplyBuf::new(state.protocol);
    let (user, password) = match args {
        [_, password] => (None, password),
        [_, user, password] => (Some(user.as_ref()), password),
        _ => return None,
    };
    match super::acl::login(state, proxy, user, password) {
        Ok(()) => out.simple("OK"),
        Err(LoginError::DefaultHasNoPassword) => out.error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"),
        Err(LoginError::WrongPass) => out.error(WRONGPASS),
    };
    Some(Action::Reply(out.finish()))
}

/// `RESET`: the connection as a new client finds it (RESP2, no name, no transaction,
/// database 0, not subscribed, the user at connect, replies on).
fn reset(state: &mut ClientState, proxy: ProxyRef<'_>) -> Action {
    state.protocol = Protocol::Resp2;
    if let Some(names) = state.names.as_mut() {
        names.name = None;
    }
    super::txn::discard(state);
    state.db = 0;
    state.subscribed = false;
    state.reset = true;
    state.login(proxy.users().at_connect());
    state.reply_mode = super::ReplyMode::On;
    super::client_tracking::turn_off(state, &proxy);
    state.publish();
    Action::Reply(Bytes::from_static(b"+RESET\r\n"))
}

fn hello(
    state: &mut ClientState,
    proxy: ProxyRef<'_>,
    cluster: &Backend,
    args: &[Bytes],
) -> Action {
    let mut protocol = state.protocol;
    let mut setname = None;
    if let Some(version) = args.get(1) {
        protocol = match parse_int(version) {
            None => {
                return Action::Reply(reply::error(
                    "ERR Protocol version is not an integer or out of range",
                ));
            }
            Some(2) => Protocol::Resp2,
            Some(3) => Protocol::Resp3,
            Some(_) => return Action::Reply(reply::error("NOPROTO unsupported protocol version")),
        };
        let mut i = 2;
        while let Some(option) = args.get(i) {
            let more = args.len() - i - 1;
            if is_option(option, "AUTH") && more >= 2 {
                let user = args.get(i + 1).map(|u| u.as_ref());
                let password = args.get(i + 2).cloned().unwrap_or_default();
                if super::acl::login(state, proxy, user, &password).is_err() {
                    return Action::Reply(reply::error(WRONGPASS));
                }
                i += 3;
            } else if is_option(option, "SETNAME") && more >= 1 {
                let name = args.get(i + 1).cloned().unwrap_or_default();
                if !valid_client_name(&name) {
                    return Action::Reply(reply::error(BAD_NAME));
                }
                setname = Some(name);
                i += 2;
            } else {
                return Action::Reply(reply::error(&format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(option)
                )));
            }
        }
    }
    if !state.authenticated {
        return Action::Reply(reply::error(NOAUTH_HELLO));
    }
    state.protocol = protocol;
    if let Some(name) = setname {
        state.names_mut().name = (!name.is_empty()).then_some(name);
    }
    let announced = &proxy.config().tracking.announce_version;
    let version = if announced.is_empty() {
        super::info::redis_version(cluster)
    } else {
        announced.clone()
    };
    let mut out = ReplyBuf::new(protocol);
    out.map(7);
    out.bulk(b"server").bulk(b"redis");
    out.bulk(b"version").bulk(version.as_bytes());
    out.bulk(b"proto")
        .integer(if protocol == Protocol::Resp3 { 3 } else { 2 });
    out.bulk(b"id").integer(state.id as i64);
    out.bulk(b"mode").bulk(b"cluster");
    out.bulk(b"role").bulk(b"master");
    out.bulk(b"modules").array(0);
    Action::Reply(out.finish())
}

/// Redis's reply to wrong credentials.
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
/// Redis's reply to `HELLO` without `AUTH` from a client that must authenticate.
const NOAUTH_HELLO: &str = "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time";
