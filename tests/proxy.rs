//! End to end through the proxy, against real Redis Clusters, with plain (non-cluster) clients.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::RedisCluster;
use common::proxy::{Proxy, config_for};
use redis::Commands;
use respgate::slot::Slot;

/// One key per hash slot, `key:<n>` with the smallest `n` landing in each slot.
fn key_per_slot() -> Vec<String> {
    let mut keys: Vec<Option<String>> = vec![None; 16384];
    let mut missing = keys.len();
    let mut n = 0u64;
    while missing > 0 {
        let key = format!("key:{n}");
        let slot = usize::from(Slot::for_key(key.as_bytes()).get());
        if keys[slot].is_none() {
            keys[slot] = Some(key);
            missing -= 1;
        }
        n += 1;
    }
    keys.into_iter()
        .map(|k| k.expect("every slot has a key"))
        .collect()
}

/// Writes `count` keys (`{tag}:i` = `v-{tag}:i`) through `client`, all in the slot of `tag`;
/// returns them, the slot, its owner and another master to move it to.
fn keys_in_a_slot_to_move(
    cluster: &RedisCluster,
    client: &mut redis::Connection,
    tag: &str,
    count: usize,
) -> (Vec<String>, u16, u16, u16) {
    let keys = keys_in_slot_of(tag, count);
    for key in &keys {
        let _: () = client.set(key, format!("v-{key}")).expect("SET");
    }
    let slot = Slot::for_key(tag.as_bytes()).get();
    let from = cluster.slot_owner(slot);
    let to = *cluster
        .master_ports()
        .iter()
        .find(|&&p| p != from)
        .expect("another master");
    (keys, slot, from, to)
}

/// Keys of the form `{tag}:i` all in the slot of `tag`.
fn keys_in_slot_of(tag: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{{{tag}}}:{i}")).collect()
}

#[test]
fn keys_in_every_slot_set_then_get_through_a_plain_client() {
    let cluster = RedisCluster::start(3, 1);
    let proxy = Proxy::start(&cluster.seeds());
    let mut client = proxy.client();
    let keys = key_per_slot();
    for chunk in keys.chunks(1000) {
        let mut pipe = redis::pipe();
        for key in chunk {
            pipe.set(key, format!("value-of-{key}")).ignore();
        }
        pipe.query::<()>(&mut client).expect("pipelined SETs");
    }
    for chunk in keys.chunks(1000) {
        let mut pipe = redis::pipe();
        for key in chunk {
            pipe.get(key);
        }
        let values: Vec<String> = pipe.query(&mut client).expect("pipelined GETs");
        for (key, value) in chunk.iter().zip(values) {
            assert_eq!(value, format!("value-of-{key}"));
        }
    }
    // The keys really are spread over the masters, as the cluster sees them.
    let total: u64 = cluster
        .master_ports()
        .iter()
        .map(|&port| {
            let n: u64 = cluster.cli(port, &["DBSIZE"]).parse().expect("DBSIZE");
            assert!(n > 5000, "master {port} holds only {n} keys");
            n
        })
        .sum();
    assert_eq!(total, 16384);
    assert_eq!(
        proxy.stat("moved"),
        0,
        "a fresh proxy knows the map: no redirects"
    );
}

#[test]
fn ten_thousand_command_pipeline_replies_in_order() {
    let cluster = RedisCluster::start(3, 1);
    let proxy = Proxy::start(&cluster.seeds());
    let mut raw = proxy.raw();
    let mut batch = bytes::BytesMut::new();
    let mut expected = Vec::new();
    for i in 0..2500 {
        let key = format!("pipe:{i}");
        let value = format!("v{i}");
        respgate::protocol::request::encode_command(&mut batch, &["SET", &key, &value]);
        expected.push(b"+OK\r\n".to_vec());
        respgate::protocol::request::encode_command(&mut batch, &["GET", &key]);
        expected.push(format!("${}\r\n{value}\r\n", value.len()).into_bytes());
        respgate::protocol::request::encode_command(&mut batch, &["ECHO", &value]);
        expected.push(format!("${}\r\n{value}\r\n", value.len()).into_bytes());
        respgate::protocol::request::encode_command(
            &mut batch,
            &["INCR", &format!("ctr:{}", i % 7)],
        );
        expected.push(format!(":{}\r\n", i / 7 + 1).into_bytes());
    }
    assert_eq!(expected.len(), 10_000);
    raw.send(&batch);
    for (i, want) in expected.iter().enumerate() {
        let got = raw.reply();
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(want),
            "reply {i} out of order or wrong"
        );
    }
}

#[test]
fn moved_during_migration_is_hidden_from_client() {
    let cluster = RedisCluster::start(3, 1);
    let proxy = Proxy::start(&cluster.seeds());
    let mut client = proxy.client();
    let (keys, slot, from, to) = keys_in_a_slot_to_move(&cluster, &mut client, "migrating", 200);
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let (stop, reads, keys) = (Arc::clone(&stop), Arc::clone(&reads), keys.clone());
        let mut client = proxy.client();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for key in &keys {
                    let value: Result<String, _> = client.get(key);
                    match value {
                        Ok(v) => assert_eq!(v, format!("v-{key}"), "wrong value for {key}"),
                        Err(e) => panic!("client saw an error during migration: {e}"),
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    cluster.begin_migration(slot, from, to);
    std::thread::sleep(Duration::from_millis(200));
    cluster.migrate_keys(slot, from, to);
    std::thread::sleep(Duration::from_millis(200));
    cluster.finish_migration(slot, from, to);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    reader.join().expect("reader saw only right values");
    assert_eq!(cluster.slot_owner(slot), to);
    assert!(
        reads.load(Ordering::Relaxed) > 1000,
        "the reader kept reading"
    );
    // After the move, reads and writes go to the new owner.
    let _: () = client.set(&keys[0], "after").expect("SET after migration");
    let direct: String = cluster.cli(to, &["GET", &keys[0]]);
    assert_eq!(direct, "after");
    assert!(
        proxy.stat("moved") + proxy.stat("ask") > 0,
        "the proxy followed redirects"
    );
}

#[test]
fn ask_during_migration_is_followed() {
    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds());
    let mut client = proxy.client();
    let (keys, slot, from, to) = keys_in_a_slot_to_move(&cluster, &mut client, "asking", 10);
    cluster.begin_migration(slot, from, to);
    // Move only the first five keys: the source answers ASK for those.
    let mut migrate = vec!["MIGRATE", "127.0.0.1"];
    let to_port = to.to_string();
    migrate.extend([to_port.as_str(), "", "0", "5000", "KEYS"]);
    migrate.extend(keys[..5].iter().map(String::as_str));
    assert_eq!(cluster.cli(from, &migrate), "OK");
    for key in &keys {
        let value: String = client.get(key).expect("GET during migration");
        assert_eq!(value, format!("v-{key}"));
    }
    // A new key in the migrating slot is created on the importing node via ASK.
    let _: () = client
        .set("{asking}:new", "fresh")
        .expect("SET of a new key during migration");
    assert_eq!(cluster.cli(to, &["ASKING"]), "OK");
    let asks = proxy.stat("ask");
    assert!(asks >= 5, "expected ASK redirects, saw {asks}");
    assert_eq!(proxy.stat("moved"), 0, "ASK must not change the slot map");
    let fresh: String = client.get("{asking}:new").expect("GET new key");
    assert_eq!(fresh, "fresh");
    cluster.migrate_keys(slot, from, to);
    cluster.finish_migration(slot, from, to);
    for key in &keys {
        let value: String = client.get(key).expect("GET after migration");
        assert_eq!(value, format!("v-{key}"));
    }
}

#[test]
fn a_write_asked_of_a_new_master_with_no_slot_yet_is_acknowledged() {
    // The first slot moving to a master that joined empty: the source answers ASK for a key
    // already moved, and the importing node, which no slot map names yet (it serves no slot),
    // runs the write. Its reply is the write's outcome, not a sign that a master was replaced:
    // chaos::adding_and_removing_a_master_under_load_has_no_errors met it now and then.
    let mut cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds());
    let mut client = proxy.client();
    let key = "{first-slot}:n";
    let _: () = client.set(key, 41).expect("SET before the migration");
    let slot = Slot::for_key(b"first-slot").get();
    let from = cluster.slot_owner(slot);
    let to = cluster.add_node_process();
    cluster.join_node(to);
    cluster.begin_migration(slot, from, to);
    cluster.migrate_keys(slot, from, to);
    let asks = proxy.stat("ask");
    let value: i64 = client
        .incr(key, 1)
        .expect("INCR answered by the importing node");
    assert_eq!(value, 42);
    assert_eq!(proxy.stat("ask"), asks + 1, "the INCR was asked of {to}");
    cluster.finish_migration(slot, from, to);
    let after: i64 = client.get(key).expect("GET after the migration");
    assert_eq!(after, 42, "the write ran once, on the new master");
}

#[test]
fn malformed_input_gets_protocol_error_and_only_that_client_is_closed() {
    let cluster = RedisCluster::start(3, 0);
    let mut config = config_for(&cluster.seeds());
    config.server.proto_max_bulk_len = 1024;
    let proxy = Proxy::start_with(config);
    proxy.wait_until_serving();
    let mut bystander = proxy.raw();
    assert_eq!(bystander.command(&["SET", "k", "v"]), b"+OK\r\n");

    let cases: [(&[u8], &[u8]); 5] = [
        (
            b"*1\r\n$x\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\n$2000\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*2\r\n+GET\r\n",
            b"-ERR Protocol error: expected '$', got '+'\r\n",
        ),
        (
            b"*abc\r\n",
            b"-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"GET \"unclosed\r\n",
            b"-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
    ];
    for (input, want) in cases {
        let mut raw = proxy.raw();
        // A good command first: its reply still arrives, in order, before the error.
        raw.send(b"PING\r\n");
        raw.send(input);
        assert_eq!(raw.reply(), b"+PONG\r\n");
        assert_eq!(
            String::from_utf8_lossy(&raw.reply()),
            String::from_utf8_lossy(want),
            "input {:?}",
            String::from_utf8_lossy(input)
        );
        assert!(raw.is_closed(), "connection closed after a protocol error");
    }
    // Binary garbage does not take the proxy down.
    let mut raw = proxy.raw();
    raw.send(&[0xff, 0x00, b'*', b'\r', 0x7f, b'\n']);
    raw.send(b"*9999999999999\r\n");
    let _ = raw.is_closed();
    assert_eq!(bystander.command(&["GET", "k"]), b"$1\r\nv\r\n");
}

#[test]
fn errors_match_redis_byte_for_byte() {
    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds());
    let node = cluster.slot_owner(Slot::for_key(b"foo").get());
    let mut direct = common::proxy::Raw::connect(node);
    let mut through = proxy.raw();
    for args in [
        &["NOSUCHCOMMAND", "a", "b"][..],
        &["GET"],
        &["GET", "foo", "bar"],
        &["OBJECT", "nosuch", "foo"],
        &["SELECT", "1"],
        &["SELECT", "0"],
        &["SELECT", "x"],
        &["MSETNX", "foo", "1", "bar", "2"],
        &["PING"],
        &["PING", "hi"],
        &["ECHO", "hi"],
        &["AUTH", "pw"],
        &["CLIENT", "SETNAME", "has space"],
        &["HELLO", "4"],
        &["CLUSTER", "KEYSLOT", "{user1000}.following"],
        &["SET", "foo", "not-a-number"],
        &["INCR", "foo"],
        &["LPUSH", "foo", "x"],
        &["GETRANGE", "foo", "0", "x"],
    ] {
        assert_eq!(
            String::from_utf8_lossy(&through.command(args)),
            String::from_utf8_lossy(&direct.command(args)),
            "reply to {args:?}"
        );
    }
}

#[test]
fn hello_3_switches_protocol_and_replies_pass_through_unchanged() {
    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds());
    let node = cluster.slot_owner(Slot::for_key(b"h").get());
    let mut direct = common::proxy::Raw::connect(node);
    let mut through = proxy.raw();
    let hello = through.command(&["HELLO", "3", "SETNAME", "app"]);
    assert!(
        hello.starts_with(b"%7\r\n"),
        "HELLO 3 answers a RESP3 map: {:?}",
        String::from_utf8_lossy(&hello)
    );
    assert!(String::from_utf8_lossy(&hello).contains("proto\r\n:3"));
    direct.command(&["HELLO", "3"]);
    assert_eq!(through.command(&["HSET", "h", "f", "v"]), b":1\r\n");
    for args in [
        &["HGETALL", "h"][..],
        &["GET", "{h}missing"],
        &["SMEMBERS", "h"],
        &["ZSCORE", "{h}z", "m"],
    ] {
        assert_eq!(
            String::from_utf8_lossy(&through.command(args)),
            String::from_utf8_lossy(&direct.command(args)),
            "RESP3 reply to {args:?}"
        );
    }
    assert_eq!(
        through.command(&["HGETALL", "h"]),
        b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n"
    );
    assert_eq!(through.command(&["CLIENT", "GETNAME"]), b"$3\r\napp\r\n");
    // Back to RESP2 on the same connection.
    assert!(through.command(&["HELLO", "2"]).starts_with(b"*14\r\n"));
    assert_eq!(
        through.command(&["HGETALL", "h"]),
        b"*2\r\n$1\r\nf\r\n$1\r\nv\r\n"
    );
    assert_eq!(through.command(&["GET", "missing"]), b"$-1\r\n");
}

#[test]
fn proxy_answers_connection_commands_itself() {
    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds());
    let mut raw = proxy.raw();
    assert_eq!(raw.command(&["CLIENT", "SETNAME", "worker-1"]), b"+OK\r\n");
    assert_eq!(raw.command(&["CLIENT", "GETNAME"]), b"$8\r\nworker-1\r\n");
    assert!(raw.command(&["CLIENT", "ID"]).starts_with(b":"));
    assert_eq!(
        raw.command(&["CLIENT", "SETINFO", "LIB-NAME", "redis-py"]),
        b"+OK\r\n"
    );
    let info = String::from_utf8_lossy(&raw.command(&["INFO"])).into_owned();
    for field in [
        "redis_version:",
        "redis_mode:cluster",
        "# Proxy",
        "connected_clients:",
        "slots_served=16384",
    ] {
        assert!(info.contains(field), "INFO lacks {field}: {info}");
    }
    let command = raw.command(&["COMMAND", "COUNT"]);
    assert!(command.starts_with(b":"), "COMMAND passes through");
    // Inline commands, as typed in telnet.
    raw.send(b"SET inline:k \"a b\"\r\nGET inline:k\r\n");
    assert_eq!(raw.reply(), b"+OK\r\n");
    assert_eq!(raw.reply(), b"$3\r\na b\r\n");
    // A cluster-aware client sees one node owning every slot: the proxy.
    let slots = String::from_utf8_lossy(&raw.command(&["CLUSTER", "SLOTS"])).into_owned();
    assert!(
        slots.contains(":0\r\n:16383\r\n") && slots.contains(&format!(":{}\r\n", proxy.port)),
        "{slots}"
    );
    assert_eq!(raw.command(&["QUIT"]), b"+OK\r\n");
    assert!(raw.is_closed());
}

#[test]
fn killed_backend_gives_an_error_reply_not_a_hang() {
    // Without full coverage required, the live masters keep serving their slots once the
    // cluster notices the dead one (otherwise every node answers CLUSTERDOWN).
    let mut cluster = RedisCluster::start_with(3, 0, &["--cluster-require-full-coverage", "no"]);
    let mut config = config_for(&cluster.seeds());
    if let Some(c) = config.clusters.get_mut("default") {
        c.retry_timeout_ms = 1000;
    }
    let proxy = Proxy::start_with(config);
    proxy.wait_until_serving();
    let mut client = proxy.client();
    let keys = key_per_slot();
    let victim = cluster.master_ports()[0];
    let mut by_owner: HashMap<u16, Vec<String>> = HashMap::new();
    for key in keys.iter().step_by(97) {
        let owner = cluster.slot_owner(Slot::for_key(key.as_bytes()).get());
        by_owner.entry(owner).or_default().push(key.clone());
        let _: () = client.set(key, "v").expect("SET before the kill");
    }
    cluster.kill(victim);
    let started = Instant::now();
    for key in by_owner[&victim].iter().take(5) {
        let result: redis::RedisResult<String> = client.get(key);
        let error = result.expect_err("a key on the killed node yields an error");
        let text = error.to_string();
        assert!(
            text.contains("respgate") || text.contains("CLUSTERDOWN"),
            "clear error: {text}"
        );
    }
    // Bounded by the request timeout (2 s) per request, with generous slack: this is a
    // no-hang check, not a performance claim.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "errors came back promptly"
    );
    for (owner, keys) in &by_owner {
        if *owner != victim {
            for key in keys.iter().take(20) {
                let value: String = client.get(key).expect("keys on live nodes still work");
                assert_eq!(value, "v");
            }
        }
    }
}

#[test]
fn unreachable_cluster_answers_clusterdown_until_it_appears() {
    let port = common::free_port();
    let proxy = Proxy::start_with(config_for(&[format!("127.0.0.1:{port}")]));
    let mut raw = proxy.raw();
    let reply = String::from_utf8_lossy(&raw.command(&["GET", "k"])).into_owned();
    assert!(reply.starts_with("-CLUSTERDOWN"), "{reply}");
    assert_eq!(
        raw.command(&["PING"]),
        b"+PONG\r\n",
        "the proxy itself still answers"
    );
}

#[test]
fn clients_must_authenticate_when_the_proxy_has_a_password() {
    let cluster = RedisCluster::start(3, 0);
    let mut config = config_for(&cluster.seeds());
    config.server.password = "letmein".into();
    let proxy = Proxy::start_with(config);
    let mut raw = proxy.raw();
    assert_eq!(
        raw.command(&["GET", "k"]),
        b"-NOAUTH Authentication required.\r\n"
    );
    assert_eq!(
        raw.command(&["AUTH", "wrong"]),
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert_eq!(
        raw.command(&["AUTH", "someone", "letmein"]),
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert!(
        raw.command(&["HELLO", "3"])
            .starts_with(b"-NOAUTH HELLO must be called")
    );
    assert_eq!(raw.command(&["AUTH", "letmein"]), b"+OK\r\n");
    // Wait for the topology before the first routed command.
    let mut reply = raw.command(&["SET", "k", "v"]);
    for _ in 0..100 {
        if reply == b"+OK\r\n" {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        reply = raw.command(&["SET", "k", "v"]);
    }
    assert_eq!(reply, b"+OK\r\n");
    let mut hello = proxy.raw();
    assert!(
        hello
            .command(&["HELLO", "3", "AUTH", "default", "letmein"])
            .starts_with(b"%7\r\n")
    );
    assert_eq!(hello.command(&["GET", "k"]), b"$1\r\nv\r\n");
    // A plain client library with a password in its URL.
    let client =
        redis::Client::open(format!("redis://:letmein@127.0.0.1:{}/", proxy.port)).unwrap();
    let mut conn = client.get_connection().unwrap();
    let value: String = conn.get("k").unwrap();
    assert_eq!(value, "v");
    assert_eq!(hello.command(&["RESET"]), b"+RESET\r\n");
    assert_eq!(
        hello.command(&["GET", "k"]),
        b"-NOAUTH Authentication required.\r\n"
    );
}

#[test]
fn client_list_and_kill_cover_the_proxys_own_clients() {
    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds());
    let mut admin = proxy.raw();
    let mut victim = proxy.raw();
    assert_eq!(victim.command(&["CLIENT", "SETNAME", "victim"]), b"+OK\r\n");
    let victim_id = String::from_utf8_lossy(&victim.command(&["CLIENT", "ID"]))
        .trim()
        .trim_start_matches(':')
        .to_string();
    let list = String::from_utf8_lossy(&admin.command(&["CLIENT", "LIST"])).into_owned();
    assert!(
        list.contains(&format!("id={victim_id} ")) && list.contains("name=victim"),
        "{list}"
    );
    // Once the command table is known: a subcommand Redis lacks gets Redis's error.
    proxy.wait_until_serving();
    assert_eq!(
        admin.command(&["CLIENT", "NoSuch"]),
        b"-ERR unknown subcommand 'NoSuch'. Try CLIENT HELP.\r\n"
    );
    assert_eq!(
        admin.command(&["CLIENT", "TRACKING", "on"]),
        b"+OK\r\n",
        "client-side caching is the proxy's own"
    );
    let info = String::from_utf8_lossy(&victim.command(&["CLIENT", "INFO"])).into_owned();
    assert!(
        info.contains("name=victim") && info.matches(" addr=").count() == 1,
        "{info}"
    );
    assert_eq!(
        admin.command(&["CLIENT", "KILL", "ID", &victim_id]),
        b":1\r\n"
    );
    assert!(
        victim.is_closed(),
        "the killed client's connection is closed"
    );
    assert_eq!(
        admin.command(&["CLIENT", "KILL", "ID", "999999"]),
        b":0\r\n"
    );
    assert_eq!(
        admin.command(&["CLIENT", "KILL", "127.0.0.1:1"]),
        b"-ERR No such client\r\n"
    );
    // Without a filter Redis refuses CLIENT KILL (it must not close every client); USER is a
    // filter as in Redis 7.0.
    let mut bystander = proxy.raw();
    assert_eq!(
        admin.command(&["CLIENT", "KILL"]),
        b"-ERR wrong number of arguments for 'client|kill' command\r\n"
    );
    assert_eq!(bystander.command(&["PING"]), b"+PONG\r\n");
    assert_eq!(
        admin.command(&["CLIENT", "KILL", "USER", "nobody"]),
        b"-ERR No such user 'nobody'\r\n"
    );
    assert_eq!(
        admin.command(&["CLIENT", "KILL", "USER", "default"]),
        b":1\r\n",
        "every client of the default user but the caller"
    );
    assert!(bystander.is_closed());
    // CLIENT REPLY OFF: commands run without replies until ON.
    admin
        .send(b"CLIENT REPLY OFF\r\nSET quiet 1\r\nINCR quiet\r\nCLIENT REPLY ON\r\nGET quiet\r\n");
    assert_eq!(admin.reply(), b"+OK\r\n");
    assert_eq!(admin.reply(), b"$1\r\n2\r\n");
    admin.send(b"CLIENT REPLY SKIP\r\nINCR quiet\r\nGET quiet\r\n");
    assert_eq!(admin.reply(), b"$1\r\n3\r\n");
}

#[test]
fn shutdown_drains_clients_with_the_replies_they_are_owed() {
    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds());
    let mut idle = proxy.raw();
    assert_eq!(idle.command(&["PING"]), b"+PONG\r\n");
    let mut waiting = proxy.raw();
    // A request in flight when the shutdown begins still gets its reply.
    waiting.send(b"*3\r\n$5\r\nBLPOP\r\n$7\r\ndrained\r\n$1\r\n1\r\n");
    std::thread::sleep(Duration::from_millis(200));
    let stopper = std::thread::spawn(move || drop(proxy));
    assert_eq!(
        waiting.reply(),
        b"*-1\r\n",
        "the blocked request was answered"
    );
    assert!(waiting.is_closed(), "then the connection closed");
    assert!(idle.is_closed(), "idle clients are closed");
    stopper.join().unwrap();
}

#[test]
fn admin_endpoints_report_readiness_and_metrics() {
    let cluster = RedisCluster::start(3, 0);
    let admin_port = common::free_port();
    let mut config = config_for(&cluster.seeds());
    config.server.admin_listen = format!("127.0.0.1:{admin_port}");
    let proxy = Proxy::start_with(config);
    let get = |path: &str| -> String {
        use std::io::{Read, Write};
        // The proxy binds the admin port as it starts; until then, no answer.
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", admin_port)) else {
            return String::new();
        };
        write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    };
    // Ready only once every slot is served.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !get("/ready").starts_with("HTTP/1.1 200") {
        assert!(std::time::Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(get("/live").starts_with("HTTP/1.1 200"));
    let mut raw = proxy.raw();
    assert_eq!(raw.command(&["SET", "m", "1"]), b"+OK\r\n");
    let metrics = get("/metrics");
    assert!(metrics.contains("respgate_commands_total"), "{metrics}");
    assert!(
        metrics.contains("respgate_slots_served{backend=\"default\"} 16384"),
        "{metrics}"
    );
    assert!(get("/nope").starts_with("HTTP/1.1 404"));
}
