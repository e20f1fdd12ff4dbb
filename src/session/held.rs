//! Work an active phase holds until every earlier reply is out ([`Held`]), and whether the
//! client's next request may join it.

use bytes::Bytes;

use super::tally::Timed;
use super::{ClientState, ReplyMode, own};
use crate::protocol::Request;

/// Whether the next request may join `held`: a transaction batch still open, while the
/// client is in `MULTI` and wants its replies (and wanted the batch's: a silenced batch drops
/// every reply in it).
pub(super) fn joinable(held: &Option<Held<'_>>, state: &ClientState, max_pipeline: usize) -> bool {
    match held {
        Some(Held::Own {
            op: own::OwnOp::Txn(batch),
            silent: false,
            ..
        }) => {
            !batch.ended()
                && batch.parts.len() < max_pipeline
                && state.txn.is_some()
                && state.reply_mode == ReplyMode::On
        }
        _ => false,
    }
}

/// Work that must wait until every earlier reply is out.
pub(super) enum Held<'a> {
    /// On the client's own connection.
    Own {
        /// The work.
        op: own::OwnOp,
        /// Timed from when it was read.
        timed: Timed<'a>,
        /// Its reply is dropped: the client asked for none (`CLIENT REPLY OFF/SKIP`).
        silent: bool,
    },
    /// A request that waits until some backend has told the proxy its commands.
    AwaitBackend(Request),
    /// An (un)subscribe for the subscription connections.
    Pubsub {
        /// Which.
        kind: crate::command::SubscriptionKind,
        /// The channels or patterns.
        names: Vec<Bytes>,
    },
}
