//! Work on the client's own backend connection: blocking commands, `WATCH`, and `MULTI` ...
//! `EXEC`. The session runs these one at a time, after every earlier reply and before any later
//! request, so the connection is never shared and the client's order holds.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::Mutex;

use super::blocked::{Blocked, Unblock};
use crate::acl::User;
use crate::backend::{BackendError, NodeAddr, NodeConn, NodeLogin, Reply};
use crate::clients::ClientHandle;
use crate::cluster::{Cluster, Next, Redirect, ResolveAgainst, Target};
use crate::command::Access;
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
    /// Who it was to act as: the password of the client's user's twin on the node, `None`
    /// for the backend's own user. A connection is kept only for the same.
    wanted: Option<String>,
    /// Why the node could not log it in as the twin, when it was asked to and could not: it
    /// then acts as the backend's own user, and runs nothing that needs the user's rights.
    refused: Option<BackendError>,
}

impl OwnConn {
    /// An error when what runs here must run with the client's user's rights and the node
    /// could not give them.
    fn lacks_user(&self, needs_user: bool) -> Result<(), BackendError> {
        match &self.refused {
            Some(refused) if needs_user => Err(refused.clone()),
            _ => Ok(()),
        }
    }
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
    /// A restricted user's script or function (`EVAL`, `EVALSHA`, `FCALL`, ...), run as the
    /// user's twin on the node, which holds every call the script makes to the user's rights.
    Script {
        /// The backend of its keys.
        backend: BackendId,
        /// The command.
        payload: Bytes,
        /// Where its keys live.
        target: Target,
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
    /// The transaction holds something only the node can hold to the user's rights (a
    /// restricted user's script, `SORT ... GET`): it runs only as the user's twin.
    pub(super) needs_user: bool,
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
/// `client` is the client's entry, marked blocked while a blocking command waits. `user` is
/// the client's user: a restricted user's own connection acts as its twin on the nodes.
pub async fn run(
    proxy: ProxyRef<'_>,
    own: OwnConnection,
    op: OwnOp,
    protocol: Protocol,
    db: u8,
    client: Arc<ClientHandle>,
    user: Option<Arc<User>>,
) -> Bytes {
    let mut own = own.lock().await;
    let own = &mut *own;
    let backend = match &op {
        OwnOp::Blocking { backend, .. } | OwnOp::Script { backend, .. } => *backend,
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
    // Keys reach a backend whose route strips their prefix without it, where the user's
    // patterns would not match them: there the connection stays the backend's own user, and
    // the user's scripts are refused.
    let user = user.as_deref().and_then(User::node_user);
    let commands = cluster.commands();
    let known = |name: &str| {
        commands
            .as_ref()
            .is_none_or(|table| table.get(name.as_bytes()).is_some())
    };
    let login = user.map(|user| match proxy.routes().strips_into(backend) {
        false => Ok(user.login(cluster.conn_settings().password.as_deref(), known)),
        true => Err(BackendError::Refused {
            addr: NodeAddr::new("(any)"),
            reason: format!(
                "keys reach backend {backend:?} through a route that strips their prefix, so the twin of user {:?} that its scripts run as cannot be held to its key patterns there; see the README, \"Users and permissions\"",
                user.user()
            ),
        }),
    });
    let as_user = AsUser {
        login: login.as_ref(),
        protocol,
        db,
    };
    run_on(cluster, own, op, as_user, Some(blocked)).await
}

/// Who the own connection acts as, and how it is set up.
#[derive(Clone, Copy)]
struct AsUser<'a> {
    /// The client's user's twin on the nodes, or why it cannot be had on this backend; `None`
    /// for an unrestricted user, who needs none.
    login: Option<&'a Result<NodeLogin, BackendError>>,
    /// The client's protocol.
    protocol: Protocol,
    /// The client's database.
    db: u8,
}

/// Runs `op` on the own connection `own`, on `cluster`, the backend the operation's keys are on.
async fn run_on(
    cluster: &Cluster,
    own: &mut Option<OwnConn>,
    op: OwnOp,
    as_user: AsUser<'_>,
    blocked: Option<Blocked<'_>>,
) -> Bytes {
    match op {
        OwnOp::Release { reply } => {
            *own = None;
            reply
        }
        OwnOp::Blocking {
            payload, target, ..
        } => call_routed(cluster, own, payload, target, as_user, blocked, false).await,
        OwnOp::Script {
            payload, target, ..
        } => call_routed(cluster, own, payload, target, as_user, None, true).await,
        OwnOp::Watch { payload, place } => {
            let target = Target::Slot(place.slot);
            call_routed(cluster, own, payload, target, as_user, None, false).await
        }
        OwnOp::Txn(batch) => run_txn(cluster, own, batch, as_user).await,
    }
}

/// Sends a transaction batch and builds the client's replies from the node's.
async fn run_txn(
    cluster: &Cluster,
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
    cluster: &Cluster,
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
/// `needs_user`: it runs only as the client's user's twin (a restricted user's script).
async fn call_routed(
    cluster: &Cluster,
    own: &mut Option<OwnConn>,
    payload: Bytes,
    target: Target,
    as_user: AsUser<'_>,
    blocked: Option<Blocked<'_>>,
    needs_user: bool,
) -> Bytes {
    let mut attempts = cluster.attempts();
    let mut next: Option<(NodeAddr, bool)> = None;
    let mut script_loaded = false;
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
            needs_user,
        };
        let outcome = attempt.run(cluster, own, &node, as_user).await;
        if outcome.is_err() {
            // Whatever state the connection had is unknown now.
            *own = None;
        }
        if needs_user
            && !script_loaded
            && outcome.as_ref().is_ok_and(|reply| {
                reply
                    .error_text()
                    .is_some_and(|text| text.starts_with(b"NOSCRIPT"))
            })
            && load_script(cluster, &node, &payload, as_user).await
        {
            // The node lacked a script the proxy has seen (a promoted replica): loaded there
            // by the backend's user (the twin may not load scripts), the call goes again.
            script_loaded = true;
            next = Some((node, asking));
            continue;
        }
        match cluster.judge(&mut attempts, outcome, Access::Write, &node) {
            Next::Reply(reply) => return reply.bytes,
            Next::Fail(error) => return error,
            Next::Redirect { to, asking } => next = Some((to, asking)),
            Next::Retry(delay) => tokio::time::sleep(delay).await,
        }
    }
}

/// Loads on `node`, on its shared connection, the script an `EVALSHA` payload names, if the
/// proxy has seen it; whether it is loaded now.
async fn load_script(
    cluster: &Cluster,
    node: &NodeAddr,
    payload: &Bytes,
    as_user: AsUser<'_>,
) -> bool {
    let Some(load) = cluster.scripts.load_command_for(payload) else {
        return false;
    };
    let pool = cluster.pool(node);
    let limit = cluster.conn_settings().request_timeout;
    let loaded = tokio::time::timeout(
        limit,
        pool.send(as_user.protocol, 0, load, false, as_user.db),
    );
    matches!(loaded.await, Ok(Ok(reply)) if reply.error_text().is_none())
}

/// One attempt of a command on the own connection.
struct Attempt<'a> {
    payload: &'a [u8],
    /// `ASKING` first.
    asking: bool,
    /// A blocking command's client, marked blocked from when the command is written until its
    /// reply.
    blocked: Option<Blocked<'a>>,
    /// It runs only as the client's user's twin.
    needs_user: bool,
}

impl Attempt<'_> {
    async fn run(
        &self,
        cluster: &Cluster,
        own: &mut Option<OwnConn>,
        node: &NodeAddr,
        as_user: AsUser<'_>,
    ) -> Result<Reply, BackendError> {
        let own = ensure(cluster, own, node, as_user).await?;
        own.lacks_user(self.needs_user)?;
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
            // A script or a WATCH answers within the request timeout, as on a shared connection;
            // only a blocking command may wait as long as it was told to.
            let limit = cluster.conn_settings().request_timeout;
            return match tokio::time::timeout(limit, next_reply(&mut own.conn)).await {
                Ok(reply) => reply,
                Err(_) => Err(BackendError::Timeout {
                    addr: node.clone(),
                    timeout_ms: limit.as_millis() as u64,
                }),
            };
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

/// The own connection, reopened when it is to another node, speaks another protocol, is on
/// another database or acts as another user.
async fn ensure<'a>(
    cluster: &Cluster,
    own: &'a mut Option<OwnConn>,
    node: &NodeAddr,
    as_user: AsUser<'_>,
) -> Result<&'a mut OwnConn, BackendError> {
    let AsUser {
        login,
        protocol,
        db,
    } = as_user;
    let wanted = login.map(|login| match login {
        Ok(login) => login.password.as_str(),
        Err(_) => "",
    });
    let reusable = own.as_ref().is_some_and(|c| {
        c.conn.addr() == node
            && c.conn.protocol() == protocol
            && c.conn.db() == db
            && c.wanted.as_deref() == wanted
    });
    if !reusable {
        *own = None;
        let settings = cluster.conn_settings();
        let mut conn = NodeConn::open(node, protocol, settings)
            .await?
            .held_in(&cluster.stats.own_connections);
        if db != 0 {
            conn.select(db).await?;
        }
        let mut node_client_id = None;
        let mut refused = None;
        match login {
            None => {}
            Some(Err(cannot)) => refused = Some(cannot.clone()),
            Some(Ok(login)) => {
                // Asked while the connection is still the backend's user: the twin may not
                // run CLIENT.
                let limit = settings.connect_timeout;
                let set_up = async {
                    let id = conn.call(CLIENT_ID, 1).await?;
                    node_client_id = id.first().and_then(integer);
                    conn.log_in_as(login).await
                };
                match tokio::time::timeout(limit, set_up).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error @ BackendError::Refused { .. })) => refused = Some(error),
                    Ok(Err(error)) => return Err(error),
                    Err(_) => {
                        return Err(BackendError::Unreachable {
                            addr: node.clone(),
                            reason: format!(
                                "no login as the client's user within {} ms",
                                limit.as_millis()
                            ),
                        });
                    }
                }
            }
        }
        *own = Some(OwnConn {
            conn,
            node_client_id,
            wanted: wanted.map(str::to_string),
            refused,
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
    use crate::config::ClusterConfig;
    use crate::protocol::Request;
    use crate::slot::Slot;
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
        let as_user = AsUser {
            login: None,
            protocol: Protocol::Resp2,
            db: 0,
        };
        run_on(&cluster, &mut None, op, as_user, None).await
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

    /// `op` on slot 5 served by `A` of `nodes`, as the twin `login`.
    async fn as_twin(
        nodes: &std::sync::Arc<ScriptedNodes>,
        op: impl Fn(Bytes, Target) -> OwnOp,
        command: &[&str],
        login: &Result<NodeLogin, BackendError>,
    ) -> String {
        let cluster = Cluster::with_connector(
            "test",
            ClusterConfig::default(),
            WorkerSet::inline(),
            nodes.clone(),
        );
        cluster.serve_all_slots_from(&NodeAddr::new(A));
        let payload =
            Request::from_args(command.iter().map(|a| Bytes::from(a.to_string())).collect()).raw;
        let as_user = AsUser {
            login: Some(login),
            protocol: Protocol::Resp2,
            db: 0,
        };
        let op = op(payload, Target::Slot(Slot::new(5).unwrap()));
        let got = run_on(&cluster, &mut None, op, as_user, None).await;
        String::from_utf8_lossy(&got).into_owned()
    }

    fn script(payload: Bytes, target: Target) -> OwnOp {
        OwnOp::Script {
            backend: BackendId(0),
            payload,
            target,
        }
    }

    fn twin() -> NodeLogin {
        NodeLogin {
            user: "respgate:app".into(),
            password: "derived".into(),
            setuser: ["ACL", "SETUSER", "respgate:app", "reset", "on", "~app:*"]
                .map(String::from)
                .to_vec(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_restricted_users_script_runs_as_its_twin_made_on_a_node_that_lacks_it() {
        let nodes = ScriptedNodes::new();
        nodes.node(A, |args, seen| match args.first().map(String::as_str) {
            Some("CLIENT") => Act::Reply(b":7\r\n".to_vec()),
            // The node does not know the twin yet: the first login fails.
            Some("AUTH") if seen == 1 => {
                Act::Reply(b"-WRONGPASS invalid username-password pair\r\n".to_vec())
            }
            _ => Act::Reply(b"+OK\r\n".to_vec()),
        });
        let mut login = twin();
        let got = as_twin(
            &nodes,
            script,
            &["EVAL", "return 1", "0"],
            &Ok(login.clone()),
        )
        .await;
        assert_eq!(got, "+OK\r\n");
        assert_eq!(
            nodes.received(A),
            [
                "CLIENT ID",
                "AUTH respgate:app derived",
                "ACL SETUSER respgate:app reset on ~app:*",
                "AUTH respgate:app derived",
                "EVAL return 1 0"
            ]
        );
        // A node that knows it: one login, no SETUSER.
        let nodes = ScriptedNodes::new();
        nodes.node(A, |_, _| Act::Reply(b"+OK\r\n".to_vec()));
        login.password = "known".into();
        as_twin(&nodes, script, &["FCALL", "f", "0"], &Ok(login)).await;
        assert_eq!(
            nodes.received(A),
            ["CLIENT ID", "AUTH respgate:app known", "FCALL f 0"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_that_cannot_hold_the_twin_refuses_its_scripts_and_serves_the_rest() {
        let nodes = ScriptedNodes::new();
        nodes.node(A, |args, _| match args.first().map(String::as_str) {
            Some("CLIENT") => Act::Reply(b":7\r\n".to_vec()),
            Some("AUTH") => Act::Reply(b"-WRONGPASS invalid username-password pair\r\n".to_vec()),
            Some("ACL") => Act::Reply(
                b"-NOPERM this user has no permissions to run the 'acl|setuser' command\r\n"
                    .to_vec(),
            ),
            _ => Act::Reply(b"*2\r\n$1\r\nq\r\n$1\r\nx\r\n".to_vec()),
        });
        let login = Ok(twin());
        let got = as_twin(&nodes, script, &["EVAL", "return 1", "0"], &login).await;
        assert!(
            got.starts_with("-ERR respgate: backend 10.0.0.1:6379 refused the connection's setup: it cannot hold the user \"respgate:app\"")
                && got.contains("ACL SETUSER: NOPERM"),
            "{got}"
        );
        assert!(!nodes.received(A).iter().any(|c| c.starts_with("EVAL")));
        let blocking = |payload, target| OwnOp::Blocking {
            backend: BackendId(0),
            payload,
            target,
        };
        let got = as_twin(&nodes, blocking, &["BLPOP", "q", "0"], &login).await;
        assert_eq!(got, "*2\r\n$1\r\nq\r\n$1\r\nx\r\n");
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
