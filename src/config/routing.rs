//! `[routing]`: which keys go to which backend (prefix routes, slot splits, the default), and the
//! checks that make the table [`crate::keyspace::RouteTable`] builds from it unambiguous.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{Config, Problem};
use crate::slot::SLOT_COUNT;

/// The highest slot number.
const LAST_SLOT: u16 = SLOT_COUNT - 1;

/// Which keys go to which backend.
#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// The backend of every key no route matches, and of keyless commands; may be left empty
    /// when there is one backend.
    pub default: String,
    /// Prefix routes; the longest matching prefix wins.
    pub routes: Vec<RouteConfig>,
}

/// One prefix route: to one backend (`backend`), or split by slot range over several (`slots`).
#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RouteConfig {
    /// Keys starting with this text match.
    pub prefix: String,
    /// The backend of matching keys; empty when `slots` splits them.
    pub backend: String,
    /// Remove the prefix from keys before forwarding, and put it back on keys that come back.
    /// Only with `backend`.
    pub strip_prefix: bool,
    /// Matching keys split by their hash-tag-aware slot; the ranges cover 0-16383 exactly once.
    /// Empty when `backend` takes them all.
    pub slots: Vec<SlotRangeConfig>,
}

/// One range of a slot split: keys of a split prefix whose slot is in `range` go to `backend`.
#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SlotRangeConfig {
    /// `FIRST-LAST` (inclusive), or one slot number.
    pub range: String,
    /// The backend of keys whose slot is in the range.
    pub backend: String,
}

/// A slot range that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SlotRangeError {
    /// Not `FIRST-LAST` or one number.
    #[error("{0:?} is not FIRST-LAST (such as \"0-8191\") or one slot number")]
    Syntax(String),
    /// A bound past the last slot.
    #[error("{0:?} goes past slot {LAST_SLOT}")]
    TooHigh(String),
    /// `FIRST` after `LAST`.
    #[error("{0:?} starts after it ends")]
    Reversed(String),
}

impl SlotRangeConfig {
    /// The slots of `range`, both ends included.
    pub fn slots(&self) -> Result<RangeInclusive<u16>, SlotRangeError> {
        let text = self.range.trim();
        let syntax = || SlotRangeError::Syntax(self.range.clone());
        let number = |s: &str| -> Result<u16, SlotRangeError> {
            let s = s.trim();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(syntax());
            }
            match s.parse::<u16>() {
                Ok(n) if n <= LAST_SLOT => Ok(n),
                _ => Err(SlotRangeError::TooHigh(self.range.clone())),
            }
        };
        let (first, last) = match text.split_once('-') {
            Some((first, last)) => (number(first)?, number(last)?),
            None => {
                let n = number(text)?;
                (n, n)
            }
        };
        if first > last {
            return Err(SlotRangeError::Reversed(self.range.clone()));
        }
        Ok(first..=last)
    }
}

impl Config {
    /// The backend of keys no route matches: `routing.default`, or the only backend when that is
    /// left empty. `None` when neither names one (an invalid configuration).
    pub fn default_backend_name(&self) -> Option<String> {
        if !self.routing.default.is_empty() {
            return Some(self.routing.default.clone());
        }
        let mut names = self.backends.keys().chain(self.clusters.keys());
        match (names.next(), names.next()) {
            (Some(only), None) => Some(only.clone()),
            _ => None,
        }
    }
}

/// How one route or the default reaches a backend, for the stripping check.
struct Reach {
    /// Where the configuration says so (`routing.default`, `routing.routes[2]`).
    from: String,
    /// The prefix removed on the way, if any.
    stripped: Option<String>,
}

/// Reports every problem of `[routing]`, each with its key.
pub(super) fn validate_routing(config: &Config, problems: &mut Vec<Problem>) {
    let mut check = RoutingCheck::new(config, problems);
    check.default(config);
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, route) in config.routing.routes.iter().enumerate() {
        check.route(i, route, &mut seen);
    }
    check.stripping();
}

/// What checking `[routing]` carries from one part to the next: the names a route may use,
/// where the problems go, and every way each backend is reached (known only once every part
/// was read, for the stripping check).
struct RoutingCheck<'a> {
    /// Every backend and cluster name, sorted, each once.
    names: Vec<&'a String>,
    /// `names` as messages list them.
    listed: String,
    /// Every problem of the configuration, in the order found.
    problems: &'a mut Vec<Problem>,
    /// Every way each backend is reached; a stripping route must be the only way in.
    reaches: BTreeMap<String, Vec<Reach>>,
}

impl<'a> RoutingCheck<'a> {
    /// A check of `config`'s routing, reporting to `problems`.
    fn new(config: &'a Config, problems: &'a mut Vec<Problem>) -> Self {
        let names: Vec<&String> = {
            let mut all: Vec<&String> = config
                .backends
                .keys()
                .chain(config.clusters.keys())
                .collect();
            all.sort();
            all.dedup();
            all
        };
        let listed = names
            .iter()
            .map(|n| n.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        RoutingCheck {
            names,
            listed,
            problems,
            reaches: BTreeMap::new(),
        }
    }

    /// Whether a backend or cluster is called `name`.
    fn known(&self, name: &str) -> bool {
        self.names.iter().any(|n| n.as_str() == name)
    }

    /// Reports `message` under `key`.
    fn problem(&mut self, key: String, message: String) {
        self.problems.push(Problem { key, message });
    }

    /// Reports that `key` names `backend`, which does not exist, with the names that do.
    fn unknown_backend(&mut self, key: String, backend: &str) {
        let message = format!("no backend named {backend:?} (configured: {})", self.listed);
        self.problem(key, message);
    }

    /// Notes that `from` sends keys to `backend`, with `stripped` removed on the way.
    fn reach(&mut self, backend: &str, from: String, stripped: Option<String>) {
        self.reaches
            .entry(backend.to_string())
            .or_default()
            .push(Reach { from, stripped });
    }

    /// Checks `routing.default`, which may be left empty only when there is one backend.
    fn default(&mut self, config: &Config) {
        let routing = &config.routing;
        if routing.default.is_empty() {
            if self.names.len() > 1 {
                let message = format!(
                    "{} backends are configured ({}): name the one for keys no route matches",
                    self.names.len(),
                    self.listed
                );
                self.problem("routing.default".into(), message);
            }
        } else if !self.known(&routing.default) {
            self.unknown_backend("routing.default".into(), &routing.default);
        }
        if let Some(default) = config.default_backend_name() {
            self.reach(&default, "routing.default".into(), None);
        }
    }

    /// Checks route `i`: a prefix no other route has (`seen` holds the prefixes so far, with
    /// their routes), and either one backend or a slot split.
    fn route<'r>(&mut self, i: usize, route: &'r RouteConfig, seen: &mut BTreeMap<&'r str, usize>) {
        if route.prefix.is_empty() {
            self.problem(
                route_key(i, ".prefix"),
                "must not be empty: routing.default takes the keys no route matches".into(),
            );
        } else if let Some(first) = seen.get(route.prefix.as_str()) {
            let message = format!(
                "{:?} is the prefix of routing.routes[{first}] too: one prefix, one route",
                route.prefix
            );
            self.problem(route_key(i, ".prefix"), message);
        } else {
            seen.insert(&route.prefix, i);
        }
        match (route.backend.is_empty(), route.slots.is_empty()) {
            (true, true) => self.problem(
                route_key(i, ""),
                "give backend = \"NAME\", or slots = [{ range = \"0-8191\", backend = \"NAME\" }, ...]"
                    .into(),
            ),
            (false, false) => self.problem(
                route_key(i, ""),
                "give backend or slots, not both".into(),
            ),
            (false, true) => {
                if self.known(&route.backend) {
                    let stripped = route.strip_prefix.then(|| route.prefix.clone());
                    self.reach(&route.backend, route_key(i, ""), stripped);
                } else {
                    self.unknown_backend(route_key(i, ".backend"), &route.backend);
                }
            }
            (true, false) => self.slot_split(i, route),
        }
    }

    /// Checks the slot split of route `i`: no stripping, ranges that parse and name backends,
    /// and, once every range parsed, every slot covered exactly once.
    fn slot_split(&mut self, i: usize, route: &RouteConfig) {
        if route.strip_prefix {
            self.problem(
                route_key(i, ".strip_prefix"),
                "not allowed on a slot split: route the prefix to one backend to strip it".into(),
            );
        }
        let mut ranges = Vec::new();
        for (k, range) in route.slots.iter().enumerate() {
            match range.slots() {
                Ok(slots) => ranges.push((slots, k)),
                Err(e) => self.problem(route_key(i, &format!(".slots[{k}].range")), e.to_string()),
            }
            if self.known(&range.backend) {
                self.reach(&range.backend, route_key(i, &format!(".slots[{k}]")), None);
            } else {
                self.unknown_backend(
                    route_key(i, &format!(".slots[{k}].backend")),
                    &range.backend,
                );
            }
        }
        // Coverage is only worth checking when every range parsed.
        if ranges.len() == route.slots.len() {
            for message in coverage_problems(ranges) {
                self.problem(route_key(i, ".slots"), message);
            }
        }
    }

    /// Checks that a backend reached through a stripping route is reached no other way: keys
    /// coming back from it could not be given the right prefix back.
    fn stripping(&mut self) {
        for (backend, ways) in &self.reaches {
            let Some(strip) = ways.iter().find(|w| w.stripped.is_some()) else {
                continue;
            };
            let prefix = strip.stripped.as_deref().unwrap_or_default();
            for other in ways.iter().filter(|w| w.from != strip.from) {
                let message = match &other.stripped {
                    Some(p) => format!(
                        "backend {backend:?} is reached by stripping {prefix:?} ({}) and {p:?} ({}): keys coming back from it (KEYS, SCAN, RANDOMKEY) could not be given their prefix back",
                        strip.from, other.from
                    ),
                    None => format!(
                        "backend {backend:?} gets keys with {prefix:?} stripped ({}) and keys unchanged ({}): keys coming back from it (KEYS, SCAN, RANDOMKEY) could not be told apart",
                        strip.from, other.from
                    ),
                };
                // The stripping route is the one to change: report it there.
                self.problems.push(Problem {
                    key: format!("{}.strip_prefix", strip.from),
                    message,
                });
            }
        }
    }
}

/// The key of `field` in route `i` (`field` empty: the route itself).
fn route_key(i: usize, field: &str) -> String {
    format!("routing.routes[{i}]{field}")
}

/// Gaps and overlaps among `ranges` (each with its index in `slots`), which must cover every
/// slot exactly once.
fn coverage_problems(mut ranges: Vec<(RangeInclusive<u16>, usize)>) -> Vec<String> {
    ranges.sort_by_key(|(r, _)| (*r.start(), *r.end()));
    let mut messages = Vec::new();
    // The first slot not yet covered, and which range covered the one before it.
    let mut next: u32 = 0;
    let mut previous: Option<usize> = None;
    for (range, k) in &ranges {
        let (start, end) = (u32::from(*range.start()), u32::from(*range.end()));
        if start > next {
            messages.push(format!(
                "{} not covered: the ranges must cover 0-{LAST_SLOT} exactly once",
                span(next, start - 1)
            ));
        } else if start < next {
            let other = previous.map_or(String::new(), |p| format!("slots[{p}] and "));
            messages.push(format!(
                "{} covered twice ({other}slots[{k}]): the ranges must cover 0-{LAST_SLOT} exactly once",
                span(start, end.min(next - 1))
            ));
        }
        if end + 1 > next {
            next = end + 1;
            previous = Some(*k);
        }
    }
    if next <= u32::from(LAST_SLOT) {
        messages.push(format!(
            "{} not covered: the ranges must cover 0-{LAST_SLOT} exactly once",
            span(next, u32::from(LAST_SLOT))
        ));
    }
    messages
}

/// `slots a-b are`, or `slot a is`.
fn span(first: u32, last: u32) -> String {
    if first == last {
        format!("slot {first} is")
    } else {
        format!("slots {first}-{last} are")
    }
}

#[cfg(test)]
#[path = "routing_tests.rs"]
mod tests;
