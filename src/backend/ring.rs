//! One client's replies in flight on the shared connections: a numbered ticket per request, filled
//! by the node connection that reads the reply, taken by the client's session in request order.
//!
//! It does for every forwarded request what a oneshot channel, a timer and an entry in an
//! ordered set of futures did for each one: the session allocates nothing per request, is woken
//! through one waker, and keeps one deadline for all its requests (see `session`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

use super::{BackendError, Hints, Reply};
use crate::clients::ClientHandle;

/// A reply, or why there is none.
pub type Outcome = Result<Reply, BackendError>;

/// The tickets of one client.
#[derive(Debug)]
pub struct ReplyRing {
    tickets: Mutex<Tickets>,
    waker: AtomicWaker,
    /// The session ended: nothing is read any more.
    closed: AtomicBool,
    /// The client the replies are for: a filled ticket counts as owed to it at once, so a client
    /// that does not read is bounded by its output limits however many replies wait behind an
    /// earlier one.
    client: Arc<ClientHandle>,
}

#[derive(Debug, Default)]
struct Tickets {
    /// The number of `states[0]`.
    first: u64,
    states: VecDeque<State>,
}

#[derive(Debug)]
enum State {
    /// Sent or queued; no reply yet.
    Waiting,
    /// The reply (or the failure), not taken yet.
    Filled(Outcome),
    /// Taken, or given up by the session (timed out): a late reply is dropped.
    Gone,
}

/// Where one request's reply goes: a ticket of a client's ring.
#[derive(Debug)]
pub struct RingTicket {
    ring: Arc<ReplyRing>,
    seq: u64,
    hints: Hints,
}

impl ReplyRing {
    /// An empty ring for `client`.
    pub fn new(client: Arc<ClientHandle>) -> Arc<Self> {
        Arc::new(ReplyRing {
            tickets: Mutex::new(Tickets::default()),
            waker: AtomicWaker::new(),
            closed: AtomicBool::new(false),
            client,
        })
    }

    /// A new ticket, after every ticket handed out before, for a request the session knows
    /// `hints` of.
    pub fn reserve(self: &Arc<Self>, hints: Hints) -> RingTicket {
        let mut tickets = self.lock();
        let seq = tickets.first + tickets.states.len() as u64;
        tickets.states.push_back(State::Waiting);
        RingTicket {
            ring: Arc::clone(self),
            seq,
            hints,
        }
    }

    /// The outcome of ticket `seq` if it is filled, taking it.
    pub fn take(&self, seq: u64) -> Option<Outcome> {
        let mut tickets = self.lock();
        let state = tickets.get_mut(seq)?;
        if !matches!(state, State::Filled(_)) {
            return None;
        }
        let State::Filled(outcome) = std::mem::replace(state, State::Gone) else {
            return None;
        };
        tickets.trim();
        Some(outcome)
    }

    /// Gives ticket `seq` up: its reply, if one comes, is dropped, and a request still queued is
    /// not sent. Returns the reply that was already there, uncounted.
    pub fn forget(&self, seq: u64) -> Option<Outcome> {
        let mut tickets = self.lock();
        let state = tickets.get_mut(seq)?;
        let before = std::mem::replace(state, State::Gone);
        tickets.trim();
        drop(tickets);
        match before {
            State::Filled(outcome) => {
                self.uncount(&outcome);
                Some(outcome)
            }
            State::Waiting | State::Gone => None,
        }
    }

    /// Whether ticket `seq` holds its outcome, not taken yet.
    pub fn is_filled(&self, seq: u64) -> bool {
        matches!(self.lock().get(seq), Some(State::Filled(_)))
    }

    /// Registers the session's waker: it is woken when any ticket is filled.
    pub fn register(&self, cx: &mut Context<'_>) {
        self.waker.register(cx.waker());
    }

    /// Tickets handed out and not yet taken or given up.
    pub fn outstanding(&self) -> usize {
        self.lock().states.len()
    }

    /// The session ended: replies still due are dropped as they come, and requests still
    /// queued are not sent.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        *self.lock() = Tickets::default();
    }

    /// Gives back memory a long pipeline left, once nothing is outstanding.
    pub fn shrink(&self) {
        let mut tickets = self.lock();
        if tickets.states.is_empty() && tickets.states.capacity() > 16 {
            tickets.states = VecDeque::new();
        }
    }

    fn fill(&self, seq: u64, outcome: Outcome) {
        let mut tickets = self.lock();
        let Some(state) = tickets.get_mut(seq) else {
            return;
        };
        if !matches!(state, State::Waiting) {
            return;
        }
        if let Ok(reply) = &outcome {
            self.client
                .owed_bytes
                .fetch_add(reply.bytes.len() as u64, Ordering::Relaxed);
        }
        *state = State::Filled(outcome);
        drop(tickets);
        self.waker.wake();
    }

    fn wants(&self, seq: u64) -> bool {
        !self.closed.load(Ordering::Acquire) && matches!(self.lock().get(seq), Some(State::Waiting))
    }

    fn uncount(&self, outcome: &Outcome) {
        if let Ok(reply) = outcome {
            self.client
                .owed_bytes
                .fetch_sub(reply.bytes.len() as u64, Ordering::Relaxed);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Tickets> {
        self.tickets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Tickets {
    fn index(&self, seq: u64) -> Option<usize> {
        seq.checked_sub(self.first)
            .and_then(|i| usize::try_from(i).ok())
    }

    fn get(&self, seq: u64) -> Option<&State> {
        self.index(seq).and_then(|i| self.states.get(i))
    }

    fn get_mut(&mut self, seq: u64) -> Option<&mut State> {
        self.index(seq).and_then(|i| self.states.get_mut(i))
    }

    /// Drops the tickets at the front that nobody will read again.
    fn trim(&mut self) {
        while matches!(self.states.front(), Some(State::Gone)) {
            self.states.pop_front();
            self.first += 1;
        }
    }
}

impl RingTicket {
    /// The ticket's number in its ring.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// What the session knows of the request, for the connection it takes.
    pub fn hints(&self) -> Hints {
        self.hints
    }

    /// Puts the outcome in the ticket and wakes the session.
    pub fn fill(self, outcome: Outcome) {
        self.ring.fill(self.seq, outcome);
    }

    /// Whether the session gave the request up (timed out, or the client went away): a queued
    /// request that nobody waits for is not sent.
    pub fn is_closed(&self) -> bool {
        !self.ring.wants(self.seq)
    }
}

/// Polls ticket `seq` of `ring`: ready with its outcome once filled, else registers the waker.
pub fn poll_slot(ring: &ReplyRing, seq: u64, cx: &mut Context<'_>) -> Poll<Outcome> {
    if let Some(outcome) = ring.take(seq) {
        return Poll::Ready(outcome);
    }
    ring.register(cx);
    // Filled between the look and the registration: the wake went to the old waker.
    match ring.take(seq) {
        Some(outcome) => Poll::Ready(outcome),
        None => Poll::Pending,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use bytes::Bytes;

    use super::*;
    use crate::protocol::ReplyKind;

    fn client() -> Arc<ClientHandle> {
        let addr = "127.0.0.1:1".parse().unwrap();
        let registry = Arc::new(crate::clients::ClientRegistry::default());
        Arc::clone(&registry.register(1, addr, addr, -1).handle)
    }

    fn reply(text: &'static [u8]) -> Outcome {
        Ok(Reply {
            bytes: Bytes::from_static(text),
            kind: ReplyKind::Value,
        })
    }

    #[test]
    fn replies_are_taken_by_number_whatever_order_they_fill_in() {
        let handle = client();
        let ring = ReplyRing::new(Arc::clone(&handle));
        let a = ring.reserve(Hints::default());
        let b = ring.reserve(Hints::default());
        let (sa, sb) = (a.seq(), b.seq());
        b.fill(reply(b"+B\r\n"));
        assert_eq!(
            handle.owed_bytes.load(Ordering::Relaxed),
            4,
            "counted as owed once filled"
        );
        assert!(ring.take(sa).is_none());
        a.fill(reply(b"+A\r\n"));
        assert_eq!(&ring.take(sa).unwrap().unwrap().bytes[..], b"+A\r\n");
        assert_eq!(&ring.take(sb).unwrap().unwrap().bytes[..], b"+B\r\n");
        assert_eq!(ring.outstanding(), 0);
    }

    #[test]
    fn a_forgotten_ticket_drops_its_late_reply_and_is_not_wanted() {
        let handle = client();
        let ring = ReplyRing::new(Arc::clone(&handle));
        let a = ring.reserve(Hints::default());
        let b = ring.reserve(Hints::default());
        let sb = b.seq();
        assert!(ring.forget(a.seq()).is_none());
        assert!(a.is_closed(), "a queued request given up is not sent");
        assert!(!b.is_closed());
        a.fill(reply(b"+late\r\n"));
        assert_eq!(handle.owed_bytes.load(Ordering::Relaxed), 0);
        b.fill(reply(b"+B\r\n"));
        assert!(ring.forget(sb).is_some());
        assert_eq!(
            handle.owed_bytes.load(Ordering::Relaxed),
            0,
            "forgetting uncounts"
        );
        assert_eq!(ring.outstanding(), 0);
    }

    #[test]
    fn a_closed_ring_wants_nothing_more() {
        let handle = client();
        let ring = ReplyRing::new(Arc::clone(&handle));
        let a = ring.reserve(Hints::default());
        let b = ring.reserve(Hints::default());
        a.fill(reply(b"+A\r\n"));
        ring.close();
        assert!(
            b.is_closed(),
            "a queued request of a session that ended is not sent"
        );
        b.fill(reply(b"+B\r\n"));
        assert_eq!(ring.outstanding(), 0);
    }
}
