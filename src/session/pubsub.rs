//! Pub/Sub: a client's subscriptions live on a connection of its own to one master (Redis
//! Cluster delivers every `PUBLISH` to every node), whose pushes the session relays. When that
//! node fails, the session connects to another master and subscribes again.

use std::collections::BTreeSet;

use bytes::{Bytes, BytesMut};
use tracing::{debug, warn};

use crate::backend::{BackendError, NodeAddr, NodeConn};
use crate::cluster::{Cluster, Target};
use crate::fanout::array_elements;
use crate::protocol::Protocol;
use crate::protocol::request::{encode_command, parse_int};

/// Commands allowed while a RESP2 client is subscribed, as in Redis.
pub const ALLOWED_WHILE_SUBSCRIBED: &[&str] = &[
    "subscribe",
    "psubscribe",
    "ssubscribe",
    "unsubscribe",
    "punsubscribe",
    "sunsubscribe",
    "ping",
    "quit",
    "reset",
];

/// A client's subscription connection.
pub struct Subscriber {
    conn: NodeConn,
    protocol: Protocol,
    /// Any master for `SUBSCRIBE`/`PSUBSCRIBE`; a slot's master for sharded channels.
    target: Target,
    channels: BTreeSet<Bytes>,
    patterns: BTreeSet<Bytes>,
    /// Sharded channels (`SSUBSCRIBE`), all served by this connection's node.
    sharded: BTreeSet<Bytes>,
    /// Subscription confirmations to drop after a resubscribe: the client saw them already.
    swallow: usize,
}

impl Subscriber {
    /// Connects to the master `target` names: any master for `SUBSCRIBE`, the slot's master for
    /// `SSUBSCRIBE`.
    pub async fn open(
        cluster: &Cluster,
        protocol: Protocol,
        target: Target,
    ) -> Result<Subscriber, BackendError> {
        let addr = cluster
            .node_for(&target)
            .ok_or_else(|| BackendError::Unreachable {
                addr: NodeAddr::new("-"),
                reason: cluster.unreachable_error(),
            })?;
        let conn = NodeConn::open(&addr, protocol, cluster.conn_settings()).await?;
        Ok(Subscriber {
            conn,
            protocol,
            target,
            channels: BTreeSet::new(),
            patterns: BTreeSet::new(),
            sharded: BTreeSet::new(),
            swallow: 0,
        })
    }

    /// Whether any subscription is active.
    pub fn is_subscribed(&self) -> bool {
        !self.channels.is_empty() || !self.patterns.is_empty() || !self.sharded.is_empty()
    }

    /// The node it is connected to.
    pub fn addr(&self) -> &NodeAddr {
        self.conn.addr()
    }

    /// Its sharded channels.
    pub fn sharded(&self) -> &BTreeSet<Bytes> {
        &self.sharded
    }

    /// Sends a client's (un)subscribe or `PING` as it is.
    pub async fn send(&mut self, raw: &[u8]) -> Result<(), BackendError> {
        self.conn.write_all(raw).await
    }

    /// The next frame for the client: a confirmation, a message, or a `PING` reply. Tracks the
    /// subscriptions from the confirmations. On a lost connection it subscribes again on
    /// another node, within the cluster's retry budget; an error means it could not, and the
    /// client must be told by closing its connection, as Redis would.
    pub async fn next(&mut self, cluster: &Cluster) -> Result<Bytes, BackendError> {
        loop {
            match self.conn.read_reply().await {
                Ok(reply) => {
                    let frame = reply.bytes;
                    self.track(&frame);
                    if self.swallow > 0 && is_confirmation(&frame, self.protocol) {
                        self.swallow -= 1;
                        continue;
                    }
                    return Ok(frame);
                }
                Err(error) => {
                    warn!(node = %self.addr(), %error, "subscription connection lost; subscribing again elsewhere");
                    Box::pin(self.reconnect(cluster)).await?;
                }
            }
        }
    }

    /// Opens a subscription connection where the subscriptions belong now and renews them
    /// there, retrying as the cluster's retry engine allows.
    async fn reconnect(&mut self, cluster: &Cluster) -> Result<(), BackendError> {
        let mut attempts = cluster.attempts();
        loop {
            cluster.request_refresh();
            let Some(delay) = attempts.next_delay() else {
                return Err(BackendError::Unreachable {
                    addr: self.addr().clone(),
                    reason: format!(
                        "no node took the subscriptions again after {} attempts",
                        attempts.retries()
                    ),
                });
            };
            tokio::time::sleep(delay).await;
            // Sharded channels follow their slot to its master now (after a failover, the
            // promoted replica); the others go to any master.
            let target = match self.sharded.first() {
                Some(channel) => Target::Slot(crate::cluster::Slot::for_key(channel)),
                None => self.target.clone(),
            };
            let Ok(mut fresh) = Subscriber::open(cluster, self.protocol, target).await else {
                continue;
            };
            let mut payload = BytesMut::new();
            let mut swallow = 0;
            for channel in &self.sharded {
                encode_command(&mut payload, &[&b"SSUBSCRIBE"[..], channel]);
                swallow += 1;
            }
            for (command, names) in [
                ("SUBSCRIBE", &self.channels),
                ("PSUBSCRIBE", &self.patterns),
            ] {
                if !names.is_empty() {
                    let mut args: Vec<&[u8]> = vec![command.as_bytes()];
                    args.extend(names.iter().map(|n| n.as_ref()));
                    encode_command(&mut payload, &args);
                    swallow += names.len();
                }
            }
            if fresh.send(&payload).await.is_err() {
                continue;
            }
            debug!(node = %fresh.addr(), "subscribed again");
            fresh.channels = std::mem::take(&mut self.channels);
            fresh.patterns = std::mem::take(&mut self.patterns);
            fresh.sharded = std::mem::take(&mut self.sharded);
            fresh.swallow = swallow;
            *self = fresh;
            return Ok(());
        }
    }

    fn track(&mut self, frame: &[u8]) {
        let Some(parts) = array_elements(frame, self.protocol) else {
            return;
        };
        let [kind, name, count] = parts.as_slice() else {
            return;
        };
        let (Some(kind), Some(name)) = (bulk(kind), bulk(name)) else {
            return;
        };
        let _ = count;
        let name = Bytes::copy_from_slice(name);
        match kind.to_ascii_lowercase().as_slice() {
            b"subscribe" => {
                self.channels.insert(name);
            }
            b"unsubscribe" => {
                self.channels.remove(&name);
            }
            b"psubscribe" => {
                self.patterns.insert(name);
            }
            b"punsubscribe" => {
                self.patterns.remove(&name);
            }
            b"ssubscribe" => {
                self.sharded.insert(name);
            }
            b"sunsubscribe" => {
                self.sharded.remove(&name);
            }
            _ => {}
        }
    }
}

fn is_confirmation(frame: &[u8], protocol: Protocol) -> bool {
    array_elements(frame, protocol)
        .and_then(|parts| {
            parts.first().and_then(|k| bulk(k)).map(|k| {
                k.eq_ignore_ascii_case(b"subscribe")
                    || k.eq_ignore_ascii_case(b"psubscribe")
                    || k.eq_ignore_ascii_case(b"ssubscribe")
            })
        })
        .unwrap_or(false)
}

/// The payload of a bulk string element.
fn bulk(element: &[u8]) -> Option<&[u8]> {
    let rest = element.strip_prefix(b"$")?;
    let cr = rest.iter().position(|&b| b == b'\r')?;
    let len = usize::try_from(parse_int(rest.get(..cr)?)?).ok()?;
    rest.get(cr + 2..cr + 2 + len)
}

/// Redis's reply to `UNSUBSCRIBE`/`PUNSUBSCRIBE` from a client with no subscription.
pub fn nothing_to_unsubscribe(kind: &str, protocol: Protocol) -> Bytes {
    let (head, null) = match protocol {
        Protocol::Resp2 => ("*3", "$-1"),
        Protocol::Resp3 => (">3", "_"),
    };
    Bytes::from(format!(
        "{head}\r\n${}\r\n{kind}\r\n{null}\r\n:0\r\n",
        kind.len()
    ))
}

/// A sharded (un)subscribe confirmation with its count replaced by `total`: the client's
/// sharded channels over every node, which is what one Redis connection would report. Other
/// frames are returned as they are.
pub fn with_sharded_count(frame: Bytes, total: usize, protocol: Protocol) -> Bytes {
    let Some(parts) = array_elements(&frame, protocol) else {
        return frame;
    };
    let [kind, name, _count] = parts.as_slice() else {
        return frame;
    };
    let is_sharded = bulk(kind).is_some_and(|k| {
        k.eq_ignore_ascii_case(b"ssubscribe") || k.eq_ignore_ascii_case(b"sunsubscribe")
    });
    if !is_sharded {
        return frame;
    }
    let head: &[u8] = match frame.first() {
        Some(b'>') => b">3\r\n",
        _ => b"*3\r\n",
    };
    let mut out = BytesMut::with_capacity(frame.len() + 8);
    out.extend_from_slice(head);
    out.extend_from_slice(kind);
    out.extend_from_slice(name);
    out.extend_from_slice(format!(":{total}\r\n").as_bytes());
    out.freeze()
}

/// A confirmation the proxy makes itself, for a sharded channel no connection holds.
pub fn confirmation(kind: &str, channel: Option<&[u8]>, count: usize, protocol: Protocol) -> Bytes {
    let mut reply = crate::protocol::reply::ReplyBuf::new(protocol);
    reply.push(3).bulk(kind.as_bytes());
    match channel {
        Some(channel) => reply.bulk(channel),
        None => reply.null(),
    };
    reply.integer(count as i64);
    reply.finish()
}

/// Sends `raw` on the subscription connection, opening it first.
pub(super) async fn subscribe(
    subscriber: &mut Option<Box<Subscriber>>,
    cluster: &Cluster,
    protocol: Protocol,
    raw: &[u8],
) -> Result<(), BackendError> {
    if subscriber.is_none() {
        *subscriber = Some(Box::new(
            Subscriber::open(cluster, protocol, Target::AnyMaster).await?,
        ));
    }
    if let Some(sub) = subscriber.as_mut()
        && sub.send(raw).await.is_err()
    {
        // The next read notices the broken connection and subscribes again elsewhere.
        debug!("subscription connection failed on send");
    }
    Ok(())
}

/// The next frame from the subscription connection; never completes without one.
pub(super) async fn next_push(
    subscriber: &mut Option<Box<Subscriber>>,
    cluster: &Cluster,
) -> Result<Bytes, BackendError> {
    match subscriber {
        Some(sub) => sub.next(cluster).await,
        None => std::future::pending().await,
    }
}

/// Sends `SSUBSCRIBE` on the connection to the master of `slot`, opening it if needed.
pub(super) async fn shard_subscribe(
    sharded: &mut Vec<Subscriber>,
    cluster: &Cluster,
    protocol: Protocol,
    raw: &[u8],
    slot: crate::cluster::Slot,
) -> Result<(), BackendError> {
    let target = Target::Slot(slot);
    let owner = cluster.node_for(&target);
    let existing = sharded
        .iter_mut()
        .find(|s| Some(s.addr()) == owner.as_ref());
    let sub = match existing {
        Some(sub) => sub,
        None => {
            sharded.push(Subscriber::open(cluster, protocol, target).await?);
            match sharded.last_mut() {
                Some(sub) => sub,
                None => return Ok(()),
            }
        }
    };
    if sub.send(raw).await.is_err() {
        debug!("sharded subscription connection failed on send");
    }
    Ok(())
}

/// Sends `SUNSUBSCRIBE` for `channels` (all when empty) to the connections holding them, and
/// returns the confirmations the proxy makes itself for channels no connection holds.
pub(super) async fn shard_unsubscribe(
    sharded: &mut [Subscriber],
    protocol: Protocol,
    channels: &[Bytes],
) -> BytesMut {
    let mut local = BytesMut::new();
    let total: usize = sharded.iter().map(|s| s.sharded().len()).sum();
    if channels.is_empty() {
        let mut any = false;
        for sub in sharded.iter_mut().filter(|s| !s.sharded().is_empty()) {
            any = true;
            let mut payload = BytesMut::new();
            crate::protocol::request::encode_command(&mut payload, &["SUNSUBSCRIBE"]);
            let _ = sub.send(&payload).await;
        }
        if !any {
            local.extend_from_slice(&confirmation("sunsubscribe", None, 0, protocol));
        }
        return local;
    }
    for sub in sharded.iter_mut() {
        let mine: Vec<&Bytes> = channels
            .iter()
            .filter(|c| sub.sharded().contains(*c))
            .collect();
        if mine.is_empty() {
            continue;
        }
        let mut args: Vec<&[u8]> = vec![b"SUNSUBSCRIBE"];
        args.extend(mine.iter().map(|c| c.as_ref()));
        let mut payload = BytesMut::new();
        crate::protocol::request::encode_command(&mut payload, &args);
        let _ = sub.send(&payload).await;
    }
    for channel in channels
        .iter()
        .filter(|c| !sharded.iter().any(|s| s.sharded().contains(*c)))
    {
        local.extend_from_slice(&confirmation(
            "sunsubscribe",
            Some(channel),
            total,
            protocol,
        ));
    }
    local
}

/// The next frame from any sharded subscription connection.
pub(super) async fn next_sharded(
    sharded: &mut [Subscriber],
    cluster: &Cluster,
) -> Result<Bytes, BackendError> {
    if sharded.is_empty() {
        return std::future::pending().await;
    }
    let nexts = sharded.iter_mut().map(|s| Box::pin(s.next(cluster)));
    futures_util::future::select_all(nexts).await.0
}
