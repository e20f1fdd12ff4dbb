//! Configuration: one typed tree, layered file -> `RESPGATE_` environment -> flags, then
//! validated with every problem reported by its key.
//!
//! # Layout
//! - this module: the tree's root, the server section, loading and the top-level checks;
//! - `backend`: one backend's settings (`[backends.NAME]`) and their checks;
//! - `routing`: `[routing]` (prefix routes, slot splits, the default) and its checks;
//! - `users`: `[users.NAME]` and [`Secret`], the type passwords are held in (checked where
//!   they are compiled, by `acl::Users::compile`, which this module does not call: the users
//!   sit above the configuration);
//! - `restart`: the settings a reload cannot change;
//! - `redact`: the configuration as `/config` shows it, secrets replaced;
//! - `tls`: `[server.tls]` and the checks of every TLS key;
//! - `admin_token`: the admin endpoint's credential, read from `server.admin_token_file`;
//! - `route_moves`: the keys a change of `[routing]` sends elsewhere, leaving their data behind.

mod admin_token;
mod backend;
mod migration;
mod redact;
mod restart;
mod route_moves;
mod routing;
mod tls;
mod tracking;
mod users;

pub use admin_token::read_admin_token;
pub use backend::{BackendConfig, BackendKind, ReadFrom};
pub use migration::MigrationConfig;
pub use redact::REDACTED;
pub use restart::RestartNeeded;
pub use route_moves::{Place, RouteMove, route_moves};
pub use routing::{RouteConfig, RoutingConfig, SlotRangeConfig, SlotRangeError};
pub use tls::ServerTlsConfig;
pub use tracking::TrackingConfig;
pub use users::{Secret, UserConfig, read_secrets};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Name of the backend that `--cluster` defines.
pub const DEFAULT_CLUSTER: &str = "default";
/// Environment variable prefix; nested keys are separated by `__`.
pub const ENV_PREFIX: &str = "RESPGATE";

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The client-facing side.
    pub server: ServerConfig,
    /// The backends, by name (`[clusters.NAME]`, the older spelling of `[backends.NAME]`, still
    /// accepted; `--check-config` notes it).
    pub clusters: BTreeMap<String, BackendConfig>,
    /// The backends, by name.
    pub backends: BTreeMap<String, BackendConfig>,
    /// Which keys go to which backend.
    pub routing: RoutingConfig,
    /// The users clients log in as, by name, with what each may do.
    pub users: BTreeMap<String, UserConfig>,
    /// What the proxy logs, and how.
    pub log: LogConfig,
    /// Client-side caching through the proxy.
    pub tracking: TrackingConfig,
    /// Moving a prefix between backends online.
    pub migration: MigrationConfig,
}

/// The proxy's logs (`[log]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// What to log: a level (`error`, `warn`, `info`, `debug`, `trace`) or `tracing` filter
    /// directives such as `info,respgate::cluster=debug`. The `RUST_LOG` environment variable,
    /// when set, wins over it.
    pub level: String,
    /// How each line is written: `text` for people, `json` for log collectors. The
    /// `--log-format` flag wins over it. Read at start only.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl std::fmt::Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event: time, level, message, then `key=value` fields.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `message`, `target` and every field.
    Json,
}

impl Config {
    /// Every backend by name, `[clusters.*]` and `[backends.*]` together, in name order: a
    /// backend's position here is its id.
    pub fn backend_list(&self) -> Vec<(String, BackendConfig)> {
        let mut all: BTreeMap<String, BackendConfig> = self.clusters.clone();
        all.extend(self.backends.clone());
        all.into_iter().collect()
    }

    /// Notes on settings that work but are spelled the old way, each with its key: what
    /// `--check-config` prints beside "ok".
    pub fn deprecations(&self) -> Vec<Problem> {
        self.clusters
            .keys()
            .map(|name| Problem {
                key: format!("clusters.{name}"),
                message: format!(
                    "[clusters.{name}] is the older spelling of [backends.{name}] (kind = \"cluster\"); it still works, but rename the section"
                ),
            })
            .collect()
    }
}

/// The client-facing listener and per-client limits.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on; empty means no plain listener (when `tls.listen` is set).
    pub listen: String,
    /// Worker threads serving clients, each with its own event loop and backend connections;
    /// 0 means one per CPU core.
    pub threads: usize,
    /// Listen backlog.
    pub backlog: u32,
    /// TCP keepalive interval for client connections in seconds; 0 disables it.
    pub tcp_keepalive_s: u64,
    /// Maximum concurrent client connections; further ones get an error and are closed.
    pub max_clients: usize,
    /// Longest bulk string a client may send, in bytes (Redis's `proto-max-bulk-len`).
    pub proto_max_bulk_len: u64,
    /// Most arguments in one request.
    pub max_multibulk_len: u64,
    /// Longest request a client may send, in bytes, all its arguments and framing included
    /// (Redis's `client-query-buffer-limit`); a longer one is a protocol error and the client is
    /// closed.
    pub max_request_bytes: u64,
    /// Most requests of one client in flight at once; reading pauses beyond it.
    pub max_pipeline: usize,
    /// Close clients idle for this many seconds; 0 never does (Redis's `timeout`).
    pub client_idle_timeout_s: u64,
    /// Address of the admin HTTP endpoints (`/metrics`, `/ready`, `/live`, `/topology`); empty
    /// disables them.
    pub admin_listen: String,
    /// Most admin connections open at once; further ones are closed at once, so the admin
    /// listener never holds more than this many tasks.
    pub admin_max_connections: usize,
    /// Time allowed for one admin connection, from accept to the last byte of the answer, in
    /// milliseconds: a client that sends its request slowly (or never) is closed then.
    pub admin_timeout_ms: u64,
    /// File holding the token that the admin endpoints which change something (`POST
    /// /reload`) require as `Authorization: Bearer TOKEN`; empty turns those endpoints off.
    /// Read again at each such request, so a rotated Secret applies at once.
    pub admin_token_file: String,
    /// `HOST:PORT` that cluster-aware clients are told to dial (`CLUSTER SLOTS`, `SHARDS`,
    /// `NODES`): the LoadBalancer's or NodePort's address; the host may be a name. Empty means
    /// the listen address, or the address the client connected to when listening on a wildcard.
    pub announce_address: String,
    /// On shutdown (`SIGTERM`), how long the listener keeps accepting clients while `/ready`
    /// already says no, in milliseconds: time for the load balancer (Kubernetes endpoints) to
    /// stop sending new clients before the socket closes.
    pub shutdown_delay_ms: u64,
    /// On shutdown, the time from `SIGTERM` to exit, in milliseconds: after `shutdown_delay_ms`
    /// accepting stops, clients get the replies they are owed and are closed between requests;
    /// those still open at this deadline are dropped.
    pub shutdown_timeout_ms: u64,
    /// Requests that take at least this many microseconds, from being read to their reply
    /// being ready, go to the slow log (`SLOWLOG GET`); negative logs none, 0 logs every
    /// request (Redis's `slowlog-log-slower-than`).
    pub slowlog_log_slower_than_us: i64,
    /// Entries the slow log keeps, the newest (Redis's `slowlog-max-len`).
    pub slowlog_max_len: usize,
    /// Password of the user named `username`, who may do everything; clients give it
    /// (`AUTH`, or `HELLO ... AUTH`) before other commands, as Redis's `requirepass`. Empty:
    /// that user takes any password, and clients are logged in as it from the start, unless
    /// `[users]` are configured (then it exists only as `[users.NAME]` defines it).
    pub password: Secret,
    /// The default user's name: whom one-argument `AUTH password` logs in as.
    pub username: String,
    /// Output limits of ordinary clients (Redis's `client-output-buffer-limit normal`).
    pub client_output_limit_normal: OutputLimit,
    /// Output limits of subscribed clients (Redis's `client-output-buffer-limit pubsub`).
    pub client_output_limit_pubsub: OutputLimit,
    /// Let clients run administrative commands (`CONFIG SET`, `SAVE`, `DEBUG`, `MIGRATE`,
    /// ...): `CONFIG SET/RESETSTAT/REWRITE` go to every node, `SAVE`/`BGSAVE` to
    /// every master, `DEBUG` where its subcommand acts, the others by key or to one master.
    /// (`ACL` is about the proxy's own users.)
    pub allow_admin_commands: bool,
    /// The TLS listener (`[server.tls]`).
    pub tls: ServerTlsConfig,
    /// How often the configuration file is checked for changes, which are then reloaded, in
    /// milliseconds; 0 turns the check off (`SIGHUP` and `POST /reload` still reload).
    pub config_watch_interval_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:6380".into(),
            threads: 0,
            backlog: 1024,
            tcp_keepalive_s: 300,
            max_clients: 10_000,
            proto_max_bulk_len: 512 * 1024 * 1024,
            max_multibulk_len: 1024 * 1024,
            max_request_bytes: crate::protocol::request::DEFAULT_MAX_REQUEST_BYTES,
            max_pipeline: 1024,
            client_idle_timeout_s: 0,
            allow_admin_commands: false,
            shutdown_delay_ms: 5_000,
            shutdown_timeout_ms: 25_000,
            slowlog_log_slower_than_us: 10_000,
            slowlog_max_len: 128,
            config_watch_interval_ms: 1000,
            admin_listen: String::new(),
            admin_max_connections: 16,
            admin_timeout_ms: 5_000,
            admin_token_file: String::new(),
            announce_address: String::new(),
            password: Secret::default(),
            username: "default".into(),
            client_output_limit_normal: OutputLimit {
                hard_limit_bytes: 64 * 1024 * 1024,
                soft_limit_bytes: 16 * 1024 * 1024,
                soft_limit_s: 10,
            },
            client_output_limit_pubsub: OutputLimit {
                hard_limit_bytes: 32 * 1024 * 1024,
                soft_limit_bytes: 8 * 1024 * 1024,
                soft_limit_s: 60,
            },
            tls: ServerTlsConfig::default(),
        }
    }
}

/// How many bytes of replies one client may be owed, as Redis's `client-output-buffer-limit`:
/// the replies nodes have answered that the client has not read yet, whether in the proxy or
/// in its socket's send buffer. Over the hard limit, or over the soft limit for longer than
/// `soft_limit_s`, the client is closed; over the soft limit, its next requests wait unread.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct OutputLimit {
    /// Close the client at once when owed more than this many bytes; 0 means no hard limit.
    pub hard_limit_bytes: u64,
    /// Close the client when owed more than this many bytes for `soft_limit_s` seconds in a
    /// row; 0 means no soft limit.
    pub soft_limit_bytes: u64,
    /// How long a client may stay over the soft limit, in seconds.
    pub soft_limit_s: u64,
}

/// Values given on the command line; they win over file and environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--cluster`: seeds of the `default` cluster.
    pub seeds: Option<Vec<String>>,
    /// `--threads`.
    pub threads: Option<usize>,
}

/// One problem with the configuration, with the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key, such as `clusters.default.seeds`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// The configuration could not be loaded or is invalid.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// A source could not be read or did not match the schema.
    #[error("{0}")]
    Load(#[from] config::ConfigError),
    /// The values are invalid; every problem is listed.
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

impl Config {
    /// Loads the layers (file if given, then environment, then overrides) and validates them.
    /// The users are checked where they are compiled, once
    /// ([`Users::compile`](crate::acl::Users::compile)): the proxy's start, each reload and
    /// `--check-config` do it beside this.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(file, &vars, overrides)
    }

    /// [`Config::load`] with the environment given explicitly (for tests).
    pub fn load_from(
        file: Option<&Path>,
        env: &[(String, String)],
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let config = Self::read_from(file, env, overrides)?;
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Loads the layers as [`Config::load`] does, without validating them: for a caller that
    /// reports every problem at once, the users' with the rest (`--check-config`).
    pub fn read(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        Self::read_from(file, &vars, overrides)
    }

    /// [`Config::read`] with the environment given explicitly.
    fn read_from(
        file: Option<&Path>,
        env: &[(String, String)],
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            builder = builder.add_source(
                config::File::from(path)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        let mut environment = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true)
            .source(Some(
                env.iter()
                    .filter(|(name, _)| is_config_variable(name))
                    .cloned()
                    .collect(),
            ));
        // Lists are comma separated; the backend and user names are only known from the variables. The
        // separator is set only with list keys: with a separator and no list key, the config
        // crate splits every variable, and a lone RESPGATE_SERVER__PASSWORD becomes a list.
        for (name, _) in env {
            let lower = name.to_ascii_lowercase();
            for list in [
                "passwords",
                "password_file",
                "password_env",
                "keys",
                "channels",
                "backends",
            ] {
                if let Some(rest) = lower.strip_prefix("respgate_users__")
                    && let Some(user) = rest.strip_suffix(&format!("__{list}"))
                {
                    environment = environment
                        .list_separator(",")
                        .with_list_parse_key(&format!("users.{user}.{list}"));
                }
            }
            for section in ["clusters", "backends"] {
                for list in ["seeds", "replicas", "sentinels"] {
                    if let Some(rest) = lower.strip_prefix(&format!("respgate_{section}__"))
                        && let Some(backend) = rest.strip_suffix(&format!("__{list}"))
                    {
                        environment = environment
                            .list_separator(",")
                            .with_list_parse_key(&format!("{section}.{backend}.{list}"));
                    }
                }
            }
        }
        builder = builder.add_source(environment);
        if let Some(listen) = &overrides.listen {
            builder = builder.set_override("server.listen", listen.clone())?;
        }
        if let Some(threads) = overrides.threads {
            builder = builder.set_override("server.threads", threads as u64)?;
        }
        let mut config: Config = builder.build()?.try_deserialize()?;
        if let Some(seeds) = &overrides.seeds {
            config.default_backend_entry().seeds = seeds.clone();
        }
        Ok(config)
    }

    /// Every problem with the values, each with its key; empty when the config is usable. The
    /// users are checked where they are compiled ([`Config::load`] says where).
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        self.server.validate_addresses(&mut problems);
        self.server.validate_limits(&mut problems);
        self.validate_backends(&mut problems);
        tls::validate_server_tls(&self.server.tls, &mut problems);
        routing::validate_routing(self, &mut problems);
        if !self.tracking.version_is_valid() {
            problems.push(Problem {
                key: "tracking.announce_version".into(),
                message: format!(
                    "{:?} is not a version: numbers separated by dots, such as \"7.4.0\"",
                    self.tracking.announce_version
                ),
            });
        }
        self.validate_migration(&mut problems);
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            problems.push(Problem {
                key: "log.level".into(),
                message: format!(
                    "{:?} is not a level or filter directives: {e}",
                    self.log.level
                ),
            });
        }
        problems
    }

    /// Reports a configuration without backends, a name in both `[clusters]` and
    /// `[backends]`, and the problems of each backend's settings.
    fn validate_backends(&self, problems: &mut Vec<Problem>) {
        if self.clusters.is_empty() && self.backends.is_empty() {
            problems.push(Problem {
                key: "backends".into(),
                message: "no backend configured: give --cluster HOST:PORT,... or a [backends.default] section with seeds".into(),
            });
        }
        for name in self.clusters.keys() {
            if self.backends.contains_key(name) {
                problems.push(Problem {
                    key: format!("clusters.{name}"),
                    message: format!("[backends.{name}] is configured too: keep one of the two"),
                });
            }
        }
        for (section, backends) in [("clusters", &self.clusters), ("backends", &self.backends)] {
            for (name, c) in backends {
                backend::validate_backend(section, name, c, problems);
            }
        }
    }
}

impl ServerConfig {
    /// Reports the addresses of `[server]` that do not parse, and a proxy with no listener at
    /// all, which clients could not reach.
    fn validate_addresses(&self, problems: &mut Vec<Problem>) {
        let mut problem = |key: String, message: String| problems.push(Problem { key, message });
        if !self.admin_listen.is_empty() && self.admin_listen.parse::<SocketAddr>().is_err() {
            problem(
                "server.admin_listen".into(),
                format!("{:?} is not an IP:port address", self.admin_listen),
            );
        }
        if !self.admin_token_file.is_empty()
            && let Err(why) = read_admin_token(&self.admin_token_file)
        {
            problem("server.admin_token_file".into(), why);
        }
        if !self.announce_address.is_empty() && !is_announce_address(&self.announce_address) {
            problem(
                "server.announce_address".into(),
                format!("{:?} is not HOST:PORT", self.announce_address),
            );
        }
        if self.listen.is_empty() && !self.tls.enabled() {
            problem(
                "server.listen".into(),
                "empty, and no TLS listener (server.tls.listen) either: clients could not connect"
                    .into(),
            );
        } else if !self.listen.is_empty() && self.listen.parse::<SocketAddr>().is_err() {
            problem(
                "server.listen".into(),
                format!("{:?} is not an IP:port address", self.listen),
            );
        }
    }

    /// Reports the limits and timeouts of `[server]` that could not work: a 0 where one is
    /// needed, a soft output limit above its hard one, a shutdown delay outlasting the timeout.
    fn validate_limits(&self, problems: &mut Vec<Problem>) {
        let mut problem = |key: String, message: String| problems.push(Problem { key, message });
        for (key, limit) in [
            (
                "server.client_output_limit_normal",
                self.client_output_limit_normal,
            ),
            (
                "server.client_output_limit_pubsub",
                self.client_output_limit_pubsub,
            ),
        ] {
            if limit.hard_limit_bytes > 0 && limit.soft_limit_bytes > limit.hard_limit_bytes {
                problem(
                    format!("{key}.soft_limit_bytes"),
                    "must not be greater than hard_limit_bytes".into(),
                );
            }
        }
        for (key, value) in [
            ("server.backlog", u64::from(self.backlog)),
            ("server.max_clients", self.max_clients as u64),
            ("server.proto_max_bulk_len", self.proto_max_bulk_len),
            ("server.max_multibulk_len", self.max_multibulk_len),
            ("server.max_request_bytes", self.max_request_bytes),
            ("server.max_pipeline", self.max_pipeline as u64),
            (
                "server.admin_max_connections",
                self.admin_max_connections as u64,
            ),
            ("server.admin_timeout_ms", self.admin_timeout_ms),
            ("server.shutdown_timeout_ms", self.shutdown_timeout_ms),
        ] {
            if value == 0 {
                problem(key.into(), "must be greater than 0".into());
            }
        }
        if self.shutdown_delay_ms >= self.shutdown_timeout_ms {
            problem(
                "server.shutdown_delay_ms".into(),
                format!(
                    "must be less than server.shutdown_timeout_ms ({} ms), which counts from SIGTERM too",
                    self.shutdown_timeout_ms
                ),
            );
        }
    }
}

impl Config {
    /// The backend `--cluster` gives seeds to: `default` in whichever section holds it; a new
    /// `[backends.default]` beside other `[backends]`; else `[clusters.default]`, which every
    /// version of the proxy reads.
    fn default_backend_entry(&mut self) -> &mut BackendConfig {
        let in_backends = self.backends.contains_key(DEFAULT_CLUSTER)
            || (!self.clusters.contains_key(DEFAULT_CLUSTER) && !self.backends.is_empty());
        let section = if in_backends {
            &mut self.backends
        } else {
            &mut self.clusters
        };
        section.entry(DEFAULT_CLUSTER.to_string()).or_default()
    }
}

/// `HOST:PORT` as announced to clients: a non-empty host without spaces and a port above 0.
fn is_announce_address(s: &str) -> bool {
    s.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.contains(' ') && port.parse::<u16>().is_ok_and(|p| p > 0)
    })
}

/// Whether an environment variable is meant as configuration: `RESPGATE_<SECTION>__<KEY>`.
/// Others with the prefix are not ours: Kubernetes injects `RESPGATE_SERVICE_HOST`,
/// `RESPGATE_PORT_6379_TCP` and the like into pods for a Service named `respgate`.
fn is_config_variable(name: &str) -> bool {
    name.strip_prefix(ENV_PREFIX)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|rest| rest.contains("__"))
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;

#[cfg(test)]
#[path = "users_tests.rs"]
mod users_tests;
