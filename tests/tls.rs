//! TLS on both sides: clients speaking TLS to the proxy's TLS listener (beside the plain one),
//! the proxy speaking TLS to a Redis Cluster whose nodes have TLS ports, certificates made by
//! the test, and certificates rotated on disk while clients stay connected.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use common::RedisCluster;
use common::proxy::{Proxy, config_for};
use common::tls::{CertFiles, NodeTls, TestCa, TlsClient, client_config, replace};
use respgate::config::{Config, DEFAULT_CLUSTER, ServerTlsConfig};

/// How long a reload may take to show: files are looked at once a second at most, when a
/// handshake needs them.
const RELOAD_WAIT: Duration = Duration::from_secs(15);

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// `[server.tls]` serving `listener`.
fn listener_config(listener: &CertFiles) -> ServerTlsConfig {
    ServerTlsConfig {
        listen: "127.0.0.1:0".into(),
        cert_file: path(&listener.cert),
        key_file: path(&listener.key),
        ..ServerTlsConfig::default()
    }
}

/// A proxy with a TLS listener in front of a backend that is never reached: for tests of the
/// client side alone (the handshake and `PING` need no backend).
fn proxy_without_backend(tls: ServerTlsConfig) -> Proxy {
    let mut config = config_for(&["127.0.0.1:1".to_string()]);
    config.server.tls = tls;
    Proxy::start_with_tls(config)
}

/// `PING` over a fresh TLS connection: `Ok(+PONG)`, or the error of the handshake or the
/// first exchange (with TLS 1.3 a refused client certificate shows only there).
fn ping(port: u16, config: &std::sync::Arc<rustls::ClientConfig>) -> std::io::Result<Vec<u8>> {
    TlsClient::connect(port, config)?.try_command(&["PING"])
}

#[test]
fn a_tls_cluster_is_served_to_tls_and_plain_clients() {
    let dir = tempfile::tempdir().unwrap();
    // The nodes' certificate names no IP, only a DNS name the proxy is told to expect.
    let nodes_ca = TestCa::new(dir.path(), "nodes");
    let node = nodes_ca.issue("node", &["nodes.respgate.test"]);
    let cluster = RedisCluster::start_tls(
        3,
        0,
        NodeTls {
            ca_file: nodes_ca.ca_file(),
            node,
            auth_clients: "yes",
        },
    );
    // The nodes require client certificates: the proxy presents one.
    let proxy_cert = nodes_ca.issue("proxy-client", &["proxy.respgate.test"]);
    let clients_ca = TestCa::new(dir.path(), "clients");
    let listener = clients_ca.issue("listener", &["127.0.0.1"]);

    let mut config = config_for(&cluster.tls_seeds());
    let backend = config.clusters.get_mut(DEFAULT_CLUSTER).unwrap();
    backend.tls = true;
    backend.tls_ca_file = path(&nodes_ca.ca_file());
    backend.tls_cert_file = path(&proxy_cert.cert);
    backend.tls_key_file = path(&proxy_cert.key);
    backend.tls_server_name = "nodes.respgate.test".into();
    config.server.tls = listener_config(&listener);
    assert_eq!(config.validate(), []);
    let proxy = Proxy::start_with_tls(config.clone());
    proxy.wait_until_serving();

    let trusting = client_config(&clients_ca.ca_file(), None);
    let mut tls = TlsClient::connect(proxy.tls_port, &trusting).unwrap();
    let mut plain = proxy.raw();
    for i in 0..30 {
        let (key, value) = (format!("key:{i}"), format!("value {i}"));
        assert_eq!(tls.command(&["SET", &key, &value]), b"+OK\r\n");
        let want = format!("${}\r\n{value}\r\n", value.len()).into_bytes();
        assert_eq!(plain.command(&["GET", &key]), want);
    }
    assert_eq!(
        tls.command(&["MGET", "key:1", "key:2", "nokey"]),
        b"*3\r\n$7\r\nvalue 1\r\n$7\r\nvalue 2\r\n$-1\r\n"
    );
    // Values larger than what rustls buffers, both ways; read slowly, so that the proxy's
    // socket stays full and rustls holds encrypted bytes when the last reply is handed over.
    let big = "v".repeat(4 << 20);
    assert_eq!(tls.command(&["SET", "big", &big]), b"+OK\r\n");
    let mut get = bytes::BytesMut::new();
    respgate::protocol::request::encode_command(&mut get, &["GET", "big"]);
    tls.send(&get);
    let got = tls.reply_pausing(Duration::from_millis(1)).unwrap();
    assert_eq!(got.len(), big.len() + "$4194304\r\n\r\n".len());
    assert!(got.ends_with(format!("{big}\r\n").as_bytes()));
    // A pipeline far larger than one read: rustls holds decrypted requests the socket no
    // longer signals, and the session must still take them.
    let mut pipeline = bytes::BytesMut::new();
    for i in 0..5000 {
        respgate::protocol::request::encode_command(
            &mut pipeline,
            &["GET", &format!("key:{}", i % 30)],
        );
    }
    let replies = tls.pipeline(&pipeline, 5000);
    for (i, reply) in replies.iter().enumerate() {
        let value = format!("value {}", i % 30);
        assert_eq!(reply, format!("${}\r\n{value}\r\n", value.len()).as_bytes());
    }
    // A connection of the client's own (blocking commands), over TLS to the node too.
    assert_eq!(tls.command(&["RPUSH", "queue", "job"]), b":1\r\n");
    assert_eq!(
        tls.command(&["BLPOP", "queue", "1"]),
        b"*2\r\n$5\r\nqueue\r\n$3\r\njob\r\n"
    );
    // Pub/Sub: a TLS subscriber gets what a plain client publishes.
    let mut subscriber = TlsClient::connect(proxy.tls_port, &trusting).unwrap();
    assert_eq!(
        subscriber.command(&["SUBSCRIBE", "news"]),
        b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"
    );
    assert_eq!(plain.command(&["PUBLISH", "news", "hello"]), b":1\r\n");
    assert_eq!(
        subscriber.reply().unwrap(),
        b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n"
    );
    // Cluster-aware clients are told the port of the listener they came through.
    let slots = String::from_utf8_lossy(&tls.command(&["CLUSTER", "SLOTS"])).into_owned();
    assert!(
        slots.contains(&format!(":{}\r\n", proxy.tls_port)),
        "{slots}"
    );
    let slots = String::from_utf8_lossy(&plain.command(&["CLUSTER", "SLOTS"])).into_owned();
    assert!(slots.contains(&format!(":{}\r\n", proxy.port)), "{slots}");

    // Without the server name override the nodes' certificates (for a DNS name, not
    // 127.0.0.1) do not verify: the proxy never reaches them.
    let backend = config.clusters.get_mut(DEFAULT_CLUSTER).unwrap();
    backend.tls_server_name = String::new();
    backend.max_retries = 0;
    let unverified = Proxy::start_with(config);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let reply = unverified.raw().command(&["GET", "key:1"]);
        let reply = String::from_utf8_lossy(&reply).into_owned();
        assert!(reply.starts_with("-CLUSTERDOWN"), "{reply}");
        // Once the first refresh has failed, the error says why.
        if reply.contains("certificate") {
            break;
        }
        assert!(Instant::now() < deadline, "{reply}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_client_trusting_another_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "proxy");
    let other = TestCa::new(dir.path(), "other");
    let proxy = proxy_without_backend(listener_config(&ca.issue("listener", &["127.0.0.1"])));
    let error = ping(proxy.tls_port, &client_config(&other.ca_file(), None)).unwrap_err();
    assert!(
        error.to_string().contains("UnknownIssuer"),
        "handshake error: {error}"
    );
    assert_eq!(
        ping(proxy.tls_port, &client_config(&ca.ca_file(), None)).unwrap(),
        b"+PONG\r\n"
    );
    // A plain-text client on the TLS port gets nothing it could take for a reply.
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", proxy.tls_port)).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    raw.write_all(b"PING\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = raw.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"+PONG"), "{answer:?}");
}

#[test]
fn with_a_client_ca_only_clients_with_a_certificate_it_signed_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "proxy");
    let clients = TestCa::new(dir.path(), "clients");
    let strangers = TestCa::new(dir.path(), "strangers");
    let mut tls = listener_config(&ca.issue("listener", &["127.0.0.1"]));
    tls.client_ca_file = path(&clients.ca_file());
    let proxy = proxy_without_backend(tls);

    let without = client_config(&ca.ca_file(), None);
    let error = ping(proxy.tls_port, &without).unwrap_err();
    assert!(
        error.to_string().contains("CertificateRequired"),
        "no certificate: {error}"
    );
    let stranger = strangers.issue("stranger", &["client.respgate.test"]);
    let error = ping(
        proxy.tls_port,
        &client_config(&ca.ca_file(), Some(&stranger)),
    )
    .unwrap_err();
    assert!(
        error.to_string().contains("UnknownCA") || error.to_string().contains("BadCertificate"),
        "a certificate of another CA: {error}"
    );
    let known = clients.issue("client", &["client.respgate.test"]);
    let with = client_config(&ca.ca_file(), Some(&known));
    assert_eq!(ping(proxy.tls_port, &with).unwrap(), b"+PONG\r\n");
}

/// `respgate_tls_reloads_total{result="..."}` from the admin endpoint on `port` (0 before the
/// first such reload).
fn reloads(admin_port: u16, result: &str) -> u64 {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", admin_port)) else {
        return 0;
    };
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let prefix = format!("respgate_tls_reloads_total{{result=\"{result}\"}} ");
    response
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// Waits until a new connection is served `wanted` (the certificate's DER).
fn wait_for_certificate(port: u16, config: &std::sync::Arc<rustls::ClientConfig>, wanted: &[u8]) {
    let deadline = Instant::now() + RELOAD_WAIT;
    loop {
        let client = TlsClient::connect(port, config).unwrap();
        if client.server_certificate() == wanted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate never served"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Connects new clients until the proxy has refused a changed file (the files are looked at
/// when a handshake needs them); returns a client connected after that.
fn wait_for_refusal(
    port: u16,
    config: &std::sync::Arc<rustls::ClientConfig>,
    admin_port: u16,
) -> TlsClient {
    let before = reloads(admin_port, "refused");
    let deadline = Instant::now() + RELOAD_WAIT;
    loop {
        drop(TlsClient::connect(port, config).unwrap());
        if reloads(admin_port, "refused") > before {
            return TlsClient::connect(port, config).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the changed file was never looked at"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The DER of the first certificate in the PEM file `cert`.
fn der(cert: &Path) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_file(cert).unwrap().to_vec()
}

#[test]
fn a_rotated_certificate_serves_new_clients_while_connected_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "proxy");
    let listener = ca.issue("listener", &["127.0.0.1"]);
    let first = der(&listener.cert);
    let admin_port = common::free_port();
    let mut config: Config = config_for(&["127.0.0.1:1".to_string()]);
    config.server.tls = listener_config(&listener);
    config.server.admin_listen = format!("127.0.0.1:{admin_port}");
    let proxy = Proxy::start_with_tls(config);
    let trusting = client_config(&ca.ca_file(), None);

    let mut connected = TlsClient::connect(proxy.tls_port, &trusting).unwrap();
    assert_eq!(connected.server_certificate(), first);
    assert_eq!(connected.command(&["PING"]), b"+PONG\r\n");

    // A new certificate and key, as a rotation writes them.
    ca.issue_to(&listener, &["127.0.0.1"]);
    let second = der(&listener.cert);
    assert_ne!(first, second);
    wait_for_certificate(proxy.tls_port, &trusting, &second);
    assert_eq!(
        connected.command(&["PING"]),
        b"+PONG\r\n",
        "the connected client stays"
    );
    assert_eq!(connected.server_certificate(), first);

    // A certificate file that does not parse is refused: the rotated one stays in force.
    replace(&listener.cert, b"-----BEGIN CERTIFICATE-----\nnot base64\n");
    let after = wait_for_refusal(proxy.tls_port, &trusting, admin_port);
    assert_eq!(after.server_certificate(), second);
    // So is a key that is not the certificate's.
    let other = ca.issue("other", &["127.0.0.1"]);
    replace(&listener.cert, &std::fs::read(&other.cert).unwrap());
    let mut after = wait_for_refusal(proxy.tls_port, &trusting, admin_port);
    assert_eq!(after.server_certificate(), second);
    assert_eq!(after.command(&["PING"]), b"+PONG\r\n");
    assert_eq!(connected.command(&["PING"]), b"+PONG\r\n");
}
