//! What comes back on the subscription links: confirmations and messages passed on to the
//! client in order, and the subscriptions of a lost link placed again where they belong now.

use bytes::{Bytes, BytesMut};
use tracing::{debug, warn};

use super::notify::needs_every_master;
use super::sets::{Set, adds, kind_named, set_of};
use super::{Awaited, Subscriptions};
use crate::backend::BackendError;
use crate::command::SubscriptionKind;
use crate::protocol::array_elements;
use crate::protocol::bulk_value;
use crate::protocol::reply::ReplyBuf;
use crate::proxy::ProxyRef;

impl Subscriptions {
    /// The next bytes for the client: confirmations, messages. Never completes while there
    /// are no connections. An error means the subscriptions could not be renewed after a
    /// connection was lost.
    pub async fn next(&mut self, proxy: ProxyRef<'_>) -> Result<Bytes, BackendError> {
        loop {
            if self.links.is_empty() {
                return std::future::pending().await;
            }
            let (index, read) = {
                let reads = self.links.iter_mut().map(|l| Box::pin(l.conn.read_reply()));
                let (read, index, _) = futures_util::future::select_all(reads).await;
                (index, read)
            };
            match read {
                Ok(reply) => {
                    let out = self.on_frame(index, reply.bytes);
                    if self.dropped_unasked {
                        self.dropped_unasked = false;
                        self.tell_subscribers();
                    }
                    if !out.is_empty() {
                        return Ok(out);
                    }
                }
                Err(error) => {
                    warn!(%error, "subscription connection lost; subscribing again where the channels are now");
                    let renewed = Box::pin(self.renew(proxy, index)).await;
                    self.tell_subscribers();
                    renewed?;
                    let out = self.ready();
                    if !out.is_empty() {
                        return Ok(out);
                    }
                }
            }
        }
    }

    /// Takes one frame from link `index`; returns what the client can be told now.
    fn on_frame(&mut self, index: usize, frame: Bytes) -> Bytes {
        let Some(node) = self.links.get(index).map(|l| (l.backend, l.addr().clone())) else {
            return Bytes::new();
        };
        let parsed = array_elements(&frame, self.protocol).and_then(|parts| {
            let kind = kind_named(bulk_value(parts.first()?)?)?;
            let name = parts
                .get(1)
                .and_then(|n| bulk_value(n))
                .map(Bytes::copy_from_slice);
            Some((kind, name))
        });
        let Some((kind, name)) = parsed else {
            if self
                .links
                .get(index)
                .is_some_and(|l| l.drops(&frame, self.protocol))
            {
                return Bytes::new();
            }
            // A message: it waits behind confirmations still owed.
            if self.awaiting.is_empty() {
                return frame;
            }
            self.held.push(frame);
            return Bytes::new();
        };
        let owed = self.awaiting.iter_mut().find(|a| {
            !a.confirmed && a.kind == kind && a.name == name && a.node.as_ref() == Some(&node)
        });
        if let Some(entry) = owed {
            entry.confirmed = true;
            return self.ready();
        }
        if let (Some(link), Some(name)) = (self.links.get_mut(index), &name)
            && let Some(at) = link
                .swallow
                .iter()
                .position(|(k, n)| *k == kind && n == name)
        {
            link.swallow.remove(at);
            return Bytes::new();
        }
        // Unasked: Redis drops sharded channels whose slot moved away. The client hears of it
        // as it would from Redis, with its own count.
        if let (Some(link), Some(name)) = (self.links.get_mut(index), &name)
            && !adds(kind)
        {
            link.holds.get_mut(set_of(kind)).remove(name);
            self.dropped_unasked = true;
        }
        self.awaiting.push_back(Awaited {
            kind,
            name,
            node: None,
            confirmed: true,
        });
        self.ready()
    }

    /// Confirmations now due, in order, each with the client's count after it; then the
    /// messages that waited for them.
    pub(super) fn ready(&mut self) -> Bytes {
        let mut out = BytesMut::new();
        while self.awaiting.front().is_some_and(|a| a.confirmed) {
            let Some(entry) = self.awaiting.pop_front() else {
                break;
            };
            let set = set_of(entry.kind);
            if let Some(name) = &entry.name {
                if adds(entry.kind) {
                    self.client.get_mut(set).insert(name.clone());
                } else {
                    self.client.get_mut(set).remove(name);
                }
            }
            let mut reply = ReplyBuf::new(self.protocol);
            reply.push(3).bulk(entry.kind.name().as_bytes());
            match &entry.name {
                Some(name) => reply.bulk(name),
                None => reply.null(),
            };
            reply.integer(self.client.count(set) as i64);
            out.extend_from_slice(&reply.finish());
        }
        if self.awaiting.is_empty() {
            for message in self.held.drain(..) {
                out.extend_from_slice(&message);
            }
            // Connections left holding nothing are closed.
            self.links
                .retain(|l| !l.holds.is_empty() || !l.swallow.is_empty());
        }
        out.freeze()
    }

    /// Places the subscriptions of lost link `index` again where they belong now, retrying
    /// within the cluster's budget.
    async fn renew(&mut self, proxy: ProxyRef<'_>, index: usize) -> Result<(), BackendError> {
        if index >= self.links.len() {
            return Ok(());
        }
        let lost = self.links.remove(index);
        // Until placed again, what it held reaches the client no more: `PUBLISH` counts none.
        self.tell_subscribers();
        let addr = lost.addr().clone();
        let backend = lost.backend;
        let Some(cluster) = proxy.backend(backend) else {
            return Err(BackendError::Lost { addr });
        };
        // What the lost node was to confirm is taken as done: the renewal below establishes it,
        // and its own confirmations are swallowed.
        for entry in self.awaiting.iter_mut() {
            if entry.node.as_ref().is_some_and(|(_, node)| *node == addr) {
                entry.confirmed = true;
            }
        }
        // Each with whether it was held there for notifications only: those go back on every
        // master (the promoted replica among them), the others where they belong now.
        let mut orphans: Vec<(SubscriptionKind, Bytes, bool)> = Vec::new();
        for (kind, set) in [
            (SubscriptionKind::Subscribe, Set::Channels),
            (SubscriptionKind::Psubscribe, Set::Patterns),
            (SubscriptionKind::Ssubscribe, Set::Sharded),
        ] {
            let events_only = lost.events_only.get(set);
            orphans.extend(
                lost.holds
                    .get(set)
                    .iter()
                    .map(|name| (kind, name.clone(), events_only.contains(name))),
            );
        }
        let mut attempts = cluster.attempts();
        while !orphans.is_empty() {
            cluster.request_refresh();
            if !attempts.pause().await {
                if orphans.iter().all(|(_, _, events_only)| *events_only) {
                    // The client keeps every message but some node's notifications.
                    warn!(node = %addr, "keyspace notifications of a node not renewed");
                    break;
                }
                return Err(BackendError::Unreachable {
                    addr,
                    reason: format!(
                        "subscriptions could not be renewed after {} attempts",
                        attempts.retries()
                    ),
                });
            }
            let mut left = Vec::new();
            for (kind, name, events_only) in orphans {
                let placed = if events_only {
                    self.spread_one(proxy, kind, &name).await
                } else {
                    self.place(proxy, kind, &name, Some(backend)).await
                };
                if placed.is_err() {
                    left.push((kind, name, events_only));
                } else if !events_only
                    && needs_every_master(&name, set_of(kind) == Set::Patterns)
                    && self.spread_one(proxy, kind, &name).await.is_err()
                {
                    // The promoted replica needs it too, once the map names it.
                    left.push((kind, name, true));
                }
            }
            orphans = left;
        }
        debug!(node = %addr, "subscriptions renewed");
        Ok(())
    }
}
