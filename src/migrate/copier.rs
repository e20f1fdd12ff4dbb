//! Walking one side of a migration for the keys of its prefix: `SCAN` on each master with a
//! pattern for the keys that start with the prefix and one for those that open with it as
//! their hash tag, one call at a time. The controller moves what it finds (see
//! [`super::controller`]), or only counts it.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::backend::NodePool;
use crate::cluster::{Backend, Sending, Target};
use crate::combine;
use crate::command::Access;
use crate::protocol::request::encode_command;
use crate::protocol::{Protocol, Value};

/// Keys asked of a node per `SCAN` call.
const SCAN_COUNT: &str = "200";

/// Where one walk stands.
pub struct Walk {
    lanes: Vec<Lane>,
}

/// One pattern on one master.
struct Lane {
    pool: Arc<NodePool>,
    pattern: Bytes,
    cursor: u64,
    done: bool,
}

impl Walk {
    /// A walk over `backend`'s masters for keys stored under `prefix` (empty when a route strips
    /// the prefix: every key there is the prefix's).
    pub fn new(backend: &Backend, prefix: &[u8]) -> Walk {
        let escaped = escape(prefix);
        let mut patterns = vec![[escaped.as_slice(), b"*"].concat()];
        if !prefix.is_empty() {
            patterns.push([b"\\{".as_slice(), escaped.as_slice(), b"*"].concat());
        }
        let lanes = combine::masters_in_order(&backend.slot_map())
            .into_iter()
            .flat_map(|pool| {
                patterns.iter().map(move |pattern| Lane {
                    pool: Arc::clone(&pool),
                    pattern: Bytes::from(pattern.clone()),
                    cursor: 0,
                    done: false,
                })
            })
            .collect();
        Walk { lanes }
    }

    /// The next keys found (as the backend stores them; perhaps none), or `None` once every
    /// lane is walked. An error is the node's reply, or a reply that is not `SCAN`'s: the
    /// walk should begin again (a master may have changed).
    pub async fn next(&mut self, backend: &Backend) -> Result<Option<Vec<Bytes>>, String> {
        let Some(lane) = self.lanes.iter_mut().find(|lane| !lane.done) else {
            return Ok(None);
        };
        let cursor = lane.cursor.to_string();
        let args: [&[u8]; 6] = [
            b"SCAN",
            cursor.as_bytes(),
            b"MATCH",
            &lane.pattern,
            b"COUNT",
            SCAN_COUNT.as_bytes(),
        ];
        let mut payload = BytesMut::new();
        encode_command(&mut payload, &args);
        let reply = backend
            .execute(Sending {
                payload: payload.freeze(),
                target: Target::Node(Arc::clone(&lane.pool)),
                access: Access::Read,
                protocol: Protocol::Resp2,
                db: 0,
                affinity: 0,
            })
            .await;
        let garbled = || String::from_utf8_lossy(&reply).trim_end().to_string();
        let value = Value::decode(&reply, 2).ok_or_else(garbled)?;
        let [next, keys] = value.elements().ok_or_else(garbled)? else {
            return Err(garbled());
        };
        lane.cursor = next
            .text()
            .and_then(|n| n.parse().ok())
            .ok_or_else(garbled)?;
        lane.done = lane.cursor == 0;
        let keys = keys
            .elements()
            .ok_or_else(garbled)?
            .iter()
            .filter_map(|key| match key {
                Value::Bulk(key) => Some(key.clone()),
                _ => None,
            })
            .collect();
        Ok(Some(keys))
    }
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
