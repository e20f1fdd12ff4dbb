//! The proxy's own slow log: requests whose reply took at least
//! `server.slowlog_log_slower_than_us` from reading the request to the reply being ready, the
//! newest `server.slowlog_max_len` kept, each with the backend and node it went to. `SLOWLOG
//! GET/LEN/RESET/HELP` read it as Redis's read Redis's.
//!
//! `CONFIG SET slowlog-log-slower-than` and `slowlog-max-len` through the proxy, once every node
//! has taken them, govern this log too, as they govern one Redis's: each stays in force until a
//! reload changes that key's value in the configuration (the file then speaks last).
//!
//! Only requests sent to a backend are timed; a reply the proxy makes itself (`PING`, `AUTH`,
//! `CLIENT ...`) takes no time worth logging, and never logs a password.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;

use crate::protocol::reply::{self, ReplyBuf};
use crate::protocol::request::parse_int;
use crate::protocol::{Protocol, RequestParser};

/// Most arguments kept of one request, as Redis (the last kept says how many more there were).
const MAX_ARGS: usize = 32;
/// Most bytes kept of one argument, as Redis (then how many more there were).
const MAX_ARG_BYTES: usize = 128;

/// `SLOWLOG HELP`, as Redis 7 answers it.
const HELP: &[&str] = &[
    "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GET [<count>]",
    "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
    "    Entries are made of:",
    "    id, timestamp, time in microseconds, arguments array, client IP and port,",
    "    client name",
    "LEN",
    "    Return the length of the slowlog.",
    "RESET",
    "    Reset the slowlog.",
    "HELP",
    "    Print this help.",
];

/// One slow request.
#[derive(Debug, Clone)]
pub struct SlowEntry {
    /// Increasing id, as Redis's.
    pub id: u64,
    /// When it was logged, in seconds since the Unix epoch.
    pub unix_s: u64,
    /// How long it took, in microseconds.
    pub duration_us: u64,
    /// The command and its arguments, trimmed as Redis trims them.
    pub args: Vec<Bytes>,
    /// The client's `ip:port`.
    pub client_addr: String,
    /// The client's name (`CLIENT SETNAME`), empty when none.
    pub client_name: Bytes,
    /// The backend it went to.
    pub backend: String,
    /// The node it went to last (`host:port`), empty when it went to several (a split, a fan
    /// out) or to a client's own connection.
    pub node: String,
}

/// What one request leaves for the slow log, if it was slow.
#[derive(Debug)]
pub struct SlowRequest<'a> {
    /// The request as the client sent it (RESP).
    pub raw: &'a [u8],
    /// The client's address.
    pub client_addr: String,
    /// The client's name.
    pub client_name: Bytes,
    /// The backend.
    pub backend: &'a str,
    /// The node, if one.
    pub node: Option<&'a str>,
}

/// How slow a request must be to be logged, and how many are kept: from the configuration in
/// force, so a reload changes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlowLogLimits {
    /// Microseconds at or above which a request is logged; negative logs none, 0 logs all.
    pub threshold_us: i64,
    /// Entries kept, the newest.
    pub max_len: usize,
}

impl SlowLogLimits {
    /// The limits `server` sets.
    pub fn of(server: &crate::config::ServerConfig) -> Self {
        SlowLogLimits {
            threshold_us: server.slowlog_log_slower_than_us,
            max_len: server.slowlog_max_len,
        }
    }

    /// Whether a request that took `elapsed` goes in the log (with a length of 0 it goes in
    /// and empties it, as in Redis).
    #[inline]
    pub fn is_slow(&self, elapsed: Duration) -> bool {
        self.threshold_us >= 0
            && i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX) >= self.threshold_us
    }
}

/// A value `CONFIG SET` gave, in force while the configuration's own value is the one that was
/// in force when it was set.
#[derive(Debug, Default)]
struct Override {
    set: AtomicBool,
    value: AtomicI64,
    /// The configuration's value when it was set.
    under: AtomicI64,
}

impl Override {
    fn put(&self, value: i64, configured: i64) {
        self.value.store(value, Ordering::Relaxed);
        self.under.store(configured, Ordering::Relaxed);
        self.set.store(true, Ordering::Release);
    }

    /// The value in force, `configured` being the configuration's.
    #[inline]
    fn over(&self, configured: i64) -> i64 {
        if !self.set.load(Ordering::Acquire) {
            return configured;
        }
        if self.under.load(Ordering::Relaxed) != configured {
            // A reload changed the key: the file speaks last, for good.
            self.set.store(false, Ordering::Relaxed);
            return configured;
        }
        self.value.load(Ordering::Relaxed)
    }
}

/// The newest slow requests.
#[derive(Debug, Default)]
pub struct SlowLog {
    entries: Mutex<VecDeque<SlowEntry>>,
    next_id: AtomicU64,
    /// `slowlog-log-slower-than` from `CONFIG SET`.
    threshold_us: Override,
    /// `slowlog-max-len` from `CONFIG SET`.
    max_len: Override,
}

impl SlowLog {
    /// The limits in force under `server`, the configuration a request runs under: its own,
    /// or what `CONFIG SET` gave since.
    #[inline]
    pub fn limits(&self, server: &crate::config::ServerConfig) -> SlowLogLimits {
        let configured = SlowLogLimits::of(server);
        let max_len = i64::try_from(configured.max_len).unwrap_or(i64::MAX);
        SlowLogLimits {
            threshold_us: self.threshold_us.over(configured.threshold_us),
            max_len: usize::try_from(self.max_len.over(max_len)).unwrap_or(configured.max_len),
        }
    }

    /// Takes the slow log's settings among the `name value` pairs of a `CONFIG SET` every
    /// node accepted (so each value is one Redis takes), `server` being the configuration in
    /// force. Names are matched as Redis matches them, without regard to case.
    pub fn config_set(&self, pairs: &[Bytes], server: &crate::config::ServerConfig) {
        let configured = SlowLogLimits::of(server);
        for pair in pairs.chunks_exact(2) {
            let (Some(name), Some(value)) = (pair.first(), pair.get(1).and_then(|v| parse_int(v)))
            else {
                continue;
            };
            if name.eq_ignore_ascii_case(b"slowlog-log-slower-than") {
                self.threshold_us.put(value, configured.threshold_us);
            } else if name.eq_ignore_ascii_case(b"slowlog-max-len") && value >= 0 {
                let max_len = i64::try_from(configured.max_len).unwrap_or(i64::MAX);
                self.max_len.put(value, max_len);
            }
        }
        // Redis trims its log after every command while the log is on, this `CONFIG SET`
        // among them.
        let limits = self.limits(server);
        if limits.threshold_us >= 0 {
            self.lock().truncate(limits.max_len);
        }
    }
    /// Logs `request`, which took `elapsed`, keeping the newest `limits.max_len`.
    pub fn push(&self, request: SlowRequest<'_>, elapsed: Duration, limits: SlowLogLimits) {
        let entry = SlowEntry {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            unix_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            duration_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            args: trimmed_args(request.raw),
            client_addr: request.client_addr,
            client_name: request.client_name,
            backend: request.backend.to_string(),
            node: request.node.unwrap_or_default().to_string(),
        };
        let mut entries = self.lock();
        entries.push_front(entry);
        entries.truncate(limits.max_len);
    }

    /// Entries logged now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is logged.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// The newest `count` entries, newest first.
    pub fn newest(&self, count: usize) -> Vec<SlowEntry> {
        self.lock().iter().take(count).cloned().collect()
    }

    /// Forgets every entry.
    pub fn reset(&self) {
        self.lock().clear();
    }

    /// The reply to `SLOWLOG ...` (`args` with the command name first); `None` leaves the
    /// request to the backend's command table, which answers a wrong argument count or an
    /// unknown subcommand with Redis's own error.
    pub fn command(&self, args: &[Bytes], protocol: Protocol) -> Option<Bytes> {
        let sub = args.get(1)?;
        let mut out = ReplyBuf::new(protocol);
        match (args.len(), sub.to_ascii_lowercase().as_slice()) {
            (2, b"help") => {
                out.array(HELP.len());
                for line in HELP {
                    out.simple(line);
                }
            }
            (2, b"len") => {
                out.integer(i64::try_from(self.len()).unwrap_or(i64::MAX));
            }
            (2, b"reset") => {
                self.reset();
                out.simple("OK");
            }
            (2 | 3, b"get") => {
                let count = match args.get(2).map(|c| parse_int(c)) {
                    None => 10,
                    Some(Some(-1)) => usize::MAX,
                    Some(Some(n)) if n >= 0 => usize::try_from(n).unwrap_or(usize::MAX),
                    Some(_) => {
                        return Some(reply::error(
                            "ERR count should be greater than or equal to -1",
                        ));
                    }
                };
                let entries = self.newest(count);
                out.array(entries.len());
                for e in &entries {
                    // Redis's six fields, then the backend and the node: clients read the
                    // first six by position and leave the rest.
                    out.array(8)
                        .integer(i64::try_from(e.id).unwrap_or(i64::MAX))
                        .integer(i64::try_from(e.unix_s).unwrap_or(i64::MAX))
                        .integer(i64::try_from(e.duration_us).unwrap_or(i64::MAX))
                        .array(e.args.len());
                    for arg in &e.args {
                        out.bulk(arg);
                    }
                    out.bulk(e.client_addr.as_bytes())
                        .bulk(&e.client_name)
                        .bulk(e.backend.as_bytes())
                        .bulk(e.node.as_bytes());
                }
            }
            (_, b"get") => {
                return Some(reply::error(&format!(
                    "ERR unknown subcommand or wrong number of arguments for '{}'. Try SLOWLOG HELP.",
                    String::from_utf8_lossy(sub)
                )));
            }
            _ => return None,
        }
        Some(out.finish())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<SlowEntry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The arguments of the RESP request `raw`, trimmed as Redis trims a slow log entry's.
fn trimmed_args(raw: &[u8]) -> Vec<Bytes> {
    let mut buf = bytes::BytesMut::from(raw);
    let args = match RequestParser::new(u64::MAX, u64::MAX).parse(&mut buf) {
        Ok(Some(request)) => request.args,
        _ => return vec![Bytes::from_static(b"(unreadable request)")],
    };
    let argc = args.len();
    let kept = argc.min(MAX_ARGS);
    let mut out = Vec::with_capacity(kept);
    for (i, arg) in args.into_iter().take(kept).enumerate() {
        if i == MAX_ARGS - 1 && argc > MAX_ARGS {
            out.push(Bytes::from(format!(
                "... ({} more arguments)",
                argc - MAX_ARGS + 1
            )));
        } else if arg.len() > MAX_ARG_BYTES {
            let mut cut = arg.slice(..MAX_ARG_BYTES).to_vec();
            cut.extend_from_slice(
                format!("... ({} more bytes)", arg.len() - MAX_ARG_BYTES).as_bytes(),
            );
            out.push(Bytes::from(cut));
        } else {
            out.push(arg);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::protocol::request::encode_command;

    fn raw(args: &[&str]) -> Vec<u8> {
        let mut out = bytes::BytesMut::new();
        encode_command(&mut out, args);
        out.to_vec()
    }

    #[test]
    fn long_requests_are_trimmed_as_redis_trims_them() {
        let long = "x".repeat(130);
        let args = trimmed_args(&raw(&["SET", "k", &long]));
        assert_eq!(
            &args[2][..],
            format!("{}... (2 more bytes)", "x".repeat(128)).as_bytes()
        );
        let many: Vec<String> = (0..40).map(|i| i.to_string()).collect();
        let mut cmd = vec!["DEL"];
        cmd.extend(many.iter().map(String::as_str));
        let args = trimmed_args(&raw(&cmd));
        assert_eq!(args.len(), 32);
        assert_eq!(&args[31][..], b"... (10 more arguments)");
    }

    #[test]
    fn config_set_holds_until_a_reload_changes_the_key() {
        let log = SlowLog::default();
        let mut server = crate::config::ServerConfig::default();
        let pairs = |a: &[&str]| {
            a.iter()
                .map(|s| Bytes::from(s.to_string()))
                .collect::<Vec<_>>()
        };
        log.config_set(
            &pairs(&[
                "SLOWLOG-LOG-SLOWER-THAN",
                "0",
                "maxmemory",
                "1",
                "slowlog-max-len",
                "3",
            ]),
            &server,
        );
        assert_eq!(
            log.limits(&server),
            SlowLogLimits {
                threshold_us: 0,
                max_len: 3
            }
        );
        // A reload that changes the threshold in the file: the file's value is in force, and
        // stays so; the length, unchanged in the file, keeps what CONFIG SET gave.
        server.slowlog_log_slower_than_us = 5;
        assert_eq!(log.limits(&server).threshold_us, 5);
        assert_eq!(log.limits(&server).max_len, 3);
        server.slowlog_log_slower_than_us = 10_000;
        assert_eq!(log.limits(&server).threshold_us, 10_000);
    }

    #[test]
    fn newest_first_within_the_length_and_threshold() {
        let log = SlowLog::default();
        let limits = SlowLogLimits {
            threshold_us: 1000,
            max_len: 2,
        };
        assert!(!limits.is_slow(Duration::from_micros(999)));
        assert!(limits.is_slow(Duration::from_micros(1000)));
        for key in ["a", "b", "c"] {
            let raw = raw(&["GET", key]);
            log.push(
                SlowRequest {
                    raw: &raw,
                    client_addr: "127.0.0.1:1".into(),
                    client_name: Bytes::new(),
                    backend: "default",
                    node: Some("127.0.0.1:7000"),
                },
                Duration::from_millis(2),
                limits,
            );
        }
        let newest = log.newest(10);
        assert_eq!(newest.len(), 2);
        assert_eq!(&newest[0].args[1][..], b"c");
        assert_eq!(newest[0].id, 2);
        let off = SlowLogLimits {
            threshold_us: -1,
            max_len: 128,
        };
        assert!(!off.is_slow(Duration::from_secs(9)));
    }
}
