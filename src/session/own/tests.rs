//! Unit tests of the own connection: blocking commands and a restricted user's twin, against
//! scripted nodes.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::backend::scripted::{Act, ScriptedNodes};
use crate::config::BackendConfig;
use crate::protocol::Request;
use crate::slot::Slot;
use crate::workers::WorkerSet;

pub(super) const A: &str = "10.0.0.1:6379";
pub(super) const B: &str = "10.0.0.2:6379";

/// A backend whose every slot `A` of `nodes` serves.
pub(super) fn cluster_on_a(nodes: &std::sync::Arc<ScriptedNodes>) -> std::sync::Arc<Backend> {
    let cluster = Backend::with_connector(
        "test",
        BackendConfig::default(),
        WorkerSet::inline(),
        nodes.clone(),
    );
    cluster.serve_all_slots_from(&NodeAddr::new(A));
    cluster
}

/// `BLPOP q 0` on a client's own connection, slot 5 served by `A` of `nodes`.
async fn blpop_on_slot_5(nodes: &std::sync::Arc<ScriptedNodes>) -> Bytes {
    let cluster = cluster_on_a(nodes);
    let payload = Request::from_args(vec!["BLPOP".into(), "q".into(), "0".into()]).raw;
    let op = OwnOp::Blocking {
        backend: BackendId(0),
        payload,
        target: Target::Slot(Slot::new(5).unwrap()),
    };
    let as_user = AsUser {
        login: None,
        protocol: Protocol::Resp2,
        db: 0,
    };
    run_on(&cluster, &mut None, op, as_user, None).await
}

#[tokio::test(start_paused = true)]
async fn a_blocking_command_follows_moved_and_tryagain_like_any_other() {
    let nodes = ScriptedNodes::new();
    nodes.node(A, |_, _| {
        Act::Reply(format!("-MOVED 5 {B}\r\n").into_bytes())
    });
    nodes.node(B, |_, seen| match seen {
        0 => Act::Reply(b"-TRYAGAIN slot migrating\r\n".to_vec()),
        _ => Act::Reply(b"*2\r\n$1\r\nq\r\n$1\r\nx\r\n".to_vec()),
    });
    let got = blpop_on_slot_5(&nodes).await;
    assert_eq!(&got[..], b"*2\r\n$1\r\nq\r\n$1\r\nx\r\n");
    assert_eq!(nodes.received(A), ["BLPOP q 0"]);
    assert_eq!(nodes.received(B), ["BLPOP q 0", "BLPOP q 0"]);
}

/// `op` on slot 5 served by `A` of `nodes`, as the twin `login`.
async fn as_twin(
    nodes: &std::sync::Arc<ScriptedNodes>,
    op: impl Fn(Bytes, Target) -> OwnOp,
    command: &[&str],
    login: &Result<NodeLogin, BackendError>,
) -> String {
    let cluster = cluster_on_a(nodes);
    let payload =
        Request::from_args(command.iter().map(|a| Bytes::from(a.to_string())).collect()).raw;
    let as_user = AsUser {
        login: Some(login),
        protocol: Protocol::Resp2,
        db: 0,
    };
    let op = op(payload, Target::Slot(Slot::new(5).unwrap()));
    let got = run_on(&cluster, &mut None, op, as_user, None).await;
    String::from_utf8_lossy(&got).into_owned()
}

fn script(payload: Bytes, target: Target) -> OwnOp {
    OwnOp::Script {
        backend: BackendId(0),
        payload,
        target,
    }
}

fn twin() -> NodeLogin {
    NodeLogin {
        user: "respgate:app".into(),
        password: "derived".into(),
        setuser: ["ACL", "SETUSER", "respgate:app", "reset", "on", "~app:*"]
            .map(String::from)
            .to_vec(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_restricted_users_script_runs_as_its_twin_made_on_a_node_that_lacks_it() {
    let nodes = ScriptedNodes::new();
    nodes.node(A, |args, seen| match args.first().map(String::as_str) {
        Some("CLIENT") => Act::Reply(b":7\r\n".to_vec()),
        // The node does not know the twin yet: the first login fails.
        Some("AUTH") if seen == 1 => {
            Act::Reply(b"-WRONGPASS invalid username-password pair\r\n".to_vec())
        }
        _ => Act::Reply(b"+OK\r\n".to_vec()),
    });
    let mut login = twin();
    let got = as_twin(
        &nodes,
        script,
        &["EVAL", "return 1", "0"],
        &Ok(login.clone()),
    )
    .await;
    assert_eq!(got, "+OK\r\n");
    assert_eq!(
        nodes.received(A),
        [
            "CLIENT ID",
            "AUTH respgate:app derived",
            "ACL SETUSER respgate:app reset on ~app:*",
            "AUTH respgate:app derived",
            "EVAL return 1 0"
        ]
    );
    // A node that knows it: one login, no SETUSER.
    let nodes = ScriptedNodes::new();
    nodes.node(A, |_, _| Act::Reply(b"+OK\r\n".to_vec()));
    login.password = "known".into();
    as_twin(&nodes, script, &["FCALL", "f", "0"], &Ok(login)).await;
    assert_eq!(
        nodes.received(A),
        ["CLIENT ID", "AUTH respgate:app known", "FCALL f 0"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_node_that_cannot_hold_the_twin_refuses_its_scripts_and_serves_the_rest() {
    let nodes = ScriptedNodes::new();
    nodes.node(A, |args, _| match args.first().map(String::as_str) {
        Some("CLIENT") => Act::Reply(b":7\r\n".to_vec()),
        Some("AUTH") => Act::Reply(b"-WRONGPASS invalid username-password pair\r\n".to_vec()),
        Some("ACL") => Act::Reply(
            b"-NOPERM this user has no permissions to run the 'acl|setuser' command\r\n".to_vec(),
        ),
        _ => Act::Reply(b"*2\r\n$1\r\nq\r\n$1\r\nx\r\n".to_vec()),
    });
    let login = Ok(twin());
    let got = as_twin(&nodes, script, &["EVAL", "return 1", "0"], &login).await;
    assert!(
        got.starts_with("-ERR respgate: backend 10.0.0.1:6379 refused the connection's setup: it cannot hold the user \"respgate:app\"")
            && got.contains("ACL SETUSER: NOPERM"),
        "{got}"
    );
    assert!(!nodes.received(A).iter().any(|c| c.starts_with("EVAL")));
    let blocking = |payload, target| OwnOp::Blocking {
        backend: BackendId(0),
        payload,
        target,
    };
    let got = as_twin(&nodes, blocking, &["BLPOP", "q", "0"], &login).await;
    assert_eq!(got, "*2\r\n$1\r\nq\r\n$1\r\nx\r\n");
}

#[tokio::test(start_paused = true)]
async fn a_blocking_command_whose_connection_drops_is_not_resent() {
    let nodes = ScriptedNodes::new();
    nodes.node(A, |_, _| Act::Close);
    let got = blpop_on_slot_5(&nodes).await;
    assert!(String::from_utf8_lossy(&got).contains("may or may not have run"));
    assert_eq!(nodes.received(A), ["BLPOP q 0"]);
}
