//! A subscribed client across a reload: its subscriptions move to where the new configuration
//! puts them, and the client sees nothing of it (no confirmation, no change of its counts).
//!
//! A subscription connection to a backend that carries over (same name, same settings) stays,
//! renumbered; one to a backend removed or replaced is closed and its channels are subscribed
//! again where the new routes send them. A channel whose route now leads to another backend
//! moves there. Patterns are held on every backend, added ones included. As after a failover,
//! a message published while a subscription moves may be missed.

use bytes::Bytes;
use tracing::debug;

use super::sets::Set;
use super::{Subscriptions, place_of_channel};
use crate::backend::{BackendError, NodeAddr};
use crate::command::SubscriptionKind;
use crate::keyspace::BackendId;
use crate::proxy::{ProxyRef, Snapshot};

impl Subscriptions {
    /// Moves the subscriptions made under `old` to where `new` puts them, retrying within the
    /// default backend's retry budget (a backend just added may not know its topology yet).
    /// An error means some could not be placed: the client is closed, as after a failover
    /// whose subscriptions cannot be renewed.
    pub async fn follow(&mut self, old: &Snapshot, new: ProxyRef<'_>) -> Result<(), BackendError> {
        let mut todo: Vec<(SubscriptionKind, Bytes, Option<BackendId>)> = Vec::new();
        for mut link in std::mem::take(&mut self.links) {
            match new.snapshot().carried_over(old, link.backend) {
                Some(id) => {
                    link.backend = id;
                    self.links.push(link);
                }
                // Dropping the link closes its connection, and with it its subscriptions.
                None => {
                    for name in &link.holds.channels {
                        todo.push((SubscriptionKind::Subscribe, name.clone(), None));
                    }
                    for name in &link.holds.sharded {
                        todo.push((SubscriptionKind::Ssubscribe, name.clone(), None));
                    }
                }
            }
        }
        // Channels whose route changed leave their connection for the new one.
        let mut moving: Vec<(SubscriptionKind, Bytes, BackendId)> = Vec::new();
        for link in &self.links {
            for (kind, set) in [
                (SubscriptionKind::Unsubscribe, &link.holds.channels),
                (SubscriptionKind::Sunsubscribe, &link.holds.sharded),
            ] {
                for name in set {
                    if place_of_channel(new.routes(), name).backend != link.backend {
                        moving.push((kind, name.clone(), link.backend));
                    }
                }
            }
        }
        for (kind, name, from) in moving {
            self.unplace(kind, &name, from).await?;
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
                let held = self
                    .links
                    .iter()
                    .any(|l| l.backend == id && l.holds.patterns.contains(pattern));
                if !held {
                    todo.push((SubscriptionKind::Psubscribe, pattern.clone(), Some(id)));
                }
            }
        }
        let Some(cluster) = new.default_cluster() else {
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
                return Ok(());
            }
            todo = left;
            for (_, _, backend) in &todo {
                if let Some(cluster) = backend.and_then(|id| new.backend(id)) {
                    cluster.request_refresh();
                }
            }
            let Some(delay) = attempts.next_delay() else {
                return Err(BackendError::Unreachable {
                    addr: NodeAddr::new("-"),
                    reason: format!(
                        "{} subscriptions could not be placed after a reload",
                        todo.len()
                    ),
                });
            };
            tokio::time::sleep(delay).await;
        }
    }
}
