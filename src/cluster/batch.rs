//! Commands sent to a node together, as one batch (the parts of a split command that go to the
//! same node): what a first attempt's outcome leaves to do. Where it goes is
//! [`Backend::first_node`]'s choice, as for every attempt.
//!
//! A batch is only a first attempt. Each command's outcome goes through [`Backend::judge`], the
//! one retry engine, like any attempt of [`Backend::serve`]; whatever is not final then (a
//! redirect, a retry) is the command's alone and runs through [`Backend::execute`], so the
//! redirect, retry and write-safety rules are the same for batched and single commands.

use std::time::Duration;

use bytes::Bytes;

use super::{Backend, FirstNode, Next, SlotMap, Target, Tried};
use crate::backend::{BackendError, Reply};
use crate::command::Access;
use crate::slot::Slot;

/// What a batched command's first attempt leaves to do.
#[derive(Debug)]
pub enum Settled {
    /// Give the client this: the node's reply (an error reply included) or the proxy's error.
    Reply(Bytes),
    /// Run the command again on its own with [`Backend::execute`], after this pause.
    Again(Duration),
}

impl Backend {
    /// Judges the `outcome` of a command for `slot` sent in a batch to `node`, as
    /// [`Backend::serve`] judges an attempt: a final reply, or a pause before the command runs
    /// again on its own. A write whose fate is unknown (connection lost after writing, timeout,
    /// acknowledged by a master since replaced) is final: it is never sent twice.
    ///
    /// `map` is the slot map as it is now, after the reply (one look for a whole batch).
    pub fn settle_part(
        &self,
        map: &SlotMap,
        slot: Slot,
        access: Access,
        node: &FirstNode,
        outcome: Result<Reply, BackendError>,
    ) -> Settled {
        let target = Target::Slot(slot);
        let tried = Tried {
            target: &target,
            access,
            node: node.pool.addr(),
            on_replica: node.replica,
            asked: false,
            heal: None,
        };
        let outcome = match outcome {
            // The common case, with nothing more to judge.
            Ok(reply) if self.is_final(tried, &reply, Some(map)) => {
                return Settled::Reply(reply.bytes);
            }
            outcome => outcome,
        };
        let mut attempts = self.attempts();
        match self.judge(&mut attempts, outcome, tried) {
            Next::Reply(reply) | Next::LoadScript { reply, .. } => Settled::Reply(reply.bytes),
            Next::Fail(error) => Settled::Reply(error),
            // `judge` has already pointed the slot at the node a `MOVED` names: `execute`
            // goes there. An `ASK` is asked again of the slot's master, which answers it again.
            // A replica that failed a read leaves it to `execute`, the master if need be.
            Next::Redirect { .. } | Next::ToMaster => Settled::Again(Duration::ZERO),
            Next::Retry(delay) => Settled::Again(delay),
        }
    }
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
