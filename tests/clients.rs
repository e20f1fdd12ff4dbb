//! Mainstream client libraries through the proxy, each doing what an application does (set and
//! get, multi-key commands over many slots, a pipeline, MULTI/EXEC, Pub/Sub, a blocked BLPOP
//! woken by another connection, a full SCAN, EVAL, hashes, sorted sets, streams, a 1 MiB value,
//! CLIENT SETNAME/GETNAME) against a 3-master, 3-replica Redis Cluster:
//! - redis-py, ioredis and node-redis as scripts under tests/clients/, on the pinned versions
//!   that scripts/ensure-python.sh and scripts/ensure-node.sh install;
//! - redis-rs here (tests/clients/redis_rs.rs).
//!
//! Plain clients dial the proxy's address. Cluster clients discover the topology the proxy
//! announces (`server.announce_address`, set to the address they were given, as a proxy behind
//! a load balancer announces the balancer's) and must dial nothing else: each script records
//! every address its process dials, redis-rs every node address its cluster client connects to.
//!
//! Every check of every mode runs and prints `PASS name` or `FAIL name: why`, so one failure
//! shows the whole matrix of that library.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "clients/redis_rs.rs"]
mod redis_rs;
#[path = "clients/redis_rs_conn.rs"]
mod redis_rs_conn;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::RedisCluster;
use common::proxy::Proxy;
use respgate::slot::Slot;

/// How long one client script may run.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

/// A 3-master, 3-replica cluster and a proxy in front of it announcing its own address.
fn start() -> (RedisCluster, Proxy) {
    let cluster = RedisCluster::start(3, 1);
    let proxy = Proxy::start_announcing_itself(&cluster.seeds());
    (cluster, proxy)
}

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// One run of a client in one mode: whether every check passed, and what it printed.
pub struct Run {
    /// Library and mode, e.g. `redis-py cluster`.
    pub label: String,
    /// Whether every check passed.
    pub passed: bool,
    /// The PASS/FAIL lines and anything else printed.
    pub output: String,
}

/// Runs `program script 127.0.0.1 PORT mode`, at most [`SCRIPT_TIMEOUT`].
fn run_script(label: &str, program: &Path, script: &Path, port: u16, mode: &str) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("output");
    let out = File::create(&log).expect("create output file");
    let mut child = Command::new(program)
        .arg(script)
        .args(["127.0.0.1", &port.to_string(), mode])
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("clone output file"))
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the script") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        sleep(Duration::from_millis(50));
    };
    let mut output = std::fs::read_to_string(&log).unwrap_or_default();
    match status {
        Some(status) if !status.success() => output.push_str(&format!("\n(exited: {status})")),
        None => output.push_str(&format!("\n(killed after {SCRIPT_TIMEOUT:?})")),
        Some(_) => {}
    }
    Run {
        label: format!("{label} {mode}"),
        passed: status.is_some_and(|s| s.success()),
        output,
    }
}

/// Prints every run (shown when the test fails or with `--nocapture`) and fails naming the runs
/// that did not pass.
pub fn assert_every_run_passed(runs: &[Run]) {
    for run in runs {
        println!("==== {} ====\n{}", run.label, run.output);
    }
    let failed: Vec<String> = runs
        .iter()
        .filter(|r| !r.passed)
        .map(|r| {
            let fails: Vec<&str> = r
                .output
                .lines()
                .filter(|l| l.starts_with("FAIL") || l.starts_with('('))
                .collect();
            format!("{}:\n  {}", r.label, fails.join("\n  "))
        })
        .collect();
    assert!(
        failed.is_empty(),
        "client checks failed (whole output above):\n{}",
        failed.join("\n")
    );
}

/// What a client wrote through the proxy is in the cluster: `{prefix}k0` is `value-0` on the
/// node that owns its slot.
fn assert_in_cluster(cluster: &RedisCluster, prefix: &str) {
    let key = format!("{prefix}k0");
    let owner = cluster.slot_owner(Slot::for_key(key.as_bytes()).get());
    assert_eq!(
        cluster.cli(owner, &["GET", &key]),
        "value-0",
        "{key} on its node"
    );
}

/// The Python of the virtual environment `scripts/ensure-python.sh` makes.
fn venv_python() -> PathBuf {
    let python = repo_path(".venv-tests/bin/python");
    assert!(
        python.exists(),
        "{} is missing: make it with `bash scripts/ensure-python.sh` (scripts/test.sh runs it); \
         it installs python3 and the pinned redis-py of tests/clients/python/requirements.txt",
        python.display()
    );
    python
}

/// The Node.js that `scripts/ensure-node.sh` chose, once the pinned packages are installed.
fn node() -> PathBuf {
    let node = repo_path(".node-tests/node");
    let modules = repo_path("tests/clients/node/node_modules");
    assert!(
        node.exists() && modules.exists(),
        "{} or {} is missing: run `bash scripts/ensure-node.sh` (scripts/test.sh runs it); it \
         installs Node.js 20 or later and the pinned packages of tests/clients/node/package.json",
        node.display(),
        modules.display()
    );
    node
}

#[test]
fn redis_py_plain_over_resp2_plain_by_default_and_cluster_client_pass_every_check() {
    let python = venv_python();
    let (cluster, proxy) = start();
    let script = repo_path("tests/clients/python/redis_py.py");
    let runs: Vec<Run> = ["resp2", "default", "cluster"]
        .iter()
        .map(|mode| run_script("redis-py", &python, &script, proxy.port, mode))
        .collect();
    assert_every_run_passed(&runs);
    for mode in ["resp2", "default", "cluster"] {
        assert_in_cluster(&cluster, &format!("py-{mode}:"));
    }
}

#[test]
fn ioredis_and_node_redis_plain_and_cluster_clients_pass_every_check() {
    let node = node();
    let (cluster, proxy) = start();
    let ioredis = repo_path("tests/clients/node/ioredis.mjs");
    let node_redis = repo_path("tests/clients/node/node_redis.mjs");
    let mut runs = Vec::new();
    for mode in ["resp2", "default", "cluster"] {
        runs.push(run_script("ioredis", &node, &ioredis, proxy.port, mode));
    }
    for mode in ["resp2", "resp3", "cluster"] {
        runs.push(run_script(
            "node-redis",
            &node,
            &node_redis,
            proxy.port,
            mode,
        ));
    }
    assert_every_run_passed(&runs);
    assert_in_cluster(&cluster, "ioredis-cluster:");
    assert_in_cluster(&cluster, "node-redis-cluster:");
}

#[test]
fn redis_rs_plain_and_cluster_clients_pass_every_check() {
    let (cluster, proxy) = start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let runs: Vec<Run> = redis_rs::Mode::ALL
        .iter()
        .map(|&mode| runtime.block_on(redis_rs::run(mode, "127.0.0.1", proxy.port)))
        .collect();
    assert_every_run_passed(&runs);
    assert_in_cluster(&cluster, "redis-rs-cluster:");
}
