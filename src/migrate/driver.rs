//! The controller's loop: one step at a time, each read from the record and written back to
//! it with compare-and-set (see [`super::controller`] for the phases it takes).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tracing::{info, warn};

use super::controller::{ControlError, now_ms, store_of, stored_prefix};
use super::copier::Walk;
use super::lease::{Acknowledged, Roster, acknowledges};
use super::{Migration, MoveError, Moved, OnBackend, Phase, Store, move_key, move_keys};
use crate::cluster::{Backend, Sending, Target};
use crate::command::Access;
use crate::protocol::request::encode_command;
use crate::protocol::{Protocol, Value};
use crate::proxy::Proxy;
use crate::slot::Slot;

/// Longest one step of the copier runs before the record is written.
const STEP_FOR: Duration = Duration::from_millis(500);
/// How often the copier reads the record again within a step, to stop when it changed.
const CHECK_EVERY: Duration = Duration::from_millis(100);
/// How often the record is written while nothing else changes, so that replicas see the
/// controller alive.
const BEAT_EVERY: Duration = Duration::from_secs(1);

/// Drives migration `id` as replica `me` until it is over, or another replica drives it.
pub async fn drive(proxy: Arc<Proxy>, me: String, id: String) {
    let lease = Duration::from_millis(proxy.config().migration.lease_ms);
    let mut driver = Driver {
        proxy,
        me,
        id,
        lease,
        roster: Roster::default(),
        walk: None,
        backlog: Vec::new(),
        verify: None,
        window: Window::new(),
        pending: (0, 0),
        written_at: Instant::now(),
        phase: None,
    };
    loop {
        match driver.step().await {
            Ok(true) => {}
            Ok(false) => return,
            Err(error) => {
                warn!(migration = %driver.id, %error, "a migration step failed; trying again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

struct Driver {
    proxy: Arc<Proxy>,
    me: String,
    id: String,
    lease: Duration,
    roster: Roster,
    /// The copier's walk, while it moves keys; begun again after an error.
    walk: Option<Walk>,
    /// The verifying walk of the source, and the keys of the migration it found so far.
    verify: Option<(Walk, u64)>,
    /// Keys the walk found and the copier has not moved yet (a step ends at its time even
    /// amid a walk's keys, so that the record shows progress).
    backlog: Vec<Bytes>,
    window: Window,
    /// Keys and bytes moved and not yet written to the record.
    pending: (u64, u64),
    written_at: Instant,
    /// The phase last seen, and since when: for the log.
    phase: Option<(Phase, Instant)>,
}

impl Driver {
    /// One step; `false` once the migration is over or driven elsewhere.
    async fn step(&mut self) -> Result<bool, ControlError> {
        let store = store_of(&self.proxy).ok_or(ControlError::Off)?;
        let Some(current) = store.migration(&self.id).await? else {
            return Ok(false);
        };
        if self.phase.is_some_and(|(seen, _)| seen != current.phase) {
            // A walk and its keys belong to the phase they were found in.
            self.walk = None;
            self.backlog.clear();
            self.verify = None;
        }
        self.note_phase(current.phase);
        if current.controller != self.me || current.phase.is_final() {
            return Ok(false);
        }
        let mut next = current.clone();
        match current.phase {
            Phase::Preparing | Phase::Holding | Phase::HoldingBack => {
                if self.acknowledged(&store, &current).await? {
                    next.phase = match current.phase {
                        Phase::Preparing => Phase::Holding,
                        Phase::Holding => Phase::Moving,
                        _ => Phase::MovingBack,
                    };
                    self.walk = None;
                    self.backlog.clear();
                } else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Phase::Moving | Phase::MovingBack => self.copy(&store, &current, &mut next).await,
            Phase::Verifying => match self.left(&current).await {
                Some(0) => next.phase = Phase::Done,
                Some(left) => {
                    info!(migration = %self.id, left, "keys left on the source: moving again");
                    next.phase = Phase::Moving;
                }
                None => {}
            },
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
        next.keys_moved += self.pending.0;
        next.bytes_moved += self.pending.1;
        if next.phase.is_final() {
            next.ended_ms = now_ms();
        }
        if next != current || self.written_at.elapsed() >= BEAT_EVERY {
            // When somebody else wrote the record meanwhile, the next step reads it again.
            if store.update(&current, &next).await? {
                self.pending = (0, 0);
                self.written_at = Instant::now();
                self.note_phase(next.phase);
            }
        }
        Ok(true)
    }

    /// Logs a new phase with how long the last one lasted.
    fn note_phase(&mut self, phase: Phase) {
        match self.phase {
            Some((seen, _)) if seen == phase => {}
            Some((seen, since)) => {
                info!(migration = %self.id, phase = ?phase, after = ?seen, lasted_ms = since.elapsed().as_millis() as u64, "migration phase");
                self.phase = Some((phase, Instant::now()));
            }
            None => self.phase = Some((phase, Instant::now())),
        }
    }

    /// Whether every replica still serving has acknowledged `migration`'s phase.
    async fn acknowledged(
        &mut self,
        store: &Store<OnBackend>,
        migration: &Migration,
    ) -> Result<bool, ControlError> {
        self.roster.look(Instant::now(), store.roster().await?);
        // A replica that stopped beating fences itself within a lease, then finishes what
        // it had in flight: within its request budget.
        let margin = self
            .sides(migration)
            .map_or(Duration::from_secs(15), |(source, ..)| {
                source.conn_settings().request_timeout + source.config().retry_timeout()
            })
            + Duration::from_secs(1);
        let acked = self
            .roster
            .acknowledged(Instant::now(), self.lease, margin, |entry| {
                acknowledges(entry, &migration.id, migration.phase)
            });
        Ok(acked == Acknowledged::Every)
    }

    /// The side keys leave and the side they go to in `migration`'s phase, and the prefix as
    /// both store the keys.
    fn sides(&self, migration: &Migration) -> Option<(Arc<Backend>, Arc<Backend>, Bytes)> {
        let snapshot = self.proxy.snapshot();
        let from = snapshot.backend(snapshot.backend_id(&migration.from)?)?;
        let to = snapshot.backend(snapshot.backend_id(&migration.to)?)?;
        let stored = stored_prefix(snapshot.routes(), &migration.prefix);
        match migration.phase {
            Phase::MovingBack | Phase::HoldingBack => {
                Some((Arc::clone(to), Arc::clone(from), stored))
            }
            _ => Some((Arc::clone(from), Arc::clone(to), stored)),
        }
    }

    /// Which of `keys`, as stored, are `migration`'s: routed by its mark.
    fn ours(&self, migration: &Migration, stored: &Bytes, keys: Vec<Bytes>) -> Vec<Bytes> {
        let snapshot = self.proxy.snapshot();
        let routes = snapshot.routes();
        let stripped = stored.len() < migration.prefix.len();
        keys.into_iter()
            .filter(|key| !crate::keyspace::is_reserved(key))
            .filter(|key| {
                let routed = if stripped {
                    routes.moving(&[migration.prefix.as_bytes(), key].concat())
                } else {
                    routes.moving(key)
                };
                routed.is_some_and(|moving| moving.id == migration.id)
            })
            .collect()
    }

    /// Moves keys for up to [`STEP_FOR`]; a finished walk ends the phase.
    async fn copy(&mut self, store: &Store<OnBackend>, current: &Migration, next: &mut Migration) {
        let Some((source, target, stored)) = self.sides(current) else {
            warn!(migration = %self.id, "a backend of the migration is not known here");
            tokio::time::sleep(Duration::from_millis(500)).await;
            return;
        };
        let timeout =
            u64::try_from(source.conn_settings().request_timeout.as_millis()).unwrap_or(5000);
        // A tenth of the limit at a time, so that whole seconds fill up to it.
        let per_step = match current.max_keys_per_s {
            0 => usize::MAX,
            limit => usize::try_from(limit / 10).unwrap_or(1).max(1),
        };
        let deadline = Instant::now() + STEP_FOR;
        let mut checked = Instant::now();
        while Instant::now() < deadline {
            if self.backlog.is_empty() {
                let walk = self
                    .walk
                    .get_or_insert_with(|| Walk::for_moving(&source, &stored));
                match walk.next(&source).await {
                    Ok(Some(keys)) => self.backlog = self.ours(current, &stored, keys),
                    Ok(None) => {
                        self.walk = None;
                        next.phase = if current.phase == Phase::Moving {
                            Phase::Verifying
                        } else {
                            Phase::Aborted
                        };
                        return;
                    }
                    Err(error) => {
                        warn!(migration = %self.id, %error, "the copier's walk failed; beginning it again");
                        self.walk = None;
                        return;
                    }
                }
                continue;
            }
            if checked.elapsed() >= CHECK_EVERY {
                // Someone else wrote the record (an operator's action, another controller):
                // no key moves under a record this step did not read.
                checked = Instant::now();
                match store.migration(&self.id).await {
                    Ok(Some(m)) if m.version == current.version && m.controller == self.me => {}
                    _ => return,
                }
            }
            let chunk: Vec<Bytes> = self
                .backlog
                .drain(..per_step.min(self.backlog.len()))
                .collect();
            self.window.wait(current, chunk.len() as u64).await;
            // One MIGRATE at a time per source master (it blocks the master until the target
            // answers, so more would only queue clients' requests behind them), every master
            // at once.
            let by_master = per_master(&source, batches(&source, &target, chunk));
            let moves = by_master.into_iter().map(|batches| {
                let (source, target) = (&source, &target);
                async move {
                    let mut outcomes = Vec::with_capacity(batches.len());
                    for batch in batches {
                        outcomes.push(move_batch(source, target, batch, timeout).await);
                    }
                    outcomes
                }
            });
            let outcomes = futures_util::future::join_all(moves).await;
            for outcome in outcomes.into_iter().flatten() {
                self.pending.0 += outcome.keys;
                self.pending.1 += outcome.bytes;
                self.window.add(outcome.keys, outcome.bytes);
                if let Some(why) = outcome.both_sides {
                    warn!(migration = %self.id, "{why}");
                    next.error = Some(why);
                }
                if outcome.failed {
                    self.walk = None;
                    self.backlog.clear();
                    return;
                }
            }
        }
    }

    /// How many of `migration`'s keys the source still holds, once a fresh walk of it (a step
    /// at a time, so that the record is written meanwhile) is over; `None` until then.
    async fn left(&mut self, migration: &Migration) -> Option<u64> {
        let (source, _, stored) = self.sides(migration)?;
        let deadline = Instant::now() + STEP_FOR;
        let (mut walk, mut left) = self
            .verify
            .take()
            .unwrap_or_else(|| (Walk::new(&source, &stored), 0));
        while Instant::now() < deadline {
            match walk.next(&source).await {
                Ok(Some(keys)) => left += self.ours(migration, &stored, keys).len() as u64,
                Ok(None) => return Some(left),
                // Begun again at the next step.
                Err(_) => return None,
            }
        }
        self.verify = Some((walk, left));
        None
    }
}

/// The copier's rate: keys and bytes moved in the current second.
struct Window {
    start: Instant,
    keys: u64,
    bytes: u64,
}

impl Window {
    fn new() -> Window {
        Window {
            start: Instant::now(),
            keys: 0,
            bytes: 0,
        }
    }

    /// Waits, when `keys` more would pass this second's limit of keys or bytes already
    /// reached, for the next second.
    async fn wait(&mut self, migration: &Migration, keys: u64) {
        if self.start.elapsed() >= Duration::from_secs(1) {
            *self = Window::new();
        }
        let over_keys = migration.max_keys_per_s > 0
            && self.keys > 0
            && self.keys + keys > migration.max_keys_per_s;
        let full =
            over_keys || (migration.max_bytes_per_s > 0 && self.bytes >= migration.max_bytes_per_s);
        if full {
            tokio::time::sleep_until((self.start + Duration::from_secs(1)).into()).await;
            *self = Window::new();
        }
    }

    fn add(&mut self, keys: u64, bytes: u64) {
        self.keys += keys;
        self.bytes += bytes;
    }
}

/// `MEMORY USAGE key` on the source: the bytes a move counts; `None` for a key not there.
async fn memory_usage(backend: &Backend, key: &Bytes) -> Option<u64> {
    let mut payload = BytesMut::new();
    encode_command(&mut payload, &[&b"MEMORY"[..], b"USAGE", key]);
    let reply = backend
        .execute(Sending {
            payload: payload.freeze(),
            target: Target::Slot(Slot::for_key(key)),
            access: Access::Read,
            protocol: Protocol::Resp2,
            db: 0,
            affinity: 0,
        })
        .await;
    match Value::decode(&reply, 1) {
        Some(Value::Integer(n)) => Some(u64::try_from(n).unwrap_or(0)),
        _ => None,
    }
}

/// Where a batch's keys are: their slot on a cluster source (else 0), and the target's
/// master for them.
type Place = (u16, Option<crate::backend::NodeAddr>);

/// Most keys in one `MIGRATE`.
const BATCH_KEYS: usize = 100;

/// `keys` (found on one master of `source`) in batches one `MIGRATE` can move: keys of one slot
/// on a cluster source, going to one master of `target`.
fn batches(source: &Backend, target: &Backend, keys: Vec<Bytes>) -> Vec<Vec<Bytes>> {
    let slotted = source.kind().has_slots();
    let mut groups: Vec<(Place, Vec<Bytes>)> = Vec::new();
    for key in keys {
        let slot = Slot::for_key(&key);
        let place = (
            if slotted { slot.get() } else { 0 },
            target.node_for(&Target::Slot(slot)),
        );
        match groups
            .iter_mut()
            .find(|(p, batch)| *p == place && batch.len() < BATCH_KEYS)
        {
            Some((_, batch)) => batch.push(key),
            None => groups.push((place, vec![key])),
        }
    }
    groups.into_iter().map(|(_, batch)| batch).collect()
}

/// `batches` in one list per master of `source` they are on (by their first key's slot).
fn per_master(source: &Backend, batches: Vec<Vec<Bytes>>) -> Vec<Vec<Vec<Bytes>>> {
    let map = source.slot_map();
    let mut lists: Vec<(Option<usize>, Vec<Vec<Bytes>>)> = Vec::new();
    for batch in batches {
        let master = batch
            .first()
            .and_then(|key| map.master_index(Slot::for_key(key)));
        match lists.iter_mut().find(|(m, _)| *m == master) {
            Some((_, list)) => list.push(batch),
            None => lists.push((master, vec![batch])),
        }
    }
    lists.into_iter().map(|(_, list)| list).collect()
}

/// What moving one batch did.
struct Outcome {
    keys: u64,
    bytes: u64,
    /// A key the target had already, left on the source.
    both_sides: Option<String>,
    /// The source failed the move: the walk begins again.
    failed: bool,
}

/// Moves `batch` with one `MIGRATE`, counting the keys that were there (`MEMORY USAGE` says
/// which, and their size); on the target's refusal, key by key, to find the one it has.
async fn move_batch(
    source: &Backend,
    target: &Backend,
    batch: Vec<Bytes>,
    timeout: u64,
) -> Outcome {
    let sizes =
        futures_util::future::join_all(batch.iter().map(|key| memory_usage(source, key))).await;
    let present = sizes.iter().filter(|size| size.is_some()).count() as u64;
    let bytes = sizes.iter().flatten().sum();
    let mut outcome = Outcome {
        keys: 0,
        bytes: 0,
        both_sides: None,
        failed: false,
    };
    match move_keys(source, target, &batch, timeout).await {
        Ok(Moved::Moved) => {
            outcome.keys = present;
            outcome.bytes = bytes;
        }
        Ok(Moved::Absent) => {}
        Err(MoveError::TargetHasKey) => {
            for (key, size) in batch.iter().zip(&sizes) {
                match move_key(source, target, key, timeout).await {
                    Ok(Moved::Moved) => {
                        outcome.keys += 1;
                        outcome.bytes += size.unwrap_or(0);
                    }
                    Ok(Moved::Absent) => {}
                    Err(MoveError::TargetHasKey) => {
                        outcome.both_sides = Some(format!(
                            "{} is on both backends; it stays on the source",
                            String::from_utf8_lossy(key)
                        ));
                    }
                    Err(_) => outcome.failed = true,
                }
            }
        }
        Err(error) => {
            warn!(%error, "a batch of keys was not moved; the walk begins again");
            outcome.failed = true;
        }
    }
    outcome
}
