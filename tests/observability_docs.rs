//! The README's metrics table and the Grafana dashboard agree with the metrics the proxy
//! exports (`respgate::metrics::ALL`): every metric documented and charted, and no chart on a
//! metric that does not exist.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use respgate::metrics::ALL;

fn repository_file(relative: &str) -> String {
    let path = format!("{}/{relative}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The `respgate_*` names in `text`, histogram series folded into their metric.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(found) = text[at..].find("respgate_") {
        let start = at + found;
        let end = bytes[start..]
            .iter()
            .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
            .map_or(text.len(), |n| start + n);
        let name = &text[start..end];
        let name = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .filter(|base| ALL.iter().any(|(n, ..)| n == base))
            .unwrap_or(name);
        names.insert(name.to_string());
        at = end;
    }
    names
}

#[test]
fn every_metric_is_in_the_readme_table_with_its_type() {
    let readme = repository_file("README.md");
    for (name, kind, ..) in ALL {
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `{name}` |")))
            .unwrap_or_else(|| panic!("{name} has no row in the README's metrics table"));
        assert!(row.contains(&format!("| {kind} |")), "{name}: {row}");
    }
}

#[test]
fn the_grafana_dashboard_charts_every_metric_and_only_those() {
    let text = repository_file("deploy/grafana/respgate.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let mut queried = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a PromQL expression");
            queried.extend(metric_names(expr));
        }
    }
    let known: BTreeSet<String> = ALL.iter().map(|(n, ..)| n.to_string()).collect();
    let unknown: Vec<&String> = queried.difference(&known).collect();
    assert!(unknown.is_empty(), "charted but not exported: {unknown:?}");
    let missing: Vec<&String> = known.difference(&queried).collect();
    assert!(missing.is_empty(), "exported but not charted: {missing:?}");
}
