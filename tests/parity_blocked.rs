//! Clients blocked in a command, seen through the proxy as through one Redis: counted in
//! `INFO`'s `blocked_clients`, flagged `b` with their command in `CLIENT LIST`, and unblocked
//! by `CLIENT UNBLOCK`. Each test runs the same steps against a single `redis-server` and
//! against the proxy in front of a cluster, and compares what a client sees, byte for byte.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::thread::sleep;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::RedisCluster;
use common::proxy::{Proxy, Raw};
use common::sentinel::StandaloneServer;

/// Each blocking command (keys in one slot), what to run first, and what wakes it.
const BLOCKING: &[(&[&str], &[&str], &[&str])] = &[
    (&["BLPOP", "{q}list", "0"], &[], &["RPUSH", "{q}list", "a"]),
    (
        &["BLMOVE", "{q}list", "{q}dst", "LEFT", "RIGHT", "0"],
        &[],
        &["RPUSH", "{q}list", "b"],
    ),
    (
        &["BRPOPLPUSH", "{q}list", "{q}dst", "0"],
        &[],
        &["RPUSH", "{q}list", "c"],
    ),
    (
        &["BZMPOP", "0", "1", "{q}zset", "MIN"],
        &[],
        &["ZADD", "{q}zset", "1", "a"],
    ),
    (
        &["XREAD", "BLOCK", "0", "STREAMS", "{q}stream", "$"],
        &[],
        &["XADD", "{q}stream", "1-1", "f", "v"],
    ),
    (
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "BLOCK",
            "0",
            "STREAMS",
            "{q}group",
            ">",
        ],
        &["XGROUP", "CREATE", "{q}group", "g", "$", "MKSTREAM"],
        &["XADD", "{q}group", "1-1", "f", "v"],
    ),
];

fn encode(args: &[&str]) -> BytesMut {
    let mut out = BytesMut::new();
    respgate::protocol::request::encode_command(&mut out, args);
    out
}

fn text(reply: Vec<u8>) -> String {
    String::from_utf8_lossy(&reply).into_owned()
}

/// The client id of `raw`'s connection.
fn id_of(raw: &mut Raw) -> String {
    let reply = text(raw.command(&["CLIENT", "ID"]));
    reply.trim_start_matches(':').trim_end().to_string()
}

/// `blocked_clients` of `INFO clients`.
fn blocked_clients(observer: &mut Raw) -> String {
    let info = observer.info("clients");
    info.lines()
        .find_map(|l| l.strip_prefix("blocked_clients:"))
        .unwrap_or_else(|| panic!("no blocked_clients in {info}"))
        .trim()
        .to_string()
}

/// Waits (10 s at most) until `blocked_clients` is `n`, as Redis's tests and tools do before
/// they wake a blocked client.
fn wait_blocked(observer: &mut Raw, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while blocked_clients(observer) != n.to_string() {
        assert!(
            Instant::now() < deadline,
            "blocked_clients never reached {n}"
        );
        sleep(Duration::from_millis(10));
    }
}

/// The `fields` of client `id` in `CLIENT LIST`, as `name=value`.
fn client_fields(observer: &mut Raw, id: &str, fields: &[&str]) -> Vec<String> {
    let list = text(observer.command(&["CLIENT", "LIST"]));
    let line = list
        .lines()
        .find(|l| l.contains(&format!("id={id} ")))
        .unwrap_or_else(|| panic!("no client {id} in {list}"));
    fields
        .iter()
        .map(|f| {
            line.split(' ')
                .find(|kv| kv.starts_with(&format!("{f}=")))
                .unwrap_or_else(|| panic!("no {f} in {line}"))
                .to_string()
        })
        .collect()
}

/// What a client sees of each blocking command on the server at `port`: `blocked_clients`
/// and the blocked client's `flags` and `cmd` while it waits, the reply that wakes it, and
/// `blocked_clients` after.
fn blocking_commands_seen_on(port: u16) -> Vec<String> {
    let mut observer = Raw::connect(port);
    let mut seen = Vec::new();
    for (command, setup, wake) in BLOCKING {
        if !setup.is_empty() {
            seen.push(text(observer.command(setup)));
        }
        let mut blocked = Raw::connect(port);
        let id = id_of(&mut blocked);
        blocked.send(&encode(command));
        wait_blocked(&mut observer, 1);
        seen.push(format!("{}: blocked_clients:1", command[0]));
        seen.extend(client_fields(&mut observer, &id, &["flags", "cmd"]));
        seen.push(text(observer.command(wake)));
        seen.push(text(blocked.reply()));
        seen.push(format!(
            "after: blocked_clients:{}",
            blocked_clients(&mut observer)
        ));
        seen.extend(client_fields(&mut observer, &id, &["flags", "cmd"]));
    }
    seen
}

#[test]
fn a_client_waiting_in_a_blocking_command_is_counted_and_flagged_as_by_redis() {
    let server = StandaloneServer::start();
    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds());
    let redis = blocking_commands_seen_on(server.port);
    let through_proxy = blocking_commands_seen_on(proxy.port);
    assert_eq!(through_proxy, redis);
    // What the comparison covers, spelled out for the first command.
    assert_eq!(
        &redis[..6],
        [
            "BLPOP: blocked_clients:1",
            "flags=b",
            "cmd=blpop",
            ":1\r\n",
            "*2\r\n$7\r\n{q}list\r\n$1\r\na\r\n",
            "after: blocked_clients:0"
        ]
    );
}

#[test]
fn clients_blocked_on_one_key_are_served_in_the_order_they_blocked() {
    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds());
    let mut observer = proxy.raw();
    let mut first = proxy.raw();
    let mut second = proxy.raw();
    first.send(&encode(&["BLPOP", "jobs", "0"]));
    wait_blocked(&mut observer, 1);
    second.send(&encode(&["BLPOP", "jobs", "0"]));
    wait_blocked(&mut observer, 2);
    assert_eq!(observer.command(&["RPUSH", "jobs", "1", "2"]), b":2\r\n");
    assert_eq!(text(first.reply()), "*2\r\n$4\r\njobs\r\n$1\r\n1\r\n");
    assert_eq!(text(second.reply()), "*2\r\n$4\r\njobs\r\n$1\r\n2\r\n");
    wait_blocked(&mut observer, 0);
}

/// `CLIENT UNBLOCK` in its forms on the server at `port`, with what the blocked client gets.
fn client_unblock_seen_on(port: u16) -> Vec<String> {
    let mut observer = Raw::connect(port);
    let own_id = id_of(&mut observer);
    let mut seen = Vec::new();
    for (command, reason) in [
        (&["BLPOP", "{u}list", "0"][..], None),
        (&["BLPOP", "{u}list", "0"][..], Some("TIMEOUT")),
        (&["BLPOP", "{u}list", "0"][..], Some("error")),
        (
            &["XREAD", "BLOCK", "0", "STREAMS", "{u}s", "$"][..],
            Some("TIMEOUT"),
        ),
        (&["BZPOPMIN", "{u}zset", "0"][..], Some("ERROR")),
    ] {
        let mut blocked = Raw::connect(port);
        let id = id_of(&mut blocked);
        blocked.send(&encode(command));
        wait_blocked(&mut observer, 1);
        let mut unblock = vec!["CLIENT", "UNBLOCK", id.as_str()];
        unblock.extend(reason);
        seen.push(text(observer.command(&unblock)));
        seen.push(text(blocked.reply()));
        seen.push(text(observer.command(&unblock)));
        seen.push(text(blocked.command(&["PING"])));
    }
    for refused in [
        &["CLIENT", "UNBLOCK", own_id.as_str()][..],
        &["CLIENT", "UNBLOCK", "987654"],
        &["CLIENT", "UNBLOCK", "-1"],
        &["CLIENT", "UNBLOCK", "x"],
        &["CLIENT", "UNBLOCK", own_id.as_str(), "LATER"],
        &["CLIENT", "UNBLOCK", own_id.as_str(), "ERROR", "x"],
        &["CLIENT", "UNBLOCK"],
    ] {
        seen.push(text(observer.command(refused)));
    }
    seen
}

#[test]
fn client_unblock_wakes_a_blocked_client_as_redis_does() {
    let server = StandaloneServer::start();
    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds());
    let redis = client_unblock_seen_on(server.port);
    let through_proxy = client_unblock_seen_on(proxy.port);
    assert_eq!(through_proxy, redis);
    assert_eq!(
        &redis[8..12],
        [
            ":1\r\n",
            "-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n",
            ":0\r\n",
            "+PONG\r\n"
        ]
    );
}

/// `flags`, `multi` and `cmd` of a client queuing a transaction, on the server at `port`.
fn transaction_seen_on(port: u16) -> Vec<String> {
    let mut observer = Raw::connect(port);
    let mut client = Raw::connect(port);
    let id = id_of(&mut client);
    let fields = ["flags", "multi", "cmd"];
    let mut seen = client_fields(&mut observer, &id, &fields);
    seen.push(text(client.command(&["MULTI"])));
    seen.extend(client_fields(&mut observer, &id, &fields));
    seen.push(text(client.command(&["SET", "{t}a", "1"])));
    seen.push(text(client.command(&["INCR", "{t}a"])));
    seen.extend(client_fields(&mut observer, &id, &fields));
    seen.push(text(client.command(&["EXEC"])));
    seen.extend(client_fields(&mut observer, &id, &fields));
    let observer_id = id_of(&mut observer);
    seen.extend(client_fields(&mut observer, &observer_id, &fields));
    seen
}

#[test]
fn a_client_in_a_transaction_is_listed_as_by_redis() {
    let server = StandaloneServer::start();
    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds());
    let redis = transaction_seen_on(server.port);
    assert_eq!(transaction_seen_on(proxy.port), redis);
    assert_eq!(
        &redis[9..12],
        ["flags=x", "multi=2", "cmd=incr"],
        "queued commands count and name the last one"
    );
}
