//! The proxy's slow log answers as one Redis's: `CONFIG SET slowlog-log-slower-than` and
//! `slowlog-max-len` through the proxy govern it (and still reach every node), `SLOWLOG GET`
//! takes Redis's count (10 by default, -1 for all) and errors, and an entry shows the request
//! as the client sent it, even when the proxy rewrote it for the node.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::RedisCluster;
use common::proxy::{Proxy, Raw, cluster_backend, config_with};
use common::sentinel::StandaloneServer;
use respgate::config::RouteConfig;

fn text(reply: Vec<u8>) -> String {
    String::from_utf8_lossy(&reply).into_owned()
}

/// The number of elements of the array reply `reply`.
fn array_len(reply: &[u8]) -> usize {
    let text = String::from_utf8_lossy(reply);
    let head = text.split("\r\n").next().unwrap();
    head.strip_prefix('*')
        .unwrap_or_else(|| panic!("not an array: {text}"))
        .parse()
        .unwrap()
}

/// `SLOWLOG GET` with each count and its errors, after `sets` slow `SET`s, as seen on `port`.
fn get_counts_seen_on(raw: &mut Raw, sets: usize) -> Vec<String> {
    assert_eq!(raw.command(&["SLOWLOG", "RESET"]), b"+OK\r\n");
    for i in 0..sets {
        assert_eq!(raw.command(&["SET", &format!("k{i}"), "v"]), b"+OK\r\n");
    }
    let mut seen: Vec<String> = [vec!["SLOWLOG", "GET"], vec!["SLOWLOG", "GET", "2"]]
        .iter()
        .map(|args| array_len(&raw.command(args)).to_string())
        .collect();
    for bad in [
        &["SLOWLOG", "GET", "-2"][..],
        &["SLOWLOG", "GET", "abc"],
        &["SLOWLOG", "GET", "1", "2"],
    ] {
        seen.push(text(raw.command(bad)));
    }
    seen
}

#[test]
fn slowlog_get_takes_redis_counts_and_errors() {
    let redis = StandaloneServer::start();
    redis.cli(&["CONFIG", "SET", "slowlog-log-slower-than", "0"]);
    let mut direct = Raw::connect(redis.port);
    let expected = get_counts_seen_on(&mut direct, 12);
    // Every command that ran is logged, `SLOWLOG` itself and its errors included.
    let every = array_len(&direct.command(&["SLOWLOG", "GET", "-1"]));
    assert_eq!(every, 18, "RESET, twelve SETs, five SLOWLOG GETs");
    assert_eq!(
        expected,
        [
            "10",
            "2",
            "-ERR count should be greater than or equal to -1\r\n",
            "-ERR count should be greater than or equal to -1\r\n",
            "-ERR unknown subcommand or wrong number of arguments for 'GET'. Try SLOWLOG HELP.\r\n",
        ]
    );
    let cluster = RedisCluster::start(3, 0);
    let mut config = config_with(vec![("main", cluster_backend(&cluster.seeds()))]);
    config.server.allow_admin_commands = true;
    let proxy = Proxy::start_with(config);
    proxy.wait_until_serving();
    let mut raw = proxy.raw();
    assert_eq!(
        raw.command(&["CONFIG", "SET", "slowlog-log-slower-than", "0"]),
        b"+OK\r\n"
    );
    assert_eq!(get_counts_seen_on(&mut raw, 12), expected);
    // -1 is every entry, newest first.
    let all = raw.command(&["SLOWLOG", "GET", "-1"]);
    assert_eq!(array_len(&all), every);
    assert!(text(all).contains("$2\r\nk0\r\n"));
}

#[test]
fn config_set_through_the_proxy_governs_its_slow_log_and_the_nodes() {
    let cluster = RedisCluster::start(3, 0);
    let mut config = config_with(vec![("main", cluster_backend(&cluster.seeds()))]);
    config.server.allow_admin_commands = true;
    // A minute: nothing is logged before the CONFIG SET below, however loaded the machine.
    config.server.slowlog_log_slower_than_us = 60_000_000;
    // Keys `app:<k>` are `<k>` on the nodes: the proxy rewrites those requests.
    config.routing.routes.push(RouteConfig {
        prefix: "app:".into(),
        backend: "main".into(),
        strip_prefix: true,
        ..RouteConfig::default()
    });
    let proxy = Proxy::start_with(config);
    proxy.wait_until_serving();
    let mut raw = proxy.raw();
    // The configured threshold logs none of these.
    assert_eq!(raw.command(&["SET", "a", "1"]), b"+OK\r\n");
    assert_eq!(raw.command(&["SLOWLOG", "LEN"]), b":0\r\n");

    assert_eq!(
        raw.command(&[
            "CONFIG",
            "SET",
            "SLOWLOG-LOG-SLOWER-THAN",
            "0",
            "slowlog-max-len",
            "3"
        ]),
        b"+OK\r\n"
    );
    for port in cluster.ports() {
        assert_eq!(
            cluster.cli(port, &["CONFIG", "GET", "slowlog-log-slower-than"]),
            "slowlog-log-slower-than\n0"
        );
        assert_eq!(
            cluster.cli(port, &["CONFIG", "GET", "slowlog-max-len"]),
            "slowlog-max-len\n3"
        );
    }
    assert_eq!(raw.command(&["SADD", "app:s", "a", "b", "c"]), b":3\r\n");
    assert_eq!(raw.command(&["SPOP", "app:s", "2"]).first(), Some(&b'*'));
    let newest = text(raw.command(&["SLOWLOG", "GET", "1"]));
    assert!(
        newest.contains("*3\r\n$4\r\nSPOP\r\n$5\r\napp:s\r\n$1\r\n2\r\n"),
        "logged as the client sent it: {newest}"
    );
    for i in 0..5 {
        raw.command(&["GET", &format!("g{i}")]);
    }
    assert_eq!(
        raw.command(&["SLOWLOG", "LEN"]),
        b":3\r\n",
        "slowlog-max-len"
    );
    // A shorter length trims the log at once, as the CONFIG SET itself does in Redis.
    assert_eq!(
        raw.command(&["CONFIG", "SET", "slowlog-max-len", "1"]),
        b"+OK\r\n"
    );
    assert_eq!(raw.command(&["SLOWLOG", "LEN"]), b":1\r\n");
    // A negative threshold logs nothing more.
    assert_eq!(
        raw.command(&["CONFIG", "SET", "slowlog-log-slower-than", "-1"]),
        b"+OK\r\n"
    );
    assert_eq!(raw.command(&["SLOWLOG", "RESET"]), b"+OK\r\n");
    raw.command(&["GET", "a"]);
    assert_eq!(raw.command(&["SLOWLOG", "LEN"]), b":0\r\n");
    // A CONFIG SET the nodes refuse changes nothing here either (Redis 7 sets all or none).
    assert!(
        text(raw.command(&[
            "CONFIG",
            "SET",
            "slowlog-log-slower-than",
            "0",
            "slowlog-max-len",
            "x"
        ]))
        .starts_with("-ERR")
    );
    raw.command(&["GET", "a"]);
    assert_eq!(raw.command(&["SLOWLOG", "LEN"]), b":0\r\n");
}

/// The commands in the slow log, newest first, after some the proxy answers itself and some
/// it forwards, as seen on `raw` with every command logged.
fn logged_commands_seen_on(raw: &mut Raw) -> Vec<String> {
    assert_eq!(raw.command(&["SLOWLOG", "RESET"]), b"+OK\r\n");
    for args in [
        &["PING"][..],
        &["ECHO", "hi"],
        &["SET", "k", "v"],
        &["CLIENT", "SETNAME", "logged"],
        &["GET", "k"],
        &["GET"],
    ] {
        raw.command(args);
    }
    let all = text(raw.command(&["SLOWLOG", "GET", "-1"]));
    // Each entry's arguments follow its duration: `*N` then N bulk strings; the command's
    // name is the first.
    all.split("\r\n")
        .collect::<Vec<_>>()
        .windows(3)
        .filter(|w| w[0].starts_with('*') && w[1].starts_with('$'))
        .map(|w| w[2].to_ascii_lowercase())
        .filter(|name| ["ping", "echo", "set", "client", "get", "slowlog"].contains(&name.as_str()))
        .collect()
}

#[test]
fn commands_the_proxy_answers_itself_are_logged_as_redis_logs_them() {
    let redis = StandaloneServer::start();
    redis.cli(&["CONFIG", "SET", "slowlog-log-slower-than", "0"]);
    let expected = logged_commands_seen_on(&mut Raw::connect(redis.port));
    assert_eq!(
        expected,
        ["get", "client", "set", "echo", "ping", "slowlog"],
        "the GET refused for its arity is not logged"
    );
    let cluster = RedisCluster::start(3, 0);
    let mut config = config_with(vec![("main", cluster_backend(&cluster.seeds()))]);
    config.server.allow_admin_commands = true;
    let proxy = Proxy::start_with(config);
    proxy.wait_until_serving();
    let mut raw = proxy.raw();
    assert_eq!(
        raw.command(&["CONFIG", "SET", "slowlog-log-slower-than", "0"]),
        b"+OK\r\n"
    );
    assert_eq!(logged_commands_seen_on(&mut raw), expected);
}
