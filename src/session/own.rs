//! Work on the client's own backend connection: blocking commands, `WATCH`, and `MULTI` ...
//! `EXEC`. The session runs these one at a time, after every earlier reply and before any later
//! request, so the connection is never shared and the client's order holds.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::Mutex;

use crate::backend::{Exclusive, NodeAddr};
use crate::cluster::{Cluster, Redirect, ResolveAgainst, Slot, Target};
use crate::protocol::{Protocol, reply};

/// `ASKING` in RESP.
const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";
/// Most redirects or retries followed on an own connection.
const MAX_ATTEMPTS: usize = 8;

/// The client's own connection, if it has one open.
pub type OwnConnection = Arc<Mutex<Option<Exclusive>>>;

/// One operation on the client's own connection.
#[derive(Debug)]
pub enum OwnOp {
    /// A blocking command: it may hold the connection as long as it was told to wait.
    Blocking {
        /// The command.
        payload: Bytes,
        /// Where its keys live.
        target: Target,
    },
    /// `WATCH` of keys in `slot`: the watch lives on the connection until `EXEC`/`UNWATCH`.
    Watch {
        /// The command.
        payload: Bytes,
        /// The keys' slot.
        slot: Slot,
    },
    /// `MULTI`, the queued commands and `EXEC` in one write; the client gets `EXEC`'s reply.
    Exec {
        /// `MULTI` + commands + `EXEC`.
        payload: Bytes,
        /// Number of replies to read (commands + 2).
        replies: usize,
        /// Where the transaction runs; `None` when it touches no key.
        slot: Option<Slot>,
    },
    /// Close the connection (`UNWATCH`, `DISCARD`): Redis forgets its watches with it.
    Release {
        /// The reply for the client.
        reply: Bytes,
    },
}

/// Runs `op` on the client's own connection, opening one to the right node when needed.
pub async fn run(cluster: &Cluster, own: OwnConnection, op: OwnOp, protocol: Protocol) -> Bytes {
    let mut own = own.lock().await;
    match op {
        OwnOp::Release { reply } => {
            *own = None;
            reply
        }
        OwnOp::Blocking { payload, target } => {
            call_routed(cluster, &mut own, payload, target, protocol).await
        }
        OwnOp::Watch { payload, slot } => {
            call_routed(cluster, &mut own, payload, Target::Slot(slot), protocol).await
        }
        OwnOp::Exec {
            payload,
            replies,
            slot,
        } => {
            // A WATCH already chose the node; otherwise the transaction's slot does.
            let node = match (own.as_ref(), slot) {
                (Some(conn), _) => Some(conn.addr().clone()),
                (None, Some(slot)) => cluster.node_for(&Target::Slot(slot)),
                (None, None) => cluster.node_for(&Target::AnyMaster),
            };
            let Some(node) = node else {
                return reply::error(&cluster.unreachable_error());
            };
            let conn = match ensure(cluster, &mut own, &node, protocol).await {
                Ok(conn) => conn,
                Err(error) => return error,
            };
            match conn.call(&payload, replies).await {
                Ok(mut all) => all
                    .pop()
                    .map(|r| r.bytes)
                    .unwrap_or_else(|| reply::error("ERR respgate: no reply to EXEC")),
                Err(error) => {
                    *own = None;
                    reply::error(&format!("ERR respgate: {error}"))
                }
            }
        }
    }
}

/// Sends one command over the own connection to the node of `target`, following `MOVED`/`ASK`
/// and waiting out `TRYAGAIN`-like errors a few times.
async fn call_routed(
    cluster: &Cluster,
    own: &mut Option<Exclusive>,
    payload: Bytes,
    target: Target,
    protocol: Protocol,
) -> Bytes {
    let mut node = match cluster.node_for(&target) {
        Some(node) => node,
        None => return reply::error(&cluster.unreachable_error()),
    };
    let mut asking = false;
    let mut last = Bytes::new();
    for attempt in 0..MAX_ATTEMPTS {
        let conn = match ensure(cluster, own, &node, protocol).await {
            Ok(conn) => conn,
            Err(error) => return error,
        };
        let result = if asking {
            let mut both = BytesMut::with_capacity(ASKING.len() + payload.len());
            both.put_slice(ASKING);
            both.put_slice(&payload);
            conn.call(&both, 2).await
        } else {
            conn.call(&payload, 1).await
        };
        let reply = match result {
            Ok(mut replies) => match replies.pop() {
                Some(reply) => reply,
                None => return reply::error("ERR respgate: no reply"),
            },
            Err(error) => {
                *own = None;
                return reply::error(&format!("ERR respgate: {error}"));
            }
        };
        let Some(text) = reply.error_text() else {
            return reply.bytes;
        };
        if let Some(redirect) = Redirect::parse(text) {
            let to = redirect.addr().resolve_against(&node);
            asking = matches!(redirect, Redirect::Ask { .. });
            if let Redirect::Moved { slot, .. } = redirect {
                cluster.moved(slot, &to);
            }
            node = to;
            continue;
        }
        let code = text.split(|&b| b == b' ').next().unwrap_or_default();
        if !crate::cluster::RETRYABLE_ERRORS.contains(&code) {
            return reply.bytes;
        }
        last = reply.bytes;
        cluster.request_refresh();
        tokio::time::sleep(Duration::from_millis(20 << attempt.min(4))).await;
        if let Some(now) = cluster.node_for(&target) {
            node = now;
        }
    }
    last
}

/// The own connection, reopened when it is to another node or speaks another protocol.
async fn ensure<'a>(
    cluster: &Cluster,
    own: &'a mut Option<Exclusive>,
    node: &NodeAddr,
    protocol: Protocol,
) -> Result<&'a mut Exclusive, Bytes> {
    let reusable = own
        .as_ref()
        .is_some_and(|c| c.addr() == node && c.protocol() == protocol);
    if !reusable {
        *own = None;
        let conn = Exclusive::open(node, protocol, cluster.conn_settings())
            .await
            .map_err(|error| reply::error(&format!("ERR respgate: {error}")))?;
        *own = Some(conn);
    }
    own.as_mut()
        .ok_or_else(|| reply::error("ERR respgate: no connection"))
}
