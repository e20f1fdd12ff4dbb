//! The route table: key prefix (longest wins) -> backend, or -> backends by slot range of the
//! key's hash-tag-aware slot; every other key to the default backend. Immutable: the proxy swaps
//! a whole new table in on reload.
//!
//! The longest match is a walk down a byte trie ([`super::trie`]) built with the table, so its
//! cost follows the key's length, not the number of rules.

use bytes::Bytes;

use super::trie::{Match, PrefixTrie};
use super::{BackendId, Route};
use crate::config::{Config, RouteConfig};
use crate::slot::hash_tag;
use crate::slot::{SLOT_COUNT, Slot};

/// Where the keys of one prefix go. (Moving a prefix between backends online will add a
/// destination naming two backends, the old and the new.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// All to one backend.
    Backend(BackendId),
    /// By the key's slot: entry `s` is the backend of slot `s` (16384 entries).
    BySlot(Box<[BackendId]>),
}

/// One prefix route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixRule {
    /// Keys starting with these bytes match.
    pub prefix: Bytes,
    /// Whether the prefix is removed from keys before forwarding (and put back on keys that
    /// come back).
    pub strip: bool,
    /// Where matching keys go.
    pub to: Destination,
}

/// Key -> backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTable {
    default: BackendId,
    rules: Vec<PrefixRule>,
    /// The rules' prefixes, for the longest match; built from `rules`, never changed apart.
    trie: PrefixTrie,
    /// Backends whose keys all live on one node (Sentinel groups, standalone servers): there a
    /// command's keys have no slot to share. Indexed by backend id; missing means slotted.
    unslotted: Vec<bool>,
}

impl RouteTable {
    /// Every key to one backend: the table of a proxy with one backend and no routes.
    pub fn single(backend: BackendId) -> Self {
        RouteTable::new(backend, Vec::new())
    }

    /// The table the configuration describes, for backends named `names` (a backend's id is
    /// its index there). The configuration is validated already; a name missing from `names`
    /// (which validation refuses) falls back to backend 0.
    pub fn from_config(config: &Config, names: &[String]) -> RouteTable {
        let id = |name: &str| {
            names
                .iter()
                .position(|n| n == name)
                .and_then(|i| u16::try_from(i).ok())
                .map_or(BackendId(0), BackendId)
        };
        let default = config
            .default_backend_name()
            .map_or(BackendId(0), |name| id(&name));
        let rules = config
            .routing
            .routes
            .iter()
            .map(|route| PrefixRule {
                prefix: Bytes::copy_from_slice(route.prefix.as_bytes()),
                strip: route.strip_prefix && route.slots.is_empty(),
                to: destination(route, default, &id),
            })
            .collect();
        let mut table = RouteTable::new(default, rules);
        table.unslotted = config
            .backend_list()
            .iter()
            .map(|(_, backend)| !backend.kind.has_slots())
            .collect();
        table
    }

    /// A table of `rules` over `default`. Of rules with identical prefixes (which validation
    /// refuses) the first wins.
    pub fn new(default: BackendId, rules: Vec<PrefixRule>) -> Self {
        let trie = PrefixTrie::new(rules.iter().map(|r| (&r.prefix[..], r.strip)));
        RouteTable {
            default,
            rules,
            trie,
            unslotted: Vec::new(),
        }
    }

    /// The slot of `key` (as forwarded) on `backend`: its hash slot in a Redis Cluster, slot 0
    /// in a backend whose keys all live on one node, so that any keys there go together.
    pub fn slot_on(&self, backend: BackendId, key: &[u8]) -> Slot {
        if self
            .unslotted
            .get(backend.index())
            .copied()
            .unwrap_or(false)
        {
            Slot::ZERO
        } else {
            Slot::for_key(key)
        }
    }

    /// Whether `backend` is a Redis Cluster, whose keys spread over hash slots (not one server,
    /// nor a Sentinel group).
    pub fn has_slots(&self, backend: BackendId) -> bool {
        !self
            .unslotted
            .get(backend.index())
            .copied()
            .unwrap_or(false)
    }

    /// Whether some rule strips its prefix from keys it sends to `backend`: there keys go by
    /// other names than the client's.
    pub fn strips_into(&self, backend: BackendId) -> bool {
        self.rules.iter().any(|rule| {
            rule.strip
                && match &rule.to {
                    Destination::Backend(to) => *to == backend,
                    Destination::BySlot(to) => to.contains(&backend),
                }
        })
    }

    /// Whether every key goes to the default backend (no rules): routing costs nothing.
    pub fn is_single(&self) -> bool {
        self.rules.is_empty()
    }

    /// The backend of keys no rule matches, and of keyless commands.
    pub fn default_backend(&self) -> BackendId {
        self.default
    }

    /// The rules.
    pub fn rules(&self) -> &[PrefixRule] {
        &self.rules
    }

    /// Where `key` goes: the rule with the longest prefix of `key`, else the default backend.
    ///
    /// A key that opens with its hash tag (`{user:42}:a`) and matches no rule as written is
    /// matched by the text inside the braces (`user:42`), so tagged keys route with their
    /// untagged kin and, sharing a slot, land together on a slot split too. That second match
    /// skips stripping rules: no prefix sits at the key's front to be removed (and put back).
    #[inline]
    pub fn route(&self, key: &[u8]) -> Route {
        // One backend and no routes (the common case) costs one comparison.
        if self.rules.is_empty() {
            return Route {
                backend: self.default,
                strip: 0,
            };
        }
        let literal = self.trie.longest(key, Match::Literal);
        let rule = match literal {
            Some(found) => self.rules.get(found),
            None if key.first() == Some(&b'{') => hash_tag(key)
                .and_then(|tag| self.trie.longest(tag, Match::Tag))
                .and_then(|found| self.rules.get(found)),
            None => None,
        };
        let Some(rule) = rule else {
            return Route {
                backend: self.default,
                strip: 0,
            };
        };
        let backend = match &rule.to {
            Destination::Backend(backend) => *backend,
            Destination::BySlot(by_slot) => by_slot
                .get(usize::from(Slot::for_key(key).get()))
                .copied()
                .unwrap_or(self.default),
        };
        Route {
            backend,
            strip: if rule.strip && literal.is_some() {
                rule.prefix.len()
            } else {
                0
            },
        }
    }

    /// Whether keys in hash slot `slot` may be routed to `backend`: it is the default (keys no
    /// rule matches are in every slot), a rule sends all its keys there, or a slot split sends
    /// that slot there. What `/ready` waits for a backend to serve.
    pub fn routes_slot_to(&self, backend: BackendId, slot: u16) -> bool {
        self.default == backend
            || self.rules.iter().any(|rule| match &rule.to {
                Destination::Backend(b) => *b == backend,
                Destination::BySlot(by_slot) => by_slot.get(usize::from(slot)) == Some(&backend),
            })
    }

    /// Which of the keys found on `backend` (with any prefix stripped on the way in put back)
    /// the proxy looks for there. Keys a route sends elsewhere (left behind by a route change,
    /// or another application's keys on a shared backend) are outside the keyspace the proxy
    /// shows: `KEYS`, `SCAN` and `RANDOMKEY` leave them out, since `GET` would not find them.
    pub fn reachable_on(&self, backend: BackendId) -> Reachable<'_> {
        Reachable {
            table: self,
            backend,
            strips: self.stripped_prefix(backend).is_some(),
        }
    }

    /// The prefix a backend's keys lose on the way in, to put back on keys that come back from
    /// it (`KEYS`, `SCAN`, `RANDOMKEY`); `None` when no stripping route leads there.
    pub fn stripped_prefix(&self, backend: BackendId) -> Option<&Bytes> {
        self.rules
            .iter()
            .find(|r| r.strip && matches!(r.to, Destination::Backend(b) if b == backend))
            .map(|r| &r.prefix)
    }
}

/// The keys of one backend the routes lead to: [`RouteTable::reachable_on`], with what is
/// the same for every key worked out once.
#[derive(Debug, Clone, Copy)]
pub struct Reachable<'a> {
    table: &'a RouteTable,
    backend: BackendId,
    /// Whether a route strips its prefix on the way to the backend.
    strips: bool,
}

impl Reachable<'_> {
    /// Whether every key on the backend is reached: it is the default and no rule exists.
    pub fn is_everything(&self) -> bool {
        self.table.rules.is_empty() && self.backend == self.table.default
    }

    /// Whether `key`, as clients name it and found on the backend, is shown to clients: it is
    /// looked for there, and it is none of the proxy's own (see [`super::RESERVED`]), under
    /// either name.
    pub fn shows(&self, key: &[u8]) -> bool {
        if super::is_reserved(key) {
            return false;
        }
        if self.table.rules.is_empty() {
            return self.backend == self.table.default;
        }
        let route = self.table.route(key);
        route.backend == self.backend
            && (route.strip > 0) == self.strips
            && !super::is_reserved(key.get(route.strip..).unwrap_or_default())
    }

    /// Whether `key`, as clients name it, is looked for on the backend.
    pub fn reaches(&self, key: &[u8]) -> bool {
        if self.table.rules.is_empty() {
            return self.backend == self.table.default;
        }
        let route = self.table.route(key);
        route.backend == self.backend && (route.strip > 0) == self.strips
    }
}

/// Where a configured route's keys go: one backend, or a backend per slot from its ranges (slots
/// no range names, which validation refuses, stay on `default`).
fn destination(
    route: &RouteConfig,
    default: BackendId,
    id: &impl Fn(&str) -> BackendId,
) -> Destination {
    if route.slots.is_empty() {
        return Destination::Backend(id(&route.backend));
    }
    let mut by_slot = vec![default; usize::from(SLOT_COUNT)];
    for range in &route.slots {
        let Ok(slots) = range.slots() else {
            continue;
        };
        let backend = id(&range.backend);
        let (first, last) = (usize::from(*slots.start()), usize::from(*slots.end()));
        if let Some(entries) = by_slot.get_mut(first..=last) {
            entries.fill(backend);
        }
    }
    Destination::BySlot(by_slot.into_boxed_slice())
}

#[cfg(test)]
#[path = "routes_tests.rs"]
mod tests;
