//! TLS material for both sides of the proxy: the certificate clients see on the TLS listener
//! (with the CAs their own certificates must chain to), and each TLS backend's trusted CAs and
//! client certificate. Read from PEM files into rustls configurations ([`load`]) and rebuilt
//! when the files change ([`Reloading`]): new handshakes use the new configuration, open
//! connections keep theirs, and a file that does not load is refused with a warning while the
//! previous configuration stays in force.
//!
//! The streams themselves live where they are used: the client side in
//! [`crate::session::ClientStream`], the backend side in [`crate::backend::TlsConnector`].

mod load;
mod reload;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::backend::{Connector, TcpConnector, TlsConnector};
use crate::config::{ClusterConfig, Config};
use crate::metrics as m;

pub use load::{TlsError, client_config, server_config};
pub use reload::{Reload, Reloading};

/// Every TLS configuration the proxy uses, each rebuilt when its files change.
#[derive(Default)]
pub struct TlsConfigs {
    /// The TLS listener's, when one is configured.
    pub listener: Option<Arc<Reloading<rustls::ServerConfig>>>,
    /// Each TLS backend's, by name.
    backends: Vec<(String, Arc<Reloading<rustls::ClientConfig>>)>,
}

impl TlsConfigs {
    /// Loads every configured certificate, key and CA file; an error names the key and file
    /// that failed, and the proxy does not start.
    pub fn load(config: &Config) -> Result<TlsConfigs, TlsError> {
        let mut configs = TlsConfigs::default();
        let tls = &config.server.tls;
        if tls.enabled() {
            let server = config.server.clone();
            let files = [&tls.cert_file, &tls.key_file, &tls.client_ca_file];
            let reloading =
                Reloading::load("server.tls", &files, move || server_config(&server.tls))?;
            configs.listener = Some(Arc::new(reloading));
        }
        for (name, backend) in config.backend_list() {
            if !backend.tls {
                continue;
            }
            let section = if config.clusters.contains_key(&name) {
                "clusters"
            } else {
                "backends"
            };
            let what = format!("{section}.{name}");
            let files = [
                &backend.tls_ca_file,
                &backend.tls_cert_file,
                &backend.tls_key_file,
            ];
            let (key, c) = (what.clone(), backend.clone());
            let reloading = Reloading::load(&what, &files, move || client_config(&key, &c))?;
            configs.backends.push((name, Arc::new(reloading)));
        }
        Ok(configs)
    }

    /// How the proxy reaches the nodes of backend `name`: TLS when it is configured so.
    pub fn connector(&self, name: &str, backend: &ClusterConfig) -> Arc<dyn Connector> {
        match self.backends.iter().find(|(n, _)| n == name) {
            Some((_, config)) => Arc::new(TlsConnector::new(
                Arc::clone(config),
                &backend.tls_server_name,
            )),
            None => Arc::new(TcpConnector),
        }
    }

    /// Whether any file is watched.
    pub fn is_empty(&self) -> bool {
        self.listener.is_none() && self.backends.is_empty()
    }

    /// Everything to check for changes.
    fn watched(&self) -> Vec<Arc<dyn Reload>> {
        let mut all: Vec<Arc<dyn Reload>> = Vec::new();
        if let Some(listener) = &self.listener {
            all.push(Arc::clone(listener) as Arc<dyn Reload>);
        }
        for (_, backend) in &self.backends {
            all.push(Arc::clone(backend) as Arc<dyn Reload>);
        }
        all
    }

    /// Checks the files every `interval` until `shutdown` turns true, rebuilding what changed.
    /// Polling the files' metadata (a few `stat` calls per interval) rather than subscribing to
    /// file events also sees Kubernetes' secret updates, which swap a symlink to a new directory
    /// and leave the watched path itself untouched.
    pub async fn reload_every(&self, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        let watched = self.watched();
        if watched.is_empty() || interval.is_zero() {
            return;
        }
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = ticks.tick() => {}
            }
            for item in &watched {
                match item.reload_if_changed() {
                    Ok(false) => {}
                    Ok(true) => {
                        info!(
                            config = item.name(),
                            "TLS files changed; new handshakes use them, open connections keep theirs"
                        );
                        metrics::counter!(m::TLS_RELOADS, "result" => "ok").increment(1);
                    }
                    Err(error) => {
                        warn!(
                            config = item.name(),
                            %error,
                            "TLS files changed but do not load; refused, the previous ones stay in force"
                        );
                        metrics::counter!(m::TLS_RELOADS, "result" => "refused").increment(1);
                    }
                }
            }
        }
    }
}
