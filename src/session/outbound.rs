//! Replies owed to one client: queued in request order, written without ever blocking the
//! session, and counted in bytes against the client's output limits.
//!
//! A reply counts from the moment its node's answer reaches the proxy until the client's socket
//! takes it, so a client that stops reading is bounded however many requests it pipelined:
//! over the soft limit its further requests wait unread, over the hard limit (or the soft one
//! for too long) it is closed and everything it was owed is freed, as Redis does with
//! `client-output-buffer-limit`.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::time::Instant;

use super::ClientStream;
use crate::config::OutputLimit;

/// Most replies handed to the kernel in one write.
const MAX_SLICES: usize = 64;

/// What the limits say about a client now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Standing {
    /// Within its limits.
    Fine,
    /// Over the soft limit: read no more requests until it catches up.
    Paused,
    /// Over a limit it may not stay over: close it.
    Close {
        /// Bytes owed.
        owed: u64,
        /// The limit it broke, in bytes.
        limit: u64,
    },
}

/// The replies in order, and how far the front one is written.
#[derive(Debug, Default)]
pub(super) struct Outbound {
    queue: VecDeque<Bytes>,
    /// The stream still holds bytes it took (encrypted TLS bytes the socket did not take).
    stream_holds: bool,
    over_soft_since: Option<Instant>,
}

impl Outbound {
    /// Queues a reply that is already counted as owed.
    pub(super) fn push(&mut self, reply: Bytes) {
        if !reply.is_empty() {
            self.queue.push_back(reply);
        }
    }

    /// Queues a reply not counted yet (a Pub/Sub message), and counts it.
    pub(super) fn push_uncounted(&mut self, reply: Bytes, owed: &AtomicU64) {
        owed.fetch_add(reply.len() as u64, Ordering::Relaxed);
        self.push(reply);
    }

    /// Whether everything is written, down to the socket.
    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty() && !self.stream_holds
    }

    /// Writes as much as the socket takes now, without waiting; what is written no longer
    /// counts as owed. An error means the client is gone.
    /// `sent` counts the bytes written.
    pub(super) fn flush(
        &mut self,
        io: &mut ClientStream,
        owed: &AtomicU64,
        sent: &AtomicU64,
    ) -> io::Result<()> {
        let result = self.write(io, owed, sent);
        self.stream_holds = io.holds_output();
        result
    }

    fn write(
        &mut self,
        io: &mut ClientStream,
        owed: &AtomicU64,
        sent: &AtomicU64,
    ) -> io::Result<()> {
        io.flush_now()?;
        while !self.queue.is_empty() {
            let written = {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let mut count = 0;
                for (slice, reply) in slices.iter_mut().zip(&self.queue) {
                    *slice = IoSlice::new(reply);
                    count += 1;
                }
                let slices = slices.get(..count).unwrap_or_default();
                match io.write_now(slices) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) => return Err(e),
                }
            };
            owed.fetch_sub(written as u64, Ordering::Relaxed);
            sent.fetch_add(written as u64, Ordering::Relaxed);
            self.consume(written);
        }
        Ok(())
    }

    fn consume(&mut self, mut written: usize) {
        while written > 0 {
            let Some(front) = self.queue.front_mut() else {
                return;
            };
            if written < front.len() {
                front.advance(written);
                return;
            }
            written -= front.len();
            self.queue.pop_front();
        }
    }

    /// Where a client owed `owed` bytes stands against `limit` at `now`.
    pub(super) fn standing(&mut self, owed: u64, limit: &OutputLimit, now: Instant) -> Standing {
        if limit.hard_limit_bytes > 0 && owed > limit.hard_limit_bytes {
            return Standing::Close {
                owed,
                limit: limit.hard_limit_bytes,
            };
        }
        if limit.soft_limit_bytes == 0 || owed <= limit.soft_limit_bytes {
            self.over_soft_since = None;
            return Standing::Fine;
        }
        let since = *self.over_soft_since.get_or_insert(now);
        if now.duration_since(since) >= Duration::from_secs(limit.soft_limit_s) {
            return Standing::Close {
                owed,
                limit: limit.soft_limit_bytes,
            };
        }
        Standing::Paused
    }

    /// When a client over its soft limit since then must be closed, if it is over it.
    pub(super) fn soft_deadline(&self, limit: &OutputLimit) -> Option<Instant> {
        self.over_soft_since
            .map(|since| since + Duration::from_secs(limit.soft_limit_s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit() -> OutputLimit {
        OutputLimit {
            hard_limit_bytes: 100,
            soft_limit_bytes: 50,
            soft_limit_s: 10,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn hard_limit_closes_at_once_soft_limit_pauses_then_closes() {
        let mut out = Outbound::default();
        let now = Instant::now();
        assert_eq!(out.standing(50, &limit(), now), Standing::Fine);
        assert_eq!(out.standing(51, &limit(), now), Standing::Paused);
        assert_eq!(
            out.soft_deadline(&limit()),
            Some(now + Duration::from_secs(10))
        );
        assert_eq!(
            out.standing(60, &limit(), now + Duration::from_secs(9)),
            Standing::Paused
        );
        assert_eq!(
            out.standing(60, &limit(), now + Duration::from_secs(10)),
            Standing::Close {
                owed: 60,
                limit: 50
            }
        );
        assert_eq!(
            out.standing(101, &limit(), now),
            Standing::Close {
                owed: 101,
                limit: 100
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_below_the_soft_limit_restarts_its_clock() {
        let mut out = Outbound::default();
        let now = Instant::now();
        assert_eq!(out.standing(60, &limit(), now), Standing::Paused);
        assert_eq!(
            out.standing(10, &limit(), now + Duration::from_secs(5)),
            Standing::Fine
        );
        assert_eq!(
            out.standing(60, &limit(), now + Duration::from_secs(12)),
            Standing::Paused
        );
    }

    #[test]
    fn zero_turns_limits_off() {
        let mut out = Outbound::default();
        let off = OutputLimit::default();
        assert_eq!(out.standing(u64::MAX, &off, Instant::now()), Standing::Fine);
    }

    #[test]
    fn consume_advances_across_replies() {
        let mut out = Outbound::default();
        out.push(Bytes::from_static(b"abc"));
        out.push(Bytes::from_static(b"defg"));
        out.consume(4);
        assert_eq!(out.queue.len(), 1);
        assert_eq!(&out.queue[0][..], b"efg");
        out.consume(3);
        assert!(out.is_empty());
    }
}
