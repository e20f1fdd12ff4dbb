//! Counting one request once its reply is ready: its command's counter by result, and, for a
//! request sent to a backend, its latency and possibly a slow log entry.
//!
//! Everything here was resolved before the request arrived (the command's counters hang off
//! its spec, the histograms off its backend): a request costs two or three relaxed atomic
//! additions and one clock reading, and formats nothing unless it was slow.

use bytes::Bytes;
use std::time::Duration;

use tokio::time::Instant;

use crate::backend::NodeAddr;
use crate::clients::ClientHandle;
use crate::cluster::Backend;
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
    /// Whether the slow log may take it: a known command without `skip_slowlog`, past the
    /// checks that refuse it before it runs (as Redis logs only what it ran: not a refusal
    /// for authentication, permissions or the argument count).
    pub(crate) slowlog: bool,
}

impl Dispatched {
    /// What dispatch learned of a request of `spec`'s.
    pub(crate) fn of(spec: &crate::command::CommandSpec) -> Self {
        Dispatched {
            counters: spec.counters(),
            family: spec.family,
            slowlog: !spec.skip_slowlog,
        }
    }
}

impl Default for Dispatched {
    fn default() -> Self {
        Dispatched {
            counters: &OTHER,
            family: Family::Other,
            slowlog: false,
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
    pub(super) cluster: &'a Backend,
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
        if self.dispatched.slowlog {
            let place = (self.cluster.name(), node.map(NodeAddr::as_str));
            log_if_slow(&self.raw, elapsed, place, client);
        }
    }
}

impl Timed<'_> {
    /// Counts a request the proxy answered itself with `reply`, and logs it when slow, as
    /// Redis logs every command it runs: with the threshold at 0, Redis's own tests expect a
    /// `PING` in the slow log.
    pub(super) fn answered(self, reply: &[u8], client: Client<'_>) {
        count(self.dispatched, reply, &client.proxy);
        if self.dispatched.slowlog {
            log_if_slow(&self.raw, self.started.elapsed(), ("", None), client);
        }
    }
}

/// Logs `raw` in the slow log if `elapsed` is over the threshold in force: from the
/// configuration the request ran under (a reload changes it), or a `CONFIG SET` since.
/// `place` is the backend and the node that answered, when one did.
fn log_if_slow(raw: &[u8], elapsed: Duration, place: (&str, Option<&str>), client: Client<'_>) {
    let limits = client.proxy.slowlog.limits(&client.proxy.config().server);
    if !limits.is_slow(elapsed) {
        return;
    }
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
            raw,
            client_addr: client.handle.peer.to_string(),
            client_name: name,
            backend: place.0,
            node: place.1,
        },
        elapsed,
        limits,
    );
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
