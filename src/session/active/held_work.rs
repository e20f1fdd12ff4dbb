//! Work the active phase holds until every earlier reply is out (see [`Held`]), and starts
//! then: a command on the client's own connection, a request that waits for a backend to
//! answer, a (un)subscribe. Rarer than forwarded requests, and kept apart from their path.

use std::sync::Arc;

use bytes::Bytes;

use super::{Edge, Phase};
use crate::protocol::reply;
use crate::session::Conn;
use crate::session::held::Held;
use crate::session::owed::Slow;
use crate::session::own;
use crate::session::pubsub::Subscriptions;
use crate::session::tally::tallied;
use crate::session::wait::wait_for_commands;

impl<'a> Phase<'a> {
    /// Every earlier reply is out: starts the work that waited for that.
    pub(super) async fn start_held(&mut self, c: &mut Conn<'_>, edge: &Edge<'a>) {
        match self.held.take() {
            Some(Held::Own { op, timed, silent }) => {
                // Made on first use: most clients never need a connection of their own.
                let own = Arc::clone(c.state.own.get_or_insert_with(Default::default));
                let entry = Arc::clone(&c.state.registered.handle);
                let user = c.state.user.clone();
                let run = own::run(
                    edge.proxy,
                    own,
                    op,
                    c.state.protocol,
                    c.state.db,
                    entry,
                    user,
                );
                let client = edge.client;
                let future: Slow<'a> = if silent {
                    // CLIENT REPLY OFF/SKIP: it runs (a transaction commits, a blocking pop
                    // takes its element), only its reply is dropped.
                    Box::pin(async move {
                        tallied(run, timed, client).await;
                        Bytes::new()
                    })
                } else {
                    Box::pin(tallied(run, timed, client))
                };
                self.pending.push_slow(future);
                self.own_running = true;
            }
            Some(Held::AwaitBackend(request)) => {
                if Box::pin(wait_for_commands(edge.proxy, edge.cluster)).await {
                    self.retried = Some(request);
                } else {
                    let error = reply::error(&edge.cluster.unreachable_error());
                    self.pending.push_ready(error);
                }
            }
            Some(Held::Pubsub { kind, names }) => {
                let protocol = c.state.protocol;
                let subscriptions = self.subs.get_or_insert_with(|| {
                    Box::new(Subscriptions::new(
                        protocol,
                        c.state.id,
                        Arc::clone(&c.proxy.subscribers),
                    ))
                });
                // Boxed, as the wait below: rare, and large enough to double every active
                // phase's allocation.
                match Box::pin(subscriptions.start(edge.proxy, kind, names)).await {
                    Ok(now) => self.out.push_uncounted(now, edge.owed),
                    Err(error) => {
                        let error = reply::error(&format!("ERR respgate: {error}"));
                        self.pending.push_ready(error);
                    }
                }
                c.state.subscribed = subscriptions.is_subscribed();
            }
            None => {}
        }
    }
}
