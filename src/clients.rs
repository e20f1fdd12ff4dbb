//! The proxy's own clients, for `CLIENT LIST`, `CLIENT INFO` and `CLIENT KILL`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures_util::task::AtomicWaker;

use crate::backend::NodeAddr;
use crate::keyspace::BackendId;

/// The names a client gives itself: boxed where they are kept, as most clients give none.
#[derive(Debug, Clone, Default)]
pub struct ClientNames {
    /// `CLIENT SETNAME`.
    pub name: Option<Bytes>,
    /// `CLIENT SETINFO LIB-NAME`.
    pub lib_name: Option<Bytes>,
    /// `CLIENT SETINFO LIB-VER`.
    pub lib_ver: Option<Bytes>,
}

/// What `CLIENT LIST` shows of a client that changes while it is connected.
#[derive(Debug, Clone, Default)]
pub struct ClientDetails {
    /// Its name and library, if it gave any.
    pub names: Option<Box<ClientNames>>,
    /// 2 or 3.
    pub resp: u8,
    /// The user it is logged in as; `None` before it has (shown as `default`, as Redis does).
    pub user: Option<std::sync::Arc<str>>,
    /// The full name of the last command (`client|list`), as `CLIENT LIST` shows it in `cmd=`;
    /// `None` before the first.
    pub cmd: Option<Box<str>>,
}

/// How many channels, patterns and sharded channels a client is subscribed to: `sub`, `psub`
/// and `ssub` in `CLIENT LIST`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubscriptionCounts {
    /// Channels (`SUBSCRIBE`).
    pub channels: u32,
    /// Patterns (`PSUBSCRIBE`).
    pub patterns: u32,
    /// Sharded channels (`SSUBSCRIBE`).
    pub sharded: u32,
}

impl SubscriptionCounts {
    /// Whether there is any subscription at all: Redis's flag `P`.
    pub fn any(self) -> bool {
        self != SubscriptionCounts::default()
    }
}

/// Where a client's blocking command waits: the node that holds it, and how that node knows
/// the client's own connection, so `CLIENT UNBLOCK` can be passed on.
#[derive(Debug, Clone)]
pub struct BlockedOn {
    /// The backend of the node.
    pub backend: BackendId,
    /// The node the command waits on.
    pub node: NodeAddr,
    /// The node's `CLIENT ID` of the client's own connection, when the node told it.
    pub node_client_id: Option<i64>,
}

/// One connected client.
#[derive(Debug)]
pub struct ClientHandle {
    /// `CLIENT ID`.
    pub id: u64,
    /// The client's address.
    pub peer: SocketAddr,
    /// The proxy's address it connected to.
    pub local: SocketAddr,
    /// The proxy's file descriptor of the client's socket (`fd=` in `CLIENT LIST`), -1 where
    /// there is none, as Redis shows for a client without a connection.
    pub fd: i32,
    /// When it connected.
    pub connected_at: Instant,
    /// Milliseconds after `connected_at` of its last command.
    pub last_active_ms: AtomicU64,
    /// Bytes of replies the node has answered and the client has not taken yet: what its
    /// output limits bound (`omem` in `CLIENT LIST`).
    pub owed_bytes: AtomicU64,
    /// Name, library, protocol, last command.
    pub details: Mutex<ClientDetails>,
    /// Whether it has subscriptions.
    pub subscribed: AtomicBool,
    /// Channels, patterns and sharded channels it is subscribed to, as it was told.
    subscriptions: [AtomicU32; 3],
    /// Whether it asked `CLIENT NO-EVICT on` (flag `e`).
    pub no_evict: AtomicBool,
    /// Commands queued since `MULTI`, or -1 outside a transaction (`multi=` in `CLIENT LIST`).
    pub multi: AtomicI64,
    /// Set while a blocking command waits on a node: `blocked_clients` in `INFO`, flag `b` in
    /// `CLIENT LIST`, and where `CLIENT UNBLOCK` goes.
    pub blocked: Mutex<Option<Box<BlockedOn>>>,
    /// Set while a request of its waits for the end of a `CLIENT PAUSE`: blocked as well, in
    /// `blocked_clients` and flag `b`, as Redis counts a client its pause postponed.
    pub paused: AtomicBool,
    /// Wakes the session for what does not come on its socket.
    pub signal: Signal,
}

/// What `CLIENT LIST` shows of a client's tracking.
#[derive(Debug, Clone, Copy)]
pub struct TrackingShown {
    /// Tracking is on (flag `t`).
    pub on: bool,
    /// In `BCAST` mode (flag `B`).
    pub bcast: bool,
    /// Its redirect client is gone (flag `R`).
    pub broken_redirect: bool,
    /// `redir=`: the client its invalidations go to, 0 for none, -1 with tracking off.
    pub redirect: i64,
}

impl Default for TrackingShown {
    /// Tracking off.
    fn default() -> Self {
        TrackingShown {
            on: false,
            bcast: false,
            broken_redirect: false,
            redirect: -1,
        }
    }
}

/// Frames waiting to be written to one client outside of any reply: what other tasks (the
/// watchers of client-side caching) post, and the session writes after the replies it owes at
/// that moment (see [`ClientRegistry::post`]).
#[derive(Debug, Default)]
struct Mailbox {
    queue: std::collections::VecDeque<Bytes>,
    bytes: usize,
}

impl ClientHandle {
    /// The protocol the client speaks now: 2 or 3.
    pub fn resp(&self) -> u8 {
        self.details
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .resp
            .max(2)
    }

    /// A line in the format of Redis 7.0's `CLIENT LIST`, every field in its order; those
    /// that describe one server's buffers (`rbs`, ...) are 0, as for an idle client, but
    /// `qbuf`: `qbuf` bytes of requests read and not done yet (the asking client's own
    /// `CLIENT LIST`, as Redis counts it).
    /// `lib-name` and `lib-ver` follow, as Redis 7.2 prints them, only for a client that gave
    /// them with `CLIENT SETINFO` (a 7.2 command): a client of 7.0 sees 7.0's fields alone.
    /// `tracking` is the client's `CLIENT TRACKING` (flags `t`, `R`, `B` and `redir=`).
    pub fn line(&self, qbuf: usize, tracking: TrackingShown) -> String {
        let d = self
            .details
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let names = d.names.as_deref();
        let text = |b: Option<&Bytes>| {
            b.map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default()
        };
        let age = self.connected_at.elapsed();
        let idle = age.as_millis() as u64
            - self
                .last_active_ms
                .load(Ordering::Relaxed)
                .min(age.as_millis() as u64);
        let multi = self.multi.load(Ordering::Relaxed);
        let subs = self.subscriptions();
        // Redis's letters, in its order, for the states the proxy has.
        let mut flags = String::new();
        if subs.any() {
            flags.push('P');
        }
        if multi >= 0 {
            flags.push('x');
        }
        if self.is_blocked() {
            flags.push('b');
        }
        for (set, letter) in [
            (tracking.on, 't'),
            (tracking.broken_redirect, 'R'),
            (tracking.bcast, 'B'),
        ] {
            if set {
                flags.push(letter);
            }
        }
        if self.no_evict.load(Ordering::Relaxed) {
            flags.push('e');
        }
        if flags.is_empty() {
            flags.push('N');
        }
        let omem = self.owed_bytes.load(Ordering::Relaxed);
        let mut line = format!(
            "id={} addr={} laddr={} fd={} name={} age={} idle={} flags={flags} db=0 sub={} psub={} ssub={} multi={multi} qbuf={qbuf} qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem={omem} tot-mem={omem} events=r cmd={} user={} redir={} resp={}",
            self.id,
            self.peer,
            self.local,
            self.fd,
            text(names.and_then(|n| n.name.as_ref())),
            age.as_secs(),
            idle / 1000,
            subs.channels,
            subs.patterns,
            subs.sharded,
            d.cmd.as_deref().unwrap_or("NULL"),
            d.user.as_deref().unwrap_or("default"),
            tracking.redirect,
            d.resp.max(2),
        );
        if let Some(n) = names.filter(|n| n.lib_name.is_some() || n.lib_ver.is_some()) {
            line.push_str(" lib-name=");
            line.push_str(&text(n.lib_name.as_ref()));
            line.push_str(" lib-ver=");
            line.push_str(&text(n.lib_ver.as_ref()));
        }
        line.push('\n');
        line
    }

    /// What the client is subscribed to, as it was last told.
    pub fn subscriptions(&self) -> SubscriptionCounts {
        let [channels, patterns, sharded] = &self.subscriptions;
        SubscriptionCounts {
            channels: channels.load(Ordering::Relaxed),
            patterns: patterns.load(Ordering::Relaxed),
            sharded: sharded.load(Ordering::Relaxed),
        }
    }

    /// Records what the client is subscribed to; cheap when nothing changed, as the session
    /// calls it on every turn of its loop.
    pub fn set_subscriptions(&self, counts: SubscriptionCounts) {
        let [channels, patterns, sharded] = &self.subscriptions;
        for (cell, value) in [
            (channels, counts.channels),
            (patterns, counts.patterns),
            (sharded, counts.sharded),
        ] {
            if cell.load(Ordering::Relaxed) != value {
                cell.store(value, Ordering::Relaxed);
            }
        }
    }

    /// Whether a blocking command of this client waits on a node now.
    pub fn is_blocked(&self) -> bool {
        self.paused.load(Ordering::Relaxed) || self.blocked_on().is_some()
    }

    /// Where this client's blocking command waits, if one does.
    pub fn blocked_on(&self) -> Option<BlockedOn> {
        self.blocked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_deref()
            .cloned()
    }

    /// Records where this client's blocking command waits (`Some`) or that it is done (`None`).
    pub fn set_blocked(&self, on: Option<BlockedOn>) {
        *self.blocked.lock().unwrap_or_else(|p| p.into_inner()) = on.map(Box::new);
    }

    /// Records the full name of the command the client sent last, for `cmd=` in `CLIENT LIST`.
    pub fn set_command(&self, name: &str) {
        self.details.lock().unwrap_or_else(|p| p.into_inner()).cmd = Some(name.into());
    }
}

/// Who may be killed by a `CLIENT KILL`.
#[derive(Debug, Default)]
pub struct KillFilter {
    /// `ID n`.
    pub id: Option<u64>,
    /// `ADDR ip:port`.
    pub addr: Option<String>,
    /// `LADDR ip:port`.
    pub laddr: Option<String>,
    /// `MAXAGE s`: connected longer than this.
    pub max_age_s: Option<u64>,
    /// `USER name`: logged in as this user (`default` before any login, as `CLIENT LIST`
    /// shows it).
    pub user: Option<String>,
    /// `SKIPME yes` (the default): not the caller.
    pub skip: Option<u64>,
    /// `TYPE normal|pubsub` (`Some(true)` for pubsub); `TYPE master|replica|slave` matches
    /// none of the proxy's clients, and is never built.
    pub pubsub: Option<bool>,
}

/// Wakes a session for what does not come on its socket: `CLIENT KILL`, and the proxy's
/// announcements (see [`crate::proxy::Proxy::announcements`]). One waker a session registers
/// as it waits, where a future per event source cost a registration and a removal on every
/// wait, that is, on every request at pipeline 1.
#[derive(Debug, Default)]
pub struct Signal {
    /// [`KILLED`] and [`MAIL`].
    state: AtomicU8,
    waker: AtomicWaker,
}

/// The session is asked to close.
const KILLED: u8 = 1;
/// Frames wait in the client's mailbox.
const MAIL: u8 = 2;

impl Signal {
    /// Asks the session to close the connection.
    pub fn kill(&self) {
        self.state.fetch_or(KILLED, Ordering::Release);
        self.waker.wake();
    }

    /// Whether the session was asked to close.
    pub fn is_killed(&self) -> bool {
        self.state.load(Ordering::Acquire) & KILLED != 0
    }

    /// Whether frames wait in the client's mailbox (see [`ClientRegistry::post`]): read on
    /// every turn of an active session.
    pub fn has_mail(&self) -> bool {
        self.state.load(Ordering::Acquire) & MAIL != 0
    }

    /// Wakes the session, wherever it waits.
    pub fn wake(&self) {
        self.waker.wake();
    }

    /// Registers the waiting session's waker; look at what to wait for after this.
    pub fn register(&self, cx: &mut std::task::Context<'_>) {
        self.waker.register(cx.waker());
    }
}

/// Every connected client, by id.
#[derive(Debug, Default)]
pub struct ClientRegistry {
    clients: Mutex<HashMap<u64, Arc<ClientHandle>>>,
    /// The mailboxes that hold frames, by client id: kept here rather than in each client's
    /// entry, as few clients ever get mail.
    mail: Mutex<HashMap<u64, Mailbox>>,
}

impl ClientRegistry {
    /// Adds a client, connected from `peer` to the proxy's `local` on its socket `fd`; it is
    /// removed when the returned guard drops.
    pub fn register(
        self: &Arc<Self>,
        id: u64,
        peer: SocketAddr,
        local: SocketAddr,
        fd: i32,
    ) -> Registered {
        let handle = Arc::new(ClientHandle {
            id,
            peer,
            local,
            fd,
            connected_at: Instant::now(),
            last_active_ms: AtomicU64::new(0),
            owed_bytes: AtomicU64::new(0),
            details: Mutex::new(ClientDetails {
                resp: 2,
                ..ClientDetails::default()
            }),
            multi: AtomicI64::new(-1),
            blocked: Mutex::new(None),
            paused: AtomicBool::new(false),
            signal: Signal::default(),
            subscribed: AtomicBool::new(false),
            subscriptions: Default::default(),
            no_evict: AtomicBool::new(false),
        });
        self.lock().insert(id, Arc::clone(&handle));
        Registered {
            registry: Arc::clone(self),
            handle,
        }
    }

    /// Posts `frame` to client `id`'s mailbox and wakes its session; false when no such client
    /// is connected. When the frames waiting would pass `limit` bytes they are all replaced by
    /// `instead`, one frame that stands for all of them (for caching: "forget everything").
    pub fn post(
        &self,
        id: u64,
        frame: Bytes,
        limit: usize,
        instead: impl FnOnce() -> Bytes,
    ) -> bool {
        // The mailbox lock first, then the client list's, as a client leaving takes them: a
        // mailbox is never made for a client that has left.
        let mut mail = self.mail.lock().unwrap_or_else(|p| p.into_inner());
        let Some(client) = self.get(id) else {
            return false;
        };
        let mailbox = mail.entry(id).or_default();
        if mailbox.bytes + frame.len() > limit {
            let instead = instead();
            mailbox.queue.clear();
            mailbox.bytes = instead.len();
            mailbox.queue.push_back(instead);
        } else {
            mailbox.bytes += frame.len();
            mailbox.queue.push_back(frame);
        }
        client.signal.state.fetch_or(MAIL, Ordering::Release);
        drop(mail);
        client.signal.wake();
        true
    }

    /// Takes every frame waiting for client `id`, in the order posted.
    pub fn take_mail(&self, id: u64, signal: &Signal) -> std::collections::VecDeque<Bytes> {
        let mut mail = self.mail.lock().unwrap_or_else(|p| p.into_inner());
        signal.state.fetch_and(!MAIL, Ordering::Release);
        mail.remove(&id).map(|m| m.queue).unwrap_or_default()
    }

    /// Every client, by id.
    pub fn list(&self) -> Vec<Arc<ClientHandle>> {
        let mut all: Vec<_> = self.lock().values().cloned().collect();
        all.sort_by_key(|c| c.id);
        all
    }

    /// The client with this id, if connected.
    pub fn get(&self, id: u64) -> Option<Arc<ClientHandle>> {
        self.lock().get(&id).cloned()
    }

    /// How many clients have a blocking command waiting on a node (`blocked_clients`).
    pub fn blocked(&self) -> usize {
        self.lock().values().filter(|c| c.is_blocked()).count()
    }

    /// Bytes of replies owed to all clients together.
    pub fn owed_bytes(&self) -> u64 {
        self.lock()
            .values()
            .map(|c| c.owed_bytes.load(Ordering::Relaxed))
            .sum()
    }

    /// Clients with subscriptions.
    pub fn subscribers(&self) -> usize {
        self.lock()
            .values()
            .filter(|c| c.subscribed.load(Ordering::Relaxed))
            .count()
    }

    /// Closes every client matching `filter`; returns how many.
    pub fn kill(&self, filter: &KillFilter) -> usize {
        let matching: Vec<Arc<ClientHandle>> = self
            .lock()
            .values()
            .filter(|c| filter.id.is_none_or(|id| c.id == id))
            .filter(|c| {
                filter
                    .addr
                    .as_ref()
                    .is_none_or(|a| c.peer.to_string() == *a)
            })
            .filter(|c| {
                filter
                    .laddr
                    .as_ref()
                    .is_none_or(|a| c.local.to_string() == *a)
            })
            .filter(|c| {
                filter
                    .max_age_s
                    .is_none_or(|s| c.connected_at.elapsed().as_secs() >= s)
            })
            .filter(|c| filter.skip != Some(c.id))
            .filter(|c| filter.pubsub.is_none_or(|p| c.subscriptions().any() == p))
            .filter(|c| {
                filter.user.as_deref().is_none_or(|wanted| {
                    let details = c.details.lock().unwrap_or_else(|p| p.into_inner());
                    details.user.as_deref().unwrap_or("default") == wanted
                })
            })
            .cloned()
            .collect();
        for client in &matching {
            client.signal.kill();
        }
        matching.len()
    }

    /// Wakes every session, to look at an announcement (a new configuration, shutdown).
    pub fn wake_all(&self) {
        for client in self.lock().values() {
            client.signal.wake();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ClientHandle>>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A client's place in the registry, given up on drop.
#[derive(Debug)]
pub struct Registered {
    registry: Arc<ClientRegistry>,
    /// The client's entry.
    pub handle: Arc<ClientHandle>,
}

impl Registered {
    /// The registry the client is in.
    pub fn registry(&self) -> &ClientRegistry {
        &self.registry
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut mail = self.registry.mail.lock().unwrap_or_else(|p| p.into_inner());
        mail.remove(&self.handle.id);
        self.registry.lock().remove(&self.handle.id);
        drop(mail);
    }
}
