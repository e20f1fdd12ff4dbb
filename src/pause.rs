//! `CLIENT PAUSE`: the proxy-wide pause of its own clients' commands, as Redis 7.0 pauses its
//! clients. Sessions ask it before a command runs ([`ClientPause::hold`]); a held request
//! keeps a [`PauseTicket`] and waits on it, without polling, until the pause ends (its
//! timeout or `CLIENT UNPAUSE`) or changes. Nothing here reaches the nodes.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;
use tokio::time::Instant;

/// What a pause holds back, least restrictive first (Redis's `CLIENT_PAUSE_WRITE` <
/// `CLIENT_PAUSE_ALL`: a later pause never makes one less restrictive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PauseMode {
    /// Commands that write or may replicate (`PUBLISH`, `PFCOUNT`, scripts, an `EXEC` of a
    /// transaction with such a command).
    Write,
    /// Every command.
    All,
}

/// What a request is, for a pause: a `WRITE` pause holds only [`Pausable::Write`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pausable {
    /// It writes or may replicate.
    Write,
    /// Anything else.
    Other,
}

/// The pause in force, if any.
#[derive(Debug, Clone, Copy)]
struct PauseState {
    /// `None` when nothing is paused.
    mode: Option<PauseMode>,
    /// When the pause ends by itself.
    end: Instant,
}

impl PauseState {
    /// The mode in force at `now`: a pause past its end holds nothing.
    fn mode_at(&self, now: Instant) -> Option<PauseMode> {
        self.mode.filter(|_| now < self.end)
    }
}

/// The proxy-wide pause, shared by every session.
#[derive(Debug)]
pub struct ClientPause {
    state: watch::Sender<PauseState>,
    /// Whether a pause may be in force: every request reads this, so a proxy that never
    /// pauses pays one load per request. Written only under the watch's lock.
    maybe_on: AtomicBool,
}

impl Default for ClientPause {
    fn default() -> Self {
        ClientPause {
            state: watch::Sender::new(PauseState {
                mode: None,
                end: Instant::now(),
            }),
            maybe_on: AtomicBool::new(false),
        }
    }
}

impl ClientPause {
    /// Pauses until `end` in `mode`. As Redis's `pauseClients`, a pause already in force is
    /// only ever made longer and more restrictive: the mode and end are the larger of both.
    pub fn pause(&self, end: Instant, mode: PauseMode) {
        let now = Instant::now();
        self.state.send_modify(|state| match state.mode_at(now) {
            Some(current) => {
                self.maybe_on.store(true, Ordering::SeqCst);
                state.mode = Some(current.max(mode));
                state.end = state.end.max(end);
            }
            None => {
                self.maybe_on.store(true, Ordering::SeqCst);
                *state = PauseState {
                    mode: Some(mode),
                    end,
                };
            }
        });
    }

    /// Ends the pause (`CLIENT UNPAUSE`): every held request is woken.
    pub fn unpause(&self) {
        self.state.send_modify(|state| {
            state.mode = None;
            self.maybe_on.store(false, Ordering::SeqCst);
        });
    }

    /// A ticket to wait on when the pause in force holds a request of this `class`; `None`
    /// when it may run now.
    pub fn hold(&self, class: Pausable) -> Option<PauseTicket> {
        if !self.maybe_on.load(Ordering::SeqCst) {
            return None;
        }
        // Subscribed before the state is read: a change after the read wakes the ticket.
        let mut watch = self.state.subscribe();
        let state = *watch.borrow_and_update();
        let now = Instant::now();
        let held = match (state.mode_at(now), class) {
            (Some(PauseMode::All), _) | (Some(PauseMode::Write), Pausable::Write) => true,
            (Some(PauseMode::Write), Pausable::Other) => false,
            (None, _) => {
                // Ended by its timeout: later requests need not look again.
                self.state.send_if_modified(|state| {
                    if state.mode_at(Instant::now()).is_none() {
                        state.mode = None;
                        self.maybe_on.store(false, Ordering::SeqCst);
                    }
                    false
                });
                false
            }
        };
        held.then_some(PauseTicket {
            watch,
            end: state.end,
        })
    }

    /// Whether a pause may be in force: `false` means none is, at the cost of one load.
    pub fn maybe_on(&self) -> bool {
        self.maybe_on.load(Ordering::SeqCst)
    }

    /// The mode in force now, if any.
    pub fn mode(&self) -> Option<PauseMode> {
        self.state.borrow().mode_at(Instant::now())
    }
}

/// What a held request waits on: the pause it saw ends or changes.
#[derive(Debug)]
pub struct PauseTicket {
    watch: watch::Receiver<PauseState>,
    end: Instant,
}

impl PauseTicket {
    /// Returns once the pause this ticket saw has ended or changed (`CLIENT UNPAUSE`, another
    /// `CLIENT PAUSE`): the request is then decided again, and may be held again.
    pub async fn released(&mut self) {
        tokio::select! {
            // An error is the proxy gone: nothing holds the request any more.
            _ = self.watch.changed() => {}
            () = tokio::time::sleep_until(self.end) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_write_pause_holds_writes_only_until_its_end() {
        let pause = ClientPause::default();
        assert!(pause.hold(Pausable::Write).is_none());
        pause.pause(Instant::now() + Duration::from_secs(5), PauseMode::Write);
        assert!(pause.hold(Pausable::Other).is_none());
        let mut ticket = pause.hold(Pausable::Write).unwrap();
        let started = Instant::now();
        ticket.released().await;
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert!(pause.hold(Pausable::Write).is_none());
        assert_eq!(pause.mode(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_pause_never_shortens_nor_relaxes_one_in_force() {
        let pause = ClientPause::default();
        let now = Instant::now();
        pause.pause(now + Duration::from_secs(10), PauseMode::All);
        pause.pause(now + Duration::from_secs(1), PauseMode::Write);
        assert_eq!(pause.mode(), Some(PauseMode::All));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(pause.hold(Pausable::Other).is_some());
        pause.pause(now + Duration::from_secs(20), PauseMode::Write);
        tokio::time::sleep(Duration::from_secs(10)).await;
        // Still ALL: the larger mode with the larger end.
        assert_eq!(pause.mode(), Some(PauseMode::All));
    }

    #[tokio::test(start_paused = true)]
    async fn unpause_wakes_a_held_request_at_once() {
        let pause = ClientPause::default();
        pause.pause(Instant::now() + Duration::from_secs(60), PauseMode::All);
        let mut ticket = pause.hold(Pausable::Other).unwrap();
        let started = Instant::now();
        pause.unpause();
        ticket.released().await;
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert!(pause.hold(Pausable::Write).is_none());
    }
}
