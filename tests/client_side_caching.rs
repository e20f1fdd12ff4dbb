//! Client-side caching through the proxy as applications use it: redis-py's and node-redis's
//! own caches (RESP3, `CLIENT TRACKING`) on a real cluster behind two proxy replicas. A reader
//! caches while others change its keys: through the other replica, through the same one,
//! straight on the cluster, by a script, by expiry, by delete. It must see each new value soon
//! after the writer's acknowledgement (the limits here are generous, for a shared machine; the
//! times seen are printed), and 1,000 cached reads must stay off the nodes. Then what the proxy
//! cannot follow (a failover, a slot moved, the nodes restarted) must end in a flush, never a
//! stale value.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::RedisCluster;
use common::proxy::cluster_backend;
use common::proxy::{Proxy, Raw, config_for, config_with, standalone_backend};
use common::sentinel::{SentinelGroup, StandaloneServer, sentinel_backend};
use respgate::config::{Config, RouteConfig};
use respgate::slot::Slot;

/// The longest an ordinary write may take to reach a reader's cache here (seen: milliseconds).
const SOON_MS: u64 = 1000;
/// The longest a change the proxy cannot follow may take to end in a flush: a topology refresh,
/// a new watcher, a reconnection.
const FLUSHED_MS: u64 = 8000;

/// A reader process: redis-py or node-redis with its cache on, through one proxy.
struct Reader {
    label: &'static str,
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Reader {
    fn python(port: u16) -> Reader {
        let python = repo_path(".venv-tests/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run `bash scripts/ensure-python.sh` (scripts/test.sh runs it)",
            python.display()
        );
        Reader::start(
            "redis-py",
            python,
            "tests/clients/python/cache_reader.py",
            port,
        )
    }

    fn node(port: u16) -> Reader {
        let node = repo_path(".node-tests/node");
        assert!(
            node.exists() && repo_path("tests/clients/node/node_modules").exists(),
            "Node.js or the pinned packages are missing: run `bash scripts/ensure-node.sh` \
             (scripts/test.sh runs it)"
        );
        Reader::start(
            "node-redis",
            node,
            "tests/clients/node/cache_reader.mjs",
            port,
        )
    }

    fn start(label: &'static str, program: PathBuf, script: &str, port: u16) -> Reader {
        let mut child = Command::new(&program)
            .arg(repo_path(script))
            .args(["127.0.0.1", &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
        let input = child.stdin.take().expect("stdin");
        let output = BufReader::new(child.stdout.take().expect("stdout"));
        let mut reader = Reader {
            label,
            child,
            input,
            output,
        };
        assert_eq!(reader.line(), "ready", "{label} did not start");
        reader
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.output.read_line(&mut line).expect("read the reader");
        line.trim().to_owned()
    }

    fn ask(&mut self, request: &str) -> String {
        writeln!(self.input, "{request}").expect("write to the reader");
        let answer = self.line();
        assert!(
            !answer.starts_with("error") && !answer.is_empty(),
            "{}: {request}: {answer}",
            self.label
        );
        answer
    }

    fn get(&mut self, key: &str) -> String {
        self.ask(&format!("get {key}"))
    }

    /// Reads `key` until it is `value`; the milliseconds it took, or a failure naming what it
    /// read instead after `limit_ms`.
    fn sees(&mut self, key: &str, value: &str, limit_ms: u64) -> f64 {
        let answer = self.ask(&format!("wait {key} {value} {limit_ms}"));
        match answer.strip_prefix("ok ") {
            Some(ms) => ms.parse().expect("milliseconds"),
            None => panic!(
                "{}: {key} still read as {answer:?} {limit_ms} ms after it became {value}",
                self.label
            ),
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The proxy's configuration for `seeds`, announcing 7.4 so that redis-py 8 caches.
fn caching_config(seeds: &[String]) -> Config {
    let mut config = config_for(seeds);
    config.tracking.announce_version = "7.4.0".into();
    config
}

fn start_proxy(config: Config) -> Proxy {
    let proxy = Proxy::start_with(config);
    proxy.wait_until_serving();
    proxy
}

/// The master of `key`'s slot.
fn owner(cluster: &RedisCluster, key: &str) -> u16 {
    cluster.slot_owner(Slot::for_key(key.as_bytes()).get())
}

/// `GET` calls the masters have served, together.
fn gets_served(cluster: &RedisCluster) -> u64 {
    cluster
        .master_ports()
        .iter()
        .map(|&port| {
            let stats = cluster.cli(port, &["INFO", "commandstats"]);
            stats
                .lines()
                .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
                .and_then(|rest| rest.split(',').next())
                .map_or(0, |n| n.parse().expect("a count"))
        })
        .sum()
}

#[test]
fn caches_stay_right_whoever_writes_and_cached_reads_stay_local() {
    let cluster = RedisCluster::start(3, 0);
    let a = start_proxy(caching_config(&cluster.seeds()));
    let b = start_proxy(caching_config(&cluster.seeds()));
    let mut through_a = Raw::connect(a.port);
    let mut through_b = Raw::connect(b.port);
    let mut seen_ms: Vec<f64> = Vec::new();
    for mut reader in [Reader::python(a.port), Reader::node(a.port)] {
        let label = reader.label;
        let key = |n: u32| format!("csc:{label}:{n}");
        let direct = |key: &str, args: &[&str]| {
            let mut raw = Raw::connect(owner(&cluster, key));
            raw.command(args)
        };

        // Another replica of the proxy writes.
        let k = key(1);
        through_b.command(&["SET", &k, "v1"]);
        assert_eq!(reader.get(&k), "v1");
        through_b.command(&["SET", &k, "v2"]);
        seen_ms.push(reader.sees(&k, "v2", SOON_MS));
        // Another client of the same replica writes.
        through_a.command(&["SET", &k, "v3"]);
        seen_ms.push(reader.sees(&k, "v3", SOON_MS));
        // A client of the cluster itself writes.
        direct(&k, &["SET", &k, "v4"]);
        seen_ms.push(reader.sees(&k, "v4", SOON_MS));
        // A script writes.
        through_b.command(&[
            "EVAL",
            "return redis.call('SET', KEYS[1], ARGV[1])",
            "1",
            &k,
            "v5",
        ]);
        seen_ms.push(reader.sees(&k, "v5", SOON_MS));
        // A delete.
        through_b.command(&["DEL", &k]);
        seen_ms.push(reader.sees(&k, "(nil)", SOON_MS));
        // An expiry: the node's own, with no client's write.
        let k = key(2);
        direct(&k, &["SET", &k, "short", "PX", "300"]);
        assert_eq!(reader.get(&k), "short");
        reader.sees(&k, "(nil)", FLUSHED_MS);

        // 1,000 reads of a cached key: a handful reach the nodes at most.
        let k = key(3);
        through_b.command(&["SET", &k, "hot"]);
        assert_eq!(reader.get(&k), "hot");
        let before = gets_served(&cluster);
        assert_eq!(reader.ask(&format!("reads {k} 1000")), "done");
        let reached = gets_served(&cluster) - before;
        assert!(
            reached <= 5,
            "{}: 1,000 cached reads reached the nodes {reached} times",
            reader.label
        );
    }
    let slowest = seen_ms.iter().copied().fold(0.0, f64::max);
    println!("new values seen after {seen_ms:?} ms (slowest {slowest} ms)");
}

#[test]
fn a_resp2_client_hears_through_its_redirect_of_a_write_on_the_node() {
    let cluster = RedisCluster::start(3, 0);
    let proxy = start_proxy(caching_config(&cluster.seeds()));
    let mut listener = Raw::connect(proxy.port);
    let id = String::from_utf8(listener.command(&["CLIENT", "ID"])).unwrap();
    let id = id.trim_start_matches(':').trim().to_owned();
    listener.command(&["SUBSCRIBE", "__redis__:invalidate"]);
    let mut tracker = Raw::connect(proxy.port);
    assert_eq!(
        tracker.command(&["CLIENT", "TRACKING", "on", "REDIRECT", &id]),
        b"+OK\r\n"
    );
    let key = "csc:resp2:1";
    tracker.command(&["GET", key]);
    Raw::connect(owner(&cluster, key)).command(&["SET", key, "v"]);
    assert_eq!(
        listener.reply(),
        b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*1\r\n$11\r\ncsc:resp2:1\r\n"
    );
}

#[test]
fn a_failover_of_the_keys_master_ends_in_the_new_masters_value() {
    let cluster = RedisCluster::start(3, 1);
    let proxy = start_proxy(caching_config(&cluster.seeds()));
    let mut reader = Reader::python(proxy.port);
    let key = "csc:failover:1";
    Raw::connect(proxy.port).command(&["SET", key, "before"]);
    assert_eq!(reader.get(key), "before");
    let master = owner(&cluster, key);
    let replica = cluster.replica_of(master);
    cluster.cli(replica, &["CLUSTER", "FAILOVER"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while owner(&cluster, key) != replica {
        assert!(Instant::now() < deadline, "the replica was not promoted");
        sleep(Duration::from_millis(50));
    }
    cluster.wait_for_ok();
    Raw::connect(replica).command(&["SET", key, "after"]);
    let ms = reader.sees(key, "after", FLUSHED_MS);
    println!("the new master's value seen after {ms} ms");
}

#[test]
fn a_slot_moved_to_another_master_ends_in_the_new_owners_value() {
    let cluster = RedisCluster::start(3, 0);
    let proxy = start_proxy(caching_config(&cluster.seeds()));
    let mut reader = Reader::node(proxy.port);
    let key = "csc:reshard:1";
    Raw::connect(proxy.port).command(&["SET", key, "before"]);
    assert_eq!(reader.get(key), "before");
    let from = owner(&cluster, key);
    let to = *cluster
        .master_ports()
        .iter()
        .find(|&&p| p != from)
        .expect("another master");
    cluster.migrate_slot(Slot::for_key(key.as_bytes()).get(), from, to);
    Raw::connect(to).command(&["SET", key, "after"]);
    let ms = reader.sees(key, "after", FLUSHED_MS);
    println!("the new owner's value seen after {ms} ms");
}

#[test]
fn a_restart_of_every_node_ends_in_a_flush() {
    let mut server = StandaloneServer::start();
    let mut config = config_with(vec![("solo", standalone_backend(server.address()))]);
    config.tracking.announce_version = "7.4.0".into();
    let proxy = start_proxy(config);
    let mut reader = Reader::python(proxy.port);
    let key = "csc:restart:1";
    Raw::connect(proxy.port).command(&["SET", key, "before"]);
    assert_eq!(reader.get(key), "before");
    // Restarted without saving: the key is gone, and no node reported it.
    server.restart();
    let ms = reader.sees(key, "(nil)", FLUSHED_MS);
    println!("the restart seen after {ms} ms");
    Raw::connect(server.port).command(&["SET", key, "after"]);
    reader.sees(key, "after", SOON_MS);
}

#[test]
fn a_sentinel_group_behind_a_stripped_prefix_stays_right_through_its_failover() {
    let cluster = RedisCluster::start(3, 0);
    let group = SentinelGroup::start(1);
    let mut config = config_with(vec![
        ("main", cluster_backend(&cluster.seeds())),
        ("sessions", sentinel_backend(&group)),
    ]);
    config.routing.routes.push(RouteConfig {
        prefix: "session:".into(),
        backend: "sessions".into(),
        strip_prefix: true,
        ..RouteConfig::default()
    });
    config.tracking.announce_version = "7.4.0".into();
    let proxy = start_proxy(config);
    let mut reader = Reader::python(proxy.port);
    let mut bcast = Raw::connect(proxy.port);
    bcast.command(&["HELLO", "3"]);
    bcast.command(&["CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "session:"]);

    // The group stores the key without its prefix; its change on the node is told with it.
    let mut through = Raw::connect(proxy.port);
    through.command(&["SET", "session:1", "before"]);
    through.command(&["SET", "main:1", "before"]);
    assert_eq!(reader.get("session:1"), "before");
    assert_eq!(reader.get("main:1"), "before");
    // Flushes from the watchers' start, if any, are not what this test is about.
    while !bcast.quiet_for(Duration::from_millis(200)) {
        bcast.reply();
    }
    Raw::connect(group.master_port()).command(&["SET", "1", "direct"]);
    reader.sees("session:1", "direct", SOON_MS);
    assert_eq!(
        bcast.reply(),
        b">2\r\n$10\r\ninvalidate\r\n*1\r\n$9\r\nsession:1\r\n"
    );
    // A failover of the group: the new master's value is read.
    let promoted = group.failover();
    Raw::connect(promoted).command(&["SET", "1", "after"]);
    let ms = reader.sees("session:1", "after", FLUSHED_MS);
    println!("the promoted master's value seen after {ms} ms");
    // The other backend's keys are still told.
    Raw::connect(owner(&cluster, "main:1")).command(&["SET", "main:1", "direct"]);
    reader.sees("main:1", "direct", SOON_MS);
}
