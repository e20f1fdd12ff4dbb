//! Several Redis Clusters behind one proxy, keys routed by prefix: every key lands on its
//! cluster and no other, multi-key commands split across clusters, whole-keyspace commands
//! cover both, and one cluster's trouble costs the other's clients nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::RedisCluster;
use common::proxy::{Proxy, Raw, cluster_backend, config_with};
use respgate::config::{RouteConfig, SlotRangeConfig};

/// A proxy with backend `main` on `main` and backend `archive` on `archive`, keys starting with
/// `archive:` on `archive` (their prefix stripped when `strip`).
fn two_clusters(main: &RedisCluster, archive: &RedisCluster, strip: bool) -> Proxy {
    let mut config = config_with(vec![
        ("main", cluster_backend(&main.seeds())),
        ("archive", cluster_backend(&archive.seeds())),
    ]);
    config.routing.routes.push(RouteConfig {
        prefix: "archive:".into(),
        backend: "archive".into(),
        strip_prefix: strip,
        ..RouteConfig::default()
    });
    let proxy = Proxy::start_with(config);
    proxy.wait_until_serving();
    proxy
}

/// `GET key` straight from the master owning it in `cluster`.
fn direct_get(cluster: &RedisCluster, key: &str) -> String {
    let slot = respgate::slot::Slot::for_key(key.as_bytes()).get();
    cluster.cli(cluster.slot_owner(slot), &["GET", key])
}

fn command(raw: &mut Raw, args: &[&str]) -> String {
    String::from_utf8_lossy(&raw.command(args)).into_owned()
}

#[test]
fn every_key_lands_on_the_cluster_its_prefix_routes_to_and_on_no_other() {
    let main = RedisCluster::start(3, 0);
    let archive = RedisCluster::start(3, 0);
    let proxy = two_clusters(&main, &archive, false);
    let mut client = proxy.raw();
    for i in 0..50 {
        assert_eq!(
            command(&mut client, &["SET", &format!("user:{i}"), "m"]),
            "+OK\r\n"
        );
        assert_eq!(
            command(&mut client, &["SET", &format!("archive:{i}"), "a"]),
            "+OK\r\n"
        );
    }
    for i in 0..50 {
        assert_eq!(direct_get(&main, &format!("user:{i}")), "m");
        assert_eq!(direct_get(&archive, &format!("user:{i}")), "");
        assert_eq!(direct_get(&archive, &format!("archive:{i}")), "a");
        assert_eq!(direct_get(&main, &format!("archive:{i}")), "");
        assert_eq!(
            command(&mut client, &["GET", &format!("archive:{i}")]),
            "$1\r\na\r\n"
        );
    }
}

#[test]
fn a_stripped_prefix_is_removed_on_the_way_in_and_put_back_on_keys_that_come_back() {
    let main = RedisCluster::start(3, 0);
    let archive = RedisCluster::start(3, 0);
    let proxy = two_clusters(&main, &archive, true);
    let mut client = proxy.raw();
    assert_eq!(
        command(&mut client, &["SET", "archive:2024", "x"]),
        "+OK\r\n"
    );
    assert_eq!(command(&mut client, &["SET", "plain", "y"]), "+OK\r\n");
    // The archive cluster knows the key without its prefix.
    assert_eq!(direct_get(&archive, "2024"), "x");
    assert_eq!(direct_get(&archive, "archive:2024"), "");
    assert_eq!(
        command(&mut client, &["GET", "archive:2024"]),
        "$1\r\nx\r\n"
    );
    assert_eq!(
        command(&mut client, &["MGET", "archive:2024", "plain"]),
        "*2\r\n$1\r\nx\r\n$1\r\ny\r\n"
    );
    // Keys that come back carry the prefix again.
    let keys = command(&mut client, &["KEYS", "*"]);
    assert!(
        keys.contains("archive:2024") && keys.contains("plain"),
        "{keys}"
    );
    assert!(!keys.contains("\r\n2024\r\n"), "{keys}");
    let mut seen = BTreeSet::new();
    let mut cursor = "0".to_string();
    loop {
        let reply = command(&mut client, &["SCAN", &cursor, "COUNT", "100"]);
        let lines: Vec<&str> = reply.split("\r\n").collect();
        cursor = lines[2].to_string();
        for key in lines.iter().skip(5).step_by(2) {
            if !key.is_empty() {
                seen.insert(key.to_string());
            }
        }
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(
        seen,
        BTreeSet::from(["archive:2024".to_string(), "plain".to_string()])
    );
}

#[test]
fn multi_key_commands_split_across_clusters_and_merge_in_the_clients_order() {
    let main = RedisCluster::start(3, 0);
    let archive = RedisCluster::start(3, 0);
    let proxy = two_clusters(&main, &archive, false);
    let mut client = proxy.raw();
    assert_eq!(
        command(
            &mut client,
            &[
                "MSET",
                "a",
                "1",
                "archive:b",
                "2",
                "c",
                "3",
                "archive:d",
                "4"
            ]
        ),
        "+OK\r\n"
    );
    assert_eq!(direct_get(&archive, "archive:b"), "2");
    assert_eq!(direct_get(&main, "c"), "3");
    assert_eq!(
        command(
            &mut client,
            &["MGET", "archive:d", "a", "nope", "archive:b"]
        ),
        "*4\r\n$1\r\n4\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n"
    );
    assert_eq!(
        command(&mut client, &["EXISTS", "a", "archive:b", "nope"]),
        ":2\r\n"
    );
    assert_eq!(
        command(&mut client, &["DEL", "a", "archive:b", "archive:d"]),
        ":3\r\n"
    );
    assert_eq!(direct_get(&archive, "archive:b"), "");
    assert_eq!(command(&mut client, &["DBSIZE"]), ":1\r\n");
}

#[test]
fn transactions_and_scripts_across_clusters_are_refused_naming_them() {
    let main = RedisCluster::start(3, 0);
    let archive = RedisCluster::start(3, 0);
    let proxy = two_clusters(&main, &archive, false);
    let mut client = proxy.raw();
    let eval = command(
        &mut client,
        &["EVAL", "return 1", "2", "{t}a", "archive:{t}b"],
    );
    assert!(
        eval.starts_with("-CROSSSLOT") && eval.contains("'main'") && eval.contains("'archive'"),
        "{eval}"
    );
    assert_eq!(command(&mut client, &["MULTI"]), "+OK\r\n");
    assert_eq!(command(&mut client, &["SET", "{t}a", "1"]), "+QUEUED\r\n");
    let refused = command(&mut client, &["SET", "archive:{t}b", "1"]);
    assert!(refused.starts_with("-CROSSSLOT"), "{refused}");
    assert_eq!(
        command(&mut client, &["EXEC"]),
        "-EXECABORT Transaction discarded because of previous errors.\r\n"
    );
    assert_eq!(command(&mut client, &["GET", "{t}a"]), "$-1\r\n");
    // Within one cluster they work as before.
    assert_eq!(command(&mut client, &["MULTI"]), "+OK\r\n");
    command(&mut client, &["SET", "archive:{t}a", "1"]);
    command(&mut client, &["INCR", "archive:{t}a"]);
    assert_eq!(command(&mut client, &["EXEC"]), "*2\r\n+OK\r\n:2\r\n");
}

#[test]
fn a_full_scan_over_two_clusters_returns_every_key_once() {
    let main = RedisCluster::start(3, 0);
    let archive = RedisCluster::start(3, 0);
    let proxy = two_clusters(&main, &archive, false);
    let mut client = proxy.raw();
    let mut expected = BTreeSet::new();
    let mut batch = Vec::new();
    for i in 0..10_000 {
        let key = if i % 2 == 0 {
            format!("k{i}")
        } else {
            format!("archive:{i}")
        };
        batch.push(key.clone());
        expected.insert(key);
        if batch.len() == 500 {
            let mut args = vec!["MSET".to_string()];
            for key in batch.drain(..) {
                args.push(key);
                args.push("v".into());
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            assert_eq!(command(&mut client, &args), "+OK\r\n");
        }
    }
    let mut seen = Vec::new();
    let mut cursor = "0".to_string();
    loop {
        let reply = command(&mut client, &["SCAN", &cursor, "COUNT", "500"]);
        let lines: Vec<&str> = reply.split("\r\n").collect();
        cursor = lines[2].to_string();
        seen.extend(
            lines
                .iter()
                .skip(5)
                .step_by(2)
                .filter(|k| !k.is_empty())
                .map(|k| k.to_string()),
        );
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(seen.len(), 10_000, "each key once");
    let seen: BTreeSet<String> = seen.into_iter().collect();
    assert!(seen == expected, "the keys seen are the keys written");
}

#[test]
fn a_failover_in_one_cluster_costs_the_other_clusters_clients_nothing() {
    let main = RedisCluster::start(3, 0);
    let mut archive = RedisCluster::start(3, 1);
    let proxy = two_clusters(&main, &archive, false);
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let served = Arc::new(AtomicU64::new(0));
    let slowest_us = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for worker in 0..4 {
        let (stop, errors, served) = (stop.clone(), errors.clone(), served.clone());
        let slowest_us = slowest_us.clone();
        let port = proxy.port;
        workers.push(std::thread::spawn(move || {
            let mut client = Raw::connect(port);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("main:{worker}:{}", i % 1000);
                let sent = Instant::now();
                let reply = client.command(&["SET", &key, "v"]);
                slowest_us.fetch_max(sent.elapsed().as_micros() as u64, Ordering::Relaxed);
                if reply == b"+OK\r\n" {
                    served.fetch_add(1, Ordering::Relaxed);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(500));
    let victim = archive.master_ports()[0];
    archive.kill(victim);
    let deadline = Instant::now() + Duration::from_secs(30);
    archive.wait_for_ok();
    assert!(Instant::now() < deadline);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().unwrap();
    }
    // Reported, not asserted: timing on a shared 2-core machine is no test.
    eprintln!(
        "main during the archive failover: {} SETs served, {} errors, slowest {} us",
        served.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        slowest_us.load(Ordering::Relaxed)
    );
    assert!(served.load(Ordering::Relaxed) > 100, "main kept serving");
    assert_eq!(
        errors.load(Ordering::Relaxed),
        0,
        "no error for the other cluster's clients"
    );
    // And the archive cluster serves again after its failover.
    let mut client = proxy.raw();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all_ok =
            (0..20).all(|i| client.command(&["SET", &format!("archive:{i}"), "v"]) == b"+OK\r\n");
        if all_ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "archive serves after its failover"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_namespace_split_by_slot_range_puts_each_key_on_the_cluster_of_its_slot() {
    let low = RedisCluster::start(3, 0);
    let high = RedisCluster::start(3, 0);
    let mut config = config_with(vec![
        ("users-a", cluster_backend(&low.seeds())),
        ("users-b", cluster_backend(&high.seeds())),
    ]);
    config.routing.routes.push(RouteConfig {
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
    });
    let proxy = Proxy::start_with(config);
    proxy.wait_until_serving();
    let mut client = proxy.raw();
    let mut on_high = 0;
    for i in 0..200 {
        let key = format!("user:{i}");
        assert_eq!(command(&mut client, &["SET", &key, "v"]), "+OK\r\n");
        let slot = respgate::slot::Slot::for_key(key.as_bytes()).get();
        let (home, other) = if slot < 8192 {
            (&low, &high)
        } else {
            (&high, &low)
        };
        on_high += usize::from(slot >= 8192);
        assert_eq!(direct_get(home, &key), "v", "{key} (slot {slot})");
        assert_eq!(direct_get(other, &key), "", "{key} on no other cluster");
    }
    assert!(on_high > 50 && on_high < 150, "both halves used: {on_high}");
    // A hash tag keeps a user's keys together, on the cluster of the tag's slot.
    assert_eq!(
        command(
            &mut client,
            &["MSET", "{user:42}:a", "1", "{user:42}:b", "2"]
        ),
        "+OK\r\n"
    );
    let slot = respgate::slot::Slot::for_key(b"{user:42}:a").get();
    let home = if slot < 8192 { &low } else { &high };
    assert_eq!(direct_get(home, "{user:42}:a"), "1");
    assert_eq!(direct_get(home, "{user:42}:b"), "2");
    // Keys outside the namespace live on the default backend.
    assert_eq!(command(&mut client, &["SET", "other", "x"]), "+OK\r\n");
    assert_eq!(direct_get(&low, "other"), "x");
    assert_eq!(direct_get(&high, "other"), "");
}

#[test]
fn a_script_loaded_through_the_proxy_runs_on_every_backend_after_its_nodes_lose_it() {
    let main = RedisCluster::start(3, 0);
    let archive = RedisCluster::start(3, 0);
    let group = common::sentinel::SentinelGroup::start(1);
    let mut config = config_with(vec![
        ("main", cluster_backend(&main.seeds())),
        ("archive", cluster_backend(&archive.seeds())),
        (
            "sessions",
            respgate::config::BackendConfig {
                kind: respgate::config::BackendKind::Sentinel,
                sentinels: group.sentinel_addrs(),
                master_name: common::sentinel::MASTER_NAME.into(),
                request_timeout_ms: 2000,
                refresh_interval_ms: 1000,
                ..respgate::config::BackendConfig::default()
            },
        ),
    ]);
    for (prefix, backend) in [("archive:", "archive"), ("sess:", "sessions")] {
        config.routing.routes.push(RouteConfig {
            prefix: prefix.into(),
            backend: backend.into(),
            ..RouteConfig::default()
        });
    }
    let proxy = Proxy::start_with(config);
    proxy.wait_until_serving();
    let mut raw = proxy.raw();
    let keys = ["main:k", "archive:k", "sess:k"];
    for key in keys {
        assert_eq!(command(&mut raw, &["SET", key, key]), "+OK\r\n");
    }
    let loaded = command(
        &mut raw,
        &["SCRIPT", "LOAD", "return redis.call('get', KEYS[1])"],
    );
    let sha = loaded.lines().nth(1).unwrap().to_string();
    for key in keys {
        let got = command(&mut raw, &["EVALSHA", &sha, "1", key]);
        assert_eq!(got, format!("${}\r\n{key}\r\n", key.len()));
    }

    // Every node of every backend loses its scripts, as after a restart or a failover to a
    // fresh replica.
    for port in main.ports().into_iter().chain(archive.ports()) {
        main.cli(port, &["SCRIPT", "FLUSH"]);
    }
    for port in group.server_ports() {
        group.cli(port, &["SCRIPT", "FLUSH"]);
    }
    for key in keys {
        let got = command(&mut raw, &["EVALSHA", &sha, "1", key]);
        assert_eq!(got, format!("${}\r\n{key}\r\n", key.len()), "{key}");
    }
}
