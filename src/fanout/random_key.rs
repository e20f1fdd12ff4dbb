//! `RANDOMKEY` over every master: a master chosen at random, weighted by how many keys it
//! holds, so each key of the whole keyspace is about as likely as on one Redis.

use bytes::Bytes;
use futures_util::future::join_all;

use super::{all_masters, reprefix, shown};
use crate::cluster::Sending;
use crate::cluster::Target;
use crate::command::Access;
use crate::protocol::reply::ReplyBuf;
use crate::protocol::request::encode_command;
use crate::protocol::{Protocol, integer_value};
use crate::proxy::ProxyRef;

/// Draws of `RANDOMKEY` that found a key the routes do not reach before the answer is nil.
const DRAWS: usize = 32;

/// `RANDOMKEY`: `DBSIZE` of every master, then `RANDOMKEY` on one chosen with probability in
/// proportion to its size. A master that answers nil (its keys went meanwhile) is left out and
/// another chosen, each master at most once; nil only when no master has a key. A key the
/// routes look for elsewhere (see `RouteTable::reachable_on`) is drawn again, its master's
/// weight halved, [`DRAWS`] times at most (then nil), so that the key returned is one `GET`
/// finds.
pub async fn run(
    proxy: ProxyRef<'_>,
    payload: &Bytes,
    protocol: Protocol,
    db: u8,
    affinity: usize,
) -> Bytes {
    let masters = match all_masters(proxy) {
        Ok(masters) => masters,
        Err(error) => return error,
    };
    let mut dbsize = bytes::BytesMut::new();
    encode_command(&mut dbsize, &["DBSIZE"]);
    let dbsize = dbsize.freeze();
    let sizes = join_all(masters.iter().map(|(_, cluster, pool)| {
        let target = Target::Node(pool.clone());
        cluster.execute(Sending {
            payload: dbsize.clone(),
            target,
            access: Access::Read,
            protocol,
            db,
            affinity,
        })
    }))
    .await;
    let mut weights = Vec::with_capacity(sizes.len());
    for reply in sizes {
        match integer_value(&reply) {
            Some(n) => weights.push(u64::try_from(n).unwrap_or(0)),
            // An error (the node is down, ...) says best why there is no answer.
            None => return reply,
        }
    }
    let routes = proxy.routes();
    let mut unreachable = 0;
    while let Some(chosen) = pick(&weights, fastrand::u64(..)) {
        let Some((backend, cluster, pool)) = masters.get(chosen) else {
            break;
        };
        let target = Target::Node(pool.clone());
        let reply = cluster
            .execute(Sending {
                payload: payload.clone(),
                target,
                access: Access::Read,
                protocol,
                db,
                affinity,
            })
            .await;
        if !is_null(&reply, protocol) {
            let key = match routes.stripped_prefix(*backend) {
                Some(prefix) => reprefix(&reply, prefix, protocol),
                None => reply,
            };
            if shown(routes.reachable_on(*backend), &key) {
                return key;
            }
            unreachable += 1;
            if unreachable >= DRAWS {
                break;
            }
            // A master whose keys the routes lead elsewhere (another application's, say) is
            // drawn less and less.
            if let Some(weight) = weights.get_mut(chosen) {
                *weight /= 2;
            }
            continue;
        }
        if let Some(weight) = weights.get_mut(chosen) {
            *weight = 0;
        }
    }
    let mut out = ReplyBuf::new(protocol);
    out.null();
    out.finish()
}

/// The index chosen by `roll` (any `u64`) among `weights`, each in proportion to its weight;
/// `None` when every weight is 0.
fn pick(weights: &[u64], roll: u64) -> Option<usize> {
    let total: u64 = weights.iter().fold(0u64, |sum, w| sum.saturating_add(*w));
    if total == 0 {
        return None;
    }
    let mut at = roll % total;
    for (i, weight) in weights.iter().enumerate() {
        if at < *weight {
            return Some(i);
        }
        at -= weight;
    }
    None
}

/// Whether `reply` is a nil (`$-1` in RESP2, `_` in RESP3).
fn is_null(reply: &[u8], protocol: Protocol) -> bool {
    match protocol {
        Protocol::Resp2 => reply.starts_with(b"$-1\r\n") || reply.starts_with(b"*-1\r\n"),
        Protocol::Resp3 => reply.starts_with(b"_\r\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_index_is_picked_in_proportion_to_its_weight() {
        let weights = [1, 0, 3];
        let picks: Vec<Option<usize>> = (0..4).map(|roll| pick(&weights, roll)).collect();
        assert_eq!(picks, [Some(0), Some(2), Some(2), Some(2)]);
        assert_eq!(pick(&[0, 0], 7), None, "no key anywhere");
        assert_eq!(pick(&[u64::MAX, 5], u64::MAX - 1), Some(0), "no overflow");
    }
}
