//! The session's waits that are not on its socket: for a backend's command table, a
//! subscriber's next message, a kill or an announcement, a deadline, the idle timeout.

use std::future::poll_fn;
use std::pin::Pin;

use bytes::Bytes;

use super::pubsub::Subscriptions;
use crate::proxy::{Announcement, ProxyRef};

/// Waits, within the default backend's retry budget, until some backend has told the proxy its
/// commands; false when none did.
pub(super) async fn wait_for_commands(
    proxy: ProxyRef<'_>,
    cluster: &crate::cluster::Backend,
) -> bool {
    let mut attempts = cluster.attempts();
    while proxy.commands().is_none() {
        if !attempts.pause().await {
            return false;
        }
    }
    true
}

/// The next bytes for a subscribed client; never completes without subscriptions.
pub(super) async fn next_for_subscriber(
    subs: &mut Option<Box<Subscriptions>>,
    proxy: ProxyRef<'_>,
) -> Result<Bytes, crate::backend::BackendError> {
    match subs {
        Some(subs) => subs.next(proxy).await,
        None => std::future::pending().await,
    }
}

/// Completes when the client was killed, has frames in its mailbox (when `mail`), or the
/// proxy announced something (a new configuration, shutdown) the session has not looked at.
pub(super) fn signalled<'s>(
    handle: &'s crate::clients::ClientHandle,
    announcements: &'s tokio::sync::watch::Receiver<Announcement>,
    mail: bool,
) -> impl std::future::Future<Output = ()> + 's {
    poll_fn(move |cx| {
        handle.signal.register(cx);
        if handle.signal.is_killed()
            || (mail && handle.signal.has_mail())
            || announcements.has_changed().unwrap_or(false)
        {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
}

/// Completes at `deadline`; never without one.
pub(super) async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Completes when the idle timer fires; never without one.
pub(super) async fn idle(timer: &mut Option<Pin<Box<tokio::time::Sleep>>>) {
    match timer {
        Some(timer) => timer.as_mut().await,
        None => std::future::pending().await,
    }
}
