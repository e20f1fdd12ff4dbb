//! A master whose packets are dropped (iptables on the loopback interface), as a partition or a
//! dead host would drop them: no reset and no refusal, the connection just goes quiet.
//!
//! Two cuts, as an operator meets them:
//! - from the proxy only (the cluster still sees the master healthy, so nothing fails over):
//!   every request for its keys must still end, answered or failed, within the request and
//!   retry budgets however long the cut lasts, and clients of the other masters see nothing;
//! - from everyone, so the cluster fails it over: its slots must be served again about a second
//!   after the replica is promoted, without waiting for a request timeout.
//!
//! These need root (iptables); scripts/test.sh installs iptables.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::RedisCluster;
use common::netcut::Cut;
use common::proxy::{Proxy, config_for};

/// The cluster bus port of a node on `port`, as the harness starts them.
fn bus_port(port: u16) -> u16 {
    port + 10000
}

/// A redis-rs connection to the proxy that waits far longer than any budget under test, so a
/// request that overstays is measured, not cut short by the client.
fn patient_client(port: u16) -> redis::Connection {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let conn = client.get_connection().expect("connect to the proxy");
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    conn
}

#[test]
fn a_master_cut_off_from_the_proxy_only_fails_each_request_within_the_budgets() {
    let cluster = RedisCluster::start(3, 0);
    let ports = cluster.master_ports();
    let cut_master = ports[0];
    let cut_key = cluster.key_on(cut_master, "cut");
    let elsewhere: Vec<String> = ports[1..]
        .iter()
        .map(|&port| cluster.key_on(port, "elsewhere"))
        .collect();
    let request_timeout = Duration::from_millis(1000);
    let retry_timeout = Duration::from_millis(2000);
    let mut config = config_for(&cluster.seeds());
    {
        let backend = config.clusters.get_mut("default").unwrap();
        backend.request_timeout_ms = 1000;
        backend.retry_timeout_ms = 2000;
    }
    let proxy = Proxy::start_with(config);
    proxy.wait_until_serving();
    let mut setup = patient_client(proxy.port);
    redis::cmd("SET")
        .arg(&cut_key)
        .arg("v")
        .query::<()>(&mut setup)
        .unwrap();
    for key in &elsewhere {
        redis::cmd("SET")
            .arg(key)
            .arg("v")
            .query::<()>(&mut setup)
            .unwrap();
    }

    // The cut lasts three times the whole budget: requests keep coming all along, on the same
    // connections and on new ones.
    let cut_for = (request_timeout + retry_timeout) * 3;
    let cut = Cut::ports(&[cut_master]);
    let started = Instant::now();
    let cut_clients: Vec<_> = (0..4)
        .map(|i| {
            let port = proxy.port;
            let mut conn = patient_client(port);
            let key = cut_key.clone();
            thread::spawn(move || {
                let mut longest = Duration::ZERO;
                let mut failed = 0;
                while started.elapsed() < cut_for {
                    if i % 2 == 1 && failed % 2 == 1 {
                        // Half the clients reconnect now and then: a new connection is served
                        // the same way.
                        conn = patient_client(port);
                    }
                    let sent = Instant::now();
                    let reply = redis::cmd("GET")
                        .arg(&key)
                        .query::<Option<String>>(&mut conn);
                    longest = longest.max(sent.elapsed());
                    match reply {
                        Ok(_) => {}
                        Err(e) => {
                            if failed == 0 && i == 0 {
                                println!("the first error: {e}");
                            }
                            failed += 1;
                            assert!(
                                !e.is_io_error(),
                                "the proxy answers, it does not drop the client: {e}"
                            );
                        }
                    }
                }
                (longest, failed)
            })
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let others = {
        let mut conn = patient_client(proxy.port);
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut longest = Duration::ZERO;
            let mut served = 0_u64;
            while !stop.load(Ordering::Relaxed) {
                for key in &elsewhere {
                    let sent = Instant::now();
                    let value: String = redis::cmd("GET")
                        .arg(key)
                        .query(&mut conn)
                        .expect("keys on the other masters keep working");
                    assert_eq!(value, "v");
                    longest = longest.max(sent.elapsed());
                    served += 1;
                }
            }
            (longest, served)
        })
    };

    let budget = request_timeout + retry_timeout;
    for client in cut_clients {
        let (longest, failed) = client.join().unwrap();
        println!(
            "a client of the cut master: {failed} requests failed, the longest took {longest:?}"
        );
        assert!(failed > 0, "the cut master's keys cannot be served");
        // One second of slack for a loaded 2-core machine; three budgets back to back (what a
        // request waited before) would be far over it.
        assert!(
            longest <= budget + Duration::from_secs(1),
            "a request waited {longest:?}, over the {budget:?} of request and retry timeouts"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let (longest, served) = others.join().unwrap();
    println!("the other masters served {served} GETs meanwhile, the longest in {longest:?}");
    assert!(served > 0);

    // The cut heals: the proxy serves the master's keys again by itself.
    drop(cut);
    let healed = Instant::now();
    loop {
        let reply = redis::cmd("GET")
            .arg(&cut_key)
            .query::<Option<String>>(&mut setup);
        if let Ok(value) = reply {
            assert_eq!(value.as_deref(), Some("v"));
            break;
        }
        assert!(
            healed.elapsed() < Duration::from_secs(30),
            "the master's keys were not served again after the cut healed: {reply:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    println!("served again {:?} after the cut healed", healed.elapsed());
}

#[test]
fn a_master_cut_off_from_everyone_is_served_from_its_replica_about_a_second_after_the_failover() {
    let cluster = RedisCluster::start(3, 1);
    let master = cluster.slot_owner(0);
    let replica = cluster.replica_of(master);
    let key = cluster.key_on(master, "failover");
    // The defaults a user runs with: 5 s request and 8 s retry timeouts.
    let proxy = Proxy::start(&cluster.seeds());
    proxy.wait_until_serving();
    let mut conn = patient_client(proxy.port);
    redis::cmd("SET")
        .arg(&key)
        .arg("kept")
        .query::<()>(&mut conn)
        .unwrap();
    assert_eq!(cluster.cli(master, &["WAIT", "1", "5000"]).trim(), "1");

    // Its new connections leave from an address of their own, so they can be cut too.
    let source = common::netcut::source_address();
    assert_eq!(
        cluster
            .cli(master, &["CONFIG", "SET", "bind-source-addr", &source])
            .trim(),
        "OK"
    );
    let cut = Cut::node(cluster.pid(master), &[master, bus_port(master)], &source);
    let cut_at = Instant::now();
    let reader = thread::spawn(move || {
        // Reads all along, as an application would: the instant of each answer is kept.
        let mut answered = Vec::new();
        while cut_at.elapsed() < Duration::from_secs(40) {
            let reply = redis::cmd("GET")
                .arg(&key)
                .query::<Option<String>>(&mut conn);
            if let Ok(value) = reply {
                assert_eq!(value.as_deref(), Some("kept"), "no write lost");
                answered.push(Instant::now());
                if answered.len() >= 20 {
                    break;
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
        answered
    });
    let promoted = loop {
        let role = cluster.try_cli(replica, &["ROLE"]).unwrap_or_default();
        if role.starts_with("master") {
            break Instant::now();
        }
        assert!(
            cut_at.elapsed() < Duration::from_secs(30),
            "{replica} was not promoted: {role}"
        );
        thread::sleep(Duration::from_millis(20));
    };
    let answered = reader.join().unwrap();
    drop(cut);
    let first = answered
        .first()
        .unwrap_or_else(|| panic!("no read was answered in 40 s after the cut"));
    let after = first.saturating_duration_since(promoted);
    println!(
        "replica promoted {:?} after the cut; first read served {after:?} after the promotion",
        promoted - cut_at
    );
    // About a second, with slack for a loaded machine; waiting for the 5 s request timeout
    // (what the proxy did before) is well over it.
    assert!(
        after <= Duration::from_millis(2500),
        "the failed-over slots were served {after:?} after the promotion"
    );
}
