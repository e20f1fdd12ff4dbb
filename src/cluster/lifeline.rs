//! How long a cluster's background tasks (the topology refresher, the sentinel watchers) run:
//! until the proxy shuts down, or until no snapshot of the configuration holds the cluster's
//! [`Lifeline`] any more, because a reload removed or replaced the backend.

use tokio::sync::watch;

/// Held by every configuration snapshot that names the cluster; when the last one is dropped,
/// the cluster's background tasks stop, and with them their references to the cluster.
#[derive(Debug)]
pub struct Lifeline {
    _alive: watch::Sender<()>,
}

/// What a background task of a cluster waits on to stop: the proxy's shutdown, or the end of
/// the cluster's lifeline.
#[derive(Debug, Clone)]
pub struct StopSignal {
    shutdown: watch::Receiver<bool>,
    alive: watch::Receiver<()>,
}

impl StopSignal {
    /// A lifeline, and the signal that fires when it is dropped or `shutdown` turns true.
    pub fn new(shutdown: watch::Receiver<bool>) -> (Lifeline, StopSignal) {
        let (alive, alive_rx) = watch::channel(());
        (
            Lifeline { _alive: alive },
            StopSignal {
                shutdown,
                alive: alive_rx,
            },
        )
    }

    /// Completes when the task should stop.
    pub async fn stopped(&mut self) {
        if self.is_stopped() {
            return;
        }
        // Nothing is ever sent on the lifeline: `changed` completes only when it is dropped.
        tokio::select! {
            _ = self.shutdown.changed() => {}
            _ = self.alive.changed() => {}
        }
    }

    /// Whether the task should stop now.
    pub fn is_stopped(&self) -> bool {
        *self.shutdown.borrow() || self.alive.has_changed().is_err()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn the_signal_fires_when_the_lifeline_is_dropped_or_on_shutdown() {
        let (shutdown_tx, shutdown) = watch::channel(false);
        let (lifeline, mut stop) = StopSignal::new(shutdown.clone());
        assert!(!stop.is_stopped());
        drop(lifeline);
        assert!(stop.is_stopped());
        stop.stopped().await;

        let (_lifeline, mut stop) = StopSignal::new(shutdown);
        assert!(!stop.is_stopped());
        shutdown_tx.send(true).unwrap();
        assert!(stop.is_stopped());
        stop.stopped().await;
    }
}
