//! `MOVED` and `ASK` error replies.

use crate::backend::NodeAddr;
use crate::slot::Slot;

/// A redirect a node answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    /// The slot now lives at `addr`: resend there and remember it.
    Moved {
        /// The slot.
        slot: Slot,
        /// Its new owner.
        addr: NodeAddr,
    },
    /// The slot is migrating: resend this one command to `addr` after `ASKING`.
    Ask {
        /// The slot.
        slot: Slot,
        /// The importing node.
        addr: NodeAddr,
    },
}

impl Redirect {
    /// Parses an error text such as `MOVED 3999 127.0.0.1:6381`.
    pub fn parse(error: &[u8]) -> Option<Redirect> {
        let text = std::str::from_utf8(error).ok()?;
        let mut parts = text.split(' ');
        let kind = parts.next()?;
        if kind != "MOVED" && kind != "ASK" {
            return None;
        }
        let slot = Slot::new(parts.next()?.parse().ok()?)?;
        let addr = NodeAddr::new(parts.next()?);
        Some(if kind == "MOVED" {
            Redirect::Moved { slot, addr }
        } else {
            Redirect::Ask { slot, addr }
        })
    }

    /// The node to resend to.
    pub fn addr(&self) -> &NodeAddr {
        match self {
            Redirect::Moved { addr, .. } | Redirect::Ask { addr, .. } => addr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_moved_and_ask() {
        assert_eq!(
            Redirect::parse(b"MOVED 3999 127.0.0.1:6381"),
            Some(Redirect::Moved {
                slot: Slot::new(3999).unwrap(),
                addr: NodeAddr::new("127.0.0.1:6381")
            })
        );
        assert!(matches!(
            Redirect::parse(b"ASK 1 h:1"),
            Some(Redirect::Ask { .. })
        ));
        assert_eq!(Redirect::parse(b"ERR MOVED"), None);
        assert_eq!(Redirect::parse(b"MOVED 16384 h:1"), None);
        assert_eq!(Redirect::parse(b"MOVED x"), None);
    }
}
