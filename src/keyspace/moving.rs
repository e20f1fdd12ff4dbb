//! Keys being moved from one backend to another (see [`crate::migrate`]): what a route leads
//! to while its prefix moves, and the gate every request for those keys passes.
//!
//! The route table names a [`Moving`] for the prefix; the table is swapped whole when the
//! migration first appears or ends, but its [`Way`] changes in place, as often as its phase
//! does. A request for a moving key reads the way and holds the gate's read side until it is
//! answered; the replica changes the way under the write side. So once a way is set, no
//! request decided under the one before is still in flight: what a replica's acknowledgement
//! of a phase promises.

use std::time::Duration;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{RwLock, RwLockReadGuard, watch};

use super::BackendId;
use super::turns::{Order, Turn};

/// Clients with an order kept past which idle ones are forgotten.
const ORDERS_KEPT: usize = 1024;

/// How a replica routes the keys of a migration now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// To the source, as before the migration.
    Source,
    /// Held until the way changes.
    Hold,
    /// A key still on the source is moved to the target first, then the request goes to the
    /// target.
    SourceToTarget,
    /// The reverse, during an abort.
    TargetToSource,
    /// To the target.
    Target,
    /// Nowhere: this replica has not read the migration's state within its lease, and may
    /// have missed a phase.
    Fenced,
    /// The migration is over (done, aborted, or its record gone): where the routes in force
    /// send the keys, which no longer name it.
    Ended,
}

/// One prefix on its way from one backend to another, as this replica routes it.
#[derive(Debug)]
pub struct Moving {
    /// The migration's id.
    pub id: String,
    /// The backend the keys come from.
    pub from: BackendId,
    /// The backend they go to.
    pub to: BackendId,
    /// The way, with a change signal for the requests held.
    way: watch::Sender<Way>,
    /// Held (read) by each request from the moment it reads the way until it is answered;
    /// taken (write) to change the way.
    flight: RwLock<()>,
    /// Each client's order through this gate, by client id.
    orders: Mutex<HashMap<u64, Arc<Order>>>,
}

/// A request's pass through the gate: the way it was decided under, which holds until the pass
/// is dropped.
pub struct Pass<'a> {
    /// The way.
    pub way: Way,
    _flight: RwLockReadGuard<'a, ()>,
}

impl Moving {
    /// A migration of keys from `from` to `to`, routed `way` to begin with.
    pub fn new(id: String, from: BackendId, to: BackendId, way: Way) -> Moving {
        Moving {
            id,
            from,
            to,
            way: watch::Sender::new(way),
            flight: RwLock::new(()),
            orders: Mutex::default(),
        }
    }

    /// Client `client`'s next turn through this gate, taken when its request is decided.
    pub fn turn(&self, client: u64) -> Turn {
        let mut orders = self.orders.lock().unwrap_or_else(PoisonError::into_inner);
        if orders.len() >= ORDERS_KEPT {
            orders.retain(|_, order| Arc::strong_count(order) > 1 || !order.is_idle());
        }
        orders.entry(client).or_default().turn()
    }

    /// The way now (it may change as soon as this returns).
    pub fn way(&self) -> Way {
        *self.way.borrow()
    }

    /// Waits (at most `within`) for a way other than [`Way::Hold`], and returns it with the
    /// gate held: `None` when the wait ran out.
    pub async fn pass(&self, within: Duration) -> Option<Pass<'_>> {
        let deadline = tokio::time::Instant::now() + within;
        let mut changes = self.way.subscribe();
        loop {
            let flight = tokio::time::timeout_at(deadline, self.flight.read())
                .await
                .ok()?;
            let way = *changes.borrow_and_update();
            if way != Way::Hold {
                return Some(Pass {
                    way,
                    _flight: flight,
                });
            }
            drop(flight);
            tokio::time::timeout_at(deadline, changes.changed())
                .await
                .ok()?
                .ok()?;
        }
    }

    /// Sets the way once every request decided under the one before is answered; returns
    /// whether it changed.
    pub async fn set(&self, way: Way) -> bool {
        if self.way() == way {
            return false;
        }
        let _flight = self.flight.write().await;
        self.way.send_replace(way);
        true
    }
}

impl PartialEq for Moving {
    fn eq(&self, other: &Self) -> bool {
        (&self.id, self.from, self.to) == (&other.id, other.from, other.to)
    }
}

impl Eq for Moving {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_way_changes_only_once_the_requests_decided_under_the_old_one_are_answered() {
        let moving = Arc::new(Moving::new(
            "m".into(),
            BackendId(0),
            BackendId(1),
            Way::Source,
        ));
        let pass = moving.pass(Duration::from_secs(1)).await.expect("a pass");
        assert_eq!(pass.way, Way::Source);
        let setter = {
            let moving = Arc::clone(&moving);
            tokio::spawn(async move { moving.set(Way::Hold).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(moving.way(), Way::Source, "still in flight under Source");
        drop(pass);
        assert!(setter.await.expect("set"));
        assert_eq!(moving.way(), Way::Hold);
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_request_passes_when_the_way_changes_and_gives_up_at_its_deadline() {
        let moving = Arc::new(Moving::new(
            "m".into(),
            BackendId(0),
            BackendId(1),
            Way::Hold,
        ));
        assert!(
            moving.pass(Duration::from_millis(500)).await.is_none(),
            "held past its deadline"
        );
        let waiter = {
            let moving = Arc::clone(&moving);
            tokio::spawn(async move { moving.pass(Duration::from_secs(5)).await.map(|p| p.way) })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        moving.set(Way::SourceToTarget).await;
        assert_eq!(waiter.await.expect("waiter"), Some(Way::SourceToTarget));
    }
}
