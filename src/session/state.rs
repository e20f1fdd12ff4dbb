//! What the proxy remembers of one client between its requests: identity, protocol, the
//! transaction being queued, its database, and its entry in the proxy's client list.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;

use super::{own, txn};
use crate::clients::Registered;
use crate::protocol::Protocol;

/// What the proxy remembers of one client.
#[derive(Debug)]
pub struct ClientState {
    /// `CLIENT ID`.
    pub id: u64,
    /// Protocol chosen with `HELLO`.
    pub protocol: Protocol,
    /// `CLIENT SETNAME`.
    pub name: Option<Bytes>,
    /// `CLIENT SETINFO LIB-NAME`.
    pub lib_name: Option<Bytes>,
    /// `CLIENT SETINFO LIB-VER`.
    pub lib_ver: Option<Bytes>,
    /// The client's address.
    pub peer: SocketAddr,
    /// Which shared backend connection this client uses on each node.
    pub affinity: usize,
    /// The database chosen with `SELECT` (only backends without slots have others than 0).
    pub db: u8,
    /// When the connection was accepted.
    pub connected_at: Instant,
    /// Scratch list of the current request's key positions, reused across requests.
    pub(super) positions: Vec<usize>,
    /// The transaction being queued after `MULTI`.
    pub(super) txn: Option<txn::Txn>,
    /// The slot of the client's last write, where `WAIT` goes.
    pub(super) last_write: Option<crate::keyspace::Place>,
    /// The slot of the keys under `WATCH`, if any.
    pub(super) watched: Option<crate::keyspace::Place>,
    /// The client's own backend connection, for blocking commands and transactions.
    pub(super) own: Option<own::OwnConnection>,
    /// Whether the client has (or has asked for) subscriptions.
    pub(super) subscribed: bool,
    /// `RESET` was asked: drop subscriptions and the own connection.
    pub(super) reset: bool,
    /// Whether the client may run commands: gave the password, or none is configured.
    pub authenticated: bool,
    /// `CLIENT REPLY`: whether replies are sent.
    pub reply_mode: ReplyMode,
    /// This client's entry in the proxy's client list.
    pub(super) registered: Registered,
    /// What the last dispatched request was, for its counters and latency.
    pub(super) dispatched: super::tally::Dispatched,
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
        details.name = self.name.clone();
        details.lib_name = self.lib_name.clone();
        details.lib_ver = self.lib_ver.clone();
        details.resp = if self.protocol == Protocol::Resp3 {
            3
        } else {
            2
        };
    }

    /// This client's entry in the proxy's client list.
    pub fn handle(&self) -> &crate::clients::ClientHandle {
        &self.registered.handle
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
    pub(super) fn new(
        id: u64,
        peer: SocketAddr,
        authenticated: bool,
        registered: Registered,
    ) -> Self {
        ClientState {
            id,
            protocol: Protocol::Resp2,
            name: None,
            lib_name: None,
            lib_ver: None,
            peer,
            affinity: id as usize,
            db: 0,
            connected_at: Instant::now(),
            positions: Vec::new(),
            txn: None,
            watched: None,
            last_write: None,
            own: None,
            subscribed: false,
            reset: false,
            authenticated,
            reply_mode: ReplyMode::On,
            registered,
            dispatched: super::tally::Dispatched::default(),
        }
    }
}
