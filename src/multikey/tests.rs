//! Unit tests of planning and merging.

use super::plan::Groups;
use super::*;
use crate::keyspace::RouteTable;
use crate::protocol::Request;
use crate::slot::Slot;
use bytes::BufMut;
use std::hash::Hash;

fn single() -> RouteTable {
    RouteTable::single(BackendId(0))
}

/// `a` as the parser makes it of a client's multibulk request: the arguments slices of `raw`.
fn args(a: &[&str]) -> Request {
    let encoded = Request::from_args(a.iter().map(|s| Bytes::from(s.to_string())).collect());
    let mut buf = BytesMut::from(&encoded.raw[..]);
    let mut parser = crate::protocol::RequestParser::new(u64::MAX, u64::MAX);
    parser.parse(&mut buf).unwrap().unwrap()
}

fn encoded(split: &Split, part: &Part) -> Bytes {
    let mut out = BytesMut::new();
    split.encode(part, &mut out);
    out.freeze()
}

#[test]
fn parts_are_encoded_alike_from_the_clients_bytes_or_afresh() {
    let words = ["MSET", "a", "1", "b", "", "{a}x", "3", "c", "4"];
    let parsed = plan(SplitKind::Mset, args(&words), &single()).unwrap();
    // An inline command is re-encoded: its arguments are not slices of its bytes.
    let fresh = Request::from_args(words.iter().map(|s| Bytes::from(s.to_string())).collect());
    let fresh = plan(SplitKind::Mset, fresh, &single()).unwrap();
    assert_eq!(parsed.as_sent(0, 0), Some(&b"$4\r\nMSET\r\n"[..]));
    assert_eq!(
        parsed.as_sent(1, 2),
        Some(&b"$1\r\na\r\n$1\r\n1\r\n"[..]),
        "a key and its value as the client sent them"
    );
    assert_eq!(
        parsed.as_sent(3, 4),
        None,
        "an empty value is encoded afresh"
    );
    assert_eq!(fresh.as_sent(1, 2), None);
    let mut all = Vec::new();
    for (a, b) in parsed.parts().iter().zip(fresh.parts()) {
        assert_eq!(encoded(&parsed, a), encoded(&fresh, b));
        all.push(encoded(&parsed, a));
    }
    assert_eq!(
        all,
        [
            &b"*5\r\n$4\r\nMSET\r\n$1\r\na\r\n$1\r\n1\r\n$4\r\n{a}x\r\n$1\r\n3\r\n"[..],
            b"*3\r\n$4\r\nMSET\r\n$1\r\nb\r\n$0\r\n\r\n",
            b"*3\r\n$4\r\nMSET\r\n$1\r\nc\r\n$1\r\n4\r\n",
        ]
    );
}

#[test]
fn single_slot_and_odd_commands_are_not_split() {
    assert!(plan(SplitKind::Mget, args(&["MGET", "{a}1", "{a}2"]), &single()).is_none());
    assert!(
        plan(SplitKind::Mset, args(&["MSET", "a", "1", "b"]), &single()).is_none(),
        "odd MSET is the backend's error"
    );
}

#[test]
fn mget_splits_by_slot_and_merges_in_client_order() {
    let split = plan(
        SplitKind::Mget,
        args(&["MGET", "a", "b", "{a}x", "c"]),
        &single(),
    )
    .unwrap();
    assert_eq!(split.keys(), 4);
    let first = &split.parts()[0];
    assert_eq!(
        split.positions(first).collect::<Vec<_>>(),
        vec![0, 2],
        "a and {{a}}x share a slot"
    );
    let mut payload = BytesMut::new();
    split.encode(first, &mut payload);
    assert_eq!(
        &payload[..],
        b"*3\r\n$4\r\nMGET\r\n$1\r\na\r\n$4\r\n{a}x\r\n"
    );
    let replies: Vec<Bytes> = split
        .parts()
        .iter()
        .map(|p| {
            let mut out = BytesMut::new();
            out.put_slice(format!("*{}\r\n", split.positions(p).len()).as_bytes());
            for pos in split.positions(p) {
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
    let split = plan(
        SplitKind::Mget,
        Request::from_args(request.clone()),
        &single(),
    )
    .unwrap();
    assert_eq!(split.keys(), keys);
    assert!(
        split.parts().len() > 16_000,
        "100,000 keys touch nearly every slot"
    );
    let mut seen = vec![false; keys];
    let mut part_slots = std::collections::HashSet::new();
    for part in split.parts() {
        assert!(part_slots.insert(part.slot), "one part per slot");
        let positions: Vec<usize> = split.positions(part).collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "client order within a part"
        );
        for p in positions {
            assert!(!seen[p], "key {p} in two parts");
            seen[p] = true;
            assert_eq!(Slot::for_key(&request[p + 1]), part.slot);
        }
    }
    assert!(seen.iter().all(|&s| s), "every key in some part");
    let firsts: Vec<usize> = split
        .parts()
        .iter()
        .map(|p| split.positions(p).next().unwrap())
        .collect();
    assert!(
        firsts.windows(2).all(|w| w[0] < w[1]),
        "parts in order of first appearance"
    );
    // Each node answers its part with the positions as values; the merge must restore order.
    let replies: Vec<Bytes> = split
        .parts()
        .iter()
        .map(|p| {
            let mut out = BytesMut::new();
            out.put_slice(format!("*{}\r\n", split.positions(p).len()).as_bytes());
            for pos in split.positions(p) {
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
    let mut groups = Groups::with_capacity(0);
    for value in values {
        groups.add(value);
    }
    assert_eq!(groups.len(), keys.min(16384));
    assert_eq!(
        groups.iter().map(|(_, size)| size as usize).sum::<usize>(),
        keys
    );
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
    let split = plan(SplitKind::Del, args(&["DEL", "a", "b"]), &single()).unwrap();
    let merged = merge(
        &split,
        &[Bytes::from(":1\r\n"), Bytes::from(":0\r\n")],
        Protocol::Resp2,
    );
    assert_eq!(&merged[..], b":1\r\n");
    let mset = plan(
        SplitKind::Mset,
        args(&["MSET", "a", "1", "b", "2"]),
        &single(),
    )
    .unwrap();
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
