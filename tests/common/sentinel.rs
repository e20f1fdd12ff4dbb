//! Integration-test harness for the non-cluster backends: a Sentinel-managed group (a master, its
//! replicas and three `redis-sentinel` processes) and a plain standalone `redis-server`, on free
//! local ports.
//!
//! As for [`super::RedisCluster`]: every process is killed by pid when the harness value is
//! dropped, also while a failed test unwinds; every startup failure panics with the tail of the
//! logs. Each sentinel has its own config file in its own directory, since a sentinel rewrites
//! its file as it learns replicas, other sentinels and new masters (and a restarted sentinel
//! reads that back).

use std::fs::{self, File};
use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{IO_TIMEOUT, POLL_INTERVAL, Reply, encode, free_port_pair, has_line, read_reply};

/// The name the sentinels monitor the master under.
pub const MASTER_NAME: &str = "mymaster";
/// Sentinels in a group: three, so that a quorum of two survives one of them down.
pub const SENTINELS: usize = 3;
/// Sentinels that must agree the master is down before a failover.
const QUORUM: &str = "2";
/// How long the master may not answer before a sentinel calls it down: short, so that a
/// `kill -9` is failed over within seconds.
const DOWN_AFTER_MS: &str = "1000";
/// Sentinel's failover timeout: also the pause before a failed failover is tried again.
const FAILOVER_TIMEOUT_MS: &str = "5000";
/// Every data node's configuration: standalone (no cluster mode), no persistence, replicas that
/// sync at once and masters that ping them every second.
const SERVER_CONFIG: &str = "--bind 127.0.0.1 --protected-mode no --daemonize no \
    --appendonly no --repl-diskless-sync-delay 0 --repl-ping-replica-period 1 \
    --logfile redis.log";
/// How long one process may take to answer after it is spawned.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Fresh ports to try when another process takes the picked port before ours binds it.
const START_ATTEMPTS: usize = 5;
/// How long replication and the sentinels may take to agree on the group after startup.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a failover may take, from `SENTINEL FAILOVER` or a killed master to every live
/// sentinel naming a new master that says it is one.
const FAILOVER_WAIT: Duration = Duration::from_secs(30);
/// Lines of each log quoted when the harness gives up.
const LOG_TAIL_LINES: usize = 25;

/// What a process of the harness is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// A `redis-server` holding data.
    Server,
    /// A `redis-sentinel`.
    Sentinel,
}

/// One child process, and the directory holding its config, data and logs.
struct Process {
    role: Role,
    port: u16,
    dir: PathBuf,
    /// `None` once killed or stopped.
    child: Option<Child>,
}

/// The processes of one harness value, killed by pid on drop.
struct Fleet {
    processes: Vec<Process>,
    dir: TempDir,
}

impl Fleet {
    fn new(prefix: &str) -> Fleet {
        super::require_redis();
        let dir = tempfile::Builder::new().prefix(prefix).tempdir();
        let dir = dir.unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
        Fleet {
            processes: Vec::new(),
            dir,
        }
    }

    /// Starts a `redis-server` with `args` after [`SERVER_CONFIG`] on a fresh port.
    fn spawn_server(&mut self, args: &[String]) -> u16 {
        self.spawn_fresh(Role::Server, args)
    }

    /// Starts a `redis-sentinel` monitoring the master on `master_port`, on a fresh port.
    fn spawn_sentinel(&mut self, master_port: u16) -> u16 {
        self.spawn_fresh(Role::Sentinel, &[master_port.to_string()])
    }

    /// Spawns a process on a fresh port, retrying on another when the port was taken meanwhile.
    fn spawn_fresh(&mut self, role: Role, args: &[String]) -> u16 {
        let mut failures = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port_pair();
            let dir = self
                .dir
                .path()
                .join(format!("{role:?}-{port}").to_lowercase());
            if let Err(e) = fs::create_dir(&dir) {
                self.fail(&format!("cannot create {}: {e}", dir.display()));
            }
            if role == Role::Sentinel {
                let master_port = args.first().map_or("0", String::as_str);
                self.write_sentinel_config(&dir, port, master_port);
            }
            self.processes.push(Process {
                role,
                port,
                dir,
                child: None,
            });
            match self.launch(port, args) {
                Ok(()) => return port,
                Err(reason) => failures += &format!("{reason}\n{}", self.log_tail(port)),
            }
            self.kill(port);
            self.processes.retain(|p| p.port != port);
        }
        self.fail(&format!(
            "no {role:?} came up in {START_ATTEMPTS} attempts:\n{failures}"
        ))
    }

    /// A sentinel's config file: the group to monitor with short timeouts. The sentinel adds
    /// its id, the replicas and the other sentinels it learns as it runs.
    fn write_sentinel_config(&self, dir: &std::path::Path, port: u16, master_port: &str) {
        let config = format!(
            "port {port}\nbind 127.0.0.1\ndaemonize no\ndir \"{dir}\"\nlogfile \"{dir}/redis.log\"\n\
             sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} {QUORUM}\n\
             sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n\
             sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n\
             sentinel parallel-syncs {MASTER_NAME} 1\n",
            dir = dir.display()
        );
        let written = File::create(dir.join("sentinel.conf"))
            .and_then(|mut file| file.write_all(config.as_bytes()));
        if let Err(e) = written {
            self.fail(&format!("cannot write the config of sentinel {port}: {e}"));
        }
    }

    /// Spawns the process of the (stopped) entry on `port` and waits until it answers with its
    /// own pid.
    fn launch(&mut self, port: u16, args: &[String]) -> Result<(), String> {
        let process = self.process(port);
        let (role, dir) = (process.role, process.dir.clone());
        let stderr = File::create(dir.join("stderr.log"))
            .map_err(|e| format!("cannot create the stderr log of {port}: {e}"))?;
        let mut command = match role {
            Role::Server => {
                let mut server = Command::new(super::server_program());
                server.args(["--port", &port.to_string(), "--save", "", "--dir", "."]);
                server.args(SERVER_CONFIG.split_whitespace()).args(args);
                server
            }
            Role::Sentinel => {
                let mut sentinel = Command::new("redis-sentinel");
                sentinel.arg(dir.join("sentinel.conf"));
                sentinel
            }
        };
        command
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = command
            .spawn()
            .map_err(|e| format!("cannot run {role:?} on {port}: {e}"))?;
        let pid_line = format!("process_id:{}", child.id());
        self.process_mut(port).child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let exited = self.process_mut(port).child.as_mut().map(Child::try_wait);
            if let Some(Ok(Some(status))) = exited {
                return Err(format!("{role:?} on {port} exited with {status}"));
            }
            if query_text(port, &["INFO", "server"]).is_ok_and(|i| has_line(&i, &pid_line)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{role:?} on {port}: no answer within {START_TIMEOUT:?}"
                ));
            }
            sleep(POLL_INTERVAL);
        }
    }

    /// Kills the process on `port` with SIGKILL and reaps it; a no-op when it is not running.
    fn kill(&mut self, port: u16) {
        if let Some(mut child) = self.process_mut(port).child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn is_running(&self, port: u16) -> bool {
        self.process(port).child.is_some()
    }

    fn ports(&self, role: Role) -> Vec<u16> {
        let of_role = self.processes.iter().filter(|p| p.role == role);
        of_role.map(|p| p.port).collect()
    }

    fn process(&self, port: u16) -> &Process {
        let process = self.processes.iter().find(|p| p.port == port);
        process.unwrap_or_else(|| self.fail(&format!("no process on port {port}")))
    }

    fn process_mut(&mut self, port: u16) -> &mut Process {
        let index = self.processes.iter().position(|p| p.port == port);
        let index = index.unwrap_or_else(|| self.fail(&format!("no process on port {port}")));
        &mut self.processes[index]
    }

    /// Panics with `message` followed by the tail of every process's logs.
    fn fail(&self, message: &str) -> ! {
        let logs: String = self
            .processes
            .iter()
            .map(|p| self.log_tail(p.port))
            .collect();
        panic!("{message}\n\n{logs}");
    }

    fn log_tail(&self, port: u16) -> String {
        let Some(process) = self.processes.iter().find(|p| p.port == port) else {
            return String::new();
        };
        let tail = |name: &str| {
            let bytes = fs::read(process.dir.join(name)).unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
        };
        format!(
            "--- {:?} {port} ({}) redis.log:\n{}\n--- stderr:\n{}\n",
            process.role,
            process.dir.display(),
            tail("redis.log"),
            tail("stderr.log")
        )
    }
}

impl Drop for Fleet {
    /// Kills and reaps every process the harness started, even while a failed test unwinds.
    fn drop(&mut self) {
        for process in &mut self.processes {
            if let Some(mut child) = process.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A master, its replicas and [`SENTINELS`] sentinels monitoring it as [`MASTER_NAME`], all
/// local processes, killed on drop.
pub struct SentinelGroup {
    fleet: Fleet,
    replicas: usize,
}

impl SentinelGroup {
    /// Starts a master with `replicas` replicas and three sentinels, and waits until every
    /// replica is in sync and every sentinel knows the master, each replica and the two other
    /// sentinels (so that a failover can be agreed on).
    pub fn start(replicas: usize) -> SentinelGroup {
        Self::start_with(replicas, &[])
    }

    /// Like [`SentinelGroup::start`], passing `master_args` (e.g.
    /// `&["--min-replicas-to-write", "1"]`) to the first master only, after the harness's own.
    pub fn start_with(replicas: usize, master_args: &[&str]) -> SentinelGroup {
        let mut group = SentinelGroup {
            fleet: Fleet::new("respgate-sentinel-"),
            replicas,
        };
        let master_args: Vec<String> = master_args.iter().map(ToString::to_string).collect();
        let master = group.fleet.spawn_server(&master_args);
        for _ in 0..replicas {
            let replica_of = [
                "--replicaof".to_owned(),
                "127.0.0.1".into(),
                master.to_string(),
            ];
            group.fleet.spawn_server(&replica_of);
        }
        group.wait_for("replication", READY_TIMEOUT, || {
            group.check_replication(master)
        });
        for _ in 0..SENTINELS {
            group.fleet.spawn_sentinel(master);
        }
        group.wait_until_sentinels_agree();
        group
    }

    /// `127.0.0.1:port` of every sentinel, running or not, in start order.
    pub fn sentinel_addrs(&self) -> Vec<String> {
        let ports = self.fleet.ports(Role::Sentinel);
        ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect()
    }

    /// Ports of every sentinel, running or not, in start order.
    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.fleet.ports(Role::Sentinel)
    }

    /// Ports of every data node still running (master and replicas), in start order.
    pub fn server_ports(&self) -> Vec<u16> {
        let servers = self.fleet.ports(Role::Server).into_iter();
        servers.filter(|&p| self.fleet.is_running(p)).collect()
    }

    /// The master's port as the first running sentinel that answers reports it.
    pub fn master_port(&self) -> u16 {
        let reports = self.running_sentinels().into_iter().map(reported_master);
        let mut errors = Vec::new();
        for report in reports {
            match report {
                Ok(port) => return port,
                Err(e) => errors.push(e),
            }
        }
        self.fleet
            .fail(&format!("no sentinel reports the master: {errors:?}"))
    }

    /// Ports of the running data nodes that are not the reported master.
    pub fn replica_ports(&self) -> Vec<u16> {
        let master = self.master_port();
        let servers = self.server_ports().into_iter();
        servers.filter(|&p| p != master).collect()
    }

    /// The process id of the running process on `port`, to stop and continue it.
    pub fn pid(&self, port: u16) -> u32 {
        let child = self.fleet.process(port).child.as_ref();
        child.map_or_else(
            || self.fleet.fail(&format!("{port} is not running")),
            Child::id,
        )
    }

    /// Kills the data node on `port` with SIGKILL (`kill -9`).
    pub fn kill_node(&mut self, port: u16) {
        self.fleet.kill(port);
    }

    /// Kills sentinel number `index` (in start order) with SIGKILL; its config file stays.
    pub fn stop_sentinel(&mut self, index: usize) {
        let port = self.sentinel_port(index);
        self.fleet.kill(port);
    }

    /// Starts sentinel number `index` again on its port, from the config file it rewrote, and
    /// waits until it answers.
    pub fn start_sentinel(&mut self, index: usize) {
        let port = self.sentinel_port(index);
        if self.fleet.is_running(port) {
            return;
        }
        if let Err(reason) = self.fleet.launch(port, &[]) {
            self.fleet.kill(port);
            self.fleet
                .fail(&format!("sentinel {index} did not restart: {reason}"));
        }
    }

    /// Waits until every running sentinel knows the master, its running replicas and the other
    /// running sentinels: what a failover needs.
    pub fn wait_until_sentinels_agree(&self) {
        self.wait_for("sentinels", READY_TIMEOUT, || self.check_sentinels());
    }

    /// Sends `SENTINEL FAILOVER mymaster` to a running sentinel (again while it answers that
    /// no replica is ready yet), then waits until every running sentinel reports a new master
    /// that says it is one; returns its port.
    pub fn failover(&self) -> u16 {
        let old = self.master_port();
        let deadline = Instant::now() + FAILOVER_WAIT;
        loop {
            let sentinel = self.running_sentinels().first().copied();
            let sentinel = sentinel.unwrap_or_else(|| self.fleet.fail("no sentinel running"));
            match query(sentinel, &["SENTINEL", "FAILOVER", MASTER_NAME]) {
                Ok(Reply::Status(ok)) if ok == "OK" => break,
                // NOGOODSLAVE: no replica was seen healthy recently enough yet; INPROG: one is
                // under way (it may still end with the master we asked to move away from).
                Ok(Reply::Error(e)) if Instant::now() < deadline => {
                    eprintln!("sentinel {sentinel}: SENTINEL FAILOVER: {e}; trying again");
                    sleep(Duration::from_millis(500));
                }
                other => self
                    .fleet
                    .fail(&format!("SENTINEL FAILOVER on {sentinel}: {other:?}")),
            }
        }
        self.wait_for_new_master(old)
    }

    /// Waits until every running sentinel reports a master other than `old`, the same one,
    /// which answers `ROLE` as a master; returns its port.
    pub fn wait_for_new_master(&self, old: u16) -> u16 {
        let mut new = 0;
        self.wait_for("a new master", FAILOVER_WAIT, || {
            let reports: Result<Vec<u16>, String> = self
                .running_sentinels()
                .into_iter()
                .map(reported_master)
                .collect();
            let reports = reports?;
            match reports.as_slice() {
                [first, rest @ ..] if *first != old && rest.iter().all(|p| p == first) => {
                    let role = self.try_cli(*first, &["ROLE"])?;
                    if !role.starts_with("master") {
                        return Err(format!("{first} says ROLE {role}"));
                    }
                    new = *first;
                    Ok(())
                }
                _ => Err(format!(
                    "sentinels report {reports:?}, {old} was the old master"
                )),
            }
        });
        new
    }

    /// Runs `redis-cli -p port args...` against any process of the group and returns its
    /// trimmed stdout; panics on an error reply.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let reply = self.try_cli(port, args);
        reply.unwrap_or_else(|e| panic!("redis-cli -p {port} {}: {e}", args.join(" ")))
    }

    /// Like [`SentinelGroup::cli`], returning an error reply or a failure to run as `Err`.
    pub fn try_cli(&self, port: u16, args: &[&str]) -> Result<String, String> {
        cli(port, args)
    }

    fn sentinel_port(&self, index: usize) -> u16 {
        let port = self.fleet.ports(Role::Sentinel).get(index).copied();
        port.unwrap_or_else(|| self.fleet.fail(&format!("no sentinel number {index}")))
    }

    fn running_sentinels(&self) -> Vec<u16> {
        let sentinels = self.fleet.ports(Role::Sentinel).into_iter();
        sentinels.filter(|&p| self.fleet.is_running(p)).collect()
    }

    /// Polls `check` until it passes, or panics with the logs after `timeout`.
    fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> Result<(), String>,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            match check() {
                Ok(()) => return,
                Err(reason) if Instant::now() >= deadline => self
                    .fleet
                    .fail(&format!("{what}: not within {timeout:?}: {reason}")),
                Err(_) => sleep(POLL_INTERVAL),
            }
        }
    }

    /// Whether the master on `master` has every replica online and each replica its link up.
    fn check_replication(&self, master: u16) -> Result<(), String> {
        let info = query_text(master, &["INFO", "replication"])?;
        let online = info
            .lines()
            .filter(|l| l.starts_with("slave") && l.contains("state=online"))
            .count();
        if online != self.replicas {
            return Err(format!("{online} of {} replicas online", self.replicas));
        }
        for port in self.server_ports().into_iter().filter(|&p| p != master) {
            let replication = query_text(port, &["INFO", "replication"])?;
            if !has_line(&replication, "master_link_status:up") {
                return Err(format!("replica {port} has no link to its master"));
            }
        }
        Ok(())
    }

    /// Whether every running sentinel sees the master up, with every running replica and the
    /// other running sentinels.
    fn check_sentinels(&self) -> Result<(), String> {
        let sentinels = self.running_sentinels();
        let replicas = self.server_ports().len().saturating_sub(1);
        for &port in &sentinels {
            let Reply::Array(fields) = query(port, &["SENTINEL", "MASTER", MASTER_NAME])? else {
                return Err(format!("sentinel {port}: no master {MASTER_NAME}"));
            };
            let field = |name: &str| {
                let at = fields
                    .iter()
                    .position(|f| matches!(f, Reply::Bulk(b) if b == name.as_bytes()));
                match at.and_then(|i| fields.get(i + 1)) {
                    Some(Reply::Bulk(value)) => String::from_utf8_lossy(value).into_owned(),
                    _ => String::new(),
                }
            };
            let (flags, slaves, others) = (
                field("flags"),
                field("num-slaves"),
                field("num-other-sentinels"),
            );
            if flags != "master"
                || slaves != replicas.to_string()
                || others != (sentinels.len() - 1).to_string()
            {
                return Err(format!(
                    "sentinel {port}: flags {flags}, {slaves} replicas, {others} other sentinels"
                ));
            }
        }
        Ok(())
    }
}

/// The master port that the sentinel on `port` reports.
pub fn reported_master(port: u16) -> Result<u16, String> {
    let reply = query(port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME])?;
    if let Reply::Array(fields) = &reply
        && let [Reply::Bulk(_host), Reply::Bulk(master)] = fields.as_slice()
        && let Ok(master) = String::from_utf8_lossy(master).parse()
    {
        return Ok(master);
    }
    Err(format!(
        "sentinel {port}: GET-MASTER-ADDR-BY-NAME replied {reply:?}"
    ))
}

/// The proxy's backend for `group`, with test-friendly timeouts: requests fail within 2 s, the
/// master is looked up again every second.
#[allow(dead_code)]
pub fn sentinel_backend(group: &SentinelGroup) -> respgate::config::BackendConfig {
    respgate::config::BackendConfig {
        kind: respgate::config::BackendKind::Sentinel,
        sentinels: group.sentinel_addrs(),
        master_name: MASTER_NAME.into(),
        request_timeout_ms: 2000,
        refresh_interval_ms: 1000,
        ..respgate::config::BackendConfig::default()
    }
}

/// One plain `redis-server` (no cluster mode, no replicas), killed on drop.
pub struct StandaloneServer {
    fleet: Fleet,
    /// Its port on 127.0.0.1.
    pub port: u16,
    args: Vec<String>,
}

impl StandaloneServer {
    /// Starts the server and waits until it answers.
    pub fn start() -> StandaloneServer {
        Self::start_with(&[])
    }

    /// Like [`StandaloneServer::start`], passing `args` (e.g. `&["--enable-debug-command",
    /// "yes"]`) after the harness's own.
    pub fn start_with(args: &[&str]) -> StandaloneServer {
        let mut fleet = Fleet::new("respgate-standalone-");
        let args: Vec<String> = args.iter().map(ToString::to_string).collect();
        let port = fleet.spawn_server(&args);
        StandaloneServer { fleet, port, args }
    }

    /// Kills the server (SIGKILL: nothing saved) and starts it again on the same port, empty.
    #[allow(dead_code)]
    pub fn restart(&mut self) {
        self.fleet.kill(self.port);
        if let Err(e) = self.fleet.launch(self.port, &self.args) {
            self.fleet.fail(&format!("restart of {}: {e}", self.port));
        }
    }

    /// `127.0.0.1:port`, as a backend's `address`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Runs `redis-cli` against the server and returns its trimmed stdout; panics on an error
    /// reply (with the server's log tail).
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args).unwrap_or_else(|e| {
            self.fleet.fail(&format!(
                "redis-cli -p {} {}: {e}",
                self.port,
                args.join(" ")
            ))
        })
    }
}

/// Runs `redis-cli -e -p port args...` on 127.0.0.1 and returns its trimmed stdout, or the error
/// reply or failure to run as `Err`.
pub fn cli(port: u16, args: &[&str]) -> Result<String, String> {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-e", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run redis-cli: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("{}{stdout}", stderr.trim()));
    }
    Ok(stdout)
}

/// Sends one command to 127.0.0.1:`port` on a fresh connection and reads its reply.
fn query(port: u16, args: &[&str]) -> Result<Reply, String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("{port}: {e}"))?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut frame = Vec::new();
    encode(&mut frame, args);
    (&stream)
        .write_all(&frame)
        .map_err(|e| format!("{port}: {e}"))?;
    read_reply(&mut std::io::BufReader::new(&stream))
}

/// Sends an `INFO`-like command and returns its bulk reply as text without `\r`.
fn query_text(port: u16, args: &[&str]) -> Result<String, String> {
    match query(port, args)? {
        Reply::Bulk(text) => Ok(String::from_utf8_lossy(&text).replace('\r', "")),
        other => Err(format!("{port} replied {other:?} to {args:?}")),
    }
}
