//! A node's spare connections: one per worker and protocol, opened and handshaken ahead of
//! need, taken by the next client that needs a connection of its own to the node (a blocking
//! command, a transaction) as the backend's user on database 0.
//!
//! Without one, a client's first blocking command waits for a connect and a handshake while
//! another client's command, sent just after it on a shared connection, reaches the node
//! first: on one Redis, the command sent first is run first. A spare is checked before it is
//! given out (one that the node closed meanwhile is dropped), and a new one is opened in the
//! background after each one taken, or after an own connection had to be opened without one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::FutureExt;

use super::{ConnSettings, NodeAddr, NodeConn};
use crate::protocol::Protocol;

/// One worker's spare for one protocol.
#[derive(Default)]
struct Slot {
    conn: Mutex<Option<NodeConn>>,
    /// A spare is being opened: no second one is started.
    opening: AtomicBool,
}

/// The spares of one node, indexed by worker (the last for every other thread) and protocol.
pub(super) struct Spares {
    slots: Box<[[Slot; 2]]>,
}

impl Spares {
    /// No spare yet, for `workers` workers.
    pub(super) fn new(workers: usize) -> Spares {
        Spares {
            slots: (0..=workers).map(|_| Default::default()).collect(),
        }
    }

    /// Takes `worker`'s spare for `protocol` when there is one and the node has not closed it.
    pub(super) fn take(&self, worker: usize, protocol: Protocol) -> Option<NodeConn> {
        let slot = self.slot(worker, protocol)?;
        let mut conn = lock(&slot.conn).take()?;
        // One look at the socket without waiting: an idle spare has nothing to read, so
        // anything (its end, or bytes nobody asked for) means it cannot be used.
        match conn.read_reply().now_or_never() {
            None => Some(conn),
            Some(_) => None,
        }
    }

    /// Opens a spare for `worker` and `protocol` in the background on this worker's runtime,
    /// unless one is there or being opened. A failure leaves none: the next own connection is
    /// opened as before, and asks for a spare again.
    pub(super) fn refill(
        self: &Arc<Self>,
        worker: usize,
        protocol: Protocol,
        addr: &NodeAddr,
        settings: &Arc<ConnSettings>,
    ) {
        let Some(slot) = self.slot(worker, protocol) else {
            return;
        };
        if lock(&slot.conn).is_some() || slot.opening.swap(true, Ordering::AcqRel) {
            return;
        }
        let (spares, addr, settings) = (Arc::clone(self), addr.clone(), Arc::clone(settings));
        tokio::spawn(async move {
            let opened = NodeConn::open(&addr, protocol, &settings).await;
            if let Some(slot) = spares.slot(worker, protocol) {
                if let Ok(conn) = opened {
                    *lock(&slot.conn) = Some(conn);
                }
                slot.opening.store(false, Ordering::Release);
            }
        });
    }

    fn slot(&self, worker: usize, protocol: Protocol) -> Option<&Slot> {
        let last = self.slots.len().checked_sub(1)?;
        self.slots
            .get(worker.min(last))
            .and_then(|slots| slots.get(protocol.index()))
    }
}

/// The slot's lock; a panic while it was held leaves the spare as it was.
fn lock(conn: &Mutex<Option<NodeConn>>) -> MutexGuard<'_, Option<NodeConn>> {
    conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
