//! Moving one key between backends (`respgate::migrate::move_key`, the step a prefix's
//! migration is made of) on real servers: from a cluster to another cluster and from a
//! standalone server to a cluster, with its type, its value and its time to live; an absent key
//! is not moved; a key the target already has stays where it is on both sides.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::RedisCluster;
use common::proxy::{Raw, cluster_backend, standalone_backend};
use common::sentinel::StandaloneServer;
use respgate::cluster::{Backend, Lifeline, StopSignal};
use respgate::config::BackendConfig;
use respgate::migrate::{MoveError, Moved, move_key};
use respgate::slot::Slot;
use respgate::workers::Workers;

/// Two backends with their topology known, and the worker their connections live on.
struct Pair {
    workers: Workers,
    source: Arc<Backend>,
    target: Arc<Backend>,
    _lives: Vec<Lifeline>,
    _shutdown: tokio::sync::watch::Sender<bool>,
}

impl Pair {
    fn start(source: BackendConfig, target: BackendConfig) -> Pair {
        let workers = Workers::start(1).unwrap();
        let (shutdown, watching) = tokio::sync::watch::channel(false);
        let source = Backend::new("source", source, workers.set().clone());
        let target = Backend::new("target", target, workers.set().clone());
        let mut lives = Vec::new();
        for backend in [&source, &target] {
            let (life, stop) = StopSignal::new(watching.clone());
            lives.push(life);
            let backend = Arc::clone(backend);
            workers.set().spawn_on(0, async move {
                drop(backend.spawn_refresher(stop));
            });
        }
        let pair = Pair {
            workers,
            source,
            target,
            _lives: lives,
            _shutdown: shutdown,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !(pair.source.is_known() && pair.target.is_known()) {
            assert!(std::time::Instant::now() < deadline, "topology not learnt");
            std::thread::sleep(Duration::from_millis(50));
        }
        pair
    }

    /// Moves `key` on the worker, as the proxy would.
    fn move_key(&self, key: &str) -> Result<Moved, MoveError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (source, target) = (Arc::clone(&self.source), Arc::clone(&self.target));
        let key = Bytes::copy_from_slice(key.as_bytes());
        self.workers.set().spawn_on(0, async move {
            let _ = tx.send(move_key(&source, &target, &key, 2000).await);
        });
        rx.recv_timeout(Duration::from_secs(20))
            .expect("a move's outcome")
    }
}

fn text(port: u16, args: &[&str]) -> String {
    String::from_utf8_lossy(&Raw::connect(port).command(args)).into_owned()
}

/// The master of `key` in `cluster`.
fn owner(cluster: &RedisCluster, key: &str) -> u16 {
    cluster.slot_owner(Slot::for_key(key.as_bytes()).get())
}

#[test]
fn keys_move_from_a_cluster_to_another_with_their_type_value_and_ttl() {
    let from = RedisCluster::start(3, 0);
    let to = RedisCluster::start(3, 0);
    let pair = Pair::start(cluster_backend(&from.seeds()), cluster_backend(&to.seeds()));
    let key = "user:{42}:profile";
    text(
        owner(&from, key),
        &["HSET", key, "name", "ada", "lang", "en"],
    );
    text(owner(&from, key), &["PEXPIRE", key, "600000"]);
    assert_eq!(pair.move_key(key), Ok(Moved::Moved));
    assert_eq!(text(owner(&from, key), &["EXISTS", key]), ":0\r\n");
    assert_eq!(
        text(owner(&to, key), &["HGET", key, "lang"]),
        "$2\r\nen\r\n"
    );
    let ttl: i64 = text(owner(&to, key), &["PTTL", key])
        .trim_start_matches(':')
        .trim()
        .parse()
        .unwrap();
    assert!((590_000..=600_000).contains(&ttl), "{ttl}");

    // A key the source does not have: nothing moves.
    assert_eq!(pair.move_key("user:{43}:none"), Ok(Moved::Absent));
    // A key both have: it stays on both sides, the target's untouched.
    let both = "user:{44}:both";
    text(owner(&from, both), &["SET", both, "old"]);
    text(owner(&to, both), &["SET", both, "new"]);
    assert_eq!(pair.move_key(both), Err(MoveError::TargetHasKey));
    assert_eq!(text(owner(&from, both), &["GET", both]), "$3\r\nold\r\n");
    assert_eq!(text(owner(&to, both), &["GET", both]), "$3\r\nnew\r\n");
}

#[test]
fn a_big_hash_moves_from_a_standalone_server_to_a_cluster_whole() {
    let from = StandaloneServer::start();
    let to = RedisCluster::start(3, 0);
    let pair = Pair::start(
        standalone_backend(from.address()),
        cluster_backend(&to.seeds()),
    );
    let key = "archive:big";
    let mut raw = Raw::connect(from.port);
    for chunk in 0..20 {
        let mut args = vec!["HSET".to_string(), key.to_string()];
        for field in 0..500 {
            args.push(format!("f{chunk}-{field}"));
            args.push(format!("v{chunk}-{field}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        raw.command(&args);
    }
    assert_eq!(pair.move_key(key), Ok(Moved::Moved));
    assert_eq!(text(from.port, &["EXISTS", key]), ":0\r\n");
    assert_eq!(text(owner(&to, key), &["HLEN", key]), ":10000\r\n");
    assert_eq!(
        text(owner(&to, key), &["HGET", key, "f19-499"]),
        "$7\r\nv19-499\r\n"
    );
    assert_eq!(text(owner(&to, key), &["PTTL", key]), ":-1\r\n");
}
