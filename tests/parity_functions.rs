//! `FUNCTION DUMP` and `FUNCTION RESTORE` through the proxy act on the whole cluster as they do
//! on one Redis: a restored library is listed and callable whichever master holds the key, the
//! `FLUSH`, `APPEND` and `REPLACE` policies do what Redis does, and a refused restore comes back
//! with a single `redis-server`'s words.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::BytesMut;
use common::RedisCluster;
use common::proxy::{Proxy, Raw, config_for};
use common::sentinel::StandaloneServer;

/// A library with one function that returns its name.
const LIB_A: &str = "#!lua name=liba\nredis.register_function('fa', function() return 'a' end)";
/// Another library, with a function of another name.
const LIB_B: &str = "#!lua name=libb\nredis.register_function('fb', function() return 'b' end)";
/// `liba` again, its function answering something else, to tell a replaced library.
const LIB_A2: &str = "#!lua name=liba\nredis.register_function('fa', function() return 'a2' end)";
/// A library the dump does not hold.
const LIB_C: &str = "#!lua name=libc\nredis.register_function('fc', function() return 'c' end)";

/// Sends `args` (binary-safe) on `raw` and returns the reply bytes.
fn send(raw: &mut Raw, args: &[&[u8]]) -> Vec<u8> {
    let mut out = BytesMut::new();
    respgate::protocol::request::encode_command(&mut out, args);
    raw.send(&out);
    raw.reply()
}

/// The payload of a bulk-string reply.
fn bulk(reply: &[u8]) -> Vec<u8> {
    assert_eq!(reply.first(), Some(&b'$'), "not a bulk string: {reply:?}");
    let start = reply.iter().position(|&b| b == b'\n').unwrap() + 1;
    reply[start..reply.len() - 2].to_vec()
}

fn text(reply: Vec<u8>) -> String {
    String::from_utf8_lossy(&reply).into_owned()
}

/// The names of the libraries `FUNCTION LIST` shows on `port`, sorted.
fn libraries(port: u16) -> Vec<String> {
    let mut raw = Raw::connect(port);
    let listed = text(raw.command(&["FUNCTION", "LIST"]));
    let lines: Vec<&str> = listed.split("\r\n").collect();
    // Each library is a map whose first field is `library_name`, its value two lines on.
    let mut names: Vec<String> = (0..lines.len())
        .filter(|&i| lines[i] == "library_name")
        .filter_map(|i| lines.get(i + 2))
        .map(|l| l.to_string())
        .collect();
    names.sort();
    names
}

/// The steps, on the server or proxy at `port`: the replies a client sees.
fn steps(port: u16) -> Vec<String> {
    let mut raw = Raw::connect(port);
    let mut seen = Vec::new();
    assert_eq!(raw.command(&["FUNCTION", "FLUSH"]), b"+OK\r\n");
    seen.push(text(raw.command(&["FUNCTION", "LOAD", LIB_A])));
    seen.push(text(raw.command(&["FUNCTION", "LOAD", LIB_B])));
    let dump = bulk(&raw.command(&["FUNCTION", "DUMP"]));
    seen.push(text(raw.command(&["FUNCTION", "FLUSH"])));
    // Default policy (APPEND) into an empty server.
    seen.push(text(send(&mut raw, &[b"FUNCTION", b"RESTORE", &dump])));
    // APPEND again: the libraries already exist. Which one Redis names depends on its dict's
    // random hash seed, so the name is left out of the comparison.
    let exists = text(send(&mut raw, &[b"FUNCTION", b"RESTORE", &dump, b"APPEND"]));
    seen.push(exists.replace("liba", "<lib>").replace("libb", "<lib>"));
    // REPLACE puts the dumped `liba` back over a changed one.
    seen.push(text(raw.command(&["FUNCTION", "LOAD", "REPLACE", LIB_A2])));
    seen.push(text(raw.command(&["FCALL", "fa", "0"])));
    seen.push(text(send(
        &mut raw,
        &[b"FUNCTION", b"RESTORE", &dump, b"REPLACE"],
    )));
    seen.push(text(raw.command(&["FCALL", "fa", "0"])));
    // FLUSH drops what the payload does not hold.
    seen.push(text(raw.command(&["FUNCTION", "DELETE", "libb"])));
    seen.push(text(raw.command(&["FUNCTION", "LOAD", LIB_C])));
    seen.push(text(send(
        &mut raw,
        &[b"FUNCTION", b"RESTORE", &dump, b"FLUSH"],
    )));
    seen.push(text(raw.command(&["FCALL", "fb", "0"])));
    seen.push(text(raw.command(&["FCALL", "fc", "0"])));
    // Errors: a policy Redis does not know, a payload it cannot read.
    seen.push(text(send(
        &mut raw,
        &[b"FUNCTION", b"RESTORE", &dump, b"MERGE"],
    )));
    seen.push(text(send(
        &mut raw,
        &[b"FUNCTION", b"RESTORE", b"not a payload"],
    )));
    seen
}

#[test]
fn function_restore_reaches_every_master_with_redis_replies() {
    let redis = StandaloneServer::start();
    let expected = steps(redis.port);
    assert!(
        expected[4] == "-ERR Library <lib> already exists\r\n",
        "{expected:?}"
    );

    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start_with(config_for(&cluster.seeds()));
    proxy.wait_until_serving();
    let seen = steps(proxy.port);
    assert_eq!(seen, expected);

    // After a restore with FLUSH, every master holds both dumped libraries, so `FCALL` works
    // whichever master owns the key, and `FUNCTION LIST` agrees on any of them.
    for port in cluster.master_ports() {
        assert_eq!(libraries(port), ["liba", "libb"], "master {port}");
    }
    let mut raw = proxy.raw();
    for key in cluster.key_per_master("fkey") {
        assert_eq!(raw.command(&["FCALL", "fa", "1", &key]), b"$1\r\na\r\n");
        assert_eq!(raw.command(&["FCALL", "fb", "1", &key]), b"$1\r\nb\r\n");
    }

    // A dump through the proxy restores the same libraries into a plain Redis.
    let mut direct = Raw::connect(redis.port);
    assert_eq!(direct.command(&["FUNCTION", "FLUSH"]), b"+OK\r\n");
    let again = bulk(&raw.command(&["FUNCTION", "DUMP"]));
    assert_eq!(
        send(&mut direct, &[b"FUNCTION", b"RESTORE", &again]),
        b"+OK\r\n"
    );
    // Not byte-equal to the first dump in general: each master lists its libraries in its own
    // dict order. What matters is what a restore of it yields.
    assert_eq!(libraries(redis.port), ["liba", "libb"]);
}
