//! TLS settings: the client-facing TLS listener (`[server.tls]`) and the checks of every TLS
//! key, the backends' (`tls`, `tls_ca_file`, ... in `[backends.NAME]`) included.

use std::net::SocketAddr;

use rustls_pki_types::ServerName;
use serde::{Deserialize, Serialize};

use super::{BackendConfig, Problem};

/// The TLS listener for clients.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// Address of the TLS listener; empty means none. It serves beside `server.listen` (which
    /// may then be empty, for TLS only).
    pub listen: String,
    /// PEM file with the proxy's certificate, followed by any intermediate certificates.
    pub cert_file: String,
    /// PEM file with the private key of `cert_file` (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// PEM file with the CAs that sign client certificates; when set, every TLS client must
    /// present a certificate one of them signed. Empty means clients present none.
    pub client_ca_file: String,
    /// Time allowed for a client's TLS handshake, in milliseconds.
    pub handshake_timeout_ms: u64,
    /// `HOST:PORT` announced to cluster-aware clients on the TLS listener (as
    /// `server.announce_address` for the plain one). Empty means the TLS listen address, or the
    /// address the client connected to when listening on a wildcard.
    pub announce_address: String,
}

impl Default for ServerTlsConfig {
    fn default() -> Self {
        ServerTlsConfig {
            listen: String::new(),
            cert_file: String::new(),
            key_file: String::new(),
            client_ca_file: String::new(),
            handshake_timeout_ms: 10_000,
            announce_address: String::new(),
        }
    }
}

impl ServerTlsConfig {
    /// Whether a TLS listener is configured.
    pub fn enabled(&self) -> bool {
        !self.listen.is_empty()
    }
}

/// Reports the problems of `[server.tls]`.
pub(super) fn validate_server_tls(t: &ServerTlsConfig, problems: &mut Vec<Problem>) {
    let mut problem = |key: &str, message: String| {
        problems.push(Problem {
            key: format!("server.tls.{key}"),
            message,
        })
    };
    if t.enabled() {
        if t.listen.parse::<SocketAddr>().is_err() {
            problem(
                "listen",
                format!("{:?} is not an IP:port address", t.listen),
            );
        }
        for (key, value) in [("cert_file", &t.cert_file), ("key_file", &t.key_file)] {
            if value.is_empty() {
                problem(key, "a TLS listener needs a certificate and its key".into());
            }
        }
        if t.handshake_timeout_ms == 0 {
            problem("handshake_timeout_ms", "must be greater than 0".into());
        }
    } else {
        for (key, set) in [
            ("cert_file", !t.cert_file.is_empty()),
            ("key_file", !t.key_file.is_empty()),
            ("client_ca_file", !t.client_ca_file.is_empty()),
            ("announce_address", !t.announce_address.is_empty()),
        ] {
            if set {
                problem(
                    key,
                    "has no effect without a TLS listener (server.tls.listen)".into(),
                );
            }
        }
    }
    if !t.announce_address.is_empty() && !super::is_announce_address(&t.announce_address) {
        problem(
            "announce_address",
            format!("{:?} is not HOST:PORT", t.announce_address),
        );
    }
}

/// Reports the problems of one backend's TLS keys; `key` spells a field's full key.
pub(super) fn validate_backend_tls(
    key: &dyn Fn(&str) -> String,
    c: &BackendConfig,
    problems: &mut Vec<Problem>,
) {
    let mut problem = |field: &str, message: String| {
        problems.push(Problem {
            key: key(field),
            message,
        })
    };
    let fields = [
        ("tls_ca_file", &c.tls_ca_file),
        ("tls_cert_file", &c.tls_cert_file),
        ("tls_key_file", &c.tls_key_file),
        ("tls_server_name", &c.tls_server_name),
    ];
    if !c.tls {
        for (field, value) in fields {
            if !value.is_empty() {
                problem(field, "has no effect without tls = true".into());
            }
        }
        return;
    }
    if c.tls_ca_file.is_empty() {
        problem(
            "tls_ca_file",
            "tls = true needs the CA file that signs the nodes' certificates (the system's \
             bundle, /etc/ssl/certs/ca-certificates.crt, for publicly signed ones)"
                .into(),
        );
    }
    if c.tls_cert_file.is_empty() != c.tls_key_file.is_empty() {
        let missing = if c.tls_cert_file.is_empty() {
            "tls_cert_file"
        } else {
            "tls_key_file"
        };
        problem(
            missing,
            "a client certificate needs both tls_cert_file and tls_key_file".into(),
        );
    }
    if !c.tls_server_name.is_empty() && ServerName::try_from(c.tls_server_name.as_str()).is_err() {
        problem(
            "tls_server_name",
            format!("{:?} is not a DNS name or an IP address", c.tls_server_name),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn keys(config: &Config) -> Vec<String> {
        config.validate().into_iter().map(|p| p.key).collect()
    }

    fn with_backend(backend: BackendConfig) -> Config {
        let mut config = Config::default();
        config.backends.insert(
            "main".into(),
            BackendConfig {
                seeds: vec!["127.0.0.1:7000".into()],
                ..backend
            },
        );
        config
    }

    #[test]
    fn a_tls_listener_needs_a_certificate_and_key() {
        let mut config = with_backend(BackendConfig::default());
        config.server.tls.listen = "127.0.0.1:6390".into();
        assert_eq!(
            keys(&config),
            ["server.tls.cert_file", "server.tls.key_file"]
        );
        config.server.tls.cert_file = "c.pem".into();
        config.server.tls.key_file = "k.pem".into();
        assert_eq!(keys(&config), Vec::<String>::new());
    }

    #[test]
    fn tls_files_without_a_listener_are_reported() {
        let mut config = with_backend(BackendConfig::default());
        config.server.tls.cert_file = "c.pem".into();
        config.server.tls.client_ca_file = "ca.pem".into();
        assert_eq!(
            keys(&config),
            ["server.tls.cert_file", "server.tls.client_ca_file"]
        );
    }

    #[test]
    fn the_plain_listener_may_be_off_when_tls_is_on() {
        let mut config = with_backend(BackendConfig::default());
        config.server.listen = String::new();
        assert_eq!(keys(&config), ["server.listen"]);
        config.server.tls.listen = "127.0.0.1:6390".into();
        config.server.tls.cert_file = "c.pem".into();
        config.server.tls.key_file = "k.pem".into();
        assert_eq!(keys(&config), Vec::<String>::new());
    }

    #[test]
    fn backend_tls_keys_are_checked_together() {
        let config = with_backend(BackendConfig {
            tls_ca_file: "ca.pem".into(),
            ..BackendConfig::default()
        });
        assert_eq!(keys(&config), ["backends.main.tls_ca_file"]);
        let config = with_backend(BackendConfig {
            tls: true,
            tls_cert_file: "c.pem".into(),
            tls_server_name: "not a name".into(),
            ..BackendConfig::default()
        });
        assert_eq!(
            keys(&config),
            [
                "backends.main.tls_ca_file",
                "backends.main.tls_key_file",
                "backends.main.tls_server_name"
            ]
        );
        let config = with_backend(BackendConfig {
            tls: true,
            tls_ca_file: "ca.pem".into(),
            tls_server_name: "redis.internal".into(),
            ..BackendConfig::default()
        });
        assert_eq!(keys(&config), Vec::<String>::new());
    }
}
