//! Noticing a node held by a script: while a script or function a client sent on a shared
//! connection runs past [`HOLD_AFTER`], requests of other clients for that node take a side
//! connection instead of queueing behind it. There they get what they would get from Redis
//! straight away: `BUSY` once the node's `busy-reply-threshold` has passed, their reply once the
//! script ends, never the request timeout.
//!
//! Only a request with nothing of its client in flight before it moves (see
//! [`Hints::unordered`]): one pipelined behind its client's earlier commands stays on their
//! connection, so a client's commands still run in the order it sent them.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a script may hold a shared connection before other clients' requests go round it.
/// Scripts that serve requests end in well under a millisecond; one that runs this long is
/// likely to reach a `busy-reply-threshold`, and the requests behind it would wait for its end.
pub const HOLD_AFTER: Duration = Duration::from_millis(20);

/// What the session knows of one request, beside its bytes, that decides which connection to
/// its node it may take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hints {
    /// It runs a script or function (`EVAL`, `FCALL`, ...), which may hold the node long.
    pub runs_code: bool,
    /// Nothing of its client is in flight before it: it may take another connection than the
    /// client's usual one without overtaking any command of the client's.
    pub unordered: bool,
}

/// The scripts written on one connection and not answered yet, and since when the first of
/// them has held the node. Touched only when a script is written or answered, and looked at
/// (one atomic load when none is) for each request queued.
#[derive(Debug, Default)]
pub(super) struct Hold {
    /// Scripts written and not answered.
    scripts: AtomicU32,
    /// When the oldest of them began to hold the node, in milliseconds of [`now_ms`].
    since_ms: AtomicU64,
}

impl Hold {
    /// A script was written.
    pub(super) fn script_written(&self) {
        if self.scripts.fetch_add(1, Ordering::AcqRel) == 0 {
            self.since_ms.store(now_ms(), Ordering::Release);
        }
    }

    /// A script was answered: the next one written, if any, holds the node from now.
    pub(super) fn script_answered(&self) {
        if self.scripts.fetch_sub(1, Ordering::AcqRel) > 1 {
            self.since_ms.store(now_ms(), Ordering::Release);
        }
    }

    /// The connection ended: its scripts will not be answered on it.
    pub(super) fn clear(&self) {
        self.scripts.store(0, Ordering::Release);
    }

    /// Whether a script has held the node for [`HOLD_AFTER`] or longer.
    pub(super) fn is_held(&self) -> bool {
        self.scripts.load(Ordering::Acquire) > 0
            && now_ms().saturating_sub(self.since_ms.load(Ordering::Acquire))
                >= HOLD_AFTER.as_millis() as u64
    }
}

/// Milliseconds since the first call, on the monotonic clock.
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_holds_the_node_once_it_has_run_a_while() {
        let hold = Hold::default();
        assert!(!hold.is_held(), "no script");
        hold.script_written();
        assert!(!hold.is_held(), "just written");
        std::thread::sleep(HOLD_AFTER + Duration::from_millis(5));
        assert!(hold.is_held());
        hold.script_written();
        hold.script_answered();
        assert!(!hold.is_held(), "the second script begins now");
        hold.script_answered();
        assert!(!hold.is_held());
        hold.script_written();
        hold.clear();
        assert!(!hold.is_held(), "the connection ended");
    }
}
