//! Who among the proxy's clients a `PUBLISH` reaches: each subscribed client's channels and
//! patterns, with the nodes whose connections hold them, so that `PUBLISH` through the proxy
//! counts its receivers as one Redis counts its own.
//!
//! A node counts only the subscribers connected to it. The proxy holds a backend's channels
//! and patterns on one node, where `PUBLISH` goes (see `session::pubsub`), but a subscription
//! stays where it was made when that node changes; every node still delivers, as Redis Cluster
//! sends each `PUBLISH` to every node. So the count a
//! node gives misses the proxy's clients held elsewhere: they are counted here, each client's
//! channel once and each matching pattern once, as Redis counts them, and those held on the
//! node that answered are left to its own count so no one is counted twice.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;

use crate::acl::Glob;
use crate::backend::NodeAddr;

/// What one client's subscription connections hold that a `PUBLISH` may reach.
#[derive(Default)]
pub struct Holdings {
    /// Each channel, with the nodes holding it.
    pub channels: BTreeMap<Bytes, Vec<NodeAddr>>,
    /// Each pattern (compiled), with the nodes holding it.
    pub patterns: Vec<(Glob, Vec<NodeAddr>)>,
}

impl Holdings {
    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty() && self.patterns.is_empty()
    }
}

/// The holdings of every subscribed client of the proxy, by client id.
#[derive(Default)]
pub struct Subscribers {
    clients: Mutex<HashMap<u64, Holdings>>,
    /// How many clients hold something: a `PUBLISH` when none does costs no lock.
    count: AtomicUsize,
}

impl Subscribers {
    /// Puts `holdings` in force for client `id` (an empty one forgets the client).
    pub fn set(&self, id: u64, holdings: Holdings) {
        let mut clients = self.lock();
        if holdings.is_empty() {
            clients.remove(&id);
        } else {
            clients.insert(id, holdings);
        }
        self.count.store(clients.len(), Ordering::Relaxed);
    }

    /// Forgets client `id`.
    pub fn remove(&self, id: u64) {
        self.set(id, Holdings::default());
    }

    /// Whether no client holds anything.
    pub fn is_empty(&self) -> bool {
        self.count.load(Ordering::Relaxed) == 0
    }

    /// Receivers of a message to `channel` among the proxy's clients whose subscription is
    /// held on no connection to `node` (which counts those it holds itself): one per client
    /// subscribed to the channel, one per client and matching pattern.
    pub fn elsewhere(&self, channel: &[u8], node: &NodeAddr) -> u64 {
        let elsewhere = |nodes: &[NodeAddr]| !nodes.contains(node);
        let clients = self.lock();
        let mut receivers = 0u64;
        for holdings in clients.values() {
            if holdings
                .channels
                .get(channel)
                .is_some_and(|nodes| elsewhere(nodes))
            {
                receivers += 1;
            }
            receivers += holdings
                .patterns
                .iter()
                .filter(|(glob, nodes)| elsewhere(nodes) && glob.matches(channel))
                .count() as u64;
        }
        receivers
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Holdings>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holdings(channels: &[(&str, &[&str])], patterns: &[(&str, &[&str])]) -> Holdings {
        let nodes = |n: &[&str]| n.iter().map(|a| NodeAddr::new(a)).collect::<Vec<_>>();
        Holdings {
            channels: channels
                .iter()
                .map(|(c, n)| (Bytes::from(c.to_string()), nodes(n)))
                .collect(),
            patterns: patterns
                .iter()
                .map(|(p, n)| (Glob::new(p.as_bytes()), nodes(n)))
                .collect(),
        }
    }

    #[test]
    fn counts_each_receiver_held_away_from_the_answering_node_once() {
        let subscribers = Subscribers::default();
        assert!(subscribers.is_empty());
        let a = NodeAddr::new("a:1");
        // Client 1: the channel on a (counted by a), a pattern on b.
        subscribers.set(1, holdings(&[("foo.1", &["a:1"])], &[("foo.*", &["b:1"])]));
        // Client 2: two matching patterns on c, one not matching.
        subscribers.set(
            2,
            holdings(
                &[],
                &[("foo.*", &["c:1"]), ("*", &["c:1"]), ("bar.*", &["c:1"])],
            ),
        );
        // Client 3: a pattern held on every node (keyspace notifications): a counts it.
        subscribers.set(3, holdings(&[], &[("*", &["a:1", "b:1", "c:1"])]));
        assert!(!subscribers.is_empty());
        assert_eq!(subscribers.elsewhere(b"foo.1", &a), 3);
        assert_eq!(subscribers.elsewhere(b"foo.1", &NodeAddr::new("b:1")), 3);
        assert_eq!(subscribers.elsewhere(b"qux", &a), 1);
        subscribers.remove(2);
        subscribers.set(1, Holdings::default());
        assert_eq!(subscribers.elsewhere(b"foo.1", &a), 0);
        subscribers.remove(3);
        assert!(subscribers.is_empty());
    }
}
