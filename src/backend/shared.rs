//! One long-lived, pipelined connection to a node, shared by many clients.
//!
//! A task owns the socket. Requests arrive on a bounded queue, are written in batches, and their
//! the places their replies go wait in order; the reader completes them as replies arrive. When the socket fails,
//! requests already written get [`BackendError::Lost`] (their fate is unknown), queued ones wait
//! for the reconnect, and while the node cannot be reached new requests fail at once.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use tokio::sync::{Notify, oneshot};
use tracing::debug;

use super::hold::Hold;
use super::job::{Batched, Job, Queue, ReplyTo, Sink, lock, push_job};
use super::node_conn::{NodeReader, NodeWriter};
use super::outbox::{Handles, Outbox, Refused};
use super::pool::NodeHealth;
use super::{BackendError, ConnSettings, NodeAddr, NodeConn, Reply};
use crate::protocol::{Protocol, ReplyKind};
use crate::workers::WorkerSet;

/// Most bytes gathered into one write.
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// Handle to a connection task; cheap to clone. The task ends when every handle is dropped or
/// the connection is retired, once the replies still owed on it have arrived.
#[derive(Clone)]
pub struct SharedConn {
    jobs: Arc<Handles>,
    addr: NodeAddr,
    state: Arc<ConnState>,
}

/// What a connection's handles and its task both see.
#[derive(Default)]
struct ConnState {
    /// Whether the connection is established.
    up: AtomicBool,
    retirement: Retirement,
    /// The scripts it carries that hold the node.
    hold: Hold,
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
        let outbox = Arc::new(Outbox::new(settings.max_inflight));
        let jobs = Arc::new(Handles(Arc::clone(&outbox)));
        let state = Arc::new(ConnState::default());
        workers.spawn_on(
            worker,
            run(
                addr.clone(),
                protocol,
                settings,
                outbox,
                health,
                Arc::clone(&state),
            ),
        );
        SharedConn { jobs, addr, state }
    }

    /// Ends the connection because its node left the topology: commands not written yet fail
    /// as not sent (so they go where the new map says), commands written get their replies
    /// unless the node has stopped answering, and new ones are refused.
    pub fn retire(&self) {
        self.state.retirement.retire();
        // The task looks at the flag when it wakes.
        self.jobs.0.wake();
    }

    fn refused(&self, refused: Refused) -> BackendError {
        let addr = self.addr.clone();
        match refused {
            Refused::Full => BackendError::Overloaded { addr },
            Refused::Closed => BackendError::Retired { addr },
        }
    }

    /// Whether the connection is established right now.
    pub fn is_up(&self) -> bool {
        self.state.up.load(Ordering::Relaxed)
    }

    /// Whether a script it carries has held the node a while (see `backend::hold`).
    pub fn is_held(&self) -> bool {
        self.state.hold.is_held()
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
        self.send_to(payload, asking, db, false, ReplyTo::Channel(reply))?;
        Ok(rx)
    }

    /// Queues `payload` (one command, preceded by `ASKING` when `asking`; a script when
    /// `runs_code`); its reply goes to `reply`. When the queue is full, `reply` is dropped
    /// unfilled.
    pub fn send_to(
        &self,
        payload: Bytes,
        asking: bool,
        db: u8,
        runs_code: bool,
        reply: ReplyTo,
    ) -> Result<(), BackendError> {
        self.jobs
            .0
            .push(Job {
                payload,
                asking,
                db,
                reply: Sink::One(reply),
                runs_code,
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
            .0
            .push(Job {
                payload,
                asking: false,
                db,
                reply: Sink::Many { reply_to, commands },
                runs_code: false,
            })
            .map_err(|e| self.refused(e))?;
        Ok(rx)
    }
}

async fn run(
    addr: NodeAddr,
    protocol: Protocol,
    settings: Arc<ConnSettings>,
    jobs: Arc<Outbox>,
    health: Arc<NodeHealth>,
    state: Arc<ConnState>,
) {
    let ConnState {
        up,
        retirement,
        hold,
    } = &*state;
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
                let ended = serve(conn, &addr, &settings, &jobs, retirement, hold).await;
                hold.clear();
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
                            refuse_queued(&jobs, &addr);
                            return;
                        }
                        job = jobs.take() => match job {
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
    jobs: &Outbox,
    retirement: &Retirement,
    hold: &Hold,
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
    // Boxed so it can be dropped before the queue is emptied below.
    let mut writer = Box::pin(write_jobs(
        &mut wr,
        jobs,
        &flight,
        hold,
        settings.max_inflight,
    ));
    let reader = read_replies(&mut rd, &flight, hold);
    tokio::pin!(reader);
    // Biased: an unbiased select draws a random number at every wake, twice per request.
    let mut ended = tokio::select! {
        biased;
        () = retirement.seen() => Ended::Dropped,
        ended = &mut reader => ended,
        ended = &mut writer => ended,
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
    jobs: &Outbox,
    flight: &Flight,
    hold: &Hold,
    max_inflight: usize,
) -> Ended {
    let mut batch = BytesMut::with_capacity(16 * 1024);
    loop {
        while lock(&flight.waiting).len() >= max_inflight {
            flight.room.notified().await;
        }
        let Some(job) = jobs.take().await else {
            return Ended::Dropped;
        };
        push_job(&mut batch, &flight.waiting, hold, job);
        while batch.len() < MAX_BATCH_BYTES && lock(&flight.waiting).len() < max_inflight {
            match jobs.try_take() {
                Some(job) => push_job(&mut batch, &flight.waiting, hold, job),
                None => break,
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
async fn read_replies(rd: &mut NodeReader, flight: &Flight, hold: &Hold) -> Ended {
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
        if front.runs_code {
            front.runs_code = false;
            hold.script_answered();
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
fn refuse_queued(jobs: &Outbox, addr: &NodeAddr) {
    for job in jobs.close() {
        job.reply.fail(BackendError::Retired { addr: addr.clone() });
    }
}

#[cfg(test)]
#[path = "shared_tests.rs"]
mod tests;
