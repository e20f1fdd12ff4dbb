//! Deciding what to do with one request: answer it here, refuse it, or route it to a slot.

use bytes::Bytes;

use super::own::OwnOp;
use super::pubsub::{ALLOWED_WHILE_SUBSCRIBED, nothing_to_unsubscribe};
use super::{ClientState, local, txn};
use crate::cluster::{Access, Cluster, Slot, Target};
use crate::command::{CommandSpec, Lookup, MAX_NAME_LEN, lowercase, with_lowercase};
use crate::fanout::{self, FanOut};
use crate::multikey::{self, Split};
use crate::protocol::Protocol;
use crate::protocol::Request;
use crate::protocol::reply::ReplyBuf;
use crate::protocol::reply::{self, CROSSSLOT};
use crate::protocol::request::{encode_command, parse_int};
use crate::proxy::Proxy;
use bytes::BytesMut;

/// What the session does with a request.
#[derive(Debug)]
pub enum Action {
    /// Reply with these bytes.
    Reply(Bytes),
    /// Reply with these bytes, then close the connection.
    Close(Bytes),
    /// Send the request to a node and relay its reply.
    Forward {
        /// The command in RESP, usually the client's own bytes.
        payload: Bytes,
        /// Where it goes.
        target: Target,
        /// Whether it only reads.
        access: Access,
    },
    /// Send one part per slot and merge the replies.
    Split(Split),
    /// Send to every master and combine the replies.
    FanOut(FanOut),
    /// `SCAN` across masters.
    Scan(Vec<Bytes>),
    /// Work on the client's own connection, alone and in order.
    Own(OwnOp),
    /// Send to the client's subscription connection (opening it first if needed).
    Subscribe(Bytes),
    /// `SSUBSCRIBE` of channels in `slot`: to the connection for that slot's master.
    ShardSubscribe {
        /// The command.
        raw: Bytes,
        /// The channels' slot.
        slot: Slot,
    },
    /// `SUNSUBSCRIBE` of these channels (all when empty).
    ShardUnsubscribe(Vec<Bytes>),
}

/// Commands that change the state of the connection they run on, or hold it, and so cannot run
/// on a connection shared by many clients. They are refused until the proxy gives them a
/// connection of their own.
const NEEDS_OWN_CONNECTION: &[&str] = &["waitaof"];

/// Decides what to do with `request`.
pub fn dispatch(
    state: &mut ClientState,
    proxy: &Proxy,
    cluster: &Cluster,
    request: Request,
) -> Action {
    // Lowercased once, on the stack: the checks below all match on it.
    let mut name_buf = [0u8; MAX_NAME_LEN];
    let name = lowercase(request.name(), &mut name_buf);
    if !state.authenticated && !matches!(name, Some("auth" | "hello" | "quit" | "reset")) {
        return Action::Reply(reply::error("NOAUTH Authentication required."));
    }
    if let Some(name) = name {
        if let Some(action) = pubsub_command(state, name, &request) {
            return action;
        }
        if let Some(action) = txn::handle(state, cluster, name, &request) {
            return action;
        }
        if let Some(action) = local::handle(state, proxy, cluster, name, &request) {
            return action;
        }
    }
    let Some(table) = cluster.commands() else {
        cluster.request_refresh();
        return Action::Reply(reply::error(&cluster.unreachable_error()));
    };
    let lookup = name.map_or(Lookup::Unknown, |name| {
        table.lookup_lowercased(name, &request.args)
    });
    let spec = match lookup {
        Lookup::Found(spec) => spec,
        Lookup::Unknown => return Action::Reply(reply::error(&unknown_command(&request.args))),
        Lookup::UnknownSubcommand => {
            return Action::Reply(reply::error(&unknown_subcommand(&request.args)));
        }
    };
    if !spec.arity_ok(request.args.len()) {
        return Action::Reply(reply::error(&wrong_arity(spec)));
    }
    if let Some(refusal) = refuse(spec, proxy.config.server.allow_admin_commands) {
        return Action::Reply(reply::error(&refusal));
    }
    if is_blocking(spec, &request.args) {
        return match route(state, spec, &request.args) {
            Ok(target) => Action::Own(OwnOp::Blocking {
                payload: request.raw,
                target,
            }),
            Err(error) => Action::Reply(reply::error(error)),
        };
    }
    match spec.name.as_str() {
        "eval" | "eval_ro" | "script|load" => {
            let body = if spec.name == "script|load" {
                request.args.get(2)
            } else {
                request.args.get(1)
            };
            if let Some(body) = body {
                cluster.scripts.remember(body);
            }
        }
        _ => {}
    }
    if spec.name == "scan" {
        return Action::Scan(request.args);
    }
    if let Some(fanout) = fanout::plan(&spec.name, &request.raw) {
        return Action::FanOut(fanout);
    }
    if spec.name == "wait" {
        return wait(state, proxy, &request.args);
    }
    match route(state, spec, &request.args) {
        Ok(target) => {
            let access = if spec.has_flag("readonly") {
                Access::Read
            } else {
                Access::Write
            };
            if let (Target::Slot(slot), Access::Write) = (&target, access) {
                state.last_write_slot = Some(*slot);
            }
            Action::Forward {
                payload: request.raw,
                target,
                access,
            }
        }
        Err(error) => match multikey::plan(&spec.name, &request.args) {
            Some(split) => Action::Split(split),
            None => Action::Reply(reply::error(error)),
        },
    }
}

/// Commands that cannot work through a proxy at all: they take over the connection or act on
/// one server process as a whole.
const NEVER_THROUGH_PROXY: &[&str] = &[
    "monitor",
    "sync",
    "psync",
    "replicaof",
    "slaveof",
    "shutdown",
];

/// Administrative commands, refused unless `server.allow_admin_commands` is set.
const ADMIN: &[&str] = &[
    "debug",
    "save",
    "bgsave",
    "bgrewriteaof",
    "config|set",
    "config|rewrite",
    "config|resetstat",
    "acl|setuser",
    "acl|deluser",
    "acl|load",
    "acl|save",
    "migrate",
    "failover",
    "module|load",
    "module|loadex",
    "module|unload",
    "swapdb",
];

fn refuse(spec: &CommandSpec, allow_admin: bool) -> Option<String> {
    let base = spec.name.split('|').next().unwrap_or(&spec.name);
    let shown = || spec.name.replace('|', " ").to_ascii_uppercase();
    if NEVER_THROUGH_PROXY.contains(&base) {
        return Some(format!(
            "ERR respgate: {} cannot work through a proxy; connect to a node directly",
            shown()
        ));
    }
    if !allow_admin && (ADMIN.contains(&spec.name.as_str()) || ADMIN.contains(&base)) {
        return Some(format!(
            "ERR respgate: {} is an administrative command and is refused through the proxy (server.allow_admin_commands enables it)",
            shown()
        ));
    }
    if NEEDS_OWN_CONNECTION.contains(&base) {
        return Some(format!(
            "ERR respgate: {} is not supported by this proxy yet",
            shown()
        ));
    }
    None
}

/// Subscriptions, and what a subscribed RESP2 client may not do.
fn pubsub_command(state: &mut ClientState, name: &str, request: &Request) -> Option<Action> {
    if state.subscribed
        && state.protocol == Protocol::Resp2
        && !ALLOWED_WHILE_SUBSCRIBED.contains(&name)
    {
        return Some(Action::Reply(reply::error(&format!(
            "ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
        ))));
    }
    let argc = request.args.len();
    match name {
        "subscribe" | "psubscribe" if argc >= 2 => {
            state.subscribed = true;
            Some(Action::Subscribe(request.raw.clone()))
        }
        "unsubscribe" | "punsubscribe" if state.subscribed => {
            Some(Action::Subscribe(request.raw.clone()))
        }
        "unsubscribe" | "punsubscribe" => {
            let mut out = BytesMut::new();
            let channels = request.args.get(1..).unwrap_or_default();
            if channels.is_empty() {
                out.extend_from_slice(&nothing_to_unsubscribe(name, state.protocol));
            }
            for channel in channels {
                let mut reply = ReplyBuf::new(state.protocol);
                match state.protocol {
                    Protocol::Resp2 => reply.array(3),
                    Protocol::Resp3 => reply.push(3),
                };
                reply.bulk(name.as_bytes()).bulk(channel).integer(0);
                out.extend_from_slice(&reply.finish());
            }
            Some(Action::Reply(out.freeze()))
        }
        "ping" if state.subscribed && state.protocol == Protocol::Resp2 => {
            Some(Action::Subscribe(request.raw.clone()))
        }
        "ssubscribe" if argc >= 2 => {
            let channels = request.args.get(1..).unwrap_or_default();
            let slot = Slot::for_key(channels.first()?);
            if channels.iter().any(|c| Slot::for_key(c) != slot) {
                return Some(Action::Reply(reply::error(CROSSSLOT)));
            }
            state.subscribed = true;
            Some(Action::ShardSubscribe {
                raw: request.raw.clone(),
                slot,
            })
        }
        "sunsubscribe" => Some(Action::ShardUnsubscribe(
            request.args.get(1..).unwrap_or_default().to_vec(),
        )),
        _ => None,
    }
}

/// `WAIT numreplicas timeout`, sent on the shared connection that carried the client's last
/// write, so Redis waits for that write (and any later one on that connection) to reach the
/// replicas. WAIT holds that connection while it waits, so its timeout is capped at half the
/// request timeout: when replicas lag, the client gets the count reached so far, as from any
/// WAIT that times out, and other clients are held no longer than that.
fn wait(state: &ClientState, proxy: &Proxy, args: &[Bytes]) -> Action {
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
        .default_cluster()
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
    Action::Forward {
        payload: payload.freeze(),
        target: state
            .last_write_slot
            .map_or(Target::AnyMaster, Target::Slot),
        // On the master, where the write went, whatever `read_from` says.
        access: Access::Write,
    }
}

/// Whether the command may block: flagged `blocking`, except `XREAD`/`XREADGROUP` without
/// `BLOCK`, which answer at once and can share a connection.
fn is_blocking(spec: &CommandSpec, args: &[Bytes]) -> bool {
    if !spec.has_flag("blocking") {
        return false;
    }
    match spec.name.as_str() {
        "xread" | "xreadgroup" => args.iter().any(|a| a.eq_ignore_ascii_case(b"BLOCK")),
        _ => true,
    }
}

/// The slot of the request's keys; `CROSSSLOT` when they differ.
fn route(
    state: &mut ClientState,
    spec: &CommandSpec,
    args: &[Bytes],
) -> Result<Target, &'static str> {
    state.keys.clear();
    spec.keys(args, &mut state.keys);
    let mut slots = state.keys.iter().map(|k| Slot::for_key(k));
    let target = match slots.next() {
        None => Target::AnyMaster,
        Some(first) => {
            if slots.any(|s| s != first) {
                return Err(CROSSSLOT);
            }
            Target::Slot(first)
        }
    };
    state.keys.clear();
    Ok(target)
}

/// Redis's reply to a command it does not know, byte for byte.
pub fn unknown_command(args: &[Bytes]) -> String {
    let name = args.first().map(|n| truncated(n, 128)).unwrap_or_default();
    let mut listed = String::new();
    for arg in args.iter().skip(1) {
        if listed.len() >= 128 {
            break;
        }
        let room = 128 - listed.len();
        listed.push_str(&format!("'{}' ", truncated(arg, room)));
    }
    format!("ERR unknown command '{name}', with args beginning with: {listed}")
}

/// Redis's reply to an unknown subcommand of a container command.
pub fn unknown_subcommand(args: &[Bytes]) -> String {
    let sub = args.get(1).map(|s| truncated(s, 128)).unwrap_or_default();
    let container = args
        .first()
        .map(|n| String::from_utf8_lossy(n).to_ascii_uppercase())
        .unwrap_or_default();
    format!("ERR unknown subcommand '{sub}'. Try {container} HELP.")
}

/// Redis's reply to a wrong argument count.
pub fn wrong_arity(spec: &CommandSpec) -> String {
    format!("ERR wrong number of arguments for '{}' command", spec.name)
}

/// Like `wrong_arity`, for a command known only by name.
pub fn wrong_arity_named(name: &[u8]) -> String {
    let name = with_lowercase(name, str::to_string).unwrap_or_default();
    format!("ERR wrong number of arguments for '{name}' command")
}

fn truncated(bytes: &[u8], max: usize) -> String {
    String::from_utf8_lossy(bytes.get(..max.min(bytes.len())).unwrap_or_default()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<Bytes> {
        a.iter().map(|s| Bytes::from(s.to_string())).collect()
    }

    #[test]
    fn unknown_command_text_matches_redis() {
        assert_eq!(
            unknown_command(&args(&["foo", "a", "b"])),
            "ERR unknown command 'foo', with args beginning with: 'a' 'b' "
        );
        assert_eq!(
            unknown_command(&args(&["foo"])),
            "ERR unknown command 'foo', with args beginning with: "
        );
        assert_eq!(
            unknown_subcommand(&args(&["object", "xx"])),
            "ERR unknown subcommand 'xx'. Try OBJECT HELP."
        );
    }
}
