//! One client connection: read requests, answer or route each, write replies in request order.
//!
//! Requests are parsed as they arrive and each takes its place in the queue of replies owed
//! (`owed`): a reply the proxy makes itself is ready at once, a forwarded one arrives in the
//! client's reply ring when its node answers, other work is a future. Replies are written in
//! request order, batched into one write when several are ready.
//!
//! Work that needs a connection of the client's own (transactions, blocking commands, Pub/Sub)
//! waits until every earlier reply is out and holds later requests until it is done, so the
//! client's order holds across connections.
//!
//! A session pins one snapshot of the configuration (see [`crate::proxy`]) and moves to a newer
//! one between requests (see `switch`).

mod acl;
mod action;
mod admin;
mod blocked;
mod cluster_node;
mod dispatch;
mod info;
mod local;
mod outbound;
mod owed;
mod own;
mod pubsub;
mod route;
mod state;
mod stream;
mod switch;
mod tally;
mod txn;
mod wait;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tracing::{debug, info, warn};

use crate::backend::ring::ReplyRing;
use crate::protocol::{Protocol, RequestParser, reply};
use crate::proxy::{Announcement, Proxy, ProxyRef, Snapshot};
use crate::{fanout, multikey};
use outbound::{Outbound, Standing};
use owed::{Command, Deadline, Forwarded, Owed, Slow};
use pubsub::Subscriptions;
use std::future::poll_fn;
use tally::{Client, Timed, tallied};
use wait::{idle, next_for_subscriber, signalled, sleep_until, wait_for_commands};

pub use action::Action;
pub use state::{ClientState, ReplyMode};
pub use stream::ClientStream;

/// Read buffer taken when bytes arrive; it grows for large requests.
const READ_BUF: usize = 2 * 1024;
/// Most bytes buffered ahead while own-connection work holds the pipeline; also the output
/// buffer capacity kept between writes.
const IDLE_READ_BUF_MAX: usize = 64 * 1024;

/// What the active phase of a session ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// Nothing owed: wait cheaply for the client's next bytes.
    Idle,
    /// Close the connection.
    Close,
    /// A newer configuration is in force and nothing is in flight: move to it, then go on.
    Move,
}

/// What a session keeps while its client is idle.
struct Conn<'a> {
    state: ClientState,
    io: ClientStream,
    inbuf: BytesMut,
    last_activity: tokio::time::Instant,
    idle_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    idle_timeout: Option<Duration>,
    /// Shutdown and new configurations.
    announcements: tokio::sync::watch::Receiver<Announcement>,
    parser: RequestParser,
    max_pipeline: usize,
    proxy: &'a Proxy,
    /// The client's subscriptions: kept across phases only to move them to a new configuration
    /// (a subscribed session stays active).
    subs: Option<Box<Subscriptions>>,
    /// Where the nodes put this client's replies: made on its first request, kept.
    ring: Option<Arc<ReplyRing>>,
    /// The one timer of its forwarded commands.
    deadline: Deadline,
}

/// Serves one client until it quits, disconnects or breaks the protocol.
///
/// While the client is idle the session waits in a small future; when bytes arrive it runs
/// [`active`] (boxed, freed again when nothing is owed), so ten thousand idle clients cost
/// little memory.
pub async fn serve(stream: ClientStream, peer: SocketAddr, proxy: Arc<Proxy>) {
    // Listened to before the snapshot is read, so a reload in between is not missed.
    let announcements = proxy.announcements();
    if announcements.borrow().draining {
        return;
    }
    let mut snapshot = proxy.snapshot();
    let server = &snapshot.config.server;
    let idle_timeout = switch::idle_timeout(server);
    let id = proxy.next_client_id();
    let local = stream.local_addr().unwrap_or(proxy.listen_addr);
    let registered = proxy.clients.register(id, peer, local, stream.fd());
    let mut c = Conn {
        state: ClientState::new(id, snapshot.users().at_connect(), registered),
        io: stream,
        // No read buffer while idle: it is taken when bytes arrive and given back once they
        // are parsed.
        inbuf: BytesMut::new(),
        last_activity: tokio::time::Instant::now(),
        // Only sessions with an idle timeout carry a timer, allocated once.
        idle_timer: idle_timeout.map(|t| Box::pin(tokio::time::sleep(t))),
        idle_timeout,
        announcements,
        parser: RequestParser::new(server.proto_max_bulk_len, server.max_multibulk_len)
            .with_max_request_bytes(server.max_request_bytes),
        max_pipeline: server.max_pipeline,
        proxy: &proxy,
        subs: None,
        ring: None,
        deadline: Deadline::default(),
    };
    loop {
        // A configuration newer than the session's came into force while it was active or
        // idle: move to it, then serve under it what the client sent meanwhile (and its
        // subscriptions, which need the active phase).
        if c.proxy.is_newer_than(&snapshot) && switch::may_switch(&c.state, c.proxy, &snapshot) {
            // Boxed: a reload is rare, and moving subscriptions would otherwise size every idle
            // client's task.
            if !Box::pin(switch::to_newest(&mut c, &mut snapshot)).await {
                break;
            }
            if !c.inbuf.is_empty() || c.subs.is_some() {
                if Box::pin(active(&mut c, &snapshot)).await == Flow::Close {
                    break;
                }
                continue;
            }
        }
        if let (Some(timer), Some(timeout)) = (c.idle_timer.as_mut(), c.idle_timeout) {
            timer.as_mut().reset(c.last_activity + timeout);
        }
        let flow = tokio::select! {
            readable = c.io.readable() => match readable {
                Ok(()) => Box::pin(active(&mut c, &snapshot)).await,
                Err(_) => Flow::Close,
            },
            () = signalled(&c.state.registered.handle, &c.announcements) => {
                if c.state.registered.handle.signal.is_killed() {
                    debug!(client = c.state.id, "killed by CLIENT KILL");
                    Flow::Close
                } else if c.announcements.borrow_and_update().draining {
                    // Draining closes an idle client; a new configuration is moved to above.
                    Flow::Close
                } else {
                    Flow::Move
                }
            }
            _ = idle(&mut c.idle_timer) => {
                closed_idle(&c);
                Flow::Close
            }
        };
        if flow == Flow::Close {
            break;
        }
        // A long pipeline's slots are not kept by a client that waits.
        if let Some(ring) = &c.ring {
            ring.shrink();
        }
    }
    if let Some(ring) = &c.ring {
        ring.close();
    }
    c.io.close().await;
}

/// The client has sent bytes: read, answer and route requests, and write replies, until
/// nothing is owed ([`Flow::Idle`]) or the connection must close. Every request of this phase
/// sees `snapshot`.
async fn active(c: &mut Conn<'_>, snapshot: &Snapshot) -> Flow {
    let proxy = ProxyRef::new(c.proxy, snapshot);
    let Some(cluster) = proxy.default_cluster().map(Arc::as_ref) else {
        return Flow::Close;
    };
    // Counted here while the node's answer waits for the client: see `outbound`.
    let handle = Arc::clone(&c.state.registered.handle);
    let owed = &handle.owed_bytes;
    let sent = &c.proxy.stats.net_output_bytes;
    let client = Client {
        proxy,
        handle: &handle,
    };
    let mut out = Outbound::default();
    let ring = Arc::clone(
        c.ring
            .get_or_insert_with(|| ReplyRing::new(Arc::clone(&handle))),
    );
    let mut pending = Owed::new(owed);
    let mut closing = false;
    // The proxy is shutting down: work on, but close once nothing is owed.
    let mut draining = false;
    let mut paused = false;
    // Work on the client's own connections runs alone: it waits until every earlier reply is
    // out (`held`), and nothing after it starts until it is done (`own_running`).
    let mut held: Option<Held> = None;
    // A request decided again once a backend answered, before any later one.
    let mut retried: Option<crate::protocol::Request> = None;
    let mut own_running = false;
    // Made on the first (un)subscribe: most clients never subscribe.
    let mut subs: Option<Box<Subscriptions>> = c.subs.take();
    // A newer configuration is in force: no new request starts until this phase has moved
    // to it.
    let mut move_due = false;
    // The idle wait saw the socket readable: take what is there first.
    if client_gone(c) {
        return Flow::Close;
    }

    loop {
        if pending.is_empty() {
            own_running = false;
            match held.take() {
                Some(Held::Own { op, timed, silent }) => {
                    // Made on first use: most clients never need a connection of their own.
                    let own = Arc::clone(c.state.own.get_or_insert_with(Default::default));
                    let protocol = c.state.protocol;
                    let db = c.state.db;
                    let entry = Arc::clone(&c.state.registered.handle);
                    let user = c.state.user.clone();
                    let run = own::run(proxy, own, op, protocol, db, entry, user);
                    let future: Slow<'_> = if silent {
                        // CLIENT REPLY OFF/SKIP: it runs (a transaction commits, a blocking
                        // pop takes its element), only its reply is dropped.
                        Box::pin(async move {
                            tallied(run, timed, client).await;
                            Bytes::new()
                        })
                    } else {
                        Box::pin(tallied(run, timed, client))
                    };
                    pending.push_slow(future);
                    own_running = true;
                }
                Some(Held::AwaitBackend(request)) => {
                    if Box::pin(wait_for_commands(proxy, cluster)).await {
                        retried = Some(request);
                    } else {
                        let error = reply::error(&cluster.unreachable_error());
                        pending.push_ready(error);
                    }
                }
                Some(Held::Pubsub { kind, names }) => {
                    let protocol = c.state.protocol;
                    let subscriptions = subs.get_or_insert_with(|| {
                        Box::new(Subscriptions::new(
                            protocol,
                            c.state.id,
                            Arc::clone(&c.proxy.subscribers),
                        ))
                    });
                    // Boxed, as the wait below: rare, and large enough to double every active
                    // phase's allocation.
                    match Box::pin(subscriptions.start(proxy, kind, names)).await {
                        Ok(now) => out.push_uncounted(now, owed),
                        Err(error) => {
                            let error = reply::error(&format!("ERR respgate: {error}"));
                            pending.push_ready(error);
                        }
                    }
                    c.state.subscribed = subscriptions.is_subscribed();
                }
                None => {}
            }
        }
        // Parse what is buffered, up to the pipeline limit, unless the client is behind on
        // reading its replies.
        while !closing
            && !paused
            && !own_running
            && (held.is_none() || retried.is_none() && joinable(&held, &c.state, c.max_pipeline))
            && !move_due
            && !subs.as_ref().is_some_and(|s| s.busy())
            && pending.len() < c.max_pipeline
        {
            // A request decided again was counted when it was first parsed.
            let again = retried.is_some();
            let parsed = match retried.take() {
                Some(request) => Ok(Some(request)),
                None if c.proxy.is_newer_than(snapshot)
                    && switch::may_switch(&c.state, c.proxy, snapshot) =>
                {
                    move_due = true;
                    break;
                }
                None => c.parser.parse(&mut c.inbuf),
            };
            let request = match parsed {
                Ok(Some(request)) => request,
                Ok(None) => break,
                Err(error) => {
                    info!(
                        client = c.state.id,
                        peer = %c.state.peer(),
                        %error,
                        "client closed for a protocol error"
                    );
                    c.proxy
                        .stats
                        .protocol_errors
                        .fetch_add(1, Ordering::Relaxed);
                    let error = reply::error(&format!("ERR {error}"));
                    pending.push_ready(error);
                    closing = true;
                    break;
                }
            };
            if !again {
                c.proxy.stats.total_commands.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(Held::Own {
                op: own::OwnOp::Txn(batch),
                ..
            }) = held.as_mut()
            {
                // A pipelined transaction: its next request joins the batch waiting to be sent.
                match dispatch::in_transaction(&mut c.state, proxy, cluster, request) {
                    Ok(step) => batch.join(step),
                    Err(request) => retried = Some(request),
                }
                continue;
            }
            let (protocol, affinity, db) = (c.state.protocol, c.state.affinity, c.state.db);
            // Kept for a slow log entry: a reference count on the client's own buffer.
            let raw = request.raw.clone();
            let action = dispatch::dispatch(&mut c.state, proxy, cluster, request);
            let dispatched = c.state.dispatched;
            let started = c.last_activity;
            let timed = move |cluster| Timed {
                dispatched,
                started,
                cluster,
                raw,
            };
            let silent = c.state.silenced();
            let action = match action {
                // Held like any own-connection work, which must run alone; its reply is
                // dropped when it comes.
                Action::Own(op) if silent => {
                    held = Some(Held::Own {
                        op,
                        timed: timed(cluster),
                        silent: true,
                    });
                    continue;
                }
                action => action,
            };
            // An (un)subscribe is never silenced: its confirmations are pushes, which Redis
            // delivers whatever CLIENT REPLY says (as it does the messages); the SKIP it used
            // up is spent all the same.
            if silent && !matches!(action, Action::Pubsub { .. } | Action::Push(_)) {
                tally::count_no_error(dispatched);
                // CLIENT REPLY OFF/SKIP: the command runs, its reply is dropped.
                let action = Box::pin(silently(proxy, action, protocol, db, affinity));
                let future: Slow<'_> = action;
                pending.push_slow(future);
                continue;
            }
            match action {
                Action::Reply(bytes) | Action::Push(bytes) => {
                    tally::count(dispatched, &bytes, &proxy);
                    pending.push_ready(bytes)
                }
                Action::Close(bytes) => {
                    tally::count(dispatched, &bytes, &proxy);
                    pending.push_ready(bytes);
                    closing = true;
                }
                // The common case stays unboxed: one future type, no allocation of its own.
                Action::Forward {
                    backend,
                    payload,
                    target,
                    access,
                } => {
                    let cluster = proxy.backend(backend).map_or(cluster, |b| b.as_ref());
                    let command = Command {
                        cluster,
                        payload,
                        target,
                        access,
                        protocol,
                        db,
                        affinity,
                        timed: timed(cluster),
                    };
                    let ticket = ring.reserve();
                    let seq = ticket.seq();
                    let started = cluster.start(
                        &command.payload,
                        &command.target,
                        access,
                        protocol,
                        db,
                        affinity,
                        ticket,
                    );
                    match started {
                        Some(pool) => {
                            let deadline = c.last_activity + pool.request_timeout();
                            c.deadline.arm(deadline);
                            pending.push_forwarded(Forwarded {
                                seq,
                                deadline,
                                pool,
                                command,
                            });
                        }
                        None => {
                            ring.forget(seq);
                            pending.push_slow(command.serve(None, client));
                        }
                    }
                }
                Action::Publish(publish) => {
                    let cluster = proxy
                        .backend(publish.backend)
                        .map_or(cluster, |b| b.as_ref());
                    let run = pubsub::publish(proxy, publish, protocol, db, affinity);
                    let future: Slow<'_> = Box::pin(tallied(run, timed(cluster), client));
                    pending.push_slow(future);
                }
                Action::Split(split) => {
                    let run = multikey::run(proxy, split, protocol, db, affinity);
                    let future: Slow<'_> = Box::pin(tallied(run, timed(cluster), client));
                    pending.push_slow(future);
                }
                Action::FanOut(fanout) => {
                    let run = fanout::run(proxy, fanout, protocol, db, affinity);
                    let future: Slow<'_> = Box::pin(tallied(run, timed(cluster), client));
                    pending.push_slow(future);
                }
                Action::Broadcast(broadcast) => {
                    let run = crate::broadcast::run(proxy, broadcast, protocol);
                    let future: Slow<'_> = Box::pin(tallied(run, timed(cluster), client));
                    pending.push_slow(future);
                }
                Action::Info(request) => {
                    let run = info::run(proxy, request, protocol);
                    let future: Slow<'_> = Box::pin(tallied(run, timed(cluster), client));
                    pending.push_slow(future);
                }
                Action::Scan(args) => {
                    let run =
                        async move { fanout::scan(proxy, &args, protocol, db, affinity).await };
                    let future: Slow<'_> = Box::pin(tallied(run, timed(cluster), client));
                    pending.push_slow(future);
                }
                Action::Own(op) => {
                    held = Some(Held::Own {
                        op,
                        timed: timed(cluster),
                        silent: false,
                    })
                }
                Action::Pubsub { kind, names } => {
                    // Its confirmations come on the subscription stream, never an error reply.
                    tally::count_no_error(dispatched);
                    held = Some(Held::Pubsub { kind, names });
                }
                Action::AwaitBackend(request) => held = Some(Held::AwaitBackend(request)),
            }
            if c.state.reset {
                c.state.reset = false;
                subs = None;
                if let Some(Ok(mut own)) = c.state.own.as_ref().map(|o| o.try_lock()) {
                    *own = None;
                }
            }
        }
        if c.inbuf.is_empty() && c.inbuf.capacity() > 0 {
            c.inbuf = BytesMut::new();
        }
        // Everything ready goes to the client now, in order, without waiting for the socket.
        pending.drain(&ring, client, &mut |reply| out.push(reply));
        if !out.is_empty() && out.flush(&mut c.io, owed, sent).is_err() {
            return Flow::Close;
        }
        let limit = if c.state.subscribed {
            &proxy.config().server.client_output_limit_pubsub
        } else {
            &proxy.config().server.client_output_limit_normal
        };
        match out.standing(
            owed.load(Ordering::Relaxed),
            limit,
            tokio::time::Instant::now(),
        ) {
            Standing::Fine => paused = false,
            Standing::Paused => paused = true,
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
                return Flow::Close;
            }
        }
        if closing && pending.is_empty() && out.is_empty() {
            return Flow::Close;
        }
        // Nothing owed and nothing to wait for: hand back to the cheap idle wait, dropping this
        // phase's state (its future, the reply queue) so an idle client costs little memory.
        if subs.as_ref().is_some_and(|s| s.is_done()) {
            subs = None;
        }
        if move_due
            && pending.is_empty()
            && out.is_empty()
            && held.is_none()
            && !subs.as_ref().is_some_and(|s| s.busy())
        {
            c.subs = subs;
            return Flow::Move;
        }
        if draining && c.state.subscribed {
            // A subscriber is never between requests: it is closed once it has what it is owed.
            closing = true;
        }
        if own_running && pending.is_empty() {
            // Work on the own connection that was done at once (closing it for a `DISCARD` or
            // an aborted `EXEC`) left what the client pipelined after it unparsed: go on.
            continue;
        }
        if pending.is_empty() && out.is_empty() && held.is_none() && subs.is_none() && !closing {
            // Between requests: an ordinary client waits for its next one, unless the proxy
            // drains.
            return if draining { Flow::Close } else { Flow::Idle };
        }
        if handle.subscribed.load(Ordering::Relaxed) != c.state.subscribed {
            handle
                .subscribed
                .store(c.state.subscribed, Ordering::Relaxed);
        }
        handle.set_subscriptions(
            subs.as_deref()
                .map(Subscriptions::counts)
                .unwrap_or_default(),
        );
        if held.is_some() && pending.is_empty() {
            continue;
        }
        if let (Some(timer), Some(timeout)) = (c.idle_timer.as_mut(), c.idle_timeout) {
            timer.as_mut().reset(c.last_activity + timeout);
        }
        let soft_deadline = out.soft_deadline(limit);
        tokio::select! {
            biased;
            () = poll_fn(|cx| pending.poll_progress(cx, &ring)), if !pending.is_empty() => {
                pending.drain(&ring, client, &mut |reply| out.push(reply));
            }
            () = c.deadline.fired(), if pending.has_forwarded() => {
                if let Some(next) = pending.expire(tokio::time::Instant::now(), &ring, client) {
                    c.deadline.rearm(next);
                }
            }
            writable = c.io.writable(), if !out.is_empty() => {
                if writable.is_err() {
                    return Flow::Close;
                }
            }
            // While own-connection work holds the pipeline, keep reading a little so a client
            // that goes away is noticed (and its blocked backend connection closed).
            readable = c.io.readable(), if !closing
                && pending.len() < c.max_pipeline
                && (!(own_running || held.is_some() || paused) || c.inbuf.len() < IDLE_READ_BUF_MAX) => {
                if readable.is_err() || client_gone(c) {
                    return Flow::Close;
                }
            }
            () = signalled(&handle, &c.announcements) => {
                if handle.signal.is_killed() {
                    debug!(client = c.state.id, "killed by CLIENT KILL");
                    return Flow::Close;
                }
                // Draining: requests already sent are answered (a pipeline in full), then the
                // client is closed between requests. A new configuration needs nothing here:
                // the next request (a subscriber's included, on this wake) moves to it.
                draining |= c.announcements.borrow_and_update().draining;
            }
            _ = sleep_until(soft_deadline), if soft_deadline.is_some() => {}
            frame = next_for_subscriber(&mut subs, proxy) => {
                let Ok(frame) = frame else {
                    debug!(client = c.state.id, "subscriptions lost; closing");
                    return Flow::Close;
                };
                out.push_uncounted(frame, owed);
                c.state.subscribed = subs.as_ref().is_some_and(|s| s.is_subscribed());
            }
            _ = idle(&mut c.idle_timer), if pending.is_empty() && out.is_empty() && !closing && subs.is_none() => {
                closed_idle(c);
                return Flow::Close;
            }
        }
    }
}

/// Reads what the client has sent into the input buffer, without waiting; true when the
/// client is gone (its commands already sent still run on the nodes).
fn client_gone(c: &mut Conn<'_>) -> bool {
    if c.inbuf.is_empty() {
        // Nothing buffered: read into the stack and keep only what came, so that a client
        // holds no read buffer between requests and a small request costs a small allocation
        // (a buffer of `READ_BUF` each time fell in a size class the allocator serves slowly).
        let read = match c.io.read_now_sized::<READ_BUF>() {
            Some(Ok(bytes)) if bytes.is_empty() => return true,
            Some(Ok(bytes)) => {
                c.inbuf = bytes;
                c.inbuf.len()
            }
            Some(Err(e)) => return e.kind() != std::io::ErrorKind::WouldBlock,
            None => return false,
        };
        c.proxy
            .stats
            .net_input_bytes
            .fetch_add(read as u64, Ordering::Relaxed);
        note_activity(c);
        return false;
    }
    if c.inbuf.capacity() - c.inbuf.len() < READ_BUF / 4 {
        c.inbuf.reserve(READ_BUF);
    }
    // Polled once rather than `try_read` (see `ClientStream::read_now`): that saves one
    // syscall of about four per request at pipeline 1.
    match c.io.read_now(&mut c.inbuf) {
        Some(Ok(0)) => true,
        Some(Ok(n)) => {
            c.proxy
                .stats
                .net_input_bytes
                .fetch_add(n as u64, Ordering::Relaxed);
            note_activity(c);
            false
        }
        Some(Err(e)) => e.kind() != std::io::ErrorKind::WouldBlock,
        None => false,
    }
}

/// Records that the client sent something, for the idle timeout and `CLIENT LIST`.
fn note_activity(c: &mut Conn<'_>) {
    // One clock reading for both (it also times the requests this read brought).
    let now = tokio::time::Instant::now();
    c.last_activity = now;
    let since = now
        .into_std()
        .saturating_duration_since(c.state.handle().connected_at)
        .as_millis() as u64;
    c.state
        .handle()
        .last_active_ms
        .store(since, Ordering::Relaxed);
}

/// Runs `action` for a client that asked for no replies, and drops its reply.
async fn silently(
    proxy: ProxyRef<'_>,
    action: Action,
    protocol: Protocol,
    db: u8,
    affinity: usize,
) -> Bytes {
    match action {
        Action::Forward {
            backend,
            payload,
            target,
            access,
        } => {
            if let Some(cluster) = proxy.backend(backend) {
                cluster
                    .execute(payload, target, access, protocol, db, affinity)
                    .await;
            }
        }
        Action::Publish(publish) => {
            pubsub::publish(proxy, publish, protocol, db, affinity).await;
        }
        Action::Split(split) => {
            multikey::run(proxy, split, protocol, db, affinity).await;
        }
        Action::FanOut(fanout) => {
            fanout::run(proxy, fanout, protocol, db, affinity).await;
        }
        Action::Scan(args) => {
            fanout::scan(proxy, &args, protocol, db, affinity).await;
        }
        Action::Broadcast(broadcast) => {
            crate::broadcast::run(proxy, broadcast, protocol).await;
        }
        // Own-connection work and subscriptions never come here (see the caller); a silenced
        // INFO changes nothing.
        Action::Info(_)
        | Action::Reply(_)
        | Action::Push(_)
        | Action::Close(_)
        | Action::Own(_)
        | Action::Pubsub { .. }
        | Action::AwaitBackend(_) => {}
    }
    Bytes::new()
}

/// Counts and logs a client closed for staying idle past `client_idle_timeout_s`.
fn closed_idle(c: &Conn<'_>) {
    c.proxy
        .stats
        .closed_by_idle_timeout
        .fetch_add(1, Ordering::Relaxed);
    info!(
        client = c.state.id,
        peer = %c.state.peer(),
        idle_timeout_s = c.idle_timeout.map_or(0, |t| t.as_secs()),
        "client closed by its idle timeout"
    );
}

/// Whether the next request may join `held`: a transaction batch still open, while the
/// client is in `MULTI` and wants its replies (and wanted the batch's: a silenced batch drops
/// every reply in it).
fn joinable(held: &Option<Held>, state: &ClientState, max_pipeline: usize) -> bool {
    match held {
        Some(Held::Own {
            op: own::OwnOp::Txn(batch),
            silent: false,
            ..
        }) => {
            !batch.ended()
                && batch.parts.len() < max_pipeline
                && state.txn.is_some()
                && state.reply_mode == ReplyMode::On
        }
        _ => false,
    }
}

/// Work that must wait until every earlier reply is out.
enum Held<'a> {
    /// On the client's own connection.
    Own {
        /// The work.
        op: own::OwnOp,
        /// Timed from when it was read.
        timed: Timed<'a>,
        /// Its reply is dropped: the client asked for none (`CLIENT REPLY OFF/SKIP`).
        silent: bool,
    },
    /// A request that waits until some backend has told the proxy its commands.
    AwaitBackend(crate::protocol::Request),
    /// An (un)subscribe for the subscription connections.
    Pubsub {
        /// Which.
        kind: crate::command::SubscriptionKind,
        /// The channels or patterns.
        names: Vec<Bytes>,
    },
}

#[cfg(test)]
mod tests;
