//! Moving a session to the newest configuration snapshot, between two requests.
//!
//! A session notices a reload before it starts its next request. It stops taking new requests,
//! lets those in flight finish under the snapshot they started with, then moves: the next
//! request is read, routed and limited by the new configuration. An idle session moves at
//! once, so that a backend a reload removed is not kept alive by idle clients.
//!
//! What the client built up moves with it: its subscriptions are placed where the new routes
//! put them ([`Subscriptions::follow`](super::pubsub::Subscriptions)); the place of its last
//! write (where `WAIT` goes) is kept when its backend carried over. A transaction open with
//! `MULTI` finishes under the snapshot it began with, and the session moves after it; so does
//! one under `WATCH`, unless the reload changed its user's rights: then the watch ends with the
//! move (the next `EXEC` fails as when a watched key changed, and the connection holding it is
//! closed), so that no client keeps old rights by holding one. A
//! client's own connection (blocking commands) stays until a command needs another node.
//! The client's user is looked up by name among the new users: it stays logged in when its
//! password changes, as in Redis, takes the new rules, and is closed if the user was removed.

use std::sync::Arc;
use std::time::Duration;

use tracing::debug;

use super::{ClientState, Conn};
use crate::config::ServerConfig;
use crate::keyspace::Place;
use crate::proxy::{Proxy, ProxyRef, Snapshot};

/// Whether the client may move from `pinned` to the newest snapshot now: not inside a
/// transaction, whose keys' place was decided under the one in force. A `WATCH` alone holds it
/// back only while its user's rights stay as they were, so that no client keeps old rights by
/// holding one: when they changed, moving ends the watch, and the next `EXEC` fails as when a
/// watched key changed.
pub(super) fn may_switch(state: &ClientState, proxy: &Proxy, pinned: &Snapshot) -> bool {
    state.txn.is_none()
        && (state.watched.is_none()
            || state
                .user
                .as_deref()
                .is_some_and(|user| ProxyRef::new(proxy, pinned).rights_changed(user)))
}

/// The idle timeout `server` sets, if any.
pub(super) fn idle_timeout(server: &ServerConfig) -> Option<Duration> {
    (server.client_idle_timeout_s > 0).then(|| Duration::from_secs(server.client_idle_timeout_s))
}

/// Moves the session from `pinned` to the snapshot in force, when it is newer and the client
/// may move. False when the client must be closed: its user was removed, or its subscriptions
/// could not be placed or are no longer its user's to hold.
pub(super) async fn to_newest(c: &mut Conn<'_>, pinned: &mut Arc<Snapshot>) -> bool {
    if !c.proxy.is_newer_than(pinned) || !may_switch(&c.state, c.proxy, pinned) {
        return true;
    }
    let newest = c.proxy.snapshot();
    if c.state.watched.take().is_some() {
        c.state.watch_broken = true;
        // The node forgets the watch with the connection that held it.
        if let Some(Ok(mut own)) = c.state.own.as_ref().map(|o| o.try_lock()) {
            *own = None;
        }
    }
    if !super::acl::follow_user(&mut c.state, c.subs.as_deref(), newest.users()) {
        debug!(
            client = c.state.id,
            "its user was removed by a reload, or lost a channel it is subscribed to; closing"
        );
        return false;
    }
    let proxy = ProxyRef::new(c.proxy, &newest);
    if let Some(subs) = c.subs.as_mut()
        && let Err(error) = subs.follow(pinned, proxy).await
    {
        debug!(client = c.state.id, %error, "subscriptions lost in a reload; closing");
        return false;
    }
    c.state.last_write = c.state.last_write.and_then(|place| {
        Some(Place {
            backend: newest.carried_over(pinned, place.backend)?,
            slot: place.slot,
        })
    });
    let server = &newest.config.server;
    c.parser.set_limits(
        server.proto_max_bulk_len,
        server.max_multibulk_len,
        server.max_request_bytes,
    );
    c.max_pipeline = server.max_pipeline;
    c.idle_timeout = idle_timeout(server);
    c.idle_timer = match (c.idle_timeout, c.idle_timer.take()) {
        (None, _) => None,
        (Some(_), Some(timer)) => Some(timer),
        (Some(timeout), None) => Some(Box::pin(tokio::time::sleep(timeout))),
    };
    debug!(
        client = c.state.id,
        generation = newest.generation,
        "moved to a new configuration"
    );
    *pinned = newest;
    true
}
