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
mod active;
mod admin;
mod blocked;
mod client_command;
mod client_tracking;
mod cluster_node;
mod dispatch;
mod held;
mod info;
mod launch;
mod local;
mod moving;
mod outbound;
mod owed;
mod own;
mod pause;
mod pubsub;
mod route;
mod state;
mod stream;
mod switch;
mod tally;
mod tracked_keys;
mod txn;
mod wait;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use tracing::{debug, info};

use crate::backend::ring::ReplyRing;
use crate::protocol::RequestParser;
use crate::proxy::{Announcement, Proxy};

use active::active;
use owed::Deadline;
use pubsub::Subscriptions;

use wait::{idle, signalled};

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
/// `active` (boxed, freed again when nothing is owed), so ten thousand idle clients cost
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
        // Biased, in this order: an unbiased select draws a random number at every wake, and a
        // client that never stops sending must still see its CLIENT KILL.
        let flow = tokio::select! {
            biased;
            () = signalled(&c.state.registered.handle, &c.announcements, true) => {
                if c.state.registered.handle.signal.is_killed() {
                    debug!(client = c.state.id, "killed by CLIENT KILL");
                    Flow::Close
                } else if c.announcements.borrow_and_update().draining {
                    // Draining closes an idle client; a new configuration is moved to above.
                    Flow::Close
                } else if c.state.registered.handle.signal.has_mail() {
                    // Invalidations for a client of client-side caching: written at once.
                    Box::pin(active(&mut c, &snapshot)).await
                } else {
                    Flow::Move
                }
            }
            readable = c.io.readable() => match readable {
                Ok(()) => Box::pin(active(&mut c, &snapshot)).await,
                Err(_) => Flow::Close,
            },
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
    client_tracking::turn_off(&mut c.state, &proxy);
    c.io.close().await;
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

/// Counts and logs a client closed for a protocol error, and Redis's reply to it.
fn protocol_error(c: &Conn<'_>, error: &crate::protocol::ProtocolError) -> bytes::Bytes {
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
    crate::protocol::reply::error(&format!("ERR {error}"))
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

#[cfg(test)]
mod tests;
