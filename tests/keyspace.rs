//! Whole-keyspace commands over every master, and commands refused through the proxy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;

use common::RedisCluster;
use common::proxy::Proxy;
use redis::Commands;

fn fill(client: &mut redis::Connection, prefix: &str, count: usize) -> Vec<String> {
    let keys: Vec<String> = (0..count).map(|i| format!("{prefix}:{i}")).collect();
    for chunk in keys.chunks(1000) {
        let mut pipe = redis::pipe();
        for key in chunk {
            pipe.set(key, 1).ignore();
        }
        pipe.query::<()>(client).unwrap();
    }
    keys
}

#[test]
fn scan_of_twenty_thousand_keys_returns_each_exactly_once() {
    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds());
    let mut client = proxy.client();
    let keys = fill(&mut client, "scan", 20_000);
    let _: () = client.hset("scan:hash", "f", "v").unwrap();
    let mut seen: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    let mut calls = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query(&mut client)
            .unwrap();
        seen.extend(batch);
        calls += 1;
        assert!(calls < 10_000, "SCAN terminates");
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no key returned twice");
    assert_eq!(seen.len(), 20_001);
    for key in &keys {
        assert!(unique.contains(key), "{key} missing from the scan");
    }
    // MATCH and TYPE are honoured on every node.
    let mut hashes = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("scan:*")
            .arg("TYPE")
            .arg("hash")
            .arg("COUNT")
            .arg(5000)
            .query(&mut client)
            .unwrap();
        hashes.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    assert_eq!(hashes, vec!["scan:hash".to_string()]);
}

#[test]
fn keyspace_commands_cover_every_master() {
    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds());
    let mut client = proxy.client();
    fill(&mut client, "ks", 3000);
    let size: i64 = redis::cmd("DBSIZE").query(&mut client).unwrap();
    assert_eq!(size, 3000);
    let mut keys: Vec<String> = client.keys("ks:1??").unwrap();
    keys.sort();
    assert_eq!(keys.len(), 100);
    let random: Option<String> = redis::cmd("RANDOMKEY").query(&mut client).unwrap();
    assert!(random.is_some_and(|k| k.starts_with("ks:")));
    let info: redis::InfoDict = redis::cmd("INFO").query(&mut client).unwrap();
    let db0: String = info.get("db0").expect("INFO has a keyspace line");
    assert!(db0.starts_with("keys=3000,"), "{db0}");
    let _: () = redis::cmd("FLUSHALL").query(&mut client).unwrap();
    let size: i64 = redis::cmd("DBSIZE").query(&mut client).unwrap();
    assert_eq!(size, 0);
    let random: Option<String> = redis::cmd("RANDOMKEY").query(&mut client).unwrap();
    assert_eq!(random, None);
}

#[test]
fn scripts_are_loaded_on_every_master() {
    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds());
    let mut client = proxy.client();
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("return redis.call('INCR', KEYS[1])")
        .query(&mut client)
        .unwrap();
    for i in 0..30 {
        let n: i64 = redis::cmd("EVALSHA")
            .arg(&sha)
            .arg(1)
            .arg(format!("script:{i}"))
            .query(&mut client)
            .unwrap();
        assert_eq!(n, 1);
    }
    for port in cluster.master_ports() {
        assert_eq!(cluster.cli(port, &["SCRIPT", "EXISTS", &sha]), "1");
    }
    let exists: Vec<i64> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(&sha)
        .arg("0000")
        .query(&mut client)
        .unwrap();
    assert_eq!(exists, vec![1, 0]);
    cluster.cli(cluster.master_ports()[0], &["SCRIPT", "FLUSH"]);
    let exists: Vec<i64> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(&sha)
        .query(&mut client)
        .unwrap();
    assert_eq!(
        exists,
        vec![1],
        "the proxy still holds it: an EVALSHA through it runs"
    );
    let n: i64 = redis::cmd("EVALSHA")
        .arg(&sha)
        .arg(1)
        .arg("script:0")
        .query(&mut client)
        .unwrap();
    assert_eq!(n, 2);
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut client)
        .unwrap();
    let exists: Vec<i64> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(&sha)
        .query(&mut client)
        .unwrap();
    assert_eq!(exists, vec![0], "flushed everywhere, the proxy's cache too");
    // Keyless scripts run on some master, and exist for the proxy's clients (Redis's suite:
    // `SCRIPT EXISTS - can detect already defined scripts?`).
    let n: i64 = redis::cmd("EVAL")
        .arg("return 1+1")
        .arg(0)
        .query(&mut client)
        .unwrap();
    assert_eq!(n, 2);
    let exists: Vec<i64> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg("a27e7e8a43702b7046d4f6a7ccf5b60cef6b9bd9")
        .arg("a27e7e8a43702b7046d4f6a7ccf5b60cef6b9bda")
        .query(&mut client)
        .unwrap();
    assert_eq!(exists, vec![1, 0]);
}

#[test]
fn commands_that_cannot_work_through_a_proxy_get_one_clear_error() {
    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds());
    let mut raw = proxy.raw();
    for (args, names) in [
        (&["CONFIG", "SET", "maxmemory", "1"][..], "CONFIG SET"),
        (&["BGSAVE"], "BGSAVE"),
        (&["MONITOR"], "MONITOR"),
        (&["SHUTDOWN"], "SHUTDOWN"),
        (&["REPLICAOF", "NO", "ONE"], "REPLICAOF"),
        (&["CLUSTER", "FAILOVER"], "CLUSTER FAILOVER"),
        (&["DEBUG", "SLEEP", "0"], "DEBUG"),
    ] {
        let reply = String::from_utf8_lossy(&raw.command(args)).into_owned();
        assert!(
            reply.starts_with("-ERR respgate: ") && reply.contains(names),
            "{args:?}: {reply}"
        );
    }
    // Reads of the configuration are fine.
    let reply = String::from_utf8_lossy(&raw.command(&["CONFIG", "GET", "maxmemory"])).into_owned();
    assert!(reply.starts_with("*2\r\n"), "{reply}");
}

#[test]
fn noscript_from_a_node_that_lost_its_scripts_is_healed() {
    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds());
    let mut client = proxy.client();
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("return redis.call('GET', KEYS[1])")
        .query(&mut client)
        .unwrap();
    // What a failover does to the script cache: the new masters have none.
    for port in cluster.master_ports() {
        cluster.cli(port, &["SCRIPT", "FLUSH"]);
    }
    for i in 0..30 {
        let key = format!("healed:{i}");
        let _: () = client.set(&key, i).unwrap();
        let value: i64 = redis::cmd("EVALSHA")
            .arg(&sha)
            .arg(1)
            .arg(&key)
            .query(&mut client)
            .unwrap();
        assert_eq!(value, i);
    }
    // A script the proxy never saw still gets Redis's NOSCRIPT.
    let unknown: redis::RedisResult<i64> = redis::cmd("EVALSHA")
        .arg("ffffffffffffffffffffffffffffffffffffffff")
        .arg(0)
        .query(&mut client);
    let error = format!("{:?}", unknown.unwrap_err());
    assert!(error.to_ascii_lowercase().contains("noscript"), "{error}");
}

#[test]
fn script_flush_through_the_proxy_also_empties_its_script_cache() {
    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds());
    let mut client = proxy.client();
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("return 7")
        .query(&mut client)
        .unwrap();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut client)
        .unwrap();
    // The client flushed the scripts: the proxy must not load them back behind its back.
    let flushed: redis::RedisResult<i64> =
        redis::cmd("EVALSHA").arg(&sha).arg(0).query(&mut client);
    let error = format!("{:?}", flushed.unwrap_err());
    assert!(error.to_ascii_lowercase().contains("noscript"), "{error}");
}
