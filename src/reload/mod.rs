//! Live reload: the configuration read again from the sources it came from at start (file,
//! `RESPGATE_` environment, flags), checked whole, and put in force as a new [`Snapshot`]
//! without closing a client or failing a request in flight.
//!
//! What triggers one: `SIGHUP` (the binary forwards it), `POST /reload` on the admin endpoint,
//! and a change of the configuration file's content ([`watch_file`]). One reload runs at a
//! time. A configuration with any problem is refused whole, with one log line listing every
//! problem, and the one in force stays. Settings a running proxy cannot change (the listening
//! sockets, the worker threads) keep their running value and are reported as needing a restart.
//!
//! Sessions move to the new snapshot before their next request (see [`crate::session`]); the
//! backends are carried over or started by [`Starter`].
//!
//! # Layout
//! - this module: [`Reloader`], the outcome and its counters;
//! - `backends`: which backends carry over, which start, which retire;
//! - `watch`: the configuration file watcher.

mod backends;
mod watch;

pub use backends::{BackendChanges, Starter};
pub use watch::watch_file;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{info, warn};

use crate::acl::Users;
use crate::cluster::Backend;
use crate::config::{
    Config, ConfigError, Overrides, Problem, RestartNeeded, RouteMove, route_moves,
};
use crate::proxy::{Proxy, Snapshot};

/// How often a reload looks whether the backends it started know their topology.
const LEARN_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// Applies a `log.level` (`tracing` filter directives) to the process's logs. The binary owns
/// the log subscriber, so it provides this; without one, the level is not changed by a reload.
pub type LogFilter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Where the configuration comes from, read again on each reload.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    /// The file given with `--config`, if any.
    pub file: Option<PathBuf>,
    /// The command line's overrides, which win over the file on every reload as at start.
    pub overrides: Overrides,
}

impl ConfigSource {
    /// Reads and checks the configuration, its users included: every problem at once.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let config = Config::read(self.file.as_deref(), &self.overrides)?;
        let mut problems = config.validate();
        if let Err(users) = Users::compile(&config, &|name| std::env::var(name).ok()) {
            problems.extend(users);
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

/// What a running proxy is given, beside its configuration, to reload it.
#[derive(Default)]
pub struct Options {
    /// Where to read the configuration again; without one, a reload is refused.
    pub source: Option<ConfigSource>,
    /// Applies `log.level`.
    pub log_filter: Option<LogFilter>,
    /// Reload requests from outside the library: the binary sends one per `SIGHUP`.
    pub requests: Option<tokio::sync::mpsc::Receiver<Trigger>>,
}

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `SIGHUP`.
    Signal,
    /// `POST /reload` on the admin endpoint.
    Http,
    /// The configuration file changed.
    FileChange,
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Trigger::Signal => "SIGHUP",
            Trigger::Http => "POST /reload",
            Trigger::FileChange => "file change",
        })
    }
}

/// How a reload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The new configuration is in force.
    Applied {
        /// Its generation.
        generation: u64,
        /// How its backends differ from the previous ones.
        backends: BackendChanges,
        /// Backends the reload started that had not learned their topology within their
        /// `retry_timeout_ms`: requests to them wait for it, or fail, as at start.
        unreachable: Vec<String>,
        /// Settings that keep their running value until a restart.
        restart: Vec<RestartNeeded>,
        /// Keys the new routes look for elsewhere than where they are stored: their data was
        /// not moved.
        moved: Vec<RouteMove>,
    },
    /// The configuration read is the one in force (apart from `restart`).
    Unchanged {
        /// The generation in force.
        generation: u64,
        /// Settings that keep their running value until a restart.
        restart: Vec<RestartNeeded>,
    },
    /// Refused: the configuration in force stays.
    Refused {
        /// The generation in force.
        generation: u64,
        /// Why: every problem found, or why the sources could not be read.
        problems: Vec<String>,
    },
    /// Another reload is running; nothing was done.
    Busy,
}

impl Outcome {
    /// Whether the reload succeeded (possibly changing nothing).
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Applied { .. } | Outcome::Unchanged { .. })
    }

    /// The outcome as lines of text, for `POST /reload`.
    pub fn report(&self) -> String {
        let mut out = String::new();
        let restart = |out: &mut String, restart: &[RestartNeeded]| {
            for r in restart {
                let _ = writeln!(out, "{r}");
            }
        };
        match self {
            Outcome::Applied {
                generation,
                backends,
                unreachable,
                restart: held,
                moved,
            } => {
                let _ = writeln!(out, "reloaded: generation {generation}");
                for route_move in moved {
                    let _ = writeln!(out, "data left behind: {route_move}");
                }
                for (what, names) in [
                    ("added", &backends.added),
                    ("changed", &backends.changed),
                    ("removed", &backends.removed),
                    ("kept", &backends.kept),
                ] {
                    if !names.is_empty() {
                        let _ = writeln!(out, "backends {what}: {}", names.join(", "));
                    }
                }
                if !unreachable.is_empty() {
                    let _ = writeln!(
                        out,
                        "backends not reachable yet: {}",
                        unreachable.join(", ")
                    );
                }
                restart(&mut out, held);
            }
            Outcome::Unchanged {
                generation,
                restart: held,
            } => {
                let _ = writeln!(out, "unchanged: generation {generation}");
                restart(&mut out, held);
            }
            Outcome::Refused {
                generation,
                problems,
            } => {
                let _ = writeln!(
                    out,
                    "refused: generation {generation} stays in force; problems:"
                );
                for p in problems {
                    let _ = writeln!(out, "  {p}");
                }
            }
            Outcome::Busy => out.push_str("another reload is running; try again\n"),
        }
        out
    }
}

/// Puts new configurations in force, one at a time.
pub struct Reloader {
    proxy: Arc<Proxy>,
    starter: Starter,
    source: Option<ConfigSource>,
    log_filter: Option<LogFilter>,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl Reloader {
    /// Reloads `proxy`'s configuration from `source`, making backends with `starter`.
    pub fn new(
        proxy: Arc<Proxy>,
        starter: Starter,
        source: Option<ConfigSource>,
        log_filter: Option<LogFilter>,
    ) -> Reloader {
        Reloader {
            proxy,
            starter,
            source,
            log_filter,
            one_at_a_time: tokio::sync::Mutex::new(()),
        }
    }

    /// The configuration file, if the proxy was started with one.
    pub fn file(&self) -> Option<&Path> {
        self.source.as_ref().and_then(|s| s.file.as_deref())
    }

    /// The proxy reloaded.
    pub fn proxy(&self) -> &Arc<Proxy> {
        &self.proxy
    }

    /// Reloads, after any reload already running.
    pub async fn reload(&self, trigger: Trigger) -> Outcome {
        let _one = self.one_at_a_time.lock().await;
        self.reload_now(trigger).await
    }

    /// Reloads, unless another reload is running ([`Outcome::Busy`]).
    pub async fn try_reload(&self, trigger: Trigger) -> Outcome {
        match self.one_at_a_time.try_lock() {
            Ok(_one) => self.reload_now(trigger).await,
            Err(_) => Outcome::Busy,
        }
    }

    /// Waits until every backend's refresher has stopped (after shutdown).
    pub async fn join_refreshers(&self) {
        self.starter.join().await;
    }

    async fn reload_now(&self, trigger: Trigger) -> Outcome {
        let old = self.proxy.snapshot();
        let outcome = match self.read() {
            Ok(config) => self.apply(&old, config).await,
            Err(problems) => Outcome::Refused {
                generation: old.generation,
                problems,
            },
        };
        self.proxy.reloads.record(outcome.is_ok());
        log(trigger, &outcome);
        outcome
    }

    /// The configuration from the sources, or every problem found.
    fn read(&self) -> Result<Config, Vec<String>> {
        let Some(source) = &self.source else {
            return Err(vec![
                "the proxy was given its configuration directly, with no file or flags to read again"
                    .into(),
            ]);
        };
        source.load().map_err(|e| match e {
            ConfigError::Invalid(problems) => problems.iter().map(Problem::to_string).collect(),
            ConfigError::Load(e) => vec![e.to_string()],
        })
    }

    /// Puts `config` in force in place of `old`'s.
    async fn apply(&self, old: &Snapshot, mut config: Config) -> Outcome {
        let restart = old.config.hold_restart_only(&mut config);
        // Compiled before any backend starts: a password file that cannot be read refuses the
        // reload with nothing started. The files and variables are read again even when the
        // configuration is the same, so that a rotated password file takes effect.
        let users = match Users::compile(&config, &|name| std::env::var(name).ok()) {
            Ok(users) => users,
            Err(problems) => {
                return Outcome::Refused {
                    generation: old.generation,
                    problems: problems.iter().map(Problem::to_string).collect(),
                };
            }
        };
        // Likewise the TLS backends' files: one that does not load refuses the reload, rather
        // than leave a new backend failing every connection.
        if let Err(error) = crate::tls::check_backends(&config) {
            return Outcome::Refused {
                generation: old.generation,
                problems: vec![error.to_string()],
            };
        }
        if config == old.config && users.same_passwords(old.users()) {
            return Outcome::Unchanged {
                generation: old.generation,
                restart,
            };
        }
        let names: Vec<String> = config
            .backend_list()
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        if let Err(problem) = self.proxy.marks_allow(&names) {
            return Outcome::Refused {
                generation: old.generation,
                problems: vec![problem],
            };
        }
        let mut moved = route_moves(&old.config, &config);
        // Keys a migration moved already are where the new routes look for them.
        moved.retain(|m| {
            m.slots.is_some() || !self.proxy.moved_by_migration(&m.prefix, &m.to.backend)
        });
        let level_changed = config.log.level != old.config.log.level;
        let level = config.log.level.clone();
        let (backends, changes) = self.starter.build(&config, Some(old));
        // A backend started here learns its topology before it takes requests, so that the
        // requests after the reload do not wait for it.
        let started: Vec<&Arc<Backend>> = backends
            .iter()
            .map(|(cluster, _)| cluster)
            .filter(|c| {
                changes
                    .added
                    .iter()
                    .chain(&changes.changed)
                    .any(|n| n == c.name())
            })
            .collect();
        let unreachable = learned(&started).await;
        let generation = old.generation + 1;
        self.proxy
            .install(Snapshot::new(config, users, backends, generation));
        if level_changed && let Some(apply) = &self.log_filter {
            // Checked by `Config::validate`; a failure here would be the subscriber's own.
            if let Err(error) = apply(&level) {
                warn!(%error, level = %level, "log.level not applied");
            }
        }
        Outcome::Applied {
            generation,
            backends: changes,
            unreachable,
            restart,
            moved,
        }
    }
}

/// Waits until each of `clusters` knows its topology, within its `retry_timeout_ms`; the names
/// of those that did not.
async fn learned(clusters: &[&Arc<Backend>]) -> Vec<String> {
    // Their refreshers run already, side by side: the waits overlap.
    let started = tokio::time::Instant::now();
    let mut unknown = Vec::new();
    for cluster in clusters {
        let deadline = started + cluster.config().retry_timeout();
        while !cluster.is_known() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(LEARN_POLL).await;
        }
        if !cluster.is_known() {
            unknown.push(cluster.name().to_string());
        }
    }
    unknown
}

/// One line per reload: what changed, or every problem of a refused configuration.
fn log(trigger: Trigger, outcome: &Outcome) {
    let restart = |held: &[RestartNeeded]| {
        held.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    };
    match outcome {
        Outcome::Applied {
            generation,
            backends,
            unreachable,
            restart: held,
            moved,
        } => {
            for route_move in moved {
                warn!(%trigger, "routes changed, data left behind: {route_move}");
            }
            info!(
                %trigger,
                generation,
                added = ?backends.added,
                changed = ?backends.changed,
                removed = ?backends.removed,
                "configuration reloaded"
            );
            if !unreachable.is_empty() {
                warn!(%trigger, backends = ?unreachable, "backends started by the reload are not reachable yet");
            }
            if !held.is_empty() {
                warn!(%trigger, settings = %restart(held), "settings changed that need a restart; their running values stay");
            }
        }
        Outcome::Unchanged {
            generation,
            restart: held,
        } => {
            info!(%trigger, generation, "configuration reloaded: unchanged");
            if !held.is_empty() {
                warn!(%trigger, settings = %restart(held), "settings changed that need a restart; their running values stay");
            }
        }
        Outcome::Refused {
            generation,
            problems,
        } => warn!(
            %trigger,
            generation,
            problems = %problems.join("; "),
            "configuration refused; the one in force stays"
        ),
        Outcome::Busy => {}
    }
}
