//! `INFO`'s error counters through the proxy count the error replies its clients got, as one
//! Redis counts its own clients' (`total_error_replies`, `errorstat_<PREFIX>:count=N` by the
//! error's first word), not the nodes' counts, and `CONFIG RESETSTAT` starts them again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::RedisCluster;
use common::proxy::{Proxy, Raw, cluster_backend, config_with};
use common::sentinel::StandaloneServer;
use respgate::slot::Slot;

/// The `errorstat_*` lines of `INFO errorstats` and `total_error_replies` of `INFO stats`.
fn error_counters(raw: &mut Raw) -> Vec<String> {
    let errorstats = raw.info("errorstats");
    let stats = raw.info("stats");
    errorstats
        .lines()
        .filter(|l| l.starts_with("errorstat_"))
        .chain(
            stats
                .lines()
                .filter(|l| l.starts_with("total_error_replies:")),
        )
        .map(str::to_string)
        .collect()
}

/// Commands that fail in several ways, on `raw`; their replies.
fn failing_commands(raw: &mut Raw) -> Vec<String> {
    [
        &["SET", "s", "v"][..],
        &["INCR", "s"],
        &["LPUSH", "s", "x"],
        &["LPUSH", "s", "y"],
        &["NOSUCHCOMMAND", "a"],
        &["GET"],
        &["AUTH", "nosuchuser", "pass"],
        &["GET", "s"],
    ]
    .iter()
    .map(|args| String::from_utf8_lossy(&raw.command(args)).into_owned())
    .collect()
}

#[test]
fn error_counters_are_the_proxys_clients_errors_as_one_redis_counts_them() {
    let redis = StandaloneServer::start();
    let mut direct = Raw::connect(redis.port);
    let replies = failing_commands(&mut direct);
    let expected = error_counters(&mut direct);
    assert_eq!(
        expected,
        [
            "errorstat_ERR:count=3",
            "errorstat_WRONGPASS:count=1",
            "errorstat_WRONGTYPE:count=2",
            "total_error_replies:6",
        ]
    );
    assert_eq!(direct.command(&["CONFIG", "RESETSTAT"]), b"+OK\r\n");
    let after_reset = error_counters(&mut direct);
    assert_eq!(after_reset, ["total_error_replies:0"]);

    let cluster = RedisCluster::start(3, 0);
    let mut config = config_with(vec![("main", cluster_backend(&cluster.seeds()))]);
    config.server.allow_admin_commands = true;
    let proxy = Proxy::start_with(config);
    proxy.wait_until_serving();
    // Errors other clients of the nodes got are not the proxy's clients'.
    let node = cluster.slot_owner(Slot::for_key(b"elsewhere").get());
    cluster.cli(node, &["SET", "elsewhere", "v"]);
    assert!(cluster.try_cli(node, &["INCR", "elsewhere"]).is_err());
    assert!(cluster.try_cli(node, &["NOSUCHCOMMAND"]).is_err());
    let mut raw = proxy.raw();
    assert_eq!(error_counters(&mut raw), after_reset, "nothing yet");
    assert_eq!(failing_commands(&mut raw), replies);
    assert_eq!(error_counters(&mut raw), expected);
    assert_eq!(raw.command(&["CONFIG", "RESETSTAT"]), b"+OK\r\n");
    assert_eq!(error_counters(&mut raw), after_reset);
}
