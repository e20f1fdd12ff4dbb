//! Replicas following a migration's state (`respgate::migrate::follow`): two proxies in front
//! of the same two standalone servers move the prefix `archive:` from one to the other while
//! clients write it through both. The test stands in for the controller, writing each phase
//! into the state as it would once every replica has acknowledged the last, and moving the
//! keys a request did not touch as the copier would.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::proxy::{Proxy, Raw, config_with, standalone_backend};
use common::sentinel::StandaloneServer;

const KEYS: usize = 50;

/// The migration record in `phase`, as the controller stores it.
fn record(phase: &str, version: u64) -> String {
    format!(
        r#"{{"id":"m1","prefix":"archive:","slots":null,"from":"main","to":"archive","phase":"{phase}","version":{version},"keys_moved":0,"bytes_moved":0,"error":null}}"#
    )
}

/// Writes the record in `phase` and waits until both replicas acknowledge it (`ack` false: a
/// final phase, which replicas stop listing).
fn step(state: &StandaloneServer, phase: &str, version: u64, ack: bool) {
    state.cli(&[
        "HSET",
        "{respgate}:migrations",
        "m1",
        &record(phase, version),
    ]);
    let wanted = format!("m1={phase}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let roster = state.cli(&["HVALS", "{respgate}:roster"]);
        let entries: Vec<&str> = roster.lines().collect();
        let seen = entries.iter().filter(|e| e.contains(&wanted)).count();
        let listed = entries.iter().filter(|e| e.contains("m1=")).count();
        if entries.len() == 2 && ((ack && seen == 2) || (!ack && listed == 0)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replicas never acknowledged {phase}: {roster}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// A client writing through `port` until `stop`: `INCR` on a counter of its own and a shared
/// one. Returns the acknowledged increments of each, and every reply that was not one.
fn writer(
    port: u16,
    name: String,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<(u64, u64, Vec<String>)> {
    thread::spawn(move || {
        let mut client = Raw::connect(port);
        let (mut own, mut shared, mut errors) = (0, 0, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            for (key, count) in [(name.as_str(), &mut own), ("archive:shared", &mut shared)] {
                let reply = client.command(&["INCR", key]);
                if reply.first() == Some(&b':') {
                    *count += 1;
                } else {
                    errors.push(String::from_utf8_lossy(&reply).into_owned());
                }
            }
        }
        (own, shared, errors)
    })
}

#[test]
fn a_prefix_moves_between_servers_while_two_replicas_write_it() {
    let main = StandaloneServer::start();
    let archive = StandaloneServer::start();
    let mut config = config_with(vec![
        ("main", standalone_backend(main.address())),
        ("archive", standalone_backend(archive.address())),
    ]);
    config.migration.enabled = true;
    config.migration.lease_ms = 3000;
    let replicas = [Proxy::start_with(config.clone()), Proxy::start_with(config)];
    for replica in &replicas {
        replica.wait_until_serving();
    }
    let mut client = replicas[0].raw();
    for i in 0..KEYS {
        let (key, value) = (format!("archive:k{i}"), format!("v{i}"));
        assert_eq!(client.command(&["SET", &key, &value]), b"+OK\r\n");
    }
    assert_eq!(client.command(&["SET", "other", "x"]), b"+OK\r\n");
    main.cli(&["EXPIRE", "archive:k0", "100"]);

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = replicas
        .iter()
        .enumerate()
        .map(|(i, r)| writer(r.port, format!("archive:counter{i}"), Arc::clone(&stop)))
        .collect();
    thread::sleep(Duration::from_millis(200));
    step(&main, "preparing", 0, true);
    step(&main, "holding", 1, true);
    step(&main, "moving", 2, true);
    // A request moves the key it touches; the copier moves the rest.
    let mut other = replicas[1].raw();
    for i in 0..KEYS / 2 {
        let value = format!("v{i}");
        let reply = other.command(&["GET", &format!("archive:k{i}")]);
        assert_eq!(reply, format!("${}\r\n{value}\r\n", value.len()).as_bytes());
    }
    for key in main.cli(&["KEYS", "archive:*"]).lines() {
        let moved = main.cli(&[
            "MIGRATE",
            "127.0.0.1",
            &archive.port.to_string(),
            key,
            "0",
            "5000",
        ]);
        assert!(moved == "OK" || moved == "NOKEY", "{key}: {moved}");
    }
    thread::sleep(Duration::from_millis(300));
    step(&main, "verifying", 3, true);
    step(&main, "done", 4, false);
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);

    let mut shared_acked = 0;
    for (i, writer) in writers.into_iter().enumerate() {
        let (own, shared, errors) = writer.join().expect("writer");
        assert!(errors.is_empty(), "writer {i} saw errors: {errors:?}");
        assert!(own > 10, "writer {i} wrote only {own} times");
        assert_eq!(
            archive.cli(&["GET", &format!("archive:counter{i}")]),
            own.to_string()
        );
        shared_acked += shared;
    }
    assert_eq!(
        archive.cli(&["GET", "archive:shared"]),
        shared_acked.to_string()
    );
    assert_eq!(
        main.cli(&["KEYS", "archive:*"]),
        "",
        "keys left on the source"
    );
    assert_eq!(main.cli(&["GET", "other"]), "x");
    for i in 0..KEYS {
        assert_eq!(
            archive.cli(&["GET", &format!("archive:k{i}")]),
            format!("v{i}")
        );
    }
    let ttl: u64 = archive.cli(&["TTL", "archive:k0"]).parse().expect("a TTL");
    assert!(
        (90..=100).contains(&ttl),
        "the TTL moved with the key: {ttl}"
    );
    // Done: every replica reads the keys on the target, which holds them for good.
    for replica in &replicas {
        let mut raw = replica.raw();
        assert_eq!(raw.command(&["GET", "archive:k7"]), b"$2\r\nv7\r\n");
        assert_eq!(raw.command(&["SET", "archive:new", "n"]), b"+OK\r\n");
    }
    assert_eq!(archive.cli(&["GET", "archive:new"]), "n");
    assert_eq!(main.cli(&["EXISTS", "archive:new"]), "0");
}
