//! Moving a prefix between backends of different kinds, and keys of every shape: a stripped
//! prefix from a cluster to another, and from a standalone server to a cluster a big hash and
//! keys expiring during the copy. Three replicas each, writers through all of them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::Duration;

use common::RedisCluster;
use common::migrate::{
    bulk, migrate, replica, stop_writers, wait_for_phase, with_migrations, writers,
};
use common::proxy::{cluster_backend, config_with, standalone_backend};
use common::sentinel::StandaloneServer;
use respgate::config::RouteConfig;

#[test]
fn a_stripped_prefix_moves_from_a_cluster_to_another() {
    let main = StandaloneServer::start();
    let old = RedisCluster::start(3, 0);
    let new = RedisCluster::start(3, 0);
    let mut config = config_with(vec![
        ("main", standalone_backend(main.address())),
        ("new", cluster_backend(&new.seeds())),
        ("old", cluster_backend(&old.seeds())),
    ]);
    config.routing.routes.push(RouteConfig {
        prefix: "archive:".into(),
        backend: "old".into(),
        strip_prefix: true,
        ..RouteConfig::default()
    });
    let token = with_migrations(&mut config, "strip", 3000);
    let replicas: Vec<_> = (0..3).map(|_| replica(&config)).collect();
    let mut client = replicas[0].0.raw();
    for i in 0..500 {
        let key = format!("archive:k{i}");
        assert_eq!(client.command(&["SET", &key, &format!("v{i}")]), b"+OK\r\n");
    }
    // Stored without the prefix on the old cluster.
    assert_eq!(
        old.cli(
            old.slot_owner(respgate::slot::Slot::for_key(b"k7").get()),
            &["GET", "k7"]
        ),
        "v7"
    );
    let stop = Arc::new(AtomicBool::new(false));
    // The writers' own keys sit under the stripped prefix, and the shared one on `main`.
    let running = writers(&replicas, "archive:", &stop);
    let admin = replicas[2].1;
    let (ok, text) = migrate(admin, &["start", "--prefix", "archive:", "--to", "new"]);
    assert!(ok, "start: {text}");
    wait_for_phase(admin, "done", Duration::from_secs(60));
    thread::sleep(Duration::from_millis(300));
    let (own, _) = stop_writers(&stop, running);

    for port in old.master_ports() {
        assert_eq!(
            old.cli(port, &["DBSIZE"]),
            "0",
            "left on the old cluster's {port}"
        );
    }
    let mut reader = replicas[1].0.raw();
    for i in (0..500).step_by(23) {
        assert_eq!(
            reader.command(&["GET", &format!("archive:k{i}")]),
            bulk(&format!("v{i}"))
        );
        let stored = format!("k{i}");
        let owner = new.slot_owner(respgate::slot::Slot::for_key(stored.as_bytes()).get());
        assert_eq!(
            new.cli(owner, &["GET", &stored]),
            format!("v{i}"),
            "stored stripped"
        );
    }
    for (i, count) in own.iter().enumerate() {
        let counter = format!("archive:counter{i}");
        assert_eq!(reader.command(&["GET", &counter]), bulk(&count.to_string()));
    }
    let _ = std::fs::remove_file(token);
}

#[test]
fn a_big_hash_and_keys_expiring_meanwhile_move_from_a_server_to_a_cluster() {
    let main = StandaloneServer::start();
    let archive = RedisCluster::start(3, 0);
    let mut config = config_with(vec![
        ("main", standalone_backend(main.address())),
        ("archive", cluster_backend(&archive.seeds())),
    ]);
    let token = with_migrations(&mut config, "kinds", 3000);
    let replicas: Vec<_> = (0..3).map(|_| replica(&config)).collect();
    let mut client = replicas[0].0.raw();
    for i in 0..1000 {
        let key = format!("archive:k{i}");
        assert_eq!(client.command(&["SET", &key, &format!("v{i}")]), b"+OK\r\n");
    }
    // A hash of 200,000 fields, and 300 keys that expire within the copy or just after.
    main.cli(&[
        "EVAL",
        "for i = 1, 200000, 1000 do local a = {} for j = i, i + 999 do a[#a + 1] = 'f' .. j a[#a + 1] = j end redis.call('HSET', KEYS[1], unpack(a)) end return 1",
        "1",
        "archive:big",
    ]);
    for i in 0..300 {
        let key = format!("archive:brief{i}");
        client.command(&["SET", &key, "x", "PX", &(200 + i * 10).to_string()]);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let running = writers(&replicas, "archive:", &stop);
    let admin = replicas[1].1;
    let (ok, text) = migrate(
        admin,
        &[
            "start",
            "--prefix",
            "archive:",
            "--to",
            "archive",
            "--max-keys-per-s",
            "1000",
        ],
    );
    assert!(ok, "start: {text}");
    wait_for_phase(admin, "done", Duration::from_secs(60));
    thread::sleep(Duration::from_millis(300));
    let (own, shared) = stop_writers(&stop, running);
    // Every brief key has expired by now, on whichever side it was: none reappears.
    thread::sleep(Duration::from_millis(3500));

    assert_eq!(main.cli(&["KEYS", "archive:*"]), "", "left on the source");
    let mut reader = replicas[2].0.raw();
    assert_eq!(reader.command(&["HLEN", "archive:big"]), b":200000\r\n");
    assert_eq!(
        reader.command(&["HGET", "archive:big", "f123456"]),
        bulk("123456")
    );
    for i in (0..300).step_by(7) {
        assert_eq!(
            reader.command(&["EXISTS", &format!("archive:brief{i}")]),
            b":0\r\n"
        );
    }
    for i in (0..1000).step_by(41) {
        assert_eq!(
            reader.command(&["GET", &format!("archive:k{i}")]),
            bulk(&format!("v{i}"))
        );
    }
    for (i, count) in own.iter().enumerate() {
        let counter = format!("archive:counter{i}");
        assert_eq!(reader.command(&["GET", &counter]), bulk(&count.to_string()));
    }
    assert_eq!(
        reader.command(&["GET", "archive:shared"]),
        bulk(&shared.to_string())
    );
    let on_archive: usize = archive
        .master_ports()
        .iter()
        .map(|&port| archive.cli(port, &["KEYS", "archive:k*"]).lines().count())
        .sum();
    assert_eq!(on_archive, 1000);
    let _ = std::fs::remove_file(token);
}

#[test]
fn a_reload_to_the_route_a_migration_made_leaves_nothing_behind() {
    use common::proxy::admin_request_with;
    use common::reload::{ADMIN_TOKEN, Reloadable, routing, server, standalone};
    let main = StandaloneServer::start();
    let archive = StandaloneServer::start();
    let admin = common::free_port();
    let text = |routes: &[(&str, &str)]| {
        format!(
            "{}{}{}{}\n[migration]\nenabled = true\nlease_ms = 3000\n",
            server(admin, 0, ""),
            standalone("main", &main),
            standalone("archive", &archive),
            routing("main", routes)
        )
    };
    let proxy = Reloadable::start(admin, &text(&[]));
    let mut client = proxy.proxy.raw();
    for i in 0..50 {
        let key = format!("user:{i}");
        assert_eq!(client.command(&["SET", &key, &format!("v{i}")]), b"+OK\r\n");
    }
    let bearer = format!("Authorization: Bearer {ADMIN_TOKEN}");
    let (status, body) = admin_request_with(
        admin,
        "POST",
        "/migrations?prefix=user%3A&to=archive",
        &[&bearer],
    );
    assert_eq!(status, 201, "{body}");
    let record: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = record["id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, list) = admin_request_with(admin, "GET", "/migrations", &[]);
        if list.contains("\"phase\":\"done\"") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never done: {list}");
        thread::sleep(Duration::from_millis(50));
    }
    // --check-config names what the migration's route holds over a file, and when the file
    // makes it its own.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("respgate.toml");
    let check = |routes: &[(&str, &str)]| {
        std::fs::write(&file, text(routes)).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_respgate"))
            .arg("--check-config")
            .arg(&file)
            .args(["--migrations-from", &format!("127.0.0.1:{admin}")])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let said = check(&[]);
    assert!(
        said.contains(&format!("warning: migration {id} moved \"user:\" to archive, but this configuration routes it to main")),
        "{said}"
    );
    let said = check(&[("user:", "archive")]);
    assert!(
        said.contains(&format!(
            "note: migration {id} moved \"user:\" to archive, where"
        )),
        "{said}"
    );
    // Its mark names backends by their place among them: none may come or go meanwhile.
    let (status, report) = proxy.reload(&format!(
        "{}{}",
        text(&[("user:", "archive")]),
        standalone("another", &main)
    ));
    assert_eq!(status, 400, "{report}");
    assert!(
        report
            .contains("backends may not be added or removed while a migration's mark is in force"),
        "{report}"
    );
    // The configuration now says what the migration did: nothing is left behind.
    let report = proxy.reload_ok(&text(&[("user:", "archive")]));
    assert!(!report.contains("left behind"), "{report}");
    let (status, body) = admin_request_with(
        admin,
        "POST",
        &format!("/migrations/{id}/forget"),
        &[&bearer],
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(client.command(&["GET", "user:7"]), bulk("v7"));
    assert_eq!(client.command(&["SET", "user:new", "n"]), b"+OK\r\n");
    assert_eq!(archive.cli(&["GET", "user:new"]), "n");
    assert_eq!(main.cli(&["KEYS", "user:*"]), "");
    // A route change no migration made is still reported.
    let report = proxy.reload_ok(&text(&[("user:", "archive"), ("order:", "archive")]));
    assert!(report.contains("left behind"), "{report}");
}
