//! Pub/Sub: a client's subscriptions live on connections of its own, one per master involved.
//!
//! Redis Cluster delivers every `PUBLISH` to every node, so channels (`SUBSCRIBE`) and
//! patterns (`PSUBSCRIBE`) are held on one node of their backend, its Pub/Sub home, the node
//! every `PUBLISH` is routed to ([`home_of_channel`]): messages take one path, and arrive in the
//! order they were published, a channel's before a pattern's, as from one Redis; the home counts
//! every receiver. Sharded channels (`SSUBSCRIBE`) live on their slot's master, as Redis
//! requires. What each connection holds is told to the proxy's [`Subscribers`], so that a
//! `PUBLISH` through the proxy also counts the subscribers held on other nodes than the one it
//! went to ([`publish`]).
//!
//! Keyspace notifications are published only on the node where the key is: an event channel,
//! or a pattern that may match a notification channel, is held on every master too (see
//! [`notify`]), those extra connections passing on notifications only.
//!
//! The proxy keeps what the client is subscribed to, as one Redis would, and answers each
//! (un)subscribe in the order asked, with the counts over all its connections, once every node
//! involved has confirmed. Messages that arrive meanwhile wait behind the confirmations. When a
//! connection is lost (a failover), its subscriptions are placed again where they belong now,
//! within the cluster's retry budget; if that fails the client is closed, as Redis would.

mod follow;
mod incoming;
mod notify;
mod publish;
mod sets;
mod spread;

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tracing::debug;

pub(super) use self::notify::{home_of_channel, place_of_channel};
use self::sets::{Set, Sets, adds, set_of};
use crate::backend::{BackendError, NodeAddr, NodeConn};
use crate::clients::SubscriptionCounts;
use crate::cluster::Target;
use crate::command::SubscriptionKind;
use crate::keyspace::BackendId;
use crate::protocol::Protocol;

use crate::protocol::reply::ReplyBuf;
use crate::protocol::request::encode_command;
use crate::proxy::ProxyRef;
use crate::slot::Slot;
use crate::subscribers::{Holdings, Subscribers};

pub(super) use self::publish::{Publish, publish};

/// Commands allowed while a RESP2 client is subscribed, as in Redis.
pub const ALLOWED_WHILE_SUBSCRIBED: &[&str] = &[
    "subscribe",
    "psubscribe",
    "ssubscribe",
    "unsubscribe",
    "punsubscribe",
    "sunsubscribe",
    "ping",
    "quit",
    "reset",
];

/// One subscription connection, to one node.
struct Link {
    /// The backend the node is part of.
    backend: BackendId,
    conn: NodeConn,
    /// What this connection was asked to hold.
    holds: Sets,
    /// Confirmations of a renewal after a failover: the client saw them already.
    swallow: Vec<(SubscriptionKind, Bytes)>,
    /// What of `holds` is held here only for the keyspace notifications of this node: other
    /// messages of these come through the connection that holds them in full.
    events_only: Sets,
}

impl Link {
    fn addr(&self) -> &NodeAddr {
        self.conn.addr()
    }
}

/// A confirmation owed to the client, in the order it asked.
#[derive(Debug)]
struct Awaited {
    kind: SubscriptionKind,
    /// The channel or pattern; `None` for an unsubscribe-all with nothing to unsubscribe.
    name: Option<Bytes>,
    /// The node that must confirm it, and its backend; `None` when the proxy answers it alone.
    node: Option<(BackendId, NodeAddr)>,
    confirmed: bool,
}

/// A client's subscriptions and their connections.
pub struct Subscriptions {
    protocol: Protocol,
    /// The client's id, under which the proxy's [`Subscribers`] know what it holds.
    client_id: u64,
    /// Where what the connections hold is told, for `PUBLISH`'s count.
    subscribers: Arc<Subscribers>,
    links: Vec<Link>,
    /// What the client is subscribed to, as it has been told.
    client: Sets,
    awaiting: VecDeque<Awaited>,
    /// Messages that arrived while confirmations were owed.
    held: Vec<Bytes>,
    /// A node dropped a subscription unasked: the [`Subscribers`] are to hear of it.
    dropped_unasked: bool,
}

impl Drop for Subscriptions {
    fn drop(&mut self) {
        // The connections close with it (a client gone, `RESET`): it receives nothing more.
        self.subscribers.remove(self.client_id);
    }
}

impl Subscriptions {
    /// No subscriptions yet, for client `client_id` speaking `protocol`, whose holdings are
    /// told to `subscribers`.
    pub fn new(protocol: Protocol, client_id: u64, subscribers: Arc<Subscribers>) -> Self {
        Subscriptions {
            protocol,
            client_id,
            subscribers,
            links: Vec::new(),
            client: Sets::default(),
            awaiting: VecDeque::new(),
            held: Vec::new(),
            dropped_unasked: false,
        }
    }

    /// Whether the client is subscribed to anything, or is about to be.
    pub fn is_subscribed(&self) -> bool {
        !self.client.is_empty() || self.awaiting.iter().any(|a| adds(a.kind))
    }

    /// Whether `allowed` says yes of every channel, sharded channel and pattern (`true` for
    /// a pattern) the client is subscribed to.
    pub fn all(&self, mut allowed: impl FnMut(&[u8], bool) -> bool) -> bool {
        [Set::Channels, Set::Sharded, Set::Patterns]
            .into_iter()
            .all(|set| {
                let pattern = set == Set::Patterns;
                self.client
                    .get(set)
                    .iter()
                    .all(|name| allowed(name, pattern))
            })
    }

    /// What the client is subscribed to, as it has been told: `sub`, `psub` and `ssub` in
    /// `CLIENT LIST`.
    pub fn counts(&self) -> SubscriptionCounts {
        let count = |set: Set| u32::try_from(self.client.get(set).len()).unwrap_or(u32::MAX);
        SubscriptionCounts {
            channels: count(Set::Channels),
            patterns: count(Set::Patterns),
            sharded: count(Set::Sharded),
        }
    }

    /// Whether confirmations are still owed: the client's next requests wait until they are out.
    pub fn busy(&self) -> bool {
        !self.awaiting.is_empty()
    }

    /// Whether nothing is left: no subscription, no connection, nothing owed.
    pub fn is_done(&self) -> bool {
        self.client.is_empty() && self.awaiting.is_empty() && self.links.is_empty()
    }

    /// Starts a client's (un)subscribe of `names` (every one of that kind when empty, for the
    /// unsubscribes); returns what the client can be told at once.
    pub async fn start(
        &mut self,
        proxy: ProxyRef<'_>,
        kind: SubscriptionKind,
        names: Vec<Bytes>,
    ) -> Result<Bytes, BackendError> {
        let set = set_of(kind);
        let named = if adds(kind) || !names.is_empty() {
            names.clone()
        } else {
            self.client.get(set).iter().cloned().collect()
        };
        if adds(kind) {
            // Patterns all go where the first one goes.
            let mut pattern_home: Option<(BackendId, NodeAddr)> = None;
            for name in names {
                let node = match (&pattern_home, set) {
                    (Some(home), Set::Patterns) => home.clone(),
                    _ => self.home(proxy, set, &name, None)?,
                };
                if set == Set::Patterns {
                    pattern_home = Some(node.clone());
                }
                self.awaiting.push_back(Awaited {
                    kind,
                    name: Some(name),
                    node: Some(node),
                    confirmed: false,
                });
            }
        } else {
            let names = if names.is_empty() {
                self.client.get(set).iter().cloned().collect()
            } else {
                names
            };
            if names.is_empty() {
                self.awaiting.push_back(Awaited {
                    kind,
                    name: None,
                    node: None,
                    confirmed: true,
                });
            }
            let default = proxy.routes().default_backend();
            for name in names {
                let holds = |l: &&Link| l.holds.get(set).contains(&name);
                let node = self
                    .links
                    .iter()
                    .filter(holds)
                    .find(|l| set != Set::Patterns || l.backend == default)
                    .or_else(|| self.links.iter().find(holds))
                    .map(|l| (l.backend, l.addr().clone()));
                let confirmed = node.is_none();
                self.awaiting.push_back(Awaited {
                    kind,
                    name: Some(name),
                    node,
                    confirmed,
                });
            }
        }
        self.send_awaited(proxy, kind).await?;
        if adds(kind) {
            self.mirror_patterns(proxy, kind, &named).await;
            self.spread(proxy, kind, &named).await;
        } else {
            self.unplace_everywhere(kind, &named).await;
        }
        // Before the client hears the confirmations: a `PUBLISH` it sends next counts them.
        self.tell_subscribers();
        Ok(self.ready())
    }

    /// Tells the proxy's [`Subscribers`] what the connections hold now, channels and patterns
    /// (sharded channels hear only `SPUBLISH`, which their node counts in full).
    pub(super) fn tell_subscribers(&self) {
        let mut holdings = Holdings::default();
        let mut patterns: Vec<(&Bytes, Vec<NodeAddr>)> = Vec::new();
        for link in &self.links {
            for channel in &link.holds.channels {
                holdings
                    .channels
                    .entry(channel.clone())
                    .or_default()
                    .push(link.addr().clone());
            }
            for pattern in &link.holds.patterns {
                match patterns.iter_mut().find(|(p, _)| *p == pattern) {
                    Some((_, nodes)) => nodes.push(link.addr().clone()),
                    None => patterns.push((pattern, vec![link.addr().clone()])),
                }
            }
        }
        holdings.patterns = patterns
            .into_iter()
            .map(|(pattern, nodes)| (crate::acl::Glob::new(pattern), nodes))
            .collect();
        self.subscribers.set(self.client_id, holdings);
    }

    /// Where a new subscription of `name` goes: a channel or a pattern to the Pub/Sub home of
    /// its backend (see [`home_of_channel`]; for a pattern, `backend`, the default backend when
    /// `None`), a sharded channel to its slot's master.
    fn home(
        &self,
        proxy: ProxyRef<'_>,
        set: Set,
        name: &Bytes,
        backend: Option<BackendId>,
    ) -> Result<(BackendId, NodeAddr), BackendError> {
        let routes = proxy.routes();
        let (backend, target) = match set {
            Set::Patterns => (
                backend.unwrap_or(routes.default_backend()),
                Target::Slot(Slot::ZERO),
            ),
            Set::Channels => {
                let place = home_of_channel(routes, name);
                (place.backend, Target::Slot(place.slot))
            }
            Set::Sharded => {
                let place = place_of_channel(routes, name);
                (place.backend, Target::Slot(place.slot))
            }
        };
        let cluster = proxy
            .backend(backend)
            .ok_or_else(|| BackendError::Unreachable {
                addr: NodeAddr::new("-"),
                reason: "no backend configured".into(),
            })?;
        let node = cluster
            .node_for(&target)
            .ok_or_else(|| BackendError::Unreachable {
                addr: NodeAddr::new("-"),
                reason: cluster.unreachable_error(),
            })?;
        Ok((backend, node))
    }

    /// Sends the not yet confirmed entries of `kind` to their nodes, one command per node.
    async fn send_awaited(
        &mut self,
        proxy: ProxyRef<'_>,
        kind: SubscriptionKind,
    ) -> Result<(), BackendError> {
        let mut by_node: Vec<((BackendId, NodeAddr), Vec<Bytes>)> = Vec::new();
        for entry in self
            .awaiting
            .iter()
            .filter(|a| a.kind == kind && !a.confirmed)
        {
            let (Some(node), Some(name)) = (&entry.node, &entry.name) else {
                continue;
            };
            match by_node.iter_mut().find(|(n, _)| n == node) {
                Some((_, names)) => names.push(name.clone()),
                None => by_node.push((node.clone(), vec![name.clone()])),
            }
        }
        let set = set_of(kind);
        for ((backend, node), names) in by_node {
            let link = self.link(proxy, backend, &node).await?;
            for name in &names {
                // Asked of this node, the subscription is held here in full.
                link.events_only.get_mut(set).remove(name);
                if adds(kind) {
                    link.holds.get_mut(set).insert(name.clone());
                } else {
                    link.holds.get_mut(set).remove(name);
                }
            }
            let mut payload = BytesMut::new();
            let mut args: Vec<&[u8]> = vec![kind.name().as_bytes()];
            args.extend(names.iter().map(|n| n.as_ref()));
            encode_command(&mut payload, &args);
            // A failed write shows as a lost connection on the next read, which renews it.
            if let Err(error) = link.conn.write_all(&payload).await {
                debug!(node = %node, %error, "subscription connection failed on send");
            }
        }
        Ok(())
    }

    /// The connection to `node`, opened when there is none.
    async fn link(
        &mut self,
        proxy: ProxyRef<'_>,
        backend: BackendId,
        node: &NodeAddr,
    ) -> Result<&mut Link, BackendError> {
        let found = self.links.iter().position(|l| l.addr() == node);
        let index = match found {
            Some(index) => index,
            None => {
                let cluster = proxy
                    .backend(backend)
                    .ok_or_else(|| BackendError::Lost { addr: node.clone() })?;
                let conn = NodeConn::open(node, self.protocol, cluster.conn_settings())
                    .await?
                    .held_in(&cluster.stats.own_connections);
                self.links.push(Link {
                    backend,
                    conn,
                    holds: Sets::default(),
                    swallow: Vec::new(),
                    events_only: Sets::default(),
                });
                self.links.len() - 1
            }
        };
        self.links
            .get_mut(index)
            .ok_or_else(|| BackendError::Lost { addr: node.clone() })
    }

    /// Subscribes `name` on the node it belongs to now (a pattern: on `backend`), its
    /// confirmation swallowed.
    async fn place(
        &mut self,
        proxy: ProxyRef<'_>,
        kind: SubscriptionKind,
        name: &Bytes,
        backend: Option<BackendId>,
    ) -> Result<(), BackendError> {
        let set = set_of(kind);
        let (backend, node) = self.home(proxy, set, name, backend)?;
        let link = self.link(proxy, backend, &node).await?;
        let mut payload = BytesMut::new();
        encode_command(&mut payload, &[kind.name().as_bytes(), name]);
        link.conn.write_all(&payload).await?;
        link.holds.get_mut(set).insert(name.clone());
        // Placed here as its home, it is held in full.
        link.events_only.get_mut(set).remove(name);
        link.swallow.push((kind, name.clone()));
        Ok(())
    }
}

/// Redis's reply to `UNSUBSCRIBE`/`PUNSUBSCRIBE` from a client with no subscription.
pub fn nothing_to_unsubscribe(kind: &str, protocol: Protocol) -> Bytes {
    let (head, null) = match protocol {
        Protocol::Resp2 => ("*3", "$-1"),
        Protocol::Resp3 => (">3", "_"),
    };
    Bytes::from(format!(
        "{head}\r\n${}\r\n{kind}\r\n{null}\r\n:0\r\n",
        kind.len()
    ))
}

/// Redis's reply to `PING` from a subscribed RESP2 client: `pong` and the message, as an array.
pub fn subscribed_pong(message: Option<&[u8]>) -> Bytes {
    let mut reply = ReplyBuf::new(Protocol::Resp2);
    reply
        .array(2)
        .bulk(b"pong")
        .bulk(message.unwrap_or_default());
    reply.finish()
}
