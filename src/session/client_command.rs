//! `CLIENT ...`, over the proxy's own clients: names and library info, the reply mode, listing,
//! killing, unblocking and pausing them. Nothing of it reaches the nodes but `CLIENT UNBLOCK`,
//! passed on to the node a blocked client waits on.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;

use super::ClientState;
use super::action::{
    Action, client_wrong_arity as wrong_arity, unknown_subcommand, wrong_arity_named,
};
use super::client_tracking;
use crate::clients::KillFilter;
use crate::cluster::Target;
use crate::command::{Access, Lookup};
use crate::pause::PauseMode;
use crate::protocol::reply::{self, ReplyBuf};
use crate::protocol::request::{encode_command, is_option, parse_int};
use crate::proxy::ProxyRef;

/// Redis's reply to a client name it does not take (`CLIENT SETNAME`, `HELLO ... SETNAME`).
pub(super) const BAD_NAME: &str =
    "ERR Client names cannot contain spaces, newlines or special characters.";

/// Redis accepts client names of printable ASCII without spaces.
pub(super) fn valid_client_name(name: &[u8]) -> bool {
    name.iter().all(|&b| (b'!'..=b'~').contains(&b))
}

/// Answers `CLIENT sub ...`: the short subcommands here, the others in a function each.
pub(super) fn command(state: &mut ClientState, proxy: ProxyRef<'_>, args: &[Bytes]) -> Action {
    let Some(sub) = args.get(1) else {
        return Action::Reply(reply::error(&wrong_arity_named(b"client")));
    };
    let sub = String::from_utf8_lossy(sub).to_ascii_lowercase();
    let argc = args.len();
    let mut out = ReplyBuf::new(state.protocol);
    let wrong = || wrong_arity(&sub);
    match sub.as_str() {
        "setname" => return setname(state, args),
        "getname" => {
            if argc != 2 {
                return wrong();
            }
            match state.names.as_ref().and_then(|n| n.name.as_ref()) {
                Some(name) => out.bulk(name),
                None => out.null(),
            };
        }
        "id" => {
            if argc != 2 {
                return wrong();
            }
            out.integer(state.id as i64);
        }
        "setinfo" => return setinfo(state, args),
        "info" => {
            let shown = proxy.tracking.shown(state.id);
            out.verbatim(state.handle().line(encoded_len(args), shown).as_bytes());
        }
        "list" => {
            let own = encoded_len(args);
            let lines: String = proxy
                .clients
                .list()
                .iter()
                .map(|c| {
                    let qbuf = if c.id == state.id { own } else { 0 };
                    c.line(qbuf, proxy.tracking.shown(c.id))
                })
                .collect();
            out.verbatim(lines.as_bytes());
        }
        "kill" => return client_kill(state, proxy, args),
        "unblock" => return client_unblock(state, proxy, args),
        "reply" => return reply_mode(state, args),
        "no-evict" => return no_evict(state, args),
        "no-touch" => {
            out.simple("OK");
        }
        "pause" => return client_pause(proxy, args),
        "tracking" => return client_tracking::tracking(state, proxy, args),
        "caching" => return client_tracking::caching(state, args),
        "getredir" => {
            if let Some(refused) = client_tracking::getredir(state, proxy, &mut out, args) {
                return refused;
            }
        }
        "trackinginfo" => {
            if let Some(refused) = client_tracking::trackinginfo(state, proxy, &mut out, args) {
                return refused;
            }
        }
        "unpause" => {
            if argc != 2 {
                return wrong();
            }
            proxy.pause.unpause();
            out.simple("OK");
        }
        _ => return unsupported(proxy, args, &sub),
    };
    Action::Reply(out.finish())
}

/// `CLIENT SETNAME name`; an empty name removes the name, as in Redis.
fn setname(state: &mut ClientState, args: &[Bytes]) -> Action {
    if args.len() != 3 {
        return wrong_arity("setname");
    }
    let name = args.get(2).cloned().unwrap_or_default();
    if !valid_client_name(&name) {
        return Action::Reply(reply::error(BAD_NAME));
    }
    state.names_mut().name = (!name.is_empty()).then_some(name);
    Action::Reply(ok(state))
}

/// `CLIENT SETINFO LIB-NAME|LIB-VER value`, which `CLIENT LIST` shows; the value is checked
/// as a client name is, but may be empty.
fn setinfo(state: &mut ClientState, args: &[Bytes]) -> Action {
    if args.len() != 4 {
        return wrong_arity("setinfo");
    }
    let attr = args
        .get(2)
        .map(|a| a.to_ascii_lowercase())
        .unwrap_or_default();
    let value = args.get(3).cloned().unwrap_or_default();
    if !valid_client_name(&value) && !value.is_empty() {
        return Action::Reply(reply::error(&format!(
            "ERR {} cannot contain spaces, newlines or special characters.",
            String::from_utf8_lossy(&attr)
        )));
    }
    match attr.as_slice() {
        b"lib-name" => state.names_mut().lib_name = Some(value),
        b"lib-ver" => state.names_mut().lib_ver = Some(value),
        _ => {
            return Action::Reply(reply::error(&format!(
                "ERR Unrecognized option '{}'",
                String::from_utf8_lossy(args.get(2).map(|a| a.as_ref()).unwrap_or_default())
            )));
        }
    }
    Action::Reply(ok(state))
}

/// `CLIENT REPLY ON|OFF|SKIP`: `OFF` and `SKIP` get no reply, not even to themselves.
fn reply_mode(state: &mut ClientState, args: &[Bytes]) -> Action {
    let mode = args.get(2).map(|m| m.to_ascii_lowercase());
    match (args.len(), mode.as_deref()) {
        (3, Some(b"on")) => {
            state.reply_mode = super::ReplyMode::On;
            Action::Reply(ok(state))
        }
        (3, Some(b"off")) => {
            state.reply_mode = super::ReplyMode::Off;
            Action::Reply(Bytes::new())
        }
        (3, Some(b"skip")) => {
            state.reply_mode = super::ReplyMode::Skip;
            Action::Reply(Bytes::new())
        }
        (3, _) => Action::Reply(reply::error("ERR syntax error")),
        _ => wrong_arity("reply"),
    }
}

/// `CLIENT NO-EVICT ON|OFF`. The proxy evicts no client for memory, so this only sets the
/// flag `e` that `CLIENT LIST` shows, as the client asked.
fn no_evict(state: &mut ClientState, args: &[Bytes]) -> Action {
    if args.len() != 3 {
        return wrong_arity("no-evict");
    }
    let on = match args.get(2).map(|m| m.to_ascii_lowercase()).as_deref() {
        Some(b"on") => true,
        Some(b"off") => false,
        _ => return Action::Reply(reply::error("ERR syntax error")),
    };
    state.handle().no_evict.store(on, Ordering::Relaxed);
    Action::Reply(ok(state))
}

/// A subcommand the proxy does not answer: one Redis has not either gets Redis's own error;
/// one it has, the proxy's. `sub` lowercase.
fn unsupported(proxy: ProxyRef<'_>, args: &[Bytes], sub: &str) -> Action {
    let table = proxy.commands();
    let unknown = table
        .as_ref()
        .is_some_and(|t| matches!(t.lookup(args), Lookup::UnknownSubcommand));
    if unknown {
        return Action::Reply(reply::error(&unknown_subcommand(args)));
    }
    Action::Reply(reply::error(&format!(
        "ERR respgate: CLIENT {} is not supported by this proxy",
        sub.to_ascii_uppercase()
    )))
}

/// `+OK` in the client's protocol.
fn ok(state: &ClientState) -> Bytes {
    let mut out = ReplyBuf::new(state.protocol);
    out.simple("OK");
    out.finish()
}

/// The longest `CLIENT PAUSE` in milliseconds (ten years): a longer timeout pauses this long.
const MAX_PAUSE_MS: u64 = 10 * 365 * 24 * 3600 * 1000;

/// `CLIENT PAUSE timeout [WRITE|ALL]`, with Redis's checks in Redis's order (the mode, then
/// the timeout in milliseconds). It pauses the proxy's own clients, the caller among them, and
/// nothing on the nodes. A timeout of 0 ends at once, as in Redis.
fn client_pause(proxy: ProxyRef<'_>, args: &[Bytes]) -> Action {
    let mode = match args {
        [_, _, _] => PauseMode::All,
        [_, _, _, mode] if is_option(mode, "WRITE") => PauseMode::Write,
        [_, _, _, mode] if is_option(mode, "ALL") => PauseMode::All,
        [_, _, _, _] => {
            return Action::Reply(reply::error("ERR CLIENT PAUSE mode must be WRITE or ALL"));
        }
        [_, sub, _, _, _, ..] => {
            return Action::Reply(reply::error(&format!(
                "ERR unknown subcommand or wrong number of arguments for '{}'. Try CLIENT HELP.",
                String::from_utf8_lossy(sub)
            )));
        }
        _ => {
            return Action::Reply(reply::error(
                "ERR wrong number of arguments for 'client|pause' command",
            ));
        }
    };
    let timeout_ms = match args.get(2).and_then(|a| parse_int(a)) {
        None => {
            return Action::Reply(reply::error(
                "ERR timeout is not an integer or out of range",
            ));
        }
        Some(ms) if ms < 0 => return Action::Reply(reply::error("ERR timeout is negative")),
        Some(ms) => ms.unsigned_abs(),
    };
    let now = tokio::time::Instant::now();
    // Capped far beyond any pause an operator means, so the end cannot overflow.
    let end = now
        .checked_add(Duration::from_millis(timeout_ms.min(MAX_PAUSE_MS)))
        .unwrap_or(now);
    proxy.pause.pause(end, mode);
    Action::Reply(Bytes::from_static(reply::OK))
}

/// The length of `args` as a RESP request: what a client's query buffer holds of it.
fn encoded_len(args: &[Bytes]) -> usize {
    let header = |n: usize| 3 + n.to_string().len();
    header(args.len())
        + args
            .iter()
            .map(|a| header(a.len()) + a.len() + 2)
            .sum::<usize>()
}

/// `CLIENT KILL addr` (the old form: `+OK` or an error) or `CLIENT KILL <filter> <value> ...`
/// (the number killed), over the proxy's own clients.
fn client_kill(state: &ClientState, proxy: ProxyRef<'_>, args: &[Bytes]) -> Action {
    let text = |i: usize| args.get(i).map(|a| String::from_utf8_lossy(a).into_owned());
    if args.len() < 3 {
        // Without a filter Redis refuses it; the proxy would otherwise close every client.
        return Action::Reply(reply::error(
            "ERR wrong number of arguments for 'client|kill' command",
        ));
    }
    if args.len() == 3 {
        let filter = KillFilter {
            addr: text(2),
            ..KillFilter::default()
        };
        return Action::Reply(if proxy.clients.kill(&filter) > 0 {
            Bytes::from_static(reply::OK)
        } else {
            reply::error("ERR No such client")
        });
    }
    let mut filter = KillFilter {
        skip: Some(state.id),
        ..KillFilter::default()
    };
    let mut i = 2;
    while i < args.len() {
        let (Some(key), Some(value)) = (text(i), text(i + 1)) else {
            return Action::Reply(reply::error("ERR syntax error"));
        };
        match key.to_ascii_lowercase().as_str() {
            "id" => match value.parse() {
                Ok(id) if id > 0 => filter.id = Some(id),
                _ => {
                    return Action::Reply(reply::error("ERR client-id should be greater than 0"));
                }
            },
            "type" => match value.to_ascii_lowercase().as_str() {
                "normal" => filter.pubsub = Some(false),
                "pubsub" => filter.pubsub = Some(true),
                // No client of the proxy's is a master or a replica.
                "master" | "replica" | "slave" => filter.id = Some(0),
                _ => {
                    return Action::Reply(reply::error(&format!(
                        "ERR Unknown client type '{value}'"
                    )));
                }
            },
            "addr" => filter.addr = Some(value),
            "laddr" => filter.laddr = Some(value),
            "user" => {
                if proxy.users().get(&value).is_none() {
                    return Action::Reply(reply::error(&format!("ERR No such user '{value}'")));
                }
                filter.user = Some(value);
            }
            "maxage" => match value.parse() {
                Ok(s) => filter.max_age_s = Some(s),
                Err(_) => return Action::Reply(reply::error("ERR syntax error")),
            },
            "skipme" => match value.to_ascii_lowercase().as_str() {
                "yes" => filter.skip = Some(state.id),
                "no" => filter.skip = None,
                _ => return Action::Reply(reply::error("ERR syntax error")),
            },
            _ => return Action::Reply(reply::error("ERR syntax error")),
        }
        i += 2;
    }
    let mut out = ReplyBuf::new(state.protocol);
    out.integer(proxy.clients.kill(&filter) as i64);
    Action::Reply(out.finish())
}

/// `CLIENT UNBLOCK id [TIMEOUT|ERROR]` for one of the proxy's clients: passed on to the node
/// its blocking command waits on (on the node's control connection, which never waits behind
/// clients' requests), naming the client's own connection there, so the node
/// answers the blocked client (a timeout's reply, or `-UNBLOCKED ...`) and this caller (`:1`).
/// A client that is not blocked, or not known, gets `:0` here, as from Redis.
fn client_unblock(state: &ClientState, proxy: ProxyRef<'_>, args: &[Bytes]) -> Action {
    if args.len() < 3 {
        return Action::Reply(reply::error(
            "ERR wrong number of arguments for 'client|unblock' command",
        ));
    }
    if args.len() > 4 {
        let sub = args
            .get(1)
            .map(|s| String::from_utf8_lossy(s))
            .unwrap_or_default();
        return Action::Reply(reply::error(&format!(
            "ERR unknown subcommand or wrong number of arguments for '{sub}'. Try CLIENT HELP."
        )));
    }
    let reason = args.get(3);
    if let Some(reason) = reason
        && !is_option(reason, "TIMEOUT")
        && !is_option(reason, "ERROR")
    {
        return Action::Reply(reply::error(
            "ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR",
        ));
    }
    let Some(id) = args.get(2).and_then(|a| parse_int(a)) else {
        return Action::Reply(reply::error("ERR value is not an integer or out of range"));
    };
    let blocked = u64::try_from(id)
        .ok()
        .and_then(|id| proxy.clients.get(id))
        .and_then(|client| client.blocked_on());
    let target = blocked.and_then(|on| {
        let node_id = on.node_client_id?;
        let cluster = proxy.backend(on.backend)?;
        Some((on.backend, cluster.pool(&on.node), node_id))
    });
    let Some((backend, pool, node_id)) = target else {
        let mut out = ReplyBuf::new(state.protocol);
        out.integer(0);
        return Action::Reply(out.finish());
    };
    let mut command: Vec<&[u8]> = vec![b"CLIENT", b"UNBLOCK"];
    let node_id = node_id.to_string();
    command.push(node_id.as_bytes());
    if let Some(reason) = reason {
        command.push(reason);
    }
    let mut payload = bytes::BytesMut::new();
    encode_command(&mut payload, &command);
    Action::Forward {
        backend,
        payload: payload.freeze(),
        target: Target::Control(pool),
        access: Access::Write,
    }
}
