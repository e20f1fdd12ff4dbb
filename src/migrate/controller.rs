//! Driving a migration: starting it, moving it through its phases, and the operator's actions
//! on it. Any replica can start one; the one that does drives it (its roster id is the
//! record's `controller`), and every write it makes is a compare-and-set, so an operator's
//! `pause` or `abort` (through any replica) is seen at its next step.
//!
//! The steps, each written to the record as it is taken:
//! - `preparing` → `holding` → `moving`, each once every replica has acknowledged the phase
//!   (see [`super::lease`]);
//! - `moving`: the copier walks the source and moves each key of the prefix, within the
//!   limits, while requests move the keys they touch; a finished walk → `verifying`;
//! - `verifying`: a fresh walk of the source; no key left → `done`, else back to `moving`;
//! - an abort: `holding_back` → `moving_back` once acknowledged, which walks the target and
//!   moves every key back → `aborted`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use thiserror::Error;
use tracing::info;

use super::copier::Walk;
use super::{Migration, OnBackend, Phase, Store, StoreError};
use crate::cluster::Backend;
use crate::keyspace::{Destination, RouteTable};
use crate::proxy::Proxy;

/// Longest a count of the source's keys may take at start; past it the total stays unknown.
/// Well within the admin endpoint's default answer time (`server.admin_timeout_ms`, 5 s).
const COUNT_FOR: Duration = Duration::from_secs(2);

/// What an operator asks to start.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The keys that move: those starting with it (or opening with it as their hash tag).
    pub prefix: String,
    /// The backend they go to.
    pub to: String,
    /// Most keys moved per second; 0: no limit.
    pub max_keys_per_s: u64,
    /// Most bytes moved per second; 0: no limit.
    pub max_bytes_per_s: u64,
}

/// An operator's action on a migration under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// Stop the copier (requests still move the keys they touch).
    Pause,
    /// Start the copier again.
    Resume,
    /// Move the keys already moved back, and route the prefix as before.
    Abort,
    /// Check the source for keys left now, rather than after the copier's walk.
    Verify,
    /// Delete the record of a migration that is over: once every replica's configuration
    /// routes the prefix where it moved, its mark is no longer needed.
    Forget,
}

/// Why a migration could not be started or acted on.
#[derive(Debug, Error)]
pub enum ControlError {
    /// `[migration]` is off on this replica.
    #[error("migrations are off: set migration.enabled = true on every replica")]
    Off,
    /// The plan does not fit the routes.
    #[error("{0}")]
    Refused(String),
    /// Another migration moves keys of the prefix.
    #[error("migration {0} already moves keys of this prefix")]
    InTheWay(String),
    /// No migration has the id.
    #[error("no migration {0}")]
    Unknown(String),
    /// The action does not apply in the migration's phase.
    #[error("migration {id} is {phase:?}: it cannot be asked to {act:?}")]
    NotNow {
        /// The migration.
        id: String,
        /// Its phase.
        phase: Phase,
        /// What was asked.
        act: Act,
    },
    /// The state's backend did not answer as it should.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The store on the state's backend, as the configuration in force names it.
pub fn store_of(proxy: &Proxy) -> Option<Store<OnBackend>> {
    let snapshot = proxy.snapshot();
    let name = snapshot.config.migration_state_backend()?;
    let id = snapshot.backend_id(&name)?;
    snapshot
        .backend(id)
        .map(|backend| Store::new(OnBackend(Arc::clone(backend))))
}

/// Milliseconds since the Unix epoch.
pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Checks `plan` against the routes, counts the keys it moves, and stores the migration in its
/// first phase, driven by `me`. The caller then runs [`super::drive`].
pub async fn start(proxy: &Proxy, me: &str, plan: Plan) -> Result<Migration, ControlError> {
    if !proxy.config().migration.enabled {
        return Err(ControlError::Off);
    }
    let store = store_of(proxy).ok_or(ControlError::Off)?;
    let snapshot = proxy.snapshot();
    let from = source_of(snapshot.routes(), &plan)?;
    let to = snapshot
        .backend_id(&plan.to)
        .ok_or_else(|| ControlError::Refused(format!("no backend is named {:?}", plan.to)))?;
    if from == to {
        return Err(ControlError::Refused(format!(
            "the keys of {:?} are on {:?} already",
            plan.prefix, plan.to
        )));
    }
    let (Some(source), Some(from_name)) = (
        snapshot.backend(from),
        snapshot.backend(from).map(|b| b.name().to_string()),
    ) else {
        return Err(ControlError::Refused("the source backend is gone".into()));
    };
    let stored = stored_prefix(snapshot.routes(), &plan.prefix);
    let keys_total = count(source, &stored).await;
    let migration = Migration {
        id: format!("m{:x}{:04x}", now_ms(), fastrand::u16(..)),
        prefix: plan.prefix,
        from: from_name,
        to: plan.to,
        controller: me.to_string(),
        max_keys_per_s: plan.max_keys_per_s,
        max_bytes_per_s: plan.max_bytes_per_s,
        keys_total,
        started_ms: now_ms(),
        ..Migration::default()
    };
    match store.create(&migration).await? {
        None => {
            info!(migration = %migration.id, prefix = %migration.prefix, from = %migration.from, to = %migration.to, "migration started: preparing");
            Ok(migration)
        }
        Some(other) => Err(ControlError::InTheWay(other)),
    }
}

/// The backend the keys of `plan.prefix` are on now, if the routes let them move as one.
fn source_of(routes: &RouteTable, plan: &Plan) -> Result<crate::keyspace::BackendId, ControlError> {
    let prefix = plan.prefix.as_bytes();
    // Nor one the proxy's own keys start with, or whose hash tag they open with: the
    // migrations' state would move with the keys.
    let own = crate::keyspace::RESERVED;
    let own_tag = own.get(1..own.len() - 1).unwrap_or_default();
    let reaches_own = own.starts_with(prefix) || own_tag.starts_with(prefix);
    if prefix.is_empty() || crate::keyspace::is_reserved(prefix) || reaches_own {
        return Err(ControlError::Refused(format!(
            "{:?}: a prefix is not empty, and neither {{respgate}} nor the start of it",
            plan.prefix
        )));
    }
    if routes.moving(prefix).is_some() {
        return Err(ControlError::Refused(format!(
            "the keys of {:?} are moving already",
            plan.prefix
        )));
    }
    let refuse = |why: String| Err(ControlError::Refused(why));
    for rule in routes.rules() {
        let longer = rule.prefix.len() > prefix.len() && rule.prefix.starts_with(prefix);
        if longer {
            return refuse(format!(
                "the route of {:?} sends some keys of {:?} elsewhere: move it on its own",
                String::from_utf8_lossy(&rule.prefix),
                plan.prefix
            ));
        }
        let covering = prefix.starts_with(&rule.prefix);
        if covering && matches!(rule.to, Destination::BySlot(_)) {
            return refuse(format!(
                "the keys of {:?} are split by slot: moving a slot range is not supported yet",
                plan.prefix
            ));
        }
        if covering && rule.strip && rule.prefix.len() != prefix.len() {
            return refuse(format!(
                "the route of {:?} strips its prefix: move {0:?} as a whole",
                String::from_utf8_lossy(&rule.prefix)
            ));
        }
    }
    Ok(routes.route(prefix).backend)
}

/// The prefix as the source stores the keys: empty when the prefix's route strips it.
pub(super) fn stored_prefix(routes: &RouteTable, prefix: &str) -> Bytes {
    let route = routes.route(prefix.as_bytes());
    Bytes::copy_from_slice(prefix.as_bytes().get(route.strip..).unwrap_or_default())
}

/// The keys under `stored` on `backend`, if counted within [`COUNT_FOR`].
async fn count(backend: &Backend, stored: &Bytes) -> Option<u64> {
    let deadline = Instant::now() + COUNT_FOR;
    let mut walk = Walk::new(backend, stored);
    let mut total = 0u64;
    while Instant::now() < deadline {
        match walk.next(backend).await {
            Ok(Some(keys)) => total += keys.len() as u64,
            Ok(None) => return Some(total),
            Err(_) => return None,
        }
    }
    None
}

/// Applies `act` to migration `id`: a compare-and-set of its phase, tried again while the
/// controller writes the record in between.
pub async fn act(proxy: &Proxy, id: &str, act: Act) -> Result<Migration, ControlError> {
    let store = store_of(proxy).ok_or(ControlError::Off)?;
    loop {
        let current = store
            .migration(id)
            .await?
            .ok_or_else(|| ControlError::Unknown(id.to_string()))?;
        if current.forgotten_ms > 0 {
            return Err(ControlError::Unknown(id.to_string()));
        }
        if act == Act::Forget && current.phase == Phase::Done {
            configured_where_moved(proxy, &current)?;
        }
        let phase = match (act, current.phase) {
            (Act::Forget, phase) if phase.is_final() => phase,
            (Act::Pause, Phase::Moving) => Phase::Paused,
            (Act::Resume, Phase::Paused) => Phase::Moving,
            (Act::Verify, Phase::Moving | Phase::Paused) => Phase::Verifying,
            (Act::Abort, Phase::Preparing | Phase::Holding) => Phase::Aborted,
            (Act::Abort, Phase::Moving | Phase::Paused | Phase::Verifying) => Phase::HoldingBack,
            (act, phase) => {
                return Err(ControlError::NotNow {
                    id: id.to_string(),
                    phase,
                    act,
                });
            }
        };
        let mut next = current.clone();
        next.phase = phase;
        if act == Act::Forget {
            next.forgotten_ms = now_ms();
        } else if phase.is_final() {
            next.ended_ms = now_ms();
        }
        if store.update(&current, &next).await? {
            next.version = current.version + 1;
            return Ok(next);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Refuses to forget `migration` unless this replica's configuration routes its prefix where it
/// moved: forgotten, its mark no longer holds, and the configuration's route decides.
fn configured_where_moved(proxy: &Proxy, migration: &Migration) -> Result<(), ControlError> {
    let routed = configured_backend(&proxy.snapshot().config, &migration.prefix);
    if routed == migration.to {
        return Ok(());
    }
    Err(ControlError::Refused(format!(
        "this replica's configuration routes {:?} to {routed}: route it to {} on every replica \
         (and reload) before forgetting migration {}, or its keys are left behind",
        migration.prefix, migration.to, migration.id
    )))
}

/// The name of the backend `config`'s own routes send the keys of `prefix` to (no
/// migration's mark laid over them).
pub fn configured_backend(config: &crate::config::Config, prefix: &str) -> String {
    let names: Vec<String> = config
        .backend_list()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let routes = RouteTable::from_config(config, &names);
    names
        .get(routes.route(prefix.as_bytes()).backend.index())
        .cloned()
        .unwrap_or_default()
}
