//! `CLUSTER ...` as cluster-aware clients see it: the proxy is one master owning every slot,
//! at the address they can dial (see [`crate::announce`]).

use bytes::Bytes;

use super::ClientState;
use super::action::{Action, wrong_arity_named};
use crate::announce::Announced;
use crate::cluster::Target;
use crate::command::Access;
use crate::protocol::Request;
use crate::protocol::reply::{self, ReplyBuf};
use crate::protocol::request::parse_int;
use crate::proxy::ProxyRef;
use crate::slot::{SLOT_COUNT, Slot};

/// `CLUSTER` as seen by a cluster-aware client: the proxy is one master owning every slot.
pub(super) fn command(state: &ClientState, proxy: ProxyRef<'_>, args: &[Bytes]) -> Option<Action> {
    let Some(sub) = args.get(1) else {
        return Some(Action::Reply(reply::error(&wrong_arity_named(b"cluster"))));
    };
    let sub = String::from_utf8_lossy(sub).to_ascii_lowercase();
    let mut out = ReplyBuf::new(state.protocol);
    match sub.as_str() {
        "keyslot" => match args.get(2) {
            Some(key) if args.len() == 3 => out.integer(i64::from(Slot::for_key(key).get())),
            _ => {
                return Some(Action::Reply(reply::error(
                    "ERR wrong number of arguments for 'cluster|keyslot' command",
                )));
            }
        },
        "myid" => out.bulk(announced(state, proxy).node_id.as_bytes()),
        "info" => info(proxy, &mut out),
        "nodes" => nodes(&announced(state, proxy), &mut out),
        "slots" => slots(&announced(state, proxy), &mut out),
        "shards" => shards(&announced(state, proxy), &mut out),
        "countkeysinslot" | "getkeysinslot" => return Some(keys_in_slot(proxy, args)),
        _ => {
            return Some(Action::Reply(reply::error(&format!(
                "ERR respgate: CLUSTER {} is not supported through the proxy",
                sub.to_ascii_uppercase()
            ))));
        }
    };
    Some(Action::Reply(out.finish()))
}

/// The proxy as this client should see it: at the announced address of the listener it
/// connected to.
fn announced(state: &ClientState, proxy: ProxyRef<'_>) -> Announced {
    let local = state.handle().local;
    let (listen, tls) = proxy.listener_of(local);
    let server = &proxy.config().server;
    let configured = if tls {
        &server.tls.announce_address
    } else {
        &server.announce_address
    };
    Announced::for_client(configured, listen, local)
}

/// `CLUSTER INFO`: as clients see it, the proxy is ok only when every backend is.
fn info<'o>(proxy: ProxyRef<'_>, out: &'o mut ReplyBuf) -> &'o mut ReplyBuf {
    let served = proxy
        .backends()
        .iter()
        .map(|b| b.slot_map().slots_served())
        .min()
        .unwrap_or(0);
    let state_text = if served == usize::from(SLOT_COUNT) {
        "ok"
    } else {
        "fail"
    };
    let text = format!(
        "cluster_state:{state_text}\r\ncluster_slots_assigned:16384\r\ncluster_slots_ok:{served}\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:{}\r\ncluster_known_nodes:1\r\ncluster_size:1\r\ncluster_current_epoch:1\r\ncluster_my_epoch:1\r\n",
        usize::from(SLOT_COUNT) - served
    );
    out.verbatim(text.as_bytes())
}

/// `CLUSTER NODES`: one line, the proxy as the master of every slot. Redis 7 writes an
/// announced hostname after the bus port: `ip:port@cport,hostname`.
fn nodes<'o>(announced: &Announced, out: &'o mut ReplyBuf) -> &'o mut ReplyBuf {
    let hostname = announced
        .hostname
        .as_ref()
        .map(|h| format!(",{h}"))
        .unwrap_or_default();
    let (node_id, ip, port) = (&announced.node_id, announced.ip, announced.port);
    let line =
        format!("{node_id} {ip}:{port}@0{hostname} myself,master - 0 0 1 connected 0-16383\n");
    out.verbatim(line.as_bytes())
}

/// `CLUSTER SLOTS`: one range, every slot, on the proxy. The preferred endpoint first: the
/// hostname when one is announced, as Redis 7 does with cluster-preferred-endpoint-type
/// hostname, then the IP in the metadata.
fn slots<'o>(announced: &Announced, out: &'o mut ReplyBuf) -> &'o mut ReplyBuf {
    let ip = announced.ip.to_string();
    let port = i64::from(announced.port);
    let node_id = announced.node_id.as_str();
    out.array(1)
        .array(3)
        .integer(0)
        .integer(i64::from(SLOT_COUNT) - 1);
    match &announced.hostname {
        Some(hostname) => out
            .array(4)
            .bulk(hostname.as_bytes())
            .integer(port)
            .bulk(node_id.as_bytes())
            .map(1)
            .bulk(b"ip")
            .bulk(ip.as_bytes()),
        None => out
            .array(3)
            .bulk(ip.as_bytes())
            .integer(port)
            .bulk(node_id.as_bytes()),
    }
}

/// `CLUSTER SHARDS`: one shard, every slot, the proxy its only node.
fn shards<'o>(announced: &Announced, out: &'o mut ReplyBuf) -> &'o mut ReplyBuf {
    let ip = announced.ip.to_string();
    let port = i64::from(announced.port);
    out.array(1).map(2);
    out.bulk(b"slots")
        .array(2)
        .integer(0)
        .integer(i64::from(SLOT_COUNT) - 1);
    let fields = if announced.hostname.is_some() { 8 } else { 7 };
    out.bulk(b"nodes").array(1).map(fields);
    out.bulk(b"id").bulk(announced.node_id.as_bytes());
    out.bulk(b"port").integer(port);
    out.bulk(b"ip").bulk(ip.as_bytes());
    out.bulk(b"endpoint").bulk(announced.host.as_bytes());
    if let Some(hostname) = &announced.hostname {
        out.bulk(b"hostname").bulk(hostname.as_bytes());
    }
    out.bulk(b"role").bulk(b"master");
    out.bulk(b"replication-offset").integer(0);
    out.bulk(b"health").bulk(b"online")
}

/// `CLUSTER COUNTKEYSINSLOT` and `GETKEYSINSLOT`: asked of the default backend's node that
/// serves the slot, as the proxy's slot is every backend's.
fn keys_in_slot(proxy: ProxyRef<'_>, args: &[Bytes]) -> Action {
    let slot = args
        .get(2)
        .and_then(|s| parse_int(s))
        .and_then(|n| u16::try_from(n).ok())
        .and_then(Slot::new);
    match slot {
        Some(slot) => Action::Forward {
            backend: proxy.routes().default_backend(),
            payload: Request::from_args(args.to_vec()).raw,
            target: Target::Slot(slot),
            access: Access::Read,
        },
        None => Action::Reply(reply::error("ERR Invalid or out of range slot")),
    }
}
