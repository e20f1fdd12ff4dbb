//! The one retry and redirect engine: what to do after an attempt to run a command on a node.
//!
//! Every path that sends a command to a node (shared connections, a client's own connection,
//! Pub/Sub connections) feeds each attempt's outcome to [`Cluster::judge`] and does what the
//! answer says, so `MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN`, `LOADING`, `MASTERDOWN` and
//! unreachable nodes are handled alike, within the same `max_redirects`, `max_retries` and
//! `retry_timeout_ms`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tracing::debug;

use super::{Cluster, Redirect, ResolveAgainst};
use crate::backend::{BackendError, NodeAddr, Reply};
use crate::command::Access;
use crate::config::ClusterConfig;
use crate::protocol::reply;

/// Error replies that mean the node did not run the command and a later attempt may succeed.
/// `READONLY` is a write that reached a master demoted to replica (a Sentinel failover, a paused
/// cluster master): after a refresh it goes to the new master.
pub const RETRYABLE_ERRORS: [&[u8]; 5] = [
    b"TRYAGAIN",
    b"CLUSTERDOWN",
    b"LOADING",
    b"MASTERDOWN",
    b"READONLY",
];

/// First pause before a retry; each further retry doubles it.
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(10);
/// Longest pause between two retries: short enough to catch a quick failover, long enough not
/// to hammer a node that is restarting.
const MAX_RETRY_DELAY: Duration = Duration::from_millis(500);

/// The limits one request's attempts stay within.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBudget {
    /// Redirects (`MOVED`, `ASK`) followed at most.
    pub max_redirects: u32,
    /// Retries after a node could not take the request, at most.
    pub max_retries: u32,
    /// Time from the first attempt after which no retry starts.
    pub retry_timeout: Duration,
}

impl From<&ClusterConfig> for RetryBudget {
    fn from(c: &ClusterConfig) -> Self {
        RetryBudget {
            max_redirects: c.max_redirects,
            max_retries: c.max_retries,
            retry_timeout: c.retry_timeout(),
        }
    }
}

/// One request's attempts so far.
#[derive(Debug, Clone)]
pub struct Attempts {
    budget: RetryBudget,
    started: Instant,
    redirects: u32,
    retries: u32,
}

impl Attempts {
    /// A request about to make its first attempt.
    pub fn new(budget: RetryBudget) -> Self {
        Attempts::since(budget, Instant::now())
    }

    /// A request whose first attempt was made at `started`.
    pub fn since(budget: RetryBudget, started: Instant) -> Self {
        Attempts {
            budget,
            started,
            redirects: 0,
            retries: 0,
        }
    }

    /// The pause before the next retry, or `None` when the budget is spent. Counts the retry.
    pub fn next_delay(&mut self) -> Option<Duration> {
        if self.retries >= self.budget.max_retries {
            return None;
        }
        let delay = (FIRST_RETRY_DELAY * (1u32 << self.retries.min(6))).min(MAX_RETRY_DELAY);
        if self.started.elapsed() + delay > self.budget.retry_timeout {
            return None;
        }
        self.retries += 1;
        Some(delay)
    }

    /// Counts a redirect; false when it is one more than `max_redirects` allows.
    fn redirect(&mut self) -> bool {
        self.redirects += 1;
        self.redirects <= self.budget.max_redirects
    }

    /// Retries made so far.
    pub fn retries(&self) -> u32 {
        self.retries
    }
}

/// What to do after an attempt.
#[derive(Debug)]
pub enum Next {
    /// Give the client this reply: the node's answer, an error reply included.
    Reply(Reply),
    /// Send again at once to `to`, preceded by `ASKING` when `asking`.
    Redirect {
        /// The node the redirect names.
        to: NodeAddr,
        /// Whether it was an `ASK`.
        asking: bool,
    },
    /// Wait this long, then send again to wherever the command routes by then.
    Retry(Duration),
    /// Give the client this error: the failure is final or the budget is spent.
    Fail(Bytes),
}

impl Cluster {
    /// A fresh retry budget for one request, from this cluster's limits.
    pub fn attempts(&self) -> Attempts {
        Attempts::new(self.retry_budget)
    }

    /// Decides what follows an attempt on `replier` that came to `outcome`, and keeps the
    /// cluster's view current on the way: a `MOVED` patches the slot map, a node that could not
    /// take the request asks for a topology refresh. A request that may have run (connection
    /// lost after sending, timeout) is retried only when `access` says running it twice is
    /// harmless.
    pub fn judge(
        &self,
        attempts: &mut Attempts,
        outcome: Result<Reply, BackendError>,
        access: Access,
        replier: &NodeAddr,
    ) -> Next {
        let reply = match outcome {
            Ok(reply) => reply,
            Err(error) => return self.judge_failure(attempts, error, access),
        };
        let Some(text) = reply.error_text() else {
            return Next::Reply(reply);
        };
        if let Some(redirect) = Redirect::parse(text) {
            if !attempts.redirect() {
                return Next::Fail(reply::error(&format!(
                    "ERR respgate: gave up after {} redirects; the cluster is changing, try again",
                    attempts.budget.max_redirects
                )));
            }
            let to = redirect.addr().resolve_against(replier);
            debug!(backend = %self.name, ?redirect, "following redirect");
            return match redirect {
                Redirect::Moved { slot, .. } => {
                    self.stats.moved.fetch_add(1, Ordering::Relaxed);
                    self.instruments.moved.increment(1);
                    self.moved(slot, &to);
                    Next::Redirect { to, asking: false }
                }
                Redirect::Ask { .. } => {
                    self.stats.ask.fetch_add(1, Ordering::Relaxed);
                    self.instruments.ask.increment(1);
                    Next::Redirect { to, asking: true }
                }
            };
        }
        let code = text.split(|&b| b == b' ').next().unwrap_or_default();
        if !RETRYABLE_ERRORS.contains(&code) {
            return Next::Reply(reply);
        }
        self.request_refresh();
        match self.retry_after(attempts) {
            Some(delay) => Next::Retry(delay),
            // The node's own error says best what went wrong.
            None => Next::Reply(reply),
        }
    }

    fn judge_failure(&self, attempts: &mut Attempts, error: BackendError, access: Access) -> Next {
        let may_retry = match &error {
            BackendError::Auth { .. }
            | BackendError::Protocol { .. }
            | BackendError::Refused { .. } => false,
            error if error.surely_not_sent() => true,
            _ => access == Access::Read,
        };
        if matches!(
            error,
            BackendError::Unreachable { .. }
                | BackendError::Lost { .. }
                | BackendError::Timeout { .. }
        ) {
            // The node may have failed over or moved: look again.
            self.request_refresh();
        }
        if may_retry && let Some(delay) = self.retry_after(attempts) {
            return Next::Retry(delay);
        }
        Next::Fail(self.backend_error(&error))
    }

    fn retry_after(&self, attempts: &mut Attempts) -> Option<Duration> {
        let delay = attempts.next_delay()?;
        self.stats.retries.fetch_add(1, Ordering::Relaxed);
        self.instruments.retries.increment(1);
        Some(delay)
    }

    /// The error reply for a request that failed without a reply, counted as a backend error.
    pub fn backend_error(&self, error: &BackendError) -> Bytes {
        self.stats.backend_errors.fetch_add(1, Ordering::Relaxed);
        reply::error(&format!("ERR respgate: {error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn delays_grow_and_stop_at_the_budget() {
        let mut attempts = Attempts::new(RetryBudget {
            max_redirects: 5,
            max_retries: 4,
            retry_timeout: Duration::from_secs(10),
        });
        let delays: Vec<_> = std::iter::from_fn(|| attempts.next_delay()).collect();
        assert_eq!(
            delays,
            [10, 20, 40, 80].map(Duration::from_millis).to_vec(),
            "four retries, doubling"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_retry_starts_past_the_retry_timeout() {
        let mut attempts = Attempts::new(RetryBudget {
            max_redirects: 5,
            max_retries: 100,
            retry_timeout: Duration::from_millis(100),
        });
        assert!(attempts.next_delay().is_some());
        tokio::time::advance(Duration::from_millis(95)).await;
        assert_eq!(attempts.next_delay(), None);
    }
}
