//! The one attempt loop: every command that goes to a node after its first attempt (or without
//! one) runs here, whatever carries it. The loop picks the node once per attempt
//! ([`Backend::first_node`], or the node a redirect named), waits while writes are held, has
//! the [`Carrier`] send, hands the outcome to the one judge ([`Backend::judge`]) and does what
//! it says, within the retry budget. A carrier only sends: the shared pipelined connections
//! ([`Backend::serve_after`]) and a client's own connection (`session::own`) are two carriers
//! of the same loop.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;

use super::{Attempts, Backend, Next, Target, Tried};
use crate::backend::{BackendError, NodePool, Reply};
use crate::command::Access;
use crate::protocol::reply;

/// One command's course through the loop.
pub struct Course<'a> {
    /// The command in RESP, for the judge (a `NOSCRIPT` healed names its script).
    pub payload: &'a Bytes,
    /// Where it goes.
    pub target: &'a Target,
    /// What the judge weighs its outcomes as: a read may go to a replica and be sent again.
    pub access: Access,
    /// Which of a node's replicas a read prefers.
    pub affinity: usize,
    /// Whether a read may go to a replica (per `read_from`) until one fails it.
    pub to_replica: bool,
    /// Whether a `NOSCRIPT` may be healed by loading the script (once per command).
    pub heal: bool,
    /// The retry budget, counted from the command's first attempt.
    pub attempts: Attempts,
}

/// What the attempts so far leave for the next.
struct Progress {
    /// Whether a missing script was loaded already.
    script_loaded: bool,
    /// Set by a redirect: the node to send to next, and whether `ASKING` goes first.
    redirected: Option<(Arc<NodePool>, bool)>,
}

/// One attempt made: its node, whether `ASKING` went first, whether the node is a replica
/// serving a read, and the outcome.
type Attempted = (Arc<NodePool>, bool, bool, Result<Reply, BackendError>);

/// What follows one attempt.
enum Step {
    /// The reply to give, and the node that gave it.
    Done(Bytes, Option<Arc<NodePool>>),
    /// Another attempt.
    Again,
}

impl Backend {
    /// Runs `course` through `carrier` until the judge gives a reply or an error, going on
    /// from `first` (a first attempt's node and outcome) when there was one; returns the
    /// reply bytes and the node that gave them (none when no node was reached).
    pub async fn attempt_loop<C: Carrier>(
        &self,
        mut first: Option<(Arc<NodePool>, Result<Reply, BackendError>)>,
        mut course: Course<'_>,
        carrier: &mut C,
    ) -> (Bytes, Option<Arc<NodePool>>) {
        let mut progress = Progress {
            script_loaded: !course.heal,
            redirected: None,
        };
        loop {
            // The first attempt's outcome, when there was one, is judged like any other.
            let (pool, asking, on_replica, sent) = match first.take() {
                Some((pool, outcome)) => (pool, false, false, outcome),
                None => match self.attempt(&mut course, &mut progress, carrier).await {
                    Ok(Some(tried)) => tried,
                    Ok(None) => continue,
                    Err(done) => return done,
                },
            };
            match self
                .judge_outcome(
                    &mut course,
                    &mut progress,
                    carrier,
                    sent,
                    (pool, asking, on_replica),
                )
                .await
            {
                Step::Done(bytes, pool) => return (bytes, pool),
                Step::Again => {}
            }
        }
    }

    /// Makes one attempt: the node chosen (or the one a redirect named), writes held during a
    /// failover waited for, the command sent. `Ok(None)`: nothing was sent, choose again after
    /// the pause taken; `Err`: the reply to give, the budget spent.
    async fn attempt<C: Carrier>(
        &self,
        course: &mut Course<'_>,
        progress: &mut Progress,
        carrier: &mut C,
    ) -> Result<Option<Attempted>, (Bytes, Option<Arc<NodePool>>)> {
        let redirected = progress.redirected.take();
        let was_redirected = redirected.is_some();
        let next = match redirected {
            Some((pool, asking)) => Some((pool, asking, false)),
            None => self
                .first_node(
                    &self.map.load(),
                    course.target,
                    course.access,
                    course.affinity,
                    course.to_replica,
                )
                .map(|node| (node.pool, false, node.replica)),
        };
        let Some((pool, asking, on_replica)) = next else {
            return match course.attempts.next_delay() {
                Some(delay) => {
                    tokio::time::sleep(delay).await;
                    Ok(None)
                }
                None => Err((reply::error(&self.no_route_error(course.target)), None)),
            };
        };
        if course.access == Access::Write && self.writes_held() {
            // A failover is under way: a write now could be acknowledged by the master about
            // to be demoted, and lost. Wait for the new master.
            return match course.attempts.next_delay() {
                Some(delay) => {
                    self.wait_while_held(delay).await;
                    // A node a redirect named stays the next; any other is chosen again, from
                    // the map the failover leaves.
                    if was_redirected {
                        progress.redirected = Some((pool, asking));
                    }
                    Ok(None)
                }
                None => Err((reply::error(&self.failing_over_error()), Some(pool))),
            };
        }
        let sent = carrier.send(&pool, asking).await;
        Ok(Some((pool, asking, on_replica, sent)))
    }

    /// One attempt's outcome on `pool` (sent with `ASKING` when `asking`, to a replica when
    /// `on_replica`): the reply to give, or another attempt (after the pause or redirect
    /// [`Backend::judge`] chose, noted in `progress`).
    async fn judge_outcome<C: Carrier>(
        &self,
        course: &mut Course<'_>,
        progress: &mut Progress,
        carrier: &mut C,
        sent: Result<Reply, BackendError>,
        (pool, asking, on_replica): (Arc<NodePool>, bool, bool),
    ) -> Step {
        let tried = Tried {
            target: course.target,
            access: course.access,
            node: pool.addr(),
            on_replica,
            asked: asking,
            heal: (!progress.script_loaded).then_some(course.payload),
        };
        match self.judge(&mut course.attempts, sent, tried) {
            Next::Reply(reply) => Step::Done(reply.bytes, Some(pool)),
            Next::ToMaster => {
                course.to_replica = false;
                Step::Again
            }
            Next::LoadScript { load, reply } => {
                progress.script_loaded = true;
                if !carrier.load_script(&pool, load).await {
                    return Step::Done(reply.bytes, Some(pool));
                }
                progress.redirected = Some((pool, asking));
                Step::Again
            }
            Next::Fail(error) => Step::Done(error, Some(pool)),
            Next::Redirect { to, asking } => {
                progress.redirected = Some((self.pools.pool(&to), asking));
                Step::Again
            }
            Next::Retry(delay) => {
                tokio::time::sleep(delay).await;
                Step::Again
            }
        }
    }
}

/// What sends a command's attempts to a node.
pub trait Carrier {
    /// Sends the command to `pool`'s node (after `ASKING` when `asking`) and waits for its
    /// reply, within the request timeout.
    fn send(
        &mut self,
        pool: &Arc<NodePool>,
        asking: bool,
    ) -> impl Future<Output = Result<Reply, BackendError>>;

    /// Loads a script on `pool`'s node with `load` (the `SCRIPT LOAD` the judge chose);
    /// whether it is loaded now.
    fn load_script(&mut self, pool: &Arc<NodePool>, load: Bytes) -> impl Future<Output = bool>;
}
