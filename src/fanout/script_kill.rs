//! `SCRIPT KILL` and `FUNCTION KILL` on every node, since the proxy cannot know which one runs
//! the busy script. Each goes on a connection opened for it: the shared connection to a busy
//! node may be queued behind the very script to kill.

use bytes::{Bytes, BytesMut};
use futures_util::future::join_all;

use crate::backend::{BackendError, NodeConn};
use crate::protocol::{Protocol, reply};
use crate::proxy::Proxy;

/// Sends `payload` (`SCRIPT KILL` or `FUNCTION KILL`) to every node of every backend at once.
/// The client gets `+OK` when some node killed its script; otherwise the first other error a
/// node gave (`UNKILLABLE` for a script that has written, `BUSY` for a function asked to die
/// by `SCRIPT KILL`, a node that cannot be reached); otherwise `NOTBUSY`, as from a Redis
/// that runs no script.
pub async fn run(proxy: &Proxy, payload: &Bytes) -> Bytes {
    let mut nodes = Vec::new();
    for cluster in &proxy.backends {
        let map = cluster.slot_map();
        for node in map.nodes() {
            if !nodes.iter().any(|(n, _)| *n == node) {
                nodes.push((node, cluster.as_ref()));
            }
        }
    }
    if nodes.is_empty() {
        let unreachable = proxy.default_cluster().map(|c| c.unreachable_error());
        return reply::error(&unreachable.unwrap_or_else(|| "ERR respgate: no backend".into()));
    }
    let replies = join_all(nodes.iter().map(|(node, cluster)| async move {
        let settings = cluster.conn_settings();
        let called = async {
            let mut conn = NodeConn::open(node, Protocol::Resp2, settings).await?;
            let replies = tokio::time::timeout(settings.request_timeout, conn.call(payload, 1))
                .await
                .map_err(|_| BackendError::Timeout {
                    addr: node.clone(),
                    timeout_ms: settings.request_timeout.as_millis() as u64,
                })??;
            replies
                .into_iter()
                .next()
                .ok_or(BackendError::Lost { addr: node.clone() })
        };
        match called.await {
            Ok(reply) => reply.bytes,
            Err(error) => cluster.backend_error(&error),
        }
    }))
    .await;
    combine(&replies)
}

/// The one reply for the client; see [`run`].
fn combine(replies: &[Bytes]) -> Bytes {
    if let Some(ok) = replies.iter().find(|r| !r.starts_with(b"-")) {
        return ok.clone();
    }
    replies
        .iter()
        .find(|r| !r.starts_with(b"-NOTBUSY"))
        .or(replies.first())
        .cloned()
        .unwrap_or_else(|| {
            let mut out = BytesMut::new();
            out.extend_from_slice(b"-NOTBUSY No scripts in execution right now.\r\n");
            out.freeze()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replies(all: &[&'static str]) -> Vec<Bytes> {
        all.iter()
            .map(|r| Bytes::from_static(r.as_bytes()))
            .collect()
    }

    const NOTBUSY: &str = "-NOTBUSY No scripts in execution right now.\r\n";
    const UNKILLABLE: &str = "-UNKILLABLE Sorry the script already executed write commands against the dataset. You can either wait the script termination or kill the server in a hard way using the SHUTDOWN NOSAVE command.\r\n";

    #[test]
    fn ok_wins_then_a_node_error_then_notbusy() {
        let got = combine(&replies(&[NOTBUSY, "+OK\r\n", NOTBUSY]));
        assert_eq!(&got[..], b"+OK\r\n");
        let got = combine(&replies(&[NOTBUSY, NOTBUSY, UNKILLABLE]));
        assert_eq!(&got[..], UNKILLABLE.as_bytes());
        let got = combine(&replies(&[NOTBUSY, NOTBUSY]));
        assert_eq!(&got[..], NOTBUSY.as_bytes());
    }
}
