//! A script or function running past `busy-reply-threshold` keeps its master answering `BUSY`.
//! Through the proxy, `SCRIPT KILL` and `FUNCTION KILL` reach that master whichever it is, a
//! script that wrote is `UNKILLABLE`, and a transaction that meets the busy node aborts, each
//! with the replies of a single `redis-server` in the same situation, byte for byte.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::thread::sleep;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::RedisCluster;
use common::proxy::{Proxy, Raw, config_for};
use common::sentinel::StandaloneServer;
use respgate::config::DEFAULT_CLUSTER;
use respgate::slot::Slot;

/// A script that never ends by itself.
const SPIN: &str = "while true do end";
/// A script that writes, then spins for a second.
const WRITE_THEN_SPIN: &str = "redis.call('SET', KEYS[1], 'w') \
    local t = redis.call('TIME') local start = t[1] * 1000000 + t[2] \
    while true do local n = redis.call('TIME') \
    if n[1] * 1000000 + n[2] - start > 1000000 then return 1 end end";
/// A library whose function never ends by itself.
const SPIN_LIBRARY: &str =
    "#!lua name=spinlib\nredis.register_function('spin', function() while true do end end)";

/// Where the steps run: the port clients use, and how to tell the node of a key is busy.
struct Place {
    port: u16,
    /// The port of the node that holds each key.
    node_of: Box<dyn Fn(&str) -> u16>,
}

impl Place {
    fn standalone(server: &StandaloneServer) -> Place {
        server.cli(&["CONFIG", "SET", "busy-reply-threshold", "50"]);
        let port = server.port;
        Place {
            port,
            node_of: Box::new(move |_| port),
        }
    }

    fn proxy(proxy: &Proxy, cluster: &RedisCluster) -> Place {
        let owners: Vec<(String, u16)> = ["{a}", "{b}", "{c}", "{t}", "{u}"]
            .iter()
            .map(|tag| {
                let owner = cluster.slot_owner(Slot::for_key(tag.as_bytes()).get());
                (tag.to_string(), owner)
            })
            .collect();
        Place {
            port: proxy.port,
            node_of: Box::new(move |key| {
                owners
                    .iter()
                    .find(|(tag, _)| key.starts_with(tag.as_str()))
                    .map(|(_, port)| *port)
                    .unwrap_or_else(|| panic!("no node known for {key}"))
            }),
        }
    }

    fn raw(&self) -> Raw {
        Raw::connect(self.port)
    }

    /// Starts `command` on a new connection and waits (10 s at most) until the node of `key`
    /// answers `BUSY`; returns the connection, whose reply comes when the script ends.
    fn make_busy(&self, command: &[&str], key: &str) -> Raw {
        let mut busy = self.raw();
        let mut out = BytesMut::new();
        respgate::protocol::request::encode_command(&mut out, command);
        busy.send(&out);
        let node = (self.node_of)(key);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !Raw::connect(node).command(&["PING"]).starts_with(b"-BUSY") {
            assert!(
                Instant::now() < deadline,
                "the node of {key} never got busy"
            );
            sleep(Duration::from_millis(10));
        }
        busy
    }
}

fn text(reply: Vec<u8>) -> String {
    String::from_utf8_lossy(&reply).into_owned()
}

/// A proxy in front of `cluster` whose requests may wait 10 s, so a client's busy script
/// outlives no request timeout before it is killed.
fn patient_proxy(cluster: &RedisCluster) -> Proxy {
    let mut config = config_for(&cluster.seeds());
    if let Some(backend) = config.clusters.get_mut(DEFAULT_CLUSTER) {
        backend.request_timeout_ms = 10_000;
    }
    let proxy = Proxy::start_with(config);
    proxy.wait_until_serving();
    proxy
}

/// A cluster of three masters whose scripts are busy after 50 ms.
fn busy_prone_cluster() -> RedisCluster {
    RedisCluster::start_with(3, 0, &["--busy-reply-threshold", "50"])
}

/// Scripts and functions on keys of every master, killed from another connection.
fn kills_seen_in(place: &Place) -> Vec<String> {
    let mut observer = place.raw();
    let mut seen = vec![text(observer.command(&["SCRIPT", "KILL"]))];
    for key in ["{a}k", "{b}k", "{c}k"] {
        let mut busy = place.make_busy(&["EVAL", SPIN, "1", key], key);
        seen.push(text(observer.command(&["FUNCTION", "KILL"])));
        seen.push(text(observer.command(&["SCRIPT", "KILL"])));
        seen.push(text(busy.reply()));
        seen.push(text(observer.command(&["SCRIPT", "KILL"])));
    }
    seen.push(text(observer.command(&[
        "FUNCTION",
        "LOAD",
        "REPLACE",
        SPIN_LIBRARY,
    ])));
    for key in ["{a}k", "{c}k"] {
        let mut busy = place.make_busy(&["FCALL", "spin", "1", key], key);
        seen.push(text(observer.command(&["SCRIPT", "KILL"])));
        seen.push(text(observer.command(&["FUNCTION", "KILL"])));
        seen.push(text(busy.reply()));
        seen.push(text(observer.command(&["FUNCTION", "KILL"])));
    }
    seen
}

#[test]
fn script_kill_and_function_kill_reach_the_busy_master() {
    let server = StandaloneServer::start();
    let cluster = busy_prone_cluster();
    let proxy = patient_proxy(&cluster);
    let redis = kills_seen_in(&Place::standalone(&server));
    let through_proxy = kills_seen_in(&Place::proxy(&proxy, &cluster));
    assert_eq!(through_proxy, redis);
    const NOTBUSY: &str = "-NOTBUSY No scripts in execution right now.\r\n";
    assert_eq!(redis[0], NOTBUSY);
    // Valkey names itself in this reply (`Valkey is busy ...`); the proxy passes on the node's.
    assert_eq!(
        redis[1],
        format!(
            "-BUSY {} is busy running a script. You can only call SCRIPT KILL or SHUTDOWN \
             NOSAVE.\r\n",
            common::server_title()
        ),
        "FUNCTION KILL cannot kill a script"
    );
    assert_eq!(redis[2], "+OK\r\n");
    assert!(
        redis[3].contains("Script killed by user with SCRIPT KILL"),
        "{}",
        redis[3]
    );
    assert_eq!(redis[4], NOTBUSY);
}

/// A script that wrote, asked to die.
fn unkillable_seen_in(place: &Place) -> Vec<String> {
    let mut observer = place.raw();
    let mut busy = place.make_busy(&["EVAL", WRITE_THEN_SPIN, "1", "{u}w"], "{u}w");
    vec![
        text(observer.command(&["SCRIPT", "KILL"])),
        text(busy.reply()),
        text(observer.command(&["GET", "{u}w"])),
        text(observer.command(&["SCRIPT", "KILL"])),
    ]
}

#[test]
fn a_script_that_wrote_is_unkillable_as_in_redis() {
    let server = StandaloneServer::start();
    let cluster = busy_prone_cluster();
    let proxy = patient_proxy(&cluster);
    let redis = unkillable_seen_in(&Place::standalone(&server));
    assert_eq!(unkillable_seen_in(&Place::proxy(&proxy, &cluster)), redis);
    assert_eq!(
        redis,
        [
            "-UNKILLABLE Sorry the script already executed write commands against the dataset. You can either wait the script termination or kill the server in a hard way using the SHUTDOWN NOSAVE command.\r\n",
            ":1\r\n",
            "$1\r\nw\r\n",
            "-NOTBUSY No scripts in execution right now.\r\n",
        ]
    );
}

/// Redis's own tests of `MULTI`/`EXEC` around a busy script (unit/multi.tcl), on keys of the
/// busy node: a command queued while it is busy, or `EXEC` sent while it is busy, aborts the
/// transaction, and none of it runs.
fn transactions_seen_in(place: &Place) -> Vec<String> {
    let mut observer = place.raw();
    let mut client = place.raw();
    let mut seen = vec![text(observer.command(&["SET", "{t}x", "1"]))];
    let spin = ["EVAL", SPIN, "1", "{t}busy"];
    // A command queued while the node is busy.
    let mut busy = place.make_busy(&spin, "{t}busy");
    seen.push(text(client.command(&["MULTI"])));
    seen.push(text(client.command(&["INCR", "{t}x"])));
    seen.push(text(observer.command(&["SCRIPT", "KILL"])));
    seen.push(text(busy.reply()));
    seen.push(text(client.command(&["INCR", "{t}x"])));
    seen.push(text(client.command(&["EXEC"])));
    seen.push(text(client.command(&["PING", "asdf"])));
    // Queued before, then more queued and EXEC while busy.
    seen.push(text(client.command(&["MULTI"])));
    seen.push(text(client.command(&["INCR", "{t}x"])));
    let mut busy = place.make_busy(&spin, "{t}busy");
    seen.push(text(client.command(&["INCR", "{t}x"])));
    seen.push(text(client.command(&["EXEC"])));
    seen.push(text(observer.command(&["SCRIPT", "KILL"])));
    seen.push(text(busy.reply()));
    seen.push(text(client.command(&["PING", "asdf"])));
    // Only EXEC while busy.
    seen.push(text(client.command(&["MULTI"])));
    seen.push(text(client.command(&["INCR", "{t}x"])));
    let mut busy = place.make_busy(&spin, "{t}busy");
    seen.push(text(client.command(&["EXEC"])));
    seen.push(text(observer.command(&["SCRIPT", "KILL"])));
    seen.push(text(busy.reply()));
    seen.push(text(client.command(&["PING", "asdf"])));
    seen.push(text(observer.command(&["GET", "{t}x"])));
    seen
}

#[test]
fn a_transaction_that_meets_a_busy_node_aborts_as_in_redis() {
    let server = StandaloneServer::start();
    let cluster = busy_prone_cluster();
    let proxy = patient_proxy(&cluster);
    let redis = transactions_seen_in(&Place::standalone(&server));
    assert_eq!(transactions_seen_in(&Place::proxy(&proxy, &cluster)), redis);
    // Valkey names itself in this reply (`Valkey is busy ...`); the proxy passes on the node's.
    let busy = format!(
        "BUSY {} is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
        common::server_title()
    );
    assert_eq!(redis[2], format!("-{busy}\r\n"));
    assert_eq!(
        redis[6],
        "-EXECABORT Transaction discarded because of previous errors.\r\n"
    );
    assert_eq!(
        redis[11],
        format!("-EXECABORT Transaction discarded because of: {busy}\r\n")
    );
    assert_eq!(redis.last().unwrap(), "$1\r\n1\r\n", "no INCR ran");
}

/// Other clients' commands for a node busy with a script, as Redis's `unit/scripting` and
/// `unit/functions` send them: each gets `BUSY` at once (not after the script ends, nor after
/// the request timeout), while the busy client's own command pipelined behind its script runs
/// once the script is killed, as on one Redis.
fn neighbours_seen_in(place: &Place, script: &[&str]) -> Vec<String> {
    let mut observer = place.raw();
    let mut seen = vec![text(observer.command(&["SET", "{a}x", "1"]))];
    let mut busy = place.make_busy(script, "{a}busy");
    let mut own = BytesMut::new();
    respgate::protocol::request::encode_command(&mut own, &["GET", "{a}x"]);
    busy.send(&own);
    seen.push(text(observer.command(&["GET", "{a}x"])));
    seen.push(text(observer.command(&["SET", "{a}x", "2"])));
    seen.push(text(observer.command(&["INCR", "{a}n"])));
    let kill = if script[0] == "FCALL" {
        "FUNCTION"
    } else {
        "SCRIPT"
    };
    seen.push(text(observer.command(&[kill, "KILL"])));
    seen.push(text(busy.reply()));
    seen.push(text(busy.reply()));
    seen.push(text(observer.command(&["GET", "{a}x"])));
    seen.push(text(observer.command(&["GET", "{a}n"])));
    seen
}

#[test]
fn other_clients_of_a_busy_node_get_busy_at_once_as_from_redis() {
    let server = StandaloneServer::start();
    let cluster = busy_prone_cluster();
    let proxy = patient_proxy(&cluster);
    let eval = ["EVAL", SPIN, "1", "{a}busy"];
    let fcall = ["FCALL", "spin", "1", "{a}busy"];
    let places = [Place::standalone(&server), Place::proxy(&proxy, &cluster)];
    for place in &places {
        let loaded = place
            .raw()
            .command(&["FUNCTION", "LOAD", "REPLACE", SPIN_LIBRARY]);
        assert_eq!(text(loaded), "$7\r\nspinlib\r\n");
    }
    for script in [&eval[..], &fcall[..]] {
        let redis = neighbours_seen_in(&places[0], script);
        let started = Instant::now();
        assert_eq!(neighbours_seen_in(&places[1], script), redis, "{script:?}");
        // The proxy's request timeout is 10 s: a command that waited behind the script on a
        // shared connection would have taken until the kill, after it.
        assert!(started.elapsed() < Duration::from_secs(8), "{script:?}");
        let busy = format!(
            "-BUSY {} is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.\r\n",
            common::server_title()
        );
        if script[0] == "EVAL" {
            assert_eq!(redis[1], busy);
            assert_eq!(
                redis[6], "$1\r\n1\r\n",
                "the busy client's own GET ran after"
            );
        }
        assert_eq!(redis[7], "$1\r\n1\r\n", "no write ran while busy");
    }
}
