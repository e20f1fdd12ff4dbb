//! The commands queued for a shared connection and not written yet: what the sessions hand the
//! connection's task.
//!
//! A bounded queue under a lock, where a tokio `mpsc` channel used to be. The channel's
//! semaphore, block list and a wake per command cost a forwarded request several hundred
//! instructions; here a command costs one lock, and the task is woken only when the queue goes
//! from empty to not empty: the commands that join it before the task runs are written with the
//! first, in one write, for no further wake.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

use super::job::Job;

/// Why a command was not queued.
pub(super) enum Refused {
    /// The queue holds as many commands as it may.
    Full,
    /// Every handle was dropped, or the connection is retired: nothing is written any more.
    Closed,
}

/// The queue, shared by the connection's handles and its task.
pub(super) struct Outbox {
    queued: Mutex<Queued>,
    /// The task, while it waits for a command.
    waker: AtomicWaker,
    capacity: usize,
}

#[derive(Default)]
struct Queued {
    jobs: VecDeque<Job>,
    closed: bool,
}

impl Outbox {
    /// An empty queue of at most `capacity` commands.
    pub(super) fn new(capacity: usize) -> Self {
        Outbox {
            queued: Mutex::default(),
            waker: AtomicWaker::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queued> {
        self.queued
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `job`, waking the task when the queue was empty. A refused job is dropped, its
    /// reply unfilled.
    pub(super) fn push(&self, job: Job) -> Result<(), Refused> {
        let was_empty = {
            let mut queued = self.lock();
            if queued.closed {
                return Err(Refused::Closed);
            }
            if queued.jobs.len() >= self.capacity {
                return Err(Refused::Full);
            }
            queued.jobs.push_back(job);
            queued.jobs.len() == 1
        };
        if was_empty {
            self.waker.wake();
        }
        Ok(())
    }

    /// The next command, waiting for one; `None` once the queue is closed and empty.
    pub(super) fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Option<Job>> {
        let mut queued = self.lock();
        if let Some(job) = queued.jobs.pop_front() {
            return Poll::Ready(Some(job));
        }
        if queued.closed {
            return Poll::Ready(None);
        }
        // Registered under the lock: a command pushed after it sees the queue empty and wakes.
        self.waker.register(cx.waker());
        Poll::Pending
    }

    /// The next command, waiting for one.
    pub(super) async fn take(&self) -> Option<Job> {
        std::future::poll_fn(|cx| self.poll_take(cx)).await
    }

    /// The next command, if one is queued.
    pub(super) fn try_take(&self) -> Option<Job> {
        self.lock().jobs.pop_front()
    }

    /// Refuses new commands, wakes the task, and hands back the ones queued.
    pub(super) fn close(&self) -> VecDeque<Job> {
        let jobs = {
            let mut queued = self.lock();
            queued.closed = true;
            std::mem::take(&mut queued.jobs)
        };
        self.waker.wake();
        jobs
    }

    /// Wakes the task without a command (to see its connection retired).
    pub(super) fn wake(&self) {
        self.waker.wake();
    }
}

/// The queue as the connection's handles hold it: when the last is dropped, the queue closes
/// and the task ends once it has written what was queued.
pub(super) struct Handles(pub(super) Arc<Outbox>);

impl Drop for Handles {
    fn drop(&mut self) {
        let mut queued = self.0.lock();
        queued.closed = true;
        drop(queued);
        self.0.waker.wake();
    }
}
