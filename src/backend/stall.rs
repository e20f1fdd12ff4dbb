//! Noticing a node that has stopped answering: commands wait on a connection and no reply
//! comes through a whole look. A stall asks for the topology again (a failover may be under
//! way), and a connection whose node left the topology gives up on a stalled node at once.

use std::sync::Mutex;

use super::shared::{Queue, lock};

/// What the last looks at a connection's queue saw, carried from one watch to the next.
#[derive(Default)]
pub(super) struct Silence {
    /// How many replies had been read at the last look, if commands were waiting then.
    answered: Option<u64>,
    /// Whether the last look found commands that had waited through a whole look unanswered.
    stalled: bool,
}

impl Silence {
    /// Whether the node was stalled at the last look and has answered nothing since.
    pub(super) fn still(&self, waiting: &Mutex<Queue>) -> bool {
        let now = lock(waiting).unanswered();
        self.stalled && now.is_some() && self.answered == now
    }
}

/// Looks at the queue every `every`; each time commands have waited through a whole look with
/// no reply read, calls `on_stall`, and returns once it says false.
pub(super) async fn watch_for_stalls(
    waiting: &Mutex<Queue>,
    every: std::time::Duration,
    silence: &mut Silence,
    mut on_stall: impl FnMut() -> bool,
) {
    loop {
        tokio::time::sleep(every).await;
        let now = lock(waiting).unanswered();
        silence.stalled = now.is_some() && now == silence.answered;
        silence.answered = now;
        if silence.stalled && !on_stall() {
            return;
        }
    }
}
