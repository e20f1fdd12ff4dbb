//! What the session does with one request ([`Action`]), decided by
//! [`dispatch`](super::dispatch) and the modules it asks, and Redis's error texts for a
//! request refused before it goes anywhere. At the bottom of the session, so that every module
//! deciding a request speaks of actions without importing the one that calls it.

use bytes::Bytes;

use super::own::OwnOp;
use super::pubsub::Publish;
use crate::broadcast::Broadcast;
use crate::cluster::{Sending, Target};
use crate::command::{Access, CommandSpec, SubscriptionKind, with_lowercase};
use crate::fanout::FanOut;
use crate::keyspace::BackendId;
use crate::multikey::Split;
use crate::pause::PauseTicket;
use crate::protocol::{Protocol, Request};

/// What the session does with a request.
#[derive(Debug)]
pub enum Action {
    /// Reply with these bytes.
    Reply(Bytes),
    /// Reply with these bytes, which Redis sends as a push (the confirmation of an unsubscribe
    /// with nothing subscribed), so they are delivered even when the client asked for no
    /// replies (`CLIENT REPLY OFF`).
    Push(Bytes),
    /// Reply with these bytes, then close the connection.
    Close(Bytes),
    /// Send the request to a node and relay its reply.
    Forward {
        /// The backend it goes to.
        backend: BackendId,
        /// The command in RESP, usually the client's own bytes.
        payload: Bytes,
        /// Where it goes.
        target: Target,
        /// Whether it only reads.
        access: Access,
    },
    /// Ask several nodes (or one, and the proxy's own figures) and make one reply of theirs.
    Gather(Gather),
    /// Work on the client's own connection, alone and in order.
    Own(OwnOp),
    /// Wait until a backend has told the proxy its commands, then decide again; the request
    /// keeps its place in the client's order.
    AwaitBackend(Request),
    /// Held by `CLIENT PAUSE`: wait until the pause ends or changes, then decide again; the
    /// request keeps its place in the client's order, and nothing after it starts.
    Postpone(Postponed),
    /// (Un)subscribe `names` (all of that kind when empty, for the unsubscribes) on the
    /// client's subscription connections.
    Pubsub {
        /// Which (un)subscribe.
        kind: SubscriptionKind,
        /// The channels or patterns.
        names: Vec<Bytes>,
    },
}

/// A request `CLIENT PAUSE` holds, with what it waits on.
#[derive(Debug)]
pub struct Postponed {
    /// The request, decided again once released.
    pub request: Request,
    /// Wakes when the pause ends or changes.
    pub ticket: PauseTicket,
}

/// Work that asks nodes and makes one reply of their answers: each runs as a future of its
/// own (see [`super::launch`]).
#[derive(Debug)]
pub enum Gather {
    /// `PUBLISH` to the channel's master, its count completed with the proxy's subscribers
    /// held elsewhere.
    Publish(Publish),
    /// Send one part per slot and merge the replies.
    Split(Split),
    /// Send to every master and combine the replies.
    FanOut(FanOut),
    /// Send to several nodes (or one master) on their control connections and combine the
    /// replies.
    Broadcast(Broadcast),
    /// `INFO` with sections made from the masters' figures.
    Info(super::info::InfoRequest),
    /// `SCAN` across masters.
    Scan(Vec<Bytes>),
    /// `CLIENT TRACKING ON`, answered once every node of these backends (by serial) is
    /// watched or has failed to be once, or the connect timeout has passed.
    Watched(Vec<u64>),
    /// A request for keys moving between backends, through the migration's gate.
    Moving(super::moving::request::MovingRequest),
}

/// How a forwarded command (`Action::Forward`'s fields) is sent for a client on `protocol` and
/// database `db` using shared connection `affinity`: the one place the session's counted and
/// silenced paths build it.
pub fn forwarded(
    payload: Bytes,
    target: Target,
    access: Access,
    (protocol, db, affinity): (Protocol, u8, usize),
) -> Sending {
    Sending {
        payload,
        target,
        access,
        protocol,
        db,
        affinity,
    }
}

impl From<Gather> for Action {
    fn from(gather: Gather) -> Self {
        Action::Gather(gather)
    }
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

/// Redis's reply to `CLIENT sub` with the wrong number of arguments; `sub` lowercase.
pub(super) fn client_wrong_arity(sub: &str) -> Action {
    Action::Reply(crate::protocol::reply::error(&format!(
        "ERR wrong number of arguments for 'client|{sub}' command"
    )))
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
