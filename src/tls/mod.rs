//! TLS material for both sides of the proxy: the certificate clients see on the TLS listener
//! (with the CAs their own certificates must chain to), and each TLS backend's trusted CAs and
//! client certificate. Read from PEM files into rustls configurations (`load`) and rebuilt
//! when the files change ([`Reloading`]): new handshakes use the new configuration, open
//! connections keep theirs, and a file that does not load is refused with a warning while the
//! previous configuration stays in force.
//!
//! The streams themselves live where they are used: the client side in
//! [`crate::session::ClientStream`], the backend side in [`crate::backend::TlsConnector`], which
//! a backend with `tls = true` gets from [`connector`] when it is made, whenever that is.

mod load;
mod reload;

use std::sync::Arc;

use crate::backend::{Connector, TcpConnector, TlsConnector};
use crate::config::{BackendConfig, Config};

pub use load::{TlsError, client_config, server_config};
pub use reload::{LOOK_INTERVAL, Reloading};

/// The TLS listener's configuration, when `server.tls.listen` is set; an error names the key
/// and file that did not load.
pub fn listener(config: &Config) -> Result<Option<Arc<Reloading<rustls::ServerConfig>>>, TlsError> {
    let tls = &config.server.tls;
    if !tls.enabled() {
        return Ok(None);
    }
    let server = tls.clone();
    let files = [&tls.cert_file, &tls.key_file, &tls.client_ca_file];
    let reloading = Reloading::load("server.tls", &files, move || server_config(&server))?;
    Ok(Some(Arc::new(reloading)))
}

/// Loads every TLS backend's files once: at start, a file that does not load stops the proxy
/// with its key and file named, rather than failing each connection to the backend's nodes.
pub fn check_backends(config: &Config) -> Result<(), TlsError> {
    for (name, backend) in config.backend_list() {
        if backend.tls {
            let section = if config.clusters.contains_key(&name) {
                "clusters"
            } else {
                "backends"
            };
            client_config(&format!("{section}.{name}"), &backend)?;
        }
    }
    Ok(())
}

/// How the proxy reaches the nodes of backend `name`: TLS when it says `tls = true`.
pub fn connector(name: &str, backend: &BackendConfig) -> Arc<dyn Connector> {
    if backend.tls {
        Arc::new(TlsConnector::new(&format!("backends.{name}"), backend))
    } else {
        Arc::new(TcpConnector)
    }
}
