//! The route table: key prefix (longest wins) -> backend, or -> backends by slot range of the
//! key's hash-tag-aware slot; every other key to the default backend. Immutable: the proxy swaps
//! a whole new table in on reload.
//!
//! The longest match is a walk down a byte trie ([`super::trie`]) built with the table, so its
//! cost follows the key's length, not the number of rules.

use std::sync::Arc;

use bytes::Bytes;

use super::moving::Moving;
use super::trie::{Match, PrefixTrie};
use super::{BackendId, Route};
use crate::config::{Config, RouteConfig};
use crate::slot::hash_tag;
use crate::slot::{SLOT_COUNT, Slot};

/// Where the keys of one prefix go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// All to one backend.
    Backend(BackendId),
    /// By the key's slot: entry `s` is the backend of slot `s` (16384 entries).
    BySlot(Box<[BackendId]>),
    /// On their way from one backend to another ([`crate::migrate`]): each request passes the
    /// migration's gate, which says where it goes. Readers that do not ask see the source.
    Moving(Arc<Moving>),
}

impl Destination {
    /// Whether keys of this destination may be on `backend`.
    fn may_be_on(&self, backend: BackendId, slot: Option<u16>) -> bool {
        match self {
            Destination::Backend(b) => *b == backend,
            Destination::BySlot(by_slot) => match slot {
                Some(slot) => by_slot.get(usize::from(slot)) == Some(&backend),
                None => by_slot.contains(&backend),
            },
            Destination::Moving(moving) => moving.from == backend || moving.to == backend,
        }
    }
}

/// A migration's mark on the routes: its prefix, and where its keys go meanwhile (or, once
/// it is done, for good).
#[derive(Debug, Clone)]
pub struct Overlay {
    /// The keys that move: those starting with it.
    pub prefix: Bytes,
    /// [`Destination::Moving`] while they move, [`Destination::Backend`] once moved.
    pub to: Destination,
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

/// What the migrations lay over the configuration's routes (see [`crate::migrate`]).
#[derive(Debug, Default, Clone)]
pub struct Marks {
    /// Each migration's mark.
    pub overlays: Vec<Overlay>,
    /// Every key's gate, while this replica has lost sight of the migrations' state.
    pub fence: Option<Arc<Moving>>,
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
    /// Whether some rule's keys are moving: only then is [`RouteTable::moving`] asked.
    moving: bool,
    /// Every key's gate, when this replica has lost sight of the migrations' state: it may
    /// have missed one that began meanwhile, so no key is served.
    fence: Option<Arc<Moving>>,
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
        let moving = rules.iter().any(|r| matches!(r.to, Destination::Moving(_)));
        RouteTable {
            default,
            rules,
            trie,
            unslotted: Vec::new(),
            moving,
            fence: None,
        }
    }

    /// This table with each migration's mark laid over it: a migration of a configured
    /// prefix takes its rule's place (keeping whether it strips), one of another prefix adds
    /// a rule that does not strip.
    pub fn with_overlays(&self, overlays: &[Overlay], fence: Option<&Arc<Moving>>) -> RouteTable {
        let mut rules = self.rules.clone();
        for overlay in overlays {
            match rules.iter_mut().find(|r| r.prefix == overlay.prefix) {
                Some(rule) => rule.to = overlay.to.clone(),
                None => rules.push(PrefixRule {
                    prefix: overlay.prefix.clone(),
                    strip: false,
                    to: overlay.to.clone(),
                }),
            }
        }
        let mut table = RouteTable::new(self.default, rules);
        table.unslotted = self.unslotted.clone();
        table.fence = fence.cloned();
        table.moving |= table.fence.is_some();
        table
    }

    /// This table with the keys of `moving` routed to `side` (where a request that passed its
    /// gate goes).
    pub fn resolved(&self, moving: &Arc<Moving>, side: BackendId) -> RouteTable {
        let rules = self
            .rules
            .iter()
            .map(|rule| match &rule.to {
                Destination::Moving(m) if Arc::ptr_eq(m, moving) => PrefixRule {
                    to: Destination::Backend(side),
                    ..rule.clone()
                },
                _ => rule.clone(),
            })
            .collect();
        let mut table = RouteTable::new(self.default, rules);
        table.unslotted = self.unslotted.clone();
        table
    }

    /// Whether the keys of some rule are moving between backends, or every key is fenced.
    #[inline]
    pub fn has_moving(&self) -> bool {
        self.moving
    }

    /// The migration `key` is part of, if its rule's keys are moving; every key's fence when
    /// there is one.
    pub fn moving(&self, key: &[u8]) -> Option<&Arc<Moving>> {
        if let Some(fence) = &self.fence {
            return Some(fence);
        }
        match &self.rule_of(key)?.0.to {
            Destination::Moving(moving) => Some(moving),
            _ => None,
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
        self.rules
            .iter()
            .any(|rule| rule.strip && rule.to.may_be_on(backend, None))
    }

    /// Whether every key goes to the default backend (no rules, no fence): routing costs
    /// nothing.
    pub fn is_single(&self) -> bool {
        self.rules.is_empty() && self.fence.is_none()
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
        let Some((rule, literal)) = self.rule_of(key) else {
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
            Destination::Moving(moving) => moving.from,
        };
        Route {
            backend,
            strip: if rule.strip && literal {
                rule.prefix.len()
            } else {
                0
            },
        }
    }

    /// The rule `key` follows (see [`RouteTable::route`]), and whether it matched the key as
    /// written (else its hash tag).
    #[inline]
    fn rule_of(&self, key: &[u8]) -> Option<(&PrefixRule, bool)> {
        match self.trie.longest(key, Match::Literal) {
            Some(found) => self.rules.get(found).map(|rule| (rule, true)),
            None if key.first() == Some(&b'{') => hash_tag(key)
                .and_then(|tag| self.trie.longest(tag, Match::Tag))
                .and_then(|found| self.rules.get(found))
                .map(|rule| (rule, false)),
            None => None,
        }
    }

    /// Whether keys in hash slot `slot` may be routed to `backend`: it is the default (keys no
    /// rule matches are in every slot), a rule sends all its keys there, or a slot split sends
    /// that slot there. What `/ready` waits for a backend to serve.
    pub fn routes_slot_to(&self, backend: BackendId, slot: u16) -> bool {
        self.default == backend
            || self
                .rules
                .iter()
                .any(|rule| rule.to.may_be_on(backend, Some(slot)))
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
            .find(|r| {
                r.strip
                    && matches!(r.to, Destination::Backend(_) | Destination::Moving(_))
                    && r.to.may_be_on(backend, None)
            })
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
        self.lands_here(key, route.backend)
            && (route.strip > 0) == self.strips
            && !super::is_reserved(key.get(route.strip..).unwrap_or_default())
    }

    /// Whether a key routed to `backend` may be on this one: it is that one, or the key is
    /// moving between the two.
    fn lands_here(&self, key: &[u8], backend: BackendId) -> bool {
        backend == self.backend
            || (self.table.has_moving()
                && self
                    .table
                    .moving(key)
                    .is_some_and(|moving| moving.to == self.backend))
    }

    /// Whether `key`, as clients name it, is looked for on the backend.
    pub fn reaches(&self, key: &[u8]) -> bool {
        if self.table.rules.is_empty() {
            return self.backend == self.table.default;
        }
        let route = self.table.route(key);
        self.lands_here(key, route.backend) && (route.strip > 0) == self.strips
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
