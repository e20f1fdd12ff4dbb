//! The watchers: per backend, one connection to each node the proxy reads from, in
//! `CLIENT TRACKING ON BCAST` mode, on which the node reports every key written there (by any
//! client, a script, an expiry or an eviction) and every flush. A supervisor follows the
//! backend's topology and keeps one watching task per node.
//!
//! Whenever a watcher is not sure it saw every change (its connection lost, or just made,
//! a node added or gone), every client that read through the backend is told to forget
//! everything ([`Tracking::flush_backend`]): after a failover, a reshard onto a new node or a
//! restart of every node, a client refetches rather than keeps a value it may not hear of.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use tracing::{debug, warn};

use super::Tracking;
use crate::backend::{NodeAddr, NodeConn};
use crate::cluster::Backend;
use crate::protocol::request::encode_command;
use crate::protocol::{Protocol, array_elements, bulk_value};

/// How often a supervisor looks at its backend's topology.
const TOPOLOGY_CHECK: Duration = Duration::from_millis(100);
/// The first and the longest wait before a lost watcher connects again.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(2);
/// How long a backend stays watched once no client tracks: the nodes stop reporting to a proxy
/// whose clients stopped caching.
const UNUSED_STOP: Duration = Duration::from_secs(30);
/// How long a watcher connection may stay silent before it is asked for a `PING`.
const SILENCE: Duration = Duration::from_secs(10);

/// Makes sure `backend` is watched for `tracking`, with `prefix` the prefix its route strips
/// from keys (put back on the keys its nodes report).
pub fn ensure_watched(tracking: &Arc<Tracking>, backend: &Arc<Backend>, prefix: Option<Bytes>) {
    let serial = backend.serial();
    tracking.watch_once(serial, prefix, || {
        let task = tokio::spawn(supervise(Arc::downgrade(backend), Arc::downgrade(tracking)));
        task.abort_handle()
    });
}

/// A task that is stopped when its handle is dropped.
struct Watcher(tokio::task::JoinHandle<()>);

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Keeps one watcher per node of the backend while both the backend and the table live, and
/// some client tracks (or did within [`UNUSED_STOP`]).
async fn supervise(backend: Weak<Backend>, tracking: Weak<Tracking>) {
    let mut nodes: HashMap<NodeAddr, Watcher> = HashMap::new();
    let mut serial = None;
    let mut unused_since: Option<tokio::time::Instant> = None;
    loop {
        let (Some(cluster), Some(table)) = (backend.upgrade(), tracking.upgrade()) else {
            break;
        };
        if table.clients() > 0 {
            unused_since = None;
        } else if unused_since
            .get_or_insert_with(tokio::time::Instant::now)
            .elapsed()
            >= UNUSED_STOP
        {
            serial = Some(cluster.serial());
            break;
        }
        serial = Some(cluster.serial());
        let wanted = nodes_read(&cluster);
        let before = nodes.len();
        nodes.retain(|addr, _| wanted.contains(addr));
        let mut changed = nodes.len() != before;
        for addr in &wanted {
            if !nodes.contains_key(addr) {
                changed = true;
                table.node_watched(cluster.serial(), addr, None);
                let task = tokio::spawn(watch_node(
                    Weak::clone(&backend),
                    Weak::clone(&tracking),
                    addr.clone(),
                ));
                nodes.insert(addr.clone(), Watcher(task));
            }
        }
        table.watching(cluster.serial(), &wanted);
        if changed {
            // A node gone took its reports with it; a node added may have been read from
            // before its watcher was there.
            table.flush_backend(cluster.serial());
        }
        drop((cluster, table));
        tokio::time::sleep(TOPOLOGY_CHECK).await;
    }
    drop(nodes);
    if let (Some(table), Some(serial)) = (tracking.upgrade(), serial) {
        table.unwatch(serial);
    }
}

/// The nodes reads of `backend` go to: its masters, and its replicas when they serve reads.
fn nodes_read(backend: &Backend) -> Vec<NodeAddr> {
    let map = backend.slot_map();
    if backend.conn_settings().readonly {
        map.nodes()
    } else {
        map.masters().iter().map(|p| p.addr().clone()).collect()
    }
}

/// Watches one node: connects, turns tracking on, and passes on what the node reports, again
/// after each loss.
async fn watch_node(backend: Weak<Backend>, tracking: Weak<Tracking>, addr: NodeAddr) {
    let mut delay = RECONNECT_MIN;
    let mut warned = false;
    loop {
        let Some(settings) = backend.upgrade().map(|b| b.conn_settings().clone()) else {
            return;
        };
        let Some(serial) = backend.upgrade().map(|b| b.serial()) else {
            return;
        };
        match connect(&addr, &settings).await {
            Ok(mut conn) => {
                delay = RECONNECT_MIN;
                warned = false;
                let Some(table) = tracking.upgrade() else {
                    return;
                };
                table.node_watched(serial, &addr, Some(true));
                // What was read before the node reported to this connection may have
                // changed unseen.
                table.flush_backend(serial);
                drop(table);
                let error = pass_on(&mut conn, &tracking, serial).await;
                debug!(node = %addr, %error, "client-side caching: watcher connection lost");
                let Some(table) = tracking.upgrade() else {
                    return;
                };
                table.node_watched(serial, &addr, Some(false));
                table.flush_backend(serial);
            }
            Err(error) => {
                if let Some(table) = tracking.upgrade() {
                    table.node_watched(serial, &addr, Some(false));
                }
                if !warned {
                    warn!(node = %addr, %error, "client-side caching: cannot watch node; reads of its keys are not cached");
                    warned = true;
                }
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RECONNECT_MAX);
    }
}

/// A connection to `addr` in RESP3 with tracking on in `BCAST` mode, for every key.
async fn connect(
    addr: &NodeAddr,
    settings: &crate::backend::ConnSettings,
) -> Result<NodeConn, crate::backend::BackendError> {
    let mut conn = NodeConn::open(addr, Protocol::Resp3, settings).await?;
    let mut out = bytes::BytesMut::new();
    encode_command(&mut out, &["CLIENT", "TRACKING", "ON", "BCAST"]);
    let reply = tokio::time::timeout(settings.connect_timeout, conn.call(&out, 1))
        .await
        .map_err(|_| crate::backend::BackendError::Unreachable {
            addr: addr.clone(),
            reason: "no reply to CLIENT TRACKING in time".into(),
        })??;
    match reply.first().and_then(|r| r.error_text()) {
        None => Ok(conn),
        Some(text) => Err(crate::backend::BackendError::Unreachable {
            addr: addr.clone(),
            reason: String::from_utf8_lossy(text).into_owned(),
        }),
    }
}

/// Reads what the node reports until the connection fails, passing each invalidation on. A
/// connection silent for [`SILENCE`] is asked for a `PING`, and lost when silent for as long
/// again: a node that went away without closing it must not be taken as one without changes.
async fn pass_on(
    conn: &mut NodeConn,
    tracking: &Weak<Tracking>,
    serial: u64,
) -> crate::backend::BackendError {
    let mut pinged = false;
    loop {
        let reply = match tokio::time::timeout(SILENCE, conn.read_reply()).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(error)) => return error,
            Err(_) if pinged => {
                return crate::backend::BackendError::Unreachable {
                    addr: conn.addr().clone(),
                    reason: "no answer to PING".into(),
                };
            }
            Err(_) => {
                pinged = true;
                if let Err(error) = conn.write_all(b"*1\r\n$4\r\nPING\r\n").await {
                    return error;
                }
                continue;
            }
        };
        pinged = false;
        let Some(table) = tracking.upgrade() else {
            return crate::backend::BackendError::Lost {
                addr: conn.addr().clone(),
            };
        };
        match invalidated(&reply.bytes) {
            Some(Some(keys)) => table.invalidate(serial, &keys, None),
            // FLUSHALL, FLUSHDB, or a node that forgets its tracking.
            Some(None) => table.node_flushed(serial),
            None => {}
        }
    }
}

/// The keys of an `invalidate` push: `Some(None)` for a null (every key).
fn invalidated(frame: &[u8]) -> Option<Option<Vec<Bytes>>> {
    let parts = array_elements(frame, Protocol::Resp3)?;
    let [kind, keys] = parts.as_slice() else {
        return None;
    };
    if bulk_value(kind)? != b"invalidate" {
        return None;
    }
    if keys.first() == Some(&b'_') || keys.starts_with(b"*-1") {
        return Some(None);
    }
    let keys = array_elements(keys, Protocol::Resp3)?;
    Some(Some(
        keys.iter()
            .filter_map(|k| bulk_value(k).map(Bytes::copy_from_slice))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// What a node sends on a watcher connection is read without a panic, whatever it is.
        #[test]
        fn any_bytes_from_a_node_are_read_without_a_panic(
            frame in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let _ = invalidated(&frame);
        }

        /// An invalidation as Redis writes it gives back its keys, in order.
        #[test]
        fn an_invalidation_gives_back_its_keys(
            keys in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..12), 1..8),
        ) {
            let keys: Vec<Bytes> = keys.into_iter().map(Bytes::from).collect();
            let frame = super::super::invalidation_frame(3, &keys);
            prop_assert_eq!(invalidated(&frame), Some(Some(keys)));
        }
    }

    #[test]
    fn an_invalidate_push_gives_its_keys_or_every_key() {
        assert_eq!(
            invalidated(b">2\r\n$10\r\ninvalidate\r\n*2\r\n$1\r\na\r\n$2\r\nbc\r\n"),
            Some(Some(vec![
                Bytes::from_static(b"a"),
                Bytes::from_static(b"bc")
            ]))
        );
        assert_eq!(invalidated(b">2\r\n$10\r\ninvalidate\r\n_\r\n"), Some(None));
        assert_eq!(
            invalidated(b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n"),
            None
        );
        assert_eq!(invalidated(b"+OK\r\n"), None);
    }
}
