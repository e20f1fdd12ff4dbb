//! What cluster-aware clients are told to dial: the announced address, never the listen
//! address behind a load balancer, with one node id for every proxy announcing it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::RedisCluster;
use common::proxy::{Proxy, config_for};

fn text(reply: Vec<u8>) -> String {
    String::from_utf8_lossy(&reply).into_owned()
}

#[test]
fn cluster_replies_announce_the_configured_address_and_a_node_id_derived_from_it() {
    let cluster = RedisCluster::start(3, 0);
    let mut config = config_for(&cluster.seeds());
    config.server.announce_address = "redis.example.com:7777".into();
    let first = Proxy::start_with(config.clone());
    first.wait_until_serving();
    let second = Proxy::start_with(config);
    second.wait_until_serving();

    let mut client = first.raw();
    let id = text(client.command(&["CLUSTER", "MYID"]));
    assert_eq!(
        text(second.raw().command(&["CLUSTER", "MYID"])),
        id,
        "two proxies announcing one address are one node"
    );
    let id = id.split("\r\n").nth(1).unwrap().to_string();
    assert_eq!(id.len(), 40);

    let slots = text(client.command(&["CLUSTER", "SLOTS"]));
    assert!(
        slots.starts_with(&format!(
            "*1\r\n*3\r\n:0\r\n:16383\r\n*4\r\n$17\r\nredis.example.com\r\n:7777\r\n$40\r\n{id}\r\n"
        )),
        "{slots}"
    );
    assert!(slots.contains("$2\r\nip\r\n$9\r\n127.0.0.1\r\n"), "{slots}");
    assert!(
        !slots.contains(&first.port.to_string()),
        "never the listen port: {slots}"
    );

    let nodes = text(client.command(&["CLUSTER", "NODES"]));
    assert!(
        nodes.contains(&format!(
            "{id} 127.0.0.1:7777@0,redis.example.com myself,master - 0 0 1 connected 0-16383"
        )),
        "{nodes}"
    );
    let shards = text(client.command(&["CLUSTER", "SHARDS"]));
    assert!(
        shards.contains("$8\r\nendpoint\r\n$17\r\nredis.example.com\r\n")
            && shards.contains("$8\r\nhostname\r\n$17\r\nredis.example.com\r\n")
            && shards.contains("$4\r\nport\r\n:7777\r\n"),
        "{shards}"
    );
}

#[test]
fn without_an_announced_address_the_listen_address_is_announced() {
    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds());
    let slots = text(proxy.raw().command(&["CLUSTER", "SLOTS"]));
    assert!(
        slots.contains(&format!("$9\r\n127.0.0.1\r\n:{}\r\n", proxy.port)),
        "{slots}"
    );
}
