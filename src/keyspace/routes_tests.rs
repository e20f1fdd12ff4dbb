//! Tests of the route table: longest match, hash tags, slot splits, stripping, and the trie
//! against a linear scan of the rules.

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::config::{BackendConfig, RouteConfig, SlotRangeConfig};

const MAIN: BackendId = BackendId(0);
const ARCHIVE: BackendId = BackendId(1);
const USERS_A: BackendId = BackendId(2);
const USERS_B: BackendId = BackendId(3);

fn rule(prefix: &str, strip: bool, to: BackendId) -> PrefixRule {
    PrefixRule {
        prefix: Bytes::copy_from_slice(prefix.as_bytes()),
        strip,
        to: Destination::Backend(to),
    }
}

fn to(backend: BackendId) -> Route {
    Route { backend, strip: 0 }
}

#[test]
fn one_backend_and_no_routes_is_single() {
    let table = RouteTable::single(ARCHIVE);
    assert!(table.is_single());
    assert_eq!(table.default_backend(), ARCHIVE);
    assert_eq!(table.route(b"anything"), to(ARCHIVE));
    assert_eq!(table.route(b""), to(ARCHIVE));
    assert_eq!(table.stripped_prefix(ARCHIVE), None);
}

#[test]
fn the_longest_matching_prefix_wins() {
    let table = RouteTable::new(
        MAIN,
        vec![
            rule("user:", false, USERS_A),
            rule("user:vip:", false, USERS_B),
            rule("u", false, ARCHIVE),
        ],
    );
    assert!(!table.is_single());
    assert_eq!(table.route(b"user:vip:7"), to(USERS_B));
    assert_eq!(table.route(b"user:7"), to(USERS_A));
    assert_eq!(table.route(b"user:vip"), to(USERS_A));
    assert_eq!(table.route(b"ux"), to(ARCHIVE));
    assert_eq!(table.route(b"session:1"), to(MAIN));
    assert_eq!(table.route(b""), to(MAIN));
}

#[test]
fn a_key_opening_with_its_hash_tag_routes_by_the_text_inside() {
    let table = RouteTable::new(
        MAIN,
        vec![rule("user:", false, USERS_A), rule("{x", false, ARCHIVE)],
    );
    assert_eq!(table.route(b"{user:42}:a"), to(USERS_A));
    assert_eq!(table.route(b"{user:42}:b"), to(USERS_A));
    // A rule written with the brace matches as written first.
    assert_eq!(table.route(b"{xuser:1}"), to(ARCHIVE));
    // No tag (empty or unclosed), or the tag not at the front: the key as written only.
    assert_eq!(table.route(b"{}user:1"), to(MAIN));
    assert_eq!(table.route(b"{user:1"), to(MAIN));
    assert_eq!(table.route(b"a{user:1}"), to(MAIN));
    // The prefix must lie inside the braces.
    assert_eq!(table.route(b"{user}:1"), to(MAIN));
}

#[test]
fn strip_lengths_apply_to_literal_matches_only() {
    let table = RouteTable::new(
        MAIN,
        vec![
            rule("archive:", true, ARCHIVE),
            rule("arch", false, USERS_A),
        ],
    );
    assert_eq!(
        table.route(b"archive:2019:x"),
        Route {
            backend: ARCHIVE,
            strip: 8
        }
    );
    assert_eq!(
        table.route(b"archive:"),
        Route {
            backend: ARCHIVE,
            strip: 8
        }
    );
    assert_eq!(table.route(b"archiv"), to(USERS_A));
    // Tagged: the stripping rule is skipped, the next longest non-stripping one applies.
    assert_eq!(table.route(b"{archive:1}:x"), to(USERS_A));
    assert_eq!(
        table.stripped_prefix(ARCHIVE).map(|p| &p[..]),
        Some(&b"archive:"[..])
    );
    assert_eq!(table.stripped_prefix(USERS_A), None);
    assert_eq!(table.stripped_prefix(MAIN), None);
}

fn config_with_split() -> (Config, Vec<String>) {
    let mut config = Config::default();
    let names: Vec<String> = ["main", "archive", "users-a", "users-b"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for name in &names {
        config.backends.insert(
            name.clone(),
            BackendConfig {
                seeds: vec!["h:1".into()],
                ..BackendConfig::default()
            },
        );
    }
    config.routing.default = "main".into();
    config.routing.routes = vec![
        RouteConfig {
            prefix: "archive:".into(),
            backend: "archive".into(),
            strip_prefix: true,
            ..RouteConfig::default()
        },
        RouteConfig {
            prefix: "user:".into(),
            slots: vec![
                SlotRangeConfig {
                    range: "0-8191".into(),
                    backend: "users-a".into(),
                },
                SlotRangeConfig {
                    range: "8192-16383".into(),
                    backend: "users-b".into(),
                },
            ],
            ..RouteConfig::default()
        },
    ];
    assert_eq!(config.validate(), []);
    // `backend_list` is in name order: that order gives the ids.
    let listed: Vec<String> = config.backend_list().into_iter().map(|(n, _)| n).collect();
    (config, listed)
}

#[test]
fn from_config_builds_prefix_routes_and_slot_splits() {
    let (config, names) = config_with_split();
    let id = |name: &str| BackendId(names.iter().position(|n| n == name).unwrap() as u16);
    let table = RouteTable::from_config(&config, &names);
    assert_eq!(table.default_backend(), id("main"));
    assert_eq!(table.route(b"other"), to(id("main")));
    assert_eq!(
        table.route(b"archive:1"),
        Route {
            backend: id("archive"),
            strip: 8
        }
    );
    assert_eq!(
        table.stripped_prefix(id("archive")).map(|p| &p[..]),
        Some(&b"archive:"[..])
    );
    for n in 0..500 {
        let key = format!("user:{n}");
        let slot = Slot::for_key(key.as_bytes()).get();
        let expected = if slot < 8192 {
            id("users-a")
        } else {
            id("users-b")
        };
        assert_eq!(
            table.route(key.as_bytes()),
            to(expected),
            "{key} (slot {slot})"
        );
        // The tagged kin hash to the same slot, so they land with the plain key.
        for suffix in [":a", ":b"] {
            let tagged = format!("{{{key}}}{suffix}");
            assert_eq!(table.route(tagged.as_bytes()), to(expected), "{tagged}");
        }
    }
    assert!(matches!(
        table.rules().get(1).map(|r| &r.to),
        Some(Destination::BySlot(by_slot)) if by_slot.len() == usize::from(SLOT_COUNT)
    ));
}

#[test]
fn from_config_with_one_backend_is_single() {
    let mut config = Config::default();
    config
        .backends
        .insert("only".into(), BackendConfig::default());
    let table = RouteTable::from_config(&config, &["only".to_string()]);
    assert!(table.is_single());
    assert_eq!(table.default_backend(), BackendId(0));
}

/// The reference: every rule tried in turn, as the specification reads.
fn naive(rules: &[PrefixRule], default: BackendId, key: &[u8]) -> Route {
    let longest = |text: &[u8], tag: bool| {
        rules
            .iter()
            .enumerate()
            .filter(|(_, r)| text.starts_with(&r.prefix) && !(tag && r.strip))
            // Longest, and of equal prefixes the first.
            .max_by_key(|(i, r)| (r.prefix.len(), std::cmp::Reverse(*i)))
            .map(|(_, r)| r)
    };
    let (rule, literal) = match longest(key, false) {
        Some(r) => (Some(r), true),
        None => {
            let tagged = match crate::slot::hash_tag(key) {
                Some(tag) if key.first() == Some(&b'{') => longest(tag, true),
                _ => None,
            };
            (tagged, false)
        }
    };
    match rule {
        None => Route {
            backend: default,
            strip: 0,
        },
        Some(r) => Route {
            backend: match &r.to {
                Destination::Backend(b) => *b,
                Destination::BySlot(by) => by[usize::from(Slot::for_key(key).get())],
                Destination::Moving(m) => m.from,
            },
            strip: if r.strip && literal {
                r.prefix.len()
            } else {
                0
            },
        },
    }
}

/// Short strings over few bytes, braces included, so prefixes nest, repeat and form tags.
fn text(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(b"ab:{}".to_vec()), 0..max)
}

fn rules() -> impl Strategy<Value = Vec<PrefixRule>> {
    let destination = prop_oneof![
        4 => (0u16..4).prop_map(|b| Destination::Backend(BackendId(b))),
        1 => (0u16..4).prop_map(|shift| Destination::BySlot(
            (0..SLOT_COUNT).map(|s| BackendId((s + shift) % 4)).collect()
        )),
    ];
    prop::collection::vec((text(6), any::<bool>(), destination), 0..24).prop_map(|rules| {
        // One rule per prefix, as the configuration's validation requires ("one prefix, one
        // route"): the trie keeps the first rule of a prefix only.
        let mut seen = std::collections::HashSet::new();
        rules
            .into_iter()
            .filter(|(prefix, _, _)| seen.insert(prefix.clone()))
            .map(|(prefix, strip, to)| PrefixRule {
                prefix: Bytes::from(prefix),
                strip,
                to,
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn the_trie_agrees_with_a_linear_scan(
        rules in rules(),
        keys in prop::collection::vec(text(10), 1..32),
    ) {
        let table = RouteTable::new(BackendId(7), rules.clone());
        for key in &keys {
            prop_assert_eq!(table.route(key), naive(&rules, BackendId(7), key), "key {:?}", String::from_utf8_lossy(key));
        }
    }
}

#[test]
fn a_key_reaches_the_backend_it_was_found_on_only_where_its_route_leads() {
    let table = RouteTable::new(
        MAIN,
        vec![
            rule("archive:", true, ARCHIVE),
            rule("user:", false, USERS_A),
        ],
    );
    let on = |backend| table.reachable_on(backend);
    assert!(on(MAIN).reaches(b"plain"));
    assert!(!on(ARCHIVE).reaches(b"plain"), "another application's key");
    assert!(on(USERS_A).reaches(b"user:1"));
    assert!(
        !on(MAIN).reaches(b"user:1"),
        "left behind by a route change"
    );
    // A stripping backend's keys, their prefix put back.
    assert!(on(ARCHIVE).reaches(b"archive:2024"));
    assert!(!on(MAIN).reaches(b"archive:2024"));
    assert!(!on(MAIN).is_everything(), "rules exist");

    // Several backends and no rule: only the default's keys are reached.
    let table = RouteTable::new(MAIN, Vec::new());
    assert!(table.reachable_on(MAIN).is_everything());
    assert!(!table.reachable_on(ARCHIVE).is_everything());
    assert!(!table.reachable_on(ARCHIVE).reaches(b"user:1"));
}

#[test]
fn a_migrations_mark_takes_its_prefixs_place_and_both_sides_are_reachable() {
    use crate::keyspace::{Moving, Overlay, Way};
    use std::sync::Arc;
    let table = RouteTable::new(
        BackendId(0),
        vec![PrefixRule {
            prefix: Bytes::from_static(b"archive:"),
            strip: true,
            to: Destination::Backend(BackendId(1)),
        }],
    );
    assert!(!table.has_moving());
    let moving = Arc::new(Moving::new(
        "m".into(),
        BackendId(1),
        BackendId(2),
        Way::Hold,
    ));
    let marked = table.with_overlays(
        &[
            Overlay {
                prefix: Bytes::from_static(b"archive:"),
                to: Destination::Moving(Arc::clone(&moving)),
            },
            Overlay {
                prefix: Bytes::from_static(b"user:"),
                to: Destination::Backend(BackendId(2)),
            },
        ],
        None,
    );
    assert!(marked.has_moving());
    assert!(
        marked
            .moving(b"archive:1")
            .is_some_and(|m| Arc::ptr_eq(m, &moving))
    );
    assert!(marked.moving(b"user:1").is_none());
    // Readers that do not ask see the source, the prefix still stripped.
    let route = marked.route(b"archive:1");
    assert_eq!((route.backend, route.strip), (BackendId(1), 8));
    assert_eq!(marked.route(b"user:1").backend, BackendId(2));
    assert_eq!(marked.route(b"user:1").strip, 0);
    // A listing shows a moving key on either side, and nowhere else.
    assert!(marked.reachable_on(BackendId(1)).shows(b"archive:1"));
    assert!(marked.reachable_on(BackendId(2)).shows(b"archive:1"));
    assert!(!marked.reachable_on(BackendId(0)).shows(b"archive:1"));
    // The table it was made from is unchanged.
    assert_eq!(table.route(b"user:1").backend, BackendId(0));
    // A fence is every key's gate, whatever its rule.
    let fence = Arc::new(Moving::new(
        "fence".into(),
        BackendId(0),
        BackendId(0),
        Way::Fenced,
    ));
    let fenced = RouteTable::single(BackendId(0)).with_overlays(&[], Some(&fence));
    assert!(fenced.has_moving() && !fenced.is_single());
    assert!(
        fenced
            .moving(b"anything")
            .is_some_and(|m| Arc::ptr_eq(m, &fence))
    );
}
