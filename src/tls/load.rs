//! PEM files into rustls configurations, with ring as the crypto provider: it builds with a C
//! compiler alone (aws-lc-rs, rustls's default, needs cmake and clang wherever respgate is
//! built). Every error names the configuration key and the file.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

use crate::config::{BackendConfig, ServerTlsConfig};

/// A TLS file could not be used.
#[derive(Debug, Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("{key}: cannot read {}: {source}", path.display())]
    Read {
        /// The configuration key naming the file.
        key: String,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no usable PEM item of the kind wanted.
    #[error("{key}: {} holds no valid {what}: {reason}", path.display())]
    Pem {
        /// The configuration key naming the file.
        key: String,
        /// The file.
        path: PathBuf,
        /// A certificate, a private key, ...
        what: &'static str,
        /// What the parser said.
        reason: String,
    },
    /// rustls refused the material (a key that does not match its certificate, a CA that is
    /// not a valid certificate, ...).
    #[error("{key}: {reason}")]
    Rejected {
        /// The configuration key of the file at fault.
        key: String,
        /// What rustls said.
        reason: String,
    },
}

/// The crypto provider of every configuration.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(key: &str, path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key: key.into(),
        path: path.into(),
        source,
    })
}

/// Every certificate in the PEM file `path` (at least one).
fn certificates(key: &str, path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(key, path)?;
    let invalid = |reason: String| TlsError::Pem {
        key: key.into(),
        path: path.into(),
        what: "certificate",
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(e.to_string()))?;
    if certs.is_empty() {
        return Err(invalid("no CERTIFICATE section".into()));
    }
    Ok(certs)
}

/// The private key in the PEM file `path`.
fn private_key(key: &str, path: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(key, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        key: key.into(),
        path: path.into(),
        what: "private key",
        reason: e.to_string(),
    })
}

/// The CAs in the PEM file `path`.
fn roots(key: &str, path: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(key, path)? {
        roots.add(cert).map_err(|e| TlsError::Rejected {
            key: key.into(),
            reason: format!("{path}: not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

/// The TLS listener's configuration: its certificate and key, and client certificates
/// required and verified when `client_ca_file` is set.
pub fn server_config(t: &ServerTlsConfig) -> Result<ServerConfig, TlsError> {
    let certs = certificates("server.tls.cert_file", &t.cert_file)?;
    let key = private_key("server.tls.key_file", &t.key_file)?;
    let rejected = |key: &str, e: rustls::Error| TlsError::Rejected {
        key: key.into(),
        reason: e.to_string(),
    };
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| rejected("server.tls", e))?;
    let builder = if t.client_ca_file.is_empty() {
        builder.with_no_client_auth()
    } else {
        let key = "server.tls.client_ca_file";
        let roots = roots(key, &t.client_ca_file)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| TlsError::Rejected {
                key: key.into(),
                reason: e.to_string(),
            })?;
        builder.with_client_cert_verifier(verifier)
    };
    builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Rejected {
            key: "server.tls.cert_file".into(),
            reason: format!(
                "{} and {} are no certificate and matching key: {e}",
                t.cert_file, t.key_file
            ),
        })
}

/// A TLS backend's configuration: the CAs its nodes' certificates chain to, and the client
/// certificate to present when one is configured. `section` is `backends.NAME`.
pub fn client_config(section: &str, c: &BackendConfig) -> Result<ClientConfig, TlsError> {
    let key = |field: &str| format!("{section}.{field}");
    let roots = roots(&key("tls_ca_file"), &c.tls_ca_file)?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rejected {
            key: section.into(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots);
    if c.tls_cert_file.is_empty() {
        return Ok(builder.with_no_client_auth());
    }
    let certs = certificates(&key("tls_cert_file"), &c.tls_cert_file)?;
    let private = private_key(&key("tls_key_file"), &c.tls_key_file)?;
    builder
        .with_client_auth_cert(certs, private)
        .map_err(|e| TlsError::Rejected {
            key: key("tls_cert_file"),
            reason: format!(
                "{} and {} are no certificate and matching key: {e}",
                c.tls_cert_file, c.tls_key_file
            ),
        })
}
