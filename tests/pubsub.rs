//! Pub/Sub through the proxy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::RedisCluster;
use common::proxy::Proxy;

#[test]
fn a_subscriber_receives_what_another_connection_publishes() {
    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds());
    let mut subscriber = proxy.raw();
    assert_eq!(
        subscriber.command(&["SUBSCRIBE", "news"]),
        b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"
    );
    assert_eq!(
        subscriber.command(&["PSUBSCRIBE", "ne*"]),
        b"*3\r\n$10\r\npsubscribe\r\n$3\r\nne*\r\n:2\r\n"
    );
    // A subscribed RESP2 client may only (un)subscribe, PING, QUIT or RESET.
    assert_eq!(
        subscriber.command(&["GET", "x"]),
        b"-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n"
    );
    assert_eq!(
        subscriber.command(&["PING"]),
        b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"
    );
    let mut publisher = proxy.raw();
    // Every node delivers: the publish may land on any master. Its count, as in Redis Cluster,
    // is of the receiving node's own subscribers only.
    assert!(
        publisher
            .command(&["PUBLISH", "news", "hello"])
            .starts_with(b":")
    );
    assert_eq!(
        subscriber.reply(),
        b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n"
    );
    assert_eq!(
        subscriber.reply(),
        b"*4\r\n$8\r\npmessage\r\n$3\r\nne*\r\n$4\r\nnews\r\n$5\r\nhello\r\n"
    );
    let numsub = publisher.command(&["PUBSUB", "NUMSUB", "news", "other"]);
    assert_eq!(numsub, b"*4\r\n$4\r\nnews\r\n:1\r\n$5\r\nother\r\n:0\r\n");
    assert_eq!(publisher.command(&["PUBSUB", "NUMPAT"]), b":1\r\n");
    assert_eq!(
        publisher.command(&["PUBSUB", "CHANNELS"]),
        b"*1\r\n$4\r\nnews\r\n"
    );
    // Unsubscribing from everything returns the client to normal commands.
    assert_eq!(
        subscriber.command(&["UNSUBSCRIBE"]),
        b"*3\r\n$11\r\nunsubscribe\r\n$4\r\nnews\r\n:1\r\n"
    );
    assert_eq!(
        subscriber.command(&["PUNSUBSCRIBE"]),
        b"*3\r\n$12\r\npunsubscribe\r\n$3\r\nne*\r\n:0\r\n"
    );
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(subscriber.command(&["SET", "x", "1"]), b"+OK\r\n");
    assert_eq!(
        subscriber.command(&["UNSUBSCRIBE"]),
        b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n"
    );
}

#[test]
fn resp3_subscribers_get_pushes_and_may_run_other_commands() {
    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds());
    let mut subscriber = proxy.raw();
    subscriber.command(&["HELLO", "3"]);
    assert_eq!(
        subscriber.command(&["SUBSCRIBE", "events"]),
        b">3\r\n$9\r\nsubscribe\r\n$6\r\nevents\r\n:1\r\n"
    );
    assert_eq!(subscriber.command(&["SET", "k", "v"]), b"+OK\r\n");
    let mut publisher = proxy.raw();
    assert!(
        publisher
            .command(&["PUBLISH", "events", "e1"])
            .starts_with(b":")
    );
    assert_eq!(
        subscriber.reply(),
        b">3\r\n$7\r\nmessage\r\n$6\r\nevents\r\n$2\r\ne1\r\n"
    );
}

#[test]
fn subscriptions_survive_the_failover_of_their_node() {
    let mut cluster = RedisCluster::start(3, 1);
    let proxy = Proxy::start(&cluster.seeds());
    let mut subscriber = proxy.raw();
    subscriber.command(&["SUBSCRIBE", "alerts"]);
    // Find the master holding the subscription and kill it.
    let holder = cluster
        .master_ports()
        .into_iter()
        .find(|&port| {
            cluster
                .cli(port, &["PUBSUB", "NUMSUB", "alerts"])
                .ends_with('1')
        })
        .expect("some master holds the subscription");
    cluster.kill(holder);
    cluster.wait_for_ok();
    let mut publisher = proxy.raw();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let receivers = publisher.command(&["PUBLISH", "alerts", "after-failover"]);
        if receivers == b":1\r\n" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy subscribed again"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        subscriber.reply(),
        b"*3\r\n$7\r\nmessage\r\n$6\r\nalerts\r\n$14\r\nafter-failover\r\n"
    );
}

#[test]
fn sharded_subscriptions_follow_their_slots_to_several_masters() {
    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds());
    // Channels on different masters.
    let owner = |c: &str| cluster.slot_owner(respgate::cluster::Slot::for_key(c.as_bytes()).get());
    let first = "orders";
    let second = (0..100)
        .map(|i| format!("shipments{i}"))
        .find(|c| owner(c) != owner(first))
        .unwrap();
    let mut subscriber = proxy.raw();
    assert_eq!(
        subscriber.command(&["SSUBSCRIBE", first]),
        b"*3\r\n$10\r\nssubscribe\r\n$6\r\norders\r\n:1\r\n"
    );
    let reply = subscriber.command(&["SSUBSCRIBE", &second]);
    assert!(
        reply.ends_with(b":2\r\n"),
        "counts cover every node: {}",
        String::from_utf8_lossy(&reply)
    );
    assert_eq!(
        subscriber.command(&["SSUBSCRIBE", "{a}1", "{b}2"]),
        b"-CROSSSLOT Keys in request don't hash to the same slot\r\n"
    );
    let mut publisher = proxy.raw();
    assert_eq!(publisher.command(&["SPUBLISH", first, "o1"]), b":1\r\n");
    assert_eq!(
        subscriber.reply(),
        b"*3\r\n$8\r\nsmessage\r\n$6\r\norders\r\n$2\r\no1\r\n"
    );
    assert_eq!(publisher.command(&["SPUBLISH", &second, "s1"]), b":1\r\n");
    let message = String::from_utf8_lossy(&subscriber.reply()).into_owned();
    assert!(
        message.starts_with("*3\r\n$8\r\nsmessage\r\n") && message.ends_with("$2\r\ns1\r\n"),
        "{message}"
    );
    assert!(
        subscriber
            .command(&["SUNSUBSCRIBE", first])
            .ends_with(b":1\r\n"),
        "one sharded channel left"
    );
    assert!(subscriber.command(&["SUNSUBSCRIBE"]).ends_with(b":0\r\n"));
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(subscriber.command(&["SET", "after", "1"]), b"+OK\r\n");
}

#[test]
fn sharded_subscriptions_move_to_the_promoted_replica() {
    let mut cluster = RedisCluster::start(3, 1);
    let proxy = Proxy::start(&cluster.seeds());
    let mut subscriber = proxy.raw();
    subscriber.command(&["SSUBSCRIBE", "ticks"]);
    let owner = cluster.slot_owner(respgate::cluster::Slot::for_key(b"ticks").get());
    cluster.kill(owner);
    cluster.wait_for_ok();
    let mut publisher = proxy.raw();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while publisher.command(&["SPUBLISH", "ticks", "t1"]) != b":1\r\n" {
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy subscribed again on the new master"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        subscriber.reply(),
        b"*3\r\n$8\r\nsmessage\r\n$5\r\nticks\r\n$2\r\nt1\r\n"
    );
}
