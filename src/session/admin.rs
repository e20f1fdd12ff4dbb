//! Where an administrative command goes once `server.allow_admin_commands` lets it through:
//! every node (`CONFIG SET`), every master (`SAVE`), by its keys (`MIGRATE`), and for `DEBUG`
//! wherever its subcommand acts: the key's node, every node, every master, or refused when it
//! would crash or restart one node of many.

use super::ClientState;
use super::action::{Action, Gather};
use super::route::route_positions;
use super::route::{forward, forward_to};
use crate::broadcast::{Broadcast, ProxyEffect, Reach};
use crate::cluster::Target;
use crate::command::Access;
use crate::command::ResponsePolicy;
use crate::command::{AdminReach, CommandSpec, Refusal};
use crate::protocol::Request;
use crate::protocol::reply;
use crate::proxy::ProxyRef;

/// Acts on an allowed administrative command whose policy is `Admin(reach)`.
pub(super) fn admin(
    state: &mut ClientState,
    proxy: ProxyRef<'_>,
    spec: &CommandSpec,
    reach: AdminReach,
    request: Request,
) -> Action {
    // The proxy answers for the nodes as one Redis: what these change in a Redis changes in
    // the proxy too.
    let effect = match spec.name.as_str() {
        "config|set" => Some(ProxyEffect::ConfigSet(
            request.args.get(2..).unwrap_or_default().to_vec(),
        )),
        "config|resetstat" => Some(ProxyEffect::ResetStat),
        _ => None,
    };
    let everywhere = |reach| {
        Gather::Broadcast(
            Broadcast::new(
                &spec.name,
                request.raw.clone(),
                reach,
                ResponsePolicy::AllSucceeded,
            )
            .with_effect(effect.clone()),
        )
        .into()
    };
    match reach {
        AdminReach::ByKey { access } => forward(state, proxy, spec, request, access),
        AdminReach::EveryNode => everywhere(Reach::EveryNode),
        AdminReach::EveryMaster => everywhere(Reach::EveryMaster),
        AdminReach::Debug => debug(state, proxy, request),
    }
}

/// Where a `DEBUG` subcommand acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DebugReach {
    /// On the key in argument 2 (`OBJECT`, `SDSLEN`, ...).
    Key,
    /// On the keys from argument 2 on, which must share a node (`DIGEST-VALUE`).
    Keys,
    /// A setting of the server: every node, so it holds whichever node serves a key.
    EveryNode,
    /// The dataset: every master (`RELOAD`, `LOADAOF`).
    EveryMaster,
    /// `DIGEST`: every master's, combined.
    Digest,
    /// Anything else answers the same on any node (`HELP`, `SLEEP`, `PROTOCOL`, `ERROR`).
    AnyMaster,
    /// It crashes or restarts one node, or writes keys without regard to slots (`POPULATE`):
    /// through the proxy it would act on a node picked at random.
    Refused,
}

fn debug_reach(sub: &[u8]) -> DebugReach {
    let sub = String::from_utf8_lossy(sub).to_ascii_lowercase();
    match sub.as_str() {
        "object" | "sdslen" | "listpack" | "quicklist" | "htstats-key" => DebugReach::Key,
        "digest-value" => DebugReach::Keys,
        "set-active-expire"
        | "quicklist-packed-threshold"
        | "set-skip-checksum-validation"
        | "set-disable-deny-scripts"
        | "replybuffer"
        | "pause-cron"
        | "dict-resizing"
        | "aof-flush-sleep"
        | "config-rewrite-force-all" => DebugReach::EveryNode,
        "reload" | "loadaof" => DebugReach::EveryMaster,
        "digest" => DebugReach::Digest,
        "segfault"
        | "panic"
        | "assert"
        | "oom"
        | "restart"
        | "crash-and-recover"
        | "populate"
        | "replicate"
        | "change-repl-id"
        | "leak"
        | "drop-cluster-packet-filter"
        | "clusterlink" => DebugReach::Refused,
        _ => DebugReach::AnyMaster,
    }
}

/// `DEBUG <subcommand> ...`, sent where the subcommand acts.
fn debug(state: &mut ClientState, proxy: ProxyRef<'_>, request: Request) -> Action {
    let sub = request.args.get(1).cloned().unwrap_or_default();
    let broadcast = |reach, combine| {
        Gather::Broadcast(Broadcast::new("debug", request.raw.clone(), reach, combine)).into()
    };
    let reach = debug_reach(&sub);
    match reach {
        DebugReach::Key | DebugReach::Keys => {
            let last = match reach {
                DebugReach::Key => 3,
                _ => request.args.len(),
            };
            state.positions.clear();
            state.positions.extend(2..last.min(request.args.len()));
            let routes = proxy.routes();
            match route_positions(state, routes, &request.args) {
                Ok(mut routed) => {
                    let payload = routed.payload(request.raw);
                    forward_to(state, routed.backend, payload, routed.target, Access::Read)
                }
                Err(error) => Action::Reply(reply::error(&error.message(proxy))),
            }
        }
        DebugReach::EveryNode => broadcast(Reach::EveryNode, ResponsePolicy::AllSucceeded),
        DebugReach::EveryMaster => broadcast(Reach::EveryMaster, ResponsePolicy::AllSucceeded),
        DebugReach::Digest => broadcast(Reach::EveryMaster, ResponsePolicy::DatasetDigest),
        DebugReach::AnyMaster => forward_to(
            state,
            proxy.routes().default_backend(),
            request.raw,
            Target::AnyMaster,
            Access::Write,
        ),
        DebugReach::Refused => {
            let name = format!("debug|{}", String::from_utf8_lossy(&sub));
            Action::Reply(reply::error(&Refusal::NeverThroughProxy.message(&name)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_subcommands_act_where_their_effect_is() {
        assert_eq!(debug_reach(b"OBJECT"), DebugReach::Key);
        assert_eq!(debug_reach(b"digest-value"), DebugReach::Keys);
        assert_eq!(debug_reach(b"set-active-expire"), DebugReach::EveryNode);
        assert_eq!(debug_reach(b"RELOAD"), DebugReach::EveryMaster);
        assert_eq!(debug_reach(b"digest"), DebugReach::Digest);
        assert_eq!(debug_reach(b"sleep"), DebugReach::AnyMaster);
        assert_eq!(debug_reach(b"segfault"), DebugReach::Refused);
        assert_eq!(debug_reach(b"populate"), DebugReach::Refused);
    }
}
