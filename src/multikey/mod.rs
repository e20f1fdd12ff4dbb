//! Multi-key commands whose keys span slots: split by slot, the parts for one node sent to it as
//! one batch, the replies merged in the client's order.
//!
//! `MGET`, `MSET`, `DEL`, `UNLINK`, `EXISTS` and `TOUCH` are split. A split `MSET` or `DEL` is
//! not atomic across slots: each part is.
//!
//! # Layout
//! - [`plan`]: the keys grouped by slot, once, into parts; their sub-commands encoded into one
//!   buffer.
//! - [`run`]: each part's first attempt goes with the other parts for its node as one batch
//!   (one queued job, one wake-up); a part whose reply is not final (a redirect, a node that
//!   could not take it) then runs on its own through [`Backend::execute`], so it follows the
//!   same retry and write-safety rules as any command.
//! - [`merge`]: the parts' replies combined into the client's.

mod merge;
mod plan;
#[cfg(test)]
mod tests;

use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::future::join_all;

use crate::cluster::Sending;
use crate::cluster::{Backend, FirstNode, Settled, SlotMap, Target};
use crate::command::Access;
use crate::command::policy::SplitKind;
use crate::keyspace::BackendId;
use crate::protocol::{Protocol, reply};
use crate::proxy::ProxyRef;
use crate::slot::Slot;

pub use merge::{merge, response_policy};
pub use plan::plan;

/// One sub-command: the client's keys that hash to one slot of one backend.
#[derive(Debug, Clone)]
pub struct Part {
    /// The backend of its keys.
    pub backend: BackendId,
    /// The slot all its keys hash to there.
    pub slot: Slot,
    /// Its keys in [`Split`]'s list.
    start: u32,
    end: u32,
}

/// One of the client's keys, as a part lists it.
#[derive(Debug, Clone, Copy, Default)]
struct KeyRef {
    /// Its position among the client's keys (0-based).
    position: u32,
    /// Bytes of prefix its route strips.
    strip: u32,
}

/// A split command.
#[derive(Debug, Clone)]
pub struct Split {
    kind: SplitKind,
    /// The client's command as it sent it.
    raw: Bytes,
    /// The client's command's arguments, its name first; for a multibulk request, slices of
    /// `raw`.
    args: Vec<Bytes>,
    /// Where the command's name is in `raw`, with its `$` header (empty when it must be
    /// encoded afresh): the start of every part.
    command: Range<usize>,
    /// Every key, grouped by part, each part's in the client's order.
    keys: Vec<KeyRef>,
    /// The parts, one per slot, in order of their first key.
    parts: Vec<Part>,
}

impl Split {
    /// The parts, one per slot, in order of their first key.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// The number of keys in the client's command.
    pub fn keys(&self) -> usize {
        self.keys.len()
    }

    /// The positions (0-based, among the client's keys) of `part`'s keys, ascending.
    pub fn positions<'a>(&'a self, part: &Part) -> impl ExactSizeIterator<Item = usize> + 'a {
        self.part_keys(part).iter().map(|key| key.position as usize)
    }

    fn part_keys(&self, part: &Part) -> &[KeyRef] {
        self.keys
            .get(part.start as usize..part.end as usize)
            .unwrap_or_default()
    }

    /// Whether the command only reads.
    pub fn access(&self) -> Access {
        self.kind.access()
    }

    /// How the replies combine.
    pub fn response_policy(&self) -> crate::command::ResponsePolicy {
        response_policy(self.kind)
    }

    /// The command's name in capitals, for error messages.
    fn name(&self) -> String {
        self.kind.name().to_ascii_uppercase()
    }
}

/// A node's batch: the parts whose first attempt goes to it.
struct Batch<'a> {
    cluster: &'a Backend,
    node: FirstNode,
    /// Its parts' sub-commands, contiguous in the encoded buffer.
    bytes: Range<usize>,
    /// How many parts.
    commands: usize,
}

/// A part's way through [`run`].
struct Flight {
    /// The batch of its first attempt; `None`: it runs on its own from the start.
    batch: Option<usize>,
    /// Its sub-command in the encoded buffer.
    bytes: Range<usize>,
    /// Run it on its own after this pause.
    again: Option<std::time::Duration>,
}

/// Runs the parts, the ones for each node as one batch, and merges the replies.
pub async fn run(
    proxy: ProxyRef<'_>,
    split: Split,
    protocol: Protocol,
    db: u8,
    affinity: usize,
) -> Bytes {
    let context = Context {
        proxy,
        access: split.access(),
        protocol,
        db,
        affinity,
    };
    let (mut batches, mut flights) = place(proxy, &split, context.access, affinity);
    let buffer = encode(&split, &mut batches, &mut flights);
    let mut replies: Vec<Bytes> = vec![Bytes::new(); split.parts.len()];
    first_attempts(
        &context,
        &split,
        &batches,
        &mut flights,
        &buffer,
        &mut replies,
    )
    .await;
    // The rare parts that need more than their first attempt: each on its own, in a future
    // of its own so the common case does not carry its size.
    if flights.iter().any(|flight| flight.again.is_some()) {
        Box::pin(run_alone(context, &split, &flights, &buffer, &mut replies)).await;
    }
    merge(&split, &replies, protocol)
}

/// Where each part's first attempt goes: the parts for one node of one backend share a
/// batch; a part with no first node (writes held, slot not served) has none and runs on its
/// own.
fn place<'p>(
    proxy: ProxyRef<'p>,
    split: &Split,
    access: Access,
    affinity: usize,
) -> (Vec<Batch<'p>>, Vec<Flight>) {
    let mut batches: Vec<Batch<'p>> = Vec::new();
    let mut flights: Vec<Flight> = Vec::with_capacity(split.parts.len());
    // The slot map of the backend looked at last: one look for all its parts.
    let mut map: Option<(BackendId, Arc<SlotMap>)> = None;
    for part in &split.parts {
        let cluster = proxy.backend(part.backend).map(Arc::as_ref);
        let first = cluster.and_then(|cluster| {
            if access == Access::Write && cluster.writes_held() {
                // A failover is under way: the part waits in `execute` for the new master.
                return None;
            }
            let current = match &map {
                Some((backend, map)) if *backend == part.backend => map,
                _ => &map.insert((part.backend, cluster.slot_map())).1,
            };
            let target = Target::Slot(part.slot);
            let node = cluster.first_node(current, &target, access, affinity, true)?;
            Some((cluster, node))
        });
        let batch = first.map(|(cluster, node)| {
            let same = batches.iter().position(|b| {
                std::ptr::eq(b.cluster, cluster) && Arc::ptr_eq(&b.node.pool, &node.pool)
            });
            match same {
                Some(batch) => batch,
                None => {
                    batches.push(Batch {
                        cluster,
                        node,
                        bytes: 0..0,
                        commands: 0,
                    });
                    batches.len() - 1
                }
            }
        });
        flights.push(Flight {
            batch,
            bytes: 0..0,
            again: None,
        });
    }
    (batches, flights)
}

/// Every sub-command in one buffer, each batch's contiguous: one allocation for them all. A
/// part without a batch is marked to run on its own at once.
fn encode(split: &Split, batches: &mut [Batch<'_>], flights: &mut [Flight]) -> Bytes {
    let mut buffer = BytesMut::with_capacity(split.encoded_capacity());
    for (index, batch) in batches.iter_mut().enumerate() {
        let start = buffer.len();
        for (part, flight) in split.parts.iter().zip(flights.iter_mut()) {
            if flight.batch == Some(index) {
                let at = buffer.len();
                split.encode(part, &mut buffer);
                flight.bytes = at..buffer.len();
                batch.commands += 1;
            }
        }
        batch.bytes = start..buffer.len();
    }
    for (part, flight) in split.parts.iter().zip(flights.iter_mut()) {
        if flight.batch.is_none() {
            let at = buffer.len();
            split.encode(part, &mut buffer);
            flight.bytes = at..buffer.len();
            flight.again = Some(std::time::Duration::ZERO);
        }
    }
    buffer.freeze()
}

/// Sends every batch at once, so the nodes work in parallel, then awaits them in turn: each
/// part's reply lands in `replies`, or its flight says to run it again on its own.
async fn first_attempts(
    context: &Context<'_>,
    split: &Split,
    batches: &[Batch<'_>],
    flights: &mut [Flight],
    buffer: &Bytes,
    replies: &mut [Bytes],
) {
    let Context {
        access,
        protocol,
        db,
        affinity,
        ..
    } = *context;
    let pending: Vec<_> = batches
        .iter()
        .map(|batch| {
            batch.node.pool.send_batch(
                protocol,
                affinity,
                buffer.slice(batch.bytes.clone()),
                batch.commands,
                db,
            )
        })
        .collect();
    for ((index, batch), pending) in batches.iter().enumerate().zip(pending) {
        let batched = pending.replies().await;
        let map = batch.cluster.slot_map();
        let mut answers = batched.replies.into_iter();
        let members = split
            .parts
            .iter()
            .zip(flights.iter_mut())
            .zip(replies.iter_mut())
            .filter(|((_, flight), _)| flight.batch == Some(index));
        for ((part, flight), reply) in members {
            let outcome = match (answers.next(), &batched.failure) {
                (Some(answer), _) => Ok(answer),
                (None, Some(failure)) => Err(failure.clone()),
                // Fewer replies than commands and no failure cannot happen; were it to, the
                // part's fate is unknown.
                (None, None) => Err(crate::backend::BackendError::Lost {
                    addr: batch.node.pool.addr().clone(),
                }),
            };
            match batch
                .cluster
                .settle_part(&map, part.slot, access, &batch.node, outcome)
            {
                Settled::Reply(bytes) => *reply = bytes,
                Settled::Again(delay) => flight.again = Some(delay),
            }
        }
    }
}

/// What a part needs of the client's request.
struct Context<'a> {
    proxy: ProxyRef<'a>,
    access: Access,
    protocol: Protocol,
    db: u8,
    affinity: usize,
}

/// Runs each part whose flight says so through [`Backend::execute`], all at once, after its
/// pause, its reply into `replies`.
async fn run_alone(
    context: Context<'_>,
    split: &Split,
    flights: &[Flight],
    buffer: &Bytes,
    replies: &mut [Bytes],
) {
    let context = &context;
    let alone = split
        .parts
        .iter()
        .zip(flights)
        .zip(replies.iter_mut())
        .filter_map(|((part, flight), reply)| {
            let delay = flight.again?;
            let payload = buffer.slice(flight.bytes.clone());
            Some(async move {
                *reply = match context.proxy.backend(part.backend) {
                    Some(cluster) => {
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        cluster
                            .execute(Sending {
                                payload,
                                target: Target::Slot(part.slot),
                                access: context.access,
                                protocol: context.protocol,
                                db: context.db,
                                affinity: context.affinity,
                            })
                            .await
                    }
                    None => reply::error("ERR respgate: no backend configured"),
                };
            })
        });
    join_all(alone).await;
}
