//! `CLIENT REPLY OFF|SKIP` silences a client's replies but not its Pub/Sub traffic, as in Redis
//! 7.0 (whose pubsub unit turns replies off before subscribing): the (un)subscribe
//! confirmations and the messages still arrive, in RESP2 and RESP3, while the other replies
//! (`PING`, `GET`) are dropped; silenced commands still run, those on a client's own connection
//! (`BLPOP`, `MULTI`/`EXEC`) too. Compared byte for byte with a single `redis-server`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::RedisCluster;
use common::proxy::{Proxy, Raw, config_for};
use common::sentinel::StandaloneServer;

/// A transcript of what the clients read.
struct Transcript {
    seen: Vec<String>,
}

impl Transcript {
    /// Sends `args` on `raw` and records the `replies` replies it reads after.
    fn run(&mut self, raw: &mut Raw, args: &[&str], replies: usize) {
        let mut out = bytes::BytesMut::new();
        respgate::protocol::request::encode_command(&mut out, args);
        raw.send(&out);
        self.read(raw, &args.join(" "), replies);
    }

    /// Records `replies` replies read on `raw`, labelled by what caused them.
    fn read(&mut self, raw: &mut Raw, label: &str, replies: usize) {
        for _ in 0..replies {
            let reply = String::from_utf8_lossy(&raw.reply()).into_owned();
            self.seen.push(format!("{label} -> {reply}"));
        }
    }
}

/// The steps, on the server or proxy at `port`.
fn steps(port: u16) -> Vec<String> {
    let mut t = Transcript { seen: Vec::new() };
    let mut publisher = Raw::connect(port);

    // RESP3, as Redis's own test: replies off, then (un)subscribe and receive.
    let mut s3 = Raw::connect(port);
    s3.command(&["HELLO", "3"]);
    t.run(&mut s3, &["CLIENT", "REPLY", "OFF"], 0);
    t.run(&mut s3, &["SUBSCRIBE", "channel"], 1);
    t.run(&mut s3, &["PSUBSCRIBE", "ch*"], 1);
    t.run(&mut publisher, &["PUBLISH", "channel", "hello"], 1);
    t.read(&mut s3, "messages", 2);
    // PING's reply is silenced: the next thing read is the confirmation after it.
    t.run(&mut s3, &["PING"], 0);
    t.run(&mut s3, &["SSUBSCRIBE", "sch"], 1);
    t.run(&mut publisher, &["SPUBLISH", "sch", "shard"], 1);
    t.read(&mut s3, "smessage", 1);
    t.run(&mut s3, &["UNSUBSCRIBE", "channel"], 1);
    t.run(&mut s3, &["PUNSUBSCRIBE", "ch*"], 1);
    t.run(&mut s3, &["SUNSUBSCRIBE"], 1);
    // Nothing left to unsubscribe: Redis still confirms it.
    t.run(&mut s3, &["UNSUBSCRIBE"], 1);
    t.run(&mut s3, &["GET", "k"], 0);
    t.run(&mut s3, &["CLIENT", "REPLY", "ON"], 1);
    t.run(&mut s3, &["PING"], 1);

    // RESP2: the same holds, and SKIP is used up by the subscribe it silences.
    let mut s2 = Raw::connect(port);
    t.run(&mut s2, &["CLIENT", "REPLY", "OFF"], 0);
    t.run(&mut s2, &["SUBSCRIBE", "c2"], 1);
    t.run(&mut s2, &["PING"], 0);
    t.run(&mut s2, &["PSUBSCRIBE", "c*"], 1);
    t.run(&mut publisher, &["PUBLISH", "c2", "x"], 1);
    t.read(&mut s2, "messages", 2);
    t.run(&mut s2, &["UNSUBSCRIBE"], 1);
    t.run(&mut s2, &["PUNSUBSCRIBE"], 1);
    t.run(&mut s2, &["GET", "k"], 0);
    t.run(&mut s2, &["CLIENT", "REPLY", "ON"], 1);
    t.run(&mut s2, &["CLIENT", "REPLY", "SKIP"], 0);
    t.run(&mut s2, &["SUBSCRIBE", "c3"], 1);
    t.run(&mut s2, &["PING"], 1);

    // Commands the proxy runs on a connection of the client's own (a blocking pop, a
    // transaction) run when silenced, as any other; only their replies are dropped.
    let mut own = Raw::connect(port);
    t.run(&mut own, &["CLIENT", "REPLY", "OFF"], 0);
    t.run(&mut own, &["RPUSH", "{l}1", "a", "b"], 0);
    t.run(&mut own, &["BLPOP", "{l}1", "0"], 0);
    t.run(&mut own, &["MULTI"], 0);
    t.run(&mut own, &["RPUSH", "{l}1", "c"], 0);
    t.run(&mut own, &["EXEC"], 0);
    t.run(&mut own, &["CLIENT", "REPLY", "ON"], 1);
    t.run(&mut own, &["LRANGE", "{l}1", "0", "-1"], 1);
    // SKIP silences MULTI alone; the transaction's other replies come.
    t.run(&mut own, &["CLIENT", "REPLY", "SKIP"], 0);
    t.run(&mut own, &["MULTI"], 0);
    t.run(&mut own, &["RPUSH", "{l}1", "d"], 1);
    t.run(&mut own, &["EXEC"], 1);
    t.seen
}

#[test]
fn client_reply_off_and_skip_leave_pubsub_traffic_as_redis_does() {
    let redis = StandaloneServer::start();
    let expected = steps(redis.port);

    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start_with(config_for(&cluster.seeds()));
    proxy.wait_until_serving();
    let seen = steps(proxy.port);
    assert_eq!(seen, expected);
}
