//! Behaviour around nodes that fail, stall, need a password, or serve reads as replicas.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::RedisCluster;
use common::proxy::{Proxy, config_for};
use redis::Commands;
use respgate::config::ReadFrom;
use respgate::slot::Slot;

/// `cmdstat_<name>` calls on a node, from `INFO commandstats`.
fn calls(cluster: &RedisCluster, port: u16, name: &str) -> u64 {
    let stats = cluster.cli(port, &["INFO", "commandstats"]);
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn proxy_reading_from(cluster: &RedisCluster, read_from: ReadFrom) -> Proxy {
    let mut config = config_for(&cluster.seeds());
    config.clusters.get_mut("default").unwrap().read_from = read_from;
    let proxy = Proxy::start_with(config);
    proxy.wait_until_serving();
    proxy
}

#[test]
fn reads_go_to_replicas_when_configured_and_writes_to_masters() {
    let cluster = RedisCluster::start(3, 1);
    let proxy = proxy_reading_from(&cluster, ReadFrom::Replica);
    let mut client = proxy.client();
    let keys: Vec<String> = (0..300).map(|i| format!("replicated:{i}")).collect();
    for key in &keys {
        let _: () = client.set(key, "v").unwrap();
    }
    for port in cluster.master_ports() {
        cluster.cli(port, &["WAIT", "1", "5000"]);
    }
    // The proxy learns the replicas' health from its own connections; give them a moment.
    std::thread::sleep(Duration::from_millis(300));
    let gets_before =
        |ports: Vec<u16>| -> u64 { ports.iter().map(|&p| calls(&cluster, p, "get")).sum() };
    let (replica_before, master_before) = (
        gets_before(cluster.replica_ports()),
        gets_before(cluster.master_ports()),
    );
    for key in &keys {
        let value: String = client.get(key).unwrap();
        assert_eq!(value, "v");
    }
    let replica_gets = gets_before(cluster.replica_ports()) - replica_before;
    let master_gets = gets_before(cluster.master_ports()) - master_before;
    let master_sets: u64 = cluster
        .master_ports()
        .iter()
        .map(|&p| calls(&cluster, p, "set"))
        .sum();
    assert_eq!(replica_gets, 300, "every GET served by a replica");
    assert_eq!(master_gets, 0);
    assert_eq!(master_sets, 300, "writes still go to masters");
}

#[test]
fn replica_reads_fall_back_to_the_master_when_no_replica_is_healthy() {
    let mut cluster = RedisCluster::start(3, 1);
    let proxy = proxy_reading_from(&cluster, ReadFrom::PreferReplica);
    let mut client = proxy.client();
    let _: () = client.set("fallback", "still-here").unwrap();
    for port in cluster.replica_ports() {
        cluster.kill(port);
    }
    for _ in 0..50 {
        let value: String = client.get("fallback").expect("read served by the master");
        assert_eq!(value, "still-here");
    }
}

#[test]
fn backend_password_is_used_and_a_wrong_one_is_a_clear_error() {
    let cluster = RedisCluster::start_with(3, 0, &["--requirepass", "s3cret"]);
    let mut config = config_for(&cluster.seeds());
    config.clusters.get_mut("default").unwrap().password = "s3cret".into();
    let proxy = Proxy::start_with(config);
    proxy.wait_until_serving();
    let mut client = proxy.client();
    let _: () = client.set("authed", "yes").unwrap();
    let value: String = client.get("authed").unwrap();
    assert_eq!(value, "yes");

    let mut wrong = config_for(&cluster.seeds());
    wrong.clusters.get_mut("default").unwrap().password = "wrong".into();
    let proxy = Proxy::start_with(wrong);
    let mut raw = proxy.raw();
    // Give the first refresh time to fail, then the reply names the cause.
    let mut reply = String::new();
    for _ in 0..50 {
        reply = String::from_utf8_lossy(&raw.command(&["GET", "authed"])).into_owned();
        if reply.contains("WRONGPASS") || reply.contains("authentication") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(reply.starts_with("-CLUSTERDOWN"), "{reply}");
    assert!(
        reply.contains("rejected authentication"),
        "the error names the cause: {reply}"
    );
}

#[test]
fn a_stalled_node_does_not_stall_clients_whose_keys_live_elsewhere() {
    let cluster = RedisCluster::start(3, 0);
    let mut config = config_for(&cluster.seeds());
    config
        .clusters
        .get_mut("default")
        .unwrap()
        .request_timeout_ms = 3000;
    config.clusters.get_mut("default").unwrap().retry_timeout_ms = 500;
    let proxy = Proxy::start_with(config);
    proxy.wait_until_serving();
    let stalled_key = "stalled";
    let stalled = cluster.slot_owner(Slot::for_key(stalled_key.as_bytes()).get());
    let elsewhere: Vec<String> = (0..5000)
        .map(|i| format!("elsewhere:{i}"))
        .filter(|k| cluster.slot_owner(Slot::for_key(k.as_bytes()).get()) != stalled)
        .take(1000)
        .collect();
    let mut writer = proxy.client();
    for key in &elsewhere {
        let _: () = writer.set(key, "ok").unwrap();
    }
    let pid = cluster.pid(stalled).to_string();
    let _resume = Resume(pid.clone());
    assert!(
        std::process::Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );

    let (done_tx, done_rx) = mpsc::channel();
    let mut victim = proxy.client();
    let waiter = std::thread::spawn(move || {
        let result: redis::RedisResult<Option<String>> = victim.get(stalled_key);
        done_tx.send(result.is_err()).unwrap();
    });
    std::thread::sleep(Duration::from_millis(100));
    let mut other = proxy.client();
    for key in &elsewhere {
        let value: String = other.get(key).expect("keys on live nodes keep working");
        assert_eq!(value, "ok");
    }
    assert!(
        done_rx.try_recv().is_err(),
        "1,000 GETs on other nodes finished while the stalled node's request was still waiting"
    );
    let timed_out = done_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the stalled request ends");
    assert!(
        timed_out,
        "the stalled node's request ends in an error reply, not a hang"
    );
    waiter.join().unwrap();
}

/// Sends SIGCONT on drop, so a failing test leaves no stopped process behind.
struct Resume(String);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0])
            .status();
    }
}

#[test]
fn starts_with_some_seeds_down_and_learns_every_node() {
    let cluster = RedisCluster::start(3, 1);
    let dead = common::free_port();
    // The first seed is down; one live seed is enough.
    let seeds = vec![format!("127.0.0.1:{dead}"), cluster.seeds()[0].clone()];
    let proxy = Proxy::start(&seeds);
    let mut client = proxy.client();
    let _: () = client.set("seeded", "yes").unwrap();
    let value: String = client.get("seeded").unwrap();
    assert_eq!(value, "yes");
    let info = proxy.raw().info("proxy");
    assert!(
        info.contains("masters=3,nodes=6"),
        "every node learned from one seed: {info}"
    );
}

#[test]
fn a_proxy_started_before_the_cluster_answers_clusterdown_then_serves() {
    // The proxy pod may start before the Redis pods: it listens, answers CLUSTERDOWN with a
    // clear message, and keeps trying. Stopped nodes stand in for pods not up yet.
    let cluster = RedisCluster::start(3, 0);
    let pids: Vec<String> = cluster
        .ports()
        .iter()
        .map(|&p| cluster.pid(p).to_string())
        .collect();
    let _resume: Vec<Resume> = pids.iter().map(|p| Resume(p.clone())).collect();
    for pid in &pids {
        assert!(
            std::process::Command::new("kill")
                .args(["-STOP", pid])
                .status()
                .unwrap()
                .success()
        );
    }
    let mut config = config_for(&cluster.seeds());
    config
        .clusters
        .get_mut("default")
        .unwrap()
        .request_timeout_ms = 500;
    let proxy = Proxy::start_with(config);
    let mut raw = proxy.raw();
    let reply = String::from_utf8_lossy(&raw.command(&["GET", "k"])).into_owned();
    assert!(
        reply.starts_with("-CLUSTERDOWN respgate: no node of backend 'default' reachable yet"),
        "{reply}"
    );
    assert_eq!(
        raw.command(&["PING"]),
        b"+PONG\r\n",
        "the proxy itself answers meanwhile"
    );
    for pid in &pids {
        assert!(
            std::process::Command::new("kill")
                .args(["-CONT", pid])
                .status()
                .unwrap()
                .success()
        );
    }
    proxy.wait_until_serving();
    assert_eq!(raw.command(&["SET", "k", "v"]), b"+OK\r\n");
}

#[test]
fn a_hung_master_times_a_write_out_once_and_its_late_reply_answers_no_one() {
    // A master stops answering (SIGSTOP stands in for a hung node): a write to it is answered
    // with the timeout once, never sent twice; the other masters serve meanwhile; and when the
    // node wakes up, its late reply to the timed-out write must not be taken for the reply to
    // the client's next command on that shared connection.
    let cluster = RedisCluster::start(3, 0);
    let ports = cluster.ports();
    let hung = ports[0];
    let key = cluster.key_on(hung, "hung");
    let other = cluster.key_on(ports[1], "other");
    let mut config = config_for(&cluster.seeds());
    {
        let backend = config.clusters.get_mut("default").unwrap();
        backend.request_timeout_ms = 300;
        backend.retry_timeout_ms = 1000;
    }
    let proxy = Proxy::start_with(config);
    let mut raw = proxy.raw();
    assert_eq!(raw.command(&["SET", &key, "before"]), b"+OK\r\n");
    assert_eq!(raw.command(&["SET", &other, "there"]), b"+OK\r\n");

    let pid = cluster.pid(hung).to_string();
    let resume = Resume(pid.clone());
    assert!(
        std::process::Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let reply = String::from_utf8_lossy(&raw.command(&["SET", &key, "after"])).into_owned();
    assert!(
        reply.starts_with("-ERR respgate: backend")
            && reply.contains("did not reply within 300 ms; the command may or may not have run"),
        "{reply}"
    );
    let mut second = proxy.raw();
    assert_eq!(
        second.command(&["GET", &other]),
        b"$5\r\nthere\r\n",
        "the other masters serve while one hangs"
    );
    drop(resume);

    // The node woke up and answered the write late: the next command on the same connection
    // gets its own reply (the value), not that late +OK.
    let mut value = Vec::new();
    for _ in 0..50 {
        value = raw.command(&["GET", &key]);
        if value.first() == Some(&b'$') {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        value == b"$5\r\nafter\r\n" || value == b"$6\r\nbefore\r\n",
        "{}",
        String::from_utf8_lossy(&value)
    );
    assert_eq!(raw.command(&["PING"]), b"+PONG\r\n");
}

#[test]
fn a_failed_over_master_is_left_for_its_replica_before_any_request_times_out() {
    // A master stops answering and the cluster fails it over. With a request timeout far longer
    // than the failover, the proxy must not wait for a request to time out before it looks at
    // the topology again: a silent node makes it look at once. New reads of the failed master's
    // keys go to the promoted replica, and a read already waiting on the silent master is sent
    // there too.
    let cluster = RedisCluster::start(3, 1);
    let master = cluster.slot_owner(0);
    let replica = cluster.replica_of(master);
    let key = cluster.key_on(master, "failover");
    let mut config = config_for(&cluster.seeds());
    {
        let backend = config.clusters.get_mut("default").unwrap();
        backend.request_timeout_ms = 30_000;
        backend.retry_timeout_ms = 30_000;
        // No timer comes to the rescue either.
        backend.refresh_interval_ms = 120_000;
    }
    let proxy = Proxy::start_with(config);
    proxy.wait_until_serving();
    let mut raw = proxy.raw();
    assert_eq!(raw.command(&["SET", &key, "kept"]), b"+OK\r\n");
    assert_eq!(cluster.cli(master, &["WAIT", "1", "5000"]).trim(), "1");

    let pid = cluster.pid(master).to_string();
    let _resume = Resume(pid.clone());
    assert!(
        std::process::Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let (waited_tx, waited_rx) = mpsc::channel();
    let mut early = proxy.raw();
    let waiting_key = key.clone();
    let waiter = std::thread::spawn(move || {
        waited_tx
            .send(early.command(&["GET", &waiting_key]))
            .unwrap();
    });

    let started = std::time::Instant::now();
    let promoted = loop {
        let role = cluster.try_cli(replica, &["ROLE"]).unwrap_or_default();
        if role.starts_with("master") {
            break std::time::Instant::now();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{replica} was not promoted: {role}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // Both within half the request timeout of the promotion: a proxy that waited for a
    // timeout (or the refresh timer) would take 30 s.
    let limit = Duration::from_secs(15);
    let mut fresh = proxy.raw();
    assert_eq!(fresh.command(&["GET", &key]), b"$4\r\nkept\r\n");
    assert!(
        promoted.elapsed() < limit,
        "a new read was served {:?} after the promotion",
        promoted.elapsed()
    );
    let waited = waited_rx
        .recv_timeout(limit.saturating_sub(promoted.elapsed()))
        .expect("the read that waited on the silent master was not answered in time");
    assert_eq!(
        waited,
        b"$4\r\nkept\r\n",
        "{}",
        String::from_utf8_lossy(&waited)
    );
    println!(
        "both reads answered {:?} after the promotion (request timeout 30 s)",
        promoted.elapsed()
    );
    waiter.join().unwrap();
}
