//! Where a [`Gather`] becomes the future that answers it: the one place each kind of gathering
//! is started, whether its reply goes to the client or (`CLIENT REPLY OFF`) nowhere.

use std::future::Future;

use bytes::Bytes;

use super::action::{Action, Gather};
use super::owed::Slow;
use super::pubsub;
use super::tally::{Client, Timed, tallied};
use crate::cluster::Backend;
use crate::protocol::Protocol;
use crate::proxy::ProxyRef;
use crate::{fanout, multikey};

/// What becomes of a started gathering's reply.
pub(super) trait Finish<'a> {
    /// Boxes `run`, which answers a request to `cluster`, with what follows its reply.
    fn finish<F>(self, cluster: &'a Backend, run: F) -> Slow<'a>
    where
        F: Future<Output = Bytes> + Send + 'a;
}

/// The reply goes to the client, the request counted and timed (see [`tallied`]); `timed`
/// makes its timing for the backend it ran on.
pub(super) struct Counted<'a, T> {
    pub(super) timed: T,
    pub(super) client: Client<'a>,
}

impl<'a, T> Finish<'a> for Counted<'a, T>
where
    T: FnOnce(&'a Backend) -> Timed<'a>,
{
    fn finish<F>(self, cluster: &'a Backend, run: F) -> Slow<'a>
    where
        F: Future<Output = Bytes> + Send + 'a,
    {
        Box::pin(tallied(run, (self.timed)(cluster), self.client))
    }
}

/// The client asked for no replies: the work is done, its reply dropped.
pub(super) struct Silenced;

impl<'a> Finish<'a> for Silenced {
    fn finish<F>(self, _cluster: &'a Backend, run: F) -> Slow<'a>
    where
        F: Future<Output = Bytes> + Send + 'a,
    {
        Box::pin(async move {
            run.await;
            Bytes::new()
        })
    }
}

impl Gather {
    /// Starts the gathering on `proxy`'s backends (`cluster` being the default one), in a
    /// future that `finish` completes.
    pub(super) fn start<'a>(
        self,
        proxy: ProxyRef<'a>,
        cluster: &'a Backend,
        protocol: Protocol,
        db: u8,
        affinity: usize,
        finish: impl Finish<'a>,
    ) -> Slow<'a> {
        match self {
            Gather::Publish(publish) => {
                let cluster = proxy
                    .backend(publish.backend)
                    .map_or(cluster, |b| b.as_ref());
                let run = pubsub::publish(proxy, publish, protocol, db, affinity);
                finish.finish(cluster, run)
            }
            Gather::Split(split) => {
                finish.finish(cluster, multikey::run(proxy, split, protocol, db, affinity))
            }
            Gather::FanOut(fanout) => {
                finish.finish(cluster, fanout::run(proxy, fanout, protocol, db, affinity))
            }
            Gather::Broadcast(broadcast) => {
                finish.finish(cluster, crate::broadcast::run(proxy, broadcast, protocol))
            }
            Gather::Info(request) => {
                finish.finish(cluster, super::info::run(proxy, request, protocol))
            }
            Gather::Scan(args) => {
                let run = async move { fanout::scan(proxy, &args, protocol, db, affinity).await };
                finish.finish(cluster, run)
            }
            Gather::Watched(backends) => {
                let limit = cluster.conn_settings().connect_timeout;
                let run = super::client_tracking::once_watched(proxy, backends, limit);
                finish.finish(cluster, run)
            }
            Gather::Moving(request) => finish.finish(
                cluster,
                super::moving::run(proxy, request, protocol, affinity),
            ),
        }
    }
}

/// Runs `action` for a client that asked for no replies, its reply dropped.
pub(super) fn silently<'a>(
    proxy: ProxyRef<'a>,
    cluster: &'a Backend,
    action: Action,
    protocol: Protocol,
    db: u8,
    affinity: usize,
) -> Slow<'a> {
    match action {
        Action::Forward {
            backend,
            payload,
            target,
            access,
        } => Box::pin(async move {
            if let Some(cluster) = proxy.backend(backend) {
                cluster
                    .execute(super::action::forwarded(
                        payload,
                        target,
                        access,
                        (protocol, db, affinity),
                    ))
                    .await;
            }
            Bytes::new()
        }),
        // A silenced INFO changes nothing.
        Action::Gather(Gather::Info(_)) => Box::pin(async { Bytes::new() }),
        Action::Gather(gather) => gather.start(proxy, cluster, protocol, db, affinity, Silenced),
        // Own-connection work, subscriptions and paused requests never come here (see the
        // caller).
        Action::Reply(_)
        | Action::Push(_)
        | Action::Close(_)
        | Action::Own(_)
        | Action::Pubsub { .. }
        | Action::AwaitBackend(_)
        | Action::Postpone(_) => Box::pin(async { Bytes::new() }),
    }
}
