//! The recorder, the handles resolved once per backend and per node, and the text `/metrics`
//! serves: what is kept as plain atomics (because `INFO` shows it too) is copied into the
//! recorder at each scrape, and the latency histograms are appended to the exporter's text.

use std::sync::OnceLock;
use std::sync::atomic::Ordering::Relaxed;

use metrics::Counter;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing::warn;

use super::histogram::escape;
use super::{Family, LatencyHistogram};
use crate::metrics as m;
use crate::proxy::Proxy;

/// The Prometheus recorder, installed as the process's metrics recorder on first use. Called
/// before any backend or command table is made, so every handle they resolve records.
pub fn install() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            warn!("a metrics recorder was already installed; /metrics shows only respgate's own");
        }
        for &(name, kind, _, help) in m::ALL {
            match kind {
                "counter" => metrics::describe_counter!(name, help),
                "gauge" => metrics::describe_gauge!(name, help),
                _ => {}
            }
        }
        handle
    })
}

/// One backend's handles: latency per command family, redirects, retries, refreshes.
#[derive(Debug)]
pub struct BackendInstruments {
    latency: [LatencyHistogram; Family::ALL.len()],
    /// `MOVED` followed.
    pub moved: Counter,
    /// `ASK` followed.
    pub ask: Counter,
    /// Retries.
    pub retries: Counter,
    /// Refreshes that succeeded.
    pub refreshed: Counter,
    /// Refreshes that failed.
    pub refresh_failed: Counter,
    /// Refreshes that found a new topology.
    pub changed: Counter,
}

impl BackendInstruments {
    /// The handles of backend `name`, registered now so that they are listed at zero.
    pub fn new(name: &str) -> Self {
        let backend = name.to_string();
        BackendInstruments {
            latency: Default::default(),
            moved: metrics::counter!(m::REDIRECTS, "backend" => backend.clone(), "kind" => "moved"),
            ask: metrics::counter!(m::REDIRECTS, "backend" => backend.clone(), "kind" => "ask"),
            retries: metrics::counter!(m::RETRIES, "backend" => backend.clone()),
            refreshed: metrics::counter!(m::TOPOLOGY_REFRESHES, "backend" => backend.clone(), "outcome" => "ok"),
            refresh_failed: metrics::counter!(m::TOPOLOGY_REFRESHES, "backend" => backend.clone(), "outcome" => "failed"),
            changed: metrics::counter!(m::TOPOLOGY_CHANGES, "backend" => backend),
        }
    }

    /// The latency histogram of `family`.
    #[inline]
    pub fn latency(&self, family: Family) -> Option<&LatencyHistogram> {
        self.latency.get(family.index())
    }
}

/// Copies what is counted as plain atomics into the recorder, and renders everything.
pub fn render(proxy: &Proxy) -> String {
    publish(proxy);
    let mut text = install().render();
    let mut histograms = String::new();
    for cluster in proxy.snapshot().backends() {
        let backend = escape(cluster.name());
        for family in Family::ALL {
            if let Some(h) = cluster.instruments.latency(family)
                && h.count() > 0
            {
                let labels = format!("family=\"{}\",backend=\"{backend}\"", family.label());
                h.render(&mut histograms, m::COMMAND_DURATION, &labels);
            }
        }
    }
    if !histograms.is_empty() {
        let help = m::ALL
            .iter()
            .find(|(name, ..)| *name == m::COMMAND_DURATION)
            .map_or("", |(.., help)| *help);
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!(
            "# HELP {0} {help}\n# TYPE {0} histogram\n",
            m::COMMAND_DURATION
        ));
        text.push_str(&histograms);
    }
    text
}

fn publish(proxy: &Proxy) {
    let stats = &proxy.stats;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed);
    metrics::gauge!(m::CLIENTS_CONNECTED).set(load(&stats.connected_clients) as f64);
    metrics::counter!(m::CLIENT_CONNECTIONS).absolute(load(&stats.total_connections));
    metrics::counter!(m::CLIENT_CONNECTIONS_REJECTED).absolute(load(&stats.rejected_connections));
    metrics::counter!(m::CLIENTS_CLOSED_BY_LIMIT, "limit" => "output_buffer")
        .absolute(load(&stats.closed_by_output_limit));
    metrics::counter!(m::CLIENTS_CLOSED_BY_LIMIT, "limit" => "idle_timeout")
        .absolute(load(&stats.closed_by_idle_timeout));
    metrics::counter!(m::PROTOCOL_ERRORS).absolute(load(&stats.protocol_errors));
    metrics::counter!(m::CLIENT_BYTES, "direction" => "in").absolute(load(&stats.net_input_bytes));
    metrics::counter!(m::CLIENT_BYTES, "direction" => "out")
        .absolute(load(&stats.net_output_bytes));
    m::publish_command_counters();
    metrics::gauge!(m::SUBSCRIBERS).set(proxy.clients.subscribers() as f64);
    metrics::gauge!(m::CLIENT_OUTPUT_BYTES).set(proxy.clients.owed_bytes() as f64);
    let tracking = &proxy.tracking;
    metrics::gauge!(m::TRACKING_CLIENTS).set(tracking.clients() as f64);
    metrics::gauge!(m::TRACKING_KEYS).set(tracking.keys() as f64);
    for (kind, counter) in [
        ("key", &tracking.stats.invalidations),
        ("flush", &tracking.stats.flushes),
        ("evicted", &tracking.stats.evictions),
    ] {
        metrics::counter!(m::TRACKING_INVALIDATIONS, "kind" => kind).absolute(load(counter));
    }
    let ready = crate::health::readiness(proxy).is_ready();
    metrics::gauge!(m::READY).set(if ready { 1.0 } else { 0.0 });
    let reloads = &proxy.reloads;
    metrics::gauge!(m::CONFIG_GENERATION).set(proxy.generation() as f64);
    metrics::gauge!(m::CONFIG_LAST_RELOAD).set(load(&reloads.last_unix) as f64);
    metrics::gauge!(m::CONFIG_LAST_RELOAD_OK).set(if reloads.last_status() == "failed" {
        0.0
    } else {
        1.0
    });
    // Both outcomes are listed from the start, so that a rate over them is defined.
    for outcome in ["ok", "failed"] {
        metrics::counter!(m::CONFIG_RELOADS, "outcome" => outcome).increment(0);
    }
    for result in ["ok", "refused"] {
        metrics::counter!(m::TLS_RELOADS, "result" => result).increment(0);
    }
    metrics::counter!(m::AUTH_FAILURES).increment(0);
    for kind in ["command", "key", "channel", "backend"] {
        metrics::counter!(m::ACL_DENIED, "kind" => kind).increment(0);
    }
    for cluster in proxy.snapshot().backends() {
        let map = cluster.slot_map();
        let name = cluster.name().to_string();
        metrics::gauge!(m::SLOTS_SERVED, "backend" => name.clone()).set(map.slots_served() as f64);
        metrics::gauge!(m::MASTERS, "backend" => name.clone()).set(map.masters().len() as f64);
        metrics::gauge!(m::OWN_CONNECTIONS, "backend" => name.clone())
            .set(cluster.stats.own_connections.load(Relaxed) as f64);
        let last = cluster.stats.last_refresh_unix_ms.load(Relaxed);
        metrics::gauge!(m::TOPOLOGY_LAST_REFRESH, "backend" => name).set(last as f64 / 1000.0);
    }
}

/// One node's handles: requests, failures, timeouts.
#[derive(Debug, Clone)]
pub struct NodeInstruments {
    /// Requests sent.
    pub requests: Counter,
    /// Requests that failed without a reply, timeouts aside.
    pub errors: Counter,
    /// Requests not answered in time.
    pub timeouts: Counter,
}

impl NodeInstruments {
    /// The handles of node `node` of backend `backend`.
    pub fn new(backend: &str, node: &str) -> Self {
        let (b, n) = (backend.to_string(), node.to_string());
        NodeInstruments {
            requests: metrics::counter!(m::BACKEND_REQUESTS, "backend" => b.clone(), "node" => n.clone()),
            errors: metrics::counter!(m::BACKEND_ERRORS, "backend" => b.clone(), "node" => n.clone()),
            timeouts: metrics::counter!(m::BACKEND_TIMEOUTS, "backend" => b, "node" => n),
        }
    }
}
