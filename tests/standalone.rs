//! A standalone `redis-server` as a backend (`kind = "standalone"`): every key lands on the
//! server, and since all of a backend's keys are on one node, commands whose keys hash to
//! different slots work as on a single Redis: a cross-slot `MSET`, a transaction, a script, a
//! blocking pop woken by another client.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::thread::sleep;
use std::time::{Duration, Instant};

use common::proxy::{Proxy, Raw, config_with, standalone_backend};
use common::sentinel::StandaloneServer;
use respgate::slot::Slot;

/// A proxy whose only backend, `solo`, is `server`.
fn standalone_proxy(server: &StandaloneServer) -> Proxy {
    let config = config_with(vec![("solo", standalone_backend(server.address()))]);
    let proxy = Proxy::start_with(config);
    proxy.wait_until_serving();
    proxy
}

fn command(raw: &mut Raw, args: &[&str]) -> String {
    String::from_utf8_lossy(&raw.command(args)).into_owned()
}

/// The keys the tests use hash to three different slots: on a Redis Cluster, any command with
/// two of them would be refused with `CROSSSLOT`.
fn assert_different_slots(keys: &[&str]) {
    let slots: std::collections::BTreeSet<u16> = keys
        .iter()
        .map(|k| Slot::for_key(k.as_bytes()).get())
        .collect();
    assert_eq!(slots.len(), keys.len(), "{keys:?} hash to {slots:?}");
}

#[test]
fn every_key_lands_on_the_standalone_server() {
    let server = StandaloneServer::start();
    let proxy = standalone_proxy(&server);
    let mut client = proxy.raw();
    for i in 0..100 {
        let key = format!("k:{i}");
        assert_eq!(
            command(&mut client, &["SET", &key, &i.to_string()]),
            "+OK\r\n"
        );
    }
    for i in 0..100 {
        assert_eq!(server.cli(&["GET", &format!("k:{i}")]), i.to_string());
    }
    assert_eq!(server.cli(&["DBSIZE"]), "100");
    assert_eq!(command(&mut client, &["DBSIZE"]), ":100\r\n");
}

#[test]
fn a_cross_slot_mset_works_as_on_one_redis() {
    assert_different_slots(&["a", "b", "c"]);
    let server = StandaloneServer::start();
    let proxy = standalone_proxy(&server);
    let mut client = proxy.raw();
    assert_eq!(
        command(&mut client, &["MSET", "a", "1", "b", "2", "c", "3"]),
        "+OK\r\n"
    );
    assert_eq!(
        command(&mut client, &["MGET", "c", "a", "nope", "b"]),
        "*4\r\n$1\r\n3\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n"
    );
    assert_eq!(server.cli(&["MGET", "a", "b", "c"]), "1\n2\n3");
    // MSETNX is all or nothing across the keys, which only one node can promise.
    assert_eq!(
        command(&mut client, &["MSETNX", "a", "9", "fresh", "9"]),
        ":0\r\n"
    );
    assert_eq!(server.cli(&["EXISTS", "fresh"]), "0");
}

#[test]
fn a_transaction_with_keys_of_different_slots_commits_as_on_one_redis() {
    assert_different_slots(&["a", "b", "c"]);
    let server = StandaloneServer::start();
    let proxy = standalone_proxy(&server);
    let mut client = proxy.raw();
    assert_eq!(command(&mut client, &["MULTI"]), "+OK\r\n");
    assert_eq!(command(&mut client, &["SET", "a", "1"]), "+QUEUED\r\n");
    assert_eq!(command(&mut client, &["INCR", "b"]), "+QUEUED\r\n");
    assert_eq!(command(&mut client, &["RPUSH", "c", "x"]), "+QUEUED\r\n");
    assert_eq!(command(&mut client, &["EXEC"]), "*3\r\n+OK\r\n:1\r\n:1\r\n");
    assert_eq!(server.cli(&["GET", "a"]), "1");
    assert_eq!(server.cli(&["GET", "b"]), "1");
    assert_eq!(server.cli(&["LRANGE", "c", "0", "-1"]), "x");
    // WATCH over keys of different slots, broken by another client: EXEC runs nothing.
    let mut other = proxy.raw();
    assert_eq!(command(&mut client, &["WATCH", "a", "b"]), "+OK\r\n");
    assert_eq!(command(&mut other, &["SET", "b", "changed"]), "+OK\r\n");
    assert_eq!(command(&mut client, &["MULTI"]), "+OK\r\n");
    assert_eq!(command(&mut client, &["SET", "a", "2"]), "+QUEUED\r\n");
    assert_eq!(command(&mut client, &["EXEC"]), "*-1\r\n");
    assert_eq!(server.cli(&["GET", "a"]), "1");
}

#[test]
fn a_script_with_keys_of_different_slots_runs_as_on_one_redis() {
    assert_different_slots(&["a", "b"]);
    let server = StandaloneServer::start();
    let proxy = standalone_proxy(&server);
    let mut client = proxy.raw();
    let script = "redis.call('SET', KEYS[1], ARGV[1]); redis.call('SET', KEYS[2], ARGV[2]); \
                  return redis.call('MGET', KEYS[1], KEYS[2])";
    assert_eq!(
        command(&mut client, &["EVAL", script, "2", "a", "b", "1", "2"]),
        "*2\r\n$1\r\n1\r\n$1\r\n2\r\n"
    );
    assert_eq!(server.cli(&["MGET", "a", "b"]), "1\n2");
    // The same script by its digest, loaded through the proxy.
    let sha = command(&mut client, &["SCRIPT", "LOAD", script]);
    let sha = sha.lines().nth(1).expect("a bulk digest").to_owned();
    assert_eq!(
        command(&mut client, &["EVALSHA", &sha, "2", "b", "a", "3", "4"]),
        "*2\r\n$1\r\n3\r\n$1\r\n4\r\n"
    );
    assert_eq!(server.cli(&["MGET", "a", "b"]), "4\n3");
}

#[test]
fn a_blocking_pop_is_woken_by_another_clients_push() {
    assert_different_slots(&["queue:a", "queue:b"]);
    let server = StandaloneServer::start();
    let proxy = standalone_proxy(&server);
    let mut waiter = proxy.raw();
    let mut pusher = proxy.raw();
    // Two lists of different slots in one BLPOP, as on one Redis.
    let mut request = bytes::BytesMut::new();
    respgate::protocol::request::encode_command(
        &mut request,
        &["BLPOP", "queue:a", "queue:b", "10"],
    );
    waiter.send(&request);
    // Until the waiter is blocked on the server, a push would not prove the wake-up.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server
        .cli(&["INFO", "clients"])
        .contains("blocked_clients:1")
    {
        assert!(
            Instant::now() < deadline,
            "BLPOP never blocked on the server"
        );
        sleep(Duration::from_millis(20));
    }
    let pushed = Instant::now();
    assert_eq!(command(&mut pusher, &["RPUSH", "queue:b", "job"]), ":1\r\n");
    assert_eq!(
        String::from_utf8_lossy(&waiter.reply()),
        "*2\r\n$7\r\nqueue:b\r\n$3\r\njob\r\n"
    );
    assert!(
        pushed.elapsed() < Duration::from_secs(5),
        "woken by the push, not by the 10 s timeout"
    );
    // The waiter's connection serves the next command as usual.
    assert_eq!(command(&mut waiter, &["LLEN", "queue:b"]), ":0\r\n");
}

#[test]
fn select_of_another_database_is_accepted_when_every_backend_is_standalone() {
    let server = StandaloneServer::start();
    let proxy = standalone_proxy(&server);
    let mut client = proxy.raw();
    assert_eq!(command(&mut client, &["SELECT", "1"]), "+OK\r\n");
    assert_eq!(command(&mut client, &["SET", "in-db-1", "v"]), "+OK\r\n");
    assert_eq!(server.cli(&["-n", "1", "GET", "in-db-1"]), "v");
    assert_eq!(server.cli(&["-n", "0", "EXISTS", "in-db-1"]), "0");
    // Another client is still on database 0.
    let mut other = proxy.raw();
    assert_eq!(command(&mut other, &["GET", "in-db-1"]), "$-1\r\n");
}

/// A key listing through the proxy: `KEYS *` sorted, `SCAN` to the end sorted, and 50
/// `RANDOMKEY`s.
fn listed(client: &mut Raw) -> (Vec<String>, Vec<String>, std::collections::BTreeSet<String>) {
    let bulks = |reply: &str| -> Vec<String> {
        reply
            .split("\r\n")
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0].starts_with('$'))
            .map(|w| w[1].to_owned())
            .collect()
    };
    let mut keys = bulks(&command(client, &["KEYS", "*"]));
    keys.sort();
    let mut scanned = Vec::new();
    let mut cursor = "0".to_owned();
    loop {
        let reply = command(client, &["SCAN", &cursor, "COUNT", "2"]);
        let mut found = bulks(&reply);
        cursor = found.remove(0);
        scanned.extend(found);
        if cursor == "0" {
            break;
        }
    }
    scanned.sort();
    let random = (0..50)
        .flat_map(|_| bulks(&command(client, &["RANDOMKEY"])))
        .collect();
    (keys, scanned, random)
}

#[test]
fn key_listings_show_only_the_keys_the_routes_reach() {
    // Two backends: `arch:` keys are stored on `archive` without their prefix. On `main`, the
    // test puts an `arch:` key left behind by a route change: GET through the proxy cannot see
    // it, so neither may KEYS, SCAN or RANDOMKEY.
    let main = StandaloneServer::start();
    let archive = StandaloneServer::start();
    let mut config = config_with(vec![
        ("main", standalone_backend(main.address())),
        ("archive", standalone_backend(archive.address())),
    ]);
    config.routing.routes.push(respgate::config::RouteConfig {
        prefix: "arch:".into(),
        backend: "archive".into(),
        strip_prefix: true,
        ..Default::default()
    });
    let proxy = Proxy::start_with(config);
    proxy.wait_until_serving();
    let mut client = proxy.raw();
    for key in ["plain", "arch:x"] {
        assert_eq!(command(&mut client, &["SET", key, "v"]), "+OK\r\n");
    }
    assert_eq!(main.cli(&["SET", "arch:old", "left"]), "OK");
    assert_eq!(command(&mut client, &["GET", "arch:old"]), "$-1\r\n");

    let (keys, scanned, random) = listed(&mut client);
    let reachable = ["arch:x", "plain"];
    assert_eq!(keys, reachable, "KEYS *");
    assert_eq!(scanned, reachable, "a full SCAN");
    assert!(
        random.iter().all(|k| reachable.contains(&k.as_str())),
        "RANDOMKEY: {random:?}"
    );
    assert_eq!(
        random.len(),
        2,
        "both keys drawn in 50 RANDOMKEYs: {random:?}"
    );
}
