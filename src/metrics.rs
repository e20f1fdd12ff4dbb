//! Metric names, in one place. Labels stay low-cardinality: never a key or a client address.

/// Failed logins (`AUTH`, `HELLO ... AUTH`) (counter).
pub const AUTH_FAILURES: &str = "respgate_auth_failures_total";
/// Requests refused by a user's permissions, labelled `kind` = `command` | `key` | `channel` |
/// `backend` (counter).
pub const ACL_DENIED: &str = "respgate_acl_denied_total";
/// Client connections accepted (counter).
pub const CLIENT_CONNECTIONS: &str = "respgate_client_connections_total";
/// Client connections open now (gauge).
pub const CLIENTS_CONNECTED: &str = "respgate_clients_connected";
/// Commands received from clients (counter).
pub const COMMANDS: &str = "respgate_commands_total";
/// Redirects followed, labelled `kind` = `moved` | `ask` (counter).
pub const REDIRECTS: &str = "respgate_redirects_total";
/// Requests answered with an error because a backend failed (counter).
pub const BACKEND_ERRORS: &str = "respgate_backend_errors_total";
/// Topology refreshes that succeeded (counter).
pub const TOPOLOGY_REFRESHES: &str = "respgate_topology_refreshes_total";
/// Client connections closed for a protocol error (counter).
pub const PROTOCOL_ERRORS: &str = "respgate_protocol_errors_total";
/// Requests sent again after a node could not take them (counter).
pub const RETRIES: &str = "respgate_retries_total";
/// Slots served by some master, per cluster (gauge).
pub const SLOTS_SERVED: &str = "respgate_slots_served";
/// Masters in the slot map, per cluster (gauge).
pub const MASTERS: &str = "respgate_masters";
/// Counter: clients closed for overcoming their output limit.
pub const CLIENTS_CLOSED_BY_LIMIT: &str = "respgate_clients_closed_by_output_limit_total";
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
