//! Tests of `[routing]` validation: each rule with the key it reports.

use super::*;
use crate::config::BackendConfig;

fn backend(seed: &str) -> BackendConfig {
    BackendConfig {
        seeds: vec![seed.into()],
        ..BackendConfig::default()
    }
}

/// Backends `a`, `b` and `c`, `a` the default, no routes.
fn three() -> Config {
    let mut config = Config::default();
    for name in ["a", "b", "c"] {
        config.backends.insert(name.into(), backend("h:1"));
    }
    config.routing.default = "a".into();
    config
}

fn to(prefix: &str, backend: &str, strip: bool) -> RouteConfig {
    RouteConfig {
        prefix: prefix.into(),
        backend: backend.into(),
        strip_prefix: strip,
        slots: Vec::new(),
    }
}

/// A slot range and its backend.
type Range<'a> = (&'a str, &'a str);

fn split(prefix: &str, ranges: &[Range]) -> RouteConfig {
    RouteConfig {
        prefix: prefix.into(),
        slots: ranges
            .iter()
            .map(|(range, backend)| SlotRangeConfig {
                range: (*range).into(),
                backend: (*backend).into(),
            })
            .collect(),
        ..RouteConfig::default()
    }
}

fn problems(config: &Config) -> Vec<(String, String)> {
    config
        .validate()
        .into_iter()
        .map(|p| (p.key, p.message))
        .collect()
}

fn keys(config: &Config) -> Vec<String> {
    problems(config).into_iter().map(|(k, _)| k).collect()
}

#[test]
fn several_backends_with_prefix_routes_and_a_split_are_valid() {
    let mut config = three();
    config.routing.routes = vec![
        to("archive:", "b", true),
        to("arch", "c", false),
        split("user:", &[("0-8191", "b"), ("8192-16383", "c")]),
    ];
    // `b` is reached by stripping `archive:` and by the split unchanged: ambiguous.
    assert_eq!(keys(&config), ["routing.routes[0].strip_prefix"]);
    config.routing.routes[0].strip_prefix = false;
    assert_eq!(problems(&config), []);
}

#[test]
fn one_backend_needs_no_default_and_several_do() {
    let mut config = Config::default();
    config.backends.insert("main".into(), backend("h:1"));
    assert_eq!(problems(&config), []);
    assert_eq!(config.default_backend_name().as_deref(), Some("main"));
    config.clusters.insert("old".into(), backend("h:2"));
    let found = problems(&config);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "routing.default");
    assert!(found[0].1.contains("main, old"), "{found:?}");
}

#[test]
fn unknown_backends_are_reported_where_they_are_named() {
    let mut config = three();
    config.routing.default = "z".into();
    config.routing.routes = vec![
        to("x:", "y", false),
        split("u:", &[("0-100", "a"), ("101-16383", "w")]),
    ];
    assert_eq!(
        keys(&config),
        [
            "routing.default",
            "routing.routes[0].backend",
            "routing.routes[1].slots[1].backend"
        ]
    );
    assert!(
        problems(&config)[0]
            .1
            .contains("no backend named \"z\" (configured: a, b, c)")
    );
}

#[test]
fn identical_prefixes_are_refused_and_nested_ones_allowed() {
    let mut config = three();
    config.routing.routes = vec![
        to("user:", "b", false),
        to("user:vip:", "c", false),
        to("user:", "c", false),
    ];
    let found = problems(&config);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "routing.routes[2].prefix");
    assert!(found[0].1.contains("routing.routes[0]"), "{found:?}");
}

#[test]
fn a_route_needs_a_prefix_and_exactly_one_destination() {
    let mut config = three();
    config.routing.routes = vec![
        to("", "b", false),
        to("x:", "", false),
        RouteConfig {
            slots: vec![SlotRangeConfig {
                range: "0-16383".into(),
                backend: "b".into(),
            }],
            ..to("y:", "c", false)
        },
    ];
    assert_eq!(
        keys(&config),
        [
            "routing.routes[0].prefix",
            "routing.routes[1]",
            "routing.routes[2]"
        ]
    );
}

#[test]
fn slot_ranges_must_parse() {
    for (range, fragment) in [
        ("0-x", "is not FIRST-LAST"),
        ("", "is not FIRST-LAST"),
        ("-5", "is not FIRST-LAST"),
        ("1-2-3", "is not FIRST-LAST"),
        ("0-16384", "goes past slot 16383"),
        ("100-50", "starts after it ends"),
    ] {
        let mut config = three();
        config.routing.routes = vec![split("u:", &[(range, "b"), ("0-16383", "c")])];
        let found = problems(&config);
        assert_eq!(found.len(), 1, "{range}: {found:?}");
        assert_eq!(found[0].0, "routing.routes[0].slots[0].range");
        assert!(found[0].1.contains(fragment), "{range}: {found:?}");
    }
    let one = SlotRangeConfig {
        range: " 42 ".into(),
        backend: "b".into(),
    };
    assert_eq!(one.slots(), Ok(42..=42));
}

#[test]
fn slot_ranges_with_gaps_or_overlaps_are_refused() {
    let cases: [(&[Range], &[&str]); 4] = [
        (
            &[("0-8000", "b"), ("8192-16383", "c")],
            &["slots 8001-8191 are not covered"],
        ),
        (
            &[("0-8191", "b"), ("8000-16383", "c")],
            &["slots 8000-8191 are covered twice (slots[0] and slots[1])"],
        ),
        (
            &[("1-16383", "b"), ("16383", "c")],
            &[
                "slot 0 is not covered",
                "slot 16383 is covered twice (slots[0] and slots[1])",
            ],
        ),
        (&[("0-100", "b")], &["slots 101-16383 are not covered"]),
    ];
    for (ranges, expected) in cases {
        let mut config = three();
        config.routing.routes = vec![split("u:", ranges)];
        let found = problems(&config);
        assert_eq!(found.len(), expected.len(), "{ranges:?}: {found:?}");
        for ((key, message), fragment) in found.iter().zip(expected) {
            assert_eq!(key, "routing.routes[0].slots");
            assert!(message.contains(fragment), "{ranges:?}: {message}");
        }
    }
    let mut config = three();
    config.routing.routes = vec![split(
        "u:",
        &[("8192-16383", "c"), ("0-4095", "b"), ("4096-8191", "a")],
    )];
    assert_eq!(problems(&config), [], "order of the ranges does not matter");
}

#[test]
fn strip_prefix_is_refused_on_a_slot_split() {
    let mut config = three();
    let mut route = split("u:", &[("0-16383", "b")]);
    route.strip_prefix = true;
    config.routing.routes = vec![route];
    assert_eq!(keys(&config), ["routing.routes[0].strip_prefix"]);
}

#[test]
fn a_stripped_backend_must_be_reached_only_through_its_prefix() {
    // Two different stripping prefixes to one backend.
    let mut config = three();
    config.routing.routes = vec![to("x:", "b", true), to("y:", "b", true)];
    let found = problems(&config);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "routing.routes[0].strip_prefix");
    assert!(found[0].1.contains("\"x:\"") && found[0].1.contains("\"y:\""));
    // Stripped and unstripped to one backend (here the default).
    let mut config = three();
    config.routing.routes = vec![to("x:", "a", true)];
    let found = problems(&config);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "routing.routes[0].strip_prefix");
    assert!(found[0].1.contains("routing.default"), "{found:?}");
    // One stripping prefix, the backend's only way in: fine.
    let mut config = three();
    config.routing.routes = vec![to("x:", "b", true), to("x:y:", "c", false)];
    assert_eq!(problems(&config), []);
}

#[test]
fn the_same_name_in_both_sections_and_no_backend_at_all_are_refused() {
    let mut config = three();
    config.clusters.insert("b".into(), backend("h:9"));
    assert_eq!(keys(&config), ["clusters.b"]);
    let config = Config::default();
    assert_eq!(keys(&config), ["backends"]);
}

#[test]
fn backend_problems_name_the_section_they_are_written_in() {
    let mut config = three();
    config.backends.insert("d".into(), backend("nohost"));
    config.clusters.insert("e".into(), backend("nohost"));
    assert_eq!(keys(&config), ["clusters.e.seeds", "backends.d.seeds"]);
}
