//! The binary on SIGTERM (issue 15, item 6): `/ready` turns false at once, the listener keeps
//! accepting for `shutdown_delay_ms`, then closes; a client mid-pipeline gets every reply, an
//! idle one is closed, and the process exits by `shutdown_timeout_ms` even while a client
//! waits on a blocking command. And `--log-format json` (item 5).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::RedisCluster;
use common::http::try_get;
use common::proxy::Raw;

/// The respgate binary, killed on drop if still running.
struct Binary {
    child: Child,
    port: u16,
    admin: u16,
    _dir: tempfile::TempDir,
}

impl Binary {
    /// Starts the binary in front of `seeds` with `extra` lines in `[server]` and `args`.
    fn start(seeds: &[String], extra: &str, args: &[&str]) -> Binary {
        let (port, admin) = (common::free_port(), common::free_port());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("respgate.toml");
        let seeds: Vec<String> = seeds.iter().map(|s| format!("\"{s}\"")).collect();
        std::fs::write(
            &path,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\nthreads = 1\n{extra}\n[backends.default]\nseeds = [{}]\nrefresh_interval_ms = 1000\n",
                seeds.join(",")
            ),
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_respgate"))
            .arg("--config")
            .arg(&path)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Binary {
            child,
            port,
            admin,
            _dir: dir,
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal}");
    }

    /// Waits until `/ready` answers `status` (at most 30 s).
    fn wait_ready(&self, status: u16) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((got, body)) = try_get(self.admin, "/ready")
                && got == status
            {
                return body;
            }
            assert!(Instant::now() < deadline, "/ready never answered {status}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit (at most `limit`); its status code.
    fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "respgate did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sigterm_unreadies_at_once_accepts_through_the_delay_then_drains_and_exits() {
    let cluster = RedisCluster::start(3, 0);
    let mut proxy = Binary::start(
        &cluster.seeds(),
        "shutdown_delay_ms = 5000\nshutdown_timeout_ms = 12000",
        &[],
    );
    assert_eq!(proxy.wait_ready(200), "ready\n");
    let mut idle = Raw::connect(proxy.port);
    assert_eq!(idle.command(&["PING"]), b"+PONG\r\n");
    // A client blocked on a list nobody pushes to: only the deadline ends it.
    let mut blocked = Raw::connect(proxy.port);
    let mut blpop = bytes::BytesMut::new();
    respgate::protocol::request::encode_command(&mut blpop, &["BLPOP", "drain:never", "0"]);
    blocked.send(&blpop);
    // A client mid-pipeline: 2,000 requests sent, no reply read yet.
    let mut pipelined = Raw::connect(proxy.port);
    let mut pipeline = bytes::BytesMut::new();
    for i in 0..2000 {
        respgate::protocol::request::encode_command(
            &mut pipeline,
            &["SET", &format!("drain:{i}"), "v"],
        );
    }
    pipelined.send(&pipeline);

    proxy.signal("-TERM");
    assert_eq!(proxy.wait_ready(503), "shutting down\n");
    // Still accepting during the delay: the load balancer may send a client yet.
    let mut late = Raw::connect(proxy.port);
    // Its own key: the pipeline's SETs may not all have run yet.
    assert_eq!(late.command(&["SET", "drain:late", "v"]), b"+OK\r\n");
    assert_eq!(late.command(&["GET", "drain:late"]), b"$1\r\nv\r\n");
    for i in 0..2000 {
        assert_eq!(pipelined.reply(), b"+OK\r\n", "reply {i} of the pipeline");
    }
    // Then the listener closes.
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", proxy.port)).is_ok() {
        assert!(Instant::now() < deadline, "the listener never closed");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Idle clients are closed between requests; the blocked one at the deadline, when the
    // process exits.
    assert!(idle.is_closed(), "the idle client is closed");
    assert!(late.is_closed(), "the late client is closed once answered");
    assert_eq!(proxy.wait_exit(Duration::from_secs(30)), Some(0));
    assert!(blocked.is_closed());
}

#[test]
fn log_format_json_prints_one_json_object_per_line() {
    let cluster = RedisCluster::start(3, 0);
    let mut proxy = Binary::start(
        &cluster.seeds(),
        "shutdown_delay_ms = 0\nshutdown_timeout_ms = 2000",
        &["--log-format", "json"],
    );
    proxy.wait_ready(200);
    proxy.signal("-TERM");
    proxy.wait_exit(Duration::from_secs(30));
    let mut stderr = String::new();
    proxy
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let lines: Vec<serde_json::Value> = BufReader::new(stderr.as_bytes())
        .lines()
        .map(|line| {
            let line = line.unwrap();
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
        })
        .collect();
    let find = |message: &str| {
        lines
            .iter()
            .find(|l| l["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} in {stderr}"))
    };
    let listening = find("listening");
    assert_eq!(listening["level"], "INFO");
    assert_eq!(listening["listen"], format!("127.0.0.1:{}", proxy.port));
    assert!(listening["timestamp"].is_string());
    let changed = find("topology changed");
    assert_eq!(changed["backend"], "default");
    assert_eq!(changed["masters"], 3);
    find("ready: every backend serves the slots routed to it");
    find("shutdown: stopped accepting; draining clients");
}
