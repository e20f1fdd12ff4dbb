//! Client-side caching through the proxy (`[tracking]`): see [`crate::tracking`].

use serde::{Deserialize, Serialize};

/// Client-side caching (`CLIENT TRACKING`) as the proxy provides it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TrackingConfig {
    /// Most keys the proxy remembers clients to have read (Redis's `tracking-table-max-keys`);
    /// past it, keys are forgotten at random and their readers told to drop them. 0: no
    /// limit.
    pub max_keys: usize,
    /// The `version` `HELLO` answers, when set; empty: the version of the backend's nodes.
    /// redis-py 8 caches only on a server whose `HELLO` says `redis` 7.4 or later: set
    /// "7.4.0" to let it cache through a proxy in front of older nodes (the caching is the
    /// proxy's own, whatever the nodes' version; their commands stay those of their version).
    pub announce_version: String,
}

impl Default for TrackingConfig {
    fn default() -> Self {
        TrackingConfig {
            max_keys: 1_000_000,
            announce_version: String::new(),
        }
    }
}

impl TrackingConfig {
    /// Whether `announce_version` is empty or numbers separated by dots, as clients compare
    /// it (redis-py reads each part as an integer).
    pub fn version_is_valid(&self) -> bool {
        self.announce_version.is_empty()
            || self
                .announce_version
                .split('.')
                .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
    }
}
