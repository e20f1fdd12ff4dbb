//! What a client is subscribed to: channels, patterns and sharded channels, how each
//! (un)subscribe kind changes them, and the counts Redis reports.

use std::collections::BTreeSet;

use bytes::Bytes;

use crate::command::SubscriptionKind;

/// Which of a client's three sets a subscription kind changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Set {
    Channels,
    Patterns,
    Sharded,
}

pub(super) fn set_of(kind: SubscriptionKind) -> Set {
    match kind {
        SubscriptionKind::Subscribe | SubscriptionKind::Unsubscribe => Set::Channels,
        SubscriptionKind::Psubscribe | SubscriptionKind::Punsubscribe => Set::Patterns,
        SubscriptionKind::Ssubscribe | SubscriptionKind::Sunsubscribe => Set::Sharded,
    }
}

pub(super) fn adds(kind: SubscriptionKind) -> bool {
    matches!(
        kind,
        SubscriptionKind::Subscribe | SubscriptionKind::Psubscribe | SubscriptionKind::Ssubscribe
    )
}

pub(super) fn kind_named(name: &[u8]) -> Option<SubscriptionKind> {
    [
        SubscriptionKind::Subscribe,
        SubscriptionKind::Psubscribe,
        SubscriptionKind::Ssubscribe,
        SubscriptionKind::Unsubscribe,
        SubscriptionKind::Punsubscribe,
        SubscriptionKind::Sunsubscribe,
    ]
    .into_iter()
    .find(|k| name.eq_ignore_ascii_case(k.name().as_bytes()))
}

/// Channels, patterns and sharded channels.
#[derive(Debug, Default)]
pub(super) struct Sets {
    pub(super) channels: BTreeSet<Bytes>,
    pub(super) patterns: BTreeSet<Bytes>,
    pub(super) sharded: BTreeSet<Bytes>,
}

impl Sets {
    pub(super) fn get(&self, set: Set) -> &BTreeSet<Bytes> {
        match set {
            Set::Channels => &self.channels,
            Set::Patterns => &self.patterns,
            Set::Sharded => &self.sharded,
        }
    }

    pub(super) fn get_mut(&mut self, set: Set) -> &mut BTreeSet<Bytes> {
        match set {
            Set::Channels => &mut self.channels,
            Set::Patterns => &mut self.patterns,
            Set::Sharded => &mut self.sharded,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.channels.is_empty() && self.patterns.is_empty() && self.sharded.is_empty()
    }

    /// The count Redis reports after a change of `set`: channels and patterns together, or
    /// the sharded channels.
    pub(super) fn count(&self, set: Set) -> usize {
        match set {
            Set::Channels | Set::Patterns => self.channels.len() + self.patterns.len(),
            Set::Sharded => self.sharded.len(),
        }
    }
}
