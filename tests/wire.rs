//! The wire layer end to end: replies Redis can produce that stress a framer (deep nesting,
//! RESP3 sets of maps, large arrays) and a large request sent slowly. Real client libraries
//! through the proxy are tests/clients.rs.
//!
//! The proxy runs as its own process (the built `respgate` binary), not in-process: a reply that
//! overflows a worker's stack aborts the process, and in-process that would take the whole test
//! binary down with it. Here it fails only the test that caused it, and the failure message says
//! how the proxy exited and quotes its log. The test's own reading side is a small iterative
//! RESP2/RESP3 framer written here, so what is tested never checks itself.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::RedisCluster;
use respgate::slot::Slot;

/// How long a test waits for one reply before calling it lost.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the proxy may take to serve every slot after it starts.
const PROXY_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of the proxy's log quoted when a test fails.
const LOG_TAIL_LINES: usize = 30;

/// The recursive script of Redis's own test suite ("Script return recursive object").
const RECURSIVE_EVAL: &str = "local a = {}; local b = {a}; a[1] = b; return a";
/// A script returning tables nested 100,000 deep.
const DEEP_EVAL: &str = "local top = {}; local at = top; \
    for i = 1, 100000 do local inner = {}; at[1] = inner; at = inner end; return top";

// ---------------------------------------------------------------------------------------------
// The proxy as a child process.

/// A `respgate` process in front of a cluster, killed on drop.
struct ProxyProcess {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ProxyProcess {
    /// Starts the binary with one worker thread (so every client shares the same backend
    /// connections) and waits until it serves every slot.
    fn start(seeds: &[String]) -> ProxyProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = common::free_port();
        let config = dir.path().join("respgate.toml");
        let seeds: Vec<String> = seeds.iter().map(|s| format!("{s:?}")).collect();
        let toml = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nthreads = 1\n\n\
             [clusters.default]\nseeds = [{}]\nconnections_per_node = 1\n\
             request_timeout_ms = 20000\nrefresh_interval_ms = 1000\n",
            seeds.join(", ")
        );
        std::fs::write(&config, toml).expect("write config");
        let log = dir.path().join("respgate.log");
        let stderr = std::fs::File::create(&log).expect("create log");
        let child = Command::new(env!("CARGO_BIN_EXE_respgate"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start the respgate binary");
        let mut proxy = ProxyProcess {
            child,
            port,
            log,
            _dir: dir,
        };
        proxy.wait_until_serving();
        proxy
    }

    fn wait_until_serving(&mut self) {
        let deadline = Instant::now() + PROXY_START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(mut client) = Client::try_connect(self.port) {
                let info = client.call(&[b"INFO", b"proxy"]).unwrap_or_default();
                if String::from_utf8_lossy(&info).contains("slots_served=16384")
                    && client.call(&[b"GET", b"probe"]).ok().as_deref() == Some(b"$-1\r\n")
                {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("respgate exited at startup ({status}); {}", self.log_tail());
            }
            sleep(Duration::from_millis(50));
        }
        panic!("respgate never served every slot; {}", self.state());
    }

    /// A new client connection.
    fn client(&mut self) -> Client {
        match Client::try_connect(self.port) {
            Ok(client) => client,
            Err(e) => panic!("cannot connect to the proxy: {e}; {}", self.state()),
        }
    }

    /// Whether the process still runs, or how it ended, and the end of its log: for failure
    /// messages.
    fn state(&mut self) -> String {
        // A process that is aborting closes its sockets before it is reaped: give it a moment.
        let deadline = Instant::now() + Duration::from_secs(2);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            sleep(Duration::from_millis(50));
        }
        let status = match self.child.try_wait() {
            Ok(None) => "the proxy process is still running".to_string(),
            Ok(Some(status)) => format!("the proxy process exited: {status}"),
            Err(e) => format!("the proxy process state is unknown: {e}"),
        };
        format!("{status}; {}", self.log_tail())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
        format!("its log ends with:\n{tail}")
    }

    /// Sends `args` on `client` and returns the reply, or fails the test saying what became of
    /// the proxy.
    fn call(&mut self, client: &mut Client, args: &[&[u8]], what: &str) -> Vec<u8> {
        match client.call(args) {
            Ok(reply) => reply,
            Err(e) => panic!("{what}: {e}; {}", self.state()),
        }
    }

    /// Reads the next reply on `client`, or fails the test saying what became of the proxy.
    fn reply(&mut self, client: &mut Client, what: &str) -> Vec<u8> {
        match client.reply() {
            Ok(reply) => reply,
            Err(e) => panic!("{what}: {e}; {}", self.state()),
        }
    }

    /// Fails unless the proxy still serves `client` and a new client: `PING`, `SET`, `GET`.
    fn assert_still_serves(&mut self, client: &mut Client, what: &str) {
        let context = format!("after {what}, the same client");
        assert_eq!(self.call(client, &[b"PING"], &context), b"+PONG\r\n");
        assert_eq!(
            self.call(client, &[b"SET", b"wire:after", b"still"], &context),
            b"+OK\r\n"
        );
        assert_eq!(
            self.call(client, &[b"GET", b"wire:after"], &context),
            b"$5\r\nstill\r\n"
        );
        let mut other = self.client();
        let context = format!("after {what}, another client");
        assert_eq!(self.call(&mut other, &[b"PING"], &context), b"+PONG\r\n");
        assert_eq!(
            self.call(&mut other, &[b"GET", b"wire:after"], &context),
            b"$5\r\nstill\r\n"
        );
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// A raw RESP client with its own framer.

/// A raw connection that sends commands and reads whole replies as the bytes received.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn try_connect(port: u16) -> std::io::Result<Client> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            buf: Vec::new(),
        })
    }

    /// A direct connection to a node, bypassing the proxy.
    fn direct(port: u16) -> Client {
        Client::try_connect(port).unwrap_or_else(|e| panic!("connect to node {port}: {e}"))
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(bytes)
            .map_err(|e| format!("write failed: {e}"))
    }

    /// Reads one complete reply (RESP2 or RESP3).
    fn reply(&mut self) -> Result<Vec<u8>, String> {
        let mut chunk = vec![0u8; 1 << 20];
        loop {
            if let Some(len) = frame_len(&self.buf)? {
                return Ok(self.buf.drain(..len).collect());
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(format!(
                        "connection closed with {} bytes of an incomplete reply received",
                        self.buf.len()
                    ));
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(format!(
                        "no complete reply within {REPLY_TIMEOUT:?} ({} bytes received)",
                        self.buf.len()
                    ));
                }
                Err(e) => return Err(format!("read failed: {e}")),
            }
        }
    }

    fn call(&mut self, args: &[&[u8]]) -> Result<Vec<u8>, String> {
        self.send(&encode(args))?;
        self.reply()
    }

    /// `HELLO 3`, checking the reply is a RESP3 map.
    fn hello3(&mut self) -> Result<(), String> {
        let reply = self.call(&[b"HELLO", b"3"])?;
        if reply.first() == Some(&b'%') {
            Ok(())
        } else {
            Err(format!("HELLO 3 answered {}", excerpt(&reply, 0)))
        }
    }
}

/// A command as a RESP multibulk.
fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The length of the first complete RESP2/RESP3 reply in `buf`, `Ok(None)` if more bytes are
/// needed. Iterative (a count of values still owed), so any depth frames in constant stack.
fn frame_len(buf: &[u8]) -> Result<Option<usize>, String> {
    let mut at = 0usize;
    let mut owed: u64 = 1;
    while owed > 0 {
        let Some(cr) = buf
            .get(at..)
            .and_then(|rest| rest.windows(2).position(|w| w == b"\r\n"))
        else {
            return Ok(None);
        };
        let kind = buf[at];
        let header = &buf[at + 1..at + cr];
        let start = at;
        let int = || -> Result<i64, String> {
            std::str::from_utf8(header)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("bad length {:?} at byte {start}", excerpt(header, 0)))
        };
        at += cr + 2;
        match kind {
            b'+' | b'-' | b':' | b',' | b'#' | b'(' | b'_' => owed -= 1,
            b'$' | b'=' | b'!' => {
                owed -= 1;
                let len = int()?;
                if len >= 0 {
                    let end = at + len as usize + 2;
                    if buf.len() < end {
                        return Ok(None);
                    }
                    if &buf[end - 2..end] != b"\r\n" {
                        return Err(format!("bulk at byte {start} not ended by CRLF"));
                    }
                    at = end;
                }
            }
            b'*' | b'~' | b'>' => {
                owed -= 1;
                owed += int()?.max(0) as u64;
            }
            b'%' => {
                owed -= 1;
                owed += 2 * int()?.max(0) as u64;
            }
            // Attributes precede the value they describe, which is still owed.
            b'|' => owed += 2 * int()?.max(0) as u64,
            other => {
                return Err(format!(
                    "unknown RESP type byte {:?} at byte {start}",
                    other as char
                ));
            }
        }
    }
    Ok(Some(at))
}

/// The elements of an aggregate reply (`*`, `~`, `%`: a map's keys and values in turn).
fn elements(reply: &[u8]) -> Vec<&[u8]> {
    let cr = reply
        .windows(2)
        .position(|w| w == b"\r\n")
        .expect("a header");
    let count: usize = std::str::from_utf8(&reply[1..cr]).unwrap().parse().unwrap();
    let count = if reply[0] == b'%' { 2 * count } else { count };
    let mut at = cr + 2;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let len = frame_len(&reply[at..])
            .expect("valid element")
            .expect("complete element");
        out.push(&reply[at..at + len]);
        at += len;
    }
    assert_eq!(at, reply.len(), "bytes after the last element");
    out
}

/// The text of a bulk string reply.
fn bulk_text(reply: &[u8]) -> String {
    let cr = reply.windows(2).position(|w| w == b"\r\n").unwrap();
    String::from_utf8_lossy(&reply[cr + 2..reply.len() - 2]).into_owned()
}

/// How many one-element arrays open `reply`, one inside the other.
fn nesting_depth(reply: &[u8]) -> usize {
    reply.chunks(4).take_while(|c| *c == b"*1\r\n").count()
}

/// Up to 60 bytes of `bytes` from `at`, escaped.
fn excerpt(bytes: &[u8], at: usize) -> String {
    let end = (at + 60).min(bytes.len());
    String::from_utf8_lossy(&bytes[at.min(end)..end])
        .escape_debug()
        .to_string()
}

/// Fails with where the replies first differ, without printing megabytes.
fn assert_same_reply(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "{what}: the proxy's reply ({} bytes) differs from the node's ({} bytes) at byte {at}:\n\
         proxy: {}\nnode:  {}",
        got.len(),
        want.len(),
        excerpt(got, at),
        excerpt(want, at)
    );
}

fn start() -> (RedisCluster, ProxyProcess) {
    let cluster = RedisCluster::start(3, 0);
    let proxy = ProxyProcess::start(&cluster.seeds());
    (cluster, proxy)
}

// ---------------------------------------------------------------------------------------------
// Deeply nested replies.

#[test]
fn recursive_eval_reply_reaches_the_client_unchanged_and_the_proxy_keeps_serving() {
    let (cluster, mut proxy) = start();
    let script: [&[u8]; 3] = [b"EVAL", RECURSIVE_EVAL.as_bytes(), b"0"];
    let want = Client::direct(cluster.master_ports()[0])
        .call(&script)
        .expect("direct EVAL");
    // Redis nests until its Lua stack limit, then ends the innermost level with an error.
    assert!(
        nesting_depth(&want) > 1000,
        "the node's reply is only {} deep: {}",
        nesting_depth(&want),
        excerpt(&want, 0)
    );
    let mut client = proxy.client();
    let mut bystander = proxy.client();
    assert_eq!(
        proxy.call(&mut bystander, &[b"PING"], "bystander"),
        b"+PONG\r\n"
    );
    let got = proxy.call(&mut client, &script, "the recursive EVAL through the proxy");
    assert_same_reply(&got, &want, "recursive EVAL");
    proxy.assert_still_serves(&mut client, "the recursive EVAL");
    proxy.assert_still_serves(&mut bystander, "the recursive EVAL (bystander)");
}

#[test]
fn reply_nested_100000_deep_reaches_the_client_as_the_node_sent_it() {
    let (cluster, mut proxy) = start();
    let script: [&[u8]; 3] = [b"EVAL", DEEP_EVAL.as_bytes(), b"0"];
    // Redis 7.0 stops at its Lua stack limit (about 8,000 levels) with an error: whatever it
    // sends, the proxy must send the same.
    let want = Client::direct(cluster.master_ports()[1])
        .call(&script)
        .expect("direct EVAL");
    assert!(
        nesting_depth(&want) > 1000,
        "the node's reply is only {} deep: {}",
        nesting_depth(&want),
        excerpt(&want, 0)
    );
    let mut client = proxy.client();
    let got = proxy.call(&mut client, &script, "the deep EVAL through the proxy");
    assert_same_reply(&got, &want, "EVAL nesting 100,000 tables");
    // RESP3 clients go over the proxy's RESP3 connections: the same reply through those.
    let mut direct3 = Client::direct(cluster.master_ports()[1]);
    direct3.hello3().expect("direct HELLO 3");
    let want3 = direct3.call(&script).expect("direct RESP3 EVAL");
    let mut client3 = proxy.client();
    if let Err(e) = client3.hello3() {
        panic!("HELLO 3 through the proxy: {e}; {}", proxy.state());
    }
    let got3 = proxy.call(&mut client3, &script, "the deep EVAL over RESP3");
    assert_same_reply(&got3, &want3, "EVAL nesting 100,000 tables, RESP3");
    proxy.assert_still_serves(&mut client, "the deep EVAL");
}

// ---------------------------------------------------------------------------------------------
// RESP3 COMMAND replies (sets of maps) on a shared connection.

/// Command names in a `COMMAND` reply, sorted.
fn command_names(reply: &[u8]) -> Vec<String> {
    let mut names: Vec<String> = elements(reply)
        .into_iter()
        .map(|entry| bulk_text(elements(entry)[0]))
        .collect();
    names.sort();
    names
}

/// Clients sending `GET`s in batches on the proxy until stopped; counts batches and failures.
struct Bystanders {
    stop: Arc<AtomicBool>,
    batches: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<Vec<String>>>,
}

impl Bystanders {
    /// One RESP3 and one RESP2 client, each sending `GET` for every key in `keys` (set to
    /// `v-<key>` beforehand) in pipelined batches.
    fn start(port: u16, keys: &[String]) -> Bystanders {
        let stop = Arc::new(AtomicBool::new(false));
        let batches = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for resp3 in [true, false] {
            let (stop, batches, keys) = (Arc::clone(&stop), Arc::clone(&batches), keys.to_vec());
            threads.push(std::thread::spawn(move || {
                let mut failures = Vec::new();
                let mut client = match Client::try_connect(port) {
                    Ok(client) => client,
                    Err(e) => return vec![format!("connect: {e}")],
                };
                if resp3 && let Err(e) = client.hello3() {
                    return vec![e];
                }
                while !stop.load(Ordering::Relaxed) && failures.len() < 10 {
                    for batch in keys.chunks(50) {
                        let mut out = Vec::new();
                        for key in batch {
                            out.extend(encode(&[b"GET", key.as_bytes()]));
                        }
                        if let Err(e) = client.send(&out) {
                            return vec![e];
                        }
                        for key in batch {
                            let want = format!("v-{key}");
                            match client.reply() {
                                Ok(reply)
                                    if reply
                                        == format!("${}\r\n{want}\r\n", want.len()).as_bytes() => {}
                                Ok(reply) => failures.push(format!(
                                    "GET {key} (resp3={resp3}) answered {}",
                                    excerpt(&reply, 0)
                                )),
                                Err(e) => {
                                    failures.push(format!("GET {key} (resp3={resp3}): {e}"));
                                    return failures;
                                }
                            }
                        }
                        batches.fetch_add(1, Ordering::Relaxed);
                    }
                }
                failures
            }));
        }
        Bystanders {
            stop,
            batches,
            threads,
        }
    }

    /// Stops the clients and returns every failure they saw.
    fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .flat_map(|t| {
                t.join()
                    .unwrap_or_else(|_| vec!["a bystander panicked".into()])
            })
            .collect()
    }
}

#[test]
fn resp3_command_replies_arrive_whole_and_other_clients_on_the_shared_connection_are_unaffected() {
    let (cluster, mut proxy) = start();
    let keys: Vec<String> = (0..300).map(|i| format!("wire:bystander:{i}")).collect();
    let mut setup = proxy.client();
    for key in &keys {
        let value = format!("v-{key}");
        let reply = proxy.call(
            &mut setup,
            &[b"SET", key.as_bytes(), value.as_bytes()],
            "SET",
        );
        assert_eq!(reply, b"+OK\r\n");
    }
    let mut direct = Client::direct(cluster.master_ports()[0]);
    direct.hello3().expect("direct HELLO 3");
    let want_info = direct
        .call(&[b"COMMAND", b"INFO", b"get"])
        .expect("COMMAND INFO");
    let want_all = direct.call(&[b"COMMAND"]).expect("COMMAND");
    let want_names = command_names(&want_all);
    assert!(want_names.len() > 100, "{} commands", want_names.len());

    let bystanders = Bystanders::start(proxy.port, &keys);
    let mut client = proxy.client();
    if let Err(e) = client.hello3() {
        panic!("HELLO 3 through the proxy: {e}; {}", proxy.state());
    }
    // Keyless: each goes to some master in turn, so three rounds reach every master. Problems
    // are collected, so a failure reports the other clients' fate too.
    let mut problems = Vec::new();
    for round in 0..3 {
        let info = match client.call(&[b"COMMAND", b"INFO", b"get"]) {
            Ok(info) => info,
            Err(e) => {
                problems.push(format!("COMMAND INFO get, round {round}: {e}"));
                break;
            }
        };
        if info != want_info {
            problems.push(format!(
                "COMMAND INFO get, round {round}: the proxy answered {} bytes, not the node's {}: {}",
                info.len(),
                want_info.len(),
                excerpt(&info, 0)
            ));
        }
        let all = match client.call(&[b"COMMAND"]) {
            Ok(all) => all,
            Err(e) => {
                problems.push(format!("COMMAND, round {round}: {e}"));
                break;
            }
        };
        // The order of commands is each node's own; the content is the same.
        if all.len() != want_all.len() || !all.starts_with(b"*") {
            problems.push(format!(
                "COMMAND, round {round}: the proxy answered {} bytes, not the node's {}: {}",
                all.len(),
                want_all.len(),
                excerpt(&all, 0)
            ));
        } else if command_names(&all) != want_names {
            problems.push(format!("COMMAND, round {round}: other command names"));
        }
    }
    let batches_during = bystanders.batches.load(Ordering::Relaxed);
    let failures = bystanders.finish();
    assert!(
        problems.is_empty() && failures.is_empty(),
        "through the proxy over RESP3: {problems:#?}\n\
         other clients' GETs meanwhile: {failures:#?}\n{}",
        proxy.state()
    );
    assert!(
        batches_during > 0,
        "the other clients sent nothing meanwhile"
    );
    proxy.assert_still_serves(&mut client, "RESP3 COMMAND");
}

// ---------------------------------------------------------------------------------------------
// Large requests and replies.

#[test]
fn request_of_400000_arguments_sent_slowly_in_small_pieces_gets_the_right_reply() {
    let (_cluster, mut proxy) = start();
    let elements = 400_000usize;
    let list = b"{wire}:slow-list".as_slice();
    let values: Vec<String> = (0..elements).map(|i| i.to_string()).collect();
    let mut args: Vec<&[u8]> = vec![b"RPUSH", list];
    args.extend(values.iter().map(String::as_bytes));
    let request = encode(&args);
    let mut client = proxy.client();
    // 1 KB at a time, a short pause every 32 KB: the proxy sees the request arrive in
    // thousands of partial reads, and the whole send still takes well under a few seconds.
    for (n, piece) in request.chunks(1024).enumerate() {
        if let Err(e) = client.send(piece) {
            panic!("sending piece {n}: {e}; {}", proxy.state());
        }
        if n % 32 == 31 {
            sleep(Duration::from_millis(2));
        }
    }
    let reply = match client.reply() {
        Ok(reply) => reply,
        Err(e) => panic!("RPUSH of {elements} elements: {e}; {}", proxy.state()),
    };
    assert_eq!(
        String::from_utf8_lossy(&reply),
        format!(":{elements}\r\n"),
        "RPUSH reply"
    );
    let all = proxy.call(&mut client, &[b"LRANGE", list, b"0", b"-1"], "LRANGE");
    let got = elements_of_bulks(&all);
    assert_eq!(got.len(), elements, "list length");
    if let Some(i) = (0..elements).find(|&i| got[i] != values[i]) {
        panic!("element {i} is {:?}, not {:?}", got[i], values[i]);
    }
    proxy.assert_still_serves(&mut client, "the slow large request");
}

/// The texts of an array of bulk strings.
fn elements_of_bulks(reply: &[u8]) -> Vec<String> {
    elements(reply).into_iter().map(bulk_text).collect()
}

#[test]
fn mget_of_100000_keys_across_slots_returns_every_value_in_order() {
    let (cluster, mut proxy) = start();
    let keys: Vec<String> = (0..100_000).map(|i| format!("wire:mget:{i}")).collect();
    // Every seventh key is left unset, so a value landing at the wrong position shows.
    let value = |i: usize| (i % 7 != 3).then(|| format!("value-{i}"));
    let mut client = proxy.client();
    for (batch_no, batch) in keys.chunks(1000).enumerate() {
        let mut out = Vec::new();
        let mut sent = 0;
        for (j, key) in batch.iter().enumerate() {
            if let Some(v) = value(batch_no * 1000 + j) {
                out.extend(encode(&[b"SET", key.as_bytes(), v.as_bytes()]));
                sent += 1;
            }
        }
        client.send(&out).unwrap();
        for _ in 0..sent {
            let reply = proxy.reply(&mut client, "pipelined SET");
            assert_eq!(reply, b"+OK\r\n");
        }
    }
    let slots: std::collections::HashSet<u16> = keys
        .iter()
        .map(|k| Slot::for_key(k.as_bytes()).get())
        .collect();
    assert!(slots.len() > 16_000, "the keys touch {} slots", slots.len());
    let mut args: Vec<&[u8]> = vec![b"MGET"];
    args.extend(keys.iter().map(String::as_bytes));
    let reply = proxy.call(&mut client, &args, "MGET of 100,000 keys");
    let got = elements(&reply);
    assert_eq!(got.len(), keys.len(), "MGET answered {} values", got.len());
    for (i, element) in got.iter().enumerate() {
        let want = match value(i) {
            Some(v) => format!("${}\r\n{v}\r\n", v.len()).into_bytes(),
            None => b"$-1\r\n".to_vec(),
        };
        assert!(
            *element == want.as_slice(),
            "value {i} ({}) is {}, not {}",
            keys[i],
            excerpt(element, 0),
            excerpt(&want, 0)
        );
    }
    // The cluster really holds them: every master has its share.
    for port in cluster.master_ports() {
        let n: u64 = cluster.cli(port, &["DBSIZE"]).parse().expect("DBSIZE");
        assert!(n > 20_000, "master {port} holds {n} keys");
    }
}
