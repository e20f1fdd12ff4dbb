//! The retry and redirect engine against scripted nodes, with paused time: what a client sees
//! when nodes redirect, stall, drop connections or refuse them, and that no write is sent twice.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::slot::Slot;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::backend::BackendError;
use crate::backend::scripted::{Act, ScriptedNodes};
use crate::command::Access;
use crate::config::BackendConfig;
use crate::protocol::Protocol;
use crate::workers::WorkerSet;

const A: &str = "10.0.0.1:6379";
const B: &str = "10.0.0.2:6379";

/// A cluster reached through `nodes` whose slot map says `A` serves every slot.
fn cluster_on(nodes: &Arc<ScriptedNodes>, config: BackendConfig) -> Arc<Backend> {
    let cluster = Backend::with_connector("test", config, WorkerSet::inline(), nodes.clone());
    cluster.serve_all_slots_from(&NodeAddr::new(A));
    cluster
}

fn config() -> BackendConfig {
    BackendConfig {
        seeds: vec![A.to_string()],
        ..BackendConfig::default()
    }
}

fn command(args: &[&str]) -> Bytes {
    crate::protocol::Request::from_args(args.iter().map(|a| Bytes::from(a.to_string())).collect())
        .raw
}

async fn run(cluster: &Backend, args: &[&str], slot: u16, access: Access) -> String {
    let target = Target::Slot(Slot::new(slot).unwrap());
    let reply = cluster
        .execute(Sending {
            payload: command(args),
            target,
            access,
            protocol: Protocol::Resp2,
            db: 0,
            affinity: 0,
        })
        .await;
    String::from_utf8_lossy(&reply).into_owned()
}

fn reply(bytes: &str) -> Act {
    Act::Reply(bytes.as_bytes().to_vec())
}

#[tokio::test(start_paused = true)]
async fn moved_is_followed_and_remembered_for_the_slot() {
    let nodes = ScriptedNodes::new();
    nodes.node(A, |_, _| reply(&format!("-MOVED 1234 {B}\r\n")));
    nodes.node(B, |_, _| reply("$1\r\nv\r\n"));
    let cluster = cluster_on(&nodes, config());
    assert_eq!(
        run(&cluster, &["GET", "k"], 1234, Access::Read).await,
        "$1\r\nv\r\n"
    );
    assert_eq!(
        cluster
            .slot_map()
            .master(Slot::new(1234).unwrap())
            .unwrap()
            .addr()
            .as_str(),
        B,
        "the map points the slot at the new owner until the next refresh"
    );
    assert_eq!(
        run(&cluster, &["GET", "k"], 1234, Access::Read).await,
        "$1\r\nv\r\n"
    );
    assert_eq!(
        nodes.received(A),
        ["GET k"],
        "the second GET went straight to B"
    );
    assert_eq!(nodes.received(B), ["GET k", "GET k"]);
}

#[tokio::test(start_paused = true)]
async fn ask_sends_asking_first_and_leaves_the_map_alone() {
    let nodes = ScriptedNodes::new();
    nodes.node(A, |_, _| reply(&format!("-ASK 7 {B}\r\n")));
    nodes.node(B, |args, _| match args[0].as_str() {
        "ASKING" => reply("+OK\r\n"),
        _ => reply("$2\r\nhi\r\n"),
    });
    let cluster = cluster_on(&nodes, config());
    assert_eq!(
        run(&cluster, &["GET", "k"], 7, Access::Read).await,
        "$2\r\nhi\r\n"
    );
    assert_eq!(nodes.received(B), ["ASKING", "GET k"]);
    assert_eq!(
        cluster
            .slot_map()
            .master(Slot::new(7).unwrap())
            .unwrap()
            .addr()
            .as_str(),
        A
    );
}

#[tokio::test(start_paused = true)]
async fn a_write_asked_of_a_node_the_map_does_not_name_is_acknowledged() {
    // B imports the slot and serves no other (a master that joined empty): the map names
    // neither it nor any replacement of A, and its reply is the write's.
    let nodes = ScriptedNodes::new();
    nodes.node(A, |_, _| reply(&format!("-ASK 7 {B}\r\n")));
    nodes.node(B, |args, _| match args[0].as_str() {
        "ASKING" => reply("+OK\r\n"),
        _ => reply(":42\r\n"),
    });
    let cluster = cluster_on(&nodes, config());
    assert_eq!(
        run(&cluster, &["INCR", "n"], 7, Access::Write).await,
        ":42\r\n"
    );
    assert_eq!(nodes.received(B), ["ASKING", "INCR n"], "sent once");
}

#[tokio::test(start_paused = true)]
async fn a_write_acknowledged_by_a_master_since_replaced_is_not_taken_as_done() {
    // A answers after the map has made B the slot's master and A a master no more (a stopped
    // master that resumed): the write will be undone when A rejoins as a replica.
    let nodes = ScriptedNodes::new();
    nodes.node(B, |_, _| reply(":1\r\n"));
    let cluster = cluster_on(&nodes, config());
    let switch = Arc::downgrade(&cluster);
    nodes.node(A, move |_, _| {
        if let Some(cluster) = switch.upgrade() {
            cluster.serve_all_slots_from(&NodeAddr::new(B));
        }
        reply(":1\r\n")
    });
    let got = run(&cluster, &["INCR", "n"], 7, Access::Write).await;
    assert!(got.contains("may or may not have run"), "{got}");
    assert!(nodes.received(B).is_empty(), "never sent again");
}

#[tokio::test(start_paused = true)]
async fn tryagain_is_waited_out_and_the_client_never_sees_it() {
    let nodes = ScriptedNodes::new();
    nodes.node(A, |_, seen| {
        if seen < 3 {
            reply("-TRYAGAIN Multiple keys request during rehashing of slot\r\n")
        } else {
            reply("+OK\r\n")
        }
    });
    let cluster = cluster_on(&nodes, config());
    assert_eq!(
        run(&cluster, &["SET", "k", "v"], 1, Access::Write).await,
        "+OK\r\n"
    );
    assert_eq!(nodes.received(A).len(), 4);
    assert_eq!(cluster.stats.retries.load(Ordering::Relaxed), 3);
}

#[tokio::test(start_paused = true)]
async fn a_retryable_error_past_the_budget_reaches_the_client_as_the_node_said_it() {
    let nodes = ScriptedNodes::new();
    nodes.node(A, |_, _| reply("-CLUSTERDOWN The cluster is down\r\n"));
    let cluster = cluster_on(
        &nodes,
        BackendConfig {
            max_retries: 3,
            ..config()
        },
    );
    assert_eq!(
        run(&cluster, &["GET", "k"], 1, Access::Read).await,
        "-CLUSTERDOWN The cluster is down\r\n"
    );
    assert_eq!(
        nodes.received(A).len(),
        4,
        "the first attempt and three retries"
    );
}

#[tokio::test(start_paused = true)]
async fn redirects_stop_at_max_redirects() {
    let nodes = ScriptedNodes::new();
    nodes.node(A, |_, _| reply(&format!("-MOVED 1 {B}\r\n")));
    nodes.node(B, |_, _| reply(&format!("-MOVED 1 {A}\r\n")));
    let cluster = cluster_on(
        &nodes,
        BackendConfig {
            max_redirects: 3,
            ..config()
        },
    );
    assert_eq!(
        run(&cluster, &["GET", "k"], 1, Access::Read).await,
        "-ERR respgate: gave up after 3 redirects; the cluster is changing, try again\r\n"
    );
    assert_eq!(nodes.received(A).len() + nodes.received(B).len(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_write_whose_connection_is_lost_is_never_sent_again() {
    let nodes = ScriptedNodes::new();
    nodes.node(A, |_, _| Act::Close);
    let cluster = cluster_on(&nodes, config());
    let got = run(&cluster, &["INCR", "n"], 1, Access::Write).await;
    assert_eq!(
        got,
        format!(
            "-ERR respgate: connection to backend {A} lost before it replied; the command may or may not have run\r\n"
        )
    );
    assert_eq!(nodes.received(A), ["INCR n"], "sent once, never again");
}

#[tokio::test(start_paused = true)]
async fn a_read_whose_connection_is_lost_is_sent_again() {
    let nodes = ScriptedNodes::new();
    nodes.node(A, |_, seen| {
        if seen == 0 {
            Act::Close
        } else {
            reply("$1\r\n1\r\n")
        }
    });
    let cluster = cluster_on(&nodes, config());
    assert_eq!(
        run(&cluster, &["GET", "n"], 1, Access::Read).await,
        "$1\r\n1\r\n"
    );
    assert_eq!(nodes.received(A), ["GET n", "GET n"]);
}

#[tokio::test(start_paused = true)]
async fn a_silent_node_times_out_and_the_write_is_not_resent() {
    let nodes = ScriptedNodes::new();
    nodes.node(A, |_, _| Act::Hang);
    let cluster = cluster_on(
        &nodes,
        BackendConfig {
            request_timeout_ms: 700,
            ..config()
        },
    );
    let started = tokio::time::Instant::now();
    let got = run(&cluster, &["SET", "k", "v"], 1, Access::Write).await;
    assert_eq!(
        got,
        format!(
            "-ERR respgate: backend {A} did not reply within 700 ms; the command may or may not have run\r\n"
        )
    );
    assert_eq!(started.elapsed(), Duration::from_millis(700));
    assert_eq!(nodes.received(A), ["SET k v"]);
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_node_is_retried_within_the_budget_then_reported() {
    let nodes = ScriptedNodes::new();
    let cluster = cluster_on(
        &nodes,
        BackendConfig {
            max_retries: 4,
            reconnect_backoff_min_ms: 1,
            reconnect_backoff_max_ms: 1,
            ..config()
        },
    );
    let got = run(&cluster, &["SET", "k", "v"], 1, Access::Write).await;
    assert!(
        got.starts_with(&format!("-ERR respgate: backend {A} unreachable")),
        "{got}"
    );
    assert_eq!(cluster.stats.retries.load(Ordering::Relaxed), 4);
}

#[tokio::test(start_paused = true)]
async fn a_node_that_comes_back_serves_the_retried_write_once() {
    let nodes = ScriptedNodes::new();
    let cluster = cluster_on(
        &nodes,
        BackendConfig {
            reconnect_backoff_min_ms: 5,
            reconnect_backoff_max_ms: 5,
            ..config()
        },
    );
    let nodes_later = nodes.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(60)).await;
        nodes_later.node(A, |_, _| reply(":1\r\n"));
    });
    assert_eq!(
        run(&cluster, &["INCR", "n"], 1, Access::Write).await,
        ":1\r\n"
    );
    assert_eq!(nodes.received(A), ["INCR n"]);
}

#[tokio::test(start_paused = true)]
async fn a_connection_lost_mid_pipeline_fails_only_what_was_in_flight() {
    let nodes = ScriptedNodes::new();
    // The first connection answers one command, then drops with the others unanswered; the
    // next connection answers everything.
    nodes.node(A, |args, seen| match (seen, args[0].as_str()) {
        (0, _) => reply("+OK\r\n"),
        (1..=3, _) => Act::Close,
        (_, "GET") => reply("$1\r\nv\r\n"),
        _ => reply("+OK\r\n"),
    });
    let cluster = cluster_on(&nodes, config());
    let (a, b, c) = tokio::join!(
        run(&cluster, &["SET", "a", "1"], 1, Access::Write),
        run(&cluster, &["SET", "b", "2"], 1, Access::Write),
        run(&cluster, &["GET", "c"], 1, Access::Read),
    );
    assert_eq!(a, "+OK\r\n");
    assert!(b.contains("may or may not have run"), "{b}");
    assert_eq!(
        c, "$1\r\nv\r\n",
        "the read is sent again on a new connection"
    );
    let sets = nodes
        .received(A)
        .iter()
        .filter(|c| c.starts_with("SET b"))
        .count();
    assert_eq!(sets, 1, "the write in flight is never resent");
}

#[tokio::test]
async fn a_node_answering_command_with_a_deeply_nested_reply_cannot_crash_the_refresh() {
    let nodes = ScriptedNodes::new();
    nodes.node(A, |args, _| match args.join(" ").as_str() {
        "CLUSTER NODES" => {
            let line = format!("aaaa {A}@16379 myself,master - 0 0 1 connected 0-16383\n");
            reply(&format!("${}\r\n{line}\r\n", line.len()))
        }
        "COMMAND" => {
            let depth = 100_000;
            let mut deep = "*1\r\n".repeat(depth);
            deep.push_str(":1\r\n");
            Act::Reply(deep.into_bytes())
        }
        _ => reply("-ERR unexpected\r\n"),
    });
    let cluster = Backend::with_connector("test", config(), WorkerSet::inline(), nodes.clone());
    // Run where a recursive decoder would overflow: a small stack.
    let outcome = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async { topology::refresh(&cluster).await.map_err(|e| e.to_string()) })
        })
        .unwrap()
        .join()
        .expect("the refresh thread survives");
    let error = outcome.expect_err("a 100,000-deep COMMAND reply is refused");
    assert!(error.contains("COMMAND"), "{error}");
    assert!(nodes.received(A).contains(&"COMMAND".to_string()));
}

#[tokio::test(start_paused = true)]
async fn a_read_whose_first_attempt_timed_out_ends_within_the_request_and_retry_timeouts() {
    // The session's first attempt (made before the engine is asked) waited out the request
    // timeout on a node that no longer answers; the engine's retries must count from then.
    let nodes = ScriptedNodes::new();
    nodes.node(A, |_, _| Act::Hang);
    let cluster = cluster_on(
        &nodes,
        BackendConfig {
            request_timeout_ms: 5000,
            retry_timeout_ms: 8000,
            max_retries: 10,
            ..config()
        },
    );
    let started = tokio::time::Instant::now();
    tokio::time::advance(Duration::from_millis(5000)).await;
    let first = Err(BackendError::Timeout {
        addr: NodeAddr::new(A),
        timeout_ms: 5000,
    });
    let target = Target::Slot(Slot::new(1).unwrap());
    let (got, _) = cluster
        .serve_after(
            Some((cluster.pool(&NodeAddr::new(A)), first)),
            Sending {
                payload: command(&["GET", "k"]),
                target,
                access: Access::Read,
                protocol: Protocol::Resp2,
                db: 0,
                affinity: 0,
            },
        )
        .await;
    assert!(String::from_utf8_lossy(&got).contains("did not reply within 5000 ms"));
    let took = started.elapsed();
    assert!(
        took <= Duration::from_millis(13_000),
        "the read ended {took:?} after it was sent: three timeouts in a row"
    );
    assert!(
        took >= Duration::from_millis(10_000),
        "it was retried once: {took:?}"
    );
}
