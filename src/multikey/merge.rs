//! Merging a split command's replies into the client's one reply.

use bytes::{BufMut, Bytes, BytesMut};

use super::Split;
use crate::combine;
use crate::command::ResponsePolicy;
use crate::command::policy::SplitKind;
use crate::protocol::request::put_decimal;
use crate::protocol::{Protocol, reply};

/// How `kind`'s parts' replies combine.
pub fn response_policy(kind: SplitKind) -> ResponsePolicy {
    match kind {
        SplitKind::Mget => ResponsePolicy::ByKeyPosition,
        SplitKind::Mset => ResponsePolicy::AllSucceeded,
        SplitKind::Del | SplitKind::Unlink | SplitKind::Exists | SplitKind::Touch => {
            ResponsePolicy::Sum
        }
    }
}

/// Combines the parts' replies (in `split`'s parts order) into the client's reply.
///
/// The replies are read as they are when they have the expected shape (`+OK`, integers,
/// arrays of the part's length), which is the rule; only otherwise are they framed, to find
/// the error that stands for the whole command.
pub fn merge(split: &Split, replies: &[Bytes], protocol: Protocol) -> Bytes {
    let policy = split.response_policy();
    let merged = match policy {
        ResponsePolicy::AllSucceeded => {
            combine::all_ok(replies).then(|| Bytes::from_static(reply::OK))
        }
        ResponsePolicy::Sum => {
            combine::sum(replies, protocol).map(|n| combine::integer(n, protocol))
        }
        ResponsePolicy::ByKeyPosition => values(split, replies, protocol),
        _ => None,
    };
    if let Some(merged) = merged {
        return merged;
    }
    // Any error stands for the whole command.
    if let Some((i, text)) = combine::first_error(replies, protocol)
        && let (Some(part), Some(reply)) = (split.parts.get(i), replies.get(i))
    {
        if policy == ResponsePolicy::AllSucceeded {
            return reply::error(&format!(
                "ERR respgate: {} partly failed: the part for slot {} answered: {}; the other parts were applied",
                split.name(),
                part.slot.get(),
                String::from_utf8_lossy(text)
            ));
        }
        return reply.clone();
    }
    match policy {
        ResponsePolicy::AllSucceeded => Bytes::from_static(reply::OK),
        _ => unexpected(split),
    }
}

/// The parts' array elements put back in the client's order; `None` if a reply is not an
/// array of its part's length.
fn values(split: &Split, replies: &[Bytes], protocol: Protocol) -> Option<Bytes> {
    let mut slots: Vec<Option<&[u8]>> = vec![None; split.keys()];
    for (part, reply) in split.parts.iter().zip(replies) {
        if reply.first() != Some(&b'*') {
            return None;
        }
        let elements = crate::protocol::array_elements(reply, protocol)?;
        let positions = split.positions(part);
        if elements.len() != positions.len() {
            return None;
        }
        for (position, element) in positions.zip(elements) {
            *slots.get_mut(position)? = Some(element);
        }
    }
    let mut out = BytesMut::with_capacity(replies.iter().map(Bytes::len).sum::<usize>() + 16);
    out.put_u8(b'*');
    put_decimal(&mut out, split.keys() as u64);
    out.put_slice(b"\r\n");
    for element in slots {
        out.put_slice(element?);
    }
    Some(out.freeze())
}

fn unexpected(split: &Split) -> Bytes {
    reply::error(&format!(
        "ERR respgate: unexpected reply to a part of {}",
        split.name()
    ))
}
