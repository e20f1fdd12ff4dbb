//! `CLIENT LIST` and `CLIENT INFO` through the proxy print the fields Redis 7.0 prints, in its
//! order, and the ones that describe a client's state (name, flags, subscriptions, transaction,
//! last command, user, protocol) say what a single `redis-server` says of a client that did
//! the same.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::RedisCluster;
use common::proxy::{Proxy, Raw, config_for};
use common::sentinel::StandaloneServer;
use respgate::config::UserConfig;

/// The fields that describe the client's own state rather than one server's buffers.
const STATE_FIELDS: [&str; 12] = [
    "name", "db", "flags", "sub", "psub", "ssub", "multi", "cmd", "user", "redir", "resp", "events",
];

const APP_PW: &str = "app-secret";

/// The text of a `CLIENT LIST`/`CLIENT INFO` reply, bulk (RESP2) or verbatim (RESP3).
fn listing(reply: &[u8]) -> String {
    let text = String::from_utf8_lossy(reply).into_owned();
    let body = text.split_once("\r\n").expect("a bulk reply").1;
    let body = body.strip_suffix("\r\n").expect("a whole reply");
    body.strip_prefix("txt:").unwrap_or(body).to_string()
}

/// One line's fields, in order.
fn fields(line: &str) -> Vec<(String, String)> {
    line.split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("key=value");
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn value<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} in {fields:?}"))
}

/// The state fields of one line, as `name=value` strings.
fn state(fields: &[(String, String)]) -> Vec<String> {
    STATE_FIELDS
        .iter()
        .map(|name| format!("{name}={}", value(fields, name)))
        .collect()
}

/// A client logged in as `app`.
fn login(port: u16) -> Raw {
    let mut raw = Raw::connect(port);
    assert_eq!(raw.command(&["AUTH", "app", APP_PW]), b"+OK\r\n");
    raw
}

fn id(raw: &mut Raw) -> String {
    let reply = String::from_utf8_lossy(&raw.command(&["CLIENT", "ID"])).into_owned();
    reply.trim_start_matches(':').trim_end().to_string()
}

/// The clients' steps on the server or proxy at `port`: the names of the fields of a plain
/// client's `CLIENT INFO`, and the state fields of each kind of client, as another client's
/// `CLIENT LIST` shows them. Also checks the fields that must agree with the client's own view.
fn observe(port: u16) -> (Vec<String>, Vec<Vec<String>>) {
    let mut plain = login(port);
    assert_eq!(plain.command(&["CLIENT", "SETNAME", "plain"]), b"+OK\r\n");
    let plain_id = id(&mut plain);
    let info = fields(&listing(&plain.command(&["CLIENT", "INFO"])));
    let names: Vec<String> = info.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(value(&info, "id"), plain_id);
    let fd: i64 = value(&info, "fd").parse().unwrap();
    assert!(fd > 0, "fd={fd}: the socket's descriptor");
    let mut seen = vec![state(&info)];
    // A client's own request is in its query buffer while it runs.
    seen.push(vec![format!("qbuf={}", value(&info, "qbuf"))]);

    // RESP3, in a transaction with two commands queued.
    let mut txn = login(port);
    txn.command(&["HELLO", "3"]);
    let txn_id = id(&mut txn);
    assert_eq!(txn.command(&["MULTI"]), b"+OK\r\n");
    assert_eq!(txn.command(&["SET", "{k}1", "v"]), b"+QUEUED\r\n");
    assert_eq!(txn.command(&["GET", "{k}1"]), b"+QUEUED\r\n");

    // Subscribed to two channels, a pattern and a sharded channel.
    let mut sub = login(port);
    let sub_id = id(&mut sub);
    sub.send(b"*3\r\n$9\r\nSUBSCRIBE\r\n$2\r\nc1\r\n$2\r\nc2\r\n");
    sub.reply();
    sub.reply();
    sub.command(&["PSUBSCRIBE", "p*"]);
    sub.command(&["SSUBSCRIBE", "s1"]);

    // Exempt from client eviction.
    let mut no_evict = login(port);
    let no_evict_id = id(&mut no_evict);
    assert_eq!(no_evict.command(&["CLIENT", "NO-EVICT", "on"]), b"+OK\r\n");

    let mut observer = login(port);
    let list = listing(&observer.command(&["CLIENT", "LIST"]));
    let lines: Vec<Vec<(String, String)>> = list.lines().map(fields).collect();
    for line in &lines {
        let line_names: Vec<&String> = line.iter().map(|(k, _)| k).collect();
        assert_eq!(line_names, names.iter().collect::<Vec<_>>(), "every line");
    }
    let of = |id: &str| {
        lines
            .iter()
            .find(|l| value(l, "id") == id)
            .unwrap_or_else(|| panic!("no client {id} in {list}"))
    };
    // The plain client's line, seen by another, differs only in what it did since.
    let plain_line = of(&plain_id);
    assert_eq!(value(plain_line, "fd"), fd.to_string());
    for id in [&plain_id, &txn_id, &sub_id, &no_evict_id] {
        seen.push(state(of(id)));
    }
    let observer_id = id(&mut observer);
    seen.push(vec![format!("qbuf={}", value(of(&observer_id), "qbuf"))]);
    // An invalid NO-EVICT argument, and CLIENT KILL's invalid filters, as Redis refuses them.
    let refused = observer.command(&["CLIENT", "NO-EVICT", "maybe"]);
    seen.push(vec![String::from_utf8_lossy(&refused).into_owned()]);
    for filter in [
        &["ID", "0"][..],
        &["ID", "-1"],
        &["ID", "str"],
        &["TYPE", "wrong_type"],
        &["TYPE", "master"],
        &["SKIPME", "maybe"],
        &["ID", "10", "extra"],
    ] {
        let mut command = vec!["CLIENT", "KILL"];
        command.extend_from_slice(filter);
        let refused = observer.command(&command);
        seen.push(vec![String::from_utf8_lossy(&refused).into_owned()]);
    }
    (names, seen)
}

/// Waits until the proxy serves every slot, logging in as `app` (with users configured, the
/// default user must log in too).
fn wait_serving(proxy: &Proxy) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut raw = proxy.raw();
        if raw.command(&["AUTH", "app", APP_PW]) == b"+OK\r\n"
            && raw.info("proxy").contains("slots_served=16384")
            && raw.command(&["EXISTS", "probe"]) == b":0\r\n"
        {
            return;
        }
        assert!(Instant::now() < deadline, "proxy never served");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn client_list_has_redis_fields_in_order_with_the_clients_state() {
    let redis = StandaloneServer::start();
    redis.cli(&[
        "ACL",
        "SETUSER",
        "app",
        "on",
        &format!(">{APP_PW}"),
        "+@all",
        "~*",
        "&*",
    ]);
    let (names, expected) = observe(redis.port);
    assert_eq!(
        names.join(" "),
        "id addr laddr fd name age idle flags db sub psub ssub multi qbuf qbuf-free argv-mem \
         multi-mem rbs rbp obl oll omem tot-mem events cmd user redir resp",
        "Redis 7.0's fields"
    );

    let cluster = RedisCluster::start(3, 0);
    let mut config = config_for(&cluster.seeds());
    config.users.insert(
        "app".into(),
        UserConfig {
            passwords: vec![APP_PW.into()],
            commands: "+@all".into(),
            keys: vec!["~*".into()],
            channels: vec!["&*".into()],
            ..UserConfig::default()
        },
    );
    let proxy = Proxy::start_with(config);
    wait_serving(&proxy);
    let (proxy_names, seen) = observe(proxy.port);
    assert_eq!(proxy_names, names);
    assert_eq!(seen, expected);
}
