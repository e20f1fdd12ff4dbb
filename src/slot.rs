//! Hash slots: CRC16 (XMODEM) of the key, or of its hash tag, modulo 16384. At the bottom of
//! the house: configuration, routes, the slot map and sessions all speak of slots.

/// Number of hash slots in a Redis Cluster.
pub const SLOT_COUNT: u16 = 16384;

/// A hash slot; always below [`SLOT_COUNT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot(u16);

impl Slot {
    /// Slot 0: every key's slot in a backend whose keys all live on one node.
    pub const ZERO: Slot = Slot(0);

    /// The slot for `n`, or `None` when `n` is not below [`SLOT_COUNT`].
    pub fn new(n: u16) -> Option<Slot> {
        (n < SLOT_COUNT).then_some(Slot(n))
    }

    /// The slot number.
    pub fn get(self) -> u16 {
        self.0
    }

    /// The slot a key hashes to.
    pub fn for_key(key: &[u8]) -> Slot {
        let hashed = hash_tag(key).unwrap_or(key);
        Slot(crc16::State::<crc16::XMODEM>::calculate(hashed) & (SLOT_COUNT - 1))
    }
}

/// The part of `key` that is hashed when it has a hash tag: the bytes between the first `{` and
/// the first `}` after it, if there is at least one byte between them.
pub fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|&b| b == b'{')?;
    let rest = key.get(open + 1..)?;
    let close = rest.iter().position(|&b| b == b'}')?;
    (close > 0).then(|| &rest[..close])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_matches_the_spec_reference_value() {
        // The cluster spec: CRC16 of "123456789" is 0x31C3.
        assert_eq!(
            crc16::State::<crc16::XMODEM>::calculate(b"123456789"),
            0x31C3
        );
    }

    #[test]
    fn slots_match_redis_cluster_keyslot() {
        // Values from `CLUSTER KEYSLOT` on a real Redis 7.
        for (key, slot) in [
            ("foo", 12182),
            ("bar", 5061),
            ("", 0),
            ("somekey", 11058),
            ("a", 15495),
        ] {
            assert_eq!(Slot::for_key(key.as_bytes()).get(), slot, "key {key:?}");
        }
    }

    #[test]
    fn hash_tags_follow_the_spec_examples() {
        let same = |a: &str, b: &str| Slot::for_key(a.as_bytes()) == Slot::for_key(b.as_bytes());
        // {user1000}.following and {user1000}.followers hash "user1000".
        assert!(same("{user1000}.following", "{user1000}.followers"));
        assert!(same("{user1000}.following", "user1000"));
        // foo{}{bar}: the first {} is empty, so the whole key is hashed.
        assert!(same("foo{}{bar}", "foo{}{bar}"));
        assert_eq!(hash_tag(b"foo{}{bar}"), None);
        // foo{{bar}}zap hashes "{bar".
        assert_eq!(hash_tag(b"foo{{bar}}zap"), Some(&b"{bar"[..]));
        assert!(same("foo{{bar}}zap", "{bar"));
        // foo{bar}{zap} hashes "bar".
        assert_eq!(hash_tag(b"foo{bar}{zap}"), Some(&b"bar"[..]));
        // No closing brace: the whole key.
        assert_eq!(hash_tag(b"foo{bar"), None);
    }

    #[test]
    fn slot_cannot_hold_16384() {
        assert!(Slot::new(16383).is_some());
        assert!(Slot::new(16384).is_none());
    }
}
