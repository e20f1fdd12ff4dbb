//! The active phase of a session, as a small state machine: take what the client sent
//! (read, decide, start), flush what is ready, then wait for whichever comes first: a reply, a
//! deadline, room in the socket, more requests or a signal. It ends when nothing is owed
//! ([`Flow::Idle`]), when a newer configuration is due ([`Flow::Move`]) or when the connection
//! must close.

mod held_work;

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use tracing::{debug, warn};

use super::action::Postponed;
use super::held::{Held, joinable};
use super::launch::{self, Counted};
use super::outbound::{Outbound, Standing};
use super::owed::{Command, Forwarded, Owed};
use super::pause::released;
use super::pubsub::Subscriptions;
use super::tally::{self, Client, Timed};
use super::wait::{idle, next_for_subscriber, signalled, sleep_until};
use super::{
    Action, Conn, Flow, IDLE_READ_BUF_MAX, client_gone, closed_idle, dispatch, own, switch,
};
use crate::backend::ring::ReplyRing;
use crate::backend::{BackendError, Hints};
use crate::clients::ClientHandle;
use crate::cluster::Backend;
use crate::metrics::Family;
use crate::protocol::Request;
use crate::proxy::{ProxyRef, Snapshot};

/// The client has sent bytes: read, answer and route requests, and write replies, until
/// nothing is owed ([`Flow::Idle`]) or the connection must close. Every request of this phase
/// sees `snapshot`.
pub(super) async fn active(c: &mut Conn<'_>, snapshot: &Snapshot) -> Flow {
    let proxy = ProxyRef::new(c.proxy, snapshot);
    let Some(cluster) = proxy.default_backend().map(Arc::as_ref) else {
        return Flow::Close;
    };
    let handle = Arc::clone(&c.state.registered.handle);
    let ring = Arc::clone(
        c.ring
            .get_or_insert_with(|| ReplyRing::new(Arc::clone(&handle))),
    );
    let sent = &c.proxy.stats.net_output_bytes;
    let edge = Edge::new(proxy, cluster, &handle, &ring, sent, snapshot);
    let mut phase = Phase::new(&handle.owed_bytes, c.subs.take());
    // The idle wait saw the socket readable: take what is there first.
    if client_gone(c) {
        return Flow::Close;
    }
    loop {
        phase.take_mail(&edge);
        if phase.pending.is_empty() {
            phase.own_running = false;
            // Only when there is some: an async call builds its future even when it has nothing
            // to do.
            if phase.held.is_some() {
                phase.start_held(c, &edge).await;
            }
        }
        phase.take_requests(c, &edge);
        if c.inbuf.is_empty() && c.inbuf.capacity() > 0 {
            c.inbuf = BytesMut::new();
        }
        if let Some(flow) = phase.flush(c, &edge) {
            return flow;
        }
        match phase.after_flush(c) {
            Turn::End(flow) => return flow,
            Turn::Again => continue,
            Turn::Wait => {}
        }
        // Waits for whichever comes first. Written here rather than in a method of `Phase`: an
        // async call would build, and move, the future of this select at every wait.
        let plan = phase.wait_plan(c, &edge);
        tokio::select! {
            biased;
            () = poll_fn(|cx| phase.pending.poll_progress(cx, edge.ring)),
                if !phase.pending.is_empty() =>
            {
                let out = &mut phase.out;
                phase.pending.drain(edge.ring, edge.client, &mut |reply| out.push(reply));
            }
            () = c.deadline.fired(), if phase.pending.has_forwarded() => {
                let now = tokio::time::Instant::now();
                if let Some(next) = phase.pending.expire(now, edge.ring, edge.client) {
                    c.deadline.rearm(next);
                }
            }
            writable = c.io.writable(), if !phase.out.is_empty() => {
                if writable.is_err() {
                    return Flow::Close;
                }
            }
            // While own-connection work holds the pipeline, keep reading a little so a client
            // that goes away is noticed (and its blocked backend connection closed).
            readable = c.io.readable(), if plan.reading => {
                if readable.is_err() || client_gone(c) {
                    return Flow::Close;
                }
            }
            () = signalled(edge.handle, &c.announcements, phase.held.is_none()) => {
                if let Some(flow) = phase.on_signal(c, &edge) {
                    return flow;
                }
            }
            _ = sleep_until(plan.soft_deadline), if plan.soft_deadline.is_some() => {}
            request = released(&mut phase.postponed), if phase.postponed.is_some() => {
                edge.client.handle.paused.store(false, Ordering::Relaxed);
                // It runs now: timed (and its node's deadline set) from here, as Redis times a
                // command it unblocks.
                c.last_activity = tokio::time::Instant::now();
                phase.retried = Some(request);
            }
            frame = next_for_subscriber(&mut phase.subs, edge.proxy) => {
                if let Some(flow) = phase.on_subscriber_frame(c, &edge, frame) {
                    return flow;
                }
            }
            _ = idle(&mut c.idle_timer), if plan.quiet => {
                closed_idle(c);
                return Flow::Close;
            }
        }
    }
}

/// What one active phase works with and never changes.
struct Edge<'a> {
    proxy: ProxyRef<'a>,
    /// The default backend.
    cluster: &'a Backend,
    client: Client<'a>,
    owed: &'a AtomicU64,
    sent: &'a AtomicU64,
    ring: &'a Arc<ReplyRing>,
    handle: &'a Arc<ClientHandle>,
    snapshot: &'a Snapshot,
}

impl<'a> Edge<'a> {
    /// The edge of a phase of the client `handle`, whose replies come in `ring`, on `proxy` as
    /// `snapshot` configures it; `sent` counts the bytes written to clients.
    fn new(
        proxy: ProxyRef<'a>,
        cluster: &'a Backend,
        handle: &'a Arc<ClientHandle>,
        ring: &'a Arc<ReplyRing>,
        sent: &'a AtomicU64,
        snapshot: &'a Snapshot,
    ) -> Self {
        Edge {
            proxy,
            cluster,
            client: Client { proxy, handle },
            // Counted here while the node's answer waits for the client: see `outbound`.
            owed: &handle.owed_bytes,
            sent,
            ring,
            handle,
            snapshot,
        }
    }
}

/// What the wait of a turn needs to know before it starts.
struct WaitPlan {
    soft_deadline: Option<tokio::time::Instant>,
    reading: bool,
    quiet: bool,
}

/// What the phase does after a flush.
enum Turn {
    /// End the phase.
    End(Flow),
    /// Go round again at once: start held work, or take what was left unparsed.
    Again,
    /// Wait for something to happen.
    Wait,
}

/// The state of one active phase.
struct Phase<'a> {
    /// Replies owed, in request order.
    pending: Owed<'a>,
    /// Replies ready to write.
    out: Outbound,
    /// Work on the client's own connections runs alone: it waits until every earlier reply is
    /// out (`held`), and nothing after it starts until it is done (`own_running`).
    held: Option<Held<'a>>,
    own_running: bool,
    /// A request decided again once a backend answered, before any later one.
    retried: Option<Request>,
    /// A request `CLIENT PAUSE` holds: nothing after it starts until it is released (then
    /// decided again, as `retried`).
    postponed: Option<Postponed>,
    /// Made on the first (un)subscribe: most clients never subscribe.
    subs: Option<Box<Subscriptions>>,
    /// Close once what is owed is written.
    closing: bool,
    /// The proxy is shutting down: work on, but close once nothing is owed.
    draining: bool,
    /// The client is behind on reading its replies: no new request starts.
    paused: bool,
    /// A newer configuration is in force: no new request starts until this phase has moved
    /// to it.
    move_due: bool,
}

impl<'a> Phase<'a> {
    fn new(owed: &'a AtomicU64, subs: Option<Box<Subscriptions>>) -> Self {
        Phase {
            pending: Owed::new(owed),
            out: Outbound::default(),
            held: None,
            own_running: false,
            retried: None,
            postponed: None,
            subs,
            closing: false,
            draining: false,
            paused: false,
            move_due: false,
        }
    }

    /// The session was signalled: killed by `CLIENT KILL` (the phase ends, closing), or the
    /// proxy drains. Draining, requests already sent are answered (a pipeline in full), then
    /// the client is closed between requests. A new configuration needs nothing here: the next
    /// request (a subscriber's included, on this wake) moves to it.
    fn on_signal(&mut self, c: &mut Conn<'_>, edge: &Edge<'a>) -> Option<Flow> {
        if edge.handle.signal.is_killed() {
            debug!(client = c.state.id, "killed by CLIENT KILL");
            return Some(Flow::Close);
        }
        self.draining |= c.announcements.borrow_and_update().draining;
        None
    }

    /// A message or confirmation for a subscribed client, to write; the phase ends, closing,
    /// when the subscriptions were lost.
    fn on_subscriber_frame(
        &mut self,
        c: &mut Conn<'_>,
        edge: &Edge<'a>,
        frame: Result<Bytes, BackendError>,
    ) -> Option<Flow> {
        let Ok(frame) = frame else {
            debug!(client = c.state.id, "subscriptions lost; closing");
            return Some(Flow::Close);
        };
        self.out.push_uncounted(frame, edge.owed);
        c.state.subscribed = self.subs.as_ref().is_some_and(|s| s.is_subscribed());
        None
    }

    /// Takes what waits in the client's mailbox (invalidations of client-side caching), to
    /// write after every reply owed now.
    /// Not while work waits in `held`: its reply is not owed yet, and mail that may speak of
    /// what it reads must follow that reply.
    fn take_mail(&mut self, edge: &Edge<'a>) {
        if self.held.is_none() && edge.handle.signal.has_mail() {
            let mail = edge
                .proxy
                .clients
                .take_mail(edge.handle.id, &edge.handle.signal);
            for frame in mail {
                self.pending.push_ready(frame);
            }
        }
    }

    /// Whether a new request may start now.
    fn may_take(&self, c: &Conn<'_>) -> bool {
        !self.closing
            && !self.paused
            && self.postponed.is_none()
            && !self.own_running
            && (self.held.is_none()
                || self.retried.is_none() && joinable(&self.held, &c.state, c.max_pipeline))
            && !self.move_due
            && !self.subs.as_ref().is_some_and(|s| s.busy())
            && self.pending.len() < c.max_pipeline
    }

    /// Parses what is buffered, up to the pipeline limit, unless the client is behind on
    /// reading its replies, and starts each request.
    fn take_requests(&mut self, c: &mut Conn<'_>, edge: &Edge<'a>) {
        while self.may_take(c) {
            // A request decided again was counted when it was first parsed.
            let again = self.retried.is_some();
            let parsed = match self.retried.take() {
                Some(request) => Ok(Some(request)),
                None if c.proxy.is_newer_than(edge.snapshot)
                    && switch::may_switch(&c.state, c.proxy, edge.snapshot) =>
                {
                    self.move_due = true;
                    break;
                }
                None => c.parser.parse(&mut c.inbuf),
            };
            let request = match parsed {
                Ok(Some(request)) => request,
                Ok(None) => break,
                Err(error) => {
                    self.pending.push_ready(super::protocol_error(c, &error));
                    self.closing = true;
                    break;
                }
            };
            if !again {
                c.proxy.stats.total_commands.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(Held::Own {
                op: own::OwnOp::Txn(batch),
                ..
            }) = self.held.as_mut()
            {
                // A pipelined transaction: its next request joins the batch waiting to be sent.
                match dispatch::in_transaction(&mut c.state, edge.proxy, edge.cluster, request) {
                    Ok(step) => batch.join(step),
                    Err(request) => self.retried = Some(request),
                }
                continue;
            }
            self.start(c, edge, request);
            // What the request itself caused (the invalidation of a key it wrote) follows
            // its reply, as in Redis.
            self.take_mail(edge);
            if c.state.reset {
                c.state.reset = false;
                self.subs = None;
                if let Some(Ok(mut own)) = c.state.own.as_ref().map(|o| o.try_lock()) {
                    *own = None;
                }
            }
        }
    }

    /// Decides `request` and starts what it needs: the one place an [`Action`] becomes work.
    fn start(&mut self, c: &mut Conn<'_>, edge: &Edge<'a>, request: Request) {
        let (protocol, affinity, db) = (c.state.protocol, c.state.affinity, c.state.db);
        // Kept for a slow log entry: a reference count on the client's own buffer.
        let raw = request.raw.clone();
        let action = dispatch::dispatch(&mut c.state, edge.proxy, edge.cluster, request);
        let dispatched = c.state.dispatched;
        let started = c.last_activity;
        let timed = move |cluster| Timed {
            dispatched,
            started,
            cluster,
            raw,
        };
        let (proxy, cluster) = (edge.proxy, edge.cluster);
        // A paused request has not run, whatever CLIENT REPLY says: it is held, not silenced.
        let silent = c.state.silenced() && !matches!(action, Action::Postpone(_));
        if silent && let Action::Own(op) = action {
            // Held like any own-connection work, which must run alone; its reply is dropped
            // when it comes.
            self.held = Some(Held::Own {
                op,
                timed: timed(cluster),
                silent: true,
            });
            return;
        }
        // An (un)subscribe is never silenced: its confirmations are pushes, which Redis
        // delivers whatever CLIENT REPLY says (as it does the messages); the SKIP it used up is
        // spent all the same.
        if silent && !matches!(action, Action::Pubsub { .. } | Action::Push(_)) {
            tally::count_no_error(dispatched);
            // CLIENT REPLY OFF/SKIP: the command runs, its reply is dropped.
            self.pending.push_slow(launch::silently(
                proxy, cluster, action, protocol, db, affinity,
            ));
            return;
        }
        match action {
            Action::Reply(bytes) | Action::Push(bytes) => {
                let client = Client {
                    proxy,
                    handle: edge.client.handle,
                };
                timed(cluster).answered(&bytes, client);
                self.pending.push_ready(bytes);
            }
            Action::Close(bytes) => {
                tally::count(dispatched, &bytes, &proxy);
                self.pending.push_ready(bytes);
                self.closing = true;
            }
            Action::Forward {
                backend,
                payload,
                target,
                access,
            } => {
                let cluster = proxy.backend(backend).map_or(cluster, |b| b.as_ref());
                let command = Command {
                    cluster,
                    sending: super::action::forwarded(
                        payload,
                        target,
                        access,
                        (protocol, db, affinity),
                    ),
                    timed: timed(cluster),
                };
                self.forward(c, edge, command);
            }
            Action::Gather(gather) => {
                let counted = Counted {
                    timed,
                    client: edge.client,
                };
                let run = gather.start(proxy, cluster, protocol, db, affinity, counted);
                self.pending.push_slow(run);
            }
            Action::Own(op) => {
                self.held = Some(Held::Own {
                    op,
                    timed: timed(cluster),
                    silent: false,
                });
            }
            Action::Pubsub { kind, names } => {
                // Its confirmations come on the subscription stream, never an error reply.
                tally::count_no_error(dispatched);
                self.held = Some(Held::Pubsub { kind, names });
            }
            Action::AwaitBackend(request) => self.held = Some(Held::AwaitBackend(request)),
            Action::Postpone(postponed) => {
                edge.client.handle.paused.store(true, Ordering::Relaxed);
                self.postponed = Some(postponed);
            }
        }
    }

    /// Queues a forwarded command's first attempt on its node, its reply due in the client's
    /// ring; when it cannot be queued, the serving engine takes it from the start. The common
    /// case stays unboxed: one future type, no allocation of its own.
    fn forward(&mut self, c: &mut Conn<'_>, edge: &Edge<'a>, command: Command<'a>) {
        let hints = Hints {
            runs_code: c.state.dispatched.family == Family::Scripting,
            unordered: self.pending.is_empty(),
        };
        let ticket = edge.ring.reserve(hints);
        let seq = ticket.seq();
        let started = command.cluster.start(&command.sending, ticket);
        match started {
            Some(pool) => {
                let deadline = c.last_activity + pool.request_timeout();
                c.deadline.arm(deadline);
                self.pending.push_forwarded(Forwarded {
                    seq,
                    deadline,
                    pool,
                    command,
                });
            }
            None => {
                edge.ring.forget(seq);
                self.pending.push_slow(command.serve(None, edge.client));
            }
        }
    }

    /// Writes everything ready, in order, without waiting for the socket, and weighs what the
    /// client owes against its output limits; a flow when the phase must end.
    fn flush(&mut self, c: &mut Conn<'_>, edge: &Edge<'a>) -> Option<Flow> {
        let out = &mut self.out;
        self.pending
            .drain(edge.ring, edge.client, &mut |reply| out.push(reply));
        if !self.out.is_empty() && self.out.flush(&mut c.io, edge.owed, edge.sent).is_err() {
            return Some(Flow::Close);
        }
        let limit = self.output_limit(c, edge);
        let now = tokio::time::Instant::now();
        match self
            .out
            .standing(edge.owed.load(Ordering::Relaxed), limit, now)
        {
            Standing::Fine => self.paused = false,
            Standing::Paused => self.paused = true,
            Standing::Close { owed, limit } => {
                warn!(
                    client = c.state.id,
                    peer = %c.state.peer(),
                    owed_bytes = owed,
                    limit_bytes = limit,
                    class = if c.state.subscribed { "pubsub" } else { "normal" },
                    "client closed for overcoming its output buffer limit"
                );
                c.proxy
                    .stats
                    .closed_by_output_limit
                    .fetch_add(1, Ordering::Relaxed);
                return Some(Flow::Close);
            }
        }
        None
    }

    fn output_limit<'e>(&self, c: &Conn<'_>, edge: &'e Edge<'a>) -> &'e crate::config::OutputLimit {
        let server = &edge.proxy.config().server;
        if c.state.subscribed {
            &server.client_output_limit_pubsub
        } else {
            &server.client_output_limit_normal
        }
    }

    /// What follows a flush: the end of the phase, another turn, or a wait.
    fn after_flush(&mut self, c: &mut Conn<'_>) -> Turn {
        if self.closing && self.pending.is_empty() && self.out.is_empty() {
            return Turn::End(Flow::Close);
        }
        // Nothing owed and nothing to wait for: hand back to the cheap idle wait, dropping this
        // phase's state (its future, the reply queue) so an idle client costs little memory.
        if self.subs.as_ref().is_some_and(|s| s.is_done()) {
            self.subs = None;
        }
        let settled = self.pending.is_empty() && self.out.is_empty() && self.postponed.is_none();
        if self.move_due
            && settled
            && self.held.is_none()
            && !self.subs.as_ref().is_some_and(|s| s.busy())
        {
            c.subs = self.subs.take();
            return Turn::End(Flow::Move);
        }
        if self.draining && c.state.subscribed {
            // A subscriber is never between requests: it is closed once it has what it is owed.
            self.closing = true;
        }
        if self.own_running && self.pending.is_empty() {
            // Work on the own connection that was done at once (closing it for a `DISCARD` or
            // an aborted `EXEC`) left what the client pipelined after it unparsed: go on.
            return Turn::Again;
        }
        if settled && self.held.is_none() && self.subs.is_none() && !self.closing {
            // Between requests: an ordinary client waits for its next one, unless the proxy
            // drains.
            return Turn::End(if self.draining {
                Flow::Close
            } else {
                Flow::Idle
            });
        }
        let handle = &c.state.registered.handle;
        if handle.subscribed.load(Ordering::Relaxed) != c.state.subscribed {
            handle
                .subscribed
                .store(c.state.subscribed, Ordering::Relaxed);
        }
        handle.set_subscriptions(
            self.subs
                .as_deref()
                .map(Subscriptions::counts)
                .unwrap_or_default(),
        );
        if self.held.is_some() && self.pending.is_empty() {
            return Turn::Again;
        }
        Turn::Wait
    }

    /// What the wait below needs to know before it starts: whether the socket is read, and
    /// whether the client counts as idle.
    fn wait_plan(&self, c: &mut Conn<'_>, edge: &Edge<'a>) -> WaitPlan {
        if let (Some(timer), Some(timeout)) = (c.idle_timer.as_mut(), c.idle_timeout) {
            timer.as_mut().reset(c.last_activity + timeout);
        }
        WaitPlan {
            soft_deadline: self.out.soft_deadline(self.output_limit(c, edge)),
            reading: !self.closing
                && self.pending.len() < c.max_pipeline
                && (!(self.own_running
                    || self.held.is_some()
                    || self.paused
                    || self.postponed.is_some())
                    || c.inbuf.len() < IDLE_READ_BUF_MAX),
            // A paused client is not idle, as a client Redis blocks is not.
            quiet: self.pending.is_empty()
                && self.out.is_empty()
                && !self.closing
                && self.subs.is_none()
                && self.postponed.is_none(),
        }
    }
}
