//! The replies a client is owed, in the order it sent its requests.
//!
//! Three kinds wait here. A reply the proxy made itself is ready at once. A forwarded command
//! (the common case) waits in a ticket of the client's [`ReplyRing`], filled by the node
//! connection: no future, channel or timer of its own, and one deadline for all of them (the
//! session's timer). Everything else (split, fanned-out, retried or own-connection work) is a
//! future, polled in a set beside the queue; only those cost an allocation.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;

use super::tally::{Client, Timed};
use crate::backend::NodePool;
use crate::backend::ring::{Outcome, ReplyRing};
use crate::backend::{BackendError, Reply};
use crate::cluster::Backend;
use crate::cluster::Sending;

/// A reply still being worked out on a path less common than a plain forward.
pub(super) type Slow<'a> = Pin<Box<dyn Future<Output = Bytes> + Send + 'a>>;

/// A command whose first attempt is queued on a node, its reply due in the ring.
pub(super) struct Forwarded<'a> {
    /// Its ticket in the ring.
    pub(super) seq: u64,
    /// When it fails with a timeout.
    pub(super) deadline: Instant,
    /// The node it was queued on.
    pub(super) pool: Arc<NodePool>,
    /// The command, kept for a retry.
    pub(super) command: Command<'a>,
}

/// A command to forward, with what a retry and its count need.
pub(super) struct Command<'a> {
    /// The backend that serves it.
    pub(super) cluster: &'a Backend,
    /// The command as every attempt sends it.
    pub(super) sending: Sending,
    /// How it is counted once answered.
    pub(super) timed: Timed<'a>,
}

impl<'a> Command<'a> {
    /// The command on the one retry engine ([`Backend::serve_after`]), going on from its first
    /// attempt's node and outcome when it made one; counted once answered.
    pub(super) fn serve(
        self,
        first: Option<(Arc<NodePool>, Outcome)>,
        client: Client<'a>,
    ) -> Slow<'a> {
        let Command {
            cluster,
            sending,
            timed,
        } = self;
        Box::pin(async move {
            let (bytes, node) = cluster.serve_after(first, sending).await;
            timed.finish(&bytes, node.as_deref().map(|n| n.addr()), client);
            bytes
        })
    }
}

enum Entry<'a> {
    /// Ready, counted as owed.
    Ready(Bytes),
    /// Due in the ring.
    Ring(Box<Forwarded<'a>>),
    /// The future with this tag, in `slow`.
    Slow(u64),
}

/// A slow future and its tag.
struct Tagged<'a> {
    tag: u64,
    future: Slow<'a>,
}

impl Future for Tagged<'_> {
    type Output = (u64, Bytes);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let tag = self.tag;
        self.future.as_mut().poll(cx).map(|bytes| (tag, bytes))
    }
}

/// The queue of replies owed, in request order.
pub(super) struct Owed<'a> {
    entries: VecDeque<Entry<'a>>,
    /// Made on first use: most phases have none, and an empty set costs an allocation.
    slow: Option<FuturesUnordered<Tagged<'a>>>,
    next_tag: u64,
    /// Bytes owed to the client, what its output limits bound.
    counter: &'a AtomicU64,
}

impl<'a> Owed<'a> {
    /// An empty queue counting into `counter`.
    pub(super) fn new(counter: &'a AtomicU64) -> Self {
        Owed {
            entries: VecDeque::new(),
            slow: None,
            next_tag: 0,
            counter,
        }
    }

    /// Replies owed and not yet handed out.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is owed.
    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether some forwarded command waits in the ring.
    pub(super) fn has_forwarded(&self) -> bool {
        self.entries.iter().any(|e| matches!(e, Entry::Ring(_)))
    }

    /// Queues a reply that is ready now.
    pub(super) fn push_ready(&mut self, bytes: Bytes) {
        self.counter
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.entries.push_back(Entry::Ready(bytes));
    }

    /// Queues a command queued on a node by [`Backend::start`].
    pub(super) fn push_forwarded(&mut self, forwarded: Forwarded<'a>) {
        self.entries.push_back(Entry::Ring(Box::new(forwarded)));
    }

    /// Queues a future (see [`Owed::start`]).
    pub(super) fn push_slow(&mut self, future: Slow<'a>) {
        let tag = self.tag();
        self.entries.push_back(Entry::Slow(tag));
        self.start(tag, future);
    }

    fn tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.next_tag
    }

    /// Polls the futures; true when one completed.
    fn poll_slow(&mut self, cx: &mut Context<'_>) -> bool {
        let mut done = false;
        let Some(slow) = self.slow.as_mut() else {
            return false;
        };
        while let Poll::Ready(Some((tag, bytes))) = slow.poll_next_unpin(cx) {
            done = true;
            self.counter
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            if let Some(entry) = self
                .entries
                .iter_mut()
                .find(|e| matches!(e, Entry::Slow(t) if *t == tag))
            {
                *entry = Entry::Ready(bytes);
            }
        }
        done
    }

    /// Ready when the front reply may have become ready (a future completed, the ring was
    /// filled), for the session's wait; [`Owed::drain`] then takes what is ready.
    pub(super) fn poll_progress(&mut self, cx: &mut Context<'_>, ring: &ReplyRing) -> Poll<()> {
        let done = self.poll_slow(cx);
        match self.entries.front() {
            Some(Entry::Ready(_)) => Poll::Ready(()),
            _ if done => Poll::Ready(()),
            Some(Entry::Ring(forwarded)) => {
                ring.register(cx);
                if ring.is_filled(forwarded.seq) {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            }
            _ => Poll::Pending,
        }
    }

    /// Hands the replies ready at the front to `out`, in order. A forwarded command whose
    /// reply is not final (a redirect, a retryable error, no reply) goes on as a future on the
    /// one retry engine, [`Backend::serve_after`].
    pub(super) fn drain(
        &mut self,
        ring: &ReplyRing,
        client: Client<'a>,
        out: &mut impl FnMut(Bytes),
    ) {
        while let Some(front) = self.entries.front() {
            match front {
                Entry::Ready(_) => {
                    if let Some(Entry::Ready(bytes)) = self.entries.pop_front() {
                        out(bytes);
                    }
                }
                Entry::Ring(forwarded) => {
                    let Some(outcome) = ring.take(forwarded.seq) else {
                        return;
                    };
                    let Some(Entry::Ring(forwarded)) = self.entries.pop_front() else {
                        return;
                    };
                    match self.settle(*forwarded, outcome, client) {
                        Ok(bytes) => out(bytes),
                        Err(future) => {
                            let tag = self.tag();
                            self.entries.push_front(Entry::Slow(tag));
                            self.start(tag, future);
                        }
                    }
                }
                Entry::Slow(_) => return,
            }
        }
    }

    /// Gives up, as timed out, every forwarded command whose deadline is past at `now`; they
    /// go on as futures, which decide (a read is retried, a write answered with the timeout).
    /// Returns the next deadline of those still waiting.
    pub(super) fn expire(
        &mut self,
        now: Instant,
        ring: &ReplyRing,
        client: Client<'a>,
    ) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        for i in 0..self.entries.len() {
            let Some(Entry::Ring(forwarded)) = self.entries.get(i) else {
                continue;
            };
            if forwarded.deadline > now {
                next = Some(next.map_or(forwarded.deadline, |n| n.min(forwarded.deadline)));
                continue;
            }
            let Some(Entry::Ring(forwarded)) = self
                .entries
                .get_mut(i)
                .map(|e| std::mem::replace(e, Entry::Ready(Bytes::new())))
            else {
                continue;
            };
            let outcome = match ring.forget(forwarded.seq) {
                Some(outcome) => {
                    // Filled after all: `settle` takes it as counted, as `take` leaves it.
                    if let Ok(reply) = &outcome {
                        self.counter
                            .fetch_add(reply.bytes.len() as u64, Ordering::Relaxed);
                    }
                    outcome
                }
                None => Err(BackendError::Timeout {
                    addr: forwarded.pool.addr().clone(),
                    timeout_ms: forwarded.pool.request_timeout().as_millis() as u64,
                }),
            };
            match self.settle(*forwarded, outcome, client) {
                Ok(bytes) => {
                    if let Some(entry) = self.entries.get_mut(i) {
                        *entry = Entry::Ready(bytes);
                    }
                }
                Err(future) => {
                    let tag = self.tag();
                    if let Some(entry) = self.entries.get_mut(i) {
                        *entry = Entry::Slow(tag);
                    }
                    self.start(tag, future);
                }
            }
        }
        next
    }

    /// The reply of a forwarded command that came to `outcome`: final bytes (already counted
    /// as owed by the ring), or a future that goes on from there.
    fn settle(
        &mut self,
        forwarded: Forwarded<'a>,
        outcome: Outcome,
        client: Client<'a>,
    ) -> Result<Bytes, Slow<'a>> {
        let Forwarded { pool, command, .. } = forwarded;
        let counted = outcome
            .as_ref()
            .map_or(0, |reply: &Reply| reply.bytes.len());
        match command.cluster.settle(
            &pool,
            &command.sending.target,
            command.sending.access,
            outcome,
        ) {
            Ok(bytes) => {
                command.timed.finish(&bytes, Some(pool.addr()), client);
                Ok(bytes)
            }
            Err(outcome) => {
                // The future's reply is counted when it completes.
                self.counter.fetch_sub(counted as u64, Ordering::Relaxed);
                Err(command.serve(Some((pool, outcome)), client))
            }
        }
    }

    /// Puts the future tagged `tag` (whose entry is in place) in the set, and polls it once so
    /// that what it sends is queued on its nodes before any later request of the client.
    fn start(&mut self, tag: u64, future: Slow<'a>) {
        self.slow
            .get_or_insert_with(FuturesUnordered::new)
            .push(Tagged { tag, future });
        let waker = futures_util::task::noop_waker_ref();
        self.poll_slow(&mut Context::from_waker(waker));
    }
}

/// The session's one timer for its forwarded commands: armed for the earliest deadline, and
/// moved only when a command with an earlier one arrives (never, at one time limit) or when it
/// fires, so a request costs no timer of its own.
#[derive(Default)]
pub(super) struct Deadline {
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    armed: Option<Instant>,
}

impl Deadline {
    /// Makes sure the timer fires by `at`.
    pub(super) fn arm(&mut self, at: Instant) {
        match (&mut self.timer, self.armed) {
            (Some(_), Some(armed)) if armed <= at => {}
            _ => self.rearm(at),
        }
    }

    /// Sets the timer for `at`.
    pub(super) fn rearm(&mut self, at: Instant) {
        match &mut self.timer {
            Some(timer) => timer.as_mut().reset(at),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
        }
        self.armed = Some(at);
    }

    /// Completes once the time it was set for has come; never when it was not set.
    pub(super) async fn fired(&mut self) {
        match &mut self.timer {
            Some(timer) => timer.as_mut().await,
            None => std::future::pending().await,
        }
    }
}
