//! Keyspace notifications through the proxy: Redis Cluster publishes them only on the node of
//! the key, so the proxy subscribes event channels and the patterns that can match them on
//! every master, and one key's channel on that key's master. An application that watches
//! changes and expirations works as against one Redis (issue 14, item 6).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::RedisCluster;
use common::proxy::{Proxy, config_for};
use common::reload::{Reloadable, cluster, routing, server};
use respgate::slot::Slot;

/// A 3+3 cluster, a proxy that lets `CONFIG SET` through, and notifications of every kind
/// turned on through it.
fn notifying_cluster() -> (RedisCluster, Proxy) {
    let cluster = RedisCluster::start(3, 1);
    let mut config = config_for(&cluster.seeds());
    config.server.allow_admin_commands = true;
    let proxy = Proxy::start_with(config);
    proxy.wait_until_serving();
    let mut conn = proxy.client();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("KEA")
        .query(&mut conn)
        .expect("CONFIG SET through the proxy");
    (cluster, proxy)
}

/// Reads messages until every one of `wanted` (channel, payload) has come, within 30 s;
/// returns every (channel, payload) read.
fn read_until(
    pubsub: &mut redis::PubSub<'_>,
    wanted: &BTreeSet<(String, String)>,
) -> Vec<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while !wanted
        .iter()
        .all(|w| seen.iter().any(|s: &(String, String)| s == w))
    {
        assert!(
            Instant::now() < deadline,
            "missing {:?}; got {seen:?}",
            wanted
                .iter()
                .filter(|w| !seen.contains(w))
                .collect::<Vec<_>>()
        );
        let message = pubsub
            .get_message()
            .expect("a message within the read timeout");
        let payload: String = message.get_payload().expect("text payload");
        seen.push((message.get_channel_name().to_string(), payload));
    }
    seen
}

#[test]
fn event_patterns_receive_the_events_of_every_master() {
    let (cluster, proxy) = notifying_cluster();
    let keys = cluster.key_per_master("watched:");
    let mut writer = proxy.client();
    let mut conn = proxy.client();
    let mut pubsub = conn.as_pubsub();
    pubsub.psubscribe("__keyevent@0__:*").unwrap();
    pubsub.psubscribe("*").unwrap();
    for key in &keys {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg("v")
            .arg("PX")
            .arg(100)
            .query(&mut writer)
            .unwrap();
    }
    let mut wanted = BTreeSet::new();
    for key in &keys {
        wanted.insert(("__keyevent@0__:set".to_string(), key.clone()));
        wanted.insert(("__keyevent@0__:expired".to_string(), key.clone()));
        wanted.insert((format!("__keyspace@0__:{key}"), "set".to_string()));
        wanted.insert((format!("__keyspace@0__:{key}"), "expired".to_string()));
    }
    read_until(&mut pubsub, &wanted);

    // A plain message reaches every node of the cluster, but the client hears it once per
    // pattern, as from one Redis.
    let _: i64 = redis::cmd("PUBLISH")
        .arg("news")
        .arg("first")
        .query(&mut writer)
        .unwrap();
    let _: i64 = redis::cmd("PUBLISH")
        .arg("news")
        .arg("second")
        .query(&mut writer)
        .unwrap();
    let seen = read_until(
        &mut pubsub,
        &BTreeSet::from([("news".to_string(), "second".to_string())]),
    );
    let firsts = seen.iter().filter(|(_, p)| p == "first").count();
    assert_eq!(firsts, 1, "one copy of a published message: {seen:?}");
    pubsub
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    if let Ok(extra) = pubsub.get_message() {
        panic!(
            "nothing more was published, yet {:?} came",
            extra.get_payload::<String>()
        );
    }
}

#[test]
fn one_keys_channel_is_subscribed_where_the_key_lives() {
    let (cluster, proxy) = notifying_cluster();
    let keys = cluster.key_per_master("watched:");
    let mut writer = proxy.client();
    let mut conn = proxy.client();
    let mut pubsub = conn.as_pubsub();
    let mut wanted = BTreeSet::new();
    for key in &keys {
        let channel = format!("__keyspace@0__:{key}");
        pubsub.subscribe(&channel).unwrap();
        wanted.insert((channel.clone(), "set".to_string()));
        wanted.insert((channel.clone(), "expired".to_string()));
    }
    for key in &keys {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg("v")
            .arg("PX")
            .arg(100)
            .query(&mut writer)
            .unwrap();
    }
    read_until(&mut pubsub, &wanted);
}

#[test]
fn an_event_channel_hears_every_master() {
    let (cluster, proxy) = notifying_cluster();
    let keys = cluster.key_per_master("watched:");
    let mut writer = proxy.client();
    let mut conn = proxy.client();
    let mut pubsub = conn.as_pubsub();
    pubsub.subscribe("__keyevent@0__:del").unwrap();
    let mut wanted = BTreeSet::new();
    for key in &keys {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg("v")
            .query(&mut writer)
            .unwrap();
        let _: i64 = redis::cmd("DEL").arg(key).query(&mut writer).unwrap();
        wanted.insert(("__keyevent@0__:del".to_string(), key.clone()));
    }
    read_until(&mut pubsub, &wanted);
}

#[test]
fn notification_subscriptions_hear_the_masters_of_a_backend_a_reload_adds() {
    let main = RedisCluster::start(3, 0);
    let other = RedisCluster::start(3, 0);
    for (nodes, port) in main
        .ports()
        .into_iter()
        .map(|p| (&main, p))
        .chain(other.ports().into_iter().map(|p| (&other, p)))
    {
        nodes.cli(port, &["CONFIG", "SET", "notify-keyspace-events", "KEA"]);
    }
    let admin = common::free_port();
    let one = server(admin, 0, "") + &cluster("main", &main.seeds(), "") + &routing("main", &[]);
    let two = server(admin, 0, "")
        + &cluster("main", &main.seeds(), "")
        + &cluster("other", &other.seeds(), "")
        + &routing("main", &[("other:", "other")]);
    let proxy = Reloadable::start(admin, &one);
    let mut subscriber = proxy.proxy.raw();
    subscriber.command(&["SUBSCRIBE", "__keyevent@0__:del"]);
    subscriber.command(&["PSUBSCRIBE", "__keyspace@0__:*"]);

    proxy.reload_ok(&two);
    // The subscriber moves to the new configuration before its next request is answered.
    assert_eq!(
        subscriber.command(&["SUBSCRIBE", "sync"]),
        b"*3\r\n$9\r\nsubscribe\r\n$4\r\nsync\r\n:3\r\n"
    );
    let keys: Vec<String> = main
        .key_per_master("watched:")
        .into_iter()
        .chain(other.key_per_master("other:"))
        .collect();
    let mut writer = proxy.proxy.raw();
    let mut wanted = BTreeSet::new();
    for key in &keys {
        assert_eq!(writer.command(&["SET", key, "v"]), b"+OK\r\n");
        let (nodes, elsewhere) = if key.starts_with("other:") {
            (&other, &main)
        } else {
            (&main, &other)
        };
        let slot = Slot::for_key(key.as_bytes()).get();
        assert_eq!(nodes.cli(nodes.slot_owner(slot), &["GET", key]), "v");
        assert_eq!(
            elsewhere.cli(elsewhere.slot_owner(slot), &["EXISTS", key]),
            "0"
        );
        assert_eq!(writer.command(&["DEL", key]), b":1\r\n");
        wanted.insert(format!("__keyevent@0__:del\r\n${}\r\n{key}\r\n", key.len()));
        wanted.insert(format!("__keyspace@0__:{key}\r\n$3\r\ndel\r\n"));
    }
    // Every master's events arrive, the added backend's included (within the read timeout).
    let mut seen = String::new();
    while !wanted.iter().all(|w| seen.contains(w.as_str())) {
        seen.push_str(&String::from_utf8_lossy(&subscriber.reply()));
    }
}
