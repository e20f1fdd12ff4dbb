//! The one retry and redirect engine: what to do after an attempt to run a command on a node.
//!
//! Every path that sends a command to a node (shared connections, a client's own connection,
//! Pub/Sub connections) feeds each attempt's outcome to [`Backend::judge`] and does what the
//! answer says, so `MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN`, `LOADING`, `MASTERDOWN` and
//! unreachable nodes are handled alike, within the same `max_redirects`, `max_retries` and
//! `retry_timeout_ms`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tracing::debug;

use super::{Backend, Redirect, ResolveAgainst, SlotMap, Target};
use crate::backend::{BackendError, NodeAddr, Reply};
use crate::command::Access;
use crate::config::{BackendConfig, ReadFrom};
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

impl From<&BackendConfig> for RetryBudget {
    fn from(c: &BackendConfig) -> Self {
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

    /// Waits out the pause before the next retry, counting it; false, at once, when the budget
    /// is spent. The one way a loop that retries around the topology (a subscription to place
    /// again, a command table to learn) paces itself, as the attempt loop does.
    pub async fn pause(&mut self) -> bool {
        match self.next_delay() {
            Some(delay) => {
                tokio::time::sleep(delay).await;
                true
            }
            None => false,
        }
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
    /// A read failed on a replica (`read_from = "prefer-replica"`): send it to the slot's
    /// master now, counting no retry.
    ToMaster,
    /// The node lacks a script the proxy has seen (a promoted replica does not inherit the
    /// script cache): run `load` (`SCRIPT LOAD` of its body) there, then send the command
    /// again to the same node; give the client `reply` if the load fails.
    LoadScript {
        /// The `SCRIPT LOAD` to send first.
        load: Bytes,
        /// The node's `NOSCRIPT` reply.
        reply: Reply,
    },
}

/// One attempt as [`Backend::judge`] weighs its outcome.
#[derive(Debug, Clone, Copy)]
pub struct Tried<'a> {
    /// Where the command was routed: a write acknowledged for a slot by a node no longer its
    /// master is not taken as done.
    pub target: &'a Target,
    /// Whether it only reads.
    pub access: Access,
    /// The node that answered, or failed.
    pub node: &'a NodeAddr,
    /// Whether that node is a replica serving a read.
    pub on_replica: bool,
    /// Whether it was sent with `ASKING`: the node answered as the importing master of a slot
    /// being migrated, which no slot map names as the slot's master until the migration ends
    /// (a master that joined empty serves no slot at all yet), so it was not replaced.
    pub asked: bool,
    /// The command, when a `NOSCRIPT` may be healed by loading its script (once per command).
    pub heal: Option<&'a Bytes>,
}

impl Backend {
    /// A fresh retry budget for one request, from this cluster's limits.
    pub fn attempts(&self) -> Attempts {
        Attempts::new(self.retry_budget)
    }

    /// Decides what follows the attempt `tried` that came to `outcome`, and keeps the
    /// cluster's view current on the way: a `MOVED` patches the slot map, a node that could not
    /// take the request asks for a topology refresh. A request that may have run (connection
    /// lost after sending, timeout, a write acknowledged by a master since replaced) is retried
    /// only when its access says running it twice is harmless. The one judge of every attempt:
    /// a forwarded command's, a split part's, a command on a client's own connection.
    pub fn judge(
        &self,
        attempts: &mut Attempts,
        outcome: Result<Reply, BackendError>,
        tried: Tried<'_>,
    ) -> Next {
        let access = tried.access;
        let reply = match outcome {
            Ok(reply) if self.replaced_while_writing(tried, &reply, None) => {
                // The node acknowledged a write after the cluster made another node master
                // of the slot (it was paused, then resumed): the write will be undone when
                // it rejoins as a replica, so an OK would be a lie.
                let lost = BackendError::Lost {
                    addr: tried.node.clone(),
                };
                return self.judge_failure(attempts, lost, access);
            }
            Ok(reply) => reply,
            Err(error) if tried.on_replica && self.config.read_from == ReadFrom::PreferReplica => {
                debug!(backend = %self.name, %error, "replica failed a read; asking the master");
                return Next::ToMaster;
            }
            Err(error) => return self.judge_failure(attempts, error, access),
        };
        let Some(text) = reply.error_text() else {
            return Next::Reply(reply);
        };
        if text.starts_with(b"NOSCRIPT")
            && let Some(load) = tried.heal.and_then(|p| self.scripts.load_command_for(p))
        {
            return Next::LoadScript { load, reply };
        }
        let replier = tried.node;
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

    /// Whether `reply` is final as it is: not an error, and not a write acknowledged by a node
    /// that another node has replaced as its slot's master on `map` (the current slot map,
    /// looked at only for a write: `None` loads it then). The judge's first question, asked
    /// alone where a reply is most often final.
    #[inline]
    pub fn is_final(&self, tried: Tried<'_>, reply: &Reply, map: Option<&SlotMap>) -> bool {
        reply.error_text().is_none() && !self.replaced_while_writing(tried, reply, map)
    }

    /// Whether `tried` was a write that its node acknowledged for a slot that, on `map` (the
    /// current one when `None`), another master serves now, the node being a master no more.
    /// Never after `ASKING`: the map names the importing node only once the migration ends.
    fn replaced_while_writing(
        &self,
        tried: Tried<'_>,
        reply: &Reply,
        map: Option<&SlotMap>,
    ) -> bool {
        let Target::Slot(slot) = tried.target else {
            return false;
        };
        if tried.access != Access::Write || tried.asked || reply.error_text().is_some() {
            return false;
        }
        let replaced = |map: &SlotMap| {
            map.master(*slot)
                .is_some_and(|now| now.addr() != tried.node)
                && !map.is_master(tried.node)
        };
        match map {
            Some(map) => replaced(map),
            None => replaced(&self.map.load()),
        }
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
