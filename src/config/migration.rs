//! Moving a prefix between backends online (`[migration]`): see [`crate::migrate`].

use serde::{Deserialize, Serialize};

/// Where the replicas keep a migration's shared state, and how long a read of it stays good.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MigrationConfig {
    /// Whether this replica takes part in migrations: reads their state, routes the keys that
    /// move by it, and stops serving keys when it cannot read it. Off, `respgate migrate`
    /// is refused, and a migration other replicas run is not followed: every replica behind
    /// one Service must agree.
    pub enabled: bool,
    /// The backend holding the state (two hashes under the `{respgate}` hash tag); empty: the
    /// default backend.
    pub state_backend: String,
    /// How long a read of the state stays good, in milliseconds. The state is read every third
    /// of it; a replica that has read nothing for a whole lease refuses the keys of every
    /// migration it knows, and one that never read it does not serve at all.
    pub lease_ms: u64,
}

impl Default for MigrationConfig {
    fn default() -> Self {
        MigrationConfig {
            enabled: false,
            state_backend: String::new(),
            lease_ms: 15_000,
        }
    }
}

impl super::Config {
    /// The name of the backend holding the migration state: `migration.state_backend`, else
    /// the default backend.
    pub fn migration_state_backend(&self) -> Option<String> {
        if self.migration.state_backend.is_empty() {
            self.default_backend_name()
        } else {
            Some(self.migration.state_backend.clone())
        }
    }

    /// The problems of `[migration]`: a state backend that is not one, a lease too short to
    /// be read three times in.
    pub(super) fn validate_migration(&self, problems: &mut Vec<super::Problem>) {
        let migration = &self.migration;
        if !migration.enabled {
            return;
        }
        let known = self
            .backend_list()
            .iter()
            .any(|(name, _)| Some(name) == self.migration_state_backend().as_ref());
        if !known {
            problems.push(super::Problem {
                key: "migration.state_backend".into(),
                message: format!(
                    "{:?} is not a backend (empty names the default backend, and there is \
                     none)",
                    migration.state_backend
                ),
            });
        }
        if migration.lease_ms < 300 {
            problems.push(super::Problem {
                key: "migration.lease_ms".into(),
                message: format!("{} is under 300 ms", migration.lease_ms),
            });
        }
    }
}
