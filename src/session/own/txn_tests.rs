//! Transaction batches on the own connection against scripted nodes: a slot that moves while
//! the transaction is queued, and a connection lost between queuing and `EXEC`.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::backend::scripted::{Act, ScriptedNodes};
use crate::protocol::request::encode_command;
use crate::slot::Slot;

use super::tests::{A, B, cluster_on_a};

/// A batch of `commands` for slot 5, opening the transaction when `opens`, with the client's
/// replies `parts`.
fn batch(commands: &[&[&str]], opens: bool, parts: Vec<Part>) -> OwnOp {
    let mut payload = BytesMut::new();
    for command in commands {
        encode_command(&mut payload, command);
    }
    OwnOp::Txn(TxnBatch {
        place: Some(Place {
            backend: BackendId(0),
            slot: Slot::new(5).unwrap(),
        }),
        watched: false,
        opens,
        payload,
        parts,
        release: false,
        needs_user: false,
    })
}

async fn run(cluster: &Backend, own: &mut Option<OwnConn>, op: OwnOp) -> String {
    let as_user = AsUser {
        login: None,
        protocol: Protocol::Resp2,
        db: 0,
    };
    let reply = run_on(cluster, own, op, as_user, None).await;
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test(start_paused = true)]
async fn a_command_queued_after_its_slot_moved_gets_an_error_and_exec_aborts() {
    let nodes = ScriptedNodes::new();
    nodes.node(A, |args, _| match args.first().map(String::as_str) {
        Some("MULTI") => Act::Reply(b"+OK\r\n".to_vec()),
        Some("SET") => Act::Reply(format!("-MOVED 5 {B}\r\n").into_bytes()),
        _ => {
            Act::Reply(b"-EXECABORT Transaction discarded because of previous errors.\r\n".to_vec())
        }
    });
    let cluster = cluster_on_a(&nodes);
    let mut own = None;
    let opening = batch(
        &[&["MULTI"], &["SET", "k", "v"]],
        true,
        vec![Part::Skip, Part::Queued],
    );
    assert_eq!(
        run(&cluster, &mut own, opening).await,
        "-ERR respgate: slot 5 moved to another node while the transaction was queued; EXEC will abort it\r\n"
    );
    let exec = batch(&[&["EXEC"]], false, vec![Part::Exec]);
    assert_eq!(
        run(&cluster, &mut own, exec).await,
        "-EXECABORT Transaction discarded because of previous errors.\r\n"
    );
    assert_eq!(
        cluster.node_for(&Target::Slot(Slot::new(5).unwrap())),
        Some(NodeAddr::new(B)),
        "the map follows the MOVED"
    );
    assert_eq!(nodes.received(B), Vec::<String>::new(), "nothing resent");
}

#[tokio::test(start_paused = true)]
async fn exec_after_the_transactions_connection_was_lost_aborts_without_reaching_a_node() {
    let nodes = ScriptedNodes::new();
    nodes.node(A, |_, seen| match seen {
        0 => Act::Reply(b"+OK\r\n".to_vec()),
        1 => Act::Reply(b"+QUEUED\r\n".to_vec()),
        _ => Act::Close,
    });
    let cluster = cluster_on_a(&nodes);
    let mut own = None;
    let opening = batch(
        &[&["MULTI"], &["SET", "k", "1"]],
        true,
        vec![Part::Skip, Part::Queued],
    );
    assert_eq!(run(&cluster, &mut own, opening).await, "+QUEUED\r\n");
    let lost = batch(&[&["SET", "k", "2"]], false, vec![Part::Queued]);
    assert!(
        run(&cluster, &mut own, lost)
            .await
            .contains("may or may not have run")
    );
    let exec = batch(&[&["EXEC"]], false, vec![Part::Exec]);
    assert_eq!(
        run(&cluster, &mut own, exec).await,
        "-EXECABORT Transaction discarded because of previous errors.\r\n"
    );
    assert_eq!(nodes.received(A), ["MULTI", "SET k 1", "SET k 2"]);
}
