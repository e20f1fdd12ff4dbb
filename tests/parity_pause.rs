//! `CLIENT PAUSE timeout [WRITE|ALL]` and `CLIENT UNPAUSE` pause the proxy's own clients as
//! Redis 7.0 pauses its clients: the same argument errors; a `WRITE` pause holds writes,
//! may-replicate commands (`PUBLISH`) and an `EXEC` whose transaction queued a write, and lets
//! reads, read-only transactions, `no-writes` scripts and refused commands through; an `ALL`
//! pause holds every client's commands, the pauser's and a `CLIENT UNPAUSE` included, until it
//! ends by itself; a pipelined client's replies keep their order. Each transcript is compared
//! with a single `redis-server`'s. The pause is the proxy's own: the nodes take writes while
//! the proxy's clients wait.
//!
//! "Held" means no reply within [`HELD`]; a held reply is then read with the client's usual
//! generous timeout, so a loaded machine slows these tests but does not fail them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::RedisCluster;
use common::proxy::{Proxy, Raw, config_for};
use common::sentinel::StandaloneServer;

/// How long a reply must stay away to count as held.
const HELD: Duration = Duration::from_millis(400);

/// A transcript of what the clients read.
#[derive(Default)]
struct Transcript {
    seen: Vec<String>,
}

impl Transcript {
    /// Sends `args` on `raw` and records its reply.
    fn run(&mut self, raw: &mut Raw, args: &[&str]) {
        send(raw, args);
        self.reply(raw, &args.join(" "));
    }

    /// Records the next reply on `raw`, labelled.
    fn reply(&mut self, raw: &mut Raw, label: &str) {
        let reply = String::from_utf8_lossy(&raw.reply()).into_owned();
        self.seen.push(format!("{label} -> {reply}"));
    }

    /// Sends `args` on `raw` and records whether its reply is held.
    fn held(&mut self, raw: &mut Raw, args: &[&str]) {
        send(raw, args);
        self.still_held(raw, &args.join(" "));
    }

    /// Records whether no reply comes on `raw` for a while.
    fn still_held(&mut self, raw: &mut Raw, label: &str) {
        let state = if raw.quiet_for(HELD) {
            "held"
        } else {
            "answered"
        };
        self.seen.push(format!("{label} -> {state}"));
    }
}

fn send(raw: &mut Raw, args: &[&str]) {
    let mut out = bytes::BytesMut::new();
    respgate::protocol::request::encode_command(&mut out, args);
    raw.send(&out);
}

/// Argument errors, in Redis's order, and what a `WRITE` pause lets through at once.
fn arguments(port: u16) -> Vec<String> {
    let mut t = Transcript::default();
    let mut admin = Raw::connect(port);
    let mut other = Raw::connect(port);
    for args in [
        &["CLIENT", "PAUSE"][..],
        &["CLIENT", "PAUSE", "abc"],
        &["CLIENT", "PAUSE", "-1"],
        &["CLIENT", "PAUSE", "1.5"],
        &["CLIENT", "PAUSE", "10", "FOO"],
        &["CLIENT", "PAUSE", "abc", "FOO"],
        &["CLIENT", "PAUSE", "-1", "write"],
        &["CLIENT", "PAUSE", "10", "WRITE", "extra"],
        &["CLIENT", "UNPAUSE", "extra"],
        // Ends at once: the next write is not held.
        &["CLIENT", "PAUSE", "0", "ALL"],
    ] {
        t.run(&mut admin, args);
    }
    t.run(&mut other, &["SET", "{p}k", "v"]);
    t.run(&mut admin, &["client", "pause", "100000", "write"]);
    for args in [
        &["GET", "{p}k"][..],
        &["PING"],
        &["MULTI"],
        &["GET", "{p}k"],
        &["PING"],
        &["EXEC"],
        &["EVAL", "#!lua flags=no-writes\nreturn 1", "0"],
        &["EVAL_RO", "return 2", "0"],
        // Refused before the pause is looked at, as in Redis.
        &["SET", "{p}k"],
        &["NOSUCHCOMMAND"],
    ] {
        t.run(&mut other, args);
    }
    t.run(&mut admin, &["CLIENT", "UNPAUSE"]);
    t.run(&mut other, &["SET", "{p}k", "w"]);
    t.seen
}

#[test]
fn client_pause_arguments_and_what_a_write_pause_lets_through_match_redis() {
    let redis = StandaloneServer::start();
    let expected = arguments(redis.port);

    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start_with(config_for(&cluster.seeds()));
    proxy.wait_until_serving();
    assert_eq!(arguments(proxy.port), expected);
}

/// A `WRITE` pause: writes, `PUBLISH` and an `EXEC` with a queued write are held until
/// `CLIENT UNPAUSE` while reads are answered; a pipeline's replies keep their order.
fn write_pause(port: u16) -> Vec<String> {
    let mut t = Transcript::default();
    let mut admin = Raw::connect(port);
    let mut writer = Raw::connect(port);
    let mut reader = Raw::connect(port);
    let mut txn = Raw::connect(port);
    let mut publisher = Raw::connect(port);
    t.run(&mut txn, &["MULTI"]);
    t.run(&mut txn, &["SET", "{p}t", "1"]);
    t.run(&mut admin, &["CLIENT", "PAUSE", "60000", "WRITE"]);
    t.held(&mut writer, &["SET", "{p}k", "v"]);
    t.run(&mut reader, &["GET", "{p}k"]);
    t.held(&mut txn, &["EXEC"]);
    t.held(&mut publisher, &["PUBLISH", "ch", "m"]);
    // Paused clients count as blocked, as Redis's own tests wait for them to be.
    let blocked = reader.info("clients");
    let blocked = blocked
        .lines()
        .find(|l| l.starts_with("blocked_clients:"))
        .unwrap_or("no blocked_clients in INFO clients")
        .to_string();
    t.seen.push(blocked);
    t.run(&mut reader, &["GET", "{p}t"]);
    t.run(&mut admin, &["CLIENT", "UNPAUSE"]);
    t.reply(&mut writer, "SET {p}k v");
    t.reply(&mut txn, "EXEC");
    t.reply(&mut publisher, "PUBLISH");
    t.run(&mut reader, &["MGET", "{p}k", "{p}t"]);

    // A pipeline: the read before the write is answered, the rest waits behind the write.
    t.run(&mut admin, &["CLIENT", "PAUSE", "60000", "WRITE"]);
    let mut pipeline = bytes::BytesMut::new();
    for args in [
        &["GET", "{p}a"][..],
        &["SET", "{p}a", "1"],
        &["GET", "{p}a"],
        &["INCR", "{p}n"],
        &["GET", "{p}a"],
    ] {
        respgate::protocol::request::encode_command(&mut pipeline, args);
    }
    writer.send(&pipeline);
    t.reply(&mut writer, "pipelined GET");
    t.still_held(&mut writer, "pipelined SET");
    t.run(&mut admin, &["CLIENT", "UNPAUSE"]);
    for label in ["SET", "GET", "INCR", "GET"] {
        t.reply(&mut writer, &format!("pipelined {label}"));
    }
    t.seen
}

#[test]
fn write_pause_holds_writes_until_unpause_as_redis_does_and_leaves_the_nodes_alone() {
    let redis = StandaloneServer::start();
    let expected = write_pause(redis.port);

    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start_with(config_for(&cluster.seeds()));
    proxy.wait_until_serving();
    assert_eq!(write_pause(proxy.port), expected);

    // The pause is the proxy's: a node takes a write at once while the proxy's clients wait.
    let mut admin = proxy.raw();
    assert_eq!(
        admin.command(&["CLIENT", "PAUSE", "60000", "WRITE"]),
        b"+OK\r\n"
    );
    let mut writer = proxy.raw();
    send(&mut writer, &["SET", "{p}held", "1"]);
    assert!(writer.quiet_for(HELD));
    let port = cluster.master_ports()[0];
    let key = cluster.key_on(port, "direct");
    let mut node = Raw::connect(port);
    assert_eq!(node.command(&["SET", &key, "1"]), b"+OK\r\n");
    assert_eq!(admin.command(&["CLIENT", "UNPAUSE"]), b"+OK\r\n");
    assert_eq!(writer.reply(), b"+OK\r\n");
}

/// An `ALL` pause holds every client's commands, the pauser's and `CLIENT UNPAUSE` included,
/// but not a command refused for its arguments, until it ends by itself.
fn all_pause(port: u16) -> Vec<String> {
    let mut t = Transcript::default();
    let mut admin = Raw::connect(port);
    let mut reader = Raw::connect(port);
    let mut other = Raw::connect(port);
    let mut refused = Raw::connect(port);
    // Long enough for the checks below on a loaded machine; short enough to wait out.
    t.run(&mut admin, &["CLIENT", "PAUSE", "4000", "ALL"]);
    t.held(&mut reader, &["GET", "{p}k"]);
    t.held(&mut admin, &["PING"]);
    t.held(&mut other, &["CLIENT", "UNPAUSE"]);
    t.run(&mut refused, &["GET"]);
    // Read with the client's 30 s timeout: the pause ends by itself.
    t.reply(&mut reader, "GET {p}k");
    t.reply(&mut admin, "PING");
    t.reply(&mut other, "CLIENT UNPAUSE");
    t.run(&mut refused, &["SET", "{p}k", "after"]);
    t.seen
}

#[test]
fn all_pause_holds_every_client_until_it_ends_by_itself_as_redis_does() {
    let redis = StandaloneServer::start();
    let expected = all_pause(redis.port);

    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start_with(config_for(&cluster.seeds()));
    proxy.wait_until_serving();
    assert_eq!(all_pause(proxy.port), expected);
}
