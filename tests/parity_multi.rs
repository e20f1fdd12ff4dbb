//! Transactions through the proxy queue what Redis queues and answer what Redis answers: the
//! same steps run against a single `redis-server` and against the proxy in front of a cluster
//! give the same bytes, whichever master the transaction's keys are on and whatever the client
//! did before (Redis's suite: `MULTI where commands alter argc/argv`, `XRANGE exclusive ranges`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::BytesMut;
use common::RedisCluster;
use common::proxy::{Proxy, Raw};
use common::sentinel::StandaloneServer;
use respgate::slot::Slot;

fn text(reply: Vec<u8>) -> String {
    String::from_utf8_lossy(&reply).into_owned()
}

/// Runs each command on `raw` and collects the replies as text.
fn run(raw: &mut Raw, commands: &[&[&str]]) -> Vec<String> {
    commands.iter().map(|c| text(raw.command(c))).collect()
}

/// Hash tags whose slots are on three different masters of `cluster`.
fn tags_on_every_master(cluster: &RedisCluster) -> Vec<String> {
    let mut tags: Vec<(String, u16)> = Vec::new();
    for i in 0.. {
        let tag = format!("{{m{i}}}");
        let owner = cluster.slot_owner(Slot::for_key(tag.as_bytes()).get());
        if !tags.iter().any(|(_, o)| *o == owner) {
            tags.push((tag, owner));
        }
        if tags.len() == cluster.master_ports().len() {
            break;
        }
    }
    tags.into_iter().map(|(tag, _)| tag).collect()
}

/// Transactions on keys of each tag in turn, after a keyless transaction and a blocking
/// command on another key, with commands that Redis rewrites when it propagates them.
fn transactions_seen_on(port: u16, tags: &[String]) -> Vec<String> {
    let mut raw = Raw::connect(port);
    let mut seen = run(&mut raw, &[&["MULTI"], &["MULTI"], &["PING"], &["EXEC"]]);
    for (i, tag) in tags.iter().enumerate() {
        let set = format!("{tag}set");
        let other = &tags[(i + 1) % tags.len()];
        let list = format!("{other}list");
        let stream = format!("{tag}vip");
        seen.extend(run(
            &mut raw,
            &[
                &["BLPOP", &list, "0.01"],
                &["SADD", &set, "a"],
                // MULTI where commands alter argc/argv.
                &["MULTI"],
                &["SPOP", &set],
                &["EXPIRE", &set, "100"],
                &["EXEC"],
                &["EXISTS", &set],
                // XRANGE exclusive ranges, the stream written in a transaction.
                &["MULTI"],
                &["DEL", &stream],
                &["XADD", &stream, "0-1", "f", "v"],
                &["XADD", &stream, "1-0", "f", "v"],
                &["XADD", &stream, "42-42", "f", "v"],
                &["EXEC"],
                &["XRANGE", &stream, "(0-1", "(42-42"],
                &["MULTI"],
                &["XRANGE", &stream, "(0-1", "+"],
                &["XRANGE", &stream, "(-", "+"],
                &["EXEC"],
            ],
        ));
    }
    seen
}

#[test]
fn a_transaction_runs_on_its_keys_master_whatever_the_client_did_before() {
    let server = StandaloneServer::start();
    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds());
    let tags = tags_on_every_master(&cluster);
    let redis = transactions_seen_on(server.port, &tags);
    assert_eq!(transactions_seen_on(proxy.port, &tags), redis);
    assert_eq!(redis[3], "*1\r\n+PONG\r\n", "a keyless transaction");
    assert_eq!(
        &redis[9..11],
        ["*2\r\n$1\r\na\r\n:0\r\n", ":0\r\n"],
        "SPOP took the member and EXPIRE found no key"
    );
}

/// Errors Redis gives while queuing and while executing, and commands Redis does not queue.
fn queuing_seen_on(port: u16) -> Vec<String> {
    let mut raw = Raw::connect(port);
    let mut seen = run(
        &mut raw,
        &[
            &["SET", "{q}s", "text"],
            &["MULTI"],
            &["INCR", "{q}s"],
            &["LPUSH", "{q}s", "x"],
            &["GET", "{q}s"],
            &["EXEC"],
            &["MULTI"],
            &["SET", "{q}a", "1"],
            &["NOSUCHCOMMAND"],
            &["GET"],
            &["WATCH", "{q}a"],
            &["MULTI"],
            &["SET", "{q}b", "2"],
            &["EXEC"],
            &["EXISTS", "{q}a", "{q}b"],
            &["MULTI"],
            &["SET", "{q}c", "3"],
            &["RESET"],
            &["EXISTS", "{q}c"],
            &["EXEC"],
            &["MULTI"],
            &["DISCARD"],
            &["DISCARD"],
        ],
    );
    seen.extend(run(&mut raw, &[&["MULTI"], &["QUIT"]]));
    seen.push(format!("closed: {}", raw.is_closed()));
    seen
}

#[test]
fn transactions_queue_and_refuse_what_redis_does() {
    let server = StandaloneServer::start();
    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds());
    let redis = queuing_seen_on(server.port);
    assert_eq!(queuing_seen_on(proxy.port), redis);
    assert_eq!(
        redis[5],
        "*3\r\n-ERR value is not an integer or out of range\r\n-WRONGTYPE Operation against a key holding the wrong kind of value\r\n$4\r\ntext\r\n"
    );
    assert_eq!(
        &redis[17..20],
        ["+RESET\r\n", ":0\r\n", "-ERR EXEC without MULTI\r\n"],
        "RESET acts at once inside MULTI and discards it"
    );
}

/// A transaction sent in one write, as pipelining clients send it, with replies read after.
fn pipelined_seen_on(port: u16) -> Vec<String> {
    let mut raw = Raw::connect(port);
    let mut commands: Vec<Vec<String>> = vec![vec!["PING".into()], vec!["MULTI".into()]];
    commands.push(vec!["ECHO".into(), "before any key".into()]);
    for i in 0..200 {
        commands.push(vec!["RPUSH".into(), "{p}list".into(), i.to_string()]);
    }
    commands.push(vec!["LLEN".into(), "{p}list".into()]);
    commands.push(vec!["EXEC".into()]);
    commands.push(vec!["MULTI".into()]);
    commands.push(vec!["INCR".into(), "{p}n".into()]);
    commands.push(vec!["NOSUCH".into()]);
    commands.push(vec!["INCR".into(), "{p}n".into()]);
    commands.push(vec!["EXEC".into()]);
    commands.push(vec!["GET".into(), "{p}n".into()]);
    let mut out = BytesMut::new();
    for command in &commands {
        respgate::protocol::request::encode_command(&mut out, command);
    }
    raw.send(&out);
    commands.iter().map(|_| text(raw.reply())).collect()
}

#[test]
fn a_pipelined_transaction_gets_the_replies_of_redis_in_order() {
    let server = StandaloneServer::start();
    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds());
    let redis = pipelined_seen_on(server.port);
    assert_eq!(pipelined_seen_on(proxy.port), redis);
    assert_eq!(redis[203], "+QUEUED\r\n");
    assert!(redis[204].starts_with("*202\r\n$14\r\nbefore any key\r\n:1\r\n"));
    assert_eq!(
        redis.last().unwrap(),
        "$-1\r\n",
        "the aborted INCRs did not run"
    );
}

/// Transactions aborted while queuing, each sent in one write with what follows it, as client
/// libraries send them: every kind of queuing error, before and after the first key, ended by
/// `EXEC` or `DISCARD`.
fn aborted_pipelines_seen_on(port: u16) -> Vec<String> {
    let errors: [&[&str]; 5] = [
        &["NOSUCHCMD"],
        &["GET"],
        &["WATCH", "{a}k"],
        &["MULTI"],
        &["SUBSCRIBE"],
    ];
    let mut seen = Vec::new();
    for error in errors {
        for keyed_first in [false, true] {
            for end in ["EXEC", "DISCARD"] {
                let mut raw = Raw::connect(port);
                let end = [end];
                let mut commands: Vec<&[&str]> = vec![&["MULTI"]];
                if keyed_first {
                    commands.push(&["INCR", "{a}n"]);
                }
                commands.extend([error, &end[..], &["PING"], &["GET", "{a}n"]]);
                let mut out = BytesMut::new();
                for command in &commands {
                    respgate::protocol::request::encode_command(&mut out, command);
                }
                raw.send(&out);
                seen.extend(commands.iter().map(|_| text(raw.reply())));
            }
        }
    }
    seen
}

#[test]
fn a_transaction_aborted_inside_a_pipeline_leaves_the_rest_answered_in_order() {
    let server = StandaloneServer::start();
    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds());
    let redis = aborted_pipelines_seen_on(server.port);
    let ours = aborted_pipelines_seen_on(proxy.port);
    for (i, (theirs, mine)) in redis.iter().zip(&ours).enumerate() {
        assert_eq!(mine, theirs, "reply {i}");
    }
    assert_eq!(ours.len(), redis.len());
    assert!(redis.iter().filter(|r| *r == "+PONG\r\n").count() == 20);
    assert!(redis.iter().any(|r| r.starts_with("-EXECABORT")));
}
