//! The keyspace: which backend each key lives on. Sits between the session and the backends:
//! a request's keys are mapped to (backend, slot) by [`RouteTable::route`] before anything
//! else, so a session is tied to no backend.
//!
//! A backend is one of a closed set of kinds (a Redis Cluster today; a Sentinel-managed group and
//! a standalone server next), each reached through the same pools, framing and retry engine.

mod moving;
mod routes;
mod trie;
mod turns;

pub use moving::{Moving, Pass, Way};
pub use routes::{Destination, Marks, Overlay, PrefixRule, Reachable, RouteTable};
pub use turns::{Order, Turn};

use std::fmt;

/// The start of the keys where the proxy keeps state its replicas share (the records of a
/// prefix's migration, see [`crate::migrate`]): one hash tag, so that one script reaches them
/// all. No client reaches them: a command naming one is refused, and `KEYS`, `SCAN` and
/// `RANDOMKEY` do not show them.
pub const RESERVED: &[u8] = b"{respgate}";

/// Whether `key` is one of the proxy's own (see [`RESERVED`]).
pub fn is_reserved(key: &[u8]) -> bool {
    key.starts_with(RESERVED)
}

/// Index of a backend in the proxy's list of backends (configuration order, by name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct BackendId(pub u16);

impl BackendId {
    /// The index as a `usize`, for slices.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Where one key goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The backend holding the key.
    pub backend: BackendId,
    /// Bytes of the key's front to remove before forwarding (a route's `strip_prefix`); 0 for
    /// none.
    pub strip: usize,
}

/// Where a key lives: its backend and its slot there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Place {
    /// The backend.
    pub backend: BackendId,
    /// The slot of the key as forwarded (after any prefix is stripped).
    pub slot: crate::slot::Slot,
}
