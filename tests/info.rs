//! `INFO` through the proxy reads as one Redis holding the whole cluster: the fields clients
//! and tools read are there, summed over the masters where the figure is the data's, the
//! proxy's own where it is the proxy's (issue 14, item 5).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::RedisCluster;
use common::proxy::{Proxy, Raw};

/// The value of `field` in INFO text.
fn field(info: &str, name: &str) -> String {
    info.lines()
        .find_map(|l| l.trim_end().strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in {info}"))
        .to_string()
}

fn number(info: &str, name: &str) -> u64 {
    field(info, name)
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn headers(info: &str) -> Vec<&str> {
    info.lines()
        .filter_map(|l| l.trim_end().strip_prefix("# "))
        .collect()
}

#[test]
fn default_info_has_every_default_section_with_the_fields_clients_read() {
    let cluster = RedisCluster::start(3, 1);
    let proxy = Proxy::start(&cluster.seeds());
    let mut raw = proxy.raw();
    let info = String::from_utf8(raw.command(&["INFO"])).unwrap();
    assert_eq!(headers(&raw.info("default")), headers(&info));
    assert_eq!(
        headers(&info),
        [
            "Server",
            "Clients",
            "Memory",
            "Persistence",
            "Stats",
            "Replication",
            "CPU",
            "Modules",
            "Errorstats",
            "Cluster",
            "Keyspace",
            "Backends",
            "Proxy"
        ]
    );
    // Valkey reports the Redis version it is compatible with as `redis_version` (7.2.4 for every
    // Valkey 7.2 and 8), and its own in `valkey_version`; the proxy passes on the node's.
    let redis_version = if common::server_is_valkey() {
        "7.2.4"
    } else {
        "7.0.15"
    };
    assert_eq!(field(&info, "redis_version"), redis_version);
    assert_eq!(field(&info, "role"), "master");
    assert_eq!(
        number(&info, "connected_slaves"),
        3,
        "every master's replica"
    );
    assert_eq!(field(&info, "masters_answered"), "3/3");
    for name in [
        "used_memory",
        "maxmemory",
        "total_commands_processed",
        "instantaneous_ops_per_sec",
        "keyspace_hits",
        "keyspace_misses",
        "connected_clients",
    ] {
        number(&info, name);
    }
    for name in [
        "used_memory_human",
        "used_cpu_user",
        "used_cpu_sys",
        "mem_allocator",
    ] {
        assert!(!field(&info, name).is_empty(), "{name}");
    }
    // Memory is the masters' together.
    let sum: u64 = cluster
        .master_ports()
        .iter()
        .map(|&p| number(&cluster.cli(p, &["INFO", "memory"]), "used_memory"))
        .sum();
    let used = number(&raw.info("memory"), "used_memory");
    assert!(
        used > sum / 10 * 9 && used < sum / 10 * 11,
        "{used} is about {sum}"
    );
    let everything = raw.info("everything");
    assert!(headers(&everything).contains(&"Commandstats"));
    assert!(headers(&everything).contains(&"Latencystats"));
    assert_eq!(headers(&raw.info("all")), headers(&everything));
    // Several sections at once, as Redis 7 takes them.
    assert_eq!(
        headers(&String::from_utf8(raw.command(&["INFO", "stats", "memory"])).unwrap()),
        ["Memory", "Stats"]
    );
}

#[test]
fn counts_are_summed_over_every_master() {
    let cluster = RedisCluster::start(3, 1);
    let proxy = Proxy::start(&cluster.seeds());
    let mut raw = proxy.raw();
    let keys = cluster.key_per_master("info:");
    let before = raw.info("all");
    for key in &keys {
        raw.command(&["SET", key, "v", "EX", "1000"]);
        raw.command(&["SET", &format!("{{{key}}}:plain"), "v"]);
        raw.command(&["GET", key]);
        raw.command(&["HGET", key, "f"]);
    }
    let after = raw.info("all");
    let delta = |name: &str| number(&after, name) - number(&before, name);
    assert_eq!(
        delta("keyspace_hits"),
        6,
        "a GET and an HGET found their key on each master"
    );
    let db0 = field(&after, "db0");
    assert!(db0.starts_with("keys=6,expires=3,avg_ttl="), "{db0}");
    let errors = |info: &str| {
        info.lines()
            .find_map(|l| l.trim_end().strip_prefix("errorstat_WRONGTYPE:count="))
            .map_or(0, |n| n.parse::<u64>().unwrap())
    };
    assert_eq!(
        errors(&after) - errors(&before),
        3,
        "the client got a WRONGTYPE for a key of each master"
    );
    let gets = field(&after, "cmdstat_get");
    let calls: u64 = gets
        .split(',')
        .find_map(|p| p.strip_prefix("calls="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(calls >= 3, "{gets}");
    assert_eq!(
        delta("total_commands_processed"),
        13,
        "the proxy's own count: the 12 commands and the INFO after them"
    );
}

#[test]
fn a_master_that_does_not_answer_is_left_out_and_said_so() {
    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds());
    let mut raw = Raw::connect(proxy.port);
    let master = cluster.master_ports()[0];
    let pid = cluster.pid(master).to_string();
    let signal = |sig: &str| {
        let status = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {sig} {pid}");
    };
    signal("-STOP");
    let info = raw.info("memory");
    signal("-CONT");
    assert_eq!(field(&info, "masters_answered"), "2/3", "{info}");
    assert_eq!(headers(&info), ["Memory", "Proxy"]);
    number(&info, "used_memory");
}
