//! `INFO`, as one Redis holding the whole cluster would answer it: the proxy's own figures
//! where they are the proxy's (clients, connections, commands received, error replies, its own
//! CPU), the masters' `INFO` combined where they are the data's (memory, keyspace, hits,
//! per-command counts; see [`merge`]), and the proxy's own `# Proxy` section beside them.
//!
//! Sections as Redis 7 takes them: none means the default ones, `all` adds `commandstats` and
//! `latencystats`, `everything` is `all` (the proxy loads no module), and several may be asked
//! at once (`INFO memory stats`). Each master is asked once, on its control connection within
//! the request timeout; a master that does not answer is left out, and `# Proxy` says how many
//! answered.

mod merge;

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};

use crate::broadcast::{self, Reach};
use crate::cluster::Backend;
use crate::protocol::Protocol;
use crate::protocol::reply::ReplyBuf;
use crate::protocol::request::encode_command;
use crate::proxy::ProxyRef;
use crate::slot::SLOT_COUNT;
use merge::NodeInfo;

/// Every section, in Redis's order, then the proxy's own.
const SECTIONS: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "modules",
    "commandstats",
    "errorstats",
    "latencystats",
    "cluster",
    "keyspace",
    "backends",
    "proxy",
];

/// The sections `INFO` without arguments (or `INFO default`) gives.
const DEFAULT: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "modules",
    "errorstats",
    "cluster",
    "keyspace",
    "backends",
    "proxy",
];

/// The sections made from the masters' `INFO`.
const FROM_MASTERS: &[&str] = &[
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "modules",
    "commandstats",
    "latencystats",
    "keyspace",
];

/// `# Stats` fields that are the proxy's: what its clients did, not what the nodes did.
const PROXY_STATS: &[&str] = &[
    "total_connections_received",
    "total_commands_processed",
    "rejected_connections",
    "total_net_input_bytes",
    "total_net_output_bytes",
    "total_error_replies",
    "acl_access_denied_auth",
    "acl_access_denied_cmd",
    "acl_access_denied_key",
    "acl_access_denied_channel",
    "tracking_total_keys",
    "tracking_total_items",
    "tracking_total_prefixes",
];

/// An `INFO` that needs the masters' figures.
#[derive(Debug, Clone)]
pub struct InfoRequest {
    /// The sections asked for, in Redis's order.
    sections: Vec<&'static str>,
}

/// `INFO [section ...]`: the reply at once when only the proxy's sections are asked, else the
/// request for the masters' `INFO`.
pub(super) fn answer(
    proxy: ProxyRef<'_>,
    args: &[Bytes],
    protocol: Protocol,
) -> Result<Bytes, InfoRequest> {
    let sections = wanted(args);
    if sections.iter().any(|s| FROM_MASTERS.contains(s)) {
        return Err(InfoRequest { sections });
    }
    let text = render(proxy, &sections, &[], None);
    let mut out = ReplyBuf::new(protocol);
    out.verbatim(text.as_bytes());
    Ok(out.finish())
}

/// The version the backends report, which clients read to pick features; before any node has
/// answered, the oldest version whose commands the proxy handles.
pub(super) fn redis_version(cluster: &Backend) -> String {
    cluster
        .redis_version()
        .map_or_else(|| "7.0.0".to_string(), |v| v.to_string())
}

/// The sections `args` ask for, each once, in Redis's order; unknown names ask for nothing.
fn wanted(args: &[Bytes]) -> Vec<&'static str> {
    let asked: Vec<String> = args
        .iter()
        .skip(1)
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .collect();
    SECTIONS
        .iter()
        .copied()
        .filter(|section| {
            (asked.is_empty() && DEFAULT.contains(section))
                || asked.iter().any(|a| match a.as_str() {
                    "all" | "everything" => true,
                    "default" => DEFAULT.contains(section),
                    a => a == *section,
                })
        })
        .collect()
}

/// Asks every master for the sections it has figures for, and answers.
pub(super) async fn run(proxy: ProxyRef<'_>, request: InfoRequest, protocol: Protocol) -> Bytes {
    let mut command: Vec<&str> = vec!["INFO"];
    command.extend(
        request
            .sections
            .iter()
            .copied()
            .filter(|s| FROM_MASTERS.contains(s)),
    );
    let mut payload = BytesMut::new();
    encode_command(&mut payload, &command);
    let payload = payload.freeze();
    // Every backend whose masters are known; one still unknown counts as none answering.
    let masters: Vec<_> = proxy
        .backends()
        .iter()
        .flat_map(|cluster| broadcast::nodes_of(cluster, Reach::EveryMaster).unwrap_or_default())
        .collect();
    // RESP2 whatever the client speaks: the text comes back as one bulk string.
    let answers = broadcast::ask(&masters, &payload, Protocol::Resp2).await;
    let infos: Vec<NodeInfo> = answers
        .iter()
        .filter_map(|(_, answer)| answer.as_ref().ok())
        .filter(|reply| reply.error_text().is_none())
        .map(|reply| NodeInfo::parse(&bulk_text(&reply.bytes)))
        .collect();
    let answered = (infos.len(), masters.len());
    let text = render(proxy, &request.sections, &infos, Some(answered));
    let mut out = ReplyBuf::new(protocol);
    out.verbatim(text.as_bytes());
    out.finish()
}

/// The text of a bulk string reply.
fn bulk_text(reply: &[u8]) -> String {
    let body = reply
        .iter()
        .position(|&b| b == b'\n')
        .and_then(|at| reply.get(at + 1..reply.len().saturating_sub(2)))
        .unwrap_or_default();
    String::from_utf8_lossy(body).into_owned()
}

/// The `INFO` text of `sections`, from the proxy and from `masters`' answers; `answered` is
/// (masters that answered, masters asked) when they were asked. When some did not answer,
/// `# Proxy` is shown to say so.
fn render(
    proxy: ProxyRef<'_>,
    sections: &[&str],
    masters: &[NodeInfo],
    answered: Option<(usize, usize)>,
) -> String {
    let partial = answered.is_some_and(|(got, asked)| got < asked);
    let mut text = String::new();
    for &section in SECTIONS {
        let shown = sections.contains(&section) || (section == "proxy" && partial);
        if !shown {
            continue;
        }
        let mut lines: Vec<(String, String)> = match section {
            "server" => server(proxy),
            "clients" => clients(proxy),
            "cluster" => vec![("cluster_enabled".into(), "1".into())],
            "proxy" => proxy_section(proxy, answered),
            "backends" => backends_section(proxy),
            "cpu" => cpu(masters),
            // The errors this proxy's clients got, not the nodes' (see `crate::errorstats`).
            "errorstats" => proxy.stats.errors.lines(),
            "stats" => {
                let stats = &proxy.stats;
                let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed).to_string();
                let mut own: Vec<(String, String)> = [
                    ("total_connections_received", &stats.total_connections),
                    ("total_commands_processed", &stats.total_commands),
                    ("rejected_connections", &stats.rejected_connections),
                    ("total_net_input_bytes", &stats.net_input_bytes),
                    ("total_net_output_bytes", &stats.net_output_bytes),
                    ("acl_access_denied_auth", &stats.auth_failures),
                    ("acl_access_denied_cmd", &stats.denied_commands),
                    ("acl_access_denied_key", &stats.denied_keys),
                    ("acl_access_denied_channel", &stats.denied_channels),
                ]
                .into_iter()
                .map(|(field, counter)| (field.to_string(), load(counter)))
                .collect();
                // After the net bytes, where Redis shows it.
                let at = own.len().min(5);
                own.insert(
                    at,
                    (
                        "total_error_replies".to_string(),
                        stats.errors.total().to_string(),
                    ),
                );
                // The proxy's own table of client-side caching, not the nodes' (where the
                // proxy's watchers hold one prefix each).
                let (items, prefixes) = proxy.tracking.items_and_prefixes();
                for (field, value) in [
                    ("tracking_total_keys", proxy.tracking.keys()),
                    ("tracking_total_items", items),
                    ("tracking_total_prefixes", prefixes),
                ] {
                    own.push((field.to_string(), value.to_string()));
                }
                own.extend(merge::section("stats", masters, PROXY_STATS));
                own
            }
            other => merge::section(other, masters, &[]),
        };
        if !text.is_empty() {
            text.push_str("\r\n");
        }
        let _ = write!(text, "# {}\r\n", title(section));
        for (field, value) in lines.drain(..) {
            let _ = write!(text, "{field}:{value}\r\n");
        }
    }
    text
}

/// A section's header as Redis writes it.
fn title(section: &str) -> &'static str {
    match section {
        "server" => "Server",
        "clients" => "Clients",
        "memory" => "Memory",
        "persistence" => "Persistence",
        "stats" => "Stats",
        "replication" => "Replication",
        "cpu" => "CPU",
        "modules" => "Modules",
        "commandstats" => "Commandstats",
        "errorstats" => "Errorstats",
        "latencystats" => "Latencystats",
        "cluster" => "Cluster",
        "keyspace" => "Keyspace",
        "backends" => "Backends",
        _ => "Proxy",
    }
}

fn server(proxy: ProxyRef<'_>) -> Vec<(String, String)> {
    let uptime = proxy.started.elapsed().as_secs();
    let version = proxy
        .default_backend()
        .map_or_else(|| "7.0.0".to_string(), |c| redis_version(c));
    let now_usec = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    [
        ("redis_version", version),
        ("redis_mode", "cluster".into()),
        ("respgate_version", env!("CARGO_PKG_VERSION").into()),
        ("os", std::env::consts::OS.into()),
        ("arch_bits", usize::BITS.to_string()),
        ("process_id", std::process::id().to_string()),
        ("tcp_port", proxy.listen_addr.port().to_string()),
        ("server_time_usec", now_usec.to_string()),
        ("uptime_in_seconds", uptime.to_string()),
        ("uptime_in_days", (uptime / 86_400).to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// `# Clients`: the proxy's clients, never the nodes' (the proxy is their only client).
fn clients(proxy: ProxyRef<'_>) -> Vec<(String, String)> {
    let stats = &proxy.stats;
    let server = &proxy.config().server;
    vec![
        (
            "connected_clients".into(),
            stats.connected_clients.load(Ordering::Relaxed).to_string(),
        ),
        ("maxclients".into(), server.max_clients.to_string()),
        // Clients waiting in a blocking command, once their node shows them blocked.
        (
            "blocked_clients".into(),
            proxy.clients.blocked().to_string(),
        ),
        (
            "tracking_clients".into(),
            proxy.tracking.clients().to_string(),
        ),
        (
            "pubsub_clients".into(),
            proxy.clients.subscribers().to_string(),
        ),
        (
            "client_output_bytes".into(),
            proxy.clients.owed_bytes().to_string(),
        ),
        (
            "clients_closed_by_output_limit".into(),
            stats
                .closed_by_output_limit
                .load(Ordering::Relaxed)
                .to_string(),
        ),
        (
            "clients_closed_by_idle_timeout".into(),
            stats
                .closed_by_idle_timeout
                .load(Ordering::Relaxed)
                .to_string(),
        ),
        (
            "clients_closed_by_protocol_error".into(),
            stats.protocol_errors.load(Ordering::Relaxed).to_string(),
        ),
        ("client_output_buffer_limit".into(), output_limits(server)),
    ]
}

/// `# CPU`: the proxy's own process, as Redis reports its own (the main thread's lines are the
/// worker thread serving this client); the masters' together beside it.
fn cpu(masters: &[NodeInfo]) -> Vec<(String, String)> {
    let own = process_cpu("/proc/self/stat");
    let thread = process_cpu("/proc/thread-self/stat");
    let mut lines: Vec<(String, String)> = [
        ("used_cpu_sys", own.sys),
        ("used_cpu_user", own.user),
        ("used_cpu_sys_children", own.children_sys),
        ("used_cpu_user_children", own.children_user),
        ("used_cpu_sys_main_thread", thread.sys),
        ("used_cpu_user_main_thread", thread.user),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), format!("{v:.6}")))
    .collect();
    for (field, value) in merge::section("cpu", masters, &[]) {
        if field == "used_cpu_sys" || field == "used_cpu_user" {
            lines.push((format!("masters_{field}"), value));
        }
    }
    lines
}

/// CPU seconds from a `/proc/.../stat` file; zeros where there is none (not Linux).
#[derive(Debug, Default)]
struct CpuTimes {
    user: f64,
    sys: f64,
    children_user: f64,
    children_sys: f64,
}

fn process_cpu(path: &str) -> CpuTimes {
    // The kernel reports these in USER_HZ ticks, 100 a second on every Linux ABI.
    const TICKS: f64 = 100.0;
    let Ok(stat) = std::fs::read_to_string(path) else {
        return CpuTimes::default();
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<f64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    let at = |i: usize| fields.get(i).copied().unwrap_or(0.0) / TICKS;
    CpuTimes {
        user: at(11),
        sys: at(12),
        children_user: at(13),
        children_sys: at(14),
    }
}

fn proxy_section(proxy: ProxyRef<'_>, answered: Option<(usize, usize)>) -> Vec<(String, String)> {
    let reloads = &proxy.reloads;
    let readiness = crate::health::readiness(&proxy);
    let mut lines = vec![
        ("proxy".to_string(), "respgate".to_string()),
        (
            "ready".to_string(),
            u8::from(readiness.is_ready()).to_string(),
        ),
        (
            "shutting_down".to_string(),
            u8::from(readiness == crate::health::Readiness::ShuttingDown).to_string(),
        ),
        ("slowlog_len".to_string(), proxy.slowlog.len().to_string()),
        ("config_generation".into(), proxy.generation().to_string()),
        (
            "config_last_reload_unix".into(),
            reloads.last_unix.load(Ordering::Relaxed).to_string(),
        ),
        (
            "config_last_reload_status".into(),
            reloads.last_status().to_string(),
        ),
        (
            "config_reloads_ok".into(),
            reloads.succeeded.load(Ordering::Relaxed).to_string(),
        ),
        (
            "config_reloads_failed".into(),
            reloads.failed.load(Ordering::Relaxed).to_string(),
        ),
        ("clusters".to_string(), proxy.backends().len().to_string()),
    ];
    if let Some((got, asked)) = answered {
        lines.push(("masters_answered".into(), format!("{got}/{asked}")));
    }
    for c in proxy.backends() {
        lines.push((format!("cluster_{}", c.name()), backend_line(c)));
    }
    lines
}

fn backend_line(c: &Backend) -> String {
    let map = c.slot_map();
    let s = &c.stats;
    format!(
        "state={},masters={},nodes={},slots_served={},refreshes={},moved={},ask={},retries={},backend_errors={}",
        if map.slots_served() == usize::from(SLOT_COUNT) {
            "ok"
        } else {
            "fail"
        },
        map.masters().len(),
        map.nodes().len(),
        map.slots_served(),
        s.refreshes.load(Ordering::Relaxed),
        s.moved.load(Ordering::Relaxed),
        s.ask.load(Ordering::Relaxed),
        s.retries.load(Ordering::Relaxed),
        s.backend_errors.load(Ordering::Relaxed),
    )
}

/// `# NodePools`: per backend, its state and counters (as `# Proxy`'s `cluster_` lines, plus
/// refresh failures, the age of the last refresh and the connections clients hold), then one
/// line per node with its role and connection state.
fn backends_section(proxy: ProxyRef<'_>) -> Vec<(String, String)> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut lines = Vec::new();
    for c in proxy.backends() {
        let s = &c.stats;
        let last = s.last_refresh_unix_ms.load(Ordering::Relaxed);
        let age = if last == 0 {
            "-1".to_string()
        } else {
            now_ms.saturating_sub(last).to_string()
        };
        lines.push((
            format!("backend_{}", c.name()),
            format!(
                "kind={},{},refresh_failures={},last_refresh_ms_ago={age},own_connections={}",
                format!("{:?}", c.kind()).to_ascii_lowercase(),
                backend_line(c),
                s.refresh_failures.load(Ordering::Relaxed),
                s.own_connections.load(Ordering::Relaxed),
            ),
        ));
        let map = c.slot_map();
        let ranges = map.ranges();
        // Numbered, as Redis numbers `slave0`, `slave1`: an address holds a `:` itself.
        let mut n = 0;
        let mut field = || {
            n += 1;
            format!("node_{}_{}", c.name(), n - 1)
        };
        for (index, master) in map.masters().iter().enumerate() {
            let slots: usize = ranges
                .iter()
                .filter(|(_, _, owner)| *owner == index)
                .map(|(first, last, _)| usize::from(last - first) + 1)
                .sum();
            lines.push((
                field(),
                format!(
                    "addr={},role=master,slots={slots},connected={},connections_up={}",
                    master.addr(),
                    u8::from(master.is_healthy()),
                    master.connections_up()
                ),
            ));
            for replica in map.replicas_of(index) {
                lines.push((
                    field(),
                    format!(
                        "addr={},role=replica,master={},connected={},connections_up={}",
                        replica.addr(),
                        master.addr(),
                        u8::from(replica.is_healthy()),
                        replica.connections_up()
                    ),
                ));
            }
        }
    }
    lines
}

/// The output limits as Redis's `CONFIG GET client-output-buffer-limit` shows them.
fn output_limits(server: &crate::config::ServerConfig) -> String {
    let class = |name: &str, l: &crate::config::OutputLimit| {
        format!(
            "{name} {} {} {}",
            l.hard_limit_bytes, l.soft_limit_bytes, l.soft_limit_s
        )
    };
    format!(
        "{} {}",
        class("normal", &server.client_output_limit_normal),
        class("pubsub", &server.client_output_limit_pubsub)
    )
}

#[cfg(test)]
mod tests;
