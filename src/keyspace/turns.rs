//! The order of one client's requests through a migration's gate (see [`super::Moving`]):
//! each takes a turn when it is decided, in the client's order, and passes the gate only once
//! every earlier one is answered (or dropped). Requests run as futures side by side; without
//! turns, a write that moves its key first could be overtaken by a later write to the same
//! key.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

/// One client's turns.
#[derive(Debug, Default)]
pub struct Order {
    state: Mutex<Turns>,
    moved_on: Notify,
}

#[derive(Debug, Default)]
struct Turns {
    /// The next turn to give.
    next: u64,
    /// Every turn below this one is over.
    over_below: u64,
    /// Turns over out of order, above `over_below`.
    over_ahead: BTreeSet<u64>,
}

/// A request's turn: its gate is passed once [`Turn::wait`] returns; over when dropped.
#[derive(Debug)]
pub struct Turn {
    order: Arc<Order>,
    number: u64,
}

impl Order {
    /// The next turn, taken when the request is decided.
    pub fn turn(self: &Arc<Self>) -> Turn {
        let mut turns = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let number = turns.next;
        turns.next += 1;
        Turn {
            order: Arc::clone(self),
            number,
        }
    }

    /// Whether every turn given is over.
    pub fn is_idle(&self) -> bool {
        let turns = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        turns.over_below == turns.next
    }
}

impl Turn {
    /// Waits until every earlier turn is over.
    pub async fn wait(&self) {
        loop {
            let moved_on = self.order.moved_on.notified();
            {
                let turns = self
                    .order
                    .state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if turns.over_below >= self.number {
                    return;
                }
            }
            moved_on.await;
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut turns = self
            .order
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        turns.over_ahead.insert(self.number);
        loop {
            let below = turns.over_below;
            if !turns.over_ahead.remove(&below) {
                break;
            }
            turns.over_below += 1;
        }
        drop(turns);
        self.order.moved_on.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_turn_waits_for_every_earlier_one_even_when_a_later_one_ends_first() {
        let order = Arc::new(Order::default());
        let first = order.turn();
        let second = order.turn();
        let third = order.turn();
        first.wait().await;
        let waiting = tokio::spawn(async move {
            third.wait().await;
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        // The second ends before the first: the third still waits for the first.
        drop(second);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiting.is_finished());
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("the third's turn came")
            .expect("joined");
    }
}
