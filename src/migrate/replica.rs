//! A replica's side of every migration: it reads the state every third of a lease, lays each
//! migration's mark over its routes, sets each migration's way by its phase, and writes down
//! in the roster which phases it has seen through (see [`super::lease`] for the duties this
//! follows).
//!
//! A phase is acknowledged only once no request decided as before is left: for a migration
//! first seen, once every session has let go of the routes without its mark (requests routed
//! the plain way are all answered); for a phase change, once the gate's way is set, which
//! waits for the requests that passed it under the old way.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{error, info, warn};

use super::controller::store_of;
use super::lease::{Roster, Sight, ack_entry};
use super::{Migration, OnBackend, Phase, Store, StoreError};
use crate::keyspace::{Destination, Moving, Overlay, Way};
use crate::proxy::Proxy;

/// How often the state is read while some migration is under way: phases then change within
/// about this much of the controller's step, so that requests are held briefly.
const BUSY_INTERVAL: Duration = Duration::from_millis(100);
/// How often the state is read while no migration is under way: a new one is seen within
/// about this much.
const IDLE_INTERVAL: Duration = Duration::from_secs(1);
/// How often the watchdog looks at when the state was last read.
const WATCHDOG_EVERY: Duration = Duration::from_millis(100);
/// How often to try the first read again, before the replica serves.
const FIRST_READ_RETRY: Duration = Duration::from_millis(500);

/// What one replica knows of the migrations.
struct Replica {
    /// Its roster id: new at every start.
    id: String,
    proxy: Arc<Proxy>,
    /// Each migration under way by id, with the gate its requests pass.
    moving: BTreeMap<String, Arc<Moving>>,
    /// The gates of migrations that ended at the last read.
    ended: Vec<Arc<Moving>>,
    /// The prefix of each migration under way.
    prefixes: BTreeMap<String, bytes::Bytes>,
    /// Migrations under way whose record is gone.
    vanished: std::collections::BTreeSet<String>,
    /// The marks last laid over the routes, as (id, phase is done) pairs, to see a change.
    laid: Vec<(String, bool)>,
    /// Each migration first seen, with the generation of the routes that first bore its
    /// mark: its phase is acknowledged once no session holds older routes.
    before: Vec<(String, u64)>,
    /// The phase acknowledged for each migration under way.
    acks: BTreeMap<String, Phase>,
    beat: u64,
    sight: Sight,
    /// When the state was last read in full, in milliseconds since `base`: what the watchdog
    /// fences by (see [`watch_sight`]).
    read_at: Arc<AtomicU64>,
    base: Instant,
    /// The other replicas' roster entries as this one saw them change (see [`Replica::prune`]).
    roster: Roster,
    /// Each migration under way by id: its version when last seen to change, and since when.
    /// One whose controller stopped writing is taken over (see [`Replica::take_over`]).
    stale: BTreeMap<String, (u64, Instant)>,
}

/// Takes part in migrations when `[migration]` enables it: reads the state until it can (the
/// replica serves nothing before), then follows it in a task of its own until `stop`.
pub async fn follow(proxy: &Arc<Proxy>, mut stop: watch::Receiver<bool>) {
    let (enabled, lease) = {
        let config = proxy.config();
        (
            config.migration.enabled,
            Duration::from_millis(config.migration.lease_ms),
        )
    };
    if !enabled {
        return;
    }
    let id = proxy.replica_id.get_or_init(replica_id).clone();
    let mut replica = Replica {
        id,
        stale: BTreeMap::new(),
        roster: Roster::default(),
        proxy: Arc::clone(proxy),
        moving: BTreeMap::new(),
        ended: Vec::new(),
        prefixes: BTreeMap::new(),
        vanished: Default::default(),
        laid: Vec::new(),
        before: Vec::new(),
        acks: BTreeMap::new(),
        beat: 0,
        sight: Sight::new(lease),
        read_at: Arc::new(AtomicU64::new(0)),
        base: Instant::now(),
    };
    let mut warned = false;
    while let Err(error) = replica.look().await {
        if !warned {
            warn!(%error, "cannot read the migrations' state; not serving until it can");
            warned = true;
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(FIRST_READ_RETRY) => {}
        }
    }
    info!(replica = %replica.id, "following the migrations' state");
    tokio::spawn(watch_sight(
        Arc::clone(proxy),
        Arc::clone(&replica.read_at),
        replica.base,
        lease,
        stop.clone(),
    ));
    tokio::spawn(async move {
        loop {
            let interval = if replica.moving.is_empty() {
                IDLE_INTERVAL.min(lease / 3)
            } else {
                BUSY_INTERVAL.min(lease / 3)
            };
            tokio::select! {
                _ = stop.changed() => break,
                _ = tokio::time::sleep(interval) => {}
            }
            if let Err(error) = replica.look().await {
                replica.lost_sight(&error).await;
            }
        }
        if let Some(store) = store_of(&replica.proxy) {
            let _ = store.leave(&replica.id).await;
        }
    });
}

impl Replica {
    /// Reads the state, follows it, and writes the roster entry: the lease is renewed only
    /// when all of it succeeded.
    async fn look(&mut self) -> Result<(), StoreError> {
        let store = store_of(&self.proxy)
            .ok_or_else(|| StoreError::Backend("the state's backend is not known".into()))?;
        let sent = Instant::now();
        let migrations = store.migrations().await?;
        publish(&migrations);
        self.lay(&migrations);
        for moving in std::mem::take(&mut self.ended) {
            moving.set(Way::Ended).await;
        }
        for id in &self.vanished {
            if let Some(moving) = self.moving.get(id) {
                moving.set(Way::Fenced).await;
            }
        }
        for migration in &migrations {
            self.set_way(migration).await;
        }
        self.take_over(&store, &migrations).await;
        self.prune(&store).await;
        self.beat += 1;
        store
            .beat(&self.id, &ack_entry(self.beat, &self.acks))
            .await?;
        self.sight.read(sent);
        let at = u64::try_from(sent.saturating_duration_since(self.base).as_millis()).unwrap_or(0);
        self.read_at.store(at.max(1), Ordering::Release);
        if self.proxy.fence(false) {
            info!("the migrations' state is read again; serving keys again");
        }
        Ok(())
    }

    /// Lays the migrations' marks over the routes when they changed: one first seen, one
    /// ended.
    fn lay(&mut self, migrations: &[Migration]) {
        let snapshot = self.proxy.snapshot();
        let mut overlays = Vec::new();
        let mut laid = Vec::new();
        let mut fresh = Vec::new();
        for m in migrations.iter().filter(|m| m.forgotten_ms == 0) {
            let (Some(from), Some(to)) = (snapshot.backend_id(&m.from), snapshot.backend_id(&m.to))
            else {
                continue;
            };
            let to = match m.phase {
                Phase::Aborted => continue,
                Phase::Done => Destination::Backend(to),
                phase => {
                    let moving = self.moving.entry(m.id.clone()).or_insert_with(|| {
                        fresh.push(m.id.clone());
                        Arc::new(Moving::new(m.id.clone(), from, to, phase.way()))
                    });
                    Destination::Moving(Arc::clone(moving))
                }
            };
            let prefix = bytes::Bytes::copy_from_slice(m.prefix.as_bytes());
            self.prefixes.insert(m.id.clone(), prefix.clone());
            laid.push((m.id.clone(), m.phase == Phase::Done));
            overlays.push(Overlay { prefix, to });
        }
        // A migration under way whose record is gone (deleted by hand, a flush of the state's
        // backend, another state backend): where its keys are is not known, so its mark stays,
        // its gate closed, until the replica starts again.
        for (id, moving) in &self.moving {
            let gone = !migrations.iter().any(|m| &m.id == id);
            if let (true, Some(prefix)) = (gone, self.prefixes.get(id)) {
                if self.vanished.insert(id.clone()) {
                    error!(migration = %id, "the record of a migration under way is gone; its keys are refused until this replica restarts");
                }
                laid.push((id.clone(), false));
                overlays.push(Overlay {
                    prefix: prefix.clone(),
                    to: Destination::Moving(Arc::clone(moving)),
                });
            }
        }
        let vanished = &self.vanished;
        let under_way = |id: &String| {
            vanished.contains(id)
                || migrations
                    .iter()
                    .any(|m| &m.id == id && !m.phase.is_final())
        };
        // A migration that ended opens its gate to the routes in force, for the requests of
        // sessions still on routes that name it; set once the routes without its mark are in
        // force (below).
        let mut ended = Vec::new();
        self.moving.retain(|id, moving| {
            if !under_way(id) {
                ended.push(Arc::clone(moving));
            }
            under_way(id)
        });
        self.prefixes.retain(|id, _| under_way(id));
        self.acks.retain(|id, _| under_way(id));
        if laid != self.laid {
            self.proxy.reroute(overlays);
            // Any snapshot put in force from now on bears the marks (a reload's too).
            let marked = self.proxy.generation();
            self.before.extend(fresh.into_iter().map(|id| (id, marked)));
            self.laid = laid;
        }
        self.ended = ended;
        let proxy = &self.proxy;
        self.before
            .retain(|(id, marked)| under_way(id) && proxy.holds_older_than(*marked));
    }

    /// Gives up the roster entries of replicas silent for ten leases (killed, never to leave
    /// it themselves), so that no controller waits a lease for each before it counts them
    /// fenced. A replica still alive but cut off fenced itself long before, and writes its
    /// entry again once it can.
    async fn prune(&mut self, store: &Store<OnBackend>) {
        let Ok(entries) = store.roster().await else {
            return;
        };
        let now = Instant::now();
        self.roster.look(now, entries);
        let lease = Duration::from_millis(self.proxy.config().migration.lease_ms);
        for replica in self.roster.silent(now, lease * 10) {
            if replica != self.id && store.leave(&replica).await.is_ok() {
                info!(%replica, "gave up the roster entry of a replica silent for ten leases");
            }
        }
    }

    /// Takes over a migration under way whose record has not changed for two leases: its
    /// controller is gone (a controller writes it every second). Compare-and-set makes one
    /// replica the new controller, which drives it from its phase.
    async fn take_over(&mut self, store: &Store<OnBackend>, migrations: &[Migration]) {
        let now = Instant::now();
        let lease = self.proxy.config().migration.lease_ms;
        self.stale.retain(|id, _| {
            migrations
                .iter()
                .any(|m| &m.id == id && !m.phase.is_final())
        });
        // Not one this replica drives: its own driver may be slow, never gone.
        let others = migrations
            .iter()
            .filter(|m| !m.phase.is_final() && m.controller != self.id);
        for m in others {
            let seen = self.stale.entry(m.id.clone()).or_insert((m.version, now));
            if seen.0 != m.version {
                *seen = (m.version, now);
                continue;
            }
            if now.saturating_duration_since(seen.1) < Duration::from_millis(2 * lease) {
                continue;
            }
            let mut next = m.clone();
            next.controller = self.id.clone();
            if let Ok(true) = store.update(m, &next).await {
                warn!(migration = %m.id, former = %m.controller, "its controller stopped; this replica drives it now");
                tokio::spawn(super::drive(
                    Arc::clone(&self.proxy),
                    self.id.clone(),
                    m.id.clone(),
                ));
            }
            self.stale.remove(&m.id);
        }
    }

    /// Sets the way of a migration under way by its phase, and acknowledges the phase once
    /// nothing decided as before is left.
    async fn set_way(&mut self, migration: &Migration) {
        let Some(moving) = self.moving.get(&migration.id) else {
            return;
        };
        let way = migration.phase.way();
        if moving.set(way).await {
            info!(migration = %migration.id, phase = ?migration.phase, "following a new phase");
        }
        let routed_before = self.before.iter().any(|(id, _)| id == &migration.id);
        if moving.way() == way && !routed_before {
            self.acks.insert(migration.id.clone(), migration.phase);
        }
    }

    /// The state could not be read or the entry not written: past the lease, the gates of
    /// the migrations this replica knows are closed too (the watchdog has fenced every key).
    async fn lost_sight(&mut self, error: &StoreError) {
        if self.sight.may_serve(Instant::now()) {
            return;
        }
        warn!(%error, "the migrations' state was not read within the lease");
        for moving in self.moving.values() {
            moving.set(Way::Fenced).await;
        }
    }
}

/// Fences every key once the state has not been read for a lease, whatever the reading loop
/// is waiting on (a store call, a gate to close): checked every [`WATCHDOG_EVERY`], until
/// `stop`.
async fn watch_sight(
    proxy: Arc<Proxy>,
    read_at: Arc<AtomicU64>,
    base: Instant,
    lease: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(WATCHDOG_EVERY) => {}
        }
        let at = base + Duration::from_millis(read_at.load(Ordering::Acquire));
        if Instant::now().saturating_duration_since(at) >= lease && proxy.fence(true) {
            warn!(
                "the migrations' state was not read within the lease; refusing every key until it is"
            );
        }
    }
}

/// Each migration's progress and phase, as its record says, in `/metrics`.
fn publish(migrations: &[Migration]) {
    use crate::metrics as m;
    for migration in migrations {
        let id = migration.id.clone();
        metrics::gauge!(m::MIGRATION_KEYS_MOVED, "migration" => id.clone())
            .set(migration.keys_moved as f64);
        metrics::gauge!(m::MIGRATION_BYTES_MOVED, "migration" => id.clone())
            .set(migration.bytes_moved as f64);
        for phase in Phase::ALL {
            metrics::gauge!(m::MIGRATION_PHASE, "migration" => id.clone(), "phase" => phase.name())
                .set(if phase == migration.phase { 1.0 } else { 0.0 });
        }
    }
}

/// A roster id new at every start: the host's name and a random part.
fn replica_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "respgate".into());
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(48)
        .collect();
    format!("{host}-{:016x}", fastrand::u64(..))
}
