//! Counting one request once its reply is ready: its command's counter by result, and, for a
//! request sent to a backend, its latency and possibly a slow log entry.
//!
//! Everything here was resolved before the request arrived (the command's counters hang off
//! its spec, the histograms off its backend): a request costs two or three relaxed atomic
//! additions and one clock reading, and formats nothing unless it was slow.

use bytes::Bytes;
use tokio::time::Instant;

use crate::backend::NodeAddr;
use crate::clients::ClientHandle;
use crate::cluster::Cluster;
use crate::metrics::{CommandCounters, Family, OTHER};
use crate::proxy::{Proxy, ProxyRef};
use crate::slowlog::SlowRequest;

/// What dispatch learned of a request's command.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dispatched {
    /// Its counters.
    pub(crate) counters: &'static CommandCounters,
    /// Its family.
    pub(crate) family: Family,
}

impl Default for Dispatched {
    fn default() -> Self {
        Dispatched {
            counters: &OTHER,
            family: Family::Other,
        }
    }
}

/// The client a request came from, for the slow log.
#[derive(Clone, Copy)]
pub(super) struct Client<'a> {
    pub(super) proxy: ProxyRef<'a>,
    pub(super) handle: &'a ClientHandle,
}

/// A request sent to a backend, timed from when its bytes were read.
pub(super) struct Timed<'a> {
    pub(super) dispatched: Dispatched,
    pub(super) started: Instant,
    pub(super) cluster: &'a Cluster,
    /// The request as the client sent it, for a slow log entry.
    pub(super) raw: Bytes,
}

impl Timed<'_> {
    /// Counts the request whose reply is `reply`, sent (last) to `node` when it went to one.
    #[inline]
    pub(super) fn finish(self, reply: &[u8], node: Option<&NodeAddr>, client: Client<'_>) {
        count(self.dispatched, reply, &client.proxy);
        let elapsed = self.started.elapsed();
        if let Some(histogram) = self.cluster.instruments.latency(self.dispatched.family) {
            histogram.record(elapsed);
        }
        // From the configuration the request ran under (a reload changes them), or a
        // `CONFIG SET` since.
        let limits = client.proxy.slowlog.limits(&client.proxy.config().server);
        if limits.is_slow(elapsed) {
            let name = client
                .handle
                .details
                .lock()
                .map(|d| {
                    d.names
                        .as_ref()
                        .and_then(|n| n.name.clone())
                        .unwrap_or_default()
                })
                .unwrap_or_default();
            client.proxy.slowlog.push(
                SlowRequest {
                    raw: &self.raw,
                    client_addr: client.handle.peer.to_string(),
                    client_name: name,
                    backend: self.cluster.name(),
                    node: node.map(NodeAddr::as_str),
                },
                elapsed,
                limits,
            );
        }
    }
}

/// `reply`, counted by [`Timed::finish`] once it is ready.
pub(super) async fn tallied(
    reply: impl std::future::Future<Output = Bytes>,
    timed: Timed<'_>,
    client: Client<'_>,
) -> Bytes {
    let bytes = reply.await;
    timed.finish(&bytes, None, client);
    bytes
}

/// Counts a command answered with `reply`, and the error it may be.
#[inline]
pub(super) fn count(dispatched: Dispatched, reply: &[u8], proxy: &Proxy) {
    let error = proxy.stats.errors.count(reply);
    dispatched.counters.count(error);
}

/// Counts a command whose reply is never an error (a subscription's confirmations) or is
/// dropped (`CLIENT REPLY OFF`).
#[inline]
pub(super) fn count_no_error(dispatched: Dispatched) {
    dispatched.counters.count(false);
}
