//! Commands about the whole keyspace, sent to every master and combined: `DBSIZE`, `KEYS`,
//! `RANDOMKEY`, `FLUSHALL`, `FLUSHDB`, `SCRIPT LOAD/FLUSH/EXISTS`,
//! `FUNCTION LOAD/DELETE/FLUSH/RESTORE`, and `SCAN` (one master at a time, the cursor saying
//! which).
//!
//! Which commands go to every master, and how their replies combine, is the command's
//! [`Policy`](crate::command::Policy), decided when the command table loads.

mod random_key;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::future::join_all;

use std::sync::Arc;

use crate::backend::NodePool;
use crate::cluster::Sending;
use crate::cluster::{Backend, Target};
use crate::combine::{self, Shape};
use crate::command::Access;
use crate::command::ResponsePolicy;
use crate::keyspace::{BackendId, Reachable};
use crate::protocol::reply::{self, ReplyBuf};
use crate::protocol::request::{encode_command, is_option, put_decimal};
use crate::protocol::{Protocol, array_elements, bulk_value, integer_value};
use crate::proxy::ProxyRef;

/// A command for every master.
#[derive(Debug, Clone)]
pub struct FanOut {
    /// Name for error messages.
    pub name: String,
    /// The command sent to each master.
    pub payload: Bytes,
    /// How replies combine.
    pub response: ResponsePolicy,
    /// For [`ResponsePolicy::ScriptsExist`], the SHA1 digests asked about: a script the
    /// proxy's caches hold exists (an `EVALSHA` of it through the proxy runs, the proxy
    /// loading it where it is missing).
    pub scripts: Vec<Bytes>,
    /// Whether it only reads.
    pub access: Access,
    /// Whether it goes on each master's control connection: `SCRIPT` and `FUNCTION`, which
    /// act on the server, so they do not wait behind a script running on a shared connection.
    pub control: bool,
}

/// The fan-out of `raw`, a command whose policy is [`Policy::EveryMaster`] with `response`
/// and `access`; `spec_name` (`script|load`) names it in errors.
///
/// [`Policy::EveryMaster`]: crate::command::Policy::EveryMaster
pub fn plan(
    response: ResponsePolicy,
    access: Access,
    spec_name: &str,
    raw: &Bytes,
    args: &[Bytes],
) -> FanOut {
    let scripts = match response {
        ResponsePolicy::ScriptsExist => args.get(2..).unwrap_or_default().to_vec(),
        _ => Vec::new(),
    };
    FanOut {
        name: spec_name.replace('|', " ").to_ascii_uppercase(),
        payload: raw.clone(),
        response,
        scripts,
        access,
        control: spec_name.starts_with("script|") || spec_name.starts_with("function|"),
    }
}

/// Every master of every backend, each with its backend, backends in id order and each
/// backend's masters in address order (the order `SCAN` walks them).
/// One master of one backend.
type Master<'a> = (BackendId, &'a Backend, Arc<NodePool>);

pub(crate) fn all_masters(proxy: ProxyRef<'_>) -> Result<Vec<Master<'_>>, Bytes> {
    let mut all = Vec::new();
    for (index, cluster) in proxy.backends().iter().enumerate() {
        let backend = BackendId(index as u16);
        let masters = combine::masters_in_order(&cluster.slot_map());
        if masters.is_empty() {
            return Err(reply::error(&cluster.unreachable_error()));
        }
        all.extend(
            masters
                .into_iter()
                .map(|pool| (backend, cluster.as_ref(), pool)),
        );
    }
    Ok(all)
}

/// Sends the command to every master of every backend at once and combines the replies.
pub async fn run(
    proxy: ProxyRef<'_>,
    fanout: FanOut,
    protocol: Protocol,
    db: u8,
    affinity: usize,
) -> Bytes {
    if fanout.response == ResponsePolicy::RandomKey {
        return random_key::run(proxy, &fanout.payload, protocol, db, affinity).await;
    }
    let masters = match all_masters(proxy) {
        Ok(masters) => masters,
        Err(error) => return error,
    };
    let routes = proxy.routes();
    // Keys that come back (`KEYS`, `RANDOMKEY`) from a backend whose route strips a prefix get
    // it back; a `KEYS` pattern that starts with it loses it on the way there.
    let carries_keys = fanout.response == ResponsePolicy::Concat;
    let replies = join_all(masters.into_iter().map(|(backend, cluster, pool)| {
        let prefix = carries_keys
            .then(|| routes.stripped_prefix(backend).cloned())
            .flatten();
        let payload = match &prefix {
            Some(prefix) => strip_pattern(&fanout.payload, 1, prefix),
            None => fanout.payload.clone(),
        };
        async move {
            let reply = cluster
                .execute(Sending {
                    payload,
                    target: if fanout.control {
                        Target::Control(pool)
                    } else {
                        Target::Node(pool)
                    },
                    access: fanout.access,
                    protocol,
                    db,
                    affinity,
                })
                .await;
            let reply = match prefix {
                Some(prefix) => reprefix(&reply, &prefix, protocol),
                None => reply,
            };
            let reachable = routes.reachable_on(backend);
            if carries_keys && !reachable.is_everything() {
                reachable_only(&reply, reachable, protocol)
            } else {
                reply
            }
        }
    }))
    .await;
    // The scripts the proxy can run anywhere: every backend's cache holds them.
    let known: Vec<bool> = match fanout.response {
        ResponsePolicy::ScriptsExist => fanout
            .scripts
            .iter()
            .map(|sha| {
                proxy
                    .backends()
                    .iter()
                    .all(|b| b.scripts.body(sha).is_some())
            })
            .collect(),
        _ => Vec::new(),
    };
    combine(&fanout, &replies, protocol, &known)
}

/// Combines the masters' replies.
/// `known`: for `SCRIPT EXISTS`, the scripts the proxy's caches hold.
pub fn combine(fanout: &FanOut, replies: &[Bytes], protocol: Protocol, known: &[bool]) -> Bytes {
    if let Some((i, _)) = combine::first_error(replies, protocol) {
        return replies
            .get(i)
            .cloned()
            .unwrap_or_else(|| unexpected(fanout));
    }
    let parsed: Vec<Shape<'_>> = replies
        .iter()
        .map(|r| combine::shape(r, protocol))
        .collect();
    let combined = match fanout.response {
        ResponsePolicy::Sum => {
            combine::sum(replies, protocol).map(|n| combine::integer(n, protocol))
        }
        ResponsePolicy::Concat => concat(&parsed),
        ResponsePolicy::Union => union(&parsed),
        ResponsePolicy::SumPairs => sum_pairs(&parsed),
        ResponsePolicy::AllSucceeded => Some(Bytes::from_static(reply::OK)),
        ResponsePolicy::First => replies.first().cloned(),
        ResponsePolicy::ScriptsExist => scripts_exist(&parsed, known, protocol),
        // Run by their own modules (RANDOMKEY), or no command fans out with them.
        ResponsePolicy::RandomKey
        | ResponsePolicy::ByKeyPosition
        | ResponsePolicy::DatasetDigest
        | ResponsePolicy::AnyKilled => None,
    };
    combined.unwrap_or_else(|| unexpected(fanout))
}

/// [`ResponsePolicy::Concat`]: every array's elements, in the masters' order; `None` when a reply is
/// not an array.
fn concat(parsed: &[Shape<'_>]) -> Option<Bytes> {
    let mut all: Vec<&[u8]> = Vec::new();
    for p in parsed {
        let Shape::Array(items) = p else {
            return None;
        };
        all.extend(items);
    }
    Some(array(&all))
}

/// [`ResponsePolicy::Union`]: every array's elements, each once, where it first appears; `None` when
/// a reply is not an array.
fn union(parsed: &[Shape<'_>]) -> Option<Bytes> {
    let mut all: Vec<&[u8]> = Vec::new();
    for p in parsed {
        let Shape::Array(items) = p else {
            return None;
        };
        for item in items {
            if !all.contains(item) {
                all.push(item);
            }
        }
    }
    Some(array(&all))
}

/// [`ResponsePolicy::SumPairs`]: the `[channel, count, ...]` arrays, which list the same channels in
/// the same order, with the counts added up; `None` when a reply is not such an array.
fn sum_pairs(parsed: &[Shape<'_>]) -> Option<Bytes> {
    let mut pairs: Vec<(&[u8], i64)> = Vec::new();
    for p in parsed {
        let Shape::Array(items) = p else {
            return None;
        };
        for (i, pair) in items.chunks(2).enumerate() {
            let [channel, count] = pair else {
                return None;
            };
            let n = integer_value(count).unwrap_or(0);
            match pairs.get_mut(i) {
                Some(entry) => entry.1 += n,
                None => pairs.push((channel, n)),
            }
        }
    }
    let mut body = BytesMut::new();
    body.put_u8(b'*');
    put_decimal(&mut body, pairs.len() as u64 * 2);
    body.put_slice(b"\r\n");
    for (channel, n) in pairs {
        body.put_slice(channel);
        body.put_u8(b':');
        body.put_slice(n.to_string().as_bytes());
        body.put_slice(b"\r\n");
    }
    Some(body.freeze())
}

/// [`ResponsePolicy::ScriptsExist`]: the arrays of 0/1 combined element by element, 1 where every
/// master said 1 or the proxy knows the script (`known`).
fn scripts_exist(parsed: &[Shape<'_>], known: &[bool], protocol: Protocol) -> Option<Bytes> {
    let mut combined: Option<Vec<bool>> = None;
    for p in parsed {
        let Shape::Array(items) = p else {
            return None;
        };
        let flags: Vec<bool> = items.iter().map(|i| *i == b":1\r\n").collect();
        combined = Some(match combined {
            None => flags,
            Some(prev) => prev.iter().zip(&flags).map(|(a, b)| *a && *b).collect(),
        });
    }
    let flags = combined.unwrap_or_default();
    let mut out = ReplyBuf::new(protocol);
    out.array(flags.len());
    for (i, flag) in flags.into_iter().enumerate() {
        let exists = flag || known.get(i).copied().unwrap_or(false);
        out.integer(i64::from(exists));
    }
    Some(out.finish())
}

fn unexpected(fanout: &FanOut) -> Bytes {
    reply::error(&format!(
        "ERR respgate: unexpected reply from a master to {}",
        fanout.name
    ))
}

/// `payload` with its argument `index` (a `KEYS` pattern) stripped of `prefix` when it starts
/// with it.
fn strip_pattern(payload: &Bytes, index: usize, prefix: &[u8]) -> Bytes {
    let mut buf = BytesMut::from(&payload[..]);
    let mut parser = crate::protocol::RequestParser::new(u64::MAX, u64::MAX);
    let Ok(Some(request)) = parser.parse(&mut buf) else {
        return payload.clone();
    };
    let mut args = request.args;
    match args.get_mut(index) {
        Some(pattern) if pattern.starts_with(prefix) => {
            *pattern = pattern.slice(prefix.len()..);
            crate::protocol::Request::from_args(args).raw
        }
        _ => payload.clone(),
    }
}

/// A reply of keys (one bulk, or an array of bulks) with `prefix` put back on each key.
pub(crate) fn reprefix(reply: &Bytes, prefix: &[u8], protocol: Protocol) -> Bytes {
    let with_prefix = |element: &[u8]| prefixed_bulk(element, prefix);
    match reply.first() {
        Some(b'$') => with_prefix(reply).map_or_else(|| reply.clone(), Bytes::from),
        Some(b'*') => {
            let Some(elements) = array_elements(reply, protocol) else {
                return reply.clone();
            };
            let rewritten: Vec<Vec<u8>> = elements
                .iter()
                .map(|e| with_prefix(e).unwrap_or_else(|| e.to_vec()))
                .collect();
            let refs: Vec<&[u8]> = rewritten.iter().map(|e| e.as_slice()).collect();
            array(&refs)
        }
        _ => reply.clone(),
    }
}

/// An array of keys found on a backend without those the routes look for elsewhere (see
/// [`RouteTable::reachable_on`](crate::keyspace::RouteTable::reachable_on)); any other reply
/// as it is.
fn reachable_only(reply: &Bytes, reachable: Reachable<'_>, protocol: Protocol) -> Bytes {
    if reply.first() != Some(&b'*') {
        return reply.clone();
    }
    let Some(elements) = array_elements(reply, protocol) else {
        return reply.clone();
    };
    let kept: Vec<&[u8]> = elements
        .into_iter()
        .filter(|e| shown(reachable, e))
        .collect();
    array(&kept)
}

/// Whether `element`, a key found on a backend as an encoded bulk string (its stripped prefix
/// put back), is listed: the routes lead to that backend for it, and it is none of the proxy's
/// own. Anything else is left as it is.
pub(crate) fn shown(reachable: Reachable<'_>, element: &[u8]) -> bool {
    bulk_value(element).is_none_or(|key| reachable.shows(key))
}

/// The encoded bulk string `element` with `prefix` before its text; `None` when it is no bulk.
fn prefixed_bulk(element: &[u8], prefix: &[u8]) -> Option<Vec<u8>> {
    let key = bulk_value(element)?;
    let mut out = BytesMut::with_capacity(prefix.len() + key.len() + 16);
    out.put_u8(b'$');
    put_decimal(&mut out, (prefix.len() + key.len()) as u64);
    out.put_slice(b"\r\n");
    out.put_slice(prefix);
    out.put_slice(key);
    out.put_slice(b"\r\n");
    Some(out.to_vec())
}

/// An array of already-encoded elements.
pub fn array(elements: &[&[u8]]) -> Bytes {
    let mut out = BytesMut::with_capacity(16 + elements.iter().map(|e| e.len()).sum::<usize>());
    out.put_u8(b'*');
    put_decimal(&mut out, elements.len() as u64);
    out.put_slice(b"\r\n");
    for e in elements {
        out.put_slice(e);
    }
    out.freeze()
}

/// Bits of a proxy `SCAN` cursor that say which master it is on.
const NODE_BITS: u32 = 10;

/// `SCAN cursor [MATCH p] [COUNT n] [TYPE t]` across masters, one at a time: the cursor keeps
/// the master's index (in address order) in its low bits and that master's own cursor above.
/// A full iteration returns every key once as long as no slot moves meanwhile.
pub async fn scan(
    proxy: ProxyRef<'_>,
    args: &[Bytes],
    protocol: Protocol,
    db: u8,
    affinity: usize,
) -> Bytes {
    let Some(cursor) = args
        .get(1)
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(|c| c.parse::<u64>().ok())
    else {
        return reply::error("ERR invalid cursor");
    };
    let masters = match all_masters(proxy) {
        Ok(masters) => masters,
        Err(error) => return error,
    };
    let mut index = (cursor & ((1 << NODE_BITS) - 1)) as usize;
    let mut node_cursor = cursor >> NODE_BITS;
    if index >= masters.len() {
        return reply::error("ERR invalid cursor");
    }
    let routes = proxy.routes();
    let mut request: Vec<Bytes> = args.to_vec();
    let mut keys: Vec<Bytes> = Vec::new();
    loop {
        let Some((backend, cluster, pool)) = masters.get(index).cloned() else {
            return reply::error("ERR invalid cursor");
        };
        if let Some(slot) = request.get_mut(1) {
            *slot = Bytes::from(node_cursor.to_string());
        }
        let prefix = routes.stripped_prefix(backend);
        let mut sent = request.clone();
        if let Some(prefix) = prefix
            && let Some(at) = sent.iter().position(|a| is_option(a, "MATCH"))
            && let Some(pattern) = sent.get_mut(at + 1)
            && pattern.starts_with(prefix)
        {
            *pattern = pattern.slice(prefix.len()..);
        }
        let mut payload = BytesMut::new();
        encode_command(&mut payload, &sent);
        let reply = cluster
            .execute(Sending {
                payload: payload.freeze(),
                target: Target::Node(pool),
                access: Access::Read,
                protocol,
                db,
                affinity,
            })
            .await;
        let Some((next, found)) = scan_reply(&reply, protocol) else {
            return reply;
        };
        // Each key is an encoded bulk element.
        let found = found.into_iter().map(|key| match prefix {
            Some(prefix) => prefixed_bulk(&key, prefix).map_or(key, Bytes::from),
            None => key,
        });
        let reachable = routes.reachable_on(backend);
        keys.extend(found.filter(|key| shown(reachable, key)));
        if next != 0 {
            if next >> (64 - NODE_BITS) != 0 {
                return reply::error("ERR respgate: a node's SCAN cursor is too large to carry");
            }
            return scan_result((next << NODE_BITS) | index as u64, &keys);
        }
        index += 1;
        node_cursor = 0;
        if index == masters.len() {
            return scan_result(0, &keys);
        }
        // Return what was found rather than walk every empty node in one call.
        if !keys.is_empty() {
            return scan_result(index as u64, &keys);
        }
    }
}

fn scan_reply(reply: &Bytes, protocol: Protocol) -> Option<(u64, Vec<Bytes>)> {
    let parts = array_elements(reply, protocol)?;
    let [cursor, keys] = parts.as_slice() else {
        return None;
    };
    let next: u64 = std::str::from_utf8(bulk_value(cursor)?)
        .ok()?
        .parse()
        .ok()?;
    let keys = array_elements(keys, protocol)?
        .into_iter()
        .map(Bytes::copy_from_slice)
        .collect();
    Some((next, keys))
}

fn scan_result(cursor: u64, keys: &[Bytes]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_slice(b"*2\r\n");
    let text = cursor.to_string();
    out.put_u8(b'$');
    put_decimal(&mut out, text.len() as u64);
    out.put_slice(b"\r\n");
    out.put_slice(text.as_bytes());
    out.put_slice(b"\r\n");
    let elements: Vec<&[u8]> = keys.iter().map(|k| k.as_ref()).collect();
    out.put_slice(&array(&elements));
    out.freeze()
}

#[cfg(test)]
mod reprefix_tests {
    use super::*;

    #[test]
    fn keys_coming_back_get_their_prefix_again() {
        let reply = Bytes::from_static(b"*2\r\n$4\r\n2024\r\n$1\r\nx\r\n");
        assert_eq!(
            &reprefix(&reply, b"archive:", Protocol::Resp2)[..],
            b"*2\r\n$12\r\narchive:2024\r\n$9\r\narchive:x\r\n"
        );
        let one = Bytes::from_static(b"$4\r\n2024\r\n");
        assert_eq!(
            &reprefix(&one, b"a:", Protocol::Resp2)[..],
            b"$6\r\na:2024\r\n"
        );
    }
}
