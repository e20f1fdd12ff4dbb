//! A migration's phases, which of them a controller may move to from which, and how a replica
//! routes the moving keys in each.
//!
//! Replicas see a new phase at slightly different times, so every pair of neighbouring phases
//! must be safe to serve side by side. Two are not: a replica still routing the keys to the
//! source while another already moves them to the target could write a key back onto the
//! source after its move. The [`Phase::Holding`] phases sit between them: their replicas hold
//! the keys' requests, and the controller leaves a holding phase only once every replica has
//! acknowledged it (or lost its lease, and so stopped serving; see `super::lease`).

use serde::{Deserialize, Serialize};

use crate::keyspace::Way;

/// Where a migration stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Where every migration begins: replicas send the keys' requests through the migration's
    /// gate, still to the source, and read the state often. Nothing is held yet, so that the
    /// holding that follows lasts only as long as the replicas, already watching, take to see
    /// it, not as long as the slowest takes to notice a migration at all.
    #[default]
    Preparing,
    /// Replicas hold the keys' requests, so that none still writes them on the source once
    /// any moves them.
    Holding,
    /// Keys move from source to target: the copier walks the source, and a request for a key
    /// still on the source moves that key first.
    Moving,
    /// As [`Phase::Moving`], the copier stopped (`pause`); requests still move the keys they
    /// touch.
    Paused,
    /// The copier found no key left on the source and compares the two sides.
    Verifying,
    /// Every key is on the target, where the keys are routed from now on.
    Done,
    /// An abort: replicas hold the keys' requests before they move back.
    HoldingBack,
    /// An abort: the keys already moved go back to the source.
    MovingBack,
    /// The abort finished: every key is on the source again, routed as before.
    Aborted,
}

impl Phase {
    /// Every phase.
    pub const ALL: [Phase; 9] = [
        Phase::Preparing,
        Phase::Holding,
        Phase::Moving,
        Phase::Paused,
        Phase::Verifying,
        Phase::Done,
        Phase::HoldingBack,
        Phase::MovingBack,
        Phase::Aborted,
    ];

    /// Its name as stored (`holding_back`).
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// How a replica in this phase routes the migration's keys.
    pub fn way(self) -> Way {
        match self {
            Phase::Preparing => Way::Source,
            Phase::Holding | Phase::HoldingBack => Way::Hold,
            Phase::Moving | Phase::Paused | Phase::Verifying => Way::SourceToTarget,
            Phase::MovingBack => Way::TargetToSource,
            Phase::Done => Way::Target,
            Phase::Aborted => Way::Source,
        }
    }

    /// Whether the migration is over (its routing no longer changes).
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Done | Phase::Aborted)
    }

    /// Whether a controller must see every replica acknowledge this phase before it leaves it
    /// for `next`: leaving a holding phase for one that moves keys, for safety; leaving
    /// `Preparing` for `Holding`, so that every replica sends the keys through the gate and
    /// reads the state often before any holds them.
    pub fn needs_every_replica_before(self, next: Phase) -> bool {
        matches!(
            (self, next),
            (Phase::Preparing, Phase::Holding)
                | (Phase::Holding, Phase::Moving)
                | (Phase::HoldingBack, Phase::MovingBack)
        )
    }

    /// Whether a controller may go from this phase to `next`. Each allowed step leaves the two
    /// phases' routings safe side by side, the holding steps given [`needs_every_replica_before`].
    ///
    /// [`needs_every_replica_before`]: Phase::needs_every_replica_before
    pub fn may_go_to(self, next: Phase) -> bool {
        use Phase::*;
        matches!(
            (self, next),
            (Preparing, Holding)
                | (Holding, Moving)
                | (Moving, Paused)
                | (Paused, Moving)
                | (Moving, Verifying)
                | (Verifying, Moving)
                | (Verifying, Done)
                // An abort before any key moved: nobody wrote on the target.
                | (Preparing | Holding, Aborted)
                | (Moving | Paused | Verifying, HoldingBack)
                | (HoldingBack, MovingBack)
                | (MovingBack, Aborted)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Phase; 9] = Phase::ALL;

    /// Whether replicas routing `a` and `b` at once can leave a key on both sides: one writes
    /// where the other has moved the key away from.
    fn unsafe_together(a: Way, b: Way) -> bool {
        use Way::*;
        matches!(
            (a, b),
            (Source, SourceToTarget | Target)
                | (SourceToTarget | Target, Source)
                | (SourceToTarget, TargetToSource)
                | (TargetToSource, SourceToTarget)
                | (Target, TargetToSource)
                | (TargetToSource, Target)
        )
    }

    #[test]
    fn every_step_is_safe_side_by_side_or_waits_for_every_replica() {
        // Before a migration the keys route to the source: the first phase must sit beside that.
        assert!(!unsafe_together(Way::Source, Phase::Preparing.way()));
        for from in ALL {
            for to in ALL {
                if !from.may_go_to(to) {
                    continue;
                }
                let together = unsafe_together(from.way(), to.way());
                assert!(
                    !together || from.needs_every_replica_before(to),
                    "{from:?} -> {to:?} lets replicas route {:?} and {:?} at once",
                    from.way(),
                    to.way()
                );
            }
        }
    }

    #[test]
    fn final_phases_are_left_for_nothing() {
        for to in ALL {
            assert!(!Phase::Done.may_go_to(to));
            assert!(!Phase::Aborted.may_go_to(to));
        }
        assert!(Phase::Done.is_final() && Phase::Aborted.is_final());
    }

    #[test]
    fn phases_are_written_in_snake_case() {
        assert_eq!(
            serde_json::to_string(&Phase::HoldingBack).unwrap(),
            "\"holding_back\""
        );
    }
}
