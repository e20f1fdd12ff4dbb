//! Administrative commands through the proxy act on the whole cluster, as on one Redis they act
//! on the whole server: `CONFIG SET` on every node, `CONFIG GET` from one master, `CONFIG
//! RESETSTAT` everywhere, `DEBUG` where its subcommand acts (issue 14, item 4).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::RedisCluster;
use common::proxy::{Proxy, Raw, config_for};
use common::sentinel::StandaloneServer;
use respgate::slot::Slot;

/// A 3+3 cluster whose nodes accept `DEBUG`, and a proxy in front of it that lets
/// administrative commands through.
fn admin_cluster() -> (RedisCluster, Proxy) {
    let cluster = RedisCluster::start_with(3, 1, &["--enable-debug-command", "yes"]);
    let mut config = config_for(&cluster.seeds());
    config.server.allow_admin_commands = true;
    let proxy = Proxy::start_with(config);
    proxy.wait_until_serving();
    (cluster, proxy)
}

fn text(reply: &[u8]) -> String {
    String::from_utf8_lossy(reply).into_owned()
}

#[test]
fn config_set_reaches_every_node_so_every_key_follows_the_setting() {
    let (cluster, proxy) = admin_cluster();
    let mut raw = proxy.raw();
    assert_eq!(
        raw.command(&["CONFIG", "SET", "hash-max-listpack-entries", "2"]),
        b"+OK\r\n"
    );
    for port in cluster.ports() {
        assert_eq!(
            cluster.cli(port, &["CONFIG", "GET", "hash-max-listpack-entries"]),
            "hash-max-listpack-entries\n2",
            "node {port}, master or replica, has the setting"
        );
    }
    for key in cluster.key_per_master("key:") {
        raw.command(&["HSET", &key, "a", "1", "b", "2", "c", "3"]);
        assert_eq!(
            raw.command(&["OBJECT", "ENCODING", &key]),
            b"$9\r\nhashtable\r\n",
            "{key}: three fields are past the limit on its master"
        );
    }
    assert_eq!(
        raw.command(&["CONFIG", "GET", "hash-max-listpack-entries"]),
        b"*2\r\n$25\r\nhash-max-listpack-entries\r\n$1\r\n2\r\n"
    );
}

#[test]
fn config_set_refused_by_every_node_is_refused_as_by_redis_and_a_node_that_failed_is_named() {
    let (cluster, proxy) = admin_cluster();
    let mut raw = proxy.raw();
    // Every node refuses it alike: the client hears Redis's own refusal, byte for byte.
    let reply = text(&raw.command(&["CONFIG", "SET", "no-such-setting", "1"]));
    assert_eq!(
        reply,
        "-ERR Unknown option or number of arguments for CONFIG SET - 'no-such-setting'\r\n"
    );

    // One replica that does not answer: every other node takes the setting, the client hears
    // which one did not.
    let replica = cluster.replica_ports()[0];
    let pid = cluster.pid(replica).to_string();
    let signal = |sig: &str| {
        let status = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {sig} {pid}");
    };
    signal("-STOP");
    let reply = text(&raw.command(&["CONFIG", "SET", "maxmemory-samples", "7"]));
    signal("-CONT");
    assert!(
        reply.starts_with("-ERR respgate: backend 127.0.0.1:"),
        "{reply}"
    );
    assert!(
        reply.contains(&format!("failed on 1 of 6 nodes: 127.0.0.1:{replica}")),
        "{reply}"
    );
    for port in cluster.master_ports() {
        assert_eq!(
            cluster.cli(port, &["CONFIG", "GET", "maxmemory-samples"]),
            "maxmemory-samples\n7"
        );
    }
}

#[test]
fn config_resetstat_clears_every_nodes_counters() {
    let (cluster, proxy) = admin_cluster();
    let mut raw = proxy.raw();
    for key in cluster.key_per_master("key:") {
        raw.command(&["GET", &key]);
    }
    let misses = |port: u16| {
        let info = cluster.cli(port, &["INFO", "stats"]);
        info.lines()
            .find_map(|l| l.strip_prefix("keyspace_misses:"))
            .map(|n| n.trim().parse::<u64>().unwrap())
            .unwrap()
    };
    assert!(cluster.master_ports().iter().all(|&p| misses(p) > 0));
    assert_eq!(raw.command(&["CONFIG", "RESETSTAT"]), b"+OK\r\n");
    for port in cluster.ports() {
        assert_eq!(misses(port), 0, "node {port}");
    }
}

#[test]
fn debug_acts_where_its_subcommand_acts() {
    let (cluster, proxy) = admin_cluster();
    let reference = StandaloneServer::start_with(&["--enable-debug-command", "yes"]);
    let mut raw = proxy.raw();
    let mut alone = Raw::connect(reference.port);
    let empty = raw.command(&["DEBUG", "DIGEST"]);
    assert_eq!(empty, alone.command(&["DEBUG", "DIGEST"]), "empty dataset");
    let keys = cluster.key_per_master("key:");
    // One master with keys, then two, then three: the digest is one Redis's at every step.
    for key in &keys {
        for server in [&mut raw, &mut alone] {
            server.command(&["SET", key, "v"]);
            server.command(&["RPUSH", &format!("{{{key}}}:list"), "a", "b"]);
            server.command(&["EXPIRE", key, "1000"]);
        }
        assert_eq!(
            text(&raw.command(&["DEBUG", "DIGEST"])),
            text(&alone.command(&["DEBUG", "DIGEST"])),
            "after writing {key}"
        );
    }
    for key in &keys {
        let object = text(&raw.command(&["DEBUG", "OBJECT", key]));
        assert!(object.starts_with("+Value at:"), "{key}: {object}");
        assert_eq!(
            raw.command(&["DEBUG", "DIGEST-VALUE", key]),
            alone.command(&["DEBUG", "DIGEST-VALUE", key])
        );
    }
    assert_eq!(
        raw.command(&["DEBUG", "SET-ACTIVE-EXPIRE", "1"]),
        b"+OK\r\n"
    );
    let refused = text(&raw.command(&["DEBUG", "SEGFAULT"]));
    assert!(
        refused.starts_with("-ERR respgate: DEBUG SEGFAULT cannot work through a proxy"),
        "{refused}"
    );
    for port in cluster.master_ports() {
        assert_eq!(cluster.cli(port, &["PING"]), "PONG", "node {port} still up");
    }
}

/// A long script holds the shared connection it runs on: a `CONFIG GET` from another client is
/// answered by the node at once (with Redis's `BUSY` while the script runs past
/// `busy-reply-threshold`, as one Redis would), not after the script.
#[test]
fn config_does_not_wait_behind_a_script_on_a_shared_connection() {
    use std::io::{Read, Write};
    let cluster = RedisCluster::start(3, 0);
    let mut config = config_for(&cluster.seeds());
    config.server.allow_admin_commands = true;
    // One worker: every client shares its one connection to each node.
    config.server.threads = 1;
    if let Some(backend) = config.clusters.values_mut().next() {
        backend.request_timeout_ms = 10_000;
    }
    let proxy = Proxy::start_with(config);
    proxy.wait_until_serving();
    let mut admin = proxy.raw();
    assert_eq!(
        admin.command(&["CONFIG", "SET", "busy-reply-threshold", "100"]),
        b"+OK\r\n"
    );
    // CONFIG GET asks the first master in address order: the script runs there.
    let mut masters: Vec<String> = cluster
        .master_ports()
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    masters.sort();
    let first: u16 = masters[0].rsplit(':').next().unwrap().parse().unwrap();
    let key = (0..10_000)
        .map(|i| format!("busy:{i}"))
        .find(|k| cluster.slot_owner(Slot::for_key(k.as_bytes()).get()) == first)
        .unwrap();
    let script = "local s = redis.call('TIME') \
        local start = s[1] * 1000000 + s[2] \
        while true do \
          local n = redis.call('TIME') \
          if n[1] * 1000000 + n[2] - start > 2000000 then break end \
        end \
        return 1";
    let mut scripted = std::net::TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    let mut eval = bytes::BytesMut::new();
    respgate::protocol::request::encode_command(&mut eval, &["EVAL", script, "1", &key]);
    scripted.write_all(&eval).unwrap();
    // Let the script start on the node.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let reply = text(&admin.command(&["CONFIG", "GET", "maxmemory"]));
    scripted.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    let pending =
        matches!(scripted.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    assert!(
        pending,
        "CONFIG GET ({reply}) was answered only after the script"
    );
    assert!(
        reply.starts_with("-BUSY") || reply.starts_with("*2"),
        "{reply}"
    );
    scripted.set_nonblocking(false).unwrap();
    let n = scripted.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b":1\r\n", "the script finishes");
}
