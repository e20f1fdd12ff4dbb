//! A subscribed client across a reload: its subscriptions move to where the new configuration
//! puts them, and the client sees nothing of it (no confirmation, no change of its counts).
//!
//! A subscription connection to a backend that carries over (same name, same settings) stays,
//! renumbered; one to a backend removed or replaced is closed and its channels are subscribed
//! again where the new routes send them. A channel whose route now leads to another backend
//! moves there. Patterns are held on every backend, added ones included. What is held on every
//! master for keyspace notifications ([`super::notify`]) is held again on every master of the
//! new backends. As after a failover, a message published while a subscription moves may be
//! missed.

use bytes::{Bytes, BytesMut};
use tracing::{debug, warn};

use super::notify::needs_every_master;
use super::sets::{Set, set_of};
use super::{Link, Subscriptions, place_of_channel};
use crate::backend::{BackendError, NodeAddr};
use crate::command::SubscriptionKind;
use crate::keyspace::BackendId;
use crate::protocol::request::encode_command;
use crate::proxy::{ProxyRef, Snapshot};

impl Subscriptions {
    /// Moves the subscriptions made under `old` to where `new` puts them, retrying within the
    /// default backend's retry budget (a backend just added may not know its topology yet).
    /// An error means some could not be placed: the client is closed, as after a failover
    /// whose subscriptions cannot be renewed.
    pub async fn follow(&mut self, old: &Snapshot, new: ProxyRef<'_>) -> Result<(), BackendError> {
        let followed = self.move_to(old, new).await;
        self.tell_subscribers();
        followed
    }

    /// [`Subscriptions::follow`], but for telling the proxy's subscribers.
    async fn move_to(&mut self, old: &Snapshot, new: ProxyRef<'_>) -> Result<(), BackendError> {
        let mut todo: Vec<(SubscriptionKind, Bytes, Option<BackendId>)> = Vec::new();
        for mut link in std::mem::take(&mut self.links) {
            match new.snapshot().carried_over(old, link.backend) {
                Some(id) => {
                    link.backend = id;
                    self.links.push(link);
                }
                // Dropping the link closes its connection, and with it its subscriptions. What
                // it held for notifications only is spread again below.
                None => {
                    for name in held_in_full(&link, Set::Channels) {
                        todo.push((SubscriptionKind::Subscribe, name.clone(), None));
                    }
                    for name in held_in_full(&link, Set::Sharded) {
                        todo.push((SubscriptionKind::Ssubscribe, name.clone(), None));
                    }
                }
            }
        }
        // Channels whose route changed leave their connection for the new one.
        let mut moving: Vec<(SubscriptionKind, Bytes, NodeAddr)> = Vec::new();
        for link in &self.links {
            for (kind, set) in [
                (SubscriptionKind::Unsubscribe, Set::Channels),
                (SubscriptionKind::Sunsubscribe, Set::Sharded),
            ] {
                for name in held_in_full(link, set) {
                    if place_of_channel(new.routes(), name).backend != link.backend {
                        moving.push((kind, name.clone(), link.addr().clone()));
                    }
                }
            }
        }
        for (kind, name, from) in moving {
            self.unplace(kind, &name, &from).await?;
            let again = match kind {
                SubscriptionKind::Sunsubscribe => SubscriptionKind::Ssubscribe,
                _ => SubscriptionKind::Subscribe,
            };
            todo.push((again, name, None));
        }
        // Every backend holds every pattern.
        for index in 0..new.backends().len() {
            let Ok(id) = u16::try_from(index).map(BackendId) else {
                break;
            };
            for pattern in self.client.get(Set::Patterns) {
                let held = self.links.iter().any(|l| {
                    l.backend == id && held_in_full(l, Set::Patterns).any(|p| p == pattern)
                });
                if !held {
                    todo.push((SubscriptionKind::Psubscribe, pattern.clone(), Some(id)));
                }
            }
        }
        let Some(cluster) = new.default_backend() else {
            return Ok(());
        };
        let mut attempts = cluster.attempts();
        loop {
            let mut left = Vec::new();
            for (kind, name, backend) in todo {
                if let Err(error) = self.place(new, kind, &name, backend).await {
                    debug!(%error, "subscription not placed yet after a reload");
                    left.push((kind, name, backend));
                }
            }
            if left.is_empty() {
                self.spread_all(new).await;
                return Ok(());
            }
            todo = left;
            for (_, _, backend) in &todo {
                if let Some(cluster) = backend.and_then(|id| new.backend(id)) {
                    cluster.request_refresh();
                }
            }
            if !attempts.pause().await {
                return Err(BackendError::Unreachable {
                    addr: NodeAddr::new("-"),
                    reason: format!(
                        "{} subscriptions could not be placed after a reload",
                        todo.len()
                    ),
                });
            }
        }
    }

    /// Holds every channel and pattern that needs it on every master of the new snapshot's
    /// backends, for their keyspace notifications: the masters of backends added or replaced
    /// hold none yet. A master that cannot be reached loses only its notifications, as after
    /// a failover that cannot be renewed.
    async fn spread_all(&mut self, new: ProxyRef<'_>) {
        let mut wanted: Vec<(SubscriptionKind, Bytes)> = Vec::new();
        for (kind, set) in [
            (SubscriptionKind::Subscribe, Set::Channels),
            (SubscriptionKind::Psubscribe, Set::Patterns),
        ] {
            wanted.extend(
                self.client
                    .get(set)
                    .iter()
                    .filter(|name| needs_every_master(name, set == Set::Patterns))
                    .map(|name| (kind, name.clone())),
            );
        }
        for (kind, name) in wanted {
            if let Err(error) = self.spread_one(new, kind, &name).await {
                warn!(%error, "keyspace notifications of a master not subscribed after a reload");
            }
        }
    }

    /// Drops `name` from the connection to `node` that holds it in full, its confirmation
    /// swallowed.
    async fn unplace(
        &mut self,
        kind: SubscriptionKind,
        name: &Bytes,
        node: &NodeAddr,
    ) -> Result<(), BackendError> {
        let set = set_of(kind);
        let Some(link) = self
            .links
            .iter_mut()
            .find(|l| l.addr() == node && l.holds.get(set).contains(name))
        else {
            return Ok(());
        };
        let mut payload = BytesMut::new();
        encode_command(&mut payload, &[kind.name().as_bytes(), name]);
        link.conn.write_all(&payload).await?;
        link.holds.get_mut(set).remove(name);
        link.events_only.get_mut(set).remove(name);
        link.swallow.push((kind, name.clone()));
        Ok(())
    }
}

/// What of `set` `link` holds in full, not for keyspace notifications only.
fn held_in_full(link: &Link, set: Set) -> impl Iterator<Item = &Bytes> {
    let events_only = link.events_only.get(set);
    link.holds
        .get(set)
        .iter()
        .filter(move |name| !events_only.contains(*name))
}
