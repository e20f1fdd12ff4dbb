//! A transaction on the client's own connection: its requests sent to the transaction's node in
//! batches, and the client's replies built from the node's.

use bytes::{Bytes, BytesMut};

use super::{AsUser, OwnConn, ensure};
use crate::backend::{BackendError, NodeAddr, Reply};
use crate::cluster::{Backend, Redirect, ResolveAgainst, Target};
use crate::keyspace::Place;
use crate::protocol::reply;

/// Redis's reply to `EXEC` once the transaction is gone.
const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";

/// Requests of an open transaction sent to its node in one write: the node queues each (or
/// refuses it, `BUSY` included) as it would for a client of its own, and `EXEC` runs them.
/// Consecutive requests the client pipelined join one batch, so a pipelined transaction costs
/// one round trip.
#[derive(Debug)]
pub struct TxnBatch {
    /// The transaction's backend and slot; `None` when it touches no key.
    pub(in crate::session) place: Option<Place>,
    /// Whether a `WATCH` chose the node: the transaction must run on the connection that holds
    /// the watch, or not at all.
    pub(in crate::session) watched: bool,
    /// Whether the batch starts with `MULTI`; otherwise one is open on the own connection.
    pub(in crate::session) opens: bool,
    /// What is written to the node.
    pub(in crate::session) payload: BytesMut,
    /// The client's replies, in order.
    pub(in crate::session) parts: Vec<Part>,
    /// Close the own connection afterwards (`DISCARD`, or `EXEC` of a transaction that the
    /// proxy already knows is aborted): the node forgets the transaction and the watches.
    pub(in crate::session) release: bool,
    /// The transaction holds something only the node can hold to the user's rights (a
    /// restricted user's script, `SORT ... GET`): it runs only as the user's twin.
    pub(in crate::session) needs_user: bool,
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

/// Sends a transaction batch and builds the client's replies from the node's.
pub(super) async fn run_txn(
    cluster: &Backend,
    own: &mut Option<OwnConn>,
    batch: TxnBatch,
    as_user: AsUser<'_>,
) -> Bytes {
    let expected = batch
        .parts
        .iter()
        .filter(|p| !matches!(p, Part::Local(_)))
        .count();
    let conn = match txn_conn(cluster, own, &batch, as_user).await {
        Ok(conn) => match conn.lacks_user(batch.needs_user) {
            Ok(()) => Ok(conn),
            // Nothing of this batch is sent, and the node forgets what was queued before.
            Err(refused) => Err((cluster.backend_error(&refused), false)),
        },
        Err(unsent) => Err(unsent),
    };
    let called = match conn {
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
    cluster: &Backend,
    own: &'a mut Option<OwnConn>,
    batch: &TxnBatch,
    as_user: AsUser<'_>,
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
    match ensure(cluster, own, &node, as_user).await {
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
fn queued_reply(cluster: &Backend, node: &NodeAddr, reply: &Reply) -> Bytes {
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
