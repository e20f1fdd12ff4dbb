//! The connection handshakes of client libraries that cannot run here (Lettuce and Jedis need a
//! JVM), reproduced command by command as they send them, with what they parse checked.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::RedisCluster;
use common::proxy::{Proxy, config_for};

fn text(reply: Vec<u8>) -> String {
    String::from_utf8_lossy(&reply).into_owned()
}

/// A proxy in front of a fresh cluster, with a password and an announced address.
fn proxy(cluster: &RedisCluster) -> Proxy {
    let mut config = config_for(&cluster.seeds());
    config.server.password = "s3cret".into();
    config.server.announce_address = "proxy.example:6380".into();
    let proxy = Proxy::start_with(config);
    // wait_until_serving sends no AUTH: wait on CLUSTER INFO with a client that logs in.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let mut raw = proxy.raw();
        raw.command(&["AUTH", "s3cret"]);
        if text(raw.command(&["CLUSTER", "INFO"])).contains("cluster_state:ok")
            && raw.command(&["GET", "probe"]) == b"$-1\r\n"
        {
            return proxy;
        }
        assert!(std::time::Instant::now() < deadline, "proxy never served");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn lettuces_handshake_and_topology_discovery_work() {
    let cluster = RedisCluster::start(3, 0);
    let proxy = proxy(&cluster);
    let mut client = proxy.raw();
    // Lettuce 6: HELLO with credentials and the client name in one command.
    let hello = text(client.command(&[
        "HELLO",
        "3",
        "AUTH",
        "default",
        "s3cret",
        "SETNAME",
        "lettuce-app",
    ]));
    assert!(hello.starts_with('%'), "a RESP3 map: {hello}");
    assert!(hello.contains("$5\r\nproto\r\n:3\r\n"), "{hello}");
    assert_eq!(
        text(client.command(&["CLIENT", "SETINFO", "lib-name", "Lettuce"])),
        "+OK\r\n"
    );
    assert_eq!(
        text(client.command(&["CLIENT", "SETINFO", "lib-ver", "6.5.0.RELEASE"])),
        "+OK\r\n"
    );
    assert_eq!(
        text(client.command(&["CLIENT", "GETNAME"])),
        "$11\r\nlettuce-app\r\n"
    );
    // Lettuce's topology refresh parses CLUSTER NODES line by line: id, ip:port@cport[,host],
    // flags, master, ping, pong, epoch, link state, slots.
    let nodes = text(client.command(&["CLUSTER", "NODES"]));
    let body = nodes.split("\r\n").nth(1).expect("a verbatim or bulk body");
    let body = body.strip_prefix("txt:").unwrap_or(body);
    let fields: Vec<&str> = body.split_whitespace().collect();
    assert_eq!(fields.len(), 9, "{body}");
    assert_eq!(fields[0].len(), 40, "node id");
    assert!(
        fields[1].ends_with("@0,proxy.example") && fields[1].contains(":6380"),
        "{}",
        fields[1]
    );
    assert_eq!(fields[2], "myself,master");
    assert_eq!(fields[3], "-");
    assert_eq!(fields[7], "connected");
    assert_eq!(fields[8], "0-16383");
    // Lettuce reads command metadata for its command routing.
    let docs = text(client.command(&["COMMAND", "DOCS", "get"]));
    assert!(docs.starts_with('%') && docs.contains("summary"), "{docs}");
    assert_eq!(text(client.command(&["SET", "k", "v"])), "+OK\r\n");
}

#[test]
fn jedis_handshake_and_slot_discovery_work() {
    let cluster = RedisCluster::start(3, 0);
    let proxy = proxy(&cluster);
    let mut client = proxy.raw();
    // Jedis 5 over RESP2: AUTH, then CLIENT SETINFO, then CLUSTER SLOTS for JedisCluster.
    assert_eq!(
        text(client.command(&["AUTH", "default", "s3cret"])),
        "+OK\r\n"
    );
    assert_eq!(
        text(client.command(&["CLIENT", "SETINFO", "LIB-NAME", "jedis"])),
        "+OK\r\n"
    );
    assert_eq!(
        text(client.command(&["CLIENT", "SETINFO", "LIB-VER", "5.2.0"])),
        "+OK\r\n"
    );
    let slots = text(client.command(&["CLUSTER", "SLOTS"]));
    assert!(
        slots.starts_with("*1\r\n*3\r\n:0\r\n:16383\r\n*4\r\n$13\r\nproxy.example\r\n:6380\r\n"),
        "{slots}"
    );
    let list = text(client.command(&["CLIENT", "LIST"]));
    assert!(list.contains("lib-name=jedis lib-ver=5.2.0"), "{list}");
    // A wrong password is refused as Redis refuses it.
    let mut other = proxy.raw();
    assert_eq!(
        text(other.command(&["AUTH", "default", "nope"])),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert_eq!(
        text(other.command(&["GET", "k"])),
        "-NOAUTH Authentication required.\r\n"
    );
}
