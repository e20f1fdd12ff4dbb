//! One long-lived, pipelined connection to a node, shared by many clients.
//!
//! A task owns the socket. Requests arrive on a bounded queue, are written in batches, and their
//! the places their replies go wait in order; the reader completes them as replies arrive. When the socket fails,
//! requests already written get [`BackendError::Lost`] (their fate is unknown), queued ones wait
//! for the reconnect, and while the node cannot be reached new requests fail at once.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::Poll;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::debug;

use super::node_conn::{NodeReader, NodeWriter};
use super::pool::NodeHealth;
use super::ring::RingTicket;
use super::stall::Silence;
use super::{BackendError, ConnSettings, NodeAddr, NodeConn, Reply};
use crate::protocol::request::encode_command;
use crate::protocol::{Protocol, ReplyKind};
use crate::workers::WorkerSet;

/// `ASKING` in RESP, sent before a command redirected by `ASK`.
const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";
/// Most bytes gathered into one write.
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// Where a command's reply goes: a channel of its own, or a ticket of its client's ring (the
/// session's one path for forwarded commands, see [`super::ring`]).
#[derive(Debug)]
pub enum ReplyTo {
    /// A channel of its own.
    Channel(oneshot::Sender<Result<Reply, BackendError>>),
    /// A ticket of the client's ring.
    Ring(RingTicket),
}

impl ReplyTo {
    fn send(self, outcome: Result<Reply, BackendError>) {
        match self {
            ReplyTo::Channel(tx) => {
                let _ = tx.send(outcome);
            }
            ReplyTo::Ring(reply_to) => reply_to.fill(outcome),
        }
    }

    /// Whether nobody waits for the reply any more.
    fn is_closed(&self) -> bool {
        match self {
            ReplyTo::Channel(tx) => tx.is_closed(),
            ReplyTo::Ring(reply_to) => reply_to.is_closed(),
        }
    }
}

/// The replies to a batch of commands sent as one job (see [`SharedConn::send_batch`]).
#[derive(Debug)]
pub struct Batched {
    /// The replies that arrived, one per command, in the commands' order.
    pub replies: Vec<Reply>,
    /// Why the commands after `replies` have none: `Lost` when they were written (they may
    /// have run), another error when they were not. `None` when every command answered.
    pub failure: Option<BackendError>,
}

type BatchReplyTo = oneshot::Sender<Batched>;

/// Where a job's replies go.
enum Sink {
    /// A single command's reply.
    One(ReplyTo),
    /// The replies of `commands` commands, handed over together once all have arrived.
    Many {
        reply_to: BatchReplyTo,
        commands: usize,
    },
}

impl Sink {
    fn is_closed(&self) -> bool {
        match self {
            Sink::One(reply_to) => reply_to.is_closed(),
            Sink::Many { reply_to, .. } => reply_to.is_closed(),
        }
    }

    /// Reports that the job was not sent.
    fn fail(self, error: BackendError) {
        match self {
            Sink::One(reply_to) => reply_to.send(Err(error)),
            Sink::Many { reply_to, .. } => {
                let _ = reply_to.send(Batched {
                    replies: Vec::new(),
                    failure: Some(error),
                });
            }
        }
    }
}

/// A batch job's replies, gathered as they arrive.
struct Gathering {
    reply_to: BatchReplyTo,
    replies: Vec<Reply>,
    commands: usize,
}

impl Gathering {
    /// Takes one reply; true once the batch has all of its replies.
    fn push(&mut self, reply: Reply) -> bool {
        self.replies.push(reply);
        self.replies.len() >= self.commands
    }

    fn finish(self, failure: Option<BackendError>) {
        let _ = self.reply_to.send(Batched {
            replies: self.replies,
            failure,
        });
    }
}

/// `SELECT 0` in RESP: puts a shared connection back on database 0 after a command for
/// another database.
const SELECT_0: &[u8] = b"*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n";

struct Job {
    payload: Bytes,
    asking: bool,
    /// The database the command is for: other than 0, the command goes between `SELECT db`
    /// and `SELECT 0`, written as one, so the shared connection stays on database 0.
    db: u8,
    reply: Sink,
}

struct Waiting {
    /// Where the command's reply goes; taken once it is sent.
    reply: Option<ReplyTo>,
    /// Where a batch job's replies go, gathered until the last; taken once they are sent.
    batch: Option<Gathering>,
    /// Replies to drop before the next one that counts (the `+OK` of `ASKING` or `SELECT`).
    skip: u8,
    /// Replies to drop after the command's own (the `+OK` of `SELECT 0`).
    after: u8,
}

/// The commands written to a node and waiting for their replies, in order.
#[derive(Default)]
struct Queue {
    waiting: VecDeque<Waiting>,
    /// Replies read so far: unchanged between two looks while commands wait means the node
    /// answered nothing in between.
    answered: u64,
    /// What the stall watch saw (see [`watch_for_stalls`]).
    silence: Silence,
}

impl Queue {
    /// How many replies have been read, when commands wait: what a stall watch compares
    /// from one look to the next (see [`super::stall`]).
    fn unanswered(&self) -> Option<u64> {
        (!self.waiting.is_empty()).then_some(self.answered)
    }

    /// Whether the node was stalled at the stall watch's last look and answered nothing since.
    fn stalled(&self) -> bool {
        self.silence.still(self.unanswered())
    }
}

impl std::ops::Deref for Queue {
    type Target = VecDeque<Waiting>;
    fn deref(&self) -> &Self::Target {
        &self.waiting
    }
}

impl std::ops::DerefMut for Queue {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.waiting
    }
}

/// Handle to a connection task; cheap to clone. The task ends when every handle is dropped or
/// the connection is retired, once the replies still owed on it have arrived.
#[derive(Clone)]
pub struct SharedConn {
    jobs: mpsc::Sender<Job>,
    addr: NodeAddr,
    up: Arc<AtomicBool>,
    retirement: Arc<Retirement>,
}

/// A connection's retirement, told to its task at no cost per request: a flag, looked at when
/// the task wakes, and an empty job that wakes it (a `Notify` among the branches the task polls
/// at every wake took a lock each time). The waker serves the wait between reconnects.
#[derive(Default)]
struct Retirement {
    retired: AtomicBool,
    waker: AtomicWaker,
}

impl Retirement {
    fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Completes once the connection is retired, looked at each time the task is polled but
    /// never waking it: the empty job [`SharedConn::retire`] sends does.
    fn seen(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |_| {
            if self.retired.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }

    /// Completes once the connection is retired.
    fn retired(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.retired.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            if self.retired.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

impl SharedConn {
    /// Starts the task that connects to `addr` and serves requests, on the runtime of worker
    /// `worker` (see [`WorkerSet::spawn_on`]).
    pub fn spawn(
        addr: NodeAddr,
        protocol: Protocol,
        settings: Arc<ConnSettings>,
        workers: &WorkerSet,
        worker: usize,
        health: Arc<NodeHealth>,
    ) -> SharedConn {
        let (jobs, rx) = mpsc::channel(settings.max_inflight);
        let up = Arc::new(AtomicBool::new(false));
        let retirement = Arc::new(Retirement::default());
        workers.spawn_on(
            worker,
            run(
                addr.clone(),
                protocol,
                settings,
                rx,
                Arc::clone(&up),
                health,
                Arc::clone(&retirement),
            ),
        );
        SharedConn {
            jobs,
            addr,
            up,
            retirement,
        }
    }

    /// Ends the connection because its node left the topology: commands not written yet fail
    /// as not sent (so they go where the new map says), commands written get their replies
    /// unless the node has stopped answering, and new ones are refused.
    pub fn retire(&self) {
        self.retirement.retire();
        // Wakes the task: a job nobody waits for is skipped, never written. When the queue is
        // full the task wakes at its next reply anyway.
        let (nobody, _) = oneshot::channel();
        let _ = self.jobs.try_send(Job {
            payload: Bytes::new(),
            asking: false,
            db: 0,
            reply: Sink::One(ReplyTo::Channel(nobody)),
        });
    }

    fn refused(&self, error: mpsc::error::TrySendError<Job>) -> BackendError {
        let addr = self.addr.clone();
        match error {
            mpsc::error::TrySendError::Full(_) => BackendError::Overloaded { addr },
            mpsc::error::TrySendError::Closed(_) => BackendError::Retired { addr },
        }
    }

    /// Whether the connection is established right now.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Queues `payload` (one command, preceded by `ASKING` when `asking`) and returns the channel
    /// its reply will arrive in.
    pub fn send(
        &self,
        payload: Bytes,
        asking: bool,
        db: u8,
    ) -> Result<oneshot::Receiver<Result<Reply, BackendError>>, BackendError> {
        let (reply, rx) = oneshot::channel();
        self.send_to(payload, asking, db, ReplyTo::Channel(reply))?;
        Ok(rx)
    }

    /// Queues `payload` (one command, preceded by `ASKING` when `asking`); its reply goes to
    /// `reply`. When the queue is full, `reply` is dropped unfilled.
    pub fn send_to(
        &self,
        payload: Bytes,
        asking: bool,
        db: u8,
        reply: ReplyTo,
    ) -> Result<(), BackendError> {
        self.jobs
            .try_send(Job {
                payload,
                asking,
                db,
                reply: Sink::One(reply),
            })
            .map_err(|e| self.refused(e))
    }

    /// Queues `payload`, `commands` commands one after the other, as one job: written
    /// together, their replies handed over together once the last has arrived, so a split
    /// command's parts for this node cost one queued job and one wake-up, not one per part.
    pub fn send_batch(
        &self,
        payload: Bytes,
        commands: usize,
        db: u8,
    ) -> Result<oneshot::Receiver<Batched>, BackendError> {
        let (reply_to, rx) = oneshot::channel();
        if commands == 0 {
            // No reply would ever complete it: done now.
            let _ = reply_to.send(Batched {
                replies: Vec::new(),
                failure: None,
            });
            return Ok(rx);
        }
        self.jobs
            .try_send(Job {
                payload,
                asking: false,
                db,
                reply: Sink::Many { reply_to, commands },
            })
            .map_err(|e| self.refused(e))?;
        Ok(rx)
    }
}

async fn run(
    addr: NodeAddr,
    protocol: Protocol,
    settings: Arc<ConnSettings>,
    mut jobs: mpsc::Receiver<Job>,
    up: Arc<AtomicBool>,
    health: Arc<NodeHealth>,
    retirement: Arc<Retirement>,
) {
    let mut backoff = settings.backoff_min;
    loop {
        match NodeConn::open(&addr, protocol, &settings).await {
            Ok(conn) => {
                // One line per node, not per connection: `NodeHealth` logs the node's coming
                // and going.
                debug!(node = %addr, ?protocol, "backend connected");
                backoff = settings.backoff_min;
                up.store(true, Ordering::Relaxed);
                health.connected();
                let ended = serve(conn, &addr, &settings, &mut jobs, &retirement).await;
                up.store(false, Ordering::Relaxed);
                match ended {
                    Ended::Dropped => {
                        health.closed();
                        return;
                    }
                    Ended::Failed(reason) => {
                        debug!(node = %addr, %reason, "backend connection lost");
                        health.lost(&reason);
                    }
                }
            }
            Err(error) => {
                debug!(node = %addr, %error, "backend unreachable");
                health.unreachable(&error.to_string());
                // Until the next attempt, fail requests at once rather than let them wait.
                let retry_at = tokio::time::Instant::now() + backoff;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep_until(retry_at) => break,
                        () = retirement.retired() => {
                            refuse_queued(&mut jobs, &addr);
                            return;
                        }
                        job = jobs.recv() => match job {
                            Some(job) => job.reply.fail(error.clone()),
                            None => return,
                        },
                    }
                }
                backoff = (backoff * 2).min(settings.backoff_max);
            }
        }
    }
}

enum Ended {
    /// The node left the topology: every handle was dropped, or the connection was retired.
    Dropped,
    /// The socket failed.
    Failed(String),
}

async fn serve(
    conn: NodeConn,
    addr: &NodeAddr,
    settings: &ConnSettings,
    jobs: &mut mpsc::Receiver<Job>,
    retirement: &Retirement,
) -> Ended {
    let (mut rd, mut wr) = conn.split();
    let flight = Arc::new(Flight::default());
    // A node that leaves commands unanswered may have failed: the topology is asked for again
    // at once and while it stays silent, so a failover is seen within a stall, not only after
    // a request has timed out. A task of its own, woken twice a second, costs the requests
    // nothing.
    tokio::spawn(watch_for_stalls(
        Arc::downgrade(&flight),
        settings.stall_after,
        Arc::clone(&settings.on_stall),
    ));
    // Boxed so it can be dropped before the queue is emptied below: it borrows `jobs`.
    let mut writer = Box::pin(write_jobs(&mut wr, jobs, &flight, settings.max_inflight));
    let reader = read_replies(&mut rd, &flight);
    tokio::pin!(reader);
    let mut ended = tokio::select! {
        ended = &mut writer => ended,
        ended = &mut reader => ended,
        () = retirement.seen() => Ended::Dropped,
    };
    drop(writer);
    if matches!(ended, Ended::Dropped) {
        refuse_queued(jobs, addr);
        // The node left the topology, but commands already written to it (an ASK followed to a
        // node a refresh has not listed yet, a write racing a reshard) still get their replies:
        // closing now would fail a write that ran. A node that has stopped answering (the master
        // a failover replaced) is given up at once, so reads can go to the new master.
        if !lock(&flight.waiting).stalled() {
            let drained = async {
                while !lock(&flight.waiting).is_empty() {
                    flight.room.notified().await;
                }
            };
            // The stall watch looks every `stall_after`; so does this, at what it saw.
            let stalled = async {
                loop {
                    tokio::time::sleep(settings.stall_after).await;
                    if lock(&flight.waiting).stalled() {
                        return;
                    }
                }
            };
            tokio::select! {
                () = drained => {}
                failed = &mut reader => ended = failed,
                () = stalled => {}
                () = tokio::time::sleep(settings.request_timeout) => {}
            }
        }
    }
    for w in lock(&flight.waiting).drain(..) {
        if let Some(reply_to) = w.reply {
            reply_to.send(Err(BackendError::Lost { addr: addr.clone() }));
        }
        if let Some(gathering) = w.batch {
            gathering.finish(Some(BackendError::Lost { addr: addr.clone() }));
        }
    }
    ended
}

/// Looks at a connection's queue every `every` while the connection lives; each time its
/// commands have waited through a whole look with no reply read, wakes `on_stall` (the
/// backend's topology refresher).
async fn watch_for_stalls(flight: Weak<Flight>, every: Duration, on_stall: Arc<Notify>) {
    loop {
        tokio::time::sleep(every).await;
        let Some(flight) = flight.upgrade() else {
            return;
        };
        let stalled = {
            let mut queue = lock(&flight.waiting);
            let now = queue.unanswered();
            queue.silence.look(now)
        };
        if stalled {
            on_stall.notify_one();
        }
    }
}

/// What a connection's writer and reader share (and its stall watch looks at). The writer and
/// reader run in one task, so the lock is hardly ever contended; it is never held across an
/// await.
#[derive(Default)]
struct Flight {
    /// The commands written, waiting for their replies.
    waiting: Mutex<Queue>,
    /// Woken when a reply makes room for another command.
    room: Notify,
}

/// Writes the queued jobs in batches, at most `max_inflight` waiting at once, until the
/// socket fails or every handle is dropped.
async fn write_jobs(
    wr: &mut NodeWriter,
    jobs: &mut mpsc::Receiver<Job>,
    flight: &Flight,
    max_inflight: usize,
) -> Ended {
    let mut batch = BytesMut::with_capacity(16 * 1024);
    loop {
        while lock(&flight.waiting).len() >= max_inflight {
            flight.room.notified().await;
        }
        let Some(job) = jobs.recv().await else {
            return Ended::Dropped;
        };
        push_job(&mut batch, &flight.waiting, job);
        // Let the sessions that are ready run first: their requests join this write instead
        // of each costing a send of its own.
        tokio::task::yield_now().await;
        while batch.len() < MAX_BATCH_BYTES && lock(&flight.waiting).len() < max_inflight {
            match jobs.try_recv() {
                Ok(job) => push_job(&mut batch, &flight.waiting, job),
                Err(_) => break,
            }
        }
        if let Err(e) = wr.write_all(&batch).await {
            return Ended::Failed(e.to_string());
        }
        batch.clear();
        if batch.capacity() > 4 * MAX_BATCH_BYTES {
            batch = BytesMut::with_capacity(16 * 1024);
        }
    }
}

/// Reads replies and hands each to the command it answers, in order, until the socket fails.
async fn read_replies(rd: &mut NodeReader, flight: &Flight) -> Ended {
    loop {
        let reply = match rd.read_reply().await {
            Ok(reply) => reply,
            Err(error) => return Ended::Failed(error.to_string()),
        };
        if reply.kind == ReplyKind::Push {
            continue;
        }
        let mut queue = lock(&flight.waiting);
        queue.answered += 1;
        let Some(front) = queue.front_mut() else {
            return Ended::Failed("reply with no request waiting".into());
        };
        if front.skip > 0 {
            front.skip -= 1;
            if front.skip == 0 && front.reply.is_none() && front.batch.is_none() {
                queue.pop_front();
                drop(queue);
                flight.room.notify_one();
            }
            continue;
        }
        if let Some(gathering) = front.batch.as_mut() {
            if !gathering.push(reply) {
                continue;
            }
            if let Some(done) = front.batch.take() {
                done.finish(None);
            }
        } else if let Some(reply_to) = front.reply.take() {
            reply_to.send(Ok(reply));
        }
        if front.after > 0 {
            front.skip = front.after;
            front.after = 0;
            continue;
        }
        queue.pop_front();
        drop(queue);
        flight.room.notify_one();
    }
}

/// Fails the commands queued and not written yet as not sent, and refuses new ones.
fn refuse_queued(jobs: &mut mpsc::Receiver<Job>, addr: &NodeAddr) {
    jobs.close();
    while let Ok(job) = jobs.try_recv() {
        job.reply.fail(BackendError::Retired { addr: addr.clone() });
    }
}

fn push_job(batch: &mut BytesMut, waiting: &Mutex<Queue>, job: Job) {
    if job.reply.is_closed() {
        // The client gave up (timeout or disconnect) before the request was written.
        return;
    }
    if job.db > 0 {
        // Before ASKING, which holds for the very next command only.
        encode_command(batch, &[&b"SELECT"[..], job.db.to_string().as_bytes()]);
    }
    if job.asking {
        batch.put_slice(ASKING);
    }
    batch.put_slice(&job.payload);
    if job.db > 0 {
        batch.put_slice(SELECT_0);
    }
    let (reply, batch) = match job.reply {
        Sink::One(reply_to) => (Some(reply_to), None),
        Sink::Many { reply_to, commands } => (
            None,
            Some(Gathering {
                reply_to,
                replies: Vec::with_capacity(commands),
                commands,
            }),
        ),
    };
    lock(waiting).push_back(Waiting {
        reply,
        batch,
        skip: u8::from(job.asking) + u8::from(job.db > 0),
        after: u8::from(job.db > 0),
    });
}

fn lock(waiting: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    waiting
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Mutex;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;
    use crate::backend::transport::{Connecting, Connector, Transport};
    use crate::config::ClusterConfig;

    /// Hands out one in-memory stream, the test's end of which plays the node.
    struct Once(Mutex<Option<DuplexStream>>);

    impl Connector for Once {
        fn connect<'a>(&'a self, _addr: &'a NodeAddr) -> Connecting<'a> {
            let stream = self.0.lock().unwrap().take();
            Box::pin(async move {
                let stream = stream.ok_or(std::io::ErrorKind::ConnectionRefused)?;
                Ok(Transport::Other(Box::new(stream)))
            })
        }
    }

    /// A connection to an in-memory node whose end the test holds, with a minute's request
    /// timeout and the shortest stall.
    fn connected() -> (SharedConn, DuplexStream) {
        let (ours, node) = tokio::io::duplex(1 << 16);
        let settings = Arc::new(ConnSettings {
            connector: Arc::new(Once(Mutex::new(Some(ours)))),
            request_timeout: Duration::from_secs(60),
            stall_after: Duration::from_millis(100),
            ..ConnSettings::from(&ClusterConfig::default())
        });
        let addr = NodeAddr::new("node:1");
        let health = Arc::new(NodeHealth::new("test", &addr));
        let conn = SharedConn::spawn(
            addr,
            Protocol::Resp2,
            settings,
            &WorkerSet::inline(),
            0,
            health,
        );
        (conn, node)
    }

    #[tokio::test]
    async fn a_retired_connection_gives_up_on_a_silent_node_and_refuses_new_commands() {
        let (conn, mut node) = connected();
        let get = Bytes::from_static(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        let reply = conn.send(get.clone(), false, 0).unwrap();
        let mut request = vec![0u8; get.len()];
        tokio::time::timeout(Duration::from_secs(5), node.read_exact(&mut request))
            .await
            .expect("the GET never left the proxy")
            .unwrap();
        // A failover replaced the node, which stays silent (stopped, cut off).
        conn.retire();
        let outcome = tokio::time::timeout(Duration::from_secs(5), reply)
            .await
            .expect("a retired connection waited on a silent node")
            .unwrap();
        assert!(
            matches!(outcome, Err(BackendError::Lost { .. })),
            "{outcome:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(matches!(
            conn.send(get, false, 0),
            Err(BackendError::Retired { .. })
        ));
    }

    #[tokio::test]
    async fn a_command_written_before_its_node_left_the_topology_still_gets_its_reply() {
        let (conn, mut node) = connected();
        let incr = Bytes::from_static(b"*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n");
        let reply = conn.send(incr.clone(), false, 0).unwrap();
        let mut request = vec![0u8; incr.len()];
        tokio::time::timeout(Duration::from_secs(5), node.read_exact(&mut request))
            .await
            .expect("the INCR never left the proxy")
            .unwrap();
        assert_eq!(request, incr);
        // A refresh drops the node's pool, and so this handle, while the INCR is in flight.
        drop(conn);
        tokio::time::sleep(Duration::from_millis(20)).await;
        node.write_all(b":1\r\n").await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), reply)
            .await
            .expect("no reply within 5 s")
            .unwrap()
            .expect("the INCR ran, so its reply must not be a lost connection");
        assert_eq!(&reply.bytes[..], b":1\r\n");
        // With nothing left to answer, the connection closes.
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(5), node.read_to_end(&mut rest)).await;
        assert!(
            closed.is_ok(),
            "the connection stayed open after its last reply"
        );
    }
}
