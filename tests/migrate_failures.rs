//! Migrations that do not simply run to the end: an abort that moves every key back, a
//! controller that stops mid-copy (another replica takes the migration over), and clusters
//! whose masters fail over mid-copy, on the source and on the target. Writers go through every replica meanwhile; no
//! client sees an error, and every acknowledged write is there once at the end.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::Duration;

use common::RedisCluster;
use common::migrate::{
    migrate, replica, seed, status, stop_writers, wait_for_keys_moved, wait_for_phase,
    with_migrations, writer, writers,
};
use common::proxy::{cluster_backend, config_with, standalone_backend};
use common::sentinel::StandaloneServer;

const KEYS: usize = 1000;

#[test]
fn an_aborted_migration_moves_every_key_back() {
    let main = StandaloneServer::start();
    let archive = StandaloneServer::start();
    let mut config = config_with(vec![
        ("main", standalone_backend(main.address())),
        ("archive", standalone_backend(archive.address())),
    ]);
    let token = with_migrations(&mut config, "abort", 3000);
    let replicas: Vec<_> = (0..2).map(|_| replica(&config)).collect();
    seed(&replicas[0].0, KEYS);
    let stop = Arc::new(AtomicBool::new(false));
    let writers = writers(&replicas, "archive:", &stop);
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
            "300",
        ],
    );
    assert!(ok, "start: {text}");
    wait_for_keys_moved(admin, 200);
    // What would delete the state under the replicas is refused meanwhile.
    let mut client = replicas[0].0.raw();
    let refused = String::from_utf8_lossy(&client.command(&["FLUSHALL"])).into_owned();
    assert!(
        refused.starts_with("-ERR respgate: a migration is under way"),
        "{refused}"
    );
    let id = status(admin)["id"].as_str().unwrap().to_string();
    let (ok, text) = migrate(admin, &["forget", "--id", &id]);
    assert!(
        !ok && text.contains("409"),
        "forget while under way: {text}"
    );

    let (ok, text) = migrate(admin, &["abort"]);
    assert!(ok, "abort: {text}");
    wait_for_phase(admin, "aborted", Duration::from_secs(60));
    thread::sleep(Duration::from_millis(300));
    let (own, shared) = stop_writers(&stop, writers);

    assert_eq!(archive.cli(&["DBSIZE"]), "0", "keys left on the target");
    for (i, count) in own.iter().enumerate() {
        assert_eq!(
            main.cli(&["GET", &format!("archive:counter{i}")]),
            count.to_string()
        );
    }
    assert_eq!(main.cli(&["GET", "archive:shared"]), shared.to_string());
    for i in (0..KEYS).step_by(37) {
        assert_eq!(
            main.cli(&["GET", &format!("archive:k{i}")]),
            format!("v{i}")
        );
    }
    assert_eq!(client.command(&["GET", "archive:k5"]), b"$2\r\nv5\r\n");
    // Over: the record can go, and the prefix routes as before.
    let (ok, text) = migrate(admin, &["forget", "--id", &id]);
    assert!(ok, "forget: {text}");
    let (ok, text) = migrate(admin, &["status", "--json"]);
    assert!(!ok && text.contains("no migration"), "after forget: {text}");
    assert_eq!(client.command(&["SET", "archive:after", "a"]), b"+OK\r\n");
    assert_eq!(main.cli(&["GET", "archive:after"]), "a");
    let _ = std::fs::remove_file(token);
}

#[test]
fn a_migration_goes_on_when_its_controller_stops() {
    let main = StandaloneServer::start();
    let archive = StandaloneServer::start();
    let mut config = config_with(vec![
        ("main", standalone_backend(main.address())),
        ("archive", standalone_backend(archive.address())),
    ]);
    let token = with_migrations(&mut config, "takeover", 1000);
    let mut replicas: Vec<_> = (0..3).map(|_| replica(&config)).collect();
    seed(&replicas[0].0, KEYS);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = replicas
        .iter()
        .skip(1)
        .enumerate()
        .map(|(i, (r, _))| writer(r.port, format!("archive:counter{i}"), Arc::clone(&stop)))
        .collect();
    let (ok, text) = migrate(
        replicas[0].1,
        &[
            "start",
            "--prefix",
            "archive:",
            "--to",
            "archive",
            "--max-keys-per-s",
            "300",
        ],
    );
    assert!(ok, "start: {text}");
    let admin = replicas[1].1;
    wait_for_keys_moved(admin, 200);
    let first = status(admin)["controller"].as_str().unwrap().to_string();
    // The replica driving it stops: after two leases of silence, another takes it over.
    drop(replicas.remove(0));
    let record = wait_for_phase(admin, "done", Duration::from_secs(60));
    assert_ne!(record["controller"].as_str().unwrap(), first, "{record}");
    thread::sleep(Duration::from_millis(300));
    let (own, shared) = stop_writers(&stop, writers);

    assert_eq!(
        main.cli(&["KEYS", "archive:*"]),
        "",
        "keys left on the source"
    );
    for (i, count) in own.iter().enumerate() {
        assert_eq!(
            archive.cli(&["GET", &format!("archive:counter{i}")]),
            count.to_string()
        );
    }
    assert_eq!(archive.cli(&["GET", "archive:shared"]), shared.to_string());
    assert_eq!(archive.cli(&["KEYS", "archive:k*"]).lines().count(), KEYS);
    let _ = std::fs::remove_file(token);
}

#[test]
fn a_prefix_moves_between_clusters_through_failovers_of_source_and_target() {
    let source = RedisCluster::start(3, 1);
    let target = RedisCluster::start(3, 1);
    let mut config = config_with(vec![
        ("main", cluster_backend(&source.seeds())),
        ("archive", cluster_backend(&target.seeds())),
    ]);
    let token = with_migrations(&mut config, "clusters", 3000);
    let replicas: Vec<_> = (0..2).map(|_| replica(&config)).collect();
    seed(&replicas[0].0, KEYS);
    let stop = Arc::new(AtomicBool::new(false));
    let writers = writers(&replicas, "archive:", &stop);
    let admin = replicas[0].1;
    let (ok, text) = migrate(
        admin,
        &[
            "start",
            "--prefix",
            "archive:",
            "--to",
            "archive",
            "--max-keys-per-s",
            "400",
        ],
    );
    assert!(ok, "start: {text}");
    wait_for_keys_moved(admin, 200);
    // A master of the source fails over mid-copy, then one of the target.
    let master = source.master_ports()[0];
    let replica_port = source.replica_of(master);
    source.cli(replica_port, &["CLUSTER", "FAILOVER"]);
    wait_for_keys_moved(admin, 500);
    let master = target.master_ports()[1];
    let replica_port = target.replica_of(master);
    target.cli(replica_port, &["CLUSTER", "FAILOVER"]);
    wait_for_phase(admin, "done", Duration::from_secs(90));
    thread::sleep(Duration::from_millis(300));
    let (own, shared) = stop_writers(&stop, writers);

    let mut proxy = replicas[1].0.raw();
    for (i, count) in own.iter().enumerate() {
        let reply = proxy.command(&["GET", &format!("archive:counter{i}")]);
        assert_eq!(
            reply,
            format!("${}\r\n{count}\r\n", count.to_string().len()).as_bytes()
        );
    }
    let reply = proxy.command(&["GET", "archive:shared"]);
    assert_eq!(
        reply,
        format!("${}\r\n{shared}\r\n", shared.to_string().len()).as_bytes()
    );
    for port in source.master_ports() {
        assert_eq!(
            source.cli(port, &["KEYS", "archive:*"]),
            "",
            "left on {port}"
        );
    }
    let on_target: usize = target
        .master_ports()
        .iter()
        .map(|&port| target.cli(port, &["KEYS", "archive:k*"]).lines().count())
        .sum();
    assert_eq!(on_target, KEYS);
    let _ = std::fs::remove_file(token);
}
