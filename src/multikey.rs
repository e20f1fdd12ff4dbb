//! Multi-key commands whose keys span slots: split by slot, sent in parallel, merged in the
//! client's order.
//!
//! `MGET`, `MSET`, `DEL`, `UNLINK`, `EXISTS` and `TOUCH` are split; each part follows redirects
//! and retries on its own. A split `MSET` or `DEL` is not atomic across slots: each part is.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::future::join_all;

use crate::cluster::{Access, Slot, Target};
use crate::keyspace::{BackendId, Place, RouteTable};
use crate::protocol::request::encode_command;
use crate::protocol::{Protocol, ReplyKind, frame_reply, reply};
use crate::proxy::ProxyRef;

/// How the parts' replies combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// `MGET`: each part's array elements go back to their keys' positions.
    Values,
    /// `MSET`: `+OK` when every part answered `+OK`.
    AllOk,
    /// `DEL`, `UNLINK`, `EXISTS`, `TOUCH`: the parts' integers summed.
    Sum,
}

/// One sub-command for one slot of one backend.
#[derive(Debug, Clone)]
pub struct Part {
    /// The backend of its keys.
    pub backend: BackendId,
    /// The slot all its keys hash to there.
    pub slot: Slot,
    /// The sub-command in RESP.
    pub payload: Bytes,
    /// Positions (0-based, among the client's keys) of this part's keys, in the part's order.
    pub positions: Vec<usize>,
}

/// A split command.
#[derive(Debug, Clone)]
pub struct Split {
    /// The command name as the client wrote it, for error messages.
    pub name: String,
    /// How the replies combine.
    pub merge: Merge,
    /// The parts, one per slot.
    pub parts: Vec<Part>,
    /// Number of keys in the client's command.
    pub keys: usize,
    /// Whether the command only reads.
    pub access: Access,
}

/// Plans the split of `args` if the command is splittable and its keys span several slots or
/// backends (`routes` says which backend each key is on, and which prefix it loses there).
/// `None` means: not splittable (the caller answers `CROSSSLOT`) or a single slot (forward).
pub fn plan(name: &str, args: &[Bytes], routes: &RouteTable) -> Option<Split> {
    let (merge, step, access) = match name {
        "mget" => (Merge::Values, 1, Access::Read),
        "exists" => (Merge::Sum, 1, Access::Read),
        "del" | "unlink" | "touch" => (Merge::Sum, 1, Access::Write),
        "mset" => (Merge::AllOk, 2, Access::Write),
        _ => return None,
    };
    let body = args.get(1..)?;
    if body.is_empty() || body.len() % step != 0 {
        return None;
    }
    let command = args.first()?;
    // Each key's place, and how many bytes of it its route strips.
    let located = body
        .chunks(step)
        .map(|chunk| {
            chunk.first().map(|key| {
                if routes.is_single() {
                    let backend = routes.default_backend();
                    let place = Place {
                        backend,
                        slot: routes.slot_on(backend, key),
                    };
                    return (place, 0);
                }
                let route = routes.route(key);
                let slot =
                    routes.slot_on(route.backend, key.get(route.strip..).unwrap_or_default());
                let place = Place {
                    backend: route.backend,
                    slot,
                };
                (place, route.strip)
            })
        })
        .collect::<Option<Vec<(Place, usize)>>>()?;
    let (places, members) = group_positions(located.iter().map(|(place, _)| *place));
    if places.len() < 2 {
        return None;
    }
    let parts = places
        .into_iter()
        .zip(members)
        .map(|(place, positions)| {
            let mut sub: Vec<&[u8]> = Vec::with_capacity(1 + positions.len() * step);
            sub.push(command);
            for &p in &positions {
                let strip = located.get(p).map_or(0, |(_, strip)| *strip);
                for (i, arg) in body
                    .get(p * step..p * step + step)
                    .unwrap_or_default()
                    .iter()
                    .enumerate()
                {
                    // The key (first of its chunk) as its backend knows it.
                    let arg: &[u8] = if i == 0 {
                        arg.get(strip..).unwrap_or_default()
                    } else {
                        arg
                    };
                    sub.push(arg);
                }
            }
            let mut payload = BytesMut::new();
            encode_command(&mut payload, &sub);
            Part {
                backend: place.backend,
                slot: place.slot,
                payload: payload.freeze(),
                positions,
            }
        })
        .collect();
    Some(Split {
        name: name.to_string(),
        merge,
        parts,
        keys: body.len() / step,
        access,
    })
}

/// Groups positions by value, groups in order of first appearance (so the merge walks them
/// predictably), each group's positions ascending.
///
/// One map lookup per key: the cost is linear in the number of keys whatever the number of
/// distinct slots, where a search of the groups per key cost keys x slots (650 ms of a
/// worker's time for an `MGET` of 100,000 keys).
fn group_positions<K: Copy + Eq + Hash>(
    values: impl IntoIterator<Item = K>,
) -> (Vec<K>, Vec<Vec<usize>>) {
    let mut firsts: Vec<K> = Vec::new();
    let mut members: Vec<Vec<usize>> = Vec::new();
    let mut group_of: HashMap<K, usize> = HashMap::new();
    for (position, value) in values.into_iter().enumerate() {
        match group_of.entry(value) {
            Entry::Occupied(group) => {
                if let Some(positions) = members.get_mut(*group.get()) {
                    positions.push(position);
                }
            }
            Entry::Vacant(group) => {
                group.insert(firsts.len());
                firsts.push(value);
                members.push(vec![position]);
            }
        }
    }
    (firsts, members)
}

/// Runs every part at once, each on its backend, and merges the replies.
pub async fn run(
    proxy: ProxyRef<'_>,
    split: Split,
    protocol: Protocol,
    db: u8,
    affinity: usize,
) -> Bytes {
    let replies = join_all(split.parts.iter().map(|part| async move {
        match proxy.backend(part.backend) {
            Some(cluster) => {
                cluster
                    .execute(
                        part.payload.clone(),
                        Target::Slot(part.slot),
                        split.access,
                        protocol,
                        db,
                        affinity,
                    )
                    .await
            }
            None => reply::error("ERR respgate: no backend configured"),
        }
    }))
    .await;
    merge(&split, &replies, protocol)
}

/// Combines the parts' replies (in `split.parts` order) into the client's reply.
pub fn merge(split: &Split, replies: &[Bytes], protocol: Protocol) -> Bytes {
    // Any error stands for the whole command.
    for (part, reply) in split.parts.iter().zip(replies) {
        if let Ok(Some(frame)) = frame_reply(reply, protocol)
            && let ReplyKind::Error(start, end) = frame.kind
        {
            let text = String::from_utf8_lossy(reply.get(start..end).unwrap_or_default());
            if split.merge == Merge::AllOk {
                return reply::error(&format!(
                    "ERR respgate: {} partly failed: the part for slot {} answered: {text}; the other parts were applied",
                    split.name.to_ascii_uppercase(),
                    part.slot.get()
                ));
            }
            return reply.clone();
        }
    }
    match split.merge {
        Merge::AllOk => Bytes::from_static(reply::OK),
        Merge::Sum => {
            let mut total: i64 = 0;
            for reply in replies {
                match reply
                    .strip_prefix(b":")
                    .and_then(|r| r.strip_suffix(b"\r\n"))
                {
                    Some(digits) => {
                        total += crate::protocol::request::parse_int(digits).unwrap_or(0);
                    }
                    None => return unexpected(split),
                }
            }
            let mut out = reply::ReplyBuf::new(protocol);
            out.integer(total);
            out.finish()
        }
        Merge::Values => {
            let mut slots: Vec<Option<&[u8]>> = vec![None; split.keys];
            for (part, reply) in split.parts.iter().zip(replies) {
                let Some(elements) = crate::fanout::array_elements(reply, protocol) else {
                    return unexpected(split);
                };
                if elements.len() != part.positions.len() {
                    return unexpected(split);
                }
                for (&position, element) in part.positions.iter().zip(elements) {
                    if let Some(slot) = slots.get_mut(position) {
                        *slot = Some(element);
                    }
                }
            }
            let mut out =
                BytesMut::with_capacity(replies.iter().map(Bytes::len).sum::<usize>() + 16);
            out.put_u8(b'*');
            crate::protocol::request::put_decimal(&mut out, split.keys as u64);
            out.put_slice(b"\r\n");
            for element in slots {
                match element {
                    Some(bytes) => out.put_slice(bytes),
                    None => return unexpected(split),
                }
            }
            out.freeze()
        }
    }
}

fn unexpected(split: &Split) -> Bytes {
    reply::error(&format!(
        "ERR respgate: unexpected reply to a part of {}",
        split.name.to_ascii_uppercase()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single() -> RouteTable {
        RouteTable::single(BackendId(0))
    }

    fn args(a: &[&str]) -> Vec<Bytes> {
        a.iter().map(|s| Bytes::from(s.to_string())).collect()
    }

    #[test]
    fn single_slot_and_unsplittable_commands_are_not_split() {
        assert!(plan("mget", &args(&["MGET", "{a}1", "{a}2"]), &single()).is_none());
        assert!(plan("msetnx", &args(&["MSETNX", "a", "1", "b", "2"]), &single()).is_none());
        assert!(
            plan("mset", &args(&["MSET", "a", "1", "b"]), &single()).is_none(),
            "odd MSET is the backend's error"
        );
    }

    #[test]
    fn mget_splits_by_slot_and_merges_in_client_order() {
        let split = plan("mget", &args(&["MGET", "a", "b", "{a}x", "c"]), &single()).unwrap();
        assert_eq!(split.keys, 4);
        let first = &split.parts[0];
        assert_eq!(first.positions, vec![0, 2], "a and {{a}}x share a slot");
        assert_eq!(
            &first.payload[..],
            b"*3\r\n$4\r\nMGET\r\n$1\r\na\r\n$4\r\n{a}x\r\n"
        );
        let replies: Vec<Bytes> = split
            .parts
            .iter()
            .map(|p| {
                let mut out = BytesMut::new();
                out.put_slice(format!("*{}\r\n", p.positions.len()).as_bytes());
                for &pos in &p.positions {
                    if pos == 3 {
                        out.put_slice(b"$-1\r\n");
                    } else {
                        out.put_slice(format!("$2\r\nv{pos}\r\n").as_bytes());
                    }
                }
                out.freeze()
            })
            .collect();
        let merged = merge(&split, &replies, Protocol::Resp2);
        assert_eq!(
            &merged[..],
            b"*4\r\n$2\r\nv0\r\n$2\r\nv1\r\n$2\r\nv2\r\n$-1\r\n"
        );
    }

    #[test]
    fn many_keys_are_grouped_by_slot_and_merged_back_in_client_order() {
        let keys = 100_000;
        let mut request = vec![Bytes::from_static(b"MGET")];
        request.extend((0..keys).map(|i| Bytes::from(format!("key:{i}"))));
        let split = plan("mget", &request, &single()).unwrap();
        assert_eq!(split.keys, keys);
        assert!(
            split.parts.len() > 16_000,
            "100,000 keys touch nearly every slot"
        );
        let mut seen = vec![false; keys];
        let mut part_slots = std::collections::HashSet::new();
        for part in &split.parts {
            assert!(part_slots.insert(part.slot), "one part per slot");
            assert!(
                part.positions.windows(2).all(|w| w[0] < w[1]),
                "client order within a part"
            );
            for &p in &part.positions {
                assert!(!seen[p], "key {p} in two parts");
                seen[p] = true;
                assert_eq!(Slot::for_key(&request[p + 1]), part.slot);
            }
        }
        assert!(seen.iter().all(|&s| s), "every key in some part");
        let firsts: Vec<usize> = split.parts.iter().map(|p| p.positions[0]).collect();
        assert!(
            firsts.windows(2).all(|w| w[0] < w[1]),
            "parts in order of first appearance"
        );
        // Each node answers its part with the positions as values; the merge must restore order.
        let replies: Vec<Bytes> = split
            .parts
            .iter()
            .map(|p| {
                let mut out = BytesMut::new();
                out.put_slice(format!("*{}\r\n", p.positions.len()).as_bytes());
                for pos in &p.positions {
                    let value = pos.to_string();
                    out.put_slice(format!("${}\r\n{value}\r\n", value.len()).as_bytes());
                }
                out.freeze()
            })
            .collect();
        let merged = merge(&split, &replies, Protocol::Resp2);
        let mut expected = BytesMut::new();
        expected.put_slice(format!("*{keys}\r\n").as_bytes());
        for pos in 0..keys {
            let value = pos.to_string();
            expected.put_slice(format!("${}\r\n{value}\r\n", value.len()).as_bytes());
        }
        assert!(
            merged == expected,
            "merged reply differs from the client's order"
        );
    }

    thread_local! {
        /// Hashes and comparisons made on [`Counted`] values by this test thread.
        static OPERATIONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// A slot-like value that counts how often grouping hashes or compares it.
    #[derive(Clone, Copy)]
    struct Counted(u16);

    impl PartialEq for Counted {
        fn eq(&self, other: &Self) -> bool {
            OPERATIONS.with(|n| n.set(n.get() + 1));
            self.0 == other.0
        }
    }

    impl Eq for Counted {}

    impl Hash for Counted {
        fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
            OPERATIONS.with(|n| n.set(n.get() + 1));
            self.0.hash(state);
        }
    }

    fn operations_to_group(keys: usize) -> usize {
        OPERATIONS.with(|n| n.set(0));
        // Spread like real keys: every one of the 16384 slots in use.
        let values = (0..keys).map(|i| Counted(((i * 7919) % 16384) as u16));
        let (groups, members) = group_positions(values);
        assert_eq!(groups.len(), keys.min(16384));
        assert_eq!(members.iter().map(Vec::len).sum::<usize>(), keys);
        OPERATIONS.with(std::cell::Cell::get)
    }

    #[test]
    fn grouping_costs_a_few_operations_per_key_whatever_the_number_of_slots() {
        // A search of the groups per key would make about keys x slots / 2 comparisons here:
        // 800 million for 100,000 keys over 16384 slots.
        for keys in [1_000, 100_000, 200_000] {
            let operations = operations_to_group(keys);
            assert!(
                operations <= 3 * keys,
                "{operations} hashes and comparisons to group {keys} keys"
            );
        }
    }

    #[test]
    fn counts_are_summed_and_errors_stand_for_the_whole() {
        let split = plan("del", &args(&["DEL", "a", "b"]), &single()).unwrap();
        let merged = merge(
            &split,
            &[Bytes::from(":1\r\n"), Bytes::from(":0\r\n")],
            Protocol::Resp2,
        );
        assert_eq!(&merged[..], b":1\r\n");
        let mset = plan("mset", &args(&["MSET", "a", "1", "b", "2"]), &single()).unwrap();
        let merged = merge(
            &mset,
            &[Bytes::from("+OK\r\n"), Bytes::from("-OOM no memory\r\n")],
            Protocol::Resp2,
        );
        let text = String::from_utf8_lossy(&merged);
        assert!(
            text.starts_with("-ERR respgate: MSET partly failed"),
            "{text}"
        );
        assert!(text.contains("OOM no memory"));
    }
}
