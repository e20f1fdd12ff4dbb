//! `PUBLISH` through the proxy counts its receivers as one Redis counts them: every client
//! subscribed to the channel and every client's matching pattern, whichever nodes hold their
//! subscriptions, and delivers their messages in the order one Redis does (Redis's suite:
//! `PUBLISH/PSUBSCRIBE basics`, `Mix SUBSCRIBE and PSUBSCRIBE`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::RedisCluster;
use common::proxy::{Proxy, Raw};
use common::sentinel::StandaloneServer;
use respgate::slot::Slot;

fn text(reply: Vec<u8>) -> String {
    String::from_utf8_lossy(&reply).into_owned()
}

/// Sends one (un)subscribe of `names` and reads its confirmations, one per name (one for
/// none), passing over the messages that arrived before them.
fn subscribe(raw: &mut Raw, command: &str, names: &[&str]) {
    let mut args = vec![command];
    args.extend_from_slice(names);
    let mut out = bytes::BytesMut::new();
    respgate::protocol::request::encode_command(&mut out, &args);
    raw.send(&out);
    let mut confirmed = 0;
    while confirmed < names.len().max(1) {
        let reply = text(raw.reply());
        if !reply.starts_with("*3\r\n$7\r\nmessage\r\n")
            && !reply.starts_with("*4\r\n$8\r\npmessage\r\n")
        {
            confirmed += 1;
        }
    }
}

/// `foo.<n>` channels whose slots are on each master of `cluster`, one per master.
fn channel_per_master(cluster: &RedisCluster) -> Vec<String> {
    let mut channels: Vec<(String, u16)> = Vec::new();
    for i in 0.. {
        let channel = format!("foo.{i}");
        let owner = cluster.slot_owner(Slot::for_key(channel.as_bytes()).get());
        if !channels.iter().any(|(_, o)| *o == owner) {
            channels.push((channel, owner));
        }
        if channels.len() == cluster.master_ports().len() {
            break;
        }
    }
    channels.into_iter().map(|(channel, _)| channel).collect()
}

/// Pattern and channel subscribers come and go on `port`; the reply to each `PUBLISH`, in
/// order. The subscribers are kept until the end.
fn publish_counts_seen_on(port: u16, channels: &[String]) -> Vec<String> {
    let mut publisher = Raw::connect(port);
    let mut counts = Vec::new();
    let mut publish_each = |publisher: &mut Raw, names: &[&str]| {
        for name in names {
            counts.push(format!(
                "{name}={}",
                text(publisher.command(&["PUBLISH", name, "hello"]))
            ));
        }
    };
    let channels: Vec<&str> = channels.iter().map(String::as_str).collect();
    let mut patterns = Raw::connect(port);
    subscribe(&mut patterns, "PSUBSCRIBE", &["foo.*", "bar.*"]);
    publish_each(&mut publisher, &channels);
    publish_each(&mut publisher, &["bar.1", "foo1", "barfoo.1", "qux.1"]);
    // A subscriber of every channel.
    let mut each = Raw::connect(port);
    subscribe(&mut each, "SUBSCRIBE", &channels);
    publish_each(&mut publisher, &channels);
    // One client with the first channel and a pattern matching every one.
    let mut mixed = Raw::connect(port);
    subscribe(&mut mixed, "SUBSCRIBE", &channels[..1]);
    subscribe(&mut mixed, "PSUBSCRIBE", &["foo.*"]);
    publish_each(&mut publisher, &channels);
    subscribe(&mut patterns, "PUNSUBSCRIBE", &["foo.*"]);
    publish_each(&mut publisher, &channels);
    subscribe(&mut mixed, "PUNSUBSCRIBE", &[]);
    subscribe(&mut mixed, "UNSUBSCRIBE", &[]);
    publish_each(&mut publisher, &channels);
    subscribe(&mut patterns, "PUNSUBSCRIBE", &["bar.*"]);
    publish_each(&mut publisher, &["bar.1"]);
    counts
}

#[test]
fn publish_counts_every_subscriber_and_pattern_as_one_redis() {
    let cluster = RedisCluster::start(3, 0);
    let channels = channel_per_master(&cluster);
    let redis = StandaloneServer::start();
    let expected = publish_counts_seen_on(redis.port, &channels);
    // What Redis's suite expects of one server, to show the comparison checks something.
    let on_redis =
        |counts: &[&str]| -> Vec<String> { counts.iter().map(|c| format!("{c}\r\n")).collect() };
    let first_three = |c: &'static str| [c, c, c];
    let mut want: Vec<&str> = Vec::new();
    want.extend(first_three(":1"));
    want.extend([":1", ":0", ":0", ":0"]);
    want.extend(first_three(":2"));
    want.extend([":4", ":3", ":3"]);
    want.extend([":3", ":2", ":2"]);
    want.extend(first_three(":1"));
    want.push(":0");
    let got: Vec<String> = expected
        .iter()
        .map(|c| c.split_once('=').unwrap().1.to_string())
        .collect();
    assert_eq!(got, on_redis(&want), "{expected:?}");

    let proxy = Proxy::start(&cluster.seeds());
    assert_eq!(publish_counts_seen_on(proxy.port, &channels), expected);
}

#[test]
fn publish_counts_pattern_subscribers_on_another_master_and_direct_subscribers() {
    let cluster = RedisCluster::start(3, 0);
    let channels = channel_per_master(&cluster);
    let proxy = Proxy::start(&cluster.seeds());
    let mut subscriber = proxy.raw();
    subscribe(&mut subscriber, "PSUBSCRIBE", &["foo.*"]);
    let mut publisher = proxy.raw();
    // Whichever master holds the pattern, a channel of every master counts it once.
    for channel in &channels {
        assert_eq!(
            publisher.command(&["PUBLISH", channel, "m"]),
            b":1\r\n",
            "{channel}"
        );
        let message = format!(
            "*4\r\n$8\r\npmessage\r\n$5\r\nfoo.*\r\n${}\r\n{channel}\r\n$1\r\nm\r\n",
            channel.len()
        );
        assert_eq!(text(subscriber.reply()), message);
    }
    // A client connected straight to the node a PUBLISH goes to, the Pub/Sub home (the master
    // of slot 0), is counted by it, as Redis Cluster counts the receivers on the node that
    // ran the PUBLISH.
    let home = cluster.slot_owner(0);
    let mut direct = Raw::connect(home);
    subscribe(&mut direct, "SUBSCRIBE", &[&channels[0]]);
    assert_eq!(
        publisher.command(&["PUBLISH", &channels[0], "m"]),
        b":2\r\n"
    );
    // Once the subscriber is gone, nothing of it is counted.
    subscribe(&mut subscriber, "PUNSUBSCRIBE", &[]);
    assert_eq!(
        publisher.command(&["PUBLISH", &channels[1], "m"]),
        b":0\r\n"
    );
    drop(subscriber);
}

/// The messages subscribers on `port` read, in order: a client with two patterns while
/// channels of every master are published, then a client with a channel and a pattern that
/// both match.
fn messages_seen_on(port: u16, channels: &[String]) -> Vec<String> {
    let mut publisher = Raw::connect(port);
    let mut patterns = Raw::connect(port);
    subscribe(&mut patterns, "PSUBSCRIBE", &["foo.*", "bar.*"]);
    let mut seen = Vec::new();
    for round in 0..3 {
        for channel in channels {
            let bar = format!("bar.{round}");
            for name in [channel.as_str(), &bar] {
                publisher.command(&["PUBLISH", name, "hello"]);
            }
        }
    }
    for _ in 0..channels.len() * 2 * 3 {
        seen.push(text(patterns.reply()));
    }
    let mut mixed = Raw::connect(port);
    for channel in channels {
        subscribe(&mut mixed, "SUBSCRIBE", &[channel]);
    }
    subscribe(&mut mixed, "PSUBSCRIBE", &["foo.*"]);
    for channel in channels {
        publisher.command(&["PUBLISH", channel, "hello"]);
    }
    for _ in 0..channels.len() * 2 {
        seen.push(text(mixed.reply()));
    }
    seen
}

#[test]
fn messages_arrive_in_the_order_they_were_published_as_on_one_redis() {
    let cluster = RedisCluster::start(3, 0);
    let channels = channel_per_master(&cluster);
    let redis = StandaloneServer::start();
    let expected = messages_seen_on(redis.port, &channels);
    assert!(expected[0].contains("foo.*") && expected[1].contains("bar.*"));
    let proxy = Proxy::start(&cluster.seeds());
    assert_eq!(messages_seen_on(proxy.port, &channels), expected);
}
