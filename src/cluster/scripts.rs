//! Scripts the proxy has seen, so a `NOSCRIPT` from a node that lacks one (a replica promoted by
//! a failover does not inherit the script cache) is healed by loading it there.
//!
//! The session tells the cache of every backend of `EVAL`, `EVAL_RO` and `SCRIPT LOAD`
//! (remembered, one copy shared by all) and of `SCRIPT FLUSH` (emptied), as their command
//! [`Policy`](crate::command::Policy) says: an `EVALSHA` may name keys of any backend. Bodies
//! are copied out of the request, so a remembered script keeps only itself alive, and the cache
//! is bounded in count and in bytes, forgetting the oldest first.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};

use crate::protocol::RequestParser;
use crate::protocol::request::encode_command;

/// Most scripts remembered; beyond it the oldest are forgotten.
pub const MAX_SCRIPTS: usize = 4096;

/// Most bytes of script bodies remembered (64 MiB); beyond it the oldest are forgotten. A body
/// larger than this alone is not remembered.
pub const MAX_SCRIPT_BYTES: usize = 64 * 1024 * 1024;

/// Script bodies by their SHA1 (lowercase hex).
pub struct ScriptCache {
    scripts: Mutex<Scripts>,
    /// [`MAX_SCRIPTS`], smaller in tests.
    max_scripts: usize,
    /// [`MAX_SCRIPT_BYTES`], smaller in tests.
    max_bytes: usize,
}

impl Default for ScriptCache {
    fn default() -> Self {
        ScriptCache {
            scripts: Mutex::default(),
            max_scripts: MAX_SCRIPTS,
            max_bytes: MAX_SCRIPT_BYTES,
        }
    }
}

/// The cache's contents, under its lock.
#[derive(Default)]
struct Scripts {
    /// Bodies by SHA1.
    by_sha: HashMap<String, Bytes>,
    /// The SHA1s in the order they were first remembered, oldest first.
    order: VecDeque<String>,
    /// Sum of the bodies' lengths.
    bytes: usize,
}

impl Scripts {
    fn forget_oldest(&mut self) {
        if let Some(sha) = self.order.pop_front()
            && let Some(body) = self.by_sha.remove(&sha)
        {
            self.bytes -= body.len();
        }
    }
}

impl ScriptCache {
    /// Remembers `body` (from `EVAL` or `SCRIPT LOAD`), as a copy of its own: `body` is usually
    /// a slice of the client's request buffer, which must not stay alive with it.
    pub fn remember(&self, body: &[u8]) {
        Self::remember_in([self], body);
    }

    /// Remembers `body` in each of `caches` (every backend's), sharing one copy of it.
    pub fn remember_in<'a>(caches: impl IntoIterator<Item = &'a ScriptCache>, body: &[u8]) {
        let sha = sha1_smol::Sha1::from(body).digest().to_string();
        let mut copy: Option<Bytes> = None;
        for cache in caches {
            if body.len() <= cache.max_bytes {
                let body = copy.get_or_insert_with(|| Bytes::copy_from_slice(body));
                cache.insert(&sha, body);
            }
        }
    }

    fn insert(&self, sha: &str, body: &Bytes) {
        let mut scripts = self.lock();
        if scripts.by_sha.contains_key(sha) {
            return;
        }
        while !scripts.order.is_empty()
            && (scripts.order.len() >= self.max_scripts
                || scripts.bytes + body.len() > self.max_bytes)
        {
            scripts.forget_oldest();
        }
        scripts.bytes += body.len();
        scripts.order.push_back(sha.to_string());
        scripts.by_sha.insert(sha.to_string(), body.clone());
    }

    /// Forgets every script, as `SCRIPT FLUSH` through the proxy empties the nodes' caches.
    pub fn flush(&self) {
        *self.lock() = Scripts::default();
    }

    /// Number of scripts remembered.
    pub fn len(&self) -> usize {
        self.lock().by_sha.len()
    }

    /// Whether no script is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Scripts> {
        // Nothing panics while holding the lock; were it to, the cache is only a hint for
        // healing NOSCRIPT, so what it holds is still fit to use.
        self.scripts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The body of the script whose SHA1 (in hex, any case) is `sha`, if known.
    pub fn body(&self, sha: &[u8]) -> Option<Bytes> {
        let sha = String::from_utf8_lossy(sha).to_ascii_lowercase();
        self.lock().by_sha.get(&sha).cloned()
    }

    /// `SCRIPT LOAD <body>` for the script an `EVALSHA`/`EVALSHA_RO` payload names, if known.
    pub fn load_command_for(&self, payload: &Bytes) -> Option<Bytes> {
        let mut buf = BytesMut::from(&payload[..]);
        let request = RequestParser::new(u64::MAX, u64::MAX)
            .parse(&mut buf)
            .ok()??;
        let name = request.args.first()?;
        if !name.eq_ignore_ascii_case(b"evalsha") && !name.eq_ignore_ascii_case(b"evalsha_ro") {
            return None;
        }
        let sha = String::from_utf8_lossy(request.args.get(1)?).to_ascii_lowercase();
        let body = self.lock().by_sha.get(&sha)?.clone();
        let mut load = BytesMut::new();
        encode_command(&mut load, &[&b"SCRIPT"[..], b"LOAD", &body]);
        Some(load.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SHA1("return 1"), as Redis computes it.
    const RETURN_1: &str = "e0e1f9fabfc9d4800c877a703b823ac0578ff8db";

    fn with_limits(max_scripts: usize, max_bytes: usize) -> ScriptCache {
        ScriptCache {
            max_scripts,
            max_bytes,
            ..ScriptCache::default()
        }
    }

    fn stored(cache: &ScriptCache, body: &[u8]) -> Option<Bytes> {
        let sha = sha1_smol::Sha1::from(body).digest().to_string();
        cache.lock().by_sha.get(&sha).cloned()
    }

    #[test]
    fn a_remembered_body_does_not_keep_the_request_buffer_alive() {
        let cache = ScriptCache::default();
        // The body as the session sees it: a slice of the buffer the request was read into,
        // which here also holds a large argument.
        let mut buffer = BytesMut::new();
        encode_command(
            &mut buffer,
            &[&b"EVAL"[..], b"return 1", b"0", &vec![b'x'; 1 << 20]],
        );
        let request = buffer.freeze();
        let start = request.windows(8).position(|w| w == b"return 1").unwrap();
        let body = request.slice(start..start + 8);
        cache.remember(&body);
        drop(body);
        // No other handle on the request's allocation is left: the cache has none.
        assert!(request.is_unique());
        let kept = stored(&cache, b"return 1").unwrap();
        assert_eq!(&kept[..], b"return 1");
        let range = request.as_ptr_range();
        assert!(
            !range.contains(&kept.as_ptr()),
            "the body is a fresh allocation"
        );
    }

    #[test]
    fn script_flush_empties_the_cache() {
        let cache = ScriptCache::default();
        cache.remember(b"return 1");
        cache.remember(b"return 2");
        assert_eq!(cache.len(), 2);
        cache.flush();
        assert!(cache.is_empty());
        let mut evalsha = BytesMut::new();
        encode_command(&mut evalsha, &["EVALSHA", RETURN_1, "0"]);
        assert!(cache.load_command_for(&evalsha.freeze()).is_none());
        // Usable again afterwards, its byte count restarted.
        cache.remember(b"return 1");
        assert_eq!(cache.lock().bytes, 8);
    }

    #[test]
    fn over_the_byte_bound_the_oldest_scripts_are_forgotten() {
        let cache = with_limits(100, 25);
        cache.remember(b"return 10");
        cache.remember(b"return 20");
        // 27 bytes with this one: the oldest goes.
        cache.remember(b"return 30");
        assert!(stored(&cache, b"return 10").is_none());
        assert!(stored(&cache, b"return 20").is_some());
        assert!(stored(&cache, b"return 30").is_some());
        assert_eq!(cache.lock().bytes, 18);
        // Larger than the whole bound: not remembered, and nothing forgotten for it.
        cache.remember(&[b' '; 26]);
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn over_the_count_bound_the_oldest_scripts_are_forgotten() {
        let cache = with_limits(2, MAX_SCRIPT_BYTES);
        cache.remember(b"return 1");
        cache.remember(b"return 2");
        // Seen again: still one entry, and not moved.
        cache.remember(b"return 1");
        cache.remember(b"return 3");
        assert_eq!(cache.len(), 2);
        assert!(stored(&cache, b"return 1").is_none());
        assert!(stored(&cache, b"return 3").is_some());
    }

    #[test]
    fn evalsha_of_a_remembered_script_yields_its_load() {
        let cache = ScriptCache::default();
        let body = Bytes::from("return 1");
        cache.remember(&body);
        let sha = RETURN_1;
        let mut evalsha = BytesMut::new();
        encode_command(&mut evalsha, &["EVALSHA", sha, "0"]);
        let load = cache.load_command_for(&evalsha.freeze()).unwrap();
        assert_eq!(
            &load[..],
            b"*3\r\n$6\r\nSCRIPT\r\n$4\r\nLOAD\r\n$8\r\nreturn 1\r\n"
        );
        let mut unknown = BytesMut::new();
        encode_command(&mut unknown, &["EVALSHA", "ffff", "0"]);
        assert!(cache.load_command_for(&unknown.freeze()).is_none());
    }
}
