//! Work on the client's own backend connection: blocking commands, `WATCH`, and `MULTI` ...
//! `EXEC`. The session runs these one at a time, after every earlier reply and before any later
//! request, so the connection is never shared and the client's order holds.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::Mutex;

use super::blocked::{Blocked, Unblock};
use crate::acl::User;
use crate::backend::{BackendError, NodeAddr, NodeConn, NodeLogin, NodePool, Reply};
use crate::clients::ClientHandle;
use crate::cluster::{Backend, Carrier, Course, Target};
use crate::command::Access;
use crate::keyspace::{BackendId, Place};
use crate::protocol::{Protocol, ReplyKind, integer_value, reply};
use crate::proxy::ProxyRef;

/// `ASKING` in RESP.
const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";
/// `CLIENT ID` in RESP: asked before the first blocking command on a connection, in the same
/// write, so `CLIENT UNBLOCK` can name the connection to its node at no extra round trip.
const CLIENT_ID: &[u8] = b"*2\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n";
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
    cluster: &Backend,
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

/// Sends one command over the own connection to the node of `target`, in the backend's one
/// attempt loop (redirects, waits for a failover, within the retry budget) with the own
/// connection as its carrier. A blocking command is a write: once sent, it is never resent.
/// `needs_user`: it runs only as the client's user's twin (a restricted user's script).
async fn call_routed(
    cluster: &Backend,
    own: &mut Option<OwnConn>,
    payload: Bytes,
    target: Target,
    as_user: AsUser<'_>,
    blocked: Option<Blocked<'_>>,
    needs_user: bool,
) -> Bytes {
    let course = Course {
        payload: &payload,
        target: &target,
        // Own connections go to masters, and what they carry is never sent twice.
        access: Access::Write,
        affinity: 0,
        to_replica: false,
        heal: needs_user,
        attempts: cluster.attempts(),
    };
    let mut carrier = OwnCarrier {
        cluster,
        own,
        as_user,
        attempt: Attempt {
            payload: &payload,
            asking: false,
            blocked,
            needs_user,
        },
    };
    cluster.attempt_loop(None, course, &mut carrier).await.0
}

/// A client's own connection as a [`Carrier`].
struct OwnCarrier<'a, 'o> {
    cluster: &'a Backend,
    own: &'o mut Option<OwnConn>,
    as_user: AsUser<'a>,
    attempt: Attempt<'a>,
}

impl Carrier for OwnCarrier<'_, '_> {
    async fn send(&mut self, pool: &Arc<NodePool>, asking: bool) -> Result<Reply, BackendError> {
        self.attempt.asking = asking;
        let outcome = self
            .attempt
            .run(self.cluster, self.own, pool.addr(), self.as_user)
            .await;
        if outcome.is_err() {
            // Whatever state the connection had is unknown now.
            *self.own = None;
        }
        outcome
    }

    /// The node lacked a script the proxy has seen (a promoted replica): loaded there by the
    /// backend's user (the twin may not load scripts).
    async fn load_script(&mut self, pool: &Arc<NodePool>, load: Bytes) -> bool {
        load_script(self.cluster, pool.addr(), load, self.as_user).await
    }
}

/// Runs `load` (the `SCRIPT LOAD` the judge chose) on `node`, on its shared connection;
/// whether the script is loaded now.
async fn load_script(cluster: &Backend, node: &NodeAddr, load: Bytes, as_user: AsUser<'_>) -> bool {
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
        cluster: &Backend,
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
            own.node_client_id = integer_value(&id.bytes);
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

/// The own connection, reopened when it is to another node, speaks another protocol, is on
/// another database or acts as another user.
async fn ensure<'a>(
    cluster: &Backend,
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
        // The backend's user on database 0, the common case, takes the node's spare (written
        // to at once); another user or database opens its own.
        let opened = if db == 0 && login.is_none() {
            cluster.pool(node).own_connection(protocol).await
        } else {
            NodeConn::open(node, protocol, settings).await
        };
        let mut conn = opened?.held_in(&cluster.stats.own_connections);
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
                    node_client_id = id.first().and_then(|id| integer_value(&id.bytes));
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

mod txn;
use txn::run_txn;
pub use txn::{Part, TxnBatch};

#[cfg(test)]
mod tests;
