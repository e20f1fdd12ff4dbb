//! The shared connection against an in-memory node: replies owed when its node leaves the
//! topology, and retirement.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;
use crate::backend::transport::{Connecting, Connector, Transport};
use crate::config::BackendConfig;

/// Hands out one in-memory stream, the test's end of which plays the node.
struct Once(Mutex<Option<DuplexStream>>);

impl Connector for Once {
    fn connect<'a>(&'a self, _addr: &'a NodeAddr) -> Connecting<'a> {
        let stream = self.0.lock().unwrap().take();
        Box::pin(async move {
            let stream = stream.ok_or(std::io::ErrorKind::ConnectionRefused)?;
            Ok(Transport::Other(Box::new(stream)))
        })
    }
}

/// A connection to an in-memory node whose end the test holds, with a minute's request
/// timeout and the shortest stall.
fn connected() -> (SharedConn, DuplexStream) {
    let (ours, node) = tokio::io::duplex(1 << 16);
    let settings = Arc::new(ConnSettings {
        connector: Arc::new(Once(Mutex::new(Some(ours)))),
        request_timeout: Duration::from_secs(60),
        stall_after: Duration::from_millis(100),
        ..ConnSettings::from(&BackendConfig::default())
    });
    let addr = NodeAddr::new("node:1");
    let health = Arc::new(NodeHealth::new("test", &addr));
    let conn = SharedConn::spawn(
        addr,
        Protocol::Resp2,
        settings,
        &WorkerSet::inline(),
        0,
        health,
    );
    (conn, node)
}

#[tokio::test]
async fn a_retired_connection_gives_up_on_a_silent_node_and_refuses_new_commands() {
    let (conn, mut node) = connected();
    let get = Bytes::from_static(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    let reply = conn.send(get.clone(), false, 0).unwrap();
    let mut request = vec![0u8; get.len()];
    tokio::time::timeout(Duration::from_secs(5), node.read_exact(&mut request))
        .await
        .expect("the GET never left the proxy")
        .unwrap();
    // A failover replaced the node, which stays silent (stopped, cut off).
    conn.retire();
    let outcome = tokio::time::timeout(Duration::from_secs(5), reply)
        .await
        .expect("a retired connection waited on a silent node")
        .unwrap();
    assert!(
        matches!(outcome, Err(BackendError::Lost { .. })),
        "{outcome:?}"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(matches!(
        conn.send(get, false, 0),
        Err(BackendError::Retired { .. })
    ));
}

#[tokio::test]
async fn a_command_written_before_its_node_left_the_topology_still_gets_its_reply() {
    let (conn, mut node) = connected();
    let incr = Bytes::from_static(b"*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n");
    let reply = conn.send(incr.clone(), false, 0).unwrap();
    let mut request = vec![0u8; incr.len()];
    tokio::time::timeout(Duration::from_secs(5), node.read_exact(&mut request))
        .await
        .expect("the INCR never left the proxy")
        .unwrap();
    assert_eq!(request, incr);
    // A refresh drops the node's pool, and so this handle, while the INCR is in flight.
    drop(conn);
    tokio::time::sleep(Duration::from_millis(20)).await;
    node.write_all(b":1\r\n").await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), reply)
        .await
        .expect("no reply within 5 s")
        .unwrap()
        .expect("the INCR ran, so its reply must not be a lost connection");
    assert_eq!(&reply.bytes[..], b":1\r\n");
    // With nothing left to answer, the connection closes.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), node.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the connection stayed open after its last reply"
    );
}
