//! `PUBLISH`'s count, as one Redis gives it: every client that receives the message, once per
//! channel subscription and once per matching pattern.
//!
//! The message goes to the backend's Pub/Sub home (see `home_of_channel`), which delivers it
//! to every node of the cluster and counts the subscribers connected to itself: the proxy's
//! clients held there, and clients connected straight to it. To that the proxy adds its own
//! clients whose subscription is held on another node (subscribed before slot 0 moved, or one
//! key's keyspace channel), from [`crate::subscribers`]. Clients connected straight to other nodes
//! are not counted: no node tells who of its clients a message reached without a round trip
//! to every node per `PUBLISH`, and Redis Cluster's own count leaves them out too.

use bytes::Bytes;

use crate::cluster::Sending;
use crate::cluster::Target;
use crate::command::Access;
use crate::keyspace::BackendId;
use crate::protocol::Protocol;
use crate::protocol::integer_value;
use crate::protocol::reply::ReplyBuf;
use crate::proxy::ProxyRef;

/// A `PUBLISH` whose count the proxy completes.
#[derive(Debug)]
pub struct Publish {
    /// The backend the channel routes to.
    pub backend: BackendId,
    /// The request as the client sent it.
    pub payload: Bytes,
    /// The master of the channel's slot.
    pub target: Target,
    /// The channel.
    pub channel: Bytes,
}

/// Sends `publish` and answers with every receiver counted.
pub async fn publish(
    proxy: ProxyRef<'_>,
    publish: Publish,
    protocol: Protocol,
    db: u8,
    affinity: usize,
) -> Bytes {
    let Some(cluster) = proxy.backend(publish.backend) else {
        return crate::protocol::reply::error("ERR respgate: no backend configured");
    };
    let (reply, pool) = cluster
        .serve(Sending {
            payload: publish.payload,
            target: publish.target,
            access: Access::Write,
            protocol,
            db,
            affinity,
        })
        .await;
    let (Some(pool), Some(counted)) = (pool, integer_value(&reply)) else {
        // An error, or no node reached: the client hears it as it came.
        return reply;
    };
    let elsewhere = proxy.subscribers.elsewhere(&publish.channel, pool.addr());
    if elsewhere == 0 {
        return reply;
    }
    let mut out = ReplyBuf::new(protocol);
    out.integer(counted.saturating_add(i64::try_from(elsewhere).unwrap_or(i64::MAX)));
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_integer_reply_is_completed() {
        assert_eq!(integer_value(b":0\r\n"), Some(0));
        assert_eq!(integer_value(b":12\r\n"), Some(12));
        assert_eq!(integer_value(b"-MOVED 1 a:1\r\n"), None);
        assert_eq!(integer_value(b"$1\r\n1\r\n"), None);
    }
}
