//! Live reload: a new configuration file put in force by `POST /reload`, `SIGHUP` or the file
//! watcher, without closing a client or failing a request; a refused file leaves the running
//! configuration in force.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::sleep;
use std::time::Duration;

use common::RedisCluster;
use common::proxy::{Proxy, Raw, admin_request, admin_request_with};
use common::reload::{
    Reloadable, cluster, command, eventually, info_field, replace_file, routing, server, standalone,
};
use common::sentinel::{StandaloneServer, cli};
use respgate::slot::Slot;

/// `GET key` on the master of `cluster` owning its slot, bypassing the proxy.
fn get_on(cluster: &RedisCluster, key: &str) -> String {
    let owner = cluster.slot_owner(Slot::for_key(key.as_bytes()).get());
    cluster.cli(owner, &["GET", key])
}

/// Ids of the connections on the node at `port` whose last command was `cmd`.
fn connections_with_last_command(port: u16, cmd: &str) -> BTreeSet<u64> {
    let list = cli(port, &["CLIENT", "LIST"]).unwrap();
    list.lines()
        .filter(|l| l.split(' ').any(|f| f == format!("cmd={cmd}")))
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .map(|id| id.parse().unwrap())
        .collect()
}

#[test]
fn pipelined_requests_in_flight_all_succeed_across_reloads() {
    let a = RedisCluster::start(3, 0);
    let admin = common::free_port();
    // Every reload replaces the backend (its timeout changes): requests in flight finish on the
    // connections they started on, later ones take the new backend's.
    let version = |timeout_ms: u64| {
        server(admin, 0, &format!("max_clients = {timeout_ms}"))
            + &cluster(
                "main",
                &a.seeds(),
                &format!("max_retries = 4\nretry_timeout_ms = {timeout_ms}"),
            )
            + &routing("main", &[])
    };
    let proxy = Reloadable::start(admin, &version(5000));
    let stop = Arc::new(AtomicBool::new(false));
    let port = proxy.proxy.port;
    let (started, first_round) = std::sync::mpsc::channel();
    let client = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut raw = Raw::connect(port);
            let mut rounds = 0u32;
            while !stop.load(Ordering::Relaxed) || rounds < 3 {
                let mut batch = Vec::new();
                for i in 0..100 {
                    let key = format!("k:{rounds}:{i}");
                    for args in [vec!["SET", &key, &key], vec!["GET", &key]] {
                        let mut out = bytes::BytesMut::new();
                        respgate::protocol::request::encode_command(&mut out, &args);
                        batch.extend_from_slice(&out);
                    }
                }
                raw.send(&batch);
                for i in 0..100 {
                    let key = format!("k:{rounds}:{i}");
                    assert_eq!(raw.reply(), b"+OK\r\n", "SET {key} in round {rounds}");
                    assert_eq!(
                        raw.reply(),
                        format!("${}\r\n{key}\r\n", key.len()).into_bytes(),
                        "GET {key} in round {rounds}"
                    );
                }
                rounds += 1;
                let _ = started.send(());
            }
            (rounds, info_field(&mut raw, "clients", "maxclients"))
        })
    };
    first_round.recv().expect("the client's first round");
    for reload in 0..6u64 {
        let report = proxy.reload_ok(&version(5001 + reload));
        assert!(report.contains("backends changed: main"), "{report}");
        sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let (rounds, max_clients) = client.join().expect("every reply as expected");
    assert!(rounds >= 3, "{rounds} rounds");
    assert_eq!(
        max_clients, "5006",
        "the pipelining client moved to the newest configuration"
    );
}

#[test]
fn a_route_added_by_reload_sends_its_keys_to_the_new_backend() {
    let a = RedisCluster::start(3, 0);
    let b = RedisCluster::start(3, 0);
    let admin = common::free_port();
    let one = server(admin, 0, "") + &cluster("a", &a.seeds(), "") + &routing("a", &[]);
    let two = server(admin, 0, "")
        + &cluster("a", &a.seeds(), "")
        + &cluster("b", &b.seeds(), "")
        + &routing("a", &[("b:", "b")]);
    let proxy = Reloadable::start(admin, &one);
    let mut client = proxy.proxy.raw();
    assert_eq!(command(&mut client, &["SET", "b:1", "before"]), "+OK\r\n");
    assert_eq!(get_on(&a, "b:1"), "before");

    let report = proxy.reload_ok(&two);
    assert!(report.contains("reloaded: generation 2"), "{report}");
    assert!(report.contains("backends added: b"), "{report}");
    assert!(report.contains("backends kept: a"), "{report}");
    // The reload says plainly that b:1 and its kind stay behind.
    assert!(
        report.contains(
            "data left behind: keys starting with \"b:\" or whose hash tag does now route to \
             backend b instead of backend a; the keys already on a were not moved and can no \
             longer be reached through the proxy (to move a prefix's keys while it is in use, run `respgate migrate start --prefix PREFIX --to BACKEND` before changing its route)\n"
        ),
        "{report}"
    );
    // The same connection routes by the new table, and the new backend knew its topology
    // before the reload put it in force.
    assert_eq!(command(&mut client, &["SET", "b:2", "after"]), "+OK\r\n");
    assert_eq!(get_on(&b, "b:2"), "after");
    assert_eq!(get_on(&a, "b:2"), "");
    assert_eq!(
        command(&mut client, &["GET", "b:1"]),
        "$-1\r\n",
        "b:1 stayed on a"
    );
    assert_eq!(command(&mut client, &["SET", "a:1", "x"]), "+OK\r\n");
    assert_eq!(get_on(&a, "a:1"), "x");
}

#[test]
fn a_backend_removed_by_reload_is_no_longer_used_and_its_connections_close() {
    let a = RedisCluster::start(3, 0);
    let side = StandaloneServer::start();
    let admin = common::free_port();
    let both = server(admin, 0, "")
        + &cluster("main", &a.seeds(), "")
        + &standalone("side", &side)
        + &routing("main", &[("s:", "side")]);
    let main_only = server(admin, 0, "") + &cluster("main", &a.seeds(), "") + &routing("main", &[]);
    let proxy = Reloadable::start(admin, &both);
    let mut client = proxy.proxy.raw();
    assert_eq!(command(&mut client, &["SET", "s:1", "side"]), "+OK\r\n");
    assert_eq!(side.cli(&["GET", "s:1"]), "side");
    assert!(
        !connections_with_last_command(side.port, "set").is_empty(),
        "the proxy is connected to the side backend"
    );

    let report = proxy.reload_ok(&main_only);
    assert!(report.contains("backends removed: side"), "{report}");
    assert_eq!(command(&mut client, &["SET", "s:2", "main"]), "+OK\r\n");
    assert_eq!(get_on(&a, "s:2"), "main");
    assert_eq!(side.cli(&["GET", "s:2"]), "");
    // Once no client holds the old configuration, the removed backend's refresher stops and
    // its connections close: only the connection asking is left.
    eventually(
        "the removed backend's connections close",
        || cli(side.port, &["CLIENT", "LIST"]).unwrap(),
        |list| list.lines().count() == 1,
    );
}

#[test]
fn an_unchanged_backend_keeps_its_node_connections_and_a_changed_one_gets_new_ones() {
    let a = RedisCluster::start(3, 0);
    let side = StandaloneServer::start();
    let admin = common::free_port();
    let main = |extra: &str| cluster("main", &a.seeds(), extra);
    let one = server(admin, 0, "") + &main("") + &routing("main", &[]);
    let added = server(admin, 0, "")
        + &main("")
        + &standalone("side", &side)
        + &routing("main", &[("s:", "side")]);
    let changed = server(admin, 0, "")
        + &main("max_retries = 7")
        + &standalone("side", &side)
        + &routing("main", &[("s:", "side")]);
    let proxy = Reloadable::start(admin, &one);
    let node = a.slot_owner(Slot::for_key(b"k").get());
    let mut client = proxy.proxy.raw();
    assert_eq!(command(&mut client, &["GET", "k"]), "$-1\r\n");
    let before = connections_with_last_command(node, "get");
    assert!(!before.is_empty(), "the proxy's GET shows on {node}");

    let report = proxy.reload_ok(&added);
    assert!(report.contains("backends kept: main"), "{report}");
    assert_eq!(command(&mut client, &["GET", "k"]), "$-1\r\n");
    let kept = connections_with_last_command(node, "get");
    assert!(
        kept.is_subset(&before),
        "the GET after the reload took a connection open before it: {kept:?} vs {before:?}"
    );

    let report = proxy.reload_ok(&changed);
    assert!(report.contains("backends changed: main"), "{report}");
    assert_eq!(command(&mut client, &["GET", "k"]), "$-1\r\n");
    let after = connections_with_last_command(node, "get");
    assert!(
        after.iter().any(|id| !before.contains(id)),
        "a changed backend dials anew: {after:?} vs {before:?}"
    );
}

#[test]
fn an_invalid_config_is_refused_whole_and_the_running_one_keeps_serving() {
    let main = StandaloneServer::start();
    let admin = common::free_port();
    let good = server(admin, 0, "") + &standalone("main", &main) + &routing("main", &[]);
    let proxy = Reloadable::start(admin, &good);
    let mut client = proxy.proxy.raw();

    let two_problems = server(admin, 0, "max_pipeline = 0")
        + &standalone("main", &main).replace("request_timeout_ms = 2000", "request_timeout_ms = 0")
        + &routing("main", &[]);
    let (status, report) = proxy.reload(&two_problems);
    assert_eq!(status, 400, "{report}");
    assert!(
        report.starts_with("refused: generation 1 stays in force"),
        "{report}"
    );
    for key in ["server.max_pipeline", "backends.main.request_timeout_ms"] {
        assert!(report.contains(key), "{key} not listed: {report}");
    }
    let (status, report) = proxy.reload("[server\nlisten = ");
    assert_eq!(status, 400, "a file that is not TOML: {report}");

    assert_eq!(info_field(&mut client, "proxy", "config_generation"), "1");
    assert_eq!(
        info_field(&mut client, "proxy", "config_last_reload_status"),
        "failed"
    );
    assert_eq!(
        info_field(&mut client, "proxy", "config_reloads_failed"),
        "2"
    );
    assert_ne!(
        info_field(&mut client, "proxy", "config_last_reload_unix"),
        "0"
    );
    assert_eq!(command(&mut client, &["SET", "k", "v"]), "+OK\r\n");
    assert_eq!(command(&mut client, &["GET", "k"]), "$1\r\nv\r\n");
    let (_, metrics) = admin_request(admin, "GET", "/metrics");
    for line in [
        "respgate_config_generation 1",
        "respgate_config_reloads_total{outcome=\"failed\"} 2",
        "respgate_config_last_reload_successful 0",
    ] {
        assert!(metrics.contains(line), "no {line} in {metrics}");
    }

    let better =
        server(admin, 0, "max_clients = 77") + &standalone("main", &main) + &routing("main", &[]);
    let report = proxy.reload_ok(&better);
    assert!(report.contains("reloaded: generation 2"), "{report}");
    assert_eq!(
        info_field(&mut client, "proxy", "config_last_reload_status"),
        "ok"
    );
    assert_eq!(info_field(&mut client, "clients", "maxclients"), "77");
    let (_, metrics) = admin_request(admin, "GET", "/metrics");
    assert!(
        metrics.contains("respgate_config_generation 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("respgate_config_last_reload_successful 1"),
        "{metrics}"
    );
}

#[test]
fn post_reload_needs_the_admin_token_and_is_off_without_a_token_file() {
    let main = StandaloneServer::start();
    let admin = common::free_port();
    let text = |max_clients: u32| {
        server(admin, 0, &format!("max_clients = {max_clients}"))
            + &standalone("main", &main)
            + &routing("main", &[])
    };
    let proxy = Reloadable::start(admin, &text(100));
    let mut client = proxy.proxy.raw();
    proxy.write(&text(77));
    for headers in [
        &[][..],
        &["Authorization: Bearer wrong"][..],
        &["Authorization: Basic dGVzdC1hZG1pbi10b2tlbg=="][..],
    ] {
        let (status, body) = admin_request_with(admin, "POST", "/reload", headers);
        assert_eq!(status, 401, "{headers:?}: {body}");
        assert!(body.starts_with("POST /reload: "), "{body}");
    }
    assert_eq!(info_field(&mut client, "proxy", "config_generation"), "1");
    assert_eq!(info_field(&mut client, "clients", "maxclients"), "100");
    // The read-only endpoints stay open.
    assert_eq!(admin_request(admin, "GET", "/metrics").0, 200);
    assert_eq!(admin_request(admin, "GET", "/config").0, 200);
    let report = proxy.reload_ok(&text(77));
    assert!(report.contains("reloaded: generation 2"), "{report}");
    assert_eq!(info_field(&mut client, "clients", "maxclients"), "77");

    // A proxy with no admin_token_file: POST /reload is off, SIGHUP and the watcher remain.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("respgate.toml");
    let open_admin = common::free_port();
    replace_file(
        &path,
        &(server(open_admin, 0, "") + &standalone("main", &main) + &routing("main", &[])),
    );
    let _open = Proxy::start_from_file(&path);
    let (status, body) = eventually(
        "the admin endpoint answers",
        || admin_request_with(open_admin, "POST", "/reload", &["Authorization: Bearer x"]),
        |(status, _)| *status != 0,
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body,
        "POST /reload is off: set server.admin_token_file to a file holding a token, and send \
         it as \"Authorization: Bearer TOKEN\"\n"
    );
}

#[test]
fn a_listen_change_needs_a_restart_while_a_new_password_applies_at_once() {
    let main = StandaloneServer::start();
    let admin = common::free_port();
    let open = server(admin, 0, "") + &standalone("main", &main) + &routing("main", &[]);
    let proxy = Reloadable::start(admin, &open);
    let mut before = proxy.proxy.raw();
    assert_eq!(command(&mut before, &["SET", "k", "v"]), "+OK\r\n");

    let elsewhere = common::free_port();
    let moved = open.replace("127.0.0.1:0", &format!("127.0.0.1:{elsewhere}"));
    let moved = moved.replace(
        "config_watch_interval_ms = 0\n",
        "config_watch_interval_ms = 0\npassword = \"s3cret\"\n",
    );
    let report = proxy.reload_ok(&moved);
    assert!(
        report.contains(&format!(
            "server.listen: 127.0.0.1:0 -> 127.0.0.1:{elsewhere} needs a restart"
        )),
        "{report}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", elsewhere)).is_err(),
        "nothing listens on the new address"
    );
    // Already authenticated: stays so, as in Redis. A new client needs the new password.
    assert_eq!(command(&mut before, &["GET", "k"]), "$1\r\nv\r\n");
    let mut after = proxy.proxy.raw();
    assert_eq!(
        command(&mut after, &["GET", "k"]),
        "-NOAUTH Authentication required.\r\n"
    );
    assert_eq!(command(&mut after, &["AUTH", "s3cret"]), "+OK\r\n");
    assert_eq!(command(&mut after, &["GET", "k"]), "$1\r\nv\r\n");
}

#[test]
fn a_config_file_changed_through_a_symlink_swap_is_reloaded() {
    let main = StandaloneServer::start();
    let admin = common::free_port();
    // Laid out as Kubernetes mounts a ConfigMap: the file is a symlink through `..data`, a
    // symlink to the directory of the current version, swapped whole on update.
    let dir = tempfile::tempdir().unwrap();
    let version = |n: usize, max_clients: usize| {
        let text = server(admin, 100, &format!("max_clients = {max_clients}"))
            + &standalone("main", &main)
            + &routing("main", &[]);
        let path = dir.path().join(format!("..v{n}"));
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("respgate.toml"), text).unwrap();
        format!("..v{n}")
    };
    let first = version(1, 101);
    std::os::unix::fs::symlink(&first, dir.path().join("..data")).unwrap();
    let file = dir.path().join("respgate.toml");
    std::os::unix::fs::symlink("..data/respgate.toml", &file).unwrap();
    let proxy = Proxy::start_from_file(&file);
    proxy.wait_until_serving();
    let mut client = proxy.raw();
    assert_eq!(info_field(&mut client, "clients", "maxclients"), "101");

    let second = version(2, 202);
    std::os::unix::fs::symlink(&second, dir.path().join("..data_tmp")).unwrap();
    std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
    eventually(
        "the watcher reloads the swapped file",
        || info_field(&mut client, "clients", "maxclients"),
        |seen| seen == "202",
    );
    assert_eq!(info_field(&mut client, "proxy", "config_generation"), "2");
    assert_eq!(command(&mut client, &["SET", "k", "v"]), "+OK\r\n");
}

#[test]
fn sighup_reloads_the_running_binary_and_its_log_level() {
    let main = StandaloneServer::start();
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let path = dir.path().join("respgate.toml");
    let text = |level: &str, max_clients: usize| {
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nthreads = 1\nmax_clients = {max_clients}\n\
             config_watch_interval_ms = 0\n\n[log]\nlevel = \"{level}\"\n\n"
        ) + &standalone("main", &main)
            + &routing("main", &[])
    };
    replace_file(&path, &text("warn", 100));
    let log = dir.path().join("respgate.log");
    /// The proxy process, killed on drop even when the test fails.
    struct Child(std::process::Child);
    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_respgate"))
            .arg("--config")
            .arg(&path)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the respgate binary"),
    );
    let pid = child.0.id().to_string();
    eventually(
        "the binary listens",
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        |up| *up,
    );
    let mut client = Raw::connect(port);
    assert_eq!(info_field(&mut client, "clients", "maxclients"), "100");

    replace_file(&path, &text("info", 55));
    let sent = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    assert!(sent.success());
    eventually(
        "SIGHUP reloads the file",
        || info_field(&mut client, "clients", "maxclients"),
        |seen| seen == "55",
    );
    assert_eq!(info_field(&mut client, "proxy", "config_generation"), "2");
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "SIGHUP does not stop the proxy"
    );
    // At level info after the reload, the reload is logged (just after it is in force).
    let logged = eventually(
        "the reload is logged",
        || std::fs::read_to_string(&log).unwrap(),
        |logged| logged.contains("configuration reloaded"),
    );
    assert!(
        !logged.contains("listening"),
        "at level warn, the start is not logged: {logged}"
    );
    drop(child);
}

#[test]
fn a_subscriber_follows_its_channel_to_the_backend_the_new_routes_choose() {
    let a = RedisCluster::start(3, 0);
    let side = StandaloneServer::start();
    let admin = common::free_port();
    let both = server(admin, 0, "")
        + &cluster("main", &a.seeds(), "")
        + &standalone("side", &side)
        + &routing("main", &[("news:", "side")]);
    let main_only = server(admin, 0, "") + &cluster("main", &a.seeds(), "") + &routing("main", &[]);
    let proxy = Reloadable::start(admin, &both);
    let mut subscriber = proxy.proxy.raw();
    assert_eq!(
        subscriber.command(&["SUBSCRIBE", "news:1"]),
        b"*3\r\n$9\r\nsubscribe\r\n$6\r\nnews:1\r\n:1\r\n"
    );
    let mut publisher = proxy.proxy.raw();
    assert_eq!(
        command(&mut publisher, &["PUBLISH", "news:1", "one"]),
        ":1\r\n"
    );
    assert_eq!(
        subscriber.reply(),
        b"*3\r\n$7\r\nmessage\r\n$6\r\nnews:1\r\n$3\r\none\r\n"
    );

    let report = proxy.reload_ok(&main_only);
    assert!(report.contains("backends removed: side"), "{report}");
    // The subscription moves to the cluster, where PUBLISH now goes, and counts there.
    let mut publisher = proxy.proxy.raw();
    eventually(
        "the subscription moves to the cluster",
        || command(&mut publisher, &["PUBLISH", "news:1", "two"]),
        |r| r == ":1\r\n",
    );
    assert_eq!(
        subscriber.reply(),
        b"*3\r\n$7\r\nmessage\r\n$6\r\nnews:1\r\n$3\r\ntwo\r\n",
        "no confirmation of the move reaches the client, only the message"
    );
    assert_eq!(
        subscriber.command(&["UNSUBSCRIBE", "news:1"]),
        b"*3\r\n$11\r\nunsubscribe\r\n$6\r\nnews:1\r\n:0\r\n"
    );
}

#[test]
fn the_config_endpoint_shows_the_configuration_in_force_without_secrets() {
    let admin = common::free_port();
    // No backend needs to answer for the configuration to show.
    let text = |listen: &str, max_clients: usize| {
        server(
            admin,
            0,
            &format!("max_clients = {max_clients}\npassword = \"client-secret\""),
        )
        .replace("127.0.0.1:0", listen)
            + &format!(
                "[backends.main]\nseeds = [\"127.0.0.1:1\"]\npassword = \"node-secret-{max_clients}\"\n\
                 retry_timeout_ms = 300\n\n"
            )
            + "[backends.group]\nkind = \"sentinel\"\nsentinels = [\"127.0.0.1:2\"]\n\
               master_name = \"m\"\nsentinel_password = \"sentinel-secret\"\n\n"
            + &routing("main", &[("g:", "group")])
    };
    let proxy = Reloadable::start_unready(admin, &text("127.0.0.1:0", 10));
    let (_, shown) = eventually(
        "the admin endpoint answers",
        || admin_request(admin, "GET", "/config"),
        |(status, _)| *status == 200,
    );
    assert!(!shown.contains("secret"), "{shown}");
    assert_eq!(shown.matches("\"<redacted>\"").count(), 3, "{shown}");
    for visible in [
        "max_clients = 10",
        "master_name = \"m\"",
        "seeds = [\"127.0.0.1:1\"]",
    ] {
        assert!(shown.contains(visible), "{visible} not in {shown}");
    }

    let report = proxy.reload_ok(&text("127.0.0.1:7", 20));
    assert!(report.contains("backends changed: main"), "{report}");
    assert!(
        report.contains("backends not reachable yet: main"),
        "{report}"
    );
    let (_, shown) = admin_request(admin, "GET", "/config");
    assert!(shown.contains("max_clients = 20"), "{shown}");
    assert!(
        shown.contains("listen = \"127.0.0.1:0\""),
        "the running listen address, not the one that needs a restart: {shown}"
    );
    assert!(!shown.contains("secret"), "{shown}");
}
