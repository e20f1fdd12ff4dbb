//! The keys where the proxy keeps the state its replicas share (`{respgate}...`, see
//! `respgate::keyspace::RESERVED`) are no client's: a command naming one is refused, under its
//! own name or through a route that strips a prefix, alone or among other keys, and `KEYS`,
//! `SCAN` and `RANDOMKEY` do not show them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::proxy::{Proxy, Raw, config_with, standalone_backend};
use common::sentinel::StandaloneServer;
use respgate::config::RouteConfig;

const REFUSED: &str = "-ERR respgate: keys starting with {respgate} hold the proxy's own state; no client may use them\r\n";

fn text(raw: &mut Raw, args: &[&str]) -> String {
    String::from_utf8_lossy(&raw.command(args)).into_owned()
}

#[test]
fn the_proxys_own_keys_are_refused_and_never_listed() {
    let main = StandaloneServer::start();
    let archive = StandaloneServer::start();
    let mut config = config_with(vec![
        ("main", standalone_backend(main.address())),
        ("archive", standalone_backend(archive.address())),
    ]);
    config.routing.routes.push(RouteConfig {
        prefix: "archive:".into(),
        backend: "archive".into(),
        strip_prefix: true,
        ..RouteConfig::default()
    });
    let proxy = Proxy::start_with(config);
    proxy.wait_until_serving();
    // The state as the proxy's replicas would keep it, on both backends.
    main.cli(&["HSET", "{respgate}:roster", "r1", "x"]);
    archive.cli(&["HSET", "{respgate}:migrations", "m1", "y"]);
    main.cli(&["SET", "user:1", "a"]);
    archive.cli(&["SET", "2024", "b"]);

    let mut client = Raw::connect(proxy.port);
    for args in [
        &["HGETALL", "{respgate}:roster"][..],
        &["HSET", "{respgate}:roster", "r1", "forged"],
        &["DEL", "{respgate}:roster"],
        &["MGET", "user:1", "{respgate}:roster"],
        &["MSET", "user:2", "c", "{respgate}:x", "d"],
        &["HGETALL", "archive:{respgate}:migrations"],
        &[
            "EVAL",
            "return redis.call('DEL', KEYS[1])",
            "1",
            "{respgate}:roster",
        ],
        &["BLPOP", "{respgate}:roster", "0.01"],
    ] {
        assert_eq!(text(&mut client, args), REFUSED, "{args:?}");
    }
    assert_eq!(text(&mut client, &["MULTI"]), "+OK\r\n");
    assert_eq!(text(&mut client, &["GET", "{respgate}:roster"]), REFUSED);
    assert!(text(&mut client, &["EXEC"]).starts_with("-EXECABORT"));
    // Nothing changed on the nodes, and MSET wrote none of its keys.
    assert_eq!(main.cli(&["HGET", "{respgate}:roster", "r1"]), "x");
    assert_eq!(main.cli(&["EXISTS", "user:2"]), "0");

    let keys = text(&mut client, &["KEYS", "*"]);
    assert!(
        keys.contains("user:1") && keys.contains("archive:2024"),
        "{keys}"
    );
    assert!(!keys.contains("respgate"), "{keys}");
    let mut cursor = "0".to_string();
    let mut scanned = String::new();
    loop {
        let reply = client.command(&["SCAN", &cursor, "COUNT", "1000"]);
        let reply = String::from_utf8_lossy(&reply).into_owned();
        // *2 $len cursor *n ...: the cursor is the fourth line.
        cursor = reply.split("\r\n").nth(2).expect("a cursor").to_string();
        scanned.push_str(&reply);
        if cursor == "0" {
            break;
        }
    }
    assert!(scanned.contains("archive:2024"), "{scanned}");
    assert!(!scanned.contains("respgate"), "{scanned}");
    for _ in 0..20 {
        let key = text(&mut client, &["RANDOMKEY"]);
        assert!(!key.contains("respgate"), "{key}");
    }
}
