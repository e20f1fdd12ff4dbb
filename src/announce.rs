//! The address the proxy announces to cluster-aware clients (`CLUSTER SLOTS/SHARDS/NODES/MYID`):
//! the one they can dial, never a pod IP or a wildcard, and a node id derived from it, so that
//! every replica behind one Service (announcing one address) looks like one node, across
//! restarts too.

use std::net::{IpAddr, SocketAddr};

/// The announced endpoint for one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announced {
    /// The host clients dial: an IP, or a hostname (`server.announce_address`).
    pub host: String,
    /// An IP for the fields that must hold one: the host when it is an IP, else the address the
    /// client connected to.
    pub ip: IpAddr,
    /// The port clients dial.
    pub port: u16,
    /// The hostname, when the announced host is one (Redis 7's `hostname` fields).
    pub hostname: Option<String>,
    /// A 40-hex-digit node id derived from `host:port`.
    pub node_id: String,
}

impl Announced {
    /// What to announce to a client that connected to `local`: `configured` (`HOST:PORT`) when
    /// set, else the listen address when it is not a wildcard, else `local`.
    pub fn for_client(configured: &str, listen: SocketAddr, local: SocketAddr) -> Announced {
        let (host, port) = match configured.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() => match port.parse() {
                Ok(port) => (host.trim_matches(['[', ']']).to_string(), port),
                Err(_) => (local.ip().to_string(), local.port()),
            },
            _ if !listen.ip().is_unspecified() => (listen.ip().to_string(), listen.port()),
            _ => (local.ip().to_string(), local.port()),
        };
        let parsed: Option<IpAddr> = host.parse().ok();
        Announced {
            ip: parsed.unwrap_or(local.ip()),
            hostname: parsed.is_none().then(|| host.clone()),
            node_id: node_id(&host, port),
            host,
            port,
        }
    }
}

/// A 40-hex-digit node id, the same for the same announced `host:port` in every process.
pub fn node_id(host: &str, port: u16) -> String {
    let seed = format!("respgate:{host}:{port}");
    let mut id = String::with_capacity(40);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    while id.len() < 40 {
        for b in seed.bytes().chain(id.len().to_le_bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        id.push_str(&format!("{h:016x}"));
    }
    id.truncate(40);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    #[test]
    fn a_wildcard_listen_address_announces_the_address_the_client_reached() {
        let got = Announced::for_client("", addr("0.0.0.0:6380"), addr("10.1.2.3:6380"));
        assert_eq!((got.host.as_str(), got.port), ("10.1.2.3", 6380));
        assert_eq!(got.hostname, None);
        let fixed = Announced::for_client("", addr("127.0.0.1:6380"), addr("127.0.0.1:6380"));
        assert_eq!(fixed.host, "127.0.0.1");
    }

    #[test]
    fn a_configured_hostname_is_announced_with_the_clients_ip_beside_it() {
        let got = Announced::for_client(
            "redis.example.com:7777",
            addr("0.0.0.0:6380"),
            addr("10.1.2.3:6380"),
        );
        assert_eq!(got.host, "redis.example.com");
        assert_eq!(got.port, 7777);
        assert_eq!(got.hostname.as_deref(), Some("redis.example.com"));
        assert_eq!(got.ip, addr("10.1.2.3:1").ip());
    }

    #[test]
    fn the_node_id_depends_on_the_announced_address_only() {
        let a = Announced::for_client("lb:6379", addr("0.0.0.0:1"), addr("10.0.0.1:1"));
        let b = Announced::for_client("lb:6379", addr("0.0.0.0:2"), addr("10.0.0.2:2"));
        assert_eq!(a.node_id, b.node_id, "two replicas behind one Service");
        assert_eq!(a.node_id.len(), 40);
        let c = Announced::for_client("lb:6380", addr("0.0.0.0:1"), addr("10.0.0.1:1"));
        assert_ne!(a.node_id, c.node_id);
    }
}
