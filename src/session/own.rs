//! Work on the client's own backend connection: blocking commands, `WATCH`, and `MULTI` ...
//! `EXEC`. The session runs these one at a time, after every earlier reply and before any later
//! request, so the connection is never shared and the client's order holds.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::Mutex;

use crate::backend::{BackendError, NodeAddr, NodeConn, Reply};
use crate::cluster::{Access, Cluster, Next, Target};
use crate::keyspace::{BackendId, Place};
use crate::protocol::{Protocol, reply};
use crate::proxy::Proxy;

/// `ASKING` in RESP.
const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";

/// The client's own connection, if it has one open.
pub type OwnConnection = Arc<Mutex<Option<NodeConn>>>;

/// One operation on the client's own connection.
#[derive(Debug)]
pub enum OwnOp {
    /// A blocking command: it may hold the connection as long as it was told to wait.
    Blocking {
        /// The backend of its keys.
        backend: BackendId,
        /// The command.
        payload: Bytes,
        /// Where its keys live.
        target: Target,
    },
    /// `WATCH` of keys in `place`: the watch lives on the connection until `EXEC`/`UNWATCH`.
    Watch {
        /// The command.
        payload: Bytes,
        /// The keys' backend and slot.
        place: Place,
    },
    /// `MULTI`, the queued commands and `EXEC` in one write; the client gets `EXEC`'s reply.
    Exec {
        /// `MULTI` + commands + `EXEC`.
        payload: Bytes,
        /// Number of replies to read (commands + 2).
        replies: usize,
        /// Where the transaction runs; `None` when it touches no key.
        place: Option<Place>,
    },
    /// Close the connection (`UNWATCH`, `DISCARD`): Redis forgets its watches with it.
    Release {
        /// The reply for the client.
        reply: Bytes,
    },
}

/// Runs `op` on the client's own connection, opening one to the right node when needed.
pub async fn run(
    proxy: &Proxy,
    own: OwnConnection,
    op: OwnOp,
    protocol: Protocol,
    db: u8,
) -> Bytes {
    let mut own = own.lock().await;
    let own = &mut *own;
    let backend = match &op {
        OwnOp::Blocking { backend, .. } => *backend,
        OwnOp::Watch { place, .. } => place.backend,
        OwnOp::Exec { place, .. } => place.map_or(proxy.routes().default_backend(), |p| p.backend),
        OwnOp::Release { .. } => proxy.routes().default_backend(),
    };
    let Some(cluster) = proxy.backend(backend) else {
        return reply::error("ERR respgate: no backend configured");
    };
    run_on(cluster, own, op, protocol, db).await
}

/// Runs `op` on the own connection `own`, on `cluster`, the backend the operation's keys are on.
async fn run_on(
    cluster: &Cluster,
    own: &mut Option<NodeConn>,
    op: OwnOp,
    protocol: Protocol,
    db: u8,
) -> Bytes {
    match op {
        OwnOp::Release { reply } => {
            *own = None;
            reply
        }
        OwnOp::Blocking {
            payload, target, ..
        } => call_routed(cluster, own, payload, target, protocol, db).await,
        OwnOp::Watch { payload, place } => {
            call_routed(
                cluster,
                own,
                payload,
                Target::Slot(place.slot),
                protocol,
                db,
            )
            .await
        }
        OwnOp::Exec {
            payload,
            replies,
            place,
        } => {
            // A WATCH already chose the node; otherwise the transaction's slot does.
            let node = match (own.as_ref(), place) {
                (Some(conn), _) => Some(conn.addr().clone()),
                (None, Some(place)) => cluster.node_for(&Target::Slot(place.slot)),
                (None, None) => cluster.node_for(&Target::AnyMaster),
            };
            let Some(node) = node else {
                return reply::error(&cluster.unreachable_error());
            };
            let called = match ensure(cluster, own, &node, protocol, db).await {
                Ok(conn) => conn.call(&payload, replies).await,
                Err(error) => Err(error),
            };
            match called {
                Ok(mut all) => all
                    .pop()
                    .map(|r| r.bytes)
                    .unwrap_or_else(|| reply::error("ERR respgate: no reply to EXEC")),
                Err(error) => {
                    *own = None;
                    cluster.backend_error(&error)
                }
            }
        }
    }
}

/// Sends one command over the own connection to the node of `target`, following what the
/// cluster's retry engine says after each attempt (redirects, waits for a failover), within
/// the cluster's retry budget. A blocking command is a write: once sent, it is never resent.
async fn call_routed(
    cluster: &Cluster,
    own: &mut Option<NodeConn>,
    payload: Bytes,
    target: Target,
    protocol: Protocol,
    db: u8,
) -> Bytes {
    let mut attempts = cluster.attempts();
    let mut next: Option<(NodeAddr, bool)> = None;
    loop {
        let (node, asking) = match next.take() {
            Some(redirected) => redirected,
            None => match cluster.node_for(&target) {
                Some(node) => (node, false),
                None => match attempts.next_delay() {
                    Some(delay) => {
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                    None => return reply::error(&cluster.unreachable_error()),
                },
            },
        };
        if cluster.writes_held() {
            // A failover is under way; see `Cluster::hold_writes`.
            match attempts.next_delay() {
                Some(delay) => {
                    tokio::time::sleep(delay).await;
                    next = Some((node, asking));
                    continue;
                }
                None => return reply::error(&cluster.failing_over_error()),
            }
        }
        let outcome = attempt(cluster, own, &node, &payload, asking, protocol, db).await;
        if outcome.is_err() {
            // Whatever state the connection had is unknown now.
            *own = None;
        }
        match cluster.judge(&mut attempts, outcome, Access::Write, &node) {
            Next::Reply(reply) => return reply.bytes,
            Next::Fail(error) => return error,
            Next::Redirect { to, asking } => next = Some((to, asking)),
            Next::Retry(delay) => tokio::time::sleep(delay).await,
        }
    }
}

/// One attempt of `payload` on the own connection to `node`, `ASKING` first when `asking`.
async fn attempt(
    cluster: &Cluster,
    own: &mut Option<NodeConn>,
    node: &NodeAddr,
    payload: &[u8],
    asking: bool,
    protocol: Protocol,
    db: u8,
) -> Result<Reply, BackendError> {
    let conn = ensure(cluster, own, node, protocol, db).await?;
    let mut replies = if asking {
        let mut both = BytesMut::with_capacity(ASKING.len() + payload.len());
        both.put_slice(ASKING);
        both.put_slice(payload);
        conn.call(&both, 2).await?
    } else {
        conn.call(payload, 1).await?
    };
    replies
        .pop()
        .ok_or_else(|| BackendError::Lost { addr: node.clone() })
}

/// The own connection, reopened when it is to another node or speaks another protocol.
async fn ensure<'a>(
    cluster: &Cluster,
    own: &'a mut Option<NodeConn>,
    node: &NodeAddr,
    protocol: Protocol,
    db: u8,
) -> Result<&'a mut NodeConn, BackendError> {
    let reusable = own
        .as_ref()
        .is_some_and(|c| c.addr() == node && c.protocol() == protocol && c.db() == db);
    if !reusable {
        *own = None;
        let mut conn = NodeConn::open(node, protocol, cluster.conn_settings())
            .await?
            .held_in(&cluster.stats.own_connections);
        if db != 0 {
            conn.select(db).await?;
        }
        *own = Some(conn);
    }
    own.as_mut()
        .ok_or_else(|| BackendError::Lost { addr: node.clone() })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::backend::scripted::{Act, ScriptedNodes};
    use crate::cluster::Slot;
    use crate::config::ClusterConfig;
    use crate::protocol::Request;
    use crate::workers::WorkerSet;

    const A: &str = "10.0.0.1:6379";
    const B: &str = "10.0.0.2:6379";

    /// `BLPOP q 0` on a client's own connection, slot 5 served by `A` of `nodes`.
    async fn blpop_on_slot_5(nodes: &std::sync::Arc<ScriptedNodes>) -> Bytes {
        let cluster = Cluster::with_connector(
            "test",
            ClusterConfig::default(),
            WorkerSet::inline(),
            nodes.clone(),
        );
        cluster.serve_all_slots_from(&NodeAddr::new(A));
        let payload = Request::from_args(vec!["BLPOP".into(), "q".into(), "0".into()]).raw;
        let op = OwnOp::Blocking {
            backend: BackendId(0),
            payload,
            target: Target::Slot(Slot::new(5).unwrap()),
        };
        run_on(&cluster, &mut None, op, Protocol::Resp2, 0).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_blocking_command_follows_moved_and_tryagain_like_any_other() {
        let nodes = ScriptedNodes::new();
        nodes.node(A, |_, _| {
            Act::Reply(format!("-MOVED 5 {B}\r\n").into_bytes())
        });
        nodes.node(B, |_, seen| match seen {
            0 => Act::Reply(b"-TRYAGAIN slot migrating\r\n".to_vec()),
            _ => Act::Reply(b"*2\r\n$1\r\nq\r\n$1\r\nx\r\n".to_vec()),
        });
        let got = blpop_on_slot_5(&nodes).await;
        assert_eq!(&got[..], b"*2\r\n$1\r\nq\r\n$1\r\nx\r\n");
        assert_eq!(nodes.received(A), ["BLPOP q 0"]);
        assert_eq!(nodes.received(B), ["BLPOP q 0", "BLPOP q 0"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_blocking_command_whose_connection_drops_is_not_resent() {
        let nodes = ScriptedNodes::new();
        nodes.node(A, |_, _| Act::Close);
        let got = blpop_on_slot_5(&nodes).await;
        assert!(String::from_utf8_lossy(&got).contains("may or may not have run"));
        assert_eq!(nodes.received(A), ["BLPOP q 0"]);
    }
}
