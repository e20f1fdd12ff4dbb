//! Batches against scripted nodes, with paused time: one reply per command in order, on any
//! database; a batch cut by a lost connection keeps the replies that came; and each command's
//! outcome judged as the retry engine judges a single command's.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::*;
use crate::backend::scripted::{Act, ScriptedNodes};
use crate::backend::{BackendError, NodeAddr};
use crate::config::BackendConfig;
use crate::protocol::Protocol;
use crate::protocol::request::encode_command;
use crate::workers::WorkerSet;

const A: &str = "10.0.0.1:6379";
const B: &str = "10.0.0.2:6379";

fn cluster_on(nodes: &Arc<ScriptedNodes>) -> Arc<Backend> {
    let config = BackendConfig {
        seeds: vec![A.to_string()],
        ..BackendConfig::default()
    };
    let cluster = Backend::with_connector("test", config, WorkerSet::inline(), nodes.clone());
    cluster.serve_all_slots_from(&NodeAddr::new(A));
    cluster
}

/// The commands, one after the other, as one payload.
fn commands(commands: &[&[&str]]) -> Bytes {
    let mut out = BytesMut::new();
    for args in commands {
        encode_command(&mut out, args);
    }
    out.freeze()
}

fn text(reply: &Reply) -> String {
    String::from_utf8_lossy(&reply.bytes).into_owned()
}

fn slot(n: u16) -> Slot {
    Slot::new(n).unwrap()
}

/// A node that answers `GET x` with `x`'s name as its value and anything else with `+OK`.
fn echo(args: &[String], _: usize) -> Act {
    match args {
        [get, key] if get == "GET" => Act::Reply(format!("${}\r\n{key}\r\n", key.len()).into()),
        _ => Act::Reply(b"+OK\r\n".to_vec()),
    }
}

#[tokio::test(start_paused = true)]
async fn a_batch_gets_one_reply_per_command_in_order_also_on_another_database() {
    let nodes = ScriptedNodes::new();
    nodes.node(A, echo);
    let cluster = cluster_on(&nodes);
    let pool = cluster.pool(&NodeAddr::new(A));
    let payload = commands(&[&["GET", "a"], &["GET", "bb"], &["GET", "c"]]);
    let batched = pool
        .send_batch(Protocol::Resp2, 0, payload.clone(), 3, 2)
        .replies()
        .await;
    assert!(batched.failure.is_none());
    let replies: Vec<String> = batched.replies.iter().map(text).collect();
    assert_eq!(replies, ["$1\r\na\r\n", "$2\r\nbb\r\n", "$1\r\nc\r\n"]);
    assert_eq!(
        nodes.received(A),
        ["SELECT 2", "GET a", "GET bb", "GET c", "SELECT 0"]
    );
    // The connection is back on database 0 and in step: a single command gets its own reply.
    let reply = pool
        .send(Protocol::Resp2, 0, commands(&[&["GET", "d"]]), false, 0)
        .await
        .unwrap();
    assert_eq!(text(&reply), "$1\r\nd\r\n");
}

#[tokio::test(start_paused = true)]
async fn a_batch_cut_by_a_lost_connection_keeps_the_replies_that_came_and_sends_no_write_twice() {
    let nodes = ScriptedNodes::new();
    nodes.node(A, |args, seen| match seen {
        0 | 1 => echo(args, seen),
        _ => Act::Close,
    });
    let cluster = cluster_on(&nodes);
    let pool = cluster.pool(&NodeAddr::new(A));
    let payload = commands(&[&["SET", "a", "1"], &["SET", "b", "2"], &["SET", "c", "3"]]);
    let batched = pool
        .send_batch(Protocol::Resp2, 0, payload, 3, 0)
        .replies()
        .await;
    let replies: Vec<String> = batched.replies.iter().map(text).collect();
    assert_eq!(replies, ["+OK\r\n", "+OK\r\n"], "the replies that came");
    let failure = batched.failure.expect("the third has none");
    assert!(matches!(failure, BackendError::Lost { .. }), "{failure:?}");
    // The third write may have run: its outcome is final, an error, never a resend.
    let node = cluster
        .first_node(
            &cluster.slot_map(),
            &Target::Slot(slot(3)),
            Access::Write,
            0,
            true,
        )
        .unwrap();
    match cluster.settle_part(
        &cluster.slot_map(),
        slot(3),
        Access::Write,
        &node,
        Err(failure),
    ) {
        Settled::Reply(bytes) => assert!(
            String::from_utf8_lossy(&bytes).contains("may or may not have run"),
            "{bytes:?}"
        ),
        other => panic!("a lost write must not run again: {other:?}"),
    }
    assert_eq!(nodes.received(A), ["SET a 1", "SET b 2", "SET c 3"]);
}

#[tokio::test(start_paused = true)]
async fn each_outcome_is_judged_as_a_single_commands_would_be() {
    let nodes = ScriptedNodes::new();
    nodes.node(A, echo);
    let cluster = cluster_on(&nodes);
    let map = cluster.slot_map();
    let node = cluster
        .first_node(&map, &Target::Slot(slot(7)), Access::Write, 0, true)
        .unwrap();
    assert_eq!(node.pool.addr().as_str(), A);
    let reply = |bytes: &str| {
        let bytes = Bytes::from(bytes.to_string());
        let frame = crate::protocol::frame_reply(&bytes, Protocol::Resp2)
            .unwrap()
            .unwrap();
        Ok(Reply {
            bytes,
            kind: frame.kind,
        })
    };
    // A plain reply is final.
    assert!(matches!(
        cluster.settle_part(&map, slot(7), Access::Write, &node, reply("+OK\r\n")),
        Settled::Reply(bytes) if bytes == "+OK\r\n"
    ));
    // An error that is not a redirect nor retryable is the node's answer.
    assert!(matches!(
        cluster.settle_part(&map, slot(7), Access::Write, &node, reply("-OOM no\r\n")),
        Settled::Reply(bytes) if bytes == "-OOM no\r\n"
    ));
    // MOVED: run again on its own, where the slot map now points.
    let moved = format!("-MOVED 7 {B}\r\n");
    assert!(matches!(
        cluster.settle_part(&map, slot(7), Access::Write, &node, reply(&moved)),
        Settled::Again(delay) if delay.is_zero()
    ));
    assert_eq!(
        cluster.slot_map().master(slot(7)).unwrap().addr().as_str(),
        B
    );
    // TRYAGAIN: again after a pause.
    assert!(matches!(
        cluster.settle_part(&map, slot(8), Access::Write, &node, reply("-TRYAGAIN later\r\n")),
        Settled::Again(delay) if delay > Duration::ZERO
    ));
    // A read that timed out may run again; a write may not.
    let timeout = || {
        Err(BackendError::Timeout {
            addr: NodeAddr::new(A),
            timeout_ms: 1,
        })
    };
    assert!(matches!(
        cluster.settle_part(&map, slot(8), Access::Read, &node, timeout()),
        Settled::Again(_)
    ));
    assert!(matches!(
        cluster.settle_part(&map, slot(8), Access::Write, &node, timeout()),
        Settled::Reply(_)
    ));
    // A write acknowledged by a node no longer master of the slot, nor of any: its fate is
    // unknown (it will be undone when the node rejoins as a replica).
    let stale = FirstNode {
        pool: cluster.pool(&NodeAddr::new(A)),
        replica: false,
    };
    cluster.serve_all_slots_from(&NodeAddr::new(B));
    let now = cluster.slot_map();
    assert!(matches!(
        cluster.settle_part(&now, slot(9), Access::Write, &stale, reply("+OK\r\n")),
        Settled::Reply(bytes) if bytes.starts_with(b"-ERR respgate: connection to backend")
    ));
}
