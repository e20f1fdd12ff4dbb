//! Subscriptions held beyond the node that confirms them: a pattern on every other backend
//! (their channels are published there), and an event channel or a pattern that may match
//! keyspace notifications on every master (the notifications are published only where the key
//! is). Their confirmations are swallowed; an unsubscribe drops them everywhere.

use bytes::{Bytes, BytesMut};
use tracing::debug;

use super::notify::{is_notification, needs_every_master};
use super::sets::{Set, adds, set_of};
use super::{Link, Subscriptions};
use crate::backend::{BackendError, NodeAddr};
use crate::command::SubscriptionKind;
use crate::keyspace::BackendId;
use crate::protocol::Protocol;
use crate::protocol::array_elements;
use crate::protocol::bulk_value;
use crate::protocol::request::encode_command;
use crate::proxy::ProxyRef;

impl Subscriptions {
    /// Subscribes patterns `names` on every backend but the default one (which confirms them
    /// to the client), their confirmations swallowed.
    pub(super) async fn mirror_patterns(
        &mut self,
        proxy: ProxyRef<'_>,
        kind: SubscriptionKind,
        names: &[Bytes],
    ) {
        if set_of(kind) != Set::Patterns || proxy.backends().len() < 2 {
            return;
        }
        let default = proxy.routes().default_backend();
        for index in 0..proxy.backends().len() {
            let backend = BackendId(index as u16);
            if backend == default {
                continue;
            }
            for name in names {
                if let Err(error) = self.place(proxy, kind, name, Some(backend)).await {
                    debug!(%error, "pattern not mirrored on a backend");
                }
            }
        }
    }

    /// Holds each of `names` that needs it on every master of every backend, for the keyspace
    /// notifications published there.
    pub(super) async fn spread(
        &mut self,
        proxy: ProxyRef<'_>,
        kind: SubscriptionKind,
        names: &[Bytes],
    ) {
        let pattern = set_of(kind) == Set::Patterns;
        for name in names {
            if !adds(kind) || !needs_every_master(name, pattern) {
                continue;
            }
            if let Err(error) = self.spread_one(proxy, kind, name).await {
                debug!(%error, "notifications of a master not subscribed");
            }
        }
    }

    /// Subscribes `name` for notifications only on every master that holds it nowhere yet;
    /// the first failure is returned after trying them all.
    pub(super) async fn spread_one(
        &mut self,
        proxy: ProxyRef<'_>,
        kind: SubscriptionKind,
        name: &Bytes,
    ) -> Result<(), BackendError> {
        let set = set_of(kind);
        let mut failed = None;
        for (index, cluster) in proxy.backends().iter().enumerate() {
            let backend = BackendId(index as u16);
            let masters: Vec<NodeAddr> = cluster
                .slot_map()
                .masters()
                .iter()
                .map(|p| p.addr().clone())
                .collect();
            for node in masters {
                let held = self
                    .links
                    .iter()
                    .any(|l| *l.addr() == node && l.holds.get(set).contains(name));
                if held {
                    continue;
                }
                if let Err(error) = self
                    .place_events_only(proxy, kind, name, backend, &node)
                    .await
                {
                    failed.get_or_insert(error);
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    async fn place_events_only(
        &mut self,
        proxy: ProxyRef<'_>,
        kind: SubscriptionKind,
        name: &Bytes,
        backend: BackendId,
        node: &NodeAddr,
    ) -> Result<(), BackendError> {
        let set = set_of(kind);
        let link = self.link(proxy, backend, node).await?;
        let mut payload = BytesMut::new();
        encode_command(&mut payload, &[kind.name().as_bytes(), name]);
        link.conn.write_all(&payload).await?;
        link.holds.get_mut(set).insert(name.clone());
        link.events_only.get_mut(set).insert(name.clone());
        link.swallow.push((kind, name.clone()));
        Ok(())
    }

    /// Drops `names` (being unsubscribed) from every connection that still holds them: the
    /// confirming one has dropped them already.
    pub(super) async fn unplace_everywhere(&mut self, kind: SubscriptionKind, names: &[Bytes]) {
        let set = set_of(kind);
        for link in &mut self.links {
            for name in names {
                if !link.holds.get(set).contains(name) {
                    continue;
                }
                let mut payload = BytesMut::new();
                encode_command(&mut payload, &[kind.name().as_bytes(), name]);
                if let Err(error) = link.conn.write_all(&payload).await {
                    debug!(node = %link.addr(), %error, "unsubscribe not sent; the connection is renewed");
                }
                link.holds.get_mut(set).remove(name);
                link.events_only.get_mut(set).remove(name);
                link.swallow.push((kind, name.clone()));
            }
        }
    }
}

impl Link {
    /// Whether `frame`, a message read on this connection, is one it holds for keyspace
    /// notifications only and is no notification: the connection holding its subscription
    /// in full passes it on (a `PUBLISH` reaches every node of a cluster).
    pub(super) fn drops(&self, frame: &[u8], protocol: Protocol) -> bool {
        if self.events_only.is_empty() {
            return false;
        }
        let Some(parts) = array_elements(frame, protocol) else {
            return false;
        };
        let text = |i: usize| parts.get(i).and_then(|p| bulk_value(p));
        let (set, name, channel) = match text(0) {
            Some(b"message") => (Set::Channels, text(1), text(1)),
            Some(b"pmessage") => (Set::Patterns, text(1), text(2)),
            _ => return false,
        };
        match (name, channel) {
            (Some(name), Some(channel)) => {
                self.events_only.get(set).contains(name) && !is_notification(channel)
            }
            _ => false,
        }
    }
}
