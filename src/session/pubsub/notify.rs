//! Keyspace notifications (`__keyspace@<db>__:<key>`, `__keyevent@<db>__:<event>`): Redis
//! Cluster publishes them only on the node where the key is, never across the cluster bus, so
//! a client of one Redis that watches them needs, through the proxy, the events of every
//! master: an event channel or a pattern that can match one is subscribed on every master, and
//! one key's channel on that key's master.

use crate::keyspace::{Place, RouteTable};
use crate::slot::Slot;

/// The prefix of one key's channel.
const KEYSPACE: &[u8] = b"__keyspace@";
/// The prefix of one event's channel.
const KEYEVENT: &[u8] = b"__keyevent@";

/// Whether `channel` is a keyspace notification channel (of either kind).
pub(crate) fn is_notification(channel: &[u8]) -> bool {
    channel.starts_with(KEYSPACE) || channel.starts_with(KEYEVENT)
}

/// Where a subscription to `channel` (not sharded) is held and a `PUBLISH` to it goes: one
/// node of the channel's backend for every such channel and pattern, the master of slot 0 (its
/// Pub/Sub home). Redis Cluster delivers every `PUBLISH` on every node, so any node would do;
/// one node for all of them is what keeps a client's messages in the order they were
/// published, a channel's before a pattern's, and each receiver counted once, as on one Redis.
/// Every replica of the proxy picks the same node, so a `PUBLISH` through one counts the
/// subscribers of all. One key's keyspace channel is the exception: its key's master alone
/// publishes it (see [`place_of_channel`]).
pub(crate) fn home_of_channel(routes: &RouteTable, channel: &[u8]) -> Place {
    if keyspace_key(channel).is_some() {
        return place_of_channel(routes, channel);
    }
    Place {
        backend: routes.route(channel).backend,
        slot: Slot::ZERO,
    }
}

/// Where a channel lives: channels route by the same rules as keys (the backend sees the
/// channel as the client wrote it: no prefix is stripped from channels). One key's keyspace
/// channel (`__keyspace@0__:<key>`) lives where its key does, the only node that publishes it.
pub(crate) fn place_of_channel(routes: &RouteTable, channel: &[u8]) -> Place {
    if let Some(key) = keyspace_key(channel) {
        let route = routes.route(key);
        return Place {
            backend: route.backend,
            slot: routes.slot_on(route.backend, key.get(route.strip..).unwrap_or_default()),
        };
    }
    let backend = routes.route(channel).backend;
    Place {
        backend,
        slot: routes.slot_on(backend, channel),
    }
}

/// The key of a one-key channel `__keyspace@<db>__:<key>`, which lives where the key does.
pub(crate) fn keyspace_key(channel: &[u8]) -> Option<&[u8]> {
    let rest = channel.strip_prefix(KEYSPACE)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    rest.get(digits..)?.strip_prefix(b"__:")
}

/// Whether a subscription to `name` (a channel when `pattern` is false) must be held on every
/// master to see every event: an event channel, or a pattern that may match a notification
/// channel (`*`, `__key*`, `__keyspace@0__:user:*`).
pub(crate) fn needs_every_master(name: &[u8], pattern: bool) -> bool {
    if pattern {
        may_match_prefix(name, KEYSPACE) || may_match_prefix(name, KEYEVENT)
    } else {
        name.starts_with(KEYEVENT)
    }
}

/// Whether the glob `pattern` may match some string that starts with `prefix`. It errs
/// towards yes (a character class is taken to match): a wrong yes costs an unused
/// subscription, a wrong no would lose events.
fn may_match_prefix(pattern: &[u8], prefix: &[u8]) -> bool {
    let mut p = pattern.iter();
    for &wanted in prefix {
        match p.next() {
            None => return false,
            Some(b'*' | b'[') => return true,
            Some(b'?') => {}
            Some(b'\\') => match p.next() {
                Some(&c) if c == wanted => {}
                _ => return false,
            },
            Some(&c) if c == wanted => {}
            Some(_) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_keys_channel_names_its_key() {
        assert_eq!(keyspace_key(b"__keyspace@0__:user:1"), Some(&b"user:1"[..]));
        assert_eq!(keyspace_key(b"__keyspace@12__:a"), Some(&b"a"[..]));
        assert_eq!(keyspace_key(b"__keyspace@__:a"), None);
        assert_eq!(keyspace_key(b"__keyevent@0__:expired"), None);
        assert_eq!(keyspace_key(b"news"), None);
    }

    #[test]
    fn event_channels_and_patterns_that_may_match_them_need_every_master() {
        for pattern in [
            "*",
            "__key*",
            "__keyspace@0__:*",
            "__keyevent@?__:expired",
            "[_]_keyevent@0__:*",
            "_\\_keyspace@*",
            "__keyevent@0__:expired",
        ] {
            assert!(needs_every_master(pattern.as_bytes(), true), "{pattern}");
        }
        for pattern in ["news.*", "__keys", "_a*", "__keyspace"] {
            assert!(!needs_every_master(pattern.as_bytes(), true), "{pattern}");
        }
        assert!(needs_every_master(b"__keyevent@0__:expired", false));
        assert!(!needs_every_master(b"__keyspace@0__:k", false));
        assert!(!needs_every_master(b"news", false));
    }
}
