//! What operators look at: metric names in one place, the handles the hot path increments, and
//! the Prometheus text `/metrics` serves.
//!
//! Labels stay low-cardinality: a command's name (from the backend's command table, bounded,
//! `other` for the rest), its family, a backend's configured name, a node's address, a result or
//! kind from a fixed list; never a key or a client address.
//!
//! Handles are resolved once, never per request: a command's counters hang off its spec in the
//! command table ([`CommandCounters`]), a node's off its pool, a backend's off its cluster
//! ([`BackendInstruments`]). What `INFO` shows too is kept as plain atomics where it is counted
//! and copied into the recorder when `/metrics` is read ([`render`]).
//!
//! Latency is the one exception to the `metrics` crate: the Prometheus exporter's histograms
//! keep every sample until the next scrape (an epoch-pinned append per sample, measured at six
//! times an atomic increment), so [`LatencyHistogram`] counts into fixed buckets with two atomic
//! additions and is rendered beside the exporter's text.

mod commands;
mod family;
mod histogram;
mod publish;

pub(crate) use commands::publish as publish_command_counters;
pub use commands::{CommandCounters, OTHER, command_counters};
pub use family::Family;
pub use histogram::{BUCKETS_SECONDS, LatencyHistogram};
pub use publish::{BackendInstruments, NodeInstruments, install, render};

/// Gauge: client connections open now.
pub const CLIENTS_CONNECTED: &str = "respgate_clients_connected";
/// Counter: client connections accepted (those refused at `max_clients` included).
pub const CLIENT_CONNECTIONS: &str = "respgate_client_connections_total";
/// Counter: client connections refused because `server.max_clients` were open.
pub const CLIENT_CONNECTIONS_REJECTED: &str = "respgate_client_connections_rejected_total";
/// Counter: clients closed for a limit, labelled `limit` = `output_buffer` | `idle_timeout`.
pub const CLIENTS_CLOSED_BY_LIMIT: &str = "respgate_clients_closed_by_limit_total";
/// Counter: client connections closed for a protocol error (a request too long included).
pub const PROTOCOL_ERRORS: &str = "respgate_protocol_errors_total";
/// Counter: commands received, labelled `command` (lowercase name, `container|sub` for
/// subcommands, `other` for a name no backend knows) and `result` = `ok` | `error`.
pub const COMMANDS: &str = "respgate_commands_total";
/// Histogram: seconds from reading a request to its reply being ready, for requests sent to a
/// backend, labelled `family` (see [`Family`]) and `backend`.
pub const COMMAND_DURATION: &str = "respgate_command_duration_seconds";
/// Counter: requests sent to a node on its shared or control connections, labelled `backend`
/// and `node`.
pub const BACKEND_REQUESTS: &str = "respgate_backend_requests_total";
/// Counter: requests to a node that got no reply for another reason than a timeout (node
/// unreachable, connection lost, too many in flight), labelled `backend` and `node`.
pub const BACKEND_ERRORS: &str = "respgate_backend_errors_total";
/// Counter: requests to a node not answered within `request_timeout_ms`, labelled `backend`
/// and `node`.
pub const BACKEND_TIMEOUTS: &str = "respgate_backend_timeouts_total";
/// Counter: redirects followed, labelled `backend` and `kind` = `moved` | `ask`.
pub const REDIRECTS: &str = "respgate_redirects_total";
/// Counter: requests sent again after a node could not take them, labelled `backend`.
pub const RETRIES: &str = "respgate_retries_total";
/// Counter: topology refreshes, labelled `backend` and `outcome` = `ok` | `failed`.
pub const TOPOLOGY_REFRESHES: &str = "respgate_topology_refreshes_total";
/// Counter: refreshes that found another topology than the one in force, labelled `backend`.
pub const TOPOLOGY_CHANGES: &str = "respgate_topology_changes_total";
/// Gauge: when the last successful refresh ended, in seconds since the Unix epoch, labelled
/// `backend`; 0 before any.
pub const TOPOLOGY_LAST_REFRESH: &str = "respgate_topology_last_refresh_timestamp_seconds";
/// Gauge: slots some master serves, labelled `backend`.
pub const SLOTS_SERVED: &str = "respgate_slots_served";
/// Gauge: masters in the slot map, labelled `backend`.
pub const MASTERS: &str = "respgate_masters";
/// Counter: bytes read from and written to clients, labelled `direction` = `in` | `out`.
pub const CLIENT_BYTES: &str = "respgate_client_bytes_total";
/// Gauge: clients with at least one subscription (`SUBSCRIBE`, `PSUBSCRIBE`, `SSUBSCRIBE`).
pub const SUBSCRIBERS: &str = "respgate_subscribers";
/// Gauge: connections to nodes held by one client (blocking commands, `WATCH`/`MULTI`,
/// subscriptions), labelled `backend`.
pub const OWN_CONNECTIONS: &str = "respgate_own_connections";
/// Gauge: bytes of replies answered by nodes and not yet taken by their clients.
pub const CLIENT_OUTPUT_BYTES: &str = "respgate_client_output_bytes";
/// Gauge: 1 while `/ready` answers 200, 0 before every backend serves its slots and once
/// shutdown began.
pub const READY: &str = "respgate_ready";
/// Counter: failed logins (`AUTH`, `HELLO ... AUTH`).
pub const AUTH_FAILURES: &str = "respgate_auth_failures_total";
/// Counter: requests refused by a user's permissions, labelled `kind` = `command` | `key` |
/// `channel` | `backend`.
pub const ACL_DENIED: &str = "respgate_acl_denied_total";
/// Gauge: the generation of the configuration in force (1 at start, one more per reload that
/// changed it).
pub const CONFIG_GENERATION: &str = "respgate_config_generation";
/// Counter: configuration reloads, labelled `outcome` = `ok` | `failed`.
pub const CONFIG_RELOADS: &str = "respgate_config_reloads_total";
/// Gauge: when the last reload ended, in seconds since the Unix epoch; 0 before any.
pub const CONFIG_LAST_RELOAD: &str = "respgate_config_last_reload_timestamp_seconds";
/// Gauge: 1 when the last reload succeeded (or none happened yet), 0 when it was refused.
pub const CONFIG_LAST_RELOAD_OK: &str = "respgate_config_last_reload_successful";
/// Counter: certificate reloads, labelled `result` = `ok` | `refused` (files that did not load).
pub const TLS_RELOADS: &str = "respgate_tls_reloads_total";

/// Clients with `CLIENT TRACKING` on.
pub const TRACKING_CLIENTS: &str = "respgate_tracking_clients";
/// Keys the proxy remembers tracking clients to have read.
pub const TRACKING_KEYS: &str = "respgate_tracking_keys";
/// Invalidations sent to tracking clients, by kind.
pub const TRACKING_INVALIDATIONS: &str = "respgate_tracking_invalidations_total";

/// Keys a migration moved so far (its copier's), as its record says.
pub const MIGRATION_KEYS_MOVED: &str = "respgate_migration_keys_moved";
/// Bytes a migration moved so far.
pub const MIGRATION_BYTES_MOVED: &str = "respgate_migration_bytes_moved";
/// 1 for the phase each migration is in, 0 for the others.
pub const MIGRATION_PHASE: &str = "respgate_migration_phase";

/// Every metric: name, Prometheus type, labels, meaning. The README's table and the Grafana
/// dashboard are checked against it.
pub const ALL: &[(&str, &str, &str, &str)] = &[
    (
        CLIENTS_CONNECTED,
        "gauge",
        "",
        "client connections open now",
    ),
    (
        CLIENT_CONNECTIONS,
        "counter",
        "",
        "client connections accepted",
    ),
    (
        CLIENT_CONNECTIONS_REJECTED,
        "counter",
        "",
        "client connections refused at server.max_clients",
    ),
    (
        CLIENTS_CLOSED_BY_LIMIT,
        "counter",
        "limit",
        "clients closed for a limit: output_buffer (client_output_limit_*), idle_timeout",
    ),
    (
        PROTOCOL_ERRORS,
        "counter",
        "",
        "clients closed for a protocol error or a request over a size limit",
    ),
    (
        COMMANDS,
        "counter",
        "command, result",
        "commands received, by name and result (ok or error reply)",
    ),
    (
        COMMAND_DURATION,
        "histogram",
        "family, backend",
        "seconds from reading a request to its reply being ready, for requests sent to a backend",
    ),
    (
        BACKEND_REQUESTS,
        "counter",
        "backend, node",
        "requests sent to a node on its shared or control connections",
    ),
    (
        BACKEND_ERRORS,
        "counter",
        "backend, node",
        "requests to a node that failed without a reply (unreachable, connection lost, overloaded)",
    ),
    (
        BACKEND_TIMEOUTS,
        "counter",
        "backend, node",
        "requests to a node not answered within request_timeout_ms",
    ),
    (
        REDIRECTS,
        "counter",
        "backend, kind",
        "MOVED and ASK redirects followed",
    ),
    (
        RETRIES,
        "counter",
        "backend",
        "requests sent again after a node could not take them",
    ),
    (
        TOPOLOGY_REFRESHES,
        "counter",
        "backend, outcome",
        "topology refreshes, ok or failed",
    ),
    (
        TOPOLOGY_CHANGES,
        "counter",
        "backend",
        "refreshes that found a new topology",
    ),
    (
        TOPOLOGY_LAST_REFRESH,
        "gauge",
        "backend",
        "Unix time of the last successful refresh",
    ),
    (SLOTS_SERVED, "gauge", "backend", "slots some master serves"),
    (MASTERS, "gauge", "backend", "masters in the slot map"),
    (
        CLIENT_BYTES,
        "counter",
        "direction",
        "bytes read from (in) and written to (out) clients",
    ),
    (
        SUBSCRIBERS,
        "gauge",
        "",
        "clients with at least one subscription",
    ),
    (
        OWN_CONNECTIONS,
        "gauge",
        "backend",
        "node connections held by one client (blocking commands, transactions, subscriptions)",
    ),
    (
        CLIENT_OUTPUT_BYTES,
        "gauge",
        "",
        "bytes of replies owed to clients, answered by nodes and not yet taken",
    ),
    (READY, "gauge", "", "1 while /ready answers 200, else 0"),
    (
        AUTH_FAILURES,
        "counter",
        "",
        "failed logins (AUTH, HELLO ... AUTH)",
    ),
    (
        ACL_DENIED,
        "counter",
        "kind",
        "requests refused by a user's permissions: command, key, channel or backend",
    ),
    (
        CONFIG_GENERATION,
        "gauge",
        "",
        "generation of the configuration in force: 1 at start, one more per reload that changed it",
    ),
    (
        CONFIG_RELOADS,
        "counter",
        "outcome",
        "configuration reloads, ok or failed",
    ),
    (
        CONFIG_LAST_RELOAD,
        "gauge",
        "",
        "Unix time the last reload ended; 0 before any",
    ),
    (
        CONFIG_LAST_RELOAD_OK,
        "gauge",
        "",
        "1 when the last reload succeeded (or none happened yet), 0 when it was refused",
    ),
    (
        TLS_RELOADS,
        "counter",
        "result",
        "certificate files read again after they changed: ok, or refused (the old ones kept)",
    ),
    (
        TRACKING_CLIENTS,
        "gauge",
        "",
        "clients with CLIENT TRACKING on (client-side caching)",
    ),
    (
        TRACKING_KEYS,
        "gauge",
        "",
        "keys remembered as read by tracking clients (at most tracking.max_keys)",
    ),
    (
        TRACKING_INVALIDATIONS,
        "counter",
        "kind",
        "invalidations sent to tracking clients: key (one per key), flush (forget everything), evicted (keys dropped at tracking.max_keys)",
    ),
    (
        MIGRATION_KEYS_MOVED,
        "gauge",
        "migration",
        "keys the migration's copier moved so far (respgate migrate)",
    ),
    (
        MIGRATION_BYTES_MOVED,
        "gauge",
        "migration",
        "bytes the migration's copier moved so far, as MEMORY USAGE sizes the keys",
    ),
    (
        MIGRATION_PHASE,
        "gauge",
        "migration, phase",
        "1 for the phase the migration is in, 0 for the others",
    ),
];
