//! The route table: key prefix (longest wins) -> backend, or -> backends by slot range of the
//! key's hash-tag-aware slot; every other key to the default backend. Immutable: the proxy swaps
//! a whole new table in on reload.

use bytes::Bytes;

use super::{BackendId, Route};
use crate::cluster::Slot;
use crate::config::Config;

/// Where the keys of one prefix go.
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
}

impl RouteTable {
    /// Every key to one backend: the table of a proxy with one backend and no routes.
    pub fn single(backend: BackendId) -> Self {
        RouteTable {
            default: backend,
            rules: Vec::new(),
        }
    }

    /// The table the configuration describes, for backends named `names` (a backend's id is
    /// its index there). The configuration is validated already.
    pub fn from_config(config: &Config, names: &[String]) -> RouteTable {
        let id = |name: &str| {
            names
                .iter()
                .position(|n| n == name)
                .map_or(BackendId(0), |i| BackendId(i as u16))
        };
        let default = if config.routing.default.is_empty() {
            BackendId(0)
        } else {
            id(&config.routing.default)
        };
        let rules = config
            .routing
            .routes
            .iter()
            .map(|route| PrefixRule {
                prefix: Bytes::copy_from_slice(route.prefix.as_bytes()),
                strip: route.strip_prefix,
                to: Destination::Backend(id(&route.backend)),
            })
            .collect();
        RouteTable::new(default, rules)
    }

    /// A table of `rules` over `default`.
    pub fn new(default: BackendId, rules: Vec<PrefixRule>) -> Self {
        RouteTable { default, rules }
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

    /// Where `key` goes. A key whose hash tag opens it (`{user:42}:a`) matches prefixes by the
    /// text inside the braces too, so tagged keys route with their untagged kin.
    pub fn route(&self, key: &[u8]) -> Route {
        let rule = self.longest_match(key).or_else(|| match key.split_first() {
            Some((b'{', rest)) => self.longest_match(rest),
            _ => None,
        });
        let Some(rule) = rule else {
            return Route {
                backend: self.default,
                strip: 0,
            };
        };
        let backend = match &rule.to {
            Destination::Backend(backend) => *backend,
            Destination::BySlot(by_slot) => {
                let slot = Slot::for_key(key).get();
                by_slot
                    .get(usize::from(slot))
                    .copied()
                    .unwrap_or(self.default)
            }
        };
        Route {
            backend,
            strip: if rule.strip { rule.prefix.len() } else { 0 },
        }
    }

    fn longest_match(&self, key: &[u8]) -> Option<&PrefixRule> {
        self.rules
            .iter()
            .filter(|r| key.starts_with(&r.prefix))
            .max_by_key(|r| r.prefix.len())
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
