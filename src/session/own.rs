//! Work on the client's own backend connection: blocking commands, `WATCH`, and `MULTI` ...
//! `EXEC`. The session runs these one at a time, after every earlier reply and before any later
//! request, so the connection is never shared and the client's order holds.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::Mutex;

use super::blocked::{Blocked, Unblock};
use crate::backend::{BackendError, NodeAddr, NodeConn, Reply};
use crate::clients::ClientHandle;
use crate::cluster::{Access, Cluster, Next, Redirect, ResolveAgainst, Target};
use crate::keyspace::{BackendId, Place};
use crate::protocol::{Protocol, ReplyKind, reply};
use crate::proxy::ProxyRef;

/// `ASKING` in RESP.
const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";
/// `CLIENT ID` in RESP: asked before the first blocking command on a connection, in the same
/// write, so `CLIENT UNBLOCK` can name the connection to its node at no extra round trip.
const CLIENT_ID: &[u8] = b"*2\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n";
/// Redis's reply to `EXEC` once the transaction is gone.
const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";

/// A client's own connection to a node, and what the node said of it.
#[derive(Debug)]
pub struct OwnConn {
    conn: NodeConn,
    /// The node's `CLIENT ID` for this connection, once asked.
    node_client_id: Option<i64>,
}

/// The client's own connection, if it has one open.
pub type OwnConnection = Arc<Mutex<Option<OwnConn>>>;

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
    /// Commands of a transaction for its node, possibly ending with `EXEC` or `DISCARD`.
    Txn(TxnBatch),
    /// Close the connection (`UNWATCH`, `DISCARD`): Redis forgets its watches with it.
    Release {
        /// The reply for the client.
        reply: Bytes,
    },
}

/// Requests of an open transaction sent to its node in one write: the node queues each (or
/// refuses it, `BUSY` included) as it would for a client of its own, and `EXEC` runs them.
/// Consecutive requests the client pipelined join one batch, so a pipelined transaction costs
/// one round trip.
#[derive(Debug)]
pub struct TxnBatch {
    /// The transaction's backend and slot; `None` when it touches no key.
    pub(super) place: Option<Place>,
    /// Whether a `WATCH` chose the node: the transaction must run on the connection that holds
    /// the watch, or not at all.
    pub(super) watched: bool,
    /// Whether the batch starts with `MULTI`; otherwise one is open on the own connection.
    pub(super) opens: bool,
    /// What is written to the node.
    pub(super) payload: BytesMut,
    /// The client's replies, in order.
    pub(super) parts: Vec<Part>,
    /// Close the own connection afterwards (`DISCARD`, or `EXEC` of a transaction that the
    /// proxy already knows is aborted): the node forgets the transaction and the watches.
    pub(super) release: bool,
}

/// One reply of a [`TxnBatch`].
#[derive(Debug)]
pub enum Part {
    /// A node reply the client does not see: `MULTI`'s, or a command's the proxy answered
    /// `QUEUED` itself while the transaction's node was not known yet.
    Skip,
    /// A reply the proxy made.
    Local(Bytes),
    /// The node's reply to a queued command.
    Queued,
    /// The node's reply to `EXEC`.
    Exec,
}

impl TxnBatch {
    /// Whether the transaction ends with this batch (`EXEC` or `DISCARD`).
    pub fn ended(&self) -> bool {
        self.release || self.parts.iter().any(|p| matches!(p, Part::Exec))
    }
}

/// Runs `op` on the client's own connection, opening one to the right node when needed;
/// `client` is the client's entry, marked blocked while a blocking command waits.
pub async fn run(
    proxy: ProxyRef<'_>,
    own: OwnConnection,
    op: OwnOp,
    protocol: Protocol,
    db: u8,
    client: Arc<ClientHandle>,
) -> Bytes {
    let mut own = own.lock().await;
    let own = &mut *own;
    let backend = match &op {
        OwnOp::Blocking { backend, .. } => *backend,
        OwnOp::Watch { place, .. } => place.backend,
        OwnOp::Txn(batch) => batch
            .place
            .map_or(proxy.routes().default_backend(), |p| p.backend),
        OwnOp::Release { .. } => proxy.routes().default_backend(),
    };
    let Some(cluster) = proxy.backend(backend) else {
        return reply::error("ERR respgate: no backend configured");
    };
    let blocked = Blocked {
        client: &client,
        backend,
    };
    run_on(cluster, own, op, protocol, db, Some(blocked)).await
}

/// Runs `op` on the own connection `own`, on `cluster`, the backend the operation's keys are on.
async fn run_on(
    cluster: &Cluster,
    own: &mut Option<OwnConn>,
    op: OwnOp,
    protocol: Protocol,
    db: u8,
    blocked: Option<Blocked<'_>>,
) -> Bytes {
    match op {
        OwnOp::Release { reply } => {
            *own = None;
            reply
        }
        OwnOp::Blocking {
            payload, target, ..
        } => call_routed(cluster, own, payload, target, protocol, db, blocked).await,
        OwnOp::Watch { payload, place } => {
            let target = Target::Slot(place.slot);
            call_routed(cluster, own, payload, target, protocol, db, None).await
        }
        OwnOp::Txn(batch) => run_txn(cluster, own, batch, protocol, db).await,
    }
}

/// Sends a transaction batch and builds the client's replies from the node's.
async fn run_txn(
    cluster: &Cluster,
    own: &mut Option<OwnConn>,
    batch: TxnBatch,
    protocol: Protocol,
    db: u8,
) -> Bytes {
    let expected = batch
        .parts
        .iter()
        .filter(|p| !matches!(p, Part::Local(_)))
        .count();
    let called = match txn_conn(cluster, own, &batch, protocol, db).await {
        Ok(conn) => {
            let node = conn.conn.addr().clone();
            // Queuing is quick and EXEC runs what a shared connection would run: the request
            // timeout bounds both.
            let limit = cluster.conn_settings().request_timeout;
            let call = tokio::time::timeout(limit, conn.conn.call(&batch.payload, expected));
            match call.await.unwrap_or_else(|_| {
                Err(BackendError::Timeout {
                    addr: node.clone(),
                    timeout_ms: limit.as_millis() as u64,
                })
            }) {
                Ok(replies) => Ok((node, replies)),
                // Written, perhaps run: only the node knows, and the connection is dropped.
                Err(error) => Err((cluster.backend_error(&error), true)),
            }
        }
        Err(unsent) => Err(unsent),
    };
    let (node, replies) = match called {
        Ok(called) => called,
        Err((error, written)) => {
            *own = None;
            return failed(&batch, &error, written);
        }
    };
    if batch.release {
        *own = None;
    }
    let mut out = BytesMut::new();
    let mut replies = replies.into_iter();
    for part in &batch.parts {
        let reply = match part {
            Part::Local(bytes) => {
                out.extend_from_slice(bytes);
                continue;
            }
            Part::Skip | Part::Queued | Part::Exec => replies.next(),
        };
        let Some(reply) = reply else {
            out.extend_from_slice(&reply::error("ERR respgate: the node sent too few replies"));
            continue;
        };
        match part {
            Part::Queued => out.extend_from_slice(&queued_reply(cluster, &node, &reply)),
            Part::Exec => out.extend_from_slice(&reply.bytes),
            Part::Skip | Part::Local(_) => {}
        }
    }
    out.freeze()
}

/// The connection a transaction batch goes on, or why it cannot be sent (and whether anything
/// of it may have run: never, here).
async fn txn_conn<'a>(
    cluster: &Cluster,
    own: &'a mut Option<OwnConn>,
    batch: &TxnBatch,
    protocol: Protocol,
    db: u8,
) -> Result<&'a mut OwnConn, (Bytes, bool)> {
    if !batch.opens || batch.watched {
        // The transaction (or the watch it depends on) lives on this connection, or nowhere.
        return match own.as_mut() {
            Some(conn) => Ok(conn),
            None if batch.opens => Err((reply::error(WATCH_LOST), false)),
            None => Err((reply::error(TXN_LOST), false)),
        };
    }
    let target = batch
        .place
        .map_or(Target::AnyMaster, |p| Target::Slot(p.slot));
    let Some(node) = cluster.node_for(&target) else {
        return Err((reply::error(&cluster.unreachable_error()), false));
    };
    match ensure(cluster, own, &node, protocol, db).await {
        Ok(conn) => Ok(conn),
        Err(error) => Err((cluster.backend_error(&error), false)),
    }
}

/// Why a queued command is answered with an error once the node's transaction is gone.
const TXN_LOST: &str =
    "ERR respgate: the connection holding this transaction was lost; EXEC will abort it";
/// Why a transaction whose watch was lost cannot be opened.
const WATCH_LOST: &str =
    "ERR respgate: the connection holding the WATCH was lost; EXEC will abort the transaction";

/// The client's replies to a batch that failed with `error`: the queued commands get it;
/// `EXEC` gets it too when it was `written` (its fate is unknown) or opened the transaction
/// (nothing ran), and `EXECABORT` when the transaction it would run is gone.
fn failed(batch: &TxnBatch, error: &Bytes, written: bool) -> Bytes {
    let mut out = BytesMut::new();
    for part in &batch.parts {
        match part {
            Part::Skip => {}
            Part::Local(bytes) => out.extend_from_slice(bytes),
            Part::Queued => out.extend_from_slice(error),
            Part::Exec if written || batch.opens => out.extend_from_slice(error),
            Part::Exec => out.extend_from_slice(&reply::error(EXECABORT)),
        }
    }
    out.freeze()
}

/// The client's reply to a command the node was asked to queue: the node's, except that a
/// redirect (the slot moved since the transaction chose its node) becomes an error the
/// client can act on. The node has flagged its transaction, so `EXEC` aborts as in Redis.
fn queued_reply(cluster: &Cluster, node: &NodeAddr, reply: &Reply) -> Bytes {
    let Some(redirect) = reply.error_text().and_then(Redirect::parse) else {
        return reply.bytes.clone();
    };
    let slot = match redirect {
        Redirect::Moved { slot, addr } => {
            cluster.moved(slot, &addr.resolve_against(node));
            slot
        }
        Redirect::Ask { slot, .. } => slot,
    };
    reply::error(&format!(
        "ERR respgate: slot {} moved to another node while the transaction was queued; EXEC will abort it",
        slot.get()
    ))
}

/// Sends one command over the own connection to the node of `target`, following what the
/// cluster's retry engine says after each attempt (redirects, waits for a failover), within
/// the cluster's retry budget. A blocking command is a write: once sent, it is never resent.
async fn call_routed(
    cluster: &Cluster,
    own: &mut Option<OwnConn>,
    payload: Bytes,
    target: Target,
    protocol: Protocol,
    db: u8,
    blocked: Option<Blocked<'_>>,
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
        let attempt = Attempt {
            payload: &payload,
            asking,
            blocked,
        };
        let outcome = attempt.run(cluster, own, &node, protocol, db).await;
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

/// One attempt of a command on the own connection.
struct Attempt<'a> {
    payload: &'a [u8],
    /// `ASKING` first.
    asking: bool,
    /// A blocking command's client, marked blocked from when the command is written until its
    /// reply.
    blocked: Option<Blocked<'a>>,
}

impl Attempt<'_> {
    async fn run(
        &self,
        cluster: &Cluster,
        own: &mut Option<OwnConn>,
        node: &NodeAddr,
        protocol: Protocol,
        db: u8,
    ) -> Result<Reply, BackendError> {
        let own = ensure(cluster, own, node, protocol, db).await?;
        let ask_id = self.blocked.is_some() && own.node_client_id.is_none();
        let mut out = BytesMut::with_capacity(self.payload.len() + 32);
        if ask_id {
            out.put_slice(CLIENT_ID);
        }
        if self.asking {
            out.put_slice(ASKING);
        }
        out.put_slice(self.payload);
        own.conn.write_all(&out).await?;
        if ask_id {
            let id = next_reply(&mut own.conn).await?;
            own.node_client_id = integer(&id);
        }
        if self.asking {
            next_reply(&mut own.conn).await?;
        }
        let Some(blocked) = self.blocked else {
            return next_reply(&mut own.conn).await;
        };
        let _unblock = Unblock(blocked.client);
        let node_client_id = own.node_client_id;
        let reply = next_reply(&mut own.conn);
        let marking = blocked.mark_when_blocked(cluster, node, node_client_id);
        tokio::select! {
            biased;
            reply = reply => reply,
            () = marking => Err(BackendError::Lost { addr: node.clone() }),
        }
    }
}

/// The next reply on `conn`, skipping RESP3 pushes.
async fn next_reply(conn: &mut NodeConn) -> Result<Reply, BackendError> {
    loop {
        let reply = conn.read_reply().await?;
        if reply.kind != ReplyKind::Push {
            return Ok(reply);
        }
    }
}

/// The value of an integer reply.
fn integer(reply: &Reply) -> Option<i64> {
    let digits = reply.bytes.strip_prefix(b":")?.strip_suffix(b"\r\n")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The own connection, reopened when it is to another node or speaks another protocol.
async fn ensure<'a>(
    cluster: &Cluster,
    own: &'a mut Option<OwnConn>,
    node: &NodeAddr,
    protocol: Protocol,
    db: u8,
) -> Result<&'a mut OwnConn, BackendError> {
    let reusable = own.as_ref().is_some_and(|c| {
        c.conn.addr() == node && c.conn.protocol() == protocol && c.conn.db() == db
    });
    if !reusable {
        *own = None;
        let mut conn = NodeConn::open(node, protocol, cluster.conn_settings()).await?;
        if db != 0 {
            conn.select(db).await?;
        }
        *own = Some(OwnConn {
            conn,
            node_client_id: None,
        });
    }
    own.as_mut()
        .ok_or_else(|| BackendError::Lost { addr: node.clone() })
}

#[cfg(test)]
mod txn_tests;

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
        run_on(&cluster, &mut None, op, Protocol::Resp2, 0, None).await
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
