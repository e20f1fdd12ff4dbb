//! Leases: how a replica knows it may still serve, and how a controller knows every replica
//! has seen a phase.
//!
//! Each replica reads the migration state every `lease / 3` and writes down, in the roster
//! beside it, the phases it has seen. A replica that has not read the state for a whole lease
//! stops serving the keys a migration could concern (it is *fenced*): it may have missed a
//! phase, and serving on could write a key on the wrong side. A controller waiting for every
//! replica to acknowledge a phase counts a replica whose roster entry has not changed for a
//! lease and a margin as fenced: by then that replica stopped serving by itself, whatever
//! kept it from writing.
//!
//! Both sides measure on their own monotonic clock; only changes are compared across
//! machines, never wall-clock times.
//!
//! What the replica side must hold to, for the controller's count to be right:
//! - it renews its [`Sight`] only once both the read of the state and the write of its entry
//!   succeeded, timed from when the read was sent: a replica whose writes fail is one the
//!   controller cannot see, so it must not serve either;
//! - it writes its entry before it first serves, so that no controller starts a migration
//!   without waiting for it;
//! - its id is new at every start (a name and a random part), so that a restarted replica's
//!   first entry differs from the last one of its former self;
//! - its acknowledgement of a holding phase means that no request routed as before is still
//!   in flight or being retried.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::phase::Phase;

/// What a replica last read of the migration state.
#[derive(Debug, Clone)]
pub struct Sight {
    /// When the last read succeeded, on this replica's clock; `None` before the first.
    read_at: Option<Instant>,
    /// How long a read stays good.
    lease: Duration,
}

impl Sight {
    /// A replica that has not read the state yet.
    pub fn new(lease: Duration) -> Sight {
        Sight {
            read_at: None,
            lease,
        }
    }

    /// Notes a successful read of the state at `now`.
    pub fn read(&mut self, now: Instant) {
        self.read_at = Some(now);
    }

    /// Whether the replica may serve at `now`: it read the state within the lease.
    pub fn may_serve(&self, now: Instant) -> bool {
        self.read_at
            .is_some_and(|at| now.saturating_duration_since(at) < self.lease)
    }
}

/// One replica's entry in the roster, as the controller last saw it change.
#[derive(Debug, Clone)]
struct Entry {
    /// The entry as written (its phases acknowledged, its heartbeat count).
    seen: String,
    /// When the controller saw it change last.
    changed_at: Instant,
}

/// A controller's view of the replicas' roster entries, read again at every look.
#[derive(Debug, Clone, Default)]
pub struct Roster {
    entries: BTreeMap<String, Entry>,
}

/// Whether every replica has acknowledged a phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acknowledged {
    /// Every replica still serving has acknowledged it.
    Every,
    /// These replicas have not, and may still serve.
    Waiting(Vec<String>),
}

impl Roster {
    /// Takes a look at the roster read at `now`: each replica's id and its entry as written.
    /// An entry that differs from the last look counts as a sign of life.
    pub fn look(&mut self, now: Instant, entries: impl IntoIterator<Item = (String, String)>) {
        for (replica, seen) in entries {
            match self.entries.get_mut(&replica) {
                Some(entry) if entry.seen == seen => {}
                Some(entry) => {
                    entry.seen = seen;
                    entry.changed_at = now;
                }
                None => {
                    self.entries.insert(
                        replica,
                        Entry {
                            seen,
                            changed_at: now,
                        },
                    );
                }
            }
        }
    }

    /// The replicas whose entry has not changed for `silence` at `now`, forgotten here too: a
    /// replica that stopped without leaving the roster (killed), long fenced. One that comes
    /// back writes its entry again.
    pub fn silent(&mut self, now: Instant, silence: Duration) -> Vec<String> {
        let silent: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, entry)| now.saturating_duration_since(entry.changed_at) >= silence)
            .map(|(replica, _)| replica.clone())
            .collect();
        for replica in &silent {
            self.entries.remove(replica);
        }
        silent
    }

    /// Whether every replica that may still serve at `now` has acknowledged `phase` of
    /// migration `epoch`, according to `acknowledges(entry, epoch, phase)`. A replica whose
    /// entry has not changed for `lease + margin` is fenced, and not waited for.
    pub fn acknowledged(
        &self,
        now: Instant,
        lease: Duration,
        margin: Duration,
        acknowledges: impl Fn(&str) -> bool,
    ) -> Acknowledged {
        let waiting: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, entry)| now.saturating_duration_since(entry.changed_at) < lease + margin)
            .filter(|(_, entry)| !acknowledges(&entry.seen))
            .map(|(replica, _)| replica.clone())
            .collect();
        if waiting.is_empty() {
            Acknowledged::Every
        } else {
            Acknowledged::Waiting(waiting)
        }
    }
}

/// A roster entry: a heartbeat count, then each migration's acknowledged phase, as
/// `beat;id=phase,id=phase`. Written by [`ack_entry`], read by [`acknowledges`].
pub fn ack_entry(beat: u64, acks: &BTreeMap<String, Phase>) -> String {
    let acks: Vec<String> = acks
        .iter()
        .map(|(id, phase)| format!("{id}={}", phase.name()))
        .collect();
    format!("{beat};{}", acks.join(","))
}

/// Whether `entry` acknowledges migration `id` in `phase`.
pub fn acknowledges(entry: &str, id: &str, phase: Phase) -> bool {
    let Some((_, acks)) = entry.split_once(';') else {
        return false;
    };
    let wanted = phase.name();
    acks.split(',')
        .filter_map(|ack| ack.split_once('='))
        .any(|(acked, seen)| acked == id && seen == wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(10);
    const MARGIN: Duration = Duration::from_secs(2);

    #[test]
    fn a_replica_serves_only_within_a_lease_of_its_last_read() {
        let start = Instant::now();
        let mut sight = Sight::new(LEASE);
        assert!(!sight.may_serve(start), "nothing read yet");
        sight.read(start);
        assert!(sight.may_serve(start + Duration::from_secs(9)));
        assert!(
            !sight.may_serve(start + LEASE),
            "fenced once the lease ran out"
        );
        sight.read(start + LEASE);
        assert!(sight.may_serve(start + LEASE + Duration::from_secs(1)));
    }

    #[test]
    fn a_controller_waits_for_live_replicas_and_counts_silent_ones_fenced() {
        let start = Instant::now();
        let mut acks = BTreeMap::new();
        let mut roster = Roster::default();
        roster.look(
            start,
            [
                ("a".to_string(), ack_entry(1, &acks)),
                ("b".to_string(), ack_entry(1, &acks)),
            ],
        );
        let holding = |entry: &str| acknowledges(entry, "m1", Phase::Holding);
        assert_eq!(
            roster.acknowledged(start, LEASE, MARGIN, holding),
            Acknowledged::Waiting(vec!["a".into(), "b".into()])
        );
        // `a` acknowledges; `b` keeps beating without it, so it is waited for.
        acks.insert("m1".to_string(), Phase::Holding);
        let later = start + Duration::from_secs(5);
        roster.look(
            later,
            [
                ("a".to_string(), ack_entry(2, &acks)),
                ("b".to_string(), ack_entry(2, &BTreeMap::new())),
            ],
        );
        assert_eq!(
            roster.acknowledged(later, LEASE, MARGIN, holding),
            Acknowledged::Waiting(vec!["b".into()])
        );
        // `b` goes silent: once its entry has not changed for the lease and the margin, it has
        // fenced itself and is not waited for.
        let silent = later + LEASE + MARGIN;
        roster.look(silent, [("a".to_string(), ack_entry(3, &acks))]);
        assert_eq!(
            roster.acknowledged(silent, LEASE, MARGIN, holding),
            Acknowledged::Every
        );
    }

    #[test]
    fn entries_silent_for_long_are_given_up() {
        let start = Instant::now();
        let mut roster = Roster::default();
        roster.look(
            start,
            [
                ("a".to_string(), "1;".to_string()),
                ("b".to_string(), "1;".to_string()),
            ],
        );
        let later = start + Duration::from_secs(60);
        roster.look(
            later,
            [
                ("a".to_string(), "2;".to_string()),
                ("b".to_string(), "1;".to_string()),
            ],
        );
        assert_eq!(
            roster.silent(later, Duration::from_secs(30)),
            vec!["b".to_string()]
        );
        assert!(
            roster.silent(later, Duration::from_secs(30)).is_empty(),
            "given up once"
        );
    }

    #[test]
    fn an_entry_names_each_migration_with_its_phase() {
        let mut acks = BTreeMap::new();
        acks.insert("m1".to_string(), Phase::Moving);
        acks.insert("m2".to_string(), Phase::HoldingBack);
        let entry = ack_entry(7, &acks);
        assert_eq!(entry, "7;m1=moving,m2=holding_back");
        assert!(acknowledges(&entry, "m1", Phase::Moving));
        assert!(acknowledges(&entry, "m2", Phase::HoldingBack));
        assert!(!acknowledges(&entry, "m1", Phase::Holding));
        assert!(!acknowledges(&entry, "m3", Phase::Moving));
        assert!(!acknowledges("garbage", "m1", Phase::Moving));
    }
}
