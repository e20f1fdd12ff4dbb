//! Asking one node one question on a connection of its own (`CLUSTER NODES`, `COMMAND`, a
//! sentinel's `SENTINEL GET-MASTER-ADDR-BY-NAME`), and what can go wrong learning the topology:
//! shared by the cluster's refresh ([`super::topology`]) and the sentinels' ([`super::sentinel`]).

use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use thiserror::Error;

use crate::backend::{BackendError, ConnSettings, NodeAddr, request_once};
use crate::protocol::Value;

/// The topology could not be learned from a node.
#[derive(Debug, Error)]
pub enum TopologyError {
    /// The node could not be asked.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The node answered with an error (for example, cluster support disabled).
    #[error("{addr} answered {command} with: {reply}")]
    Refused {
        /// The node.
        addr: NodeAddr,
        /// The command asked.
        command: &'static str,
        /// The error reply.
        reply: String,
    },
    /// No sentinel named a master that confirms it is one.
    #[error("no sentinel names a usable master for '{master_name}': {reason}")]
    NoMaster {
        /// The master's name in the sentinels' configuration.
        master_name: String,
        /// What the sentinels and nodes said, last first.
        reason: String,
    },
    /// Nodes answered, but none serves any slot: the cluster is not created yet.
    #[error("the nodes serve no slot yet; is the cluster created (redis-cli --cluster create)?")]
    NoSlots,
    /// The reply did not have the documented shape.
    #[error("{addr} sent an unexpected {command} reply")]
    Malformed {
        /// The node.
        addr: NodeAddr,
        /// The command asked.
        command: &'static str,
    },
}

/// Runs `asks` at once and returns their answers as they come: all of them, or, once one is
/// `useful`, those that come within `grace` after it. A node or sentinel that does not answer
/// must not hold up what the others already know, and live ones answer within milliseconds
/// of each other.
pub(super) async fn answers_within_grace<T>(
    asks: impl IntoIterator<Item = impl Future<Output = T>>,
    grace: Duration,
    useful: impl Fn(&T) -> bool,
) -> Vec<T> {
    let mut pending: FuturesUnordered<_> = asks.into_iter().collect();
    let mut answers = Vec::new();
    let mut grace_until = None;
    loop {
        let next = match grace_until {
            Some(deadline) => match tokio::time::timeout_at(deadline, pending.next()).await {
                Ok(next) => next,
                Err(_) => break,
            },
            None => pending.next().await,
        };
        let Some(answer) = next else {
            break;
        };
        if useful(&answer) {
            grace_until.get_or_insert_with(|| tokio::time::Instant::now() + grace);
        }
        answers.push(answer);
    }
    answers
}

/// Deepest nesting a topology or command-table reply may have (`COMMAND` in RESP2 nests 4
/// levels: commands, a command, its key specs, a key spec's fields).
const MAX_TOPOLOGY_DEPTH: usize = 8;

/// Sends `args` to `addr` on a connection of its own (with `settings`) and decodes the reply;
/// `command` names it in errors.
pub(super) async fn ask(
    addr: &NodeAddr,
    args: &[&str],
    settings: &ConnSettings,
    command: &'static str,
) -> Result<Value, TopologyError> {
    let reply = request_once(addr, args, settings).await?;
    if let Some(text) = reply.error_text() {
        return Err(TopologyError::Refused {
            addr: addr.clone(),
            command,
            reply: String::from_utf8_lossy(text).into_owned(),
        });
    }
    // A reply nested deeper than any topology reply is refused, so a broken or hostile node
    // cannot exhaust the refresher's stack.
    Value::decode(&reply.bytes, MAX_TOPOLOGY_DEPTH).ok_or_else(|| TopologyError::Malformed {
        addr: addr.clone(),
        command,
    })
}
