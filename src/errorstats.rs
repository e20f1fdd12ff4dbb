//! The error replies the proxy sent its clients, counted as Redis counts its own
//! (`total_error_replies`, and `errorstat_<PREFIX>:count=N` in `INFO errorstats`): not the
//! nodes' counts, which include errors no client saw (a `MOVED` the proxy followed, a node's
//! other clients) and miss those the proxy answers itself.
//!
//! An error is counted by its first word, as Redis's `afterErrorReply` takes it: the text up to
//! the first space within the first 32 bytes (the `-` included), else `ERR`. `CONFIG RESETSTAT`
//! through the proxy starts them again, as in Redis.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Most error prefixes kept apart: any further one is counted in `total_error_replies` only
/// (Redis 7.2 also stops at 128), so a client that makes up errors cannot grow the table.
const MAX_PREFIXES: usize = 128;
/// How far Redis looks for the space that ends an error's prefix.
const PREFIX_SEARCH: usize = 32;

/// Error replies sent to clients: in all, and by prefix.
#[derive(Debug, Default)]
pub struct ErrorStats {
    total: AtomicU64,
    by_prefix: Mutex<BTreeMap<Vec<u8>, u64>>,
}

impl ErrorStats {
    /// Counts `reply`, the reply sent to a client, when it is an error (RESP2 `-`, RESP3 `!`).
    #[inline]
    pub fn count(&self, reply: &[u8]) -> bool {
        let text = match reply.first() {
            Some(b'-') => reply.get(1..),
            Some(b'!') => blob_text(reply),
            _ => return false,
        };
        self.total.fetch_add(1, Ordering::Relaxed);
        let prefix = prefix_of(text.unwrap_or_default());
        let mut by_prefix = self.lock();
        if let Some(count) = by_prefix.get_mut(prefix) {
            *count += 1;
        } else if by_prefix.len() < MAX_PREFIXES {
            by_prefix.insert(prefix.to_vec(), 1);
        }
        true
    }

    /// Error replies sent since start or the last reset (`total_error_replies`).
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// `errorstat_<PREFIX>` and `count=N` for each prefix seen, in Redis's (byte) order.
    pub fn lines(&self) -> Vec<(String, String)> {
        self.lock()
            .iter()
            .map(|(prefix, count)| {
                let prefix = String::from_utf8_lossy(prefix);
                (format!("errorstat_{prefix}"), format!("count={count}"))
            })
            .collect()
    }

    /// Starts again from nothing (`CONFIG RESETSTAT`).
    pub fn reset(&self) {
        let mut by_prefix = self.lock();
        by_prefix.clear();
        self.total.store(0, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Vec<u8>, u64>> {
        self.by_prefix.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The prefix of the error whose text (after `-`, up to `\r\n` or beyond) is `text`.
fn prefix_of(text: &[u8]) -> &[u8] {
    // Redis searches the error with its `-`: 31 bytes of the text.
    let end = text
        .iter()
        .position(|&b| b == b'\r')
        .unwrap_or(text.len())
        .min(PREFIX_SEARCH - 1);
    let head = text.get(..end).unwrap_or_default();
    match head.iter().position(|&b| b == b' ') {
        Some(space) => head.get(..space).unwrap_or(b"ERR"),
        None => b"ERR",
    }
}

/// The text of a RESP3 blob error `!<len>\r\n<text>\r\n`.
fn blob_text(reply: &[u8]) -> Option<&[u8]> {
    let at = reply.iter().position(|&b| b == b'\n')?;
    reply.get(at + 1..)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_count_by_their_first_word_as_redis_counts_them() {
        let stats = ErrorStats::default();
        assert!(!stats.count(b"+OK\r\n"));
        assert!(!stats.count(b"*1\r\n-ERR inner\r\n"));
        assert!(stats.count(b"-ERR unknown command 'x'\r\n"));
        assert!(stats.count(b"-WRONGTYPE Operation against a key\r\n"));
        assert!(stats.count(b"-WRONGTYPE Operation against a key\r\n"));
        // No space within 32 bytes: ERR.
        assert!(stats.count(b"-NOSPACEINTHEFIRSTTHIRTYTWOBYTESATALL x\r\n"));
        assert!(stats.count(b"-BUSY\r\n"));
        assert!(stats.count(b"!21\r\nSYNTAX invalid syntax\r\n"));
        assert_eq!(stats.total(), 6);
        assert_eq!(
            stats.lines(),
            [
                ("errorstat_ERR".to_string(), "count=3".to_string()),
                ("errorstat_SYNTAX".to_string(), "count=1".to_string()),
                ("errorstat_WRONGTYPE".to_string(), "count=2".to_string()),
            ]
        );
        stats.reset();
        assert_eq!(stats.total(), 0);
        assert!(stats.lines().is_empty());
    }

    #[test]
    fn a_prefix_ending_at_the_32nd_byte_is_found_as_in_redis() {
        // "-" + 30 letters + " ": the space is the 32nd byte of Redis's search.
        let thirty = "A".repeat(30);
        assert_eq!(
            prefix_of(format!("{thirty} x").as_bytes()),
            thirty.as_bytes()
        );
        let thirty_one = "A".repeat(31);
        assert_eq!(prefix_of(format!("{thirty_one} x").as_bytes()), b"ERR");
    }
}
