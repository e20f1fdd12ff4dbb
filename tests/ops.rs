//! What operators look at (issue 15): `/metrics` after traffic, `/topology`, `/ready` while a
//! routed backend is not served, the admin listener's limits, `SLOWLOG` and `INFO`'s own
//! sections, against real clusters with in-process proxies.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::RedisCluster;
use common::http::{get, sample, try_get};
use common::proxy::{Proxy, cluster_backend, config_for, config_with};
use respgate::config::{BackendConfig, Config, RouteConfig};
use respgate::slot::Slot;

/// A proxy with admin endpoints on a free port; returns it and the admin port.
fn with_admin(mut config: Config) -> (Proxy, u16) {
    let admin = common::free_port();
    config.server.admin_listen = format!("127.0.0.1:{admin}");
    let proxy = Proxy::start_with(config);
    let deadline = Instant::now() + Duration::from_secs(30);
    while try_get(admin, "/live").is_err() {
        assert!(Instant::now() < deadline, "admin endpoint never came up");
        std::thread::sleep(Duration::from_millis(20));
    }
    (proxy, admin)
}

/// Polls `/ready` until it answers `status` (at most 30 s); returns the body.
fn wait_ready_status(admin: u16, status: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = (0, String::new());
    while Instant::now() < deadline {
        if let Ok(answer) = try_get(admin, "/ready") {
            if answer.0 == status {
                return answer.1;
            }
            last = answer;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("/ready never answered {status}; last {last:?}");
}

#[test]
fn metrics_list_every_metric_with_its_labels_after_traffic() {
    let cluster = RedisCluster::start(3, 0);
    let (proxy, admin) = with_admin(config_for(&cluster.seeds()));
    proxy.wait_until_serving();
    let series = |command: &str, result: &str| {
        format!("respgate_commands_total{{command=\"{command}\",result=\"{result}\"}}")
    };
    let (_, before) = get(admin, "/metrics");
    let count = |text: &str, s: &str| sample(text, s).unwrap_or(0.0);
    let mut raw = proxy.raw();
    for i in 0..10 {
        raw.command(&["SET", &format!("k{i}"), "v"]);
        raw.command(&["GET", &format!("k{i}")]);
    }
    raw.command(&["LPUSH", "k0", "x"]); // WRONGTYPE: an error reply
    raw.command(&["NOSUCHCOMMAND"]);
    let (status, after) = get(admin, "/metrics");
    assert_eq!(status, 200);
    // A migration's series exist once there is one: tests/migrate_online.rs reads them.
    for (name, ..) in respgate::metrics::ALL
        .iter()
        .filter(|(_, _, labels, _)| !labels.contains("migration"))
    {
        assert!(
            after.contains(&format!("\n{name}")) || after.starts_with(name),
            "{name} missing from /metrics:\n{after}"
        );
    }
    assert!(count(&after, &series("get", "ok")) >= count(&before, &series("get", "ok")) + 10.0);
    assert!(count(&after, &series("set", "ok")) >= count(&before, &series("set", "ok")) + 10.0);
    assert!(
        count(&after, &series("lpush", "error")) >= count(&before, &series("lpush", "error")) + 1.0
    );
    assert!(count(&after, &series("other", "error")) >= 1.0);
    assert!(
        count(
            &after,
            "respgate_command_duration_seconds_count{family=\"string\",backend=\"default\"}"
        ) >= 20.0,
        "{after}"
    );
    for port in cluster.master_ports() {
        let node = format!(
            "respgate_backend_requests_total{{backend=\"default\",node=\"127.0.0.1:{port}\"}}"
        );
        assert!(count(&after, &node) >= 1.0, "{node} in {after}");
    }
    assert!(count(&after, "respgate_client_bytes_total{direction=\"in\"}") > 0.0);
    assert!(count(&after, "respgate_client_bytes_total{direction=\"out\"}") > 0.0);
    assert!(count(&after, "respgate_clients_connected") >= 1.0);
    assert_eq!(sample(&after, "respgate_ready"), Some(1.0));
    assert_eq!(
        sample(&after, "respgate_slots_served{backend=\"default\"}"),
        Some(16384.0)
    );
    assert!(
        count(
            &after,
            "respgate_topology_refreshes_total{backend=\"default\",outcome=\"ok\"}"
        ) >= 1.0
    );
    assert!(
        !after.contains("k0") && !after.contains("k1\""),
        "no key in a label"
    );
}

#[test]
fn a_moved_followed_and_own_connections_are_counted() {
    let cluster = RedisCluster::start(3, 0);
    // A backend name of its own: counters of other tests in this process carry other names.
    let backend = BackendConfig {
        refresh_interval_ms: 60_000,
        ..cluster_backend(&cluster.seeds())
    };
    let (proxy, admin) = with_admin(config_with(vec![("moves", backend)]));
    proxy.wait_until_serving();
    let moved = "respgate_redirects_total{backend=\"moves\",kind=\"moved\"}";
    let (_, before) = get(admin, "/metrics");
    assert_eq!(sample(&before, moved), Some(0.0), "{before}");
    let masters = cluster.master_ports();
    let key = cluster.key_on(masters[0], "moving:");
    let slot = Slot::for_key(key.as_bytes()).get();
    let mut raw = proxy.raw();
    assert_eq!(raw.command(&["SET", &key, "1"]), b"+OK\r\n");
    // On a loaded machine a topology refresh (a node slow to answer asks for one) can learn
    // the move before the GET meets the MOVED; the slot moves back and forth until a GET
    // follows one, a few times at most.
    let mut after = String::new();
    for round in 0..4 {
        let (from, to) = if round % 2 == 0 { (0, 1) } else { (1, 0) };
        cluster.migrate_slot(slot, masters[from], masters[to]);
        assert_eq!(raw.command(&["GET", &key]), b"$1\r\n1\r\n");
        after = get(admin, "/metrics").1;
        if sample(&after, moved).unwrap_or(0.0) >= 1.0 {
            break;
        }
    }
    assert!(sample(&after, moved).unwrap_or(0.0) >= 1.0, "{after}");

    // A blocking command holds a connection of the client's own while it waits.
    let mut blocked = proxy.raw();
    let mut blpop = bytes::BytesMut::new();
    respgate::protocol::request::encode_command(&mut blpop, &["BLPOP", "own:list", "0"]);
    blocked.send(&blpop);
    let own = "respgate_own_connections{backend=\"moves\"}";
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut held = 0.0;
    while Instant::now() < deadline && held < 1.0 {
        std::thread::sleep(Duration::from_millis(50));
        held = sample(&get(admin, "/metrics").1, own).unwrap_or(0.0);
    }
    assert_eq!(held, 1.0, "the BLPOP's connection is counted");
    raw.command(&["RPUSH", "own:list", "x"]);
    assert_eq!(blocked.reply(), b"*2\r\n$8\r\nown:list\r\n$1\r\nx\r\n");
}

#[test]
fn topology_lists_backends_nodes_roles_slots_and_connections() {
    let cluster = RedisCluster::start(3, 1);
    let (proxy, admin) = with_admin(config_for(&cluster.seeds()));
    proxy.wait_until_serving();
    let deadline = Instant::now() + Duration::from_secs(30);
    let topology = loop {
        let (status, body) = get(admin, "/topology");
        assert_eq!(status, 200);
        let topology: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let nodes = topology["backends"][0]["nodes"].as_array().unwrap().len();
        if nodes == 6 || Instant::now() > deadline {
            break topology;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(topology["ready"], true);
    assert_eq!(topology["shutting_down"], false);
    let backend = &topology["backends"][0];
    assert_eq!(backend["name"], "default");
    assert_eq!(backend["kind"], "cluster");
    assert_eq!(backend["slots_served"], 16384);
    assert!(backend["last_refresh"]["success_unix_ms"].as_u64().unwrap() > 0);
    let nodes = backend["nodes"].as_array().unwrap();
    let masters: Vec<&serde_json::Value> = nodes.iter().filter(|n| n["role"] == "master").collect();
    let replicas: Vec<&serde_json::Value> =
        nodes.iter().filter(|n| n["role"] == "replica").collect();
    assert_eq!((masters.len(), replicas.len()), (3, 3), "{backend}");
    let mut slots = 0;
    for master in &masters {
        assert_eq!(master["connected"], true);
        for range in master["slots"].as_array().unwrap() {
            slots += range[1].as_u64().unwrap() - range[0].as_u64().unwrap() + 1;
        }
        let address = master["address"].as_str().unwrap();
        let port: u16 = address.rsplit(':').next().unwrap().parse().unwrap();
        assert!(cluster.master_ports().contains(&port), "{address}");
    }
    assert_eq!(slots, 16384);
    for replica in &replicas {
        let master = replica["master"].as_str().unwrap();
        assert!(masters.iter().any(|m| m["address"] == master), "{replica}");
    }
}

#[test]
fn ready_waits_for_every_backend_routed_to() {
    let cluster = RedisCluster::start(3, 0);
    // "archive" is routed to (keys under "a:") but nothing listens at its seed.
    let dead = BackendConfig {
        seeds: vec![format!("127.0.0.1:{}", common::free_port())],
        connect_timeout_ms: 200,
        ..cluster_backend(&[])
    };
    let mut config = config_with(vec![
        ("main", cluster_backend(&cluster.seeds())),
        ("archive", dead),
    ]);
    config.routing.routes.push(RouteConfig {
        prefix: "a:".into(),
        backend: "archive".into(),
        ..RouteConfig::default()
    });
    let (proxy, admin) = with_admin(config);
    proxy.wait_until_serving();
    let body = wait_ready_status(admin, 503);
    assert!(
        body.contains("archive (16384 routed slots not served)"),
        "{body}"
    );
    assert!(!body.contains("main"), "{body}");
    assert!(proxy.raw().info("proxy").contains("ready:0"));
    let (_, metrics) = get(admin, "/metrics");
    assert_eq!(sample(&metrics, "respgate_ready"), Some(0.0));

    // Without a route to it, the unreachable backend keeps nothing from being served.
    let mut config = config_with(vec![
        ("main", cluster_backend(&cluster.seeds())),
        (
            "archive",
            BackendConfig {
                seeds: vec![format!("127.0.0.1:{}", common::free_port())],
                ..cluster_backend(&[])
            },
        ),
    ]);
    config.routing.default = "main".into();
    let (_unrouted, admin) = with_admin(config);
    assert_eq!(wait_ready_status(admin, 200), "ready\n");
    assert_eq!(get(admin, "/live"), (200, "live\n".to_string()));
    assert_eq!(get(admin, "/nope").0, 404);
}

#[test]
fn the_admin_listener_bounds_connections_and_closes_slow_requests() {
    let cluster = RedisCluster::start(3, 0);
    let mut config = config_for(&cluster.seeds());
    config.server.admin_max_connections = 2;
    // Long enough that the two slow clients are still held when the third comes, on a loaded
    // machine too (at 300 ms, a test thread descheduled that long saw them closed already).
    config.server.admin_timeout_ms = 1500;
    let (_proxy, admin) = with_admin(config);
    let connect = || {
        let s = TcpStream::connect(("127.0.0.1", admin)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    };
    // Two slow-loris clients: a request head that keeps coming, a byte every 50 ms for 10 s.
    let mut slow: Vec<TcpStream> = (0..2).map(|_| connect()).collect();
    let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let dribblers: Vec<_> = slow
        .iter()
        .map(|s| {
            let mut s = s.try_clone().unwrap();
            let finished = std::sync::Arc::clone(&finished);
            std::thread::spawn(move || {
                let _ = s.write_all(b"GET /metrics HTTP/1.1\r\n");
                for _ in 0..200 {
                    if s.write_all(b"X").is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                finished.store(true, std::sync::atomic::Ordering::SeqCst);
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // A third is over the limit: closed without an answer.
    let mut third = connect();
    let _ = third.write_all(b"GET /live HTTP/1.1\r\n\r\n");
    let mut buf = Vec::new();
    let read = third.read_to_end(&mut buf);
    assert!(
        matches!(read, Ok(0)) || read.is_err(),
        "over the limit: closed unanswered, got {:?}",
        String::from_utf8_lossy(&buf)
    );
    // The slow ones are closed at the timeout, unanswered, while they still send.
    for s in &mut slow {
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        assert!(buf.is_empty(), "no answer to a request never finished");
    }
    assert!(
        !finished.load(std::sync::atomic::Ordering::SeqCst),
        "closed while the slow requests were still coming"
    );
    drop(slow);
    for d in dribblers {
        let _ = d.join();
    }
    // Their places are free again.
    assert_eq!(get(admin, "/live"), (200, "live\n".to_string()));
}

#[test]
fn slowlog_keeps_requests_with_their_backend_and_node() {
    let cluster = RedisCluster::start(3, 0);
    let mut config = config_for(&cluster.seeds());
    config.server.slowlog_log_slower_than_us = 0;
    config.server.slowlog_max_len = 3;
    let proxy = Proxy::start_with(config);
    proxy.wait_until_serving();
    let mut raw = proxy.raw();
    raw.command(&["SLOWLOG", "RESET"]);
    raw.command(&["CLIENT", "SETNAME", "slow-one"]);
    let owner = cluster.master_ports()[0];
    let key = cluster.key_on(owner, "slow:");
    assert_eq!(raw.command(&["SET", &key, "v"]), b"+OK\r\n");
    let entries = text(&raw.command(&["SLOWLOG", "GET", "1"]));
    let node = format!("127.0.0.1:{owner}");
    let lines: Vec<&str> = entries.split("\r\n").collect();
    // *1, *8, :id, :time, :duration, *3, SET, key, v, addr, name, backend, node
    assert_eq!(lines[0], "*1", "{entries}");
    assert_eq!(lines[1], "*8", "{entries}");
    let bulk = |s: &str| format!("${}", s.len());
    let tail: Vec<&str> = lines.iter().copied().skip(5).collect();
    assert_eq!(tail[0], "*3", "{entries}");
    assert_eq!(
        &tail[1..7],
        [bulk("SET").as_str(), "SET", &bulk(&key), &key, "$1", "v"]
    );
    assert!(
        tail[8].starts_with("127.0.0.1:"),
        "client address: {entries}"
    );
    assert_eq!(tail[10], "slow-one");
    assert_eq!(tail[12], "default");
    assert_eq!(tail[14], node);
    // Three kept at most, newest first.
    for i in 0..5 {
        raw.command(&["GET", &format!("slow:{i}")]);
    }
    assert_eq!(raw.command(&["SLOWLOG", "LEN"]), b":3\r\n");
    assert!(text(&raw.command(&["SLOWLOG", "GET"])).contains("slow:4"));
    assert_eq!(raw.command(&["SLOWLOG", "RESET"]), b"+OK\r\n");
    // The RESET itself, logged once it ran, as Redis logs it.
    assert_eq!(raw.command(&["SLOWLOG", "LEN"]), b":1\r\n");
    assert_eq!(
        raw.command(&["SLOWLOG", "GET", "-2"]),
        b"-ERR count should be greater than or equal to -1\r\n"
    );
    assert!(text(&raw.command(&["SLOWLOG", "HELP"])).contains("+    Reset the slowlog.\r\n"));
    assert_eq!(
        raw.command(&["SLOWLOG", "NOPE"]),
        b"-ERR unknown subcommand 'NOPE'. Try SLOWLOG HELP.\r\n"
    );
}

#[test]
fn info_reports_backends_clients_stats_and_proxy() {
    let cluster = RedisCluster::start(3, 1);
    let proxy = Proxy::start(&cluster.seeds());
    let mut raw = proxy.raw();
    raw.command(&["SET", "k", "v"]);
    raw.command(&["NOSUCHCOMMAND"]);
    let info = raw.info("backends");
    assert!(
        info.starts_with("$") && info.contains("# Backends\r\n"),
        "{info}"
    );
    assert!(
        info.contains("backend_default:kind=cluster,state=ok,masters=3"),
        "{info}"
    );
    for port in cluster.master_ports() {
        assert!(
            info.contains(&format!("addr=127.0.0.1:{port},role=master,slots=")),
            "{info}"
        );
    }
    let stats = raw.info("stats");
    let field = |text: &str, name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    assert!(field(&stats, "total_net_input_bytes") > 0);
    assert!(field(&stats, "total_error_replies") >= 1);
    let clients = raw.info("clients");
    assert_eq!(field(&clients, "pubsub_clients"), 0);
    let default = text(&raw.command(&["INFO"]));
    assert!(default.contains("# Backends\r\n") && default.contains("# Proxy\r\nproxy:respgate"));
    assert!(raw.info("proxy").contains("ready:1\r\n"));
}

fn text(reply: &[u8]) -> String {
    String::from_utf8_lossy(reply).into_owned()
}
