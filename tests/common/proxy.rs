//! Starting respgate in-process for a test, and a raw RESP client for byte-exact checks.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use respgate::config::{ClusterConfig, Config, DEFAULT_CLUSTER};
use respgate::protocol::Protocol;

/// A respgate instance on a free loopback port, stopped on drop.
pub struct Proxy {
    /// The port clients connect to.
    pub port: u16,
    /// The TLS listener's port ([`Proxy::start_with_tls`]); 0 without one.
    pub tls_port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// A config for a proxy in front of `seeds` with test-friendly timeouts.
pub fn config_for(seeds: &[String]) -> Config {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".into();
    config
        .clusters
        .insert(DEFAULT_CLUSTER.into(), cluster_backend(seeds));
    config
}

/// A Redis Cluster backend on `seeds` with test-friendly timeouts: requests fail within 2 s,
/// the topology is refreshed every second.
pub fn cluster_backend(seeds: &[String]) -> ClusterConfig {
    ClusterConfig {
        seeds: seeds.to_vec(),
        request_timeout_ms: 2000,
        refresh_interval_ms: 1000,
        ..ClusterConfig::default()
    }
}

/// A config with `backends` (name, backend) behind a proxy listening anywhere, the first the
/// default for keys no route matches.
pub fn config_with(backends: Vec<(&str, ClusterConfig)>) -> Config {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".into();
    if let Some((first, _)) = backends.first() {
        config.routing.default = (*first).into();
    }
    for (name, backend) in backends {
        config.backends.insert(name.into(), backend);
    }
    config
}

impl Proxy {
    /// Starts a proxy in front of `seeds` and waits until it serves every slot.
    pub fn start(seeds: &[String]) -> Proxy {
        let proxy = Proxy::start_with(config_for(seeds));
        proxy.wait_until_serving();
        proxy
    }

    /// Starts a proxy with `config` (its listen address is ignored) without waiting for the
    /// topology.
    pub fn start_with(config: Config) -> Proxy {
        Proxy::launch(config, false)
    }

    /// Like [`Proxy::start_with`], with a TLS listener on a free port beside the plain one
    /// (`config.server.tls` gives its certificate; its `listen` address is ignored).
    pub fn start_with_tls(config: Config) -> Proxy {
        Proxy::launch(config, true)
    }

    fn launch(config: Config, tls: bool) -> Proxy {
        let bind = || {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
            listener.set_nonblocking(true).expect("nonblocking");
            listener
        };
        let listener = bind();
        let port = listener.local_addr().expect("local addr").port();
        let tls_listener = tls.then(bind);
        let tls_port = tls_listener
            .as_ref()
            .map_or(0, |l| l.local_addr().expect("local addr").port());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let tls = tls_listener
                    .map(|l| tokio::net::TcpListener::from_std(l).expect("TLS listener"));
                let listeners = respgate::Listeners {
                    plain: Some(listener),
                    tls,
                };
                respgate::serve(listeners, config, async {
                    let _ = stopped.await;
                })
                .await
                .expect("proxy run");
            });
            runtime.shutdown_timeout(Duration::from_secs(1));
        });
        Proxy {
            port,
            tls_port,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// A plain (not cluster-aware) redis-rs connection to the proxy.
    pub fn client(&self) -> redis::Connection {
        let client =
            redis::Client::open(format!("redis://127.0.0.1:{}/", self.port)).expect("client");
        let conn = client.get_connection().expect("connect to proxy");
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        conn
    }

    /// A raw RESP connection to the proxy.
    pub fn raw(&self) -> Raw {
        Raw::connect(self.port)
    }

    /// Waits until `INFO proxy` reports every slot served (at most 30 s).
    pub fn wait_until_serving(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Ok(mut raw) = Raw::try_connect(self.port) {
                last = raw.info("proxy");
                if last.contains("slots_served=16384")
                    && raw.command(&["GET", "probe"]) == b"$-1\r\n"
                {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "proxy on port {} never served every slot; INFO proxy: {last}",
            self.port
        );
    }

    /// A counter from the `cluster_default:` line of `INFO proxy`, such as `moved`.
    pub fn stat(&self, name: &str) -> u64 {
        let info = self.raw().info("proxy");
        let line = info
            .lines()
            .find(|l| l.starts_with("cluster_default:"))
            .unwrap_or_else(|| panic!("no cluster line in {info}"));
        line.trim_start_matches("cluster_default:")
            .split(',')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A raw RESP client: sends bytes, reads whole replies as the bytes received.
pub struct Raw {
    stream: TcpStream,
    buf: BytesMut,
}

impl Raw {
    /// Connects to `127.0.0.1:port`.
    pub fn connect(port: u16) -> Raw {
        Raw::try_connect(port).unwrap_or_else(|e| panic!("connect to {port}: {e}"))
    }

    fn try_connect(port: u16) -> std::io::Result<Raw> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Raw {
            stream,
            buf: BytesMut::new(),
        })
    }

    /// Writes bytes as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Reads one complete reply (RESP2 or RESP3) and returns its bytes.
    pub fn reply(&mut self) -> Vec<u8> {
        loop {
            // RESP2 first: the RESP3 decoder rejects RESP2's `$-1` null.
            let framed = match respgate::protocol::frame_reply(&self.buf, Protocol::Resp2) {
                Err(_) => respgate::protocol::frame_reply(&self.buf, Protocol::Resp3),
                resp2 => resp2,
            };
            if let Some(frame) = framed.expect("valid RESP from the proxy") {
                return self.buf.split_to(frame.len).to_vec();
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = self.stream.read(&mut chunk).expect("read");
            assert!(n > 0, "connection closed while waiting for a reply");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends a command as multibulk and returns its reply bytes.
    pub fn command(&mut self, args: &[&str]) -> Vec<u8> {
        let mut out = BytesMut::new();
        respgate::protocol::request::encode_command(&mut out, args);
        self.send(&out);
        self.reply()
    }

    /// `INFO section` as text.
    pub fn info(&mut self, section: &str) -> String {
        let reply = self.command(&["INFO", section]);
        String::from_utf8_lossy(&reply).into_owned()
    }

    /// Whether the server closed the connection (reads EOF within 5 s, after any pending bytes).
    pub fn is_closed(&mut self) -> bool {
        self.stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut chunk = [0u8; 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}
