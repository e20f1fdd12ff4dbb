//! `RANDOMKEY` through the proxy picks among every key of the cluster, as one Redis picks among
//! its own: a master is chosen at random, weighted by its number of keys.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;

use common::RedisCluster;
use common::proxy::Proxy;
use respgate::slot::Slot;

/// `count` keys whose slots are on the master at `port`, tagged `prefix`.
fn keys_on(cluster: &RedisCluster, port: u16, prefix: &str, count: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .filter(|key| cluster.slot_owner(Slot::for_key(key.as_bytes()).get()) == port)
        .take(count)
        .collect()
}

#[test]
fn randomkey_picks_among_the_keys_of_every_master() {
    let cluster = RedisCluster::start_with(3, 0, &["--enable-debug-command", "yes"]);
    let proxy = Proxy::start(&cluster.seeds());
    let mut raw = proxy.raw();
    assert_eq!(raw.command(&["RANDOMKEY"]), b"$-1\r\n", "no key anywhere");
    assert_eq!(raw.command(&["HELLO", "3"]).first(), Some(&b'%'));
    assert_eq!(raw.command(&["RANDOMKEY"]), b"_\r\n", "RESP3's null");
    assert_eq!(raw.command(&["HELLO", "2"]).first(), Some(&b'*'));
    let masters = cluster.master_ports();
    let lone = keys_on(&cluster, masters[0], "lone:", 1);
    let crowd = keys_on(&cluster, masters[1], "crowd:", 9);
    for key in lone.iter().chain(&crowd) {
        assert_eq!(raw.command(&["SET", key, "v"]), b"+OK\r\n");
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..1000 {
        let reply = String::from_utf8(raw.command(&["RANDOMKEY"])).unwrap();
        let key = reply.lines().nth(1).unwrap().to_string();
        *seen.entry(key).or_default() += 1;
    }
    assert_eq!(seen.len(), 10, "every key came back: {seen:?}");
    // One key in ten: about 100 times in 1000 (the odds of falling outside 30..=250 are below
    // 1e-12), where picking a master first without weights would give about 500.
    let lone_count = seen[&lone[0]];
    assert!(
        (30..=250).contains(&lone_count),
        "the lone key came back {lone_count} times in 1000: {seen:?}"
    );
    // A master whose keys all expired (but are still counted, active expiry being off) answers
    // nil: another master is asked, so the lone key comes back rather than nil.
    for key in &crowd {
        assert_eq!(raw.command(&["DEL", key]), b":1\r\n");
    }
    cluster.cli(masters[1], &["DEBUG", "SET-ACTIVE-EXPIRE", "0"]);
    let expired = keys_on(&cluster, masters[1], "expired:", 500);
    for key in &expired {
        assert_eq!(raw.command(&["SET", key, "v", "PX", "1"]), b"+OK\r\n");
    }
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(
        raw.command(&["DBSIZE"]),
        b":501\r\n",
        "expired keys still counted"
    );
    let lone_reply = format!("${}\r\n{}\r\n", lone[0].len(), lone[0]).into_bytes();
    assert_eq!(raw.command(&["RANDOMKEY"]), lone_reply);
    assert_eq!(raw.command(&["RANDOMKEY"]), lone_reply);
}
