//! What one client may cost the proxy: replies owed to a client that does not read are bounded
//! by its output limits, for ordinary clients and subscribers alike, while other clients keep
//! being served.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::RedisCluster;
use common::proxy::{Proxy, Raw, config_for};
use respgate::config::OutputLimit;

/// A field of `INFO clients` as a number.
fn info_number(raw: &mut Raw, field: &str) -> u64 {
    let info = raw.info("clients");
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in INFO clients: {info}"))
}

/// Waits up to 20 s for `check` to hold.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not happen within 20 s");
}

#[test]
fn a_client_that_never_reads_is_closed_at_its_output_limit_while_others_are_served() {
    let cluster = RedisCluster::start(3, 0);
    let mut config = config_for(&cluster.seeds());
    config.server.client_output_limit_normal = OutputLimit {
        hard_limit_bytes: 8 * 1024 * 1024,
        soft_limit_bytes: 0,
        soft_limit_s: 0,
    };
    let proxy = Proxy::start_with(config);
    proxy.wait_until_serving();
    let mut other = proxy.raw();
    let value = "v".repeat(100 * 1024);
    assert_eq!(other.command(&["SET", "bigkey", &value]), b"+OK\r\n");

    // 1,000 GETs of 100 KiB each: 100 MiB of replies, none of them read.
    let mut hog = proxy.raw();
    let mut pipeline = Vec::new();
    for _ in 0..1000 {
        pipeline.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$6\r\nbigkey\r\n");
    }
    hog.send(&pipeline);

    eventually("the hog's closing", || {
        info_number(&mut other, "clients_closed_by_output_limit") == 1
    });
    assert!(hog.is_closed(), "the client over its limit is disconnected");
    // What it was owed is freed, and the others are served as before.
    eventually("the hog's replies being freed", || {
        info_number(&mut other, "client_output_bytes") == 0
    });
    assert_eq!(other.command(&["GET", "bigkey"]).len(), value.len() + 11);
    assert_eq!(other.command(&["PING"]), b"+PONG\r\n");
}

#[test]
fn a_subscriber_that_stops_reading_is_closed_and_a_fresh_one_receives_every_message() {
    let cluster = RedisCluster::start(3, 0);
    let mut config = config_for(&cluster.seeds());
    config.server.client_output_limit_pubsub = OutputLimit {
        hard_limit_bytes: 4 * 1024 * 1024,
        soft_limit_bytes: 1024 * 1024,
        soft_limit_s: 1,
    };
    let proxy = Proxy::start_with(config);
    proxy.wait_until_serving();

    let mut slow = proxy.raw();
    assert_eq!(
        slow.command(&["SUBSCRIBE", "feed"]),
        b"*3\r\n$9\r\nsubscribe\r\n$4\r\nfeed\r\n:1\r\n"
    );
    let mut publisher = proxy.raw();
    let message = "m".repeat(10 * 1024);
    // 2,000 messages of 10 KiB, 20 MiB in all, to a subscriber that reads none of them.
    let mut closed = false;
    for _ in 0..2000 {
        assert!(
            publisher
                .command(&["PUBLISH", "feed", &message])
                .starts_with(b":")
        );
        if info_number(&mut publisher, "clients_closed_by_output_limit") == 1 {
            closed = true;
            break;
        }
    }
    assert!(closed, "the slow subscriber was closed at its pubsub limit");
    assert!(
        slow.is_closed(),
        "the slow subscriber's connection is closed"
    );

    let mut fresh = proxy.raw();
    assert_eq!(
        fresh.command(&["SUBSCRIBE", "feed"]),
        b"*3\r\n$9\r\nsubscribe\r\n$4\r\nfeed\r\n:1\r\n"
    );
    for n in 0..200 {
        publisher.command(&["PUBLISH", "feed", &format!("{n}")]);
    }
    for n in 0..200 {
        let text = n.to_string();
        let expected = format!(
            "*3\r\n$7\r\nmessage\r\n$4\r\nfeed\r\n${}\r\n{text}\r\n",
            text.len()
        );
        assert_eq!(
            String::from_utf8_lossy(&fresh.reply()),
            expected,
            "message {n}"
        );
    }
}
