//! How the replies of several nodes become one reply: the one reader of their shapes and the
//! rules that every gathering path shares (split commands in [`crate::multikey`], fan-outs in
//! [`crate::fanout`], broadcasts in [`crate::broadcast`]), each choosing by one
//! [`ResponsePolicy`](crate::command::ResponsePolicy): an error stands for the whole, integers
//! aggregate, `+OK` holds when every node said it.
//!
//! The nodes a gathering asks are taken in one order too, so that a `SCAN` cursor, a
//! broadcast's refusal and `CONFIG GET`'s choice of master name the same nodes on every
//! replica of the proxy.

use std::sync::Arc;

use bytes::Bytes;

use crate::backend::NodePool;
use crate::cluster::SlotMap;
use crate::protocol::{Protocol, ReplyKind, array_elements, frame_reply, integer_value, reply};

/// A node's reply, as far as combining needs it.
#[derive(Debug, PartialEq, Eq)]
pub enum Shape<'a> {
    /// An error reply, with its text (without the `-` or the `!` header and the line end).
    Error(&'a [u8]),
    /// A null (RESP2's `$-1` and `*-1`, RESP3's `_`).
    Null,
    /// An integer.
    Integer(i64),
    /// An array or a set: each element's raw bytes.
    Array(Vec<&'a [u8]>),
    /// Anything else (`+OK`, a bulk string, a map), or bytes that do not frame.
    Other,
}

/// Reads `reply`'s shape. Only a reply that starts as an error is framed whole: the rule is a
/// reply of the expected kind, read at the cost of its header.
pub fn shape(reply: &[u8], protocol: Protocol) -> Shape<'_> {
    match reply.first() {
        Some(b'-' | b'!') => match frame_reply(reply, protocol) {
            Ok(Some(frame)) => match frame.kind {
                ReplyKind::Error(start, end) => {
                    reply.get(start..end).map_or(Shape::Other, Shape::Error)
                }
                _ => Shape::Other,
            },
            _ => Shape::Other,
        },
        Some(b':') => integer_value(reply).map_or(Shape::Other, Shape::Integer),
        Some(b'_') => Shape::Null,
        Some(b'$' | b'*') if reply.starts_with(b"$-1\r\n") || reply.starts_with(b"*-1\r\n") => {
            Shape::Null
        }
        Some(b'*' | b'~') => array_elements(reply, protocol).map_or(Shape::Other, Shape::Array),
        _ => Shape::Other,
    }
}

/// The first error among `replies` (its index and text), which stands for the whole.
pub fn first_error<'a>(
    replies: impl IntoIterator<Item = &'a Bytes>,
    protocol: Protocol,
) -> Option<(usize, &'a [u8])> {
    replies
        .into_iter()
        .enumerate()
        .find_map(|(i, r)| match shape(r, protocol) {
            Shape::Error(text) => Some((i, text)),
            _ => None,
        })
}

/// The integers of `replies` added up (`DBSIZE`, a split `DEL`); `None` when one is not an
/// integer or the total does not fit.
pub fn sum<'a>(replies: impl IntoIterator<Item = &'a Bytes>, protocol: Protocol) -> Option<i64> {
    let mut total: i64 = 0;
    for r in replies {
        let Shape::Integer(n) = shape(r, protocol) else {
            return None;
        };
        total = total.checked_add(n)?;
    }
    Some(total)
}

/// The integer reply of `sum` in `protocol`.
pub fn integer(n: i64, protocol: Protocol) -> Bytes {
    let mut out = reply::ReplyBuf::new(protocol);
    out.integer(n);
    out.finish()
}

/// Whether every one of `replies` is `+OK` (`MSET`, `FLUSHALL`).
pub fn all_ok<'a>(replies: impl IntoIterator<Item = &'a Bytes>) -> bool {
    replies.into_iter().all(|r| r[..] == *reply::OK)
}

/// A backend's masters in address order: the order every gathering asks them in.
pub fn masters_in_order(map: &SlotMap) -> Vec<Arc<NodePool>> {
    let mut masters = map.masters().to_vec();
    masters.sort_by(|a, b| a.addr().cmp(b.addr()));
    masters
}

/// A backend's replicas in address order.
pub fn replicas_in_order(map: &SlotMap) -> Vec<Arc<NodePool>> {
    let mut replicas: Vec<Arc<NodePool>> = map.replicas().cloned().collect();
    replicas.sort_by(|a, b| a.addr().cmp(b.addr()));
    replicas
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_read_from_their_headers() {
        let p = Protocol::Resp2;
        assert_eq!(shape(b":42\r\n", p), Shape::Integer(42));
        assert_eq!(shape(b":-3\r\n", p), Shape::Integer(-3));
        assert_eq!(shape(b"-ERR no\r\n", p), Shape::Error(b"ERR no"));
        assert_eq!(shape(b"$-1\r\n", p), Shape::Null);
        assert_eq!(shape(b"*-1\r\n", p), Shape::Null);
        assert_eq!(shape(b"_\r\n", Protocol::Resp3), Shape::Null);
        assert_eq!(
            shape(b"*2\r\n$1\r\na\r\n:1\r\n", p),
            Shape::Array(vec![&b"$1\r\na\r\n"[..], &b":1\r\n"[..]])
        );
        assert_eq!(shape(b"+OK\r\n", p), Shape::Other);
        // Truncated or malformed bytes are no shape at all.
        assert_eq!(shape(b":4x\r\n", p), Shape::Other);
        assert_eq!(shape(b"-ERR", p), Shape::Other);
        assert_eq!(shape(b"*3\r\n:1\r\n", p), Shape::Other);
    }

    #[test]
    fn bulk_strings_and_integers_are_read_in_one_place() {
        use crate::protocol::{bulk_value, integer_value};
        assert_eq!(bulk_value(b"$3\r\nabc\r\n"), Some(&b"abc"[..]));
        assert_eq!(bulk_value(b"$0\r\n\r\n"), Some(&b""[..]));
        assert_eq!(bulk_value(b"$-1\r\n"), None);
        assert_eq!(bulk_value(b"$3\r\nab"), None);
        assert_eq!(bulk_value(b"$3\r\nabcd\r\n"), None);
        assert_eq!(bulk_value(b"$99999999999999999999\r\n"), None);
        assert_eq!(integer_value(b":12\r\n"), Some(12));
        assert_eq!(integer_value(b"$2\r\n12\r\n"), None);
    }

    #[test]
    fn sums_refuse_what_is_no_integer_or_overflows() {
        let p = Protocol::Resp2;
        let replies = [Bytes::from_static(b":2\r\n"), Bytes::from_static(b":3\r\n")];
        assert_eq!(sum(&replies, p), Some(5));
        let with_error = [
            Bytes::from_static(b":2\r\n"),
            Bytes::from_static(b"-ERR x\r\n"),
        ];
        assert_eq!(sum(&with_error, p), None);
        assert_eq!(first_error(&with_error, p), Some((1, &b"ERR x"[..])));
        let huge = [
            Bytes::from(format!(":{}\r\n", i64::MAX)),
            Bytes::from_static(b":1\r\n"),
        ];
        assert_eq!(sum(&huge, p), None);
        assert!(all_ok(&[Bytes::from_static(b"+OK\r\n")]));
        assert!(!all_ok(&[
            Bytes::from_static(b"+OK\r\n"),
            Bytes::from_static(b":1\r\n")
        ]));
    }
}
