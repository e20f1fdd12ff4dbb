//! Integration-test harness: real `redis-server` clusters on free local ports.
//!
//! Every data node (cluster node, standalone server, Sentinel-monitored server) runs the program
//! [`server_program`] names: `redis-server` on `PATH`, or the server in `RESPGATE_TEST_SERVER`
//! (e.g. the `valkey-server` that `scripts/ensure-valkey.sh` installs), so the same tests run
//! against Redis and Valkey. `redis-cli` and `redis-sentinel` stay Redis's: both speak to Valkey.
//!
//! A test declares `mod common;`, starts a cluster with [`RedisCluster::start`], points the proxy
//! at [`RedisCluster::seeds`] and drives the nodes with [`RedisCluster::cli`]. Every process the
//! harness starts is killed when the [`RedisCluster`] is dropped, also when the test panics, and
//! every startup failure panics with the tail of the node logs so CI output explains it.
//! Synchronous std code only, so it works from plain `#[test]`s and inside a runtime alike.
// Not every test uses every helper; a harness panics by design, as a failed setup fails the test.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod checker;
pub mod http;
pub mod migrate;
pub mod netcut;
pub mod proxy;
pub mod reload;
pub mod sentinel;
pub mod tls;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{self, File};
use std::hash::{BuildHasher, RandomState};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime};

use tempfile::TempDir;

/// Number of hash slots in a Redis Cluster.
pub const SLOT_COUNT: u32 = 16384;
/// Distance from a node's client port to its cluster bus port (the Redis default).
const BUS_PORT_OFFSET: u16 = 10000;
/// Lowest client port [`free_port_pair`] hands out.
const PORT_MIN: u16 = 20000;
/// Number of client ports [`free_port_pair`] picks from: 20000..22768 for clients and
/// 30000..32768 for buses stay below Linux's ephemeral range (32768..61000), so a burst of
/// outgoing connections elsewhere on the machine cannot be holding them.
const PORT_COUNT: u16 = 2768;
/// Every node's configuration, before the test's extra arguments (which may override it).
/// Paths are relative to the node's own directory, its working directory. Replicas sync at once
/// (no 5 s wait for other replicas to share a sync), and masters ping them every second: Redis
/// 7 leaves a replica out of `CLUSTER SLOTS` until its replication offset leaves 0, which an
/// empty master only moves with those pings (every 10 s by default).
const NODE_CONFIG: &str = "--bind 127.0.0.1 --protected-mode no --daemonize no --appendonly no \
    --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
    --repl-diskless-sync-delay 0 --repl-ping-replica-period 1 --dir . --logfile redis.log";
/// How long one `redis-server` may take to answer after it is spawned.
const NODE_START_TIMEOUT: Duration = Duration::from_secs(10);
/// Fresh ports to try when another process takes the picked port before the node binds it.
const NODE_START_ATTEMPTS: usize = 5;
/// How long the cluster may take to converge in [`RedisCluster::wait_for_ok`].
const CLUSTER_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two looks at a starting node or a converging cluster.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Read timeout of the harness's own RESP client.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Lines of each node log quoted when the harness gives up.
const LOG_TAIL_LINES: usize = 25;

/// Ports handed out by this process, so two clusters in one test binary never collide.
static RESERVED_PORTS: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
/// Makes every port search of this process start from a different point.
static PORT_SEARCHES: AtomicU64 = AtomicU64::new(0);

/// The environment variable naming the server program of every data node, a path or a name on
/// `PATH`; unset or empty means `redis-server`.
pub const SERVER_ENV: &str = "RESPGATE_TEST_SERVER";

/// The server program data nodes run: [`SERVER_ENV`] when set, else `redis-server`.
pub fn server_program() -> OsString {
    std::env::var_os(SERVER_ENV)
        .filter(|program| !program.is_empty())
        .unwrap_or_else(|| OsString::from("redis-server"))
}

/// Whether the data nodes run Valkey, read from the server's `--version` banner (`Valkey server
/// v=...`, where Redis prints `Redis server v=...`), for the few assertions where the two servers
/// legitimately differ.
pub fn server_is_valkey() -> bool {
    Command::new(server_program())
        .arg("--version")
        .output()
        .is_ok_and(|output| output.stdout.starts_with(b"Valkey "))
}

/// The name the server calls itself in its replies (`-BUSY Valkey is busy running a script...`
/// where Redis says `Redis is busy...`): `Valkey` or `Redis`.
pub fn server_title() -> &'static str {
    if server_is_valkey() {
        "Valkey"
    } else {
        "Redis"
    }
}

/// Panics with install instructions when the server program ([`server_program`]) or
/// `redis-cli` cannot run.
///
/// Tests never skip silently: a missing Redis is a broken environment, not a passing test.
pub fn require_redis() {
    let server = server_program();
    let mut version = Command::new(&server);
    version
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if std::env::var_os(SERVER_ENV).is_some_and(|program| !program.is_empty()) {
        assert!(
            version.status().is_ok_and(|status| status.success()),
            "{SERVER_ENV}={} does not run: point it at a redis-server or valkey-server binary \
             (scripts/ensure-valkey.sh installs valkey-server and prints its path), or unset it \
             to use redis-server from PATH",
            server.to_string_lossy()
        );
    } else {
        assert!(
            version.status().is_ok_and(|status| status.success()),
            "redis-server not found: install it with `apt-get update && apt-get install -y \
             redis-server redis-tools`, or run scripts/test.sh which installs it"
        );
    }
    let mut version = Command::new("redis-cli");
    version
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    assert!(
        version.status().is_ok_and(|status| status.success()),
        "redis-cli not found: install it with `apt-get update && apt-get install -y redis-tools`, \
         or run scripts/test.sh which installs it"
    );
}

/// Returns a port that is free on 127.0.0.1 right now, chosen by the kernel.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = listener
        .local_addr()
        .expect("local address of a bound socket")
        .port();
    RESERVED_PORTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(port);
    port
}

/// Returns a port `p` such that `p` and its cluster bus port `p + 10000` are free on 127.0.0.1.
///
/// Candidates are drawn from 20000..22768 by a hash of pid, time and a counter, so parallel test
/// processes rarely pick the same one; both ports are verified by binding them, and this process
/// never hands a port out twice. Another process may still take it before Redis binds it; node
/// startup retries on a fresh pair for that.
pub fn free_port_pair() -> u16 {
    let search = (
        std::process::id(),
        SystemTime::now(),
        PORT_SEARCHES.fetch_add(1, Ordering::Relaxed),
    );
    let hasher = RandomState::new();
    let mut reserved = RESERVED_PORTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    for attempt in 0..1000_u32 {
        let offset = hasher.hash_one((search, attempt)) % u64::from(PORT_COUNT);
        let port = PORT_MIN + u16::try_from(offset).expect("offset below PORT_COUNT");
        let bus = port + BUS_PORT_OFFSET;
        let bindable = |p| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if !reserved.contains(&port)
            && !reserved.contains(&bus)
            && bindable(port)
            && bindable(bus)
            && claim_across_processes(port)
        {
            reserved.extend([port, bus]);
            return port;
        }
    }
    panic!("no free port pair (p, p + {BUS_PORT_OFFSET}) from {PORT_MIN} on 127.0.0.1");
}

/// Lock files of the port pairs this process holds, kept open (and so locked) until it exits.
static PORT_CLAIMS: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// Claims `port` (and its bus port) for this process against every other test process: an
/// exclusive lock on a file named for it, released by the kernel when this process ends,
/// however it ends. A port that is merely free now is not enough, since a test stops a server
/// and starts it again on the same port (a sentinel, a node), and another test process must
/// not take the port in between.
fn claim_across_processes(port: u16) -> bool {
    let dir = std::env::temp_dir().join("respgate-test-ports");
    if fs::create_dir_all(&dir).is_err() {
        return true;
    }
    let Ok(file) = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!("{port}.lock")))
    else {
        return true;
    };
    if file.try_lock().is_err() {
        return false;
    }
    PORT_CLAIMS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(file);
    true
}

/// One `redis-server` child process and the directory holding its config, data and logs.
struct Node {
    port: u16,
    /// The TLS port of a TLS cluster's node, beside the plain `port` the harness uses.
    tls_port: Option<u16>,
    child: Child,
    dir: PathBuf,
    alive: bool,
    /// Started by [`RedisCluster::start`] or joined by [`RedisCluster::join_node`].
    member: bool,
}

/// A Redis Cluster of local `redis-server` processes, killed and deleted on drop.
pub struct RedisCluster {
    nodes: Vec<Node>,
    extra_args: Vec<String>,
    password: Option<String>,
    /// TLS ports beside the plain ones, and the cluster bus over TLS.
    tls: Option<tls::NodeTls>,
    dir: TempDir,
}

impl RedisCluster {
    /// Starts `masters` masters (at least 3) with `replicas_per_master` replicas each, and waits
    /// until every node agrees on a complete slot map and every replica is in sync.
    pub fn start(masters: usize, replicas_per_master: usize) -> RedisCluster {
        Self::start_with(masters, replicas_per_master, &[])
    }

    /// Like [`RedisCluster::start`], passing `extra_args` (e.g. `&["--requirepass", "secret"]`) to
    /// every `redis-server` after the harness's own. With `--requirepass` the harness also sets
    /// `--masterauth` and authenticates its own commands, `cli` included.
    pub fn start_with(masters: usize, replicas: usize, extra_args: &[&str]) -> RedisCluster {
        Self::start_inner(masters, replicas, extra_args, None)
    }

    /// Like [`RedisCluster::start`], each node with a TLS port (see [`RedisCluster::tls_seeds`])
    /// beside its plain one, and the cluster bus and replication over TLS (`tls-cluster`,
    /// `tls-replication`): TLS clients are told TLS ports, plain ones (the harness's) plain
    /// ports.
    pub fn start_tls(masters: usize, replicas: usize, tls: tls::NodeTls) -> RedisCluster {
        Self::start_inner(masters, replicas, &[], Some(tls))
    }

    fn start_inner(
        masters: usize,
        replicas: usize,
        extra_args: &[&str],
        tls: Option<tls::NodeTls>,
    ) -> RedisCluster {
        require_redis();
        assert!(
            masters >= 3,
            "redis-cli --cluster create needs 3 masters or more, not {masters}"
        );
        let mut extra_args: Vec<String> = extra_args.iter().map(ToString::to_string).collect();
        let password_at = extra_args.iter().position(|a| a == "--requirepass");
        let password = password_at.and_then(|i| extra_args.get(i + 1)).cloned();
        if let Some(password) = &password
            && !extra_args.iter().any(|a| a == "--masterauth")
        {
            extra_args.extend(["--masterauth".to_owned(), password.clone()]);
        }
        let dir = tempfile::Builder::new()
            .prefix("respgate-cluster-")
            .tempdir();
        let dir = dir.unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
        // Built before the first spawn, so a panic anywhere below still kills what started.
        let mut cluster = RedisCluster {
            nodes: Vec::new(),
            extra_args,
            password,
            tls,
            dir,
        };
        for _ in 0..masters * (1 + replicas) {
            let port = cluster.spawn_node();
            cluster.node_mut(port).member = true;
        }
        let mut create = cluster.redis_cli();
        match &cluster.tls {
            // The nodes meet at the addresses given here: over TLS, at their TLS ports.
            Some(tls) => create
                .args(tls.cli_args())
                .args(["--cluster", "create"])
                .args(cluster.tls_seeds()),
            None => create.args(["--cluster", "create"]).args(cluster.seeds()),
        };
        create.args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"]);
        match create.output() {
            Ok(output) if output.status.success() => {}
            Ok(output) => cluster.fail(&format!(
                "redis-cli --cluster create failed ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )),
            Err(e) => cluster.fail(&format!("cannot run redis-cli: {e}")),
        }
        cluster.wait_until(Some((masters, replicas)));
        cluster
    }

    /// `127.0.0.1:port` of every live node, in start order.
    pub fn seeds(&self) -> Vec<String> {
        self.ports()
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect()
    }

    /// `127.0.0.1:port` of every live node's TLS port, in start order (a TLS cluster's).
    pub fn tls_seeds(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|node| node.alive)
            .filter_map(|node| node.tls_port)
            .map(|port| format!("127.0.0.1:{port}"))
            .collect()
    }

    /// Client ports of every live (not killed) node, in start order.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|node| node.alive)
            .map(|node| node.port)
            .collect()
    }

    /// Ports of the masters not flagged as failing in `CLUSTER NODES` of the first live master.
    pub fn master_ports(&self) -> Vec<u16> {
        self.ports_flagged("master")
    }

    /// Ports of the replicas not flagged as failing in `CLUSTER NODES` of the first live master.
    pub fn replica_ports(&self) -> Vec<u16> {
        self.ports_flagged("slave")
    }

    /// Runs `redis-cli -p port args...` and returns its trimmed stdout; panics on an error reply.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let reply = self.try_cli(port, args);
        reply.unwrap_or_else(|e| panic!("redis-cli -p {port} {}: {e}", args.join(" ")))
    }

    /// Like [`RedisCluster::cli`], but returns an error reply (e.g. `MOVED 12182 127.0.0.1:7002`)
    /// or a failure to run `redis-cli` as `Err` instead of panicking.
    pub fn try_cli(&self, port: u16, args: &[&str]) -> Result<String, String> {
        let mut cli = self.redis_cli();
        let output = cli
            .args(["-e", "-p", &port.to_string()])
            .args(args)
            .output();
        let output = output.map_err(|e| format!("cannot run redis-cli: {e}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if !output.status.success() {
            return Err(format!(
                "{}{stdout}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(stdout)
    }

    /// The port of a healthy replica of the master on `master_port`, from its `CLUSTER NODES`.
    pub fn replica_of(&self, master_port: u16) -> u16 {
        let master_id = self.node_id(master_port);
        let nodes = self.cli(master_port, &["CLUSTER", "NODES"]);
        // <id> <ip:port@cport> <flags> <master-id> ...
        nodes
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                let (addr, flags, master) = (fields.get(1)?, fields.get(2)?, fields.get(3)?);
                let healthy = !flags.contains("fail") && flags.contains("slave");
                (healthy && *master == master_id)
                    .then(|| addr.split('@').next()?.rsplit(':').next()?.parse().ok())
                    .flatten()
            })
            .next()
            .unwrap_or_else(|| panic!("master {master_port} has no healthy replica:\n{nodes}"))
    }

    /// The cluster node id of the node on `port`.
    pub fn node_id(&self, port: u16) -> String {
        self.cli(port, &["CLUSTER", "MYID"])
    }

    /// Port of the master serving `slot`, according to `CLUSTER SLOTS` of the first live master.
    pub fn slot_owner(&self, slot: u16) -> u16 {
        let port = self.reference_port();
        let ranges = self.slot_ranges(port).unwrap_or_else(|e| panic!("{e}"));
        let range = ranges.iter().find(|r| (r.start..=r.end).contains(&slot));
        range
            .unwrap_or_else(|| panic!("node {port}: nobody serves slot {slot}"))
            .master
    }

    /// A key starting with `prefix` whose slot the master on `port` serves (the slot map read
    /// once, not once per candidate key).
    pub fn key_on(&self, port: u16, prefix: &str) -> String {
        let reference = self.reference_port();
        let ranges = self
            .slot_ranges(reference)
            .unwrap_or_else(|e| panic!("{e}"));
        (0..100_000)
            .map(|i| format!("{prefix}{i}"))
            .find(|key| {
                let slot = respgate::slot::Slot::for_key(key.as_bytes()).get();
                ranges
                    .iter()
                    .any(|r| (r.start..=r.end).contains(&slot) && r.master == port)
            })
            .unwrap_or_else(|| panic!("no key starting with {prefix:?} on the master on {port}"))
    }

    /// One key starting with `prefix` per master, in master port order.
    pub fn key_per_master(&self, prefix: &str) -> Vec<String> {
        let mut masters = self.master_ports();
        masters.sort_unstable();
        masters
            .iter()
            .map(|&port| self.key_on(port, prefix))
            .collect()
    }

    /// Process id of the node on `port`.
    pub fn pid(&self, port: u16) -> u32 {
        self.node(port).child.id()
    }

    /// Kills the node on `port` with SIGKILL and reaps it; it no longer counts as live.
    pub fn kill(&mut self, port: u16) {
        let node = self.node_mut(port);
        node.child
            .kill()
            .unwrap_or_else(|e| panic!("cannot kill node {port}: {e}"));
        node.child
            .wait()
            .unwrap_or_else(|e| panic!("cannot reap node {port}: {e}"));
        node.alive = false;
    }

    /// Starts one more empty cluster-enabled node, not yet met by the cluster; returns its port.
    /// [`RedisCluster::wait_for_ok`] ignores it until [`RedisCluster::join_node`] (or a
    /// `CLUSTER MEET` it has already answered) makes it part of the cluster.
    pub fn add_node_process(&mut self) -> u16 {
        self.spawn_node()
    }

    /// Introduces the node on `port` (from [`RedisCluster::add_node_process`]) to the cluster as
    /// an empty master, and waits until the cluster knows it and it knows the slot map.
    pub fn join_node(&mut self, port: u16) {
        let known = self.reference_port();
        self.cli(known, &["CLUSTER", "MEET", "127.0.0.1", &port.to_string()]);
        self.node_mut(port).member = true;
        let deadline = Instant::now() + CLUSTER_READY_TIMEOUT;
        while !self.master_ports().contains(&port) {
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "node {known} did not learn node {port} after a MEET"
                ));
            }
            sleep(POLL_INTERVAL);
        }
        // Gossip reaches the other nodes a little later; a rebalance asking one of them to
        // move slots to the new node fails ("I don't know about node") until it has.
        let id = self.node_id(port);
        let members: Vec<u16> = self
            .nodes
            .iter()
            .filter(|node| node.alive && node.member)
            .map(|node| node.port)
            .collect();
        for other in members {
            while !self.cli(other, &["CLUSTER", "NODES"]).contains(&id) {
                if Instant::now() >= deadline {
                    self.fail(&format!("node {other} did not learn node {port} by gossip"));
                }
                sleep(POLL_INTERVAL);
            }
        }
        self.wait_for_ok();
    }

    /// Waits until every live member of the cluster reports `cluster_state:ok` and the same
    /// complete `CLUSTER SLOTS` (masters and replicas) naming only live nodes, and every replica's
    /// link is up. Right after [`RedisCluster::kill`] this waits for the failover, if any.
    pub fn wait_for_ok(&self) {
        self.wait_until(None);
    }

    /// Moves `slot` and all its keys from the master on `from_port` to the master on `to_port`.
    pub fn migrate_slot(&self, slot: u16, from_port: u16, to_port: u16) {
        self.begin_migration(slot, from_port, to_port);
        self.migrate_keys(slot, from_port, to_port);
        self.finish_migration(slot, from_port, to_port);
    }

    /// Marks `slot` IMPORTING on the target, then MIGRATING on the source.
    pub fn begin_migration(&self, slot: u16, from_port: u16, to_port: u16) {
        let slot = slot.to_string();
        let (from_id, to_id) = (self.node_id(from_port), self.node_id(to_port));
        self.cli(
            to_port,
            &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id],
        );
        self.cli(
            from_port,
            &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id],
        );
    }

    /// Moves every key now in `slot` from the source to the target with `MIGRATE`, byte-exact.
    pub fn migrate_keys(&self, slot: u16, from_port: u16, to_port: u16) {
        let (slot, to) = (slot.to_string(), to_port.to_string());
        loop {
            let keys = match self.query_ok(from_port, &["CLUSTER", "GETKEYSINSLOT", &slot, "100"]) {
                Reply::Array(keys) if !keys.is_empty() => keys,
                Reply::Array(_) => return,
                other => panic!("GETKEYSINSLOT on {from_port} replied {other:?}"),
            };
            let mut migrate = ["MIGRATE", "127.0.0.1", &to, "", "0", "5000"]
                .map(Vec::from)
                .to_vec();
            if let Some(password) = &self.password {
                migrate.extend([b"AUTH".to_vec(), password.clone().into_bytes()]);
            }
            migrate.push(b"KEYS".to_vec());
            for key in keys {
                let Reply::Bulk(key) = key else {
                    panic!("GETKEYSINSLOT returned {key:?}")
                };
                migrate.push(key);
            }
            self.query_ok(from_port, &migrate);
        }
    }

    /// Ends the migration with `CLUSTER SETSLOT slot NODE <target>` on the target, the source and
    /// every other master. The slot must hold no keys on the source any more.
    pub fn finish_migration(&self, slot: u16, from_port: u16, to_port: u16) {
        let (slot, to_id) = (slot.to_string(), self.node_id(to_port));
        let others = self
            .master_ports()
            .into_iter()
            .filter(|&p| p != from_port && p != to_port);
        for port in [to_port, from_port].into_iter().chain(others) {
            self.cli(port, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
        }
    }

    /// Spawns one node on a fresh port pair, retrying when the port was taken meanwhile.
    fn spawn_node(&mut self) -> u16 {
        let mut failures = String::new();
        for _ in 0..NODE_START_ATTEMPTS {
            let port = free_port_pair();
            let dir = self.dir.path().join(format!("node-{port}"));
            let stderr = fs::create_dir(&dir).and_then(|()| File::create(dir.join("stderr.log")));
            let stderr = stderr.unwrap_or_else(|e| self.fail(&format!("cannot prepare node: {e}")));
            let mut server = Command::new(server_program());
            server
                .current_dir(&dir)
                .args(["--port", &port.to_string(), "--save", ""]);
            server
                .args(NODE_CONFIG.split_whitespace())
                .args(&self.extra_args);
            // With tls-cluster the bus listens at the TLS port + 10000: a pair of its own.
            let tls_port = self.tls.as_ref().map(|_| free_port_pair());
            if let (Some(tls), Some(tls_port)) = (&self.tls, tls_port) {
                server
                    .args(["--tls-port", &tls_port.to_string()])
                    .args(tls.server_args());
            }
            server
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr);
            let child = server.spawn();
            let child = child.unwrap_or_else(|e| {
                self.fail(&format!(
                    "cannot run {}: {e}",
                    server_program().to_string_lossy()
                ))
            });
            let (alive, member) = (true, false);
            self.nodes.push(Node {
                port,
                tls_port,
                child,
                dir,
                alive,
                member,
            });
            match self.await_node(port) {
                Ok(()) => return port,
                Err(reason) => {
                    failures += &format!("node {port}: {reason}\n{}", self.log_tail(port))
                }
            }
            if let Some(mut node) = self.nodes.pop() {
                let _ = node.child.kill();
                let _ = node.child.wait();
            }
        }
        self.fail(&format!(
            "no redis-server came up in {NODE_START_ATTEMPTS} attempts:\n{failures}"
        ))
    }

    /// Waits until the node on `port` answers `INFO` with its own pid, not another process's.
    fn await_node(&mut self, port: u16) -> Result<(), String> {
        let deadline = Instant::now() + NODE_START_TIMEOUT;
        let pid_line = format!("process_id:{}", self.pid(port));
        loop {
            if let Ok(Some(status)) = self.node_mut(port).child.try_wait() {
                return Err(format!("redis-server exited with {status}"));
            }
            if self
                .query_text(port, &["INFO", "server"])
                .is_ok_and(|i| has_line(&i, &pid_line))
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("no answer within {NODE_START_TIMEOUT:?}"));
            }
            sleep(POLL_INTERVAL);
        }
    }

    /// Polls [`RedisCluster::check_ready`] until it passes, or panics with the node logs.
    fn wait_until(&self, shape: Option<(usize, usize)>) {
        let deadline = Instant::now() + CLUSTER_READY_TIMEOUT;
        while let Err(reason) = self.check_ready(shape) {
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "cluster not ready after {CLUSTER_READY_TIMEOUT:?}: {reason}"
                ));
            }
            sleep(POLL_INTERVAL);
        }
    }

    /// Says why the cluster is not ready yet. With `shape` (masters, replicas per master) it also
    /// requires that many masters, each with that many replicas.
    fn check_ready(&self, shape: Option<(usize, usize)>) -> Result<(), String> {
        let mut views = Vec::new();
        for port in self.ports() {
            let info = self.query_text(port, &["CLUSTER", "INFO"])?;
            if !self.node(port).member && has_line(&info, "cluster_known_nodes:1") {
                continue; // Added but not met yet (see `add_node_process`).
            }
            if !has_line(&info, "cluster_state:ok") {
                return Err(format!("node {port} does not report cluster_state:ok"));
            }
            let replication = self.query_text(port, &["INFO", "replication"])?;
            if has_line(&replication, "role:slave")
                && !has_line(&replication, "master_link_status:up")
            {
                return Err(format!("replica {port} has no link to its master"));
            }
            views.push((port, self.slot_ranges(port)?));
        }
        let Some((first_port, first)) = views.first() else {
            return Err("no node joined".into());
        };
        if let Some((port, _)) = views.iter().find(|(_, view)| view != first) {
            return Err(format!(
                "nodes {port} and {first_port} see different slot maps"
            ));
        }
        let mut next = 0;
        for range in first {
            if u32::from(range.start) != next {
                break;
            }
            next = u32::from(range.end) + 1;
        }
        if next != SLOT_COUNT {
            return Err(format!("node {first_port}: nobody serves slot {next}"));
        }
        let live = self.ports();
        let mut listed = first
            .iter()
            .flat_map(|range| range.replicas.iter().chain([&range.master]));
        if let Some(dead) = listed.find(|&&port| !live.contains(&port)) {
            return Err(format!("node {first_port} still lists killed node {dead}"));
        }
        let masters: BTreeSet<u16> = first.iter().map(|range| range.master).collect();
        match shape {
            Some((m, r))
                if masters.len() != m || first.iter().any(|range| range.replicas.len() != r) =>
            {
                Err(format!(
                    "want {m} masters with {r} replicas each, node {first_port} sees {first:?}"
                ))
            }
            _ => Ok(()),
        }
    }

    /// The node's `CLUSTER SLOTS`, sorted by first slot.
    fn slot_ranges(&self, port: u16) -> Result<Vec<SlotRange>, String> {
        let malformed =
            |reply: &Reply| format!("node {port}: unexpected CLUSTER SLOTS reply {reply:?}");
        let Reply::Array(entries) = self.query(port, &["CLUSTER", "SLOTS"])? else {
            return Err(malformed(&Reply::Nil));
        };
        let ranges = entries
            .iter()
            .map(|entry| SlotRange::parse(entry).ok_or_else(|| malformed(entry)));
        let mut ranges = ranges.collect::<Result<Vec<_>, _>>()?;
        ranges.sort_by_key(|range| range.start);
        Ok(ranges)
    }

    /// Live nodes flagged `flag` and not failing in the first live master's `CLUSTER NODES`.
    fn ports_flagged(&self, flag: &str) -> Vec<u16> {
        let nodes = self.cli(self.reference_port(), &["CLUSTER", "NODES"]);
        // <id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slots>...
        let flagged: BTreeSet<u16> = nodes
            .lines()
            .filter_map(|line| {
                let mut fields = line.split(' ').skip(1);
                let (addr, flags) = (
                    fields.next()?,
                    fields.next()?.split(',').collect::<Vec<_>>(),
                );
                let failing = ["fail", "fail?", "handshake", "noaddr"];
                let port = addr.split('@').next()?.rsplit(':').next()?.parse().ok()?;
                let wanted = flags.contains(&flag) && !flags.iter().any(|f| failing.contains(f));
                wanted.then_some(port)
            })
            .collect();
        self.ports()
            .into_iter()
            .filter(|port| flagged.contains(port))
            .collect()
    }

    /// The first live node that is a master: its slot assignment is the authoritative one.
    fn reference_port(&self) -> u16 {
        let is_master = |port: &u16| {
            let replication = self.query_text(*port, &["INFO", "replication"]);
            replication.is_ok_and(|text| has_line(&text, "role:master"))
        };
        self.ports()
            .into_iter()
            .find(is_master)
            .unwrap_or_else(|| self.fail("no live master"))
    }

    fn node(&self, port: u16) -> &Node {
        let node = self.nodes.iter().find(|node| node.port == port);
        node.unwrap_or_else(|| panic!("no node on port {port}"))
    }

    fn node_mut(&mut self, port: u16) -> &mut Node {
        let node = self.nodes.iter_mut().find(|node| node.port == port);
        node.unwrap_or_else(|| panic!("no node on port {port}"))
    }

    /// A `redis-cli` aimed at 127.0.0.1, authenticated when the cluster has a password.
    fn redis_cli(&self) -> Command {
        let mut command = Command::new("redis-cli");
        command.args(["-h", "127.0.0.1"]).stdin(Stdio::null());
        if let Some(password) = &self.password {
            command.args(["-a", password, "--no-auth-warning"]);
        }
        command
    }

    /// Like [`RedisCluster::query`], but panics on an error reply or a connection failure.
    fn query_ok(&self, port: u16, args: &[impl AsRef<[u8]>]) -> Reply {
        match self.query(port, args) {
            Ok(Reply::Error(e)) | Err(e) => panic!("node {port}: {e}"),
            Ok(reply) => reply,
        }
    }

    /// Sends an `INFO`-like command and returns its bulk reply as text without `\r`.
    fn query_text(&self, port: u16, args: &[&str]) -> Result<String, String> {
        match self.query(port, args)? {
            Reply::Bulk(text) => Ok(String::from_utf8_lossy(&text).replace('\r', "")),
            other => Err(format!("node {port} replied {other:?} to {args:?}")),
        }
    }

    /// Connects to `port`, authenticates if the cluster has a password, sends one command and
    /// reads its reply. The harness's own RESP client, used where the reply's structure matters.
    fn query(&self, port: u16, args: &[impl AsRef<[u8]>]) -> Result<Reply, String> {
        let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("{port}: {e}"))?;
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let mut frame = Vec::new();
        if let Some(password) = &self.password {
            encode(&mut frame, &["AUTH", password]);
        }
        encode(&mut frame, args);
        (&stream)
            .write_all(&frame)
            .map_err(|e| format!("{port}: {e}"))?;
        let mut reader = BufReader::new(&stream);
        if self.password.is_some()
            && let Reply::Error(e) = read_reply(&mut reader)?
        {
            return Err(format!("AUTH on {port}: {e}"));
        }
        read_reply(&mut reader)
    }

    /// Panics with `message` followed by the tail of every node's logs.
    fn fail(&self, message: &str) -> ! {
        let logs: String = self
            .nodes
            .iter()
            .map(|node| self.log_tail(node.port))
            .collect();
        panic!("{message}\n\n{logs}");
    }

    fn log_tail(&self, port: u16) -> String {
        let dir = &self.node(port).dir;
        let tail = |name: &str| {
            let text =
                String::from_utf8_lossy(&fs::read(dir.join(name)).unwrap_or_default()).into_owned();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
        };
        let (log, stderr) = (tail("redis.log"), tail("stderr.log"));
        format!(
            "--- node {port} ({}) redis.log:\n{log}\n--- stderr:\n{stderr}\n",
            dir.display()
        )
    }
}

impl Drop for RedisCluster {
    /// Kills and reaps every process the harness started, even while a failed test unwinds.
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
    }
}

/// One entry of `CLUSTER SLOTS`: a range of slots, its master and its replicas (sorted).
#[derive(Debug, PartialEq)]
struct SlotRange {
    start: u16,
    end: u16,
    master: u16,
    replicas: Vec<u16>,
}

impl SlotRange {
    /// Reads `[start, end, [ip, port, id, ...], replicas...]`.
    fn parse(entry: &Reply) -> Option<SlotRange> {
        let node_port = |node: &Reply| match node {
            Reply::Array(fields) => match fields.get(1)? {
                Reply::Int(port) => u16::try_from(*port).ok(),
                _ => None,
            },
            _ => None,
        };
        let Reply::Array(fields) = entry else {
            return None;
        };
        let [Reply::Int(start), Reply::Int(end), master, replicas @ ..] = fields.as_slice() else {
            return None;
        };
        let mut replicas = replicas.iter().map(node_port).collect::<Option<Vec<_>>>()?;
        replicas.sort_unstable();
        let (start, end) = (u16::try_from(*start).ok()?, u16::try_from(*end).ok()?);
        Some(SlotRange {
            start,
            end,
            master: node_port(master)?,
            replicas,
        })
    }
}

/// A RESP2 reply, as read by the harness's own client.
#[derive(Debug)]
enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Array(Vec<Reply>),
    Nil,
}

/// Appends `args` to `frame` as a RESP array of bulk strings.
fn encode(frame: &mut Vec<u8>, args: &[impl AsRef<[u8]>]) {
    frame.extend(format!("*{}\r\n", args.len()).bytes());
    for arg in args.iter().map(AsRef::as_ref) {
        frame.extend(format!("${}\r\n", arg.len()).bytes());
        frame.extend([arg, b"\r\n"].concat());
    }
}

/// Reads one RESP2 reply.
fn read_reply(reader: &mut impl BufRead) -> Result<Reply, String> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => return Err("connection closed".into()),
        Ok(_) => {}
        Err(e) => return Err(format!("read: {e}")),
    }
    let line = line.trim_end_matches("\r\n");
    let mut chars = line.chars();
    let (kind, rest) = (chars.next(), chars.as_str());
    let length = || {
        rest.parse::<i64>()
            .map_err(|e| format!("bad length in {line:?}: {e}"))
    };
    match kind {
        Some('+') => Ok(Reply::Status(rest.to_owned())),
        Some('-') => Ok(Reply::Error(rest.to_owned())),
        Some(':') => length().map(Reply::Int),
        Some('$' | '*') if length()? < 0 => Ok(Reply::Nil),
        Some('$') => {
            let mut bulk = vec![0; usize::try_from(length()?).map_err(|e| e.to_string())? + 2];
            reader
                .read_exact(&mut bulk)
                .map_err(|e| format!("read: {e}"))?;
            bulk.truncate(bulk.len() - 2);
            Ok(Reply::Bulk(bulk))
        }
        Some('*') => (0..length()?)
            .map(|_| read_reply(reader))
            .collect::<Result<_, _>>()
            .map(Reply::Array),
        _ => Err(format!("unexpected RESP line {line:?}")),
    }
}

/// Whether `text` (lines without `\r`) has a line exactly equal to `line`.
fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}
