//! Tests of the topology: parsing `CLUSTER NODES`, and what counts as a change.
use super::*;

const NODES: &str = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host-4 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master - 0 1426238318243 3 connected 10923-16383 [10924->-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1]
6ec23923021cf3ffec47632106199cb7f496ce01 127.0.0.1:30005@31005 slave,fail 67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 0 1426238316232 5 connected
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca :30001@31001 myself,master - 0 0 7 connected 0-5460
";

#[test]
fn parses_nodes_with_replicas_failures_and_migration_markers() {
    let view = parse_cluster_nodes(NODES, &NodeAddr::new("10.0.0.1:30001")).unwrap();
    assert_eq!(view.nodes.len(), 5);
    assert_eq!(view.max_epoch(), 7);
    assert_eq!(view.slots_covered(), 16384);
    let ranges = view.ranges();
    let first = ranges.iter().find(|r| r.start == 0).unwrap();
    assert_eq!(
        first.master,
        NodeAddr::new("10.0.0.1:30001"),
        "empty host is the node asked"
    );
    assert_eq!(first.replicas, vec![NodeAddr::new("127.0.0.1:30004")]);
    let second = ranges.iter().find(|r| r.start == 5461).unwrap();
    assert!(second.replicas.is_empty(), "a failed replica is not used");
    assert!(ranges.iter().any(|r| r.start == 10923 && r.end == 16383));
}

/// The cluster of [`NODES`] as another node lists it: other line order, other "myself".
const NODES_REORDERED: &str = "\
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 10.0.0.1:30001@31001 master - 0 1426238316232 7 connected 0-5460
6ec23923021cf3ffec47632106199cb7f496ce01 127.0.0.1:30005@31005 slave,fail 67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 0 1426238316232 5 connected
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master - 0 1426238318243 3 connected 10923-16383
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004 myself,slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 0 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
";

/// Three masters with two replicas each (the shape where the order of masters and of
/// replicas both show), in the order one node lists them.
const SIX: [&str; 9] = [
    "a0 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460",
    "b0 127.0.0.1:7001@17001 master - 0 1 2 connected 5461-10922",
    "c0 127.0.0.1:7002@17002 master - 0 1 3 connected 10923-16383",
    "a1 127.0.0.1:7003@17003 slave a0 0 1 1 connected",
    "a2 127.0.0.1:7004@17004 slave a0 0 1 1 connected",
    "b1 127.0.0.1:7005@17005 slave b0 0 1 2 connected",
    "b2 127.0.0.1:7006@17006 slave b0 0 1 2 connected",
    "c1 127.0.0.1:7007@17007 slave c0 0 1 3 connected",
    "c2 127.0.0.1:7008@17008 slave c0 0 1 3 connected",
];

fn view(lines: &[&str]) -> View {
    parse_cluster_nodes(&lines.join("\n"), &NodeAddr::new("127.0.0.1:7000")).unwrap()
}

/// Whether a refresh would see a change from a map built of `before` to one built of `after`:
/// the same comparison [`refresh`] makes.
fn changed(before: &View, after: &View) -> bool {
    let workers = crate::workers::Workers::start(1).unwrap();
    let settings = crate::backend::ConnSettings::from(&crate::config::BackendConfig::default());
    let backends = crate::backend::NodePools::new("test", settings, workers.set().clone());
    let before = SlotMap::from_ranges(&before.ranges(), &backends);
    let after = SlotMap::from_ranges(&after.ranges(), &backends);
    !after.same_routes(&before)
}

#[test]
fn the_same_cluster_listed_in_another_order_is_no_change() {
    let asked = NodeAddr::new("10.0.0.1:30001");
    let first = parse_cluster_nodes(NODES, &asked).unwrap();
    let second = parse_cluster_nodes(NODES_REORDERED, &NodeAddr::new("127.0.0.1:30004"));
    let second = second.unwrap();
    assert_eq!(first.ranges(), second.ranges());
    assert!(!changed(&first, &second));

    let listed = view(&SIX);
    let mut lines = SIX;
    lines.reverse();
    let reversed = view(&lines);
    assert!(!changed(&listed, &reversed), "reversed order");
    // Masters in another order, each master's replicas in another order too.
    let shuffled = view(&[
        SIX[5], SIX[2], SIX[8], SIX[0], SIX[4], SIX[1], SIX[7], SIX[3], SIX[6],
    ]);
    assert!(!changed(&listed, &shuffled), "shuffled order");
    assert!(!changed(&shuffled, &reversed));
}

#[test]
fn moved_slots_failovers_and_new_addresses_are_changes() {
    let before = view(&SIX);
    let mut moved = SIX;
    moved[0] = "a0 127.0.0.1:7000@17000 myself,master - 0 0 4 connected 0-5459";
    moved[1] = "b0 127.0.0.1:7001@17001 master - 0 1 4 connected 5460-10922";
    assert!(changed(&before, &view(&moved)), "slot 5460 moved");

    let mut failover = SIX;
    failover[1] = "b0 127.0.0.1:7001@17001 slave b1 0 1 5 connected";
    failover[5] = "b1 127.0.0.1:7005@17005 master - 0 1 5 connected 5461-10922";
    failover[6] = "b2 127.0.0.1:7006@17006 slave b1 0 1 5 connected";
    assert!(changed(&before, &view(&failover)), "b1 took over from b0");

    let mut readdressed = SIX;
    readdressed[2] = "c0 127.0.0.1:7102@17102 master - 0 1 3 connected 10923-16383";
    assert!(changed(&before, &view(&readdressed)), "master c0 moved");

    let mut replica_readdressed = SIX;
    replica_readdressed[7] = "c1 127.0.0.1:7107@17107 slave c0 0 1 3 connected";
    assert!(
        changed(&before, &view(&replica_readdressed)),
        "replica c1 moved"
    );

    // a2 follows b0 now: listed flat, master by master, the replicas are the same
    // (a1 a2 b1 b2 c1 c2); shard by shard they are not.
    let mut replica_moved = SIX;
    replica_moved[4] = "a2 127.0.0.1:7004@17004 slave b0 0 1 2 connected";
    assert!(
        changed(&before, &view(&replica_moved)),
        "a replica moved from one master to another"
    );

    let mut replica_failed = SIX;
    replica_failed[3] = "a1 127.0.0.1:7003@17003 slave,fail a0 0 1 1 connected";
    assert!(
        changed(&before, &view(&replica_failed)),
        "replica a1 failed"
    );
}

#[test]
fn rejects_garbage() {
    assert!(parse_cluster_nodes("not a node line", &NodeAddr::new("h:1")).is_none());
}
