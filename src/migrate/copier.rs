//! Walking one side of a migration for the keys of its prefix, on every master at once. The
//! controller moves what it finds (see [`super::controller`]), or only counts it.
//!
//! Two ways to walk a master:
//! - `SCAN` with a pattern for the keys that start with the prefix and one for those that open
//!   with it as their hash tag: complete, one key per `MIGRATE` on a cluster (the keys it
//!   finds at once are of as many slots, and a cluster refuses a `MIGRATE` across slots);
//! - slot by slot (`CLUSTER GETKEYSINSLOT`), on a cluster while moving: the keys of a slot come
//!   together and move in one `MIGRATE`, many times faster. A slot holding more keys than one
//!   call returns is left to a `SCAN` walk of its master afterwards, which finds what remains.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::backend::NodePool;
use crate::cluster::{Backend, Sending, Target};
use crate::combine;
use crate::command::Access;
use crate::protocol::request::encode_command;
use crate::protocol::{Protocol, Value};

/// Keys asked of a node per `SCAN` call.
const SCAN_COUNT: &str = "500";
/// Keys asked of a slot per `CLUSTER GETKEYSINSLOT` call.
const SLOT_KEYS: usize = 1000;
/// Slots asked of a master per step of a slot walk.
const SLOTS_PER_STEP: usize = 16;

/// Where one walk stands.
pub struct Walk {
    lanes: Vec<Lane>,
    /// The `SCAN` patterns, for the lanes a slot walk leaves behind.
    patterns: Vec<Bytes>,
}

/// One master, walked one way.
struct Lane {
    pool: Arc<NodePool>,
    way: LaneWay,
    done: bool,
}

/// How a lane walks its master.
enum LaneWay {
    /// `SCAN cursor MATCH pattern`.
    Scan { pattern: Bytes, cursor: u64 },
    /// `CLUSTER GETKEYSINSLOT` for each slot left; `full` once some slot held more keys than
    /// one call returns (a `SCAN` walk of the master follows).
    Slots { left: Vec<u16>, full: bool },
}

impl Walk {
    /// A `SCAN` walk over `backend`'s masters for keys stored under `prefix` (empty when a
    /// route strips the prefix: every key there is the prefix's).
    pub fn new(backend: &Backend, prefix: &[u8]) -> Walk {
        let patterns = patterns(prefix);
        let lanes = combine::masters_in_order(&backend.slot_map())
            .into_iter()
            .flat_map(|pool| {
                patterns
                    .iter()
                    .map(move |pattern| Lane::scanning(&pool, pattern))
            })
            .collect();
        Walk { lanes, patterns }
    }

    /// The fastest walk of `backend` for moving keys: slot by slot on a cluster (each
    /// master's slots as the slot map has them now), else [`Walk::new`].
    pub fn for_moving(backend: &Backend, prefix: &[u8]) -> Walk {
        if !backend.kind().has_slots() {
            return Walk::new(backend, prefix);
        }
        let map = backend.slot_map();
        let mut lanes: Vec<Lane> = Vec::new();
        for n in 0..crate::slot::SLOT_COUNT {
            let Some(slot) = crate::slot::Slot::new(n) else {
                continue;
            };
            let Some(master) = map.master(slot) else {
                continue;
            };
            match lanes
                .iter_mut()
                .find(|lane| Arc::ptr_eq(&lane.pool, master))
            {
                Some(Lane {
                    way: LaneWay::Slots { left, .. },
                    ..
                }) => left.push(n),
                _ => lanes.push(Lane {
                    pool: Arc::clone(master),
                    way: LaneWay::Slots {
                        left: vec![n],
                        full: false,
                    },
                    done: false,
                }),
            }
        }
        for lane in &mut lanes {
            if let LaneWay::Slots { left, .. } = &mut lane.way {
                // Taken from the end.
                left.reverse();
            }
        }
        Walk {
            lanes,
            patterns: patterns(prefix),
        }
    }

    /// The next keys found (as the backend stores them; perhaps none) on every lane not yet
    /// walked, asked of all at once, or `None` once every lane is walked. An error is a node's
    /// reply, or a reply that is not `SCAN`'s: the walk should begin again (a master may have
    /// changed).
    pub async fn next(&mut self, backend: &Backend) -> Result<Option<Vec<Bytes>>, String> {
        let scans = self
            .lanes
            .iter_mut()
            .filter(|lane| !lane.done)
            .map(|lane| lane.step(backend));
        let found = futures_util::future::join_all(scans).await;
        self.follow_full_slot_walks();
        if found.is_empty() {
            return Ok(None);
        }
        let mut keys = Vec::new();
        for lane_keys in found {
            keys.extend(lane_keys?);
        }
        Ok(Some(keys))
    }
}

impl Walk {
    /// A `SCAN` walk, with every pattern, of each master whose slot walk ended with a slot
    /// fuller than one call returns.
    fn follow_full_slot_walks(&mut self) {
        let mut follow = Vec::new();
        for lane in &mut self.lanes {
            if let (true, LaneWay::Slots { full: true, .. }) = (lane.done, &lane.way) {
                follow.extend(self.patterns.iter().map(|p| Lane::scanning(&lane.pool, p)));
                lane.way = LaneWay::Slots {
                    left: Vec::new(),
                    full: false,
                };
            }
        }
        self.lanes.extend(follow);
    }
}

impl Lane {
    fn scanning(pool: &Arc<NodePool>, pattern: &Bytes) -> Lane {
        Lane {
            pool: Arc::clone(pool),
            way: LaneWay::Scan {
                pattern: pattern.clone(),
                cursor: 0,
            },
            done: false,
        }
    }

    /// One step on the lane's master: a `SCAN` call, or `GETKEYSINSLOT` for the next slots.
    async fn step(&mut self, backend: &Backend) -> Result<Vec<Bytes>, String> {
        let pool = Arc::clone(&self.pool);
        match &mut self.way {
            LaneWay::Scan { pattern, cursor } => {
                let at = cursor.to_string();
                let args: [&[u8]; 6] = [
                    b"SCAN",
                    at.as_bytes(),
                    b"MATCH",
                    pattern,
                    b"COUNT",
                    SCAN_COUNT.as_bytes(),
                ];
                let reply = call(backend, &pool, &args).await;
                let garbled = || String::from_utf8_lossy(&reply).trim_end().to_string();
                let value = Value::decode(&reply, 2).ok_or_else(garbled)?;
                let [next, keys] = value.elements().ok_or_else(garbled)? else {
                    return Err(garbled());
                };
                *cursor = next
                    .text()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(garbled)?;
                self.done = *cursor == 0;
                bulks(keys).ok_or_else(garbled)
            }
            LaneWay::Slots { left, full } => {
                let at = left.len().saturating_sub(SLOTS_PER_STEP);
                let slots = left.split_off(at);
                let count = SLOT_KEYS.to_string();
                let calls = slots.iter().map(|slot| {
                    let slot = slot.to_string();
                    let (pool, count) = (&pool, &count);
                    async move {
                        let args: [&[u8]; 4] = [
                            b"CLUSTER",
                            b"GETKEYSINSLOT",
                            slot.as_bytes(),
                            count.as_bytes(),
                        ];
                        call(backend, pool, &args).await
                    }
                });
                let mut keys = Vec::new();
                for reply in futures_util::future::join_all(calls).await {
                    let garbled = || String::from_utf8_lossy(&reply).trim_end().to_string();
                    let value = Value::decode(&reply, 1).ok_or_else(garbled)?;
                    let found = bulks(&value).ok_or_else(garbled)?;
                    *full |= found.len() >= SLOT_KEYS;
                    keys.extend(found);
                }
                self.done = left.is_empty();
                Ok(keys)
            }
        }
    }
}

/// `args` on `pool`, a master of `backend`.
async fn call(backend: &Backend, pool: &Arc<NodePool>, args: &[&[u8]]) -> Bytes {
    let mut payload = BytesMut::new();
    encode_command(&mut payload, args);
    backend
        .execute(Sending {
            payload: payload.freeze(),
            target: Target::Node(Arc::clone(pool)),
            access: Access::Read,
            protocol: Protocol::Resp2,
            db: 0,
            affinity: 0,
        })
        .await
}

/// The bulk strings of an array reply.
fn bulks(value: &Value) -> Option<Vec<Bytes>> {
    Some(
        value
            .elements()?
            .iter()
            .filter_map(|key| match key {
                Value::Bulk(key) => Some(key.clone()),
                _ => None,
            })
            .collect(),
    )
}

/// The `SCAN` patterns of keys stored under `prefix`: those starting with it, and those
/// opening with it as their hash tag.
fn patterns(prefix: &[u8]) -> Vec<Bytes> {
    let escaped = escape(prefix);
    let mut patterns = vec![Bytes::from([escaped.as_slice(), b"*"].concat())];
    if !prefix.is_empty() {
        patterns.push(Bytes::from(
            [b"\\{".as_slice(), escaped.as_slice(), b"*"].concat(),
        ));
    }
    patterns
}

/// `prefix` with the glob pattern's special characters escaped.
fn escape(prefix: &[u8]) -> Vec<u8> {
    let mut escaped = Vec::with_capacity(prefix.len() + 4);
    for &b in prefix {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            escaped.push(b'\\');
        }
        escaped.push(b);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_is_matched_literally() {
        assert_eq!(escape(b"a*b?[c]\\:"), b"a\\*b\\?\\[c\\]\\\\:".to_vec());
        assert_eq!(escape(b"archive:"), b"archive:".to_vec());
    }
}
