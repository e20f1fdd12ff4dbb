//! Serving one command on the shared connections: the first attempt, what its outcome comes
//! to, and the attempts after it, in the one attempt loop ([`Backend::attempt_loop`]) with the
//! shared connections as its carrier.

use std::sync::Arc;

use bytes::Bytes;

use super::engine::{Carrier, Course};
use super::{Attempts, Backend, SlotMap, Target, Tried};
use crate::backend::ring::RingTicket;
use crate::backend::{BackendError, NodePool, Reply};
use crate::command::Access;
use crate::config::ReadFrom;
use crate::protocol::Protocol;

/// One command for a backend, as every attempt to send it needs it: the session's forwarded
/// command, a split part, a fan-out leg and the proxy's own requests alike.
#[derive(Debug, Clone)]
pub struct Sending {
    /// The command in RESP.
    pub payload: Bytes,
    /// Where it goes.
    pub target: Target,
    /// Whether it only reads: it may go to a replica, and be sent again when an earlier
    /// sending may have run.
    pub access: Access,
    /// The client's protocol, for the node connection it takes.
    pub protocol: Protocol,
    /// The client's database.
    pub db: u8,
    /// Which of the node's shared connections the client uses, so that its pipelined
    /// commands to one node run in order.
    pub affinity: usize,
}

/// The node an attempt goes to, as [`Backend::first_node`] chose it.
pub struct FirstNode {
    /// Its connections.
    pub pool: Arc<NodePool>,
    /// Whether it is a replica serving a read (per `read_from`).
    pub replica: bool,
}

impl Backend {
    /// Sends `payload` (one command in RESP) to `target` and returns the reply bytes to give
    /// the client: the backend's reply, or an error reply.
    ///
    /// What follows each attempt (a redirect, a retry after a pause, the reply) is decided by
    /// [`Backend::judge`], the one retry engine. Here are only the shared connection's own
    /// concerns: reads on replicas, and `NOSCRIPT` healed by loading the script.
    pub async fn execute(&self, sending: Sending) -> Bytes {
        self.serve(sending).await.0
    }

    /// [`Backend::execute`], also returning the node that answered last (none when no node
    /// was reached): what the slow log names. The pool is the one the request already held,
    /// moved out, so knowing it costs nothing.
    pub async fn serve(&self, sending: Sending) -> (Bytes, Option<Arc<NodePool>>) {
        self.serve_after(None, sending).await
    }

    /// The node an attempt of a command for `target` goes to on `map` (the current slot map)
    /// when no redirect names one: for a read, a healthy replica of the slot's master when
    /// `read_from` allows and `to_replica` says (not once a replica failed the read), else the
    /// node that serves the target. `None` when no node serves it. The one place the node is
    /// chosen: [`Backend::start`], each attempt of [`Backend::serve_after`] and a split's
    /// batches ask it; whether a write may be sent now (see [`Backend::hold_writes`]) is each
    /// path's to wait for.
    #[inline]
    pub fn first_node(
        &self,
        map: &SlotMap,
        target: &Target,
        access: Access,
        affinity: usize,
        to_replica: bool,
    ) -> Option<FirstNode> {
        if to_replica
            && access == Access::Read
            && self.config.read_from != ReadFrom::Master
            && let Target::Slot(slot) = target
            && let Some(replica) = map.replica(*slot, affinity)
        {
            return Some(FirstNode {
                pool: Arc::clone(replica),
                replica: true,
            });
        }
        self.serving(map, target).map(|pool| FirstNode {
            pool,
            replica: false,
        })
    }

    /// Makes the first attempt of a command at once, its reply going to `ticket` of the client's
    /// ring: the session's path for a forwarded command. `None` when the command needs more than
    /// one plain attempt can give (a replica read, a control connection, writes held during a
    /// failover, no route yet, a full queue): the caller gives the ticket up and runs
    /// [`Backend::serve`]. The outcome, once in the ring, goes to [`Backend::settle`].
    pub fn start(&self, sending: &Sending, ticket: RingTicket) -> Option<Arc<NodePool>> {
        let Sending {
            ref payload,
            ref target,
            access,
            protocol,
            db,
            affinity,
        } = *sending;
        if matches!(target, Target::Control(_))
            || access == Access::Read && self.config.read_from != ReadFrom::Master
            || access == Access::Write && self.writes_held()
        {
            return None;
        }
        // A read for a replica took the engine's path above: the ring's goes to masters.
        let pool = self
            .first_node(&self.map.load(), target, access, affinity, false)?
            .pool;
        pool.submit(protocol, affinity, payload.clone(), db, ticket)
            .ok()?;
        Some(pool)
    }

    /// What the first attempt made by [`Backend::start`] on `pool` came to: the reply bytes
    /// when they are final (a reply that is not an error, from the node that still serves the
    /// ticket), else the outcome back, for [`Backend::serve_after`] to judge.
    pub fn settle(
        &self,
        pool: &NodePool,
        target: &Target,
        access: Access,
        outcome: Result<Reply, BackendError>,
    ) -> Result<Bytes, Result<Reply, BackendError>> {
        pool.note(&outcome);
        let tried = Tried {
            target,
            access,
            node: pool.addr(),
            on_replica: false,
            asked: false,
            heal: None,
        };
        match outcome {
            Ok(reply) if self.is_final(tried, &reply, None) => Ok(reply.bytes),
            outcome => Err(outcome),
        }
    }

    /// [`Backend::serve`], after a first attempt on a pool that came to an outcome (`first`),
    /// when there was one: the shared connections as the carrier of the one attempt loop.
    pub async fn serve_after(
        &self,
        first: Option<(Arc<NodePool>, Result<Reply, BackendError>)>,
        sending: Sending,
    ) -> (Bytes, Option<Arc<NodePool>>) {
        // The budget counts from the first attempt, made before this engine was asked: one that
        // timed out began a request timeout ago (any other outcome came at once), so a retry
        // after it still ends within `request_timeout_ms` + `retry_timeout_ms` of the request.
        let now = tokio::time::Instant::now();
        let started = match &first {
            Some((_, Err(BackendError::Timeout { .. }))) => now
                .checked_sub(self.conn_settings().request_timeout)
                .unwrap_or(now),
            _ => now,
        };
        let course = Course {
            payload: &sending.payload,
            target: &sending.target,
            access: sending.access,
            affinity: sending.affinity,
            to_replica: sending.access == Access::Read && self.config.read_from != ReadFrom::Master,
            heal: true,
            attempts: Attempts::since(self.retry_budget, started),
        };
        let mut carrier = Shared { sending: &sending };
        self.attempt_loop(first, course, &mut carrier).await
    }
}

/// The shared connections as a [`Carrier`]: a command for the control connection takes it.
struct Shared<'a> {
    sending: &'a Sending,
}

impl Carrier for Shared<'_> {
    async fn send(&mut self, pool: &Arc<NodePool>, asking: bool) -> Result<Reply, BackendError> {
        let Sending {
            ref payload,
            ref target,
            protocol,
            db,
            affinity,
            ..
        } = *self.sending;
        match target {
            Target::Control(_) => pool.send_control(protocol, payload.clone(), db).await,
            _ => {
                pool.send(protocol, affinity, payload.clone(), asking, db)
                    .await
            }
        }
    }

    async fn load_script(&mut self, pool: &Arc<NodePool>, load: Bytes) -> bool {
        let Sending {
            protocol,
            db,
            affinity,
            ..
        } = *self.sending;
        let loaded = pool.send(protocol, affinity, load, false, db).await;
        matches!(&loaded, Ok(done) if done.error_text().is_none())
    }
}
