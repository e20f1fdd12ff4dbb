//! `respgate migrate` from end to end: three proxy replicas in front of two standalone
//! servers move the prefix `archive:` from one to the other, started and watched with the
//! command line through one replica's admin address, while clients write the prefix through
//! all three and one replica is stopped and another started mid-copy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::migrate::{TOKEN, migrate, replica, status, writer};
use common::proxy::{Proxy, config_with, standalone_backend};
use common::sentinel::StandaloneServer;

const KEYS: usize = 3000;
#[test]
fn respgate_migrate_moves_a_prefix_while_three_replicas_serve_it() {
    let main = StandaloneServer::start();
    let archive = StandaloneServer::start();
    let token_file = std::env::temp_dir().join(format!("respgate-migrate-{}", std::process::id()));
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write the token file");
    let mut config = config_with(vec![
        ("main", standalone_backend(main.address())),
        ("archive", standalone_backend(archive.address())),
    ]);
    config.migration.enabled = true;
    config.migration.lease_ms = 3000;
    config.server.admin_token_file = token_file.to_string_lossy().into_owned();
    let mut replicas: Vec<(Proxy, u16)> = (0..3).map(|_| replica(&config)).collect();

    let mut client = replicas[0].0.raw();
    for i in 0..KEYS {
        let (key, value) = (format!("archive:k{i}"), format!("v{i}"));
        assert_eq!(client.command(&["SET", &key, &value]), b"+OK\r\n");
    }
    assert_eq!(client.command(&["SET", "{archive:tag}x", "t"]), b"+OK\r\n");
    assert_eq!(client.command(&["SET", "other", "o"]), b"+OK\r\n");
    main.cli(&["EXPIRE", "archive:k1", "100"]);

    let stop = Arc::new(AtomicBool::new(false));
    let leaving = Arc::new(AtomicBool::new(false));
    let mut writers: Vec<_> = replicas
        .iter()
        .enumerate()
        .map(|(i, (r, _))| {
            let stop = if i == 2 { &leaving } else { &stop };
            writer(r.port, format!("archive:counter{i}"), Arc::clone(stop))
        })
        .collect();
    thread::sleep(Duration::from_millis(200));
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
            "1000",
        ],
    );
    assert!(ok, "start: {text}");
    // A second migration of the same prefix is refused.
    let (ok, text) = migrate(admin, &["start", "--prefix", "archive:", "--to", "archive"]);
    assert!(!ok && text.contains("409"), "a second start: {text}");

    // Mid-copy, one replica stops and another starts: the new one joins at the current phase.
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(admin)["keys_moved"].as_u64().unwrap_or(0) < 500 {
        assert!(
            Instant::now() < deadline,
            "the copier never moved 500 keys: {}",
            status(admin)
        );
        thread::sleep(Duration::from_millis(50));
    }
    // Its client stops first, as a client of a replica going away moves to another.
    leaving.store(true, Ordering::Relaxed);
    let left = writers.remove(2).join().expect("writer 2");
    drop(replicas.pop());
    let joined = replica(&config);
    writers.push(writer(
        joined.0.port,
        "archive:counter3".into(),
        Arc::clone(&stop),
    ));
    replicas.push(joined);

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let record = status(admin);
        if record["phase"] == "done" {
            assert!(record["keys_moved"].as_u64().unwrap() > 1000, "{record}");
            assert!(record["bytes_moved"].as_u64().unwrap() > 0, "{record}");
            // The seeded keys, and the writers' keys made before the start.
            let total = record["keys_total"].as_u64().unwrap();
            assert!(
                (KEYS as u64 + 2..=KEYS as u64 + 40).contains(&total),
                "{record}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "never done: {record}");
        thread::sleep(Duration::from_millis(100));
    }
    let id = status(admin)["id"].as_str().unwrap().to_string();
    // Each replica publishes what it last read of the state: within a third of a lease.
    let done = format!("respgate_migration_phase{{migration=\"{id}\",phase=\"done\"}} 1");
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let (_, metrics) = common::http::get(admin, "/metrics");
        if metrics.contains(&done) || Instant::now() > deadline {
            break metrics;
        }
        thread::sleep(Duration::from_millis(100));
    };
    for series in [
        format!("respgate_migration_phase{{migration=\"{id}\",phase=\"done\"}} 1"),
        format!("respgate_migration_phase{{migration=\"{id}\",phase=\"moving\"}} 0"),
        format!("respgate_migration_keys_moved{{migration=\"{id}\"}}"),
        format!("respgate_migration_bytes_moved{{migration=\"{id}\"}}"),
    ] {
        assert!(
            metrics.contains(&series),
            "{series} missing from /metrics:\n{metrics}"
        );
    }
    let (ok, text) = migrate(admin, &["status"]);
    assert!(
        ok && text.contains("done") && text.contains("100%"),
        "status: {text}"
    );
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);

    let mut shared_acked = 0;
    let done = writers.into_iter().map(|w| w.join().expect("writer"));
    for (i, (own, shared, errors)) in [left].into_iter().chain(done).enumerate() {
        assert!(errors.is_empty(), "writer {i} saw errors: {errors:?}");
        let counter = [
            "archive:counter2",
            "archive:counter0",
            "archive:counter1",
            "archive:counter3",
        ];
        assert_eq!(
            archive.cli(&["GET", counter[i]]),
            own.to_string(),
            "{}",
            counter[i]
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
    assert_eq!(
        main.cli(&["KEYS", "{archive:*"]),
        "",
        "tagged keys left on the source"
    );
    assert_eq!(main.cli(&["GET", "other"]), "o");
    assert_eq!(archive.cli(&["GET", "{archive:tag}x"]), "t");
    for i in (0..KEYS).step_by(97) {
        assert_eq!(
            archive.cli(&["GET", &format!("archive:k{i}")]),
            format!("v{i}")
        );
    }
    let ttl: u64 = archive.cli(&["TTL", "archive:k1"]).parse().expect("a TTL");
    assert!(
        (80..=100).contains(&ttl),
        "the TTL moved with the key: {ttl}"
    );
    for (replica, _) in &replicas {
        let mut raw = replica.raw();
        assert_eq!(raw.command(&["GET", "archive:k7"]), b"$2\r\nv7\r\n");
    }
    let _ = std::fs::remove_file(&token_file);
}
