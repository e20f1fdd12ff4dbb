//! What the proxy remembers of one client between its requests: identity, protocol, the
//! transaction being queued, its database, and its entry in the proxy's client list.

use std::net::SocketAddr;
use std::sync::Arc;

use super::{own, txn};
use crate::acl::User;
use crate::clients::{ClientNames, Registered};
use crate::command::KeyAccess;
use crate::protocol::Protocol;

/// What the proxy remembers of one client.
#[derive(Debug)]
pub struct ClientState {
    /// `CLIENT ID`.
    pub id: u64,
    /// Protocol chosen with `HELLO`.
    pub protocol: Protocol,
    /// `CLIENT SETNAME` and `CLIENT SETINFO`, if the client gave any.
    pub names: Option<Box<ClientNames>>,
    /// Which shared backend connection this client uses on each node.
    pub affinity: usize,
    /// The database chosen with `SELECT` (only backends without slots have others than 0).
    pub db: u8,
    /// Scratch list of the current request's key positions, reused across requests.
    pub(super) positions: Vec<usize>,
    /// The transaction being queued after `MULTI`.
    pub(super) txn: Option<txn::Txn>,
    /// The slot of the client's last write, where `WAIT` goes.
    pub(super) last_write: Option<crate::keyspace::Place>,
    /// The slot of the keys under `WATCH`, if any.
    pub(super) watched: Option<crate::keyspace::Place>,
    /// A reload ended the client's `WATCH` (its keys' place, its user's rights may have
    /// changed): the next `EXEC` fails as when a watched key changed.
    pub(super) watch_broken: bool,
    /// The client's own backend connection, for blocking commands and transactions.
    pub(super) own: Option<own::OwnConnection>,
    /// Whether the client has (or has asked for) subscriptions.
    pub(super) subscribed: bool,
    /// `RESET` was asked: drop subscriptions and the own connection.
    pub(super) reset: bool,
    /// Whether the client may run commands: gave the password, or none is configured.
    /// Always `user.is_some()`; kept apart as the one test every request makes.
    pub authenticated: bool,
    /// The user it is logged in as (set with [`ClientState::login`]).
    pub user: Option<Arc<User>>,
    /// Whether `user` is restricted, so that its requests are checked.
    pub(super) restricted: bool,
    /// Scratch list of the current request's key positions for the permission check.
    pub(super) acl_keys: Vec<(usize, KeyAccess)>,
    /// `CLIENT REPLY`: whether replies are sent.
    pub reply_mode: ReplyMode,
    /// This client's entry in the proxy's client list.
    pub(super) registered: Registered,
    /// What the last dispatched request was, for its counters and latency.
    pub(super) dispatched: super::tally::Dispatched,
    /// The full name of the last command, as last copied into the entry: the entry is locked
    /// only when the command changes.
    last_cmd: String,
    /// `CLIENT TRACKING ON` and its options as each request needs them (the redirect and the
    /// prefixes are in the proxy's table); empty while tracking is off.
    pub(super) tracking: TrackingFlags,
    /// `CLIENT CACHING YES` (in `OPTIN` mode) or `NO` (in `OPTOUT` mode) was given for the
    /// next command.
    pub(super) caching: bool,
}

/// A client's `CLIENT TRACKING` mode in a byte: most clients never track.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrackingFlags(u8);

impl TrackingFlags {
    const ON: u8 = 1;
    const BCAST: u8 = 2;
    const OPTIN: u8 = 4;
    const OPTOUT: u8 = 8;
    const NOLOOP: u8 = 16;

    /// The flags of `mode`, tracking on.
    pub fn of(mode: &crate::tracking::Mode) -> TrackingFlags {
        let mut flags = Self::ON;
        for (set, flag) in [
            (mode.bcast, Self::BCAST),
            (mode.optin, Self::OPTIN),
            (mode.optout, Self::OPTOUT),
            (mode.noloop, Self::NOLOOP),
        ] {
            if set {
                flags |= flag;
            }
        }
        TrackingFlags(flags)
    }

    /// Tracking is on.
    pub fn is_on(self) -> bool {
        self.0 & Self::ON != 0
    }

    /// `BCAST`.
    pub fn bcast(self) -> bool {
        self.0 & Self::BCAST != 0
    }

    /// `OPTIN`.
    pub fn optin(self) -> bool {
        self.0 & Self::OPTIN != 0
    }

    /// `OPTOUT`.
    pub fn optout(self) -> bool {
        self.0 & Self::OPTOUT != 0
    }

    /// `NOLOOP`.
    pub fn noloop(self) -> bool {
        self.0 & Self::NOLOOP != 0
    }
}

/// `CLIENT REPLY ON | OFF | SKIP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyMode {
    /// Replies are sent (the default).
    On,
    /// No reply is sent.
    Off,
    /// The next command's reply is not sent.
    Skip,
    /// This command's reply is not sent; then back to `On`.
    SkipThis,
}

impl ClientState {
    /// Copies what `CLIENT LIST` shows into the client's entry.
    pub fn publish(&self) {
        let mut details = self
            .registered
            .handle
            .details
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        details.names = self.names.clone();
        details.user = self.user.as_ref().map(|u| Arc::from(u.name.as_str()));
        details.resp = if self.protocol == Protocol::Resp3 {
            3
        } else {
            2
        };
    }

    /// Logs the client in as `user`, or out (`None`: it must authenticate).
    pub fn login(&mut self, user: Option<Arc<User>>) {
        self.authenticated = user.is_some();
        self.restricted = user.as_ref().is_some_and(|u| u.restricted());
        self.user = user;
        self.publish();
    }

    /// Whether the client's user has a twin on the nodes that its scripts must run as.
    pub(super) fn as_node_user(&self) -> bool {
        self.restricted && self.user.as_ref().is_some_and(|u| u.node_user().is_some())
    }

    /// The names the client gave itself, made on the first.
    pub(super) fn names_mut(&mut self) -> &mut ClientNames {
        self.names.get_or_insert_with(Default::default)
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.registered.handle.peer
    }

    /// This client's entry in the proxy's client list.
    pub fn handle(&self) -> &crate::clients::ClientHandle {
        &self.registered.handle
    }

    /// The full name of the client's last command.
    pub(super) fn last_command(&self) -> &str {
        &self.last_cmd
    }

    /// Notes `name` (full lowercase name, `client|list`) as the client's last command, for
    /// `CLIENT LIST`'s `cmd=`.
    pub(super) fn note_command(&mut self, name: &str) {
        if self.last_cmd != name {
            self.last_cmd.clear();
            self.last_cmd.push_str(name);
            self.registered.handle.set_command(name);
        }
    }

    /// Notes the number of commands queued in the open transaction (-1: none is open), for
    /// `CLIENT LIST`'s `multi=` and flag `x`.
    pub(super) fn note_multi(&self, queued: i64) {
        self.registered
            .handle
            .multi
            .store(queued, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the reply to the request being dispatched is to be dropped.
    pub(super) fn silenced(&mut self) -> bool {
        match self.reply_mode {
            ReplyMode::On => false,
            ReplyMode::Off => true,
            ReplyMode::Skip => {
                self.reply_mode = ReplyMode::SkipThis;
                false
            }
            ReplyMode::SkipThis => {
                self.reply_mode = ReplyMode::On;
                true
            }
        }
    }
}

impl ClientState {
    pub(super) fn new(id: u64, user: Option<Arc<User>>, registered: Registered) -> Self {
        let mut state = ClientState {
            id,
            protocol: Protocol::Resp2,
            names: None,
            affinity: id as usize,
            db: 0,
            positions: Vec::new(),
            txn: None,
            watched: None,
            watch_broken: false,
            last_write: None,
            own: None,
            subscribed: false,
            reset: false,
            authenticated: false,
            user: None,
            restricted: false,
            acl_keys: Vec::new(),
            reply_mode: ReplyMode::On,
            registered,
            dispatched: super::tally::Dispatched::default(),
            last_cmd: String::new(),
            tracking: TrackingFlags::default(),
            caching: false,
        };
        if user.is_some() {
            state.login(user);
        }
        state
    }
}
