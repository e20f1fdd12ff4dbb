//! What a change of `[routing]` does to data already stored: keys whose route now leads to
//! another backend (or to the same one under another name, when `strip_prefix` changed) are
//! not moved by the change. Their values stay where they were, out of reach of the proxy, and
//! new writes start afresh on the new side. A reload says so plainly rather than let counters
//! split silently between two backends.
//!
//! The keyspace is cut into regions by every prefix of either configuration: within a region
//! (keys starting with its prefix and with no longer prefix of either), each configuration
//! applies one route, so comparing the two routes region by region, slot by slot where a route
//! splits by slot, finds every key that moves.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::RangeInclusive;

use super::Config;
use crate::slot::SLOT_COUNT;

/// Keys whose place a routing change moves, and where they were and are now routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMove {
    /// The keys' common prefix; empty for the keys no prefix route matches.
    pub prefix: String,
    /// Whether the keys are those starting with the prefix, those whose hash tag (`{...}`)
    /// does (routes match a key by its tag too, except routes that strip their prefix), or
    /// both.
    pub matched: Matched,
    /// Longer prefixes routed on their own, whose keys are not part of this move.
    pub except: Vec<String>,
    /// The slots concerned, where a slot split decides; `None` for every key of the prefix.
    pub slots: Option<RangeInclusive<u16>>,
    /// Where the keys were stored.
    pub from: Place,
    /// Where they are looked for now.
    pub to: Place,
}

/// Which keys of a prefix a move is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matched {
    /// The keys starting with the prefix.
    Keys,
    /// The keys whose hash tag starts with it.
    Tags,
    /// Both.
    KeysAndTags,
}

/// Where a key is stored: a backend, and whether the route's prefix is removed on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The backend's name.
    pub backend: String,
    /// The prefix removed from the key before it is stored, if any.
    pub stripped: Option<String>,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.stripped {
            Some(prefix) => write!(f, "backend {} (stored without {prefix:?})", self.backend),
            None => write!(f, "backend {}", self.backend),
        }
    }
}

impl fmt::Display for RouteMove {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.matched {
            _ if self.prefix.is_empty() => f.write_str("keys no prefix route matches")?,
            Matched::Keys => write!(f, "keys starting with {:?}", self.prefix)?,
            Matched::Tags => write!(f, "keys whose hash tag starts with {:?}", self.prefix)?,
            Matched::KeysAndTags => write!(
                f,
                "keys starting with {:?} or whose hash tag does",
                self.prefix
            )?,
        }
        if !self.except.is_empty() {
            let except: Vec<String> = self.except.iter().map(|p| format!("{p:?}")).collect();
            write!(f, " (other than those starting with {})", except.join(", "))?;
        }
        if let Some(slots) = &self.slots {
            write!(f, " in slots {}-{}", slots.start(), slots.end())?;
        }
        write!(
            f,
            " now route to {} instead of {}; the keys already on {} were not moved and can no \
             longer be reached through the proxy (to move a prefix's keys while it is in use, \
             run `respgate migrate start --prefix PREFIX --to BACKEND` before changing its route)",
            self.to, self.from, self.from.backend
        )
    }
}

/// A region's route in one configuration: one place, or a place per slot.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Placement<'c> {
    Whole(Place),
    BySlot(Vec<&'c str>),
}

impl Placement<'_> {
    fn at(&self, slot: usize) -> Place {
        match self {
            Placement::Whole(place) => place.clone(),
            Placement::BySlot(backends) => Place {
                backend: backends.get(slot).copied().unwrap_or_default().to_owned(),
                stripped: None,
            },
        }
    }
}

/// Every set of keys whose place differs between `old` and `new`, in prefix order: the keys
/// starting with each prefix, then those whose hash tag does.
pub fn route_moves(old: &Config, new: &Config) -> Vec<RouteMove> {
    let prefixes: BTreeSet<&str> = std::iter::once("")
        .chain(old.routing.routes.iter().map(|r| r.prefix.as_str()))
        .chain(new.routing.routes.iter().map(|r| r.prefix.as_str()))
        .collect();
    let mut moves = Vec::new();
    for &prefix in &prefixes {
        let except = nearest_longer(&prefixes, prefix);
        let mut region = Vec::new();
        for matched in [Matched::Keys, Matched::Tags] {
            // Tagged keys no route matches go where the other unmatched keys go.
            if matched == Matched::Tags && prefix.is_empty() {
                continue;
            }
            let tagged = matched == Matched::Tags;
            let (before, after) = (
                placement(old, prefix, tagged),
                placement(new, prefix, tagged),
            );
            if before != after {
                region_moves(prefix, matched, &except, &before, &after, &mut region);
            }
        }
        moves.extend(merge_tags(region));
    }
    moves
}

/// The moves of one region with each move of tagged keys folded into the same move of the
/// keys themselves, when there is one.
fn merge_tags(region: Vec<RouteMove>) -> Vec<RouteMove> {
    let (mut keys, tags): (Vec<RouteMove>, Vec<RouteMove>) =
        region.into_iter().partition(|m| m.matched == Matched::Keys);
    for tag in tags {
        let same = keys.iter_mut().find(|k| {
            k.matched == Matched::Keys
                && k.slots == tag.slots
                && k.from == tag.from
                && k.to == tag.to
        });
        match same {
            Some(key) => key.matched = Matched::KeysAndTags,
            None => keys.push(tag),
        }
    }
    keys
}

/// The prefixes of `prefixes` that extend `prefix` with none between: their keys are regions
/// of their own.
fn nearest_longer(prefixes: &BTreeSet<&str>, prefix: &str) -> Vec<String> {
    let longer: Vec<&str> = prefixes
        .range::<str, _>((
            std::ops::Bound::Excluded(prefix),
            std::ops::Bound::Unbounded,
        ))
        .take_while(|p| p.starts_with(prefix))
        .copied()
        .collect();
    longer
        .iter()
        .filter(|p| {
            !longer
                .iter()
                .any(|q| q.len() < p.len() && p.starts_with(*q))
        })
        .map(|p| (*p).to_owned())
        .collect()
}

/// The moves of one region whose placement differs: one for the whole region, or one per run
/// of slots that go from the same backend to the same other.
fn region_moves(
    prefix: &str,
    matched: Matched,
    except: &[String],
    before: &Placement<'_>,
    after: &Placement<'_>,
    moves: &mut Vec<RouteMove>,
) {
    let whole = |from: Place, to: Place| RouteMove {
        prefix: prefix.to_owned(),
        matched,
        except: except.to_vec(),
        slots: None,
        from,
        to,
    };
    if let (Placement::Whole(from), Placement::Whole(to)) = (before, after) {
        moves.push(whole(from.clone(), to.clone()));
        return;
    }
    let mut run: Option<(usize, Place, Place)> = None;
    for slot in 0..=usize::from(SLOT_COUNT) {
        let here = (slot < usize::from(SLOT_COUNT))
            .then(|| (before.at(slot), after.at(slot)))
            .filter(|(from, to)| from != to);
        let continues =
            matches!((&run, &here), (Some((_, f, t)), Some((from, to))) if f == from && t == to);
        if continues {
            continue;
        }
        if let Some((first, from, to)) = run.take() {
            let last = u16::try_from(slot - 1).unwrap_or(SLOT_COUNT - 1);
            let first = u16::try_from(first).unwrap_or(0);
            moves.push(RouteMove {
                slots: Some(first..=last),
                ..whole(from, to)
            });
        }
        run = here.map(|(from, to)| (slot, from, to));
    }
}

/// The route `config` applies to the keys of the region `prefix` (to keys whose hash tag
/// starts with it, when `tagged`): its longest prefix route that `prefix` starts with, else
/// the default. Routes that strip their prefix match keys, not tags.
fn placement<'c>(config: &'c Config, prefix: &str, tagged: bool) -> Placement<'c> {
    let route = config
        .routing
        .routes
        .iter()
        .filter(|r| prefix.starts_with(r.prefix.as_str()) && !(tagged && r.strip_prefix))
        .max_by_key(|r| r.prefix.len());
    let Some(route) = route else {
        return Placement::Whole(Place {
            backend: config.default_backend_name().unwrap_or_default(),
            stripped: None,
        });
    };
    if route.slots.is_empty() {
        return Placement::Whole(Place {
            backend: route.backend.clone(),
            stripped: route.strip_prefix.then(|| route.prefix.clone()),
        });
    }
    let mut backends = vec![""; usize::from(SLOT_COUNT)];
    for range in &route.slots {
        // A configuration that reached here was validated: its ranges parse.
        if let Ok(slots) = range.slots() {
            for slot in slots {
                if let Some(entry) = backends.get_mut(usize::from(slot)) {
                    *entry = range.backend.as_str();
                }
            }
        }
    }
    Placement::BySlot(backends)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RouteConfig, SlotRangeConfig};

    fn config(default: &str, routes: &[(&str, &str, bool)]) -> Config {
        let mut config = Config::default();
        config.routing.default = default.into();
        config.routing.routes = routes
            .iter()
            .map(|(prefix, backend, strip_prefix)| RouteConfig {
                prefix: (*prefix).into(),
                backend: (*backend).into(),
                strip_prefix: *strip_prefix,
                slots: Vec::new(),
            })
            .collect();
        config
    }

    fn split(mut config: Config, prefix: &str, ranges: &[(&str, &str)]) -> Config {
        config.routing.routes.push(RouteConfig {
            prefix: prefix.into(),
            slots: ranges
                .iter()
                .map(|(range, backend)| SlotRangeConfig {
                    range: (*range).into(),
                    backend: (*backend).into(),
                })
                .collect(),
            ..RouteConfig::default()
        });
        config
    }

    fn lines(old: &Config, new: &Config) -> Vec<String> {
        route_moves(old, new)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn the_same_routes_in_another_order_move_nothing() {
        let a = config("main", &[("a:", "x", false), ("b:", "y", false)]);
        let b = config("main", &[("b:", "y", false), ("a:", "x", false)]);
        assert!(route_moves(&a, &b).is_empty());
    }

    #[test]
    fn a_prefix_sent_elsewhere_moves_its_keys_but_not_a_longer_prefix_routed_on_its_own() {
        let old = config(
            "main",
            &[("archive:", "main", false), ("archive:hot:", "hot", false)],
        );
        let new = config(
            "main",
            &[("archive:", "cold", false), ("archive:hot:", "hot", false)],
        );
        assert_eq!(
            lines(&old, &new),
            [
                "keys starting with \"archive:\" or whose hash tag does (other than those \
                 starting with \"archive:hot:\") now route to backend cold instead of backend \
                 main; the keys already on main were not moved and can no longer be reached \
                 through the proxy (to move a prefix's keys while it is in use, run `respgate migrate start --prefix PREFIX --to BACKEND` before changing its route)"
            ]
        );
    }

    #[test]
    fn a_new_route_moves_the_keys_it_takes_from_the_default() {
        let old = config("main", &[]);
        let new = config("main", &[("user:", "users", false)]);
        let moves = route_moves(&old, &new);
        assert_eq!(moves.len(), 1, "{moves:?}");
        assert_eq!(moves[0].prefix, "user:");
        assert_eq!(moves[0].from.backend, "main");
        assert_eq!(moves[0].to.backend, "users");
        // A route to where the keys were already is no move.
        let same = config("main", &[("user:", "main", false)]);
        assert!(route_moves(&old, &same).is_empty());
    }

    #[test]
    fn stripping_the_prefix_renames_the_keys_on_the_same_backend() {
        let old = config("main", &[("t1:", "main", false)]);
        let new = config("main", &[("t1:", "main", true)]);
        let moves = route_moves(&old, &new);
        assert_eq!(moves.len(), 1);
        assert_eq!(moves[0].to.stripped.as_deref(), Some("t1:"));
        assert!(
            moves[0].to_string().contains("stored without \"t1:\""),
            "{}",
            moves[0]
        );
    }

    #[test]
    fn stripping_sends_the_tagged_keys_to_the_default_as_stripping_routes_match_keys_only() {
        let old = config("main", &[("user:", "users", false)]);
        let new = config("main", &[("user:", "users", true)]);
        let moves = route_moves(&old, &new);
        assert_eq!(moves.len(), 2, "{moves:?}");
        assert_eq!(moves[0].matched, Matched::Keys);
        assert_eq!(moves[0].to.stripped.as_deref(), Some("user:"));
        assert_eq!(moves[1].matched, Matched::Tags);
        assert_eq!(
            (moves[1].from.backend.as_str(), moves[1].to.backend.as_str()),
            ("users", "main")
        );
        assert!(
            moves[1]
                .to_string()
                .starts_with("keys whose hash tag starts with \"user:\" now route to backend main"),
            "{}",
            moves[1]
        );
    }

    #[test]
    fn a_changed_slot_split_names_the_slot_ranges_that_moved() {
        let old = split(
            config("main", &[]),
            "user:",
            &[("0-8191", "a"), ("8192-16383", "b")],
        );
        let new = split(
            config("main", &[]),
            "user:",
            &[("0-4095", "a"), ("4096-16383", "b")],
        );
        let moves = route_moves(&old, &new);
        assert_eq!(moves.len(), 1, "{moves:?}");
        assert_eq!(moves[0].slots, Some(4096..=8191));
        assert_eq!(
            (moves[0].from.backend.as_str(), moves[0].to.backend.as_str()),
            ("a", "b")
        );
        // From a whole route to a split: the slots that leave it.
        let whole = config("main", &[("user:", "a", false)]);
        let moves = route_moves(&whole, &old);
        assert_eq!(moves.len(), 1, "{moves:?}");
        assert_eq!(moves[0].slots, Some(8192..=16383));
    }

    #[test]
    fn a_new_default_moves_every_key_no_route_matches() {
        let old = config("main", &[("a:", "x", false)]);
        let new = config("other", &[("a:", "x", false)]);
        assert_eq!(
            lines(&old, &new),
            [
                "keys no prefix route matches (other than those starting with \"a:\") now route to \
              backend other instead of backend main; the keys already on main were not moved \
              and can no longer be reached through the proxy (to move a prefix's keys while it is in use, run `respgate migrate start --prefix PREFIX --to BACKEND` before changing its route)"
            ]
        );
    }
}
