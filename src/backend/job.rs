//! A command on its way through a shared connection: the job queued for the connection's task,
//! where its reply goes, and its place among the commands written and waiting for replies.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::oneshot;

use super::hold::Hold;
use super::ring::RingTicket;
use super::stall::Silence;
use super::{BackendError, Reply};
use crate::protocol::request::encode_command;

/// `ASKING` in RESP, sent before a command redirected by `ASK`.
const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";

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
    pub(super) fn send(self, outcome: Result<Reply, BackendError>) {
        match self {
            ReplyTo::Channel(tx) => {
                let _ = tx.send(outcome);
            }
            ReplyTo::Ring(reply_to) => reply_to.fill(outcome),
        }
    }

    /// Whether nobody waits for the reply any more.
    pub(super) fn is_closed(&self) -> bool {
        match self {
            ReplyTo::Channel(tx) => tx.is_closed(),
            ReplyTo::Ring(reply_to) => reply_to.is_closed(),
        }
    }
}

/// The replies to a batch of commands sent as one job (see [`super::SharedConn::send_batch`]).
#[derive(Debug)]
pub struct Batched {
    /// The replies that arrived, one per command, in the commands' order.
    pub replies: Vec<Reply>,
    /// Why the commands after `replies` have none: `Lost` when they were written (they may
    /// have run), another error when they were not. `None` when every command answered.
    pub failure: Option<BackendError>,
}

pub(super) type BatchReplyTo = oneshot::Sender<Batched>;

/// Where a job's replies go.
pub(super) enum Sink {
    /// A single command's reply.
    One(ReplyTo),
    /// The replies of `commands` commands, handed over together once all have arrived.
    Many {
        reply_to: BatchReplyTo,
        commands: usize,
    },
}

impl Sink {
    pub(super) fn is_closed(&self) -> bool {
        match self {
            Sink::One(reply_to) => reply_to.is_closed(),
            Sink::Many { reply_to, .. } => reply_to.is_closed(),
        }
    }

    /// Reports that the job was not sent.
    pub(super) fn fail(self, error: BackendError) {
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
pub(super) struct Gathering {
    pub(super) reply_to: BatchReplyTo,
    pub(super) replies: Vec<Reply>,
    pub(super) commands: usize,
}

impl Gathering {
    /// Takes one reply; true once the batch has all of its replies.
    pub(super) fn push(&mut self, reply: Reply) -> bool {
        self.replies.push(reply);
        self.replies.len() >= self.commands
    }

    pub(super) fn finish(self, failure: Option<BackendError>) {
        let _ = self.reply_to.send(Batched {
            replies: self.replies,
            failure,
        });
    }
}

/// `SELECT 0` in RESP: puts a shared connection back on database 0 after a command for
/// another database.
const SELECT_0: &[u8] = b"*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n";

pub(super) struct Job {
    pub(super) payload: Bytes,
    pub(super) asking: bool,
    /// The database the command is for: other than 0, the command goes between `SELECT db`
    /// and `SELECT 0`, written as one, so the shared connection stays on database 0.
    pub(super) db: u8,
    pub(super) reply: Sink,
    /// It runs a script, which may hold the node (see [`super::hold`]).
    pub(super) runs_code: bool,
}

pub(super) struct Waiting {
    /// Where the command's reply goes; taken once it is sent.
    pub(super) reply: Option<ReplyTo>,
    /// Where a batch job's replies go, gathered until the last; taken once they are sent.
    pub(super) batch: Option<Gathering>,
    /// Replies to drop before the next one that counts (the `+OK` of `ASKING` or `SELECT`).
    pub(super) skip: u8,
    /// Replies to drop after the command's own (the `+OK` of `SELECT 0`).
    pub(super) after: u8,
    /// A script, counted in the connection's [`Hold`] until it is answered.
    pub(super) runs_code: bool,
}

/// The commands written to a node and waiting for their replies, in order.
#[derive(Default)]
pub(super) struct Queue {
    pub(super) waiting: VecDeque<Waiting>,
    /// Replies read so far: unchanged between two looks while commands wait means the node
    /// answered nothing in between.
    pub(super) answered: u64,
    /// What the stall watch saw (see [`watch_for_stalls`]).
    pub(super) silence: Silence,
}

impl Queue {
    /// How many replies have been read, when commands wait: what a stall watch compares
    /// from one look to the next (see [`super::stall`]).
    pub(super) fn unanswered(&self) -> Option<u64> {
        (!self.waiting.is_empty()).then_some(self.answered)
    }

    /// Whether the node was stalled at the stall watch's last look and answered nothing since.
    pub(super) fn stalled(&self) -> bool {
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

/// Adds `job` to the batch being written (between `SELECT`s or after `ASKING` when it needs them)
/// and its place to the queue of commands waiting for replies; a job nobody waits for is skipped.
pub(super) fn push_job(batch: &mut BytesMut, waiting: &Mutex<Queue>, hold: &Hold, job: Job) {
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
    if job.runs_code {
        hold.script_written();
    }
    lock(waiting).push_back(Waiting {
        reply,
        batch,
        skip: u8::from(job.asking) + u8::from(job.db > 0),
        after: u8::from(job.db > 0),
        runs_code: job.runs_code,
    });
}

/// The queue, locked; a panic while it was held leaves it as it was.
pub(super) fn lock(waiting: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    waiting
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
