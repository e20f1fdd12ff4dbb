//! Proves the integration-test harness itself: clusters start and agree, slots migrate with their
//! keys, and a killed master is replaced by its replica.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::RedisCluster;

#[test]
fn cluster_of_three_masters_and_three_replicas_starts_and_agrees() {
    let cluster = RedisCluster::start(3, 1);

    assert_eq!(cluster.seeds().len(), 6);
    assert_eq!(cluster.master_ports().len(), 3);
    assert_eq!(cluster.replica_ports().len(), 3);
    let any = cluster.ports()[0];
    assert_eq!(cluster.cli(any, &["cluster", "keyslot", "foo"]), "12182");
    let owner = cluster.slot_owner(12182);
    assert!(cluster.master_ports().contains(&owner));
    assert_eq!(cluster.cli(owner, &["set", "foo", "bar"]), "OK");
    assert_eq!(cluster.cli(owner, &["get", "foo"]), "bar");
}

#[test]
fn manual_slot_migration_moves_keys() {
    let cluster = RedisCluster::start(3, 0);
    let slot: u16 = cluster
        .cli(cluster.ports()[0], &["cluster", "keyslot", "{user1000}"])
        .parse()
        .unwrap();
    let from = cluster.slot_owner(slot);
    let keys: Vec<String> = (0..20).map(|i| format!("{{user1000}}:{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(cluster.cli(from, &["set", key, &i.to_string()]), "OK");
    }
    let to = cluster
        .master_ports()
        .into_iter()
        .find(|&port| port != from)
        .unwrap();

    cluster.migrate_slot(slot, from, to);

    assert_eq!(cluster.slot_owner(slot), to);
    assert_eq!(
        cluster.cli(to, &["cluster", "countkeysinslot", &slot.to_string()]),
        "20"
    );
    assert_eq!(
        cluster.cli(from, &["cluster", "countkeysinslot", &slot.to_string()]),
        "0"
    );
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(cluster.cli(to, &["get", key]), i.to_string());
    }
    let redirect = cluster.try_cli(from, &["get", &keys[0]]).unwrap_err();
    assert_eq!(redirect, format!("MOVED {slot} 127.0.0.1:{to}"));
    cluster.wait_for_ok();
}

#[test]
fn killed_master_is_replaced_by_its_replica() {
    let mut cluster = RedisCluster::start(3, 1);
    let owner = cluster.slot_owner(12182);

    cluster.kill(owner);
    cluster.wait_for_ok();

    let new_owner = cluster.slot_owner(12182);
    assert_ne!(new_owner, owner);
    assert_eq!(cluster.master_ports().len(), 3);
    assert!(!cluster.ports().contains(&owner));
}
