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
    let owner = |c: &str| cluster.slot_owner(respgate::slot::Slot::for_key(c.as_bytes()).get());
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
    let owner = cluster.slot_owner(respgate::slot::Slot::for_key(b"ticks").get());
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

#[test]
fn publish_counts_a_subscriber_of_the_proxy() {
    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds());
    let mut subscriber = proxy.raw();
    subscriber.command(&["SUBSCRIBE", "counted"]);
    let mut publisher = proxy.raw();
    // Whichever channel: the subscription and the PUBLISH land on the channel's master.
    for channel in ["counted", "{x}counted", "counted2"] {
        if channel != "counted" {
            subscriber.command(&["SUBSCRIBE", channel]);
        }
        assert_eq!(
            publisher.command(&["PUBLISH", channel, "m"]),
            b":1\r\n",
            "{channel}"
        );
        subscriber.reply();
    }
    assert_eq!(publisher.command(&["PUBLISH", "nobody", "m"]), b":0\r\n");
}

#[test]
fn one_publishers_messages_arrive_in_order() {
    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds());
    let mut subscriber = proxy.raw();
    subscriber.command(&["SUBSCRIBE", "ordered"]);
    let mut publisher = proxy.raw();
    for n in 0..3000 {
        publisher.command(&["PUBLISH", "ordered", &n.to_string()]);
    }
    let mut inversions = Vec::new();
    let mut last: Option<u32> = None;
    for _ in 0..3000 {
        let reply = subscriber.reply();
        let text = String::from_utf8_lossy(&reply).into_owned();
        let n: u32 = text
            .rsplit("\r\n")
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("not a numbered message: {text:?}"));
        if last.is_some_and(|l| n != l + 1) {
            inversions.push((last, n));
        }
        last = Some(n);
    }
    assert!(
        inversions.is_empty(),
        "out of order: {:?}",
        &inversions[..inversions.len().min(10)]
    );
    assert_eq!(last, Some(2999));
}

#[test]
fn subscribing_to_channels_of_several_masters_confirms_in_order_with_the_clients_counts() {
    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds());
    let owner = |c: &str| cluster.slot_owner(respgate::slot::Slot::for_key(c.as_bytes()).get());
    // Three channels on three different masters.
    let mut channels: Vec<String> = Vec::new();
    for i in 0..1000 {
        let c = format!("chan{i}");
        if channels.iter().all(|other| owner(other) != owner(&c)) {
            channels.push(c);
        }
        if channels.len() == 3 {
            break;
        }
    }
    let mut subscriber = proxy.raw();
    let mut args = vec!["SUBSCRIBE"];
    args.extend(channels.iter().map(String::as_str));
    let mut out = bytes::BytesMut::new();
    respgate::protocol::request::encode_command(&mut out, &args);
    subscriber.send(&out);
    for (i, channel) in channels.iter().enumerate() {
        let expected = format!(
            "*3\r\n$9\r\nsubscribe\r\n${}\r\n{channel}\r\n:{}\r\n",
            channel.len(),
            i + 1
        );
        assert_eq!(String::from_utf8_lossy(&subscriber.reply()), expected);
    }
    assert_eq!(
        subscriber.command(&["PSUBSCRIBE", "chan*"]),
        b"*3\r\n$10\r\npsubscribe\r\n$5\r\nchan*\r\n:4\r\n"
    );
    // The Pub/Sub home (the master of slot 0) holds every channel, whichever master owns its
    // slot; the other masters hold none.
    let home = cluster.slot_owner(0);
    for master in cluster.master_ports() {
        let held = cluster.cli(
            master,
            &["PUBSUB", "NUMSUB", &channels[0], &channels[1], &channels[2]],
        );
        let counts: Vec<&str> = held.lines().skip(1).step_by(2).collect();
        let expected = if master == home { "1" } else { "0" };
        assert!(
            counts.iter().all(|c| *c == expected),
            "master {master} (home {home}): {held}"
        );
    }
    let unsubscribed = subscriber.command(&["UNSUBSCRIBE", &channels[1]]);
    let expected = format!(
        "*3\r\n$11\r\nunsubscribe\r\n${}\r\n{}\r\n:3\r\n",
        channels[1].len(),
        channels[1]
    );
    assert_eq!(String::from_utf8_lossy(&unsubscribed), expected);
}
