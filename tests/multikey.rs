//! Multi-key commands across slots: split, run in parallel, merged in the client's order.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;

use common::RedisCluster;
use common::proxy::{Proxy, config_for};
use redis::Commands;
use respgate::slot::Slot;

/// `count` keys, each in a different slot.
fn keys_in_distinct_slots(count: usize) -> Vec<String> {
    let mut seen = BTreeSet::new();
    (0..)
        .map(|i| format!("mk:{i}"))
        .filter(|k| seen.insert(Slot::for_key(k.as_bytes())))
        .take(count)
        .collect()
}

#[test]
fn mget_of_a_thousand_keys_in_a_thousand_slots_returns_the_values_in_order() {
    let cluster = RedisCluster::start(3, 1);
    let proxy = Proxy::start(&cluster.seeds());
    let mut client = proxy.client();
    let keys = keys_in_distinct_slots(1000);
    let pairs: Vec<(String, String)> = keys
        .iter()
        .map(|k| (k.clone(), format!("value-{k}")))
        .collect();
    let _: () = client.mset(&pairs).expect("MSET across 1,000 slots");
    let mut asked = keys.clone();
    asked.insert(500, "mk:missing".into());
    let values: Vec<Option<String>> = client.mget(&asked).expect("MGET across 1,000 slots");
    assert_eq!(values.len(), 1001);
    for (key, value) in asked.iter().zip(&values) {
        if key == "mk:missing" {
            assert_eq!(value, &None);
        } else {
            assert_eq!(value.as_deref(), Some(format!("value-{key}").as_str()));
        }
    }
    // Each value really is where the cluster puts it.
    let node = cluster.slot_owner(Slot::for_key(keys[7].as_bytes()).get());
    assert_eq!(
        cluster.cli(node, &["GET", &keys[7]]),
        format!("value-{}", keys[7])
    );
}

#[test]
fn counting_commands_sum_across_slots() {
    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds());
    let mut client = proxy.client();
    let keys = keys_in_distinct_slots(50);
    for key in &keys[..40] {
        let _: () = client.set(key, "x").unwrap();
    }
    let mut with_repeat = keys.clone();
    with_repeat.push(keys[0].clone());
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&with_repeat)
        .query(&mut client)
        .unwrap();
    assert_eq!(
        exists, 41,
        "EXISTS counts a repeated key twice, as Redis does"
    );
    let touched: i64 = redis::cmd("TOUCH").arg(&keys).query(&mut client).unwrap();
    assert_eq!(touched, 40);
    let deleted: i64 = redis::cmd("DEL")
        .arg(&keys[..20])
        .query(&mut client)
        .unwrap();
    assert_eq!(deleted, 20);
    let unlinked: i64 = redis::cmd("UNLINK").arg(&keys).query(&mut client).unwrap();
    assert_eq!(unlinked, 20);
    let left: i64 = redis::cmd("EXISTS").arg(&keys).query(&mut client).unwrap();
    assert_eq!(left, 0);
}

#[test]
fn atomic_multi_key_commands_still_answer_crossslot() {
    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds());
    let mut raw = proxy.raw();
    let keys = keys_in_distinct_slots(2);
    assert_eq!(
        raw.command(&["MSETNX", &keys[0], "1", &keys[1], "2"]),
        b"-CROSSSLOT Keys in request don't hash to the same slot\r\n"
    );
    assert_eq!(
        raw.command(&["RENAME", &keys[0], &keys[1]]),
        b"-CROSSSLOT Keys in request don't hash to the same slot\r\n"
    );
    // Same slot through hash tags: forwarded whole.
    assert_eq!(
        raw.command(&["MSETNX", "{t}a", "1", "{t}b", "2"]),
        b":1\r\n"
    );
}

#[test]
fn split_mget_passes_resp3_elements_through() {
    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds());
    let mut raw = proxy.raw();
    let keys = keys_in_distinct_slots(3);
    raw.command(&["HELLO", "3"]);
    assert_eq!(raw.command(&["SET", &keys[0], "a"]), b"+OK\r\n");
    assert_eq!(raw.command(&["SET", &keys[2], "c"]), b"+OK\r\n");
    assert_eq!(
        raw.command(&["MGET", &keys[0], &keys[1], &keys[2]]),
        b"*3\r\n$1\r\na\r\n_\r\n$1\r\nc\r\n"
    );
}

/// A proxy on `cluster` that learns the slot map only when a node tells it otherwise: a slot
/// moved behind its back stays stale until a `MOVED` says where it went.
fn proxy_with_a_stale_map(cluster: &RedisCluster) -> Proxy {
    let mut config = config_for(&cluster.seeds());
    config
        .clusters
        .get_mut("default")
        .expect("the default backend")
        .refresh_interval_ms = 600_000;
    let proxy = Proxy::start_with(config);
    proxy.wait_until_serving();
    proxy
}

#[test]
fn split_mset_and_mget_follow_a_slot_moved_mid_way() {
    let cluster = RedisCluster::start(3, 0);
    let proxy = proxy_with_a_stale_map(&cluster);
    let mut raw = proxy.raw();
    let masters = cluster.master_ports();
    // Two keys on each master; the first master's first key is in the slot that moves, so its
    // part goes to that master in one batch with the other key's part.
    let keys: Vec<String> = ["a:", "b:"]
        .iter()
        .flat_map(|prefix| cluster.key_per_master(prefix))
        .collect();
    let moving = cluster.key_on(masters[0], "a:");
    let slot = Slot::for_key(moving.as_bytes()).get();
    let from = cluster.slot_owner(slot);
    let to = masters.iter().copied().find(|&p| p != from).unwrap();
    let mset = |round: &str| -> Vec<String> {
        let mut args = vec!["MSET".to_string()];
        for key in &keys {
            args.extend([key.clone(), format!("{round}-{key}")]);
        }
        args
    };
    let args = mset("before");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(raw.command(&args), b"+OK\r\n");

    cluster.migrate_slot(slot, from, to);
    let moved_before = proxy.stat("moved");
    let refreshes_before = proxy.stat("refreshes");
    let args = mset("after");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(
        raw.command(&args),
        b"+OK\r\n",
        "the part for the moved slot followed MOVED"
    );
    assert!(proxy.stat("moved") > moved_before, "a MOVED was followed");
    assert_eq!(
        cluster.cli(to, &["GET", &moving]),
        format!("after-{moving}"),
        "written where the slot is now"
    );
    for key in &keys {
        let owner = cluster.slot_owner(Slot::for_key(key.as_bytes()).get());
        assert_eq!(cluster.cli(owner, &["GET", key]), format!("after-{key}"));
    }

    // And back, for a read: the proxy's map is stale again. The refresh the MOVED asked for
    // must be over first, or it could learn the slot's way back before the MGET meets it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while proxy.stat("refreshes") <= refreshes_before {
        assert!(
            std::time::Instant::now() < deadline,
            "no refresh after the MOVED"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    cluster.migrate_slot(slot, to, from);
    let moved_before = proxy.stat("moved");
    let mut mget = vec!["MGET"];
    mget.extend(keys.iter().map(String::as_str));
    mget.push("missing:key");
    let mut expected = format!("*{}\r\n", keys.len() + 1);
    for key in &keys {
        let value = format!("after-{key}");
        expected.push_str(&format!("${}\r\n{value}\r\n", value.len()));
    }
    expected.push_str("$-1\r\n");
    assert_eq!(
        String::from_utf8_lossy(&raw.command(&mget)),
        expected,
        "every value in the client's order"
    );
    assert!(proxy.stat("moved") > moved_before, "a MOVED was followed");
}

#[test]
fn split_mget_follows_ask_for_the_part_of_a_migrating_slot() {
    let cluster = RedisCluster::start(3, 0);
    let proxy = proxy_with_a_stale_map(&cluster);
    let mut raw = proxy.raw();
    let masters = cluster.master_ports();
    let keys = cluster.key_per_master("k:");
    for key in &keys {
        assert_eq!(raw.command(&["SET", key, key]), b"+OK\r\n");
    }
    let slot = Slot::for_key(keys[0].as_bytes()).get();
    let from = cluster.slot_owner(slot);
    let to = masters.iter().copied().find(|&p| p != from).unwrap();
    cluster.begin_migration(slot, from, to);
    // The slot's only key moves: its node answers ASK for it.
    assert_eq!(
        cluster.cli(
            from,
            &[
                "MIGRATE",
                "127.0.0.1",
                &to.to_string(),
                &keys[0],
                "0",
                "5000"
            ]
        ),
        "OK"
    );
    let asks_before = proxy.stat("ask");
    let mut mget = vec!["MGET"];
    mget.extend(keys.iter().map(String::as_str));
    let mut expected = format!("*{}\r\n", keys.len());
    for key in &keys {
        expected.push_str(&format!("${}\r\n{key}\r\n", key.len()));
    }
    assert_eq!(String::from_utf8_lossy(&raw.command(&mget)), expected);
    assert!(proxy.stat("ask") > asks_before, "an ASK was followed");
    cluster.finish_migration(slot, from, to);
}
