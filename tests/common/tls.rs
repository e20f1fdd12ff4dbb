//! TLS for tests: certificates made by the test ([`TestCa`], with rcgen), the files a TLS Redis
//! node is started with ([`NodeTls`]), and a TLS RESP client ([`TlsClient`], with rustls).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use respgate::protocol::Protocol;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A certificate authority made for one test, whose files live in `dir`.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
    name: String,
}

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

impl TestCa {
    /// A new CA called `name`; its certificate is written to `dir/NAME-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("respgate test CA {name}"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        let ca = TestCa {
            issuer,
            dir: dir.to_path_buf(),
            name: name.into(),
        };
        std::fs::write(ca.ca_file(), ca.issuer.pem()).expect("write CA file");
        ca
    }

    /// The CA's certificate file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    /// Issues a certificate for `names` (DNS names, or IPs as `127.0.0.1`), good for servers
    /// and clients, written to `dir/STEM.pem` and `dir/STEM-key.pem`.
    pub fn issue(&self, stem: &str, names: &[&str]) -> CertFiles {
        let files = CertFiles {
            cert: self.dir.join(format!("{stem}.pem")),
            key: self.dir.join(format!("{stem}-key.pem")),
        };
        self.issue_to(&files, names);
        files
    }

    /// Issues a fresh certificate and key for `names` over `files`: a rotation. Each file is
    /// written aside and renamed into place, as deployment tools replace files.
    pub fn issue_to(&self, files: &CertFiles, names: &[&str]) {
        let names: Vec<String> = names.iter().map(ToString::to_string).collect();
        let mut params = CertificateParams::new(names).expect("certificate params");
        params
            .distinguished_name
            .push(DnType::CommonName, "respgate test");
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        replace(&files.key, key.serialize_pem().as_bytes());
        replace(&files.cert, cert.pem().as_bytes());
    }
}

/// Writes `bytes` beside `path` and renames the copy over it.
pub fn replace(path: &Path, bytes: &[u8]) {
    let aside = path.with_extension("tmp");
    std::fs::write(&aside, bytes).expect("write file");
    std::fs::rename(&aside, path).expect("rename file");
}

/// How a TLS node is started: its certificate and the CA that clients' certificates (and the
/// other nodes') chain to.
#[derive(Debug, Clone)]
pub struct NodeTls {
    /// The CA file (`--tls-ca-cert-file`).
    pub ca_file: PathBuf,
    /// The node's certificate and key, shared by every node.
    pub node: CertFiles,
    /// `--tls-auth-clients`: `yes`, `optional` or `no`.
    pub auth_clients: &'static str,
}

impl NodeTls {
    /// The `redis-server` arguments, beside a TLS port chosen by the harness.
    pub fn server_args(&self) -> Vec<String> {
        let path = |p: &PathBuf| p.to_string_lossy().into_owned();
        [
            "--tls-cert-file",
            &path(&self.node.cert),
            "--tls-key-file",
            &path(&self.node.key),
            "--tls-ca-cert-file",
            &path(&self.ca_file),
            "--tls-cluster",
            "yes",
            "--tls-replication",
            "yes",
            "--tls-auth-clients",
            self.auth_clients,
        ]
        .map(String::from)
        .to_vec()
    }

    /// The `redis-cli` arguments to reach a TLS port.
    pub fn cli_args(&self) -> Vec<String> {
        let path = |p: &PathBuf| p.to_string_lossy().into_owned();
        [
            "--tls",
            "--cacert",
            &path(&self.ca_file),
            "--cert",
            &path(&self.node.cert),
            "--key",
            &path(&self.node.key),
        ]
        .map(String::from)
        .to_vec()
    }
}

/// A rustls client configuration trusting `ca_file`, presenting `client` when given.
pub fn client_config(ca_file: &Path, client: Option<&CertFiles>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).expect("CA file") {
        roots.add(cert.expect("CA certificate")).expect("add CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some(files) => {
            let certs = CertificateDer::pem_file_iter(&files.cert)
                .expect("client certificate")
                .collect::<Result<Vec<_>, _>>()
                .expect("client certificate");
            let key = PrivateKeyDer::from_pem_file(&files.key).expect("client key");
            builder
                .with_client_auth_cert(certs, key)
                .expect("client certificate and key")
        }
    };
    Arc::new(config)
}

/// A TLS RESP client: sends commands, reads whole replies as the bytes received.
pub struct TlsClient {
    stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    buf: BytesMut,
}

impl TlsClient {
    /// Connects to `127.0.0.1:port` and completes the handshake, checking the server's
    /// certificate for `127.0.0.1`; the error says why it failed.
    pub fn connect(port: u16, config: &Arc<rustls::ClientConfig>) -> std::io::Result<TlsClient> {
        let tcp = TcpStream::connect(("127.0.0.1", port))?;
        tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
        let name = ServerName::try_from("127.0.0.1").expect("server name");
        let conn = rustls::ClientConnection::new(Arc::clone(config), name)
            .map_err(std::io::Error::other)?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(TlsClient {
            stream,
            buf: BytesMut::new(),
        })
    }

    /// The certificate the server presented.
    pub fn server_certificate(&self) -> Vec<u8> {
        let certs = self.stream.conn.peer_certificates().expect("a certificate");
        certs.first().expect("a certificate").to_vec()
    }

    /// Sends a command and reads its reply; an error when the connection fails.
    pub fn try_command(&mut self, args: &[&str]) -> std::io::Result<Vec<u8>> {
        let mut out = BytesMut::new();
        respgate::protocol::request::encode_command(&mut out, args);
        self.stream.write_all(&out)?;
        self.stream.flush()?;
        self.reply()
    }

    /// Sends a command and returns its reply bytes.
    pub fn command(&mut self, args: &[&str]) -> Vec<u8> {
        self.try_command(args)
            .unwrap_or_else(|e| panic!("{args:?} over TLS: {e}"))
    }

    /// Writes bytes as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
        self.stream.flush().expect("flush");
    }

    /// Sends `requests` in one write and reads `count` replies.
    pub fn pipeline(&mut self, requests: &[u8], count: usize) -> Vec<Vec<u8>> {
        self.stream.write_all(requests).expect("write");
        self.stream.flush().expect("flush");
        (0..count).map(|_| self.reply().expect("a reply")).collect()
    }

    /// Reads one complete reply.
    pub fn reply(&mut self) -> std::io::Result<Vec<u8>> {
        self.reply_pausing(Duration::ZERO)
    }

    /// Reads one complete reply, pausing `pause` after each read: a slow reader, which keeps
    /// the server's socket full.
    pub fn reply_pausing(&mut self, pause: Duration) -> std::io::Result<Vec<u8>> {
        loop {
            let framed = match respgate::protocol::frame_reply(&self.buf, Protocol::Resp2) {
                Err(_) => respgate::protocol::frame_reply(&self.buf, Protocol::Resp3),
                resp2 => resp2,
            };
            if let Some(frame) = framed.expect("valid RESP from the proxy") {
                return Ok(self.buf.split_to(frame.len).to_vec());
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
            std::thread::sleep(pause);
        }
    }
}
