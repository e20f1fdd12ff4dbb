//! Transactions and blocking commands, which run on a client's own backend connection.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::RedisCluster;
use common::proxy::Proxy;
use redis::Commands;
use respgate::slot::Slot;

#[test]
fn multi_exec_runs_the_queued_commands_atomically() {
    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds());
    let mut raw = proxy.raw();
    assert_eq!(raw.command(&["MULTI"]), b"+OK\r\n");
    assert_eq!(raw.command(&["SET", "{acct}:a", "10"]), b"+QUEUED\r\n");
    assert_eq!(raw.command(&["INCRBY", "{acct}:a", "5"]), b"+QUEUED\r\n");
    assert_eq!(
        raw.command(&["PING"]),
        b"+QUEUED\r\n",
        "PING is queued inside MULTI, as in Redis"
    );
    assert_eq!(raw.command(&["EXEC"]), b"*3\r\n+OK\r\n:15\r\n+PONG\r\n");
    assert_eq!(raw.command(&["MULTI"]), b"+OK\r\n");
    assert_eq!(
        raw.command(&["MULTI"]),
        b"-ERR MULTI calls can not be nested\r\n"
    );
    assert_eq!(raw.command(&["SET", "{acct}:b", "1"]), b"+QUEUED\r\n");
    assert_eq!(raw.command(&["DISCARD"]), b"+OK\r\n");
    assert_eq!(raw.command(&["GET", "{acct}:b"]), b"$-1\r\n");
    assert_eq!(raw.command(&["EXEC"]), b"-ERR EXEC without MULTI\r\n");
    assert_eq!(raw.command(&["DISCARD"]), b"-ERR DISCARD without MULTI\r\n");
}

#[test]
fn a_key_in_another_slot_inside_multi_aborts_exec() {
    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds());
    let mut raw = proxy.raw();
    assert_eq!(raw.command(&["MULTI"]), b"+OK\r\n");
    assert_eq!(raw.command(&["SET", "{x}:1", "a"]), b"+QUEUED\r\n");
    assert_eq!(
        raw.command(&["SET", "{y}:1", "b"]),
        b"-CROSSSLOT Keys in request don't hash to the same slot\r\n"
    );
    assert!(
        raw.command(&["NOSUCH"])
            .starts_with(b"-ERR unknown command 'NOSUCH'")
    );
    assert_eq!(
        raw.command(&["EXEC"]),
        b"-EXECABORT Transaction discarded because of previous errors.\r\n"
    );
    assert_eq!(
        raw.command(&["GET", "{x}:1"]),
        b"$-1\r\n",
        "nothing of an aborted transaction ran"
    );
}

#[test]
fn a_watched_key_changed_by_another_client_makes_exec_return_nil() {
    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds());
    let mut watcher = proxy.raw();
    let mut other = proxy.client();
    let _: () = other.set("balance", 100).unwrap();
    assert_eq!(watcher.command(&["WATCH", "balance"]), b"+OK\r\n");
    let _: () = other.set("balance", 50).unwrap();
    assert_eq!(watcher.command(&["MULTI"]), b"+OK\r\n");
    assert_eq!(watcher.command(&["SET", "balance", "0"]), b"+QUEUED\r\n");
    assert_eq!(
        watcher.command(&["EXEC"]),
        b"*-1\r\n",
        "the transaction did not run"
    );
    let balance: i64 = other.get("balance").unwrap();
    assert_eq!(balance, 50);
    // Unchanged watched key: the transaction runs.
    assert_eq!(watcher.command(&["WATCH", "balance"]), b"+OK\r\n");
    assert_eq!(watcher.command(&["MULTI"]), b"+OK\r\n");
    assert_eq!(
        watcher.command(&["DECRBY", "balance", "20"]),
        b"+QUEUED\r\n"
    );
    assert_eq!(watcher.command(&["EXEC"]), b"*1\r\n:30\r\n");
    assert_eq!(watcher.command(&["UNWATCH"]), b"+OK\r\n");
    assert_eq!(
        watcher.command(&["WATCH", "{a}1", "{b}2"]),
        b"-CROSSSLOT Keys in request don't hash to the same slot\r\n"
    );
}

#[test]
fn blpop_on_one_client_does_not_delay_other_clients() {
    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds());
    let mut client = proxy.client();
    let keys: Vec<String> = (0..1000).map(|i| format!("get:{i}")).collect();
    for key in &keys {
        let _: () = client.set(key, "v").unwrap();
    }
    let port = proxy.port;
    let blocked = std::thread::spawn(move || {
        let mut raw = common::proxy::Raw::connect(port);
        let started = Instant::now();
        let reply = raw.command(&["BLPOP", "jobs", "10"]);
        (reply, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    for key in &keys {
        let value: String = client.get(key).unwrap();
        assert_eq!(value, "v");
    }
    let gets_took = started.elapsed();
    let _: () = client.rpush("jobs", "job-1").unwrap();
    let (reply, blocked_for) = blocked.join().unwrap();
    assert_eq!(reply, b"*2\r\n$4\r\njobs\r\n$5\r\njob-1\r\n");
    assert!(
        gets_took < blocked_for,
        "1,000 GETs ({gets_took:?}) finished while BLPOP was still waiting ({blocked_for:?})"
    );
    // A blocking command that times out answers nil, as Redis does.
    let mut raw = proxy.raw();
    assert_eq!(raw.command(&["BLPOP", "empty", "0.1"]), b"*-1\r\n");
}

#[test]
fn a_client_that_leaves_while_blocked_closes_its_backend_connection() {
    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds());
    let node = cluster.slot_owner(Slot::for_key(b"queue").get());
    let blocked_on_node = || {
        cluster
            .cli(node, &["CLIENT", "LIST"])
            .lines()
            .filter(|l| l.contains("cmd=blpop"))
            .count()
    };
    {
        let mut raw = proxy.raw();
        raw.send(b"*3\r\n$5\r\nBLPOP\r\n$5\r\nqueue\r\n$1\r\n0\r\n");
        let deadline = Instant::now() + Duration::from_secs(10);
        while blocked_on_node() == 0 {
            assert!(Instant::now() < deadline, "BLPOP reached the node");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while blocked_on_node() > 0 {
        assert!(
            Instant::now() < deadline,
            "the blocked backend connection was closed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn wait_counts_the_replicas_that_have_the_clients_last_write() {
    let cluster = RedisCluster::start(3, 1);
    let proxy = Proxy::start(&cluster.seeds());
    let mut raw = proxy.raw();
    assert_eq!(raw.command(&["SET", "durable", "1"]), b"+OK\r\n");
    assert_eq!(raw.command(&["WAIT", "1", "2000"]), b":1\r\n");
    // More replicas than exist, no timeout: the cap (half the 2 s request timeout) answers
    // with the count reached instead of holding a shared connection forever.
    let started = Instant::now();
    assert_eq!(raw.command(&["WAIT", "2", "0"]), b":1\r\n");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        raw.command(&["WAIT", "x", "0"]),
        b"-ERR value is not an integer or out of range\r\n"
    );
}

#[test]
fn a_blocking_command_is_written_on_a_connection_opened_before_it_was_sent() {
    // After a first blocking command, the proxy keeps a spare connection to the node open and
    // logged in: the next client's blocking command is written on it at once, as on one Redis,
    // instead of after a connect and a handshake that a command sent just after it by another
    // client would overtake.
    let cluster = RedisCluster::start(3, 0);
    let mut config = common::proxy::config_for(&cluster.seeds());
    config.server.threads = 1;
    let proxy = Proxy::start_with(config);
    proxy.wait_until_serving();
    let node = cluster.slot_owner(Slot::for_key(b"spare-queue").get());
    let ids_on_node = || -> Vec<(u64, String)> {
        cluster
            .cli(node, &["CLIENT", "LIST"])
            .lines()
            .filter_map(|line| {
                let id = line.strip_prefix("id=")?.split(' ').next()?.parse().ok()?;
                Some((id, line.to_string()))
            })
            .collect()
    };
    let mut first = proxy.raw();
    assert_eq!(first.command(&["BLPOP", "spare-queue", "0.01"]), b"*-1\r\n");
    // The spare opened after that first one: wait until the node's connections stop changing.
    let mut before = ids_on_node();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = ids_on_node();
        if now.len() == before.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the node's connections kept changing"
        );
        before = now;
    }
    let known: Vec<u64> = before.iter().map(|(id, _)| *id).collect();

    let mut second = proxy.raw();
    second.send(b"*3\r\n$5\r\nBLPOP\r\n$11\r\nspare-queue\r\n$1\r\n5\r\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    let blocked = loop {
        if let Some((id, _)) = ids_on_node()
            .into_iter()
            .find(|(_, line)| line.contains(" flags=b ") && line.contains("cmd=blpop"))
        {
            break id;
        }
        assert!(Instant::now() < deadline, "the BLPOP reached the node");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        known.contains(&blocked),
        "the BLPOP ran on connection {blocked}, opened after it was sent; open before: {known:?}"
    );
    let mut pusher = proxy.raw();
    assert_eq!(pusher.command(&["RPUSH", "spare-queue", "x"]), b":1\r\n");
    assert_eq!(second.reply(), b"*2\r\n$11\r\nspare-queue\r\n$1\r\nx\r\n");
}
