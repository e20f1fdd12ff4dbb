//! Combining the masters' `INFO` as one server's.

use super::merge::{NodeInfo, human_bytes, section};
use super::wanted;
use bytes::Bytes;

fn node(text: &str) -> NodeInfo {
    NodeInfo::parse(&text.replace('\n', "\r\n"))
}

fn field<'a>(lines: &'a [(String, String)], name: &str) -> &'a str {
    lines
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

#[test]
fn sections_asked_come_once_in_redis_order() {
    let args = |a: &[&str]| -> Vec<Bytes> {
        std::iter::once("INFO")
            .chain(a.iter().copied())
            .map(|s| Bytes::from(s.to_string()))
            .collect()
    };
    assert_eq!(
        wanted(&args(&["keyspace", "MEMORY"])),
        ["memory", "keyspace"]
    );
    assert!(!wanted(&args(&[])).contains(&"commandstats"));
    assert!(wanted(&args(&["all"])).contains(&"commandstats"));
    assert_eq!(wanted(&args(&["everything"])).len(), 14);
    assert!(wanted(&args(&["nosuchsection"])).is_empty());
}

#[test]
fn memory_sums_and_computes_its_ratios_again() {
    let a = node(
        "# Memory\nused_memory:1024\nused_memory_human:1.00K\nused_memory_rss:4096\nused_memory_peak:2048\nused_memory_peak_perc:50.00%\nmem_fragmentation_ratio:4.00\nmaxmemory:1000\nmaxmemory_policy:noeviction\nnumber_of_cached_scripts:2\n",
    );
    let b = node(
        "# Memory\nused_memory:1024\nused_memory_human:1.00K\nused_memory_rss:0\nused_memory_peak:2048\nused_memory_peak_perc:50.00%\nmem_fragmentation_ratio:0.00\nmaxmemory:3000\nmaxmemory_policy:noeviction\nnumber_of_cached_scripts:2\n",
    );
    let lines = section("memory", &[a, b], &[]);
    assert_eq!(field(&lines, "used_memory"), "2048");
    assert_eq!(field(&lines, "used_memory_human"), "2.00K");
    assert_eq!(field(&lines, "used_memory_peak_perc"), "50.00%");
    assert_eq!(field(&lines, "mem_fragmentation_ratio"), "2.00");
    assert_eq!(field(&lines, "maxmemory"), "4000");
    assert_eq!(field(&lines, "maxmemory_policy"), "noeviction");
    assert_eq!(field(&lines, "number_of_cached_scripts"), "2");
    let unlimited = node("# Memory\nmaxmemory:0\n");
    let limited = node("# Memory\nmaxmemory:10\n");
    let lines = section("memory", &[unlimited, limited], &[]);
    assert_eq!(field(&lines, "maxmemory"), "0", "one node without a limit");
    assert_eq!(human_bytes(941_168.0), "919.11K");
    assert_eq!(human_bytes(100.0), "100B");
}

#[test]
fn counters_sum_per_command_error_and_database() {
    let a = node(
        "# Stats\nkeyspace_hits:3\ninstantaneous_input_kbps:0.50\ntotal_commands_processed:100\n# Commandstats\ncmdstat_get:calls=2,usec=10,usec_per_call=5.00,rejected_calls=0,failed_calls=0\n# Errorstats\nerrorstat_ERR:count=1\n# Keyspace\ndb0:keys=10,expires=2,avg_ttl=1000\n",
    );
    let b = node(
        "# Stats\nkeyspace_hits:4\ninstantaneous_input_kbps:0.25\ntotal_commands_processed:100\n# Commandstats\ncmdstat_get:calls=2,usec=30,usec_per_call=15.00,rejected_calls=1,failed_calls=0\ncmdstat_set:calls=1,usec=1,usec_per_call=1.00,rejected_calls=0,failed_calls=0\n# Errorstats\nerrorstat_ERR:count=2\nerrorstat_WRONGTYPE:count=1\n# Keyspace\ndb0:keys=5,expires=6,avg_ttl=3000\n",
    );
    let nodes = [a, b];
    let stats = section("stats", &nodes, &["total_commands_processed"]);
    assert_eq!(field(&stats, "keyspace_hits"), "7");
    assert_eq!(field(&stats, "instantaneous_input_kbps"), "0.75");
    assert_eq!(
        field(&stats, "total_commands_processed"),
        "",
        "the proxy's own"
    );
    let commands = section("commandstats", &nodes, &[]);
    assert_eq!(
        field(&commands, "cmdstat_get"),
        "calls=4,usec=40,usec_per_call=10.00,rejected_calls=1,failed_calls=0"
    );
    assert_eq!(
        field(&commands, "cmdstat_set"),
        "calls=1,usec=1,usec_per_call=1.00,rejected_calls=0,failed_calls=0"
    );
    let errors = section("errorstats", &nodes, &[]);
    assert_eq!(field(&errors, "errorstat_ERR"), "count=3");
    assert_eq!(field(&errors, "errorstat_WRONGTYPE"), "count=1");
    let keyspace = section("keyspace", &nodes, &[]);
    assert_eq!(field(&keyspace, "db0"), "keys=15,expires=8,avg_ttl=2500");
}

#[test]
fn replication_lists_every_masters_replicas() {
    let a = node(
        "# Replication\nrole:master\nconnected_slaves:1\nslave0:ip=127.0.0.1,port=1,state=online,offset=5,lag=0\nmaster_repl_offset:5\n",
    );
    let b = node(
        "# Replication\nrole:master\nconnected_slaves:1\nslave0:ip=127.0.0.1,port=2,state=online,offset=7,lag=0\nmaster_repl_offset:7\n",
    );
    let lines = section("replication", &[a, b], &[]);
    assert_eq!(field(&lines, "role"), "master");
    assert_eq!(field(&lines, "connected_slaves"), "2");
    assert!(field(&lines, "slave1").contains("port=2"));
    assert_eq!(field(&lines, "master_repl_offset"), "12");
}
