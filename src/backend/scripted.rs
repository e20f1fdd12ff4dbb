//! Scripted in-process nodes for unit tests of routing and retries: a [`Connector`] whose
//! nodes answer each command as a test's script says (a reply, silence, a closed connection),
//! and that records every command each node received. The real-cluster integration tests prove
//! the same behaviour end to end; these prove it with paused time and exact control.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::NodeAddr;
use super::transport::{Connecting, Connector, Transport};
use crate::protocol::RequestParser;

/// What a scripted node does with one command.
#[derive(Debug, Clone)]
pub enum Act {
    /// Answers with these bytes (one or more RESP replies).
    Reply(Vec<u8>),
    /// Closes the connection without answering.
    Close,
    /// Never answers; the connection stays open.
    Hang,
}

/// A node's script: the command (arguments as text) and how many commands this node has
/// received before it, in to the reply.
pub type Script = Arc<dyn Fn(&[String], usize) -> Act + Send + Sync>;

/// Every command every node received: the node's address and the command's arguments.
type Received = Arc<Mutex<Vec<(String, Vec<String>)>>>;

/// A set of scripted nodes, reachable by address through [`Connector`].
#[derive(Default)]
pub struct ScriptedNodes {
    scripts: Mutex<HashMap<String, Script>>,
    received: Received,
}

impl ScriptedNodes {
    /// No nodes yet.
    pub fn new() -> Arc<Self> {
        Arc::new(ScriptedNodes::default())
    }

    /// Makes `addr` answer as `script` says; connections to unknown addresses are refused.
    pub fn node(
        &self,
        addr: &str,
        script: impl Fn(&[String], usize) -> Act + Send + Sync + 'static,
    ) {
        self.scripts
            .lock()
            .unwrap()
            .insert(addr.to_string(), Arc::new(script));
    }

    /// The commands `addr` received, in order, each as its arguments joined by spaces.
    pub fn received(&self, addr: &str) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(node, _)| node == addr)
            .map(|(_, args)| args.join(" "))
            .collect()
    }
}

impl Connector for ScriptedNodes {
    fn connect<'a>(&'a self, addr: &'a NodeAddr) -> Connecting<'a> {
        Box::pin(async move {
            let script = self
                .scripts
                .lock()
                .unwrap()
                .get(addr.as_str())
                .cloned()
                .ok_or_else(|| io::Error::from(io::ErrorKind::ConnectionRefused))?;
            let (proxy_side, node_side) = tokio::io::duplex(1 << 20);
            tokio::spawn(serve(
                node_side,
                addr.to_string(),
                script,
                Arc::clone(&self.received),
            ));
            Ok(Transport::Other(Box::new(proxy_side)))
        })
    }
}

async fn serve(mut stream: DuplexStream, addr: String, script: Script, received: Received) {
    let mut parser = RequestParser::new(1 << 30, 1 << 20);
    let mut buf = BytesMut::new();
    loop {
        while let Ok(Some(request)) = parser.parse(&mut buf) {
            let args: Vec<String> = request
                .args
                .iter()
                .map(|a: &Bytes| String::from_utf8_lossy(a).into_owned())
                .collect();
            let seen = {
                let mut log = received.lock().unwrap();
                let seen = log.iter().filter(|(node, _)| *node == addr).count();
                log.push((addr.clone(), args.clone()));
                seen
            };
            match script(&args, seen) {
                Act::Reply(bytes) => {
                    if stream.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                Act::Close => return,
                Act::Hang => std::future::pending::<()>().await,
            }
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
