//! The masters' `INFO` sections combined into one server's: counters and sizes summed, flags
//! and peaks the largest, times the oldest, statuses `err` when any node's is, ratios computed
//! again from the sums, per-command and per-error lines summed by name, `db<N>` lines summed
//! with their average TTL weighted by each node's keys with an expiry.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One node's `INFO` text, split into sections (lowercase name) of `field:value` lines.
#[derive(Debug, Default)]
pub struct NodeInfo {
    sections: BTreeMap<String, Vec<(String, String)>>,
}

impl NodeInfo {
    /// Parses `INFO` text as Redis writes it: `# Section` headers, `field:value` lines.
    pub fn parse(text: &str) -> NodeInfo {
        let mut info = NodeInfo::default();
        let mut current: Option<String> = None;
        for line in text.lines() {
            let line = line.trim_end_matches('\r');
            if let Some(name) = line.strip_prefix("# ") {
                let name = name.trim().to_ascii_lowercase();
                info.sections.entry(name.clone()).or_default();
                current = Some(name);
            } else if let (Some(section), Some((field, value))) = (&current, line.split_once(':'))
                && let Some(lines) = info.sections.get_mut(section)
            {
                lines.push((field.to_string(), value.to_string()));
            }
        }
        info
    }

    fn section(&self, name: &str) -> &[(String, String)] {
        self.sections.get(name).map_or(&[], Vec::as_slice)
    }
}

/// How one field combines over the masters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Sum,
    /// Summed, but 0 (no limit) when any node has no limit: `maxmemory`.
    Limit,
    Max,
    Min,
    /// `ok` unless some node says otherwise.
    Status,
    /// The first master's value: names, settings, identities.
    First,
}

/// The lines of section `name` combined over `nodes`, in the first node's order (fields only
/// some nodes have come after). The proxy's own fields (`skip`) are left out: the caller
/// writes them.
pub fn section(name: &str, nodes: &[NodeInfo], skip: &[&str]) -> Vec<(String, String)> {
    match name {
        "commandstats" | "errorstats" | "latencystats" => return by_name(name, nodes),
        "keyspace" => return keyspace(nodes),
        "replication" => return replication(nodes),
        _ => {}
    }
    let mut fields: Vec<&str> = Vec::new();
    for node in nodes {
        for (field, _) in node.section(name) {
            if !fields.contains(&field.as_str()) && !skip.contains(&field.as_str()) {
                fields.push(field);
            }
        }
    }
    let values = |field: &str| -> Vec<&str> {
        nodes
            .iter()
            .filter_map(|n| n.section(name).iter().find(|(f, _)| f == field))
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let mut out: Vec<(String, String)> = Vec::new();
    for field in &fields {
        if field.ends_with("_human") || derived(field) {
            // Written again from the combined figures below.
            out.push((field.to_string(), String::new()));
            continue;
        }
        out.push((
            field.to_string(),
            combine(rule(name, field), &values(field)),
        ));
    }
    let number = |out: &[(String, String)], f: &str| -> f64 {
        out.iter()
            .find(|(k, _)| k == f)
            .and_then(|(_, v)| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let recomputed: Vec<(String, String)> = out
        .iter()
        .map(|(field, value)| {
            let value = if let Some(base) = field.strip_suffix("_human") {
                human_bytes(number(&out, base))
            } else if derived(field) {
                let ratio = |a: &str, b: &str| {
                    let (a, b) = (number(&out, a), number(&out, b));
                    if b > 0.0 { a / b } else { 0.0 }
                };
                match field.as_str() {
                    "used_memory_peak_perc" => {
                        format!("{:.2}%", 100.0 * ratio("used_memory", "used_memory_peak"))
                    }
                    "mem_fragmentation_ratio" => {
                        format!("{:.2}", ratio("used_memory_rss", "used_memory"))
                    }
                    "allocator_frag_ratio" => {
                        format!("{:.2}", ratio("allocator_active", "allocator_allocated"))
                    }
                    "allocator_rss_ratio" => {
                        format!("{:.2}", ratio("allocator_resident", "allocator_active"))
                    }
                    "rss_overhead_ratio" => {
                        format!("{:.2}", ratio("used_memory_rss", "allocator_resident"))
                    }
                    _ => value.clone(),
                }
            } else {
                value.clone()
            };
            (field.clone(), value)
        })
        .collect();
    recomputed
}

/// Ratios computed again from the summed figures.
fn derived(field: &str) -> bool {
    matches!(
        field,
        "used_memory_peak_perc"
            | "mem_fragmentation_ratio"
            | "allocator_frag_ratio"
            | "allocator_rss_ratio"
            | "rss_overhead_ratio"
    )
}

fn rule(section: &str, field: &str) -> Rule {
    if field.ends_with("_status") {
        return Rule::Status;
    }
    match (section, field) {
        // One per node, the same everywhere: the cluster has as many as one node.
        (
            "memory",
            "number_of_cached_scripts"
            | "number_of_functions"
            | "number_of_libraries"
            | "active_defrag_running",
        ) => Rule::Max,
        // Settings and facts of the machine, not quantities of data.
        ("memory", "total_system_memory" | "maxmemory_policy" | "mem_allocator") => Rule::First,
        // The cluster holds as much as its masters together; a node without a limit makes
        // the whole unlimited.
        ("memory", "maxmemory") => Rule::Limit,
        ("memory", "used_memory_dataset_perc") => Rule::First,
        ("memory", _) => Rule::Sum,
        ("persistence", "rdb_last_save_time") => Rule::Min,
        (
            "persistence",
            "rdb_changes_since_last_save"
            | "rdb_saves"
            | "aof_rewrites"
            | "current_save_keys_processed"
            | "current_save_keys_total"
            | "rdb_last_load_keys_expired"
            | "rdb_last_load_keys_loaded"
            | "aof_rewrites_consecutive_failures",
        ) => Rule::Sum,
        ("persistence", _) => Rule::Max,
        // Patterns are held on every master: the most any node has.
        ("stats", "pubsub_patterns" | "latest_fork_usec" | "expired_stale_perc") => Rule::Max,
        ("stats", _) => Rule::Sum,
        _ => Rule::First,
    }
}

fn combine(rule: Rule, values: &[&str]) -> String {
    let first = values.first().copied().unwrap_or_default().to_string();
    let numbers: Option<Vec<f64>> = values.iter().map(|v| v.parse::<f64>().ok()).collect();
    let decimals = first.split_once('.').map(|(_, d)| d.len());
    let show = |n: f64| match decimals {
        Some(d) => format!("{n:.d$}"),
        None => format!("{n:.0}"),
    };
    match (rule, numbers) {
        (Rule::Limit, Some(n)) if n.contains(&0.0) => "0".to_string(),
        (Rule::Sum | Rule::Limit, Some(n)) => show(n.iter().sum()),
        (Rule::Max, Some(n)) => show(n.iter().copied().fold(f64::MIN, f64::max)),
        (Rule::Min, Some(n)) => show(n.iter().copied().fold(f64::MAX, f64::min)),
        (Rule::Status, _) => values
            .iter()
            .find(|v| **v != "ok")
            .map_or(first, |v| v.to_string()),
        _ => first,
    }
}

/// `cmdstat_*`, `errorstat_*`, `latency_percentiles_usec_*` lines: each name once, its
/// `key=value` counts summed (percentiles: the highest, an upper bound), `usec_per_call`
/// computed again.
fn by_name(section: &str, nodes: &[NodeInfo]) -> Vec<(String, String)> {
    let mut merged: Vec<(String, Vec<(String, f64)>)> = Vec::new();
    for node in nodes {
        for (name, value) in node.section(section) {
            let at = match merged.iter().position(|(n, _)| n == name) {
                Some(at) => at,
                None => {
                    merged.push((name.clone(), Vec::new()));
                    merged.len() - 1
                }
            };
            let Some((_, counts)) = merged.get_mut(at) else {
                continue;
            };
            for pair in value.split(',') {
                let Some((key, n)) = pair.split_once('=') else {
                    continue;
                };
                let n: f64 = n.parse().unwrap_or(0.0);
                match counts.iter_mut().find(|(k, _)| k == key) {
                    Some((_, total)) if section == "latencystats" => *total = total.max(n),
                    Some((_, total)) => *total += n,
                    None => counts.push((key.to_string(), n)),
                }
            }
        }
    }
    merged
        .into_iter()
        .map(|(name, counts)| {
            let get = |k: &str| counts.iter().find(|(c, _)| c == k).map_or(0.0, |(_, n)| *n);
            let mut text = String::new();
            for (key, n) in &counts {
                if !text.is_empty() {
                    text.push(',');
                }
                let _ = match key.as_str() {
                    "usec_per_call" => {
                        let calls = get("calls");
                        let per = if calls > 0.0 {
                            get("usec") / calls
                        } else {
                            0.0
                        };
                        write!(text, "{key}={per:.2}")
                    }
                    _ if section == "latencystats" => write!(text, "{key}={n:.3}"),
                    _ => write!(text, "{key}={n:.0}"),
                };
            }
            (name, text)
        })
        .collect()
}

/// `db<N>:keys=..,expires=..,avg_ttl=..` summed per database; `avg_ttl` weighted by each
/// node's keys with an expiry.
fn keyspace(nodes: &[NodeInfo]) -> Vec<(String, String)> {
    let mut dbs: BTreeMap<u32, (u64, u64, f64)> = BTreeMap::new();
    for node in nodes {
        for (db, value) in node.section("keyspace") {
            let Some(n) = db.strip_prefix("db").and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let entry = dbs.entry(n).or_default();
            let mut expires = 0u64;
            let mut ttl = 0f64;
            for pair in value.split(',') {
                match pair.split_once('=') {
                    Some(("keys", v)) => entry.0 += v.parse::<u64>().unwrap_or(0),
                    Some(("expires", v)) => expires = v.parse().unwrap_or(0),
                    Some(("avg_ttl", v)) => ttl = v.parse().unwrap_or(0.0),
                    _ => {}
                }
            }
            entry.1 += expires;
            entry.2 += ttl * expires as f64;
        }
    }
    dbs.into_iter()
        .filter(|(_, (keys, _, _))| *keys > 0)
        .map(|(db, (keys, expires, weighted))| {
            let avg = if expires > 0 {
                weighted / expires as f64
            } else {
                0.0
            };
            (
                format!("db{db}"),
                format!("keys={keys},expires={expires},avg_ttl={avg:.0}"),
            )
        })
        .collect()
}

/// `role:master` with every master's replicas listed as its own, renumbered.
fn replication(nodes: &[NodeInfo]) -> Vec<(String, String)> {
    let mut replicas: Vec<String> = Vec::new();
    let mut offset = 0u64;
    for node in nodes {
        for (field, value) in node.section("replication") {
            if field
                .strip_prefix("slave")
                .is_some_and(|n| n.parse::<u32>().is_ok())
            {
                replicas.push(value.clone());
            } else if field == "master_repl_offset" {
                offset += value.parse::<u64>().unwrap_or(0);
            }
        }
    }
    let first = |f: &str| {
        nodes
            .first()
            .and_then(|n| n.section("replication").iter().find(|(k, _)| k == f))
            .map_or_else(String::new, |(_, v)| v.clone())
    };
    let mut out = vec![
        ("role".to_string(), "master".to_string()),
        ("connected_slaves".to_string(), replicas.len().to_string()),
    ];
    for (i, replica) in replicas.into_iter().enumerate() {
        out.push((format!("slave{i}"), replica));
    }
    out.push((
        "master_failover_state".into(),
        first("master_failover_state"),
    ));
    out.push(("master_replid".into(), first("master_replid")));
    out.push(("master_replid2".into(), first("master_replid2")));
    out.push(("master_repl_offset".into(), offset.to_string()));
    out.retain(|(_, v)| !v.is_empty());
    out
}

/// Bytes as Redis's `*_human` fields write them (`919.11K`, `1.50G`).
pub fn human_bytes(n: f64) -> String {
    const UNITS: [(&str, f64); 5] = [
        ("P", 1024f64 * 1024.0 * 1024.0 * 1024.0 * 1024.0),
        ("T", 1024f64 * 1024.0 * 1024.0 * 1024.0),
        ("G", 1024f64 * 1024.0 * 1024.0),
        ("M", 1024f64 * 1024.0),
        ("K", 1024f64),
    ];
    for (unit, size) in UNITS {
        if n >= size {
            return format!("{:.2}{unit}", n / size);
        }
    }
    format!("{n:.0}B")
}
