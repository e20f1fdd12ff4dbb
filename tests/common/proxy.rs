//! Starting respgate in-process for a test, and a raw RESP client for byte-exact checks.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use respgate::config::{BackendConfig, BackendKind, Config, DEFAULT_CLUSTER};
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
pub fn cluster_backend(seeds: &[String]) -> BackendConfig {
    BackendConfig {
        seeds: seeds.to_vec(),
        request_timeout_ms: 2000,
        refresh_interval_ms: 1000,
        ..BackendConfig::default()
    }
}

/// A standalone server on `address` as a backend, requests failing within 2 s.
pub fn standalone_backend(address: String) -> BackendConfig {
    BackendConfig {
        kind: BackendKind::Standalone,
        address,
        request_timeout_ms: 2000,
        ..BackendConfig::default()
    }
}

/// A config with `backends` (name, backend) behind a proxy listening anywhere, the first the
/// default for keys no route matches.
pub fn config_with(backends: Vec<(&str, BackendConfig)>) -> Config {
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
    /// topology. It stops without the drain delay (`shutdown_delay_ms` is 0 until a reload
    /// says otherwise): the delay's tests run the binary.
    pub fn start_with(config: Config) -> Proxy {
        Proxy::launch(config, respgate::reload::Options::default())
    }

    /// Starts a proxy configured by the file at `path` (its listen address is ignored), which
    /// reloads from that file, without waiting for the topology.
    pub fn start_from_file(path: &std::path::Path) -> Proxy {
        let source = respgate::reload::ConfigSource {
            file: Some(path.to_path_buf()),
            overrides: respgate::config::Overrides::default(),
        };
        let config = source
            .load()
            .unwrap_or_else(|e| panic!("invalid test config: {e}"));
        let options = respgate::reload::Options {
            source: Some(source),
            ..respgate::reload::Options::default()
        };
        Proxy::launch(config, options)
    }

    fn launch(mut config: Config, options: respgate::reload::Options) -> Proxy {
        config.server.shutdown_delay_ms = 0;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        Proxy::start_on(listener, None, config, options)
    }

    /// Like [`Proxy::start_with`], with a TLS listener on a free port beside the plain one
    /// (`config.server.tls` gives its certificate; its `listen` address is ignored).
    pub fn start_with_tls(config: Config) -> Proxy {
        let bind = || std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let options = respgate::reload::Options::default();
        Proxy::start_on(bind(), Some(bind()), config, options)
    }

    /// Starts a proxy in front of `seeds` that announces the address clients reach it at,
    /// `127.0.0.1:PORT`, as `server.announce_address` (as one behind a load balancer announces
    /// the balancer's), and waits until it serves every slot.
    pub fn start_announcing_itself(seeds: &[String]) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let mut config = config_for(seeds);
        config.server.announce_address = listener.local_addr().expect("local addr").to_string();
        let proxy = Proxy::start_on(listener, None, config, respgate::reload::Options::default());
        proxy.wait_until_serving();
        proxy
    }

    /// Runs a proxy with `config` on `listener` (and `tls_listener` for TLS), reloading as
    /// `options` allow.
    fn start_on(
        listener: std::net::TcpListener,
        tls_listener: Option<std::net::TcpListener>,
        config: Config,
        options: respgate::reload::Options,
    ) -> Proxy {
        let port = listener.local_addr().expect("local addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let tls_port = tls_listener.as_ref().map_or(0, |l| {
            l.set_nonblocking(true).expect("nonblocking");
            l.local_addr().expect("local addr").port()
        });
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
                respgate::serve(listeners, config, options, async {
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

    /// Connects to `127.0.0.1:port`, or says why not.
    pub fn try_connect(port: u16) -> std::io::Result<Raw> {
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

    /// Whether no complete reply arrives within `wait` (a reply held back, as by `CLIENT
    /// PAUSE`). Bytes that do arrive are kept for the next [`Raw::reply`].
    pub fn quiet_for(&mut self, wait: Duration) -> bool {
        let complete = |buf: &BytesMut| {
            matches!(
                respgate::protocol::frame_reply(buf, Protocol::Resp2),
                Ok(Some(_))
            ) || matches!(
                respgate::protocol::frame_reply(buf, Protocol::Resp3),
                Ok(Some(_))
            )
        };
        let deadline = Instant::now() + wait;
        while !complete(&self.buf) {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            if left.is_zero() {
                break;
            }
            self.stream.set_read_timeout(Some(left)).expect("timeout");
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => break,
            }
        }
        self.stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        !complete(&self.buf)
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

/// Sends `method path` to the admin endpoint on `port`; the status code and the body. An
/// admin endpoint not listening yet answers status 0.
pub fn admin_request(port: u16, method: &str, path: &str) -> (u16, String) {
    admin_request_with(port, method, path, &[])
}

/// Like [`admin_request`], with extra header lines (`"Authorization: Bearer t"`).
pub fn admin_request_with(port: u16, method: &str, path: &str, headers: &[&str]) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n");
    for header in headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    write!(stream, "{head}\r\n").expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}
