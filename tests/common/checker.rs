//! A write-consistency checker in the spirit of the one in the Redis Cluster tutorial: clients
//! `INCR` counters through the proxy while a test breaks the cluster, remembering which
//! increments were acknowledged; at the end every counter is read back and compared.
//!
//! For one counter, with `acked` increments acknowledged and `unknown` whose outcome is unknown
//! (an error reply or an I/O error after sending), the value read back must lie in
//! `acked ..= acked + unknown`. Below it, acknowledged writes were **lost**; above it, some
//! write was applied twice (**duplicated**): the proxy must never cause the latter.
//!
//! ```ignore
//! let checker = Checker::start(proxy.port, 8, 1000);
//! // ... break the cluster ...
//! let report = checker.stop();
//! println!("{report}");
//! assert_eq!(report.duplicated, 0, "{report}");
//! ```

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long one client waits for a reply before it counts the `INCR` as unknown and reconnects.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one client waits to connect to the proxy.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after an error, as a real client would back off; also bounds the error log's growth.
const ERROR_PAUSE: Duration = Duration::from_millis(10);
/// Errors further apart than this belong to different error windows.
const WINDOW_GAP: Duration = Duration::from_millis(500);
/// How long [`Checker::stop`] keeps trying to read the counters back.
const READ_BACK_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest error text kept in the one-line report.
const MESSAGE_CHARS: usize = 140;

/// The name of counter `i`: plain keys, so 1000 counters spread over the slots of every master.
pub fn counter_key(i: usize) -> String {
    format!("ctr:{i}")
}

/// One error a client saw, from the proxy or from its connection to it.
#[derive(Debug, Clone)]
pub struct ErrorEvent {
    /// When the client saw it.
    pub at: Instant,
    /// The error as the client library printed it.
    pub message: String,
}

/// A run of errors with no gap longer than [`WINDOW_GAP`] between two of them.
#[derive(Debug, Clone)]
pub struct ErrorWindow {
    /// The first error of the run.
    pub first: ErrorEvent,
    /// The last error of the run.
    pub last: ErrorEvent,
    /// Errors in the run.
    pub count: usize,
}

impl ErrorWindow {
    /// Time from the first to the last error of the run.
    pub fn duration(&self) -> Duration {
        self.last.at.duration_since(self.first.at)
    }
}

/// What one client thread did.
struct ClientLog {
    /// Acknowledged `INCR`s, per counter.
    acked: Vec<u64>,
    /// `INCR`s with an unknown outcome, per counter.
    unknown: Vec<u64>,
    errors: Vec<ErrorEvent>,
    last_ack: Option<Instant>,
    /// The longest time between two acknowledgements (or from the start to the first).
    longest_stall: Duration,
    /// Every acknowledged `INCR`: counter, the value it returned, when.
    replies: Vec<(usize, i64, Instant)>,
}

/// Clients writing counters through the proxy until [`Checker::stop`].
pub struct Checker {
    port: u16,
    counters: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    started: Instant,
    threads: Vec<JoinHandle<ClientLog>>,
}

impl Checker {
    /// Starts `clients` threads, each with its own connection to the proxy on `proxy_port`,
    /// incrementing random counters among `counters`.
    pub fn start(proxy_port: u16, clients: usize, counters: usize) -> Checker {
        assert!(counters > 0, "the checker needs at least one counter");
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let threads = (0..clients)
            .map(|id| {
                let (stop, acked) = (Arc::clone(&stop), Arc::clone(&acked));
                thread::Builder::new()
                    .name(format!("checker-{id}"))
                    .spawn(move || run_client(id, proxy_port, counters, &stop, &acked))
                    .expect("spawn a checker thread")
            })
            .collect();
        Checker {
            port: proxy_port,
            counters,
            stop,
            acked,
            started,
            threads,
        }
    }

    /// When the clients started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// `INCR`s acknowledged so far, by all clients.
    pub fn acked_so_far(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Stops the clients (each finishes its current request, bounded by the read timeout), reads
    /// every counter back through the proxy and compares.
    pub fn stop(mut self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        let stopped = Instant::now();
        let logs: Vec<ClientLog> = std::mem::take(&mut self.threads)
            .into_iter()
            .map(|thread| thread.join().expect("a checker thread panicked"))
            .collect();
        let values = read_back(self.port, self.counters);

        let mut report = Report {
            clients: logs.len(),
            duration: stopped.duration_since(self.started),
            started: self.started,
            stopped,
            acked: 0,
            unknown: 0,
            lost: 0,
            duplicated: 0,
            counters_lost: 0,
            counters_duplicated: 0,
            max_client_idle: Duration::ZERO,
            longest_stall: Duration::ZERO,
            errors: Vec::new(),
            lost_acks: lost_acks(&logs, &values),
        };
        for log in &logs {
            report.acked += log.acked.iter().sum::<u64>();
            report.unknown += log.unknown.iter().sum::<u64>();
            report.errors.extend(log.errors.iter().cloned());
            let idle = log
                .last_ack
                .map_or(report.duration, |at| stopped.saturating_duration_since(at));
            report.max_client_idle = report.max_client_idle.max(idle);
            report.longest_stall = report.longest_stall.max(log.longest_stall.max(idle));
        }
        report.errors.sort_by_key(|e| e.at);
        for (i, &value) in values.iter().enumerate() {
            let acked: u64 = logs.iter().map(|log| log.acked[i]).sum();
            let unknown: u64 = logs.iter().map(|log| log.unknown[i]).sum();
            if value < acked {
                report.lost += acked - value;
                report.counters_lost += 1;
            }
            if value > acked + unknown {
                report.duplicated += value - (acked + unknown);
                report.counters_duplicated += 1;
            }
        }
        report
    }
}

impl Drop for Checker {
    /// Tells the clients to stop when a test panics before [`Checker::stop`]; they end on their
    /// own within the read timeout.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One client: `INCR` a random counter, note the outcome, repeat until told to stop.
fn run_client(
    id: usize,
    port: u16,
    counters: usize,
    stop: &AtomicBool,
    acked_total: &AtomicU64,
) -> ClientLog {
    let mut log = ClientLog {
        acked: vec![0; counters],
        unknown: vec![0; counters],
        errors: Vec::new(),
        last_ack: None,
        longest_stall: Duration::ZERO,
        replies: Vec::new(),
    };
    let started = Instant::now();
    let mut random = Random::new(id);
    let mut conn: Option<redis::Connection> = None;
    let error = |log: &mut ClientLog, message: String| {
        log.errors.push(ErrorEvent {
            at: Instant::now(),
            message,
        });
        thread::sleep(ERROR_PAUSE);
    };
    while !stop.load(Ordering::Relaxed) {
        let connection = match conn.as_mut() {
            Some(connection) => connection,
            None => match connect(port) {
                Ok(connection) => conn.insert(connection),
                Err(e) => {
                    // Nothing was sent: an error, but no unknown outcome.
                    error(&mut log, format!("connect: {e}"));
                    continue;
                }
            },
        };
        let counter = random.below(counters);
        match redis::cmd("INCR")
            .arg(counter_key(counter))
            .query::<i64>(connection)
        {
            Ok(value) => {
                let now = Instant::now();
                log.acked[counter] += 1;
                let since = now.duration_since(log.last_ack.unwrap_or(started));
                log.longest_stall = log.longest_stall.max(since);
                log.last_ack = Some(now);
                log.replies.push((counter, value, now));
                acked_total.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                log.unknown[counter] += 1;
                // A timeout or a broken connection leaves the connection unusable: a late reply
                // would be taken for the next command's.
                if e.is_io_error() || e.is_unrecoverable_error() || e.is_timeout() {
                    conn = None;
                }
                error(&mut log, e.to_string());
            }
        }
    }
    log
}

fn connect(port: u16) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let conn = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
    conn.set_read_timeout(Some(READ_TIMEOUT))?;
    conn.set_write_timeout(Some(READ_TIMEOUT))?;
    Ok(conn)
}

/// Every counter's value (0 when absent), read through the proxy in one pipeline, retried with
/// a fresh connection until it works or [`READ_BACK_TIMEOUT`] passes.
fn read_back(port: u16, counters: usize) -> Vec<u64> {
    let deadline = Instant::now() + READ_BACK_TIMEOUT;
    let mut pipe = redis::pipe();
    for i in 0..counters {
        pipe.cmd("GET").arg(counter_key(i));
    }
    loop {
        let attempt = connect(port).and_then(|mut conn| pipe.query::<Vec<Option<u64>>>(&mut conn));
        match attempt {
            Ok(values) => return values.into_iter().map(Option::unwrap_or_default).collect(),
            Err(e) if Instant::now() < deadline => {
                eprintln!("checker: reading the counters back failed, retrying: {e}");
                thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("checker: cannot read the counters back through the proxy: {e}"),
        }
    }
}

/// What the clients saw and what the cluster holds at the end.
#[derive(Debug)]
pub struct Report {
    /// Client threads.
    pub clients: usize,
    /// Time under load, from start to the stop signal.
    pub duration: Duration,
    /// When the load started.
    pub started: Instant,
    /// When the stop signal was given.
    pub stopped: Instant,
    /// `INCR`s acknowledged with an integer reply.
    pub acked: u64,
    /// `INCR`s answered with an error or lost to an I/O error: they may or may not have run.
    pub unknown: u64,
    /// Acknowledged increments missing from the counters.
    pub lost: u64,
    /// Increments in the counters beyond every acknowledged and unknown one.
    pub duplicated: u64,
    /// Counters with lost increments.
    pub counters_lost: usize,
    /// Counters with duplicated increments.
    pub counters_duplicated: usize,
    /// The longest time any client went without an acknowledgement before the stop signal.
    pub max_client_idle: Duration,
    /// The longest time any client went without an acknowledgement: how long the cluster was
    /// unavailable to it, whether it saw errors or waited.
    pub longest_stall: Duration,
    /// Every error any client saw, in time order.
    pub errors: Vec<ErrorEvent>,
    /// Acknowledged increments that provably did not survive, in time order.
    pub lost_acks: Vec<LostAck>,
}

/// An acknowledged `INCR` whose effect is gone: a later `INCR` of the same counter returned the
/// same value, so the cluster had forgotten this one by then (or the value exceeds the final one).
#[derive(Debug, Clone)]
pub struct LostAck {
    /// The counter's key.
    pub key: String,
    /// The value the lost `INCR` returned.
    pub value: i64,
    /// When it was acknowledged.
    pub acked_at: Instant,
    /// When a later `INCR` returned the same value, if one did.
    pub repeated_at: Option<Instant>,
}

/// Finds the acknowledged increments that were forgotten. `INCR` returns the counter's new
/// value, so while nothing is lost every acknowledged reply of a counter is different: a value
/// returned twice means the state that produced the first reply was lost before the second.
fn lost_acks(logs: &[ClientLog], values: &[u64]) -> Vec<LostAck> {
    let mut by_counter: Vec<Vec<(i64, Instant)>> = vec![Vec::new(); values.len()];
    for &(counter, value, at) in logs.iter().flat_map(|log| &log.replies) {
        by_counter[counter].push((value, at));
    }
    let mut lost = Vec::new();
    for (counter, replies) in by_counter.iter_mut().enumerate() {
        replies.sort_by_key(|&(value, at)| (value, at));
        let final_value = i64::try_from(values[counter]).unwrap_or(i64::MAX);
        for (i, &(value, at)) in replies.iter().enumerate() {
            let next = replies.get(i + 1).filter(|&&(v, _)| v == value);
            if next.is_some() || value > final_value {
                lost.push(LostAck {
                    key: counter_key(counter),
                    value,
                    acked_at: at,
                    repeated_at: next.map(|&(_, again)| again),
                });
            }
        }
    }
    lost.sort_by_key(|l| l.acked_at);
    lost
}

impl Report {
    /// Errors the clients saw (error replies, I/O errors, failed connects).
    pub fn error_count(&self) -> usize {
        self.errors.len()
    }

    /// Acknowledged `INCR`s per second under load.
    pub fn ops_per_sec(&self) -> f64 {
        self.acked as f64 / self.duration.as_secs_f64().max(f64::EPSILON)
    }

    /// The runs of errors with no gap longer than [`WINDOW_GAP`], in time order.
    pub fn error_windows(&self) -> Vec<ErrorWindow> {
        let mut windows: Vec<ErrorWindow> = Vec::new();
        for event in &self.errors {
            match windows.last_mut() {
                Some(window) if event.at.duration_since(window.last.at) <= WINDOW_GAP => {
                    window.last = event.clone();
                    window.count += 1;
                }
                _ => windows.push(ErrorWindow {
                    first: event.clone(),
                    last: event.clone(),
                    count: 1,
                }),
            }
        }
        windows
    }

    /// The longest run of errors, if there was any error.
    pub fn longest_error_window(&self) -> Option<ErrorWindow> {
        self.error_windows()
            .into_iter()
            .max_by_key(|w| (w.duration(), w.count))
    }

    /// Milliseconds from the first to the last error of the longest run; 0 without errors.
    pub fn longest_error_window_ms(&self) -> u128 {
        self.longest_error_window()
            .map_or(0, |w| w.duration().as_millis())
    }

    /// Time from the first error to the last, over all windows; zero without errors.
    pub fn error_span(&self) -> Duration {
        match (self.errors.first(), self.errors.last()) {
            (Some(first), Some(last)) => last.at.duration_since(first.at),
            _ => Duration::ZERO,
        }
    }

    /// Errors seen in the last `period` before the stop signal.
    pub fn errors_in_last(&self, period: Duration) -> usize {
        let since = self.stopped.checked_sub(period).unwrap_or(self.started);
        self.errors.iter().filter(|e| e.at >= since).count()
    }

    /// The lost acknowledgements, one per line with times since the load started, for a test
    /// to print when something was lost.
    pub fn lost_detail(&self) -> String {
        let ms = |at: Instant| at.saturating_duration_since(self.started).as_millis();
        self.lost_acks
            .iter()
            .map(|l| {
                let again = l
                    .repeated_at
                    .map_or("never returned again".to_owned(), |at| {
                        format!("returned again at {} ms", ms(at))
                    });
                format!(
                    "lost: {} = {} acknowledged at {} ms, {again}\n",
                    l.key,
                    l.value,
                    ms(l.acked_at)
                )
            })
            .collect()
    }

    /// Errors seen at or after `instant`.
    pub fn errors_since(&self, instant: Instant) -> usize {
        self.errors.iter().filter(|e| e.at >= instant).count()
    }
}

impl fmt::Display for Report {
    /// One line: load, outcome counts, the consistency verdict, and the longest error window.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "checker: {} clients for {:.1} s: {} acked ({:.0} ops/s), {} errors, {} unknown, \
             lost {} (in {} counters), duplicated {} (in {} counters), \
             longest stall {} ms, longest client idle at stop {} ms",
            self.clients,
            self.duration.as_secs_f64(),
            self.acked,
            self.ops_per_sec(),
            self.error_count(),
            self.unknown,
            self.lost,
            self.counters_lost,
            self.duplicated,
            self.counters_duplicated,
            self.longest_stall.as_millis(),
            self.max_client_idle.as_millis(),
        )?;
        match self.longest_error_window() {
            None => write!(f, "; no errors"),
            Some(window) => {
                let at = |e: &ErrorEvent| e.at.duration_since(self.started).as_millis();
                write!(
                    f,
                    "; {} error windows spanning {} ms, longest {} ms ({} errors, at {}..{} ms \
                     of load), first {:?}, last {:?}; last error {} ms before stop",
                    self.error_windows().len(),
                    self.error_span().as_millis(),
                    window.duration().as_millis(),
                    window.count,
                    at(&window.first),
                    at(&window.last),
                    shorten(&window.first.message),
                    shorten(&window.last.message),
                    self.errors.last().map_or(0, |e| self
                        .stopped
                        .saturating_duration_since(e.at)
                        .as_millis()),
                )
            }
        }
    }
}

fn shorten(message: &str) -> String {
    if message.chars().count() <= MESSAGE_CHARS {
        return message.to_owned();
    }
    let mut short: String = message.chars().take(MESSAGE_CHARS).collect();
    short.push_str("...");
    short
}

/// A small xorshift generator: each client a different sequence, no extra dependency.
struct Random(u64);

impl Random {
    fn new(seed: usize) -> Random {
        Random(RandomState::new().hash_one(seed) | 1)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}
