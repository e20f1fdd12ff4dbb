//! One backend's settings (`[backends.NAME]`): its kind, seeds, credentials, read policy,
//! connection limits and timeouts, and their validation.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Problem;

/// What a backend is. A closed set: each kind finds its nodes its own way (a Redis Cluster from
/// `CLUSTER SLOTS`; a Sentinel-managed group by asking its sentinels for the master; a standalone
/// server is its own single node) and then shares the pools, framing and retry engine of every
/// other kind. Kinds whose settings differ get them as fields of `BackendConfig` that only they
/// read, validated per kind in `validate_backend`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// A Redis Cluster: 16384 hash slots over masters, learned from the seeds.
    #[default]
    Cluster,
    /// A master with replicas managed by Redis Sentinel: the sentinels say which node is master.
    Sentinel,
    /// One Redis server, with optional replicas for reads.
    Standalone,
}

impl BackendKind {
    /// The name the configuration spells it with (`kind = "cluster"`).
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Cluster => "cluster",
            BackendKind::Sentinel => "sentinel",
            BackendKind::Standalone => "standalone",
        }
    }

    /// Whether keys are spread over hash slots (a Redis Cluster), so that a command's keys must
    /// share a slot; in the other kinds every key of a backend is on one node.
    pub fn has_slots(self) -> bool {
        self == BackendKind::Cluster
    }
}

/// Where read-only commands go.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ReadFrom {
    /// Every command goes to the master (Redis Cluster's own default).
    #[default]
    Master,
    /// Reads go to a replica of the slot's master; to the master when no replica is healthy,
    /// and when the replica fails to answer.
    PreferReplica,
    /// Reads go to a replica of the slot's master; to the master only when no replica is
    /// healthy.
    Replica,
}

/// One backend behind the proxy (`[backends.NAME]`, or the older `[clusters.NAME]`): what it is,
/// how to reach it, and the limits of the proxy's connections to it. The fields besides `kind`
/// apply to every kind.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BackendConfig {
    /// What the backend is, and so how the proxy learns where each key lives.
    pub kind: BackendKind,
    /// `host:port` of nodes to learn the topology from; any one reachable node is enough
    /// (`kind = "cluster"`).
    pub seeds: Vec<String>,
    /// `host:port` of the server (`kind = "standalone"`).
    pub address: String,
    /// `host:port` of the server's replicas, for reads when `read_from` allows
    /// (`kind = "standalone"`).
    pub replicas: Vec<String>,
    /// `host:port` of the sentinels watching the master (`kind = "sentinel"`); any reachable
    /// one is enough.
    pub sentinels: Vec<String>,
    /// The master's name in the sentinels' configuration (`kind = "sentinel"`).
    pub master_name: String,
    /// ACL user for the sentinels; empty means the default user.
    pub sentinel_username: String,
    /// Password for the sentinels; empty means none.
    pub sentinel_password: String,
    /// ACL user for backend connections; empty means the default user.
    pub username: String,
    /// Password for backend connections (`requirepass`); empty means none.
    pub password: String,
    /// Where read-only commands go: `master`, `prefer-replica` or `replica`.
    pub read_from: ReadFrom,
    /// Long-lived connections per node and protocol for each worker thread, shared by that
    /// worker's clients.
    pub connections_per_node: usize,
    /// Most requests queued or in flight on one backend connection.
    pub max_inflight_per_connection: usize,
    /// Time allowed to connect to a node, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Time allowed for a backend to answer one request, in milliseconds.
    pub request_timeout_ms: u64,
    /// Interval between periodic topology refreshes, in milliseconds.
    pub refresh_interval_ms: u64,
    /// Least time between two refreshes, in milliseconds; `MOVED` storms coalesce into one.
    pub min_refresh_interval_ms: u64,
    /// Most `MOVED`/`ASK` redirects followed for one request.
    pub max_redirects: u32,
    /// Most times one request is retried after a node could not take it (`TRYAGAIN`,
    /// `CLUSTERDOWN`, `LOADING`, `MASTERDOWN`, unreachable node); 0 never retries.
    pub max_retries: u32,
    /// Longest time one request may spend being retried, in milliseconds; then the client gets
    /// the last error.
    pub retry_timeout_ms: u64,
    /// First delay before reconnecting to a node that failed, in milliseconds; doubles per failure.
    pub reconnect_backoff_min_ms: u64,
    /// Longest delay between reconnect attempts, in milliseconds.
    pub reconnect_backoff_max_ms: u64,
    /// Speak TLS to every node of the backend (and to its sentinels).
    pub tls: bool,
    /// PEM file with the CAs that sign the nodes' certificates (`tls = true`).
    pub tls_ca_file: String,
    /// PEM file with the certificate the proxy presents to nodes that verify clients
    /// (`tls-auth-clients`); empty means none.
    pub tls_cert_file: String,
    /// PEM file with the private key of `tls_cert_file`.
    pub tls_key_file: String,
    /// The name the nodes' certificates must be valid for; empty means the host of the address
    /// dialled (an IP, as nodes announce, or a host name).
    pub tls_server_name: String,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            kind: BackendKind::Cluster,
            seeds: Vec::new(),
            address: String::new(),
            replicas: Vec::new(),
            sentinels: Vec::new(),
            master_name: String::new(),
            sentinel_username: String::new(),
            sentinel_password: String::new(),
            username: String::new(),
            password: String::new(),
            read_from: ReadFrom::Master,
            connections_per_node: 1,
            max_inflight_per_connection: 8192,
            connect_timeout_ms: 1000,
            request_timeout_ms: 5000,
            refresh_interval_ms: 10_000,
            min_refresh_interval_ms: 200,
            max_redirects: 5,
            max_retries: 16,
            retry_timeout_ms: 8000,
            reconnect_backoff_min_ms: 50,
            reconnect_backoff_max_ms: 2000,
            tls: false,
            tls_ca_file: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            tls_server_name: String::new(),
        }
    }
}

impl BackendConfig {
    /// `connect_timeout_ms` as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// `retry_timeout_ms` as a duration.
    pub fn retry_timeout(&self) -> Duration {
        Duration::from_millis(self.retry_timeout_ms)
    }

    /// `request_timeout_ms` as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// Reports the problems of one backend's settings; `section` is `backends` or `clusters`, as the
/// file spells it, so each problem names the key the operator wrote.
pub(super) fn validate_backend(
    section: &str,
    name: &str,
    c: &BackendConfig,
    problems: &mut Vec<Problem>,
) {
    let key = |field: &str| format!("{section}.{name}.{field}");
    validate_kind(&key, c, problems);
    validate_other_kinds(&key, c, problems);
    validate_connections(&key, c, problems);
    super::tls::validate_backend_tls(&key, c, problems);
}

/// Reports what the backend's kind needs and lacks: seeds for a cluster, an address for a
/// standalone server, sentinels and a master name for Sentinel.
fn validate_kind(key: &dyn Fn(&str) -> String, c: &BackendConfig, problems: &mut Vec<Problem>) {
    let mut problem = |key: String, message: String| problems.push(Problem { key, message });
    match c.kind {
        BackendKind::Cluster => {
            if c.seeds.is_empty() {
                problem(key("seeds"), "at least one seed HOST:PORT is needed".into());
            }
        }
        BackendKind::Standalone => {
            if !is_host_port(&c.address) {
                problem(
                    key("address"),
                    format!(
                        "{:?} is not HOST:PORT: the server's address is needed",
                        c.address
                    ),
                );
            }
            for replica in c.replicas.iter().filter(|r| !is_host_port(r)) {
                problem(key("replicas"), format!("{replica:?} is not HOST:PORT"));
            }
        }
        BackendKind::Sentinel => {
            if c.sentinels.is_empty() {
                problem(
                    key("sentinels"),
                    "at least one sentinel HOST:PORT is needed".into(),
                );
            }
            for sentinel in c.sentinels.iter().filter(|s| !is_host_port(s)) {
                problem(key("sentinels"), format!("{sentinel:?} is not HOST:PORT"));
            }
            if c.master_name.is_empty() {
                problem(
                    key("master_name"),
                    "the master's name in the sentinels' configuration is needed".into(),
                );
            }
            if !c.sentinel_username.is_empty() && c.sentinel_password.is_empty() {
                problem(
                    key("sentinel_password"),
                    "a username needs a password".into(),
                );
            }
        }
    }
}

/// Reports the fields set that only another kind of backend reads: left alone, they would be
/// silently ignored.
fn validate_other_kinds(
    key: &dyn Fn(&str) -> String,
    c: &BackendConfig,
    problems: &mut Vec<Problem>,
) {
    let cluster = c.kind == BackendKind::Cluster;
    let standalone = c.kind == BackendKind::Standalone;
    let sentinel = c.kind == BackendKind::Sentinel;
    for (field, set, kind) in [
        ("seeds", !cluster && !c.seeds.is_empty(), "cluster"),
        (
            "address",
            !standalone && !c.address.is_empty(),
            "standalone",
        ),
        (
            "replicas",
            !standalone && !c.replicas.is_empty(),
            "standalone",
        ),
        (
            "sentinels",
            !sentinel && !c.sentinels.is_empty(),
            "sentinel",
        ),
        (
            "master_name",
            !sentinel && !c.master_name.is_empty(),
            "sentinel",
        ),
    ] {
        if set {
            problems.push(Problem {
                key: key(field),
                message: format!(
                    "applies to kind = \"{kind}\" only; this backend is a {}",
                    c.kind.as_str()
                ),
            });
        }
    }
}

/// Reports the problems of the settings every kind shares: seed addresses, credentials, and
/// the connection limits and timeouts, none of which works at 0.
fn validate_connections(
    key: &dyn Fn(&str) -> String,
    c: &BackendConfig,
    problems: &mut Vec<Problem>,
) {
    let mut problem = |key: String, message: String| problems.push(Problem { key, message });
    for seed in &c.seeds {
        if !is_host_port(seed) {
            problem(key("seeds"), format!("{seed:?} is not HOST:PORT"));
        }
    }
    if !c.username.is_empty() && c.password.is_empty() {
        problem(key("password"), "a username needs a password".into());
    }
    for (field, value) in [
        ("connections_per_node", c.connections_per_node as u64),
        (
            "max_inflight_per_connection",
            c.max_inflight_per_connection as u64,
        ),
        ("connect_timeout_ms", c.connect_timeout_ms),
        ("request_timeout_ms", c.request_timeout_ms),
        ("refresh_interval_ms", c.refresh_interval_ms),
        ("reconnect_backoff_min_ms", c.reconnect_backoff_min_ms),
    ] {
        if value == 0 {
            problem(key(field), "must be greater than 0".into());
        }
    }
    if c.connections_per_node > 64 {
        problem(key("connections_per_node"), "at most 64".into());
    }
    if c.reconnect_backoff_max_ms < c.reconnect_backoff_min_ms {
        problem(
            key("reconnect_backoff_max_ms"),
            "must not be less than reconnect_backoff_min_ms".into(),
        );
    }
}

/// `host:port` with a non-empty host and a port number.
fn is_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}
