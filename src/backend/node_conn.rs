//! One connection to a node: its transport, read buffer and reply framer. The only place that
//! reads replies from a node: the shared pipelined connections, a client's own connections
//! (transactions, blocking commands), Pub/Sub connections and the handshake all read here.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::transport::{ReadHalf, WriteHalf};
use super::{BackendError, ConnSettings, NodeAddr, NodeLogin, Reply};
use crate::protocol::request::encode_command;
use crate::protocol::{Protocol, ReplyFramer, ReplyKind};

/// Read buffer taken at first and after a buffer was handed on whole.
const READ_BUF: usize = 16 * 1024;
/// Below this much free room the buffer grows before the next read, so a read is never tiny.
const READ_MIN_ROOM: usize = 1024;

/// A connection to one node, after its handshake.
#[derive(Debug)]
pub struct NodeConn {
    reader: NodeReader,
    writer: NodeWriter,
    /// The database `SELECT` put it on.
    db: u8,
    /// Counts it among the connections held by one client while it is open.
    held: Option<Held>,
}

/// One count in a tally of open connections, given back when the connection is dropped.
#[derive(Debug)]
struct Held(Arc<AtomicU64>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl NodeConn {
    /// Connects to `addr` through the settings' connector and performs the handshake for
    /// `protocol` (`HELLO 3` or `AUTH`, then `READONLY` when replicas serve reads), all within
    /// the connect timeout.
    pub async fn open(
        addr: &NodeAddr,
        protocol: Protocol,
        settings: &ConnSettings,
    ) -> Result<NodeConn, BackendError> {
        let unreachable = |reason: String| BackendError::Unreachable {
            addr: addr.clone(),
            reason,
        };
        let limit = settings.connect_timeout;
        let transport = match tokio::time::timeout(limit, settings.connector.connect(addr)).await {
            Ok(Ok(transport)) => transport,
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Err(_) => {
                return Err(unreachable(format!(
                    "no connection within {} ms",
                    limit.as_millis()
                )));
            }
        };
        let (rd, wr) = transport.split();
        let mut conn = NodeConn {
            reader: NodeReader {
                io: rd,
                buf: BytesMut::new(),
                framer: ReplyFramer::new(protocol),
                addr: addr.clone(),
            },
            writer: NodeWriter {
                io: wr,
                addr: addr.clone(),
            },
            db: 0,
            held: None,
        };
        tokio::time::timeout(limit, conn.handshake(protocol, settings))
            .await
            .map_err(|_| unreachable("no reply to the handshake in time".into()))??;
        Ok(conn)
    }

    async fn handshake(
        &mut self,
        protocol: Protocol,
        settings: &ConnSettings,
    ) -> Result<(), BackendError> {
        let mut steps: Vec<Vec<&[u8]>> = Vec::new();
        let user = settings.username.as_deref().unwrap_or("default").as_bytes();
        match (protocol, settings.password.as_deref()) {
            (Protocol::Resp3, None) => steps.push(vec![b"HELLO", b"3"]),
            (Protocol::Resp3, Some(password)) => {
                steps.push(vec![b"HELLO", b"3", b"AUTH", user, password.as_bytes()]);
            }
            (Protocol::Resp2, Some(password)) => match settings.username.as_deref() {
                Some(user) => steps.push(vec![b"AUTH", user.as_bytes(), password.as_bytes()]),
                None => steps.push(vec![b"AUTH", password.as_bytes()]),
            },
            (Protocol::Resp2, None) => {}
        }
        if settings.readonly {
            steps.push(vec![b"READONLY"]);
        }
        for step in steps {
            let mut out = BytesMut::new();
            encode_command(&mut out, &step);
            let reply = self.call(&out, 1).await?.pop();
            let refused = reply.as_ref().and_then(Reply::error_text);
            match refused {
                None => {}
                // READONLY on a node without cluster support is not a reason to fail.
                Some(_) if step.first() == Some(&&b"READONLY"[..]) => {}
                Some(text) => {
                    return Err(BackendError::Auth {
                        addr: self.addr().clone(),
                        reason: String::from_utf8_lossy(text).into_owned(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Counts the connection in `tally` until it is dropped: a connection held by one client
    /// (blocking commands, transactions, subscriptions).
    pub fn held_in(mut self, tally: &Arc<AtomicU64>) -> Self {
        tally.fetch_add(1, Ordering::Relaxed);
        self.held = Some(Held(Arc::clone(tally)));
        self
    }

    /// The node it is connected to.
    pub fn addr(&self) -> &NodeAddr {
        &self.reader.addr
    }

    /// The protocol it speaks.
    pub fn protocol(&self) -> Protocol {
        self.reader.framer.protocol()
    }

    /// The database it is on.
    pub fn db(&self) -> u8 {
        self.db
    }

    /// Moves it to database `db` (`SELECT`); an error reply (a database the node does not have)
    /// is an error, so no command runs on a database it was not meant for.
    pub async fn select(&mut self, db: u8) -> Result<(), BackendError> {
        let mut out = BytesMut::new();
        encode_command(&mut out, &[&b"SELECT"[..], db.to_string().as_bytes()]);
        let reply = self.call(&out, 1).await?.pop();
        match reply.as_ref().and_then(Reply::error_text) {
            None => {
                self.db = db;
                Ok(())
            }
            Some(text) => Err(BackendError::Refused {
                addr: self.addr().clone(),
                reason: String::from_utf8_lossy(text).into_owned(),
            }),
        }
    }

    /// Logs the connection in as `login`'s user. When the node does not know the user with
    /// that password (a new node, a promoted replica, rules changed by a reload, a restart),
    /// `ACL SETUSER` makes it first: the node is kept in step by the connections that need it,
    /// with no list of nodes to follow. `Refused` says the node cannot hold the user (the
    /// backend's own user may not run `ACL SETUSER`, or ACLs are managed elsewhere).
    pub async fn log_in_as(&mut self, login: &NodeLogin) -> Result<(), BackendError> {
        let mut auth = BytesMut::new();
        encode_command(&mut auth, &["AUTH", &login.user, &login.password]);
        let first = self.call(&auth, 1).await?;
        if first.iter().all(|r| r.error_text().is_none()) {
            return Ok(());
        }
        let mut out = BytesMut::new();
        encode_command(&mut out, &login.setuser);
        out.extend_from_slice(&auth);
        let replies = self.call(&out, 2).await?;
        let refusal = replies
            .iter()
            .zip(["ACL SETUSER", "AUTH"])
            .find_map(|(reply, step)| Some((step, reply.error_text()?)));
        match refusal {
            None => Ok(()),
            Some((step, text)) => Err(BackendError::Refused {
                addr: self.addr().clone(),
                reason: format!(
                    "it cannot hold the user {:?} that a restricted user's scripts run as ({step}: {}); see the README, \"Users and permissions\"",
                    login.user,
                    String::from_utf8_lossy(text)
                ),
            }),
        }
    }

    /// Writes `payload` (`count` commands) and reads their `count` replies, skipping RESP3
    /// pushes. No time limit: a blocking command may wait as long as it was told to; callers
    /// that need a bound wrap the call in a timeout.
    pub async fn call(&mut self, payload: &[u8], count: usize) -> Result<Vec<Reply>, BackendError> {
        self.writer.write_all(payload).await?;
        let mut replies = Vec::with_capacity(count.min(64));
        while replies.len() < count {
            let reply = self.reader.read_reply().await?;
            if reply.kind != ReplyKind::Push {
                replies.push(reply);
            }
        }
        Ok(replies)
    }

    /// Writes `payload` as it is.
    pub async fn write_all(&mut self, payload: &[u8]) -> Result<(), BackendError> {
        self.writer.write_all(payload).await
    }

    /// The next reply or push the node sends.
    pub async fn read_reply(&mut self) -> Result<Reply, BackendError> {
        self.reader.read_reply().await
    }

    /// Splits into a reader and a writer that can run at once (a pipelined connection).
    pub fn split(self) -> (NodeReader, NodeWriter) {
        (self.reader, self.writer)
    }
}

/// The reading side of a [`NodeConn`]: socket, buffer and framer.
#[derive(Debug)]
pub struct NodeReader {
    io: ReadHalf,
    buf: BytesMut,
    framer: ReplyFramer,
    addr: NodeAddr,
}

impl std::fmt::Debug for ReadHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadHalf")
    }
}

impl std::fmt::Debug for WriteHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteHalf")
    }
}

impl NodeReader {
    /// The next complete reply (or push), as the bytes the node sent. Replies already in the
    /// buffer cost no read.
    pub async fn read_reply(&mut self) -> Result<Reply, BackendError> {
        loop {
            if let Some(reply) = self.buffered()? {
                return Ok(reply);
            }
            if self.buf.capacity() - self.buf.len() < READ_MIN_ROOM {
                self.buf.reserve(READ_BUF);
            }
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) => {
                    return Err(BackendError::Lost {
                        addr: self.addr.clone(),
                    });
                }
                Ok(_) => {}
                Err(_) => {
                    return Err(BackendError::Lost {
                        addr: self.addr.clone(),
                    });
                }
            }
        }
    }

    /// A complete reply already buffered, without reading.
    pub fn buffered(&mut self) -> Result<Option<Reply>, BackendError> {
        match self.framer.next_frame(&self.buf) {
            Ok(Some(frame)) => {
                let bytes: Bytes = self.buf.split_to(frame.len).freeze();
                Ok(Some(Reply {
                    bytes,
                    kind: frame.kind,
                }))
            }
            Ok(None) => Ok(None),
            Err(_) => Err(BackendError::Protocol {
                addr: self.addr.clone(),
            }),
        }
    }
}

/// The writing side of a [`NodeConn`].
#[derive(Debug)]
pub struct NodeWriter {
    io: WriteHalf,
    addr: NodeAddr,
}

impl NodeWriter {
    /// Writes all of `payload`; a failure means the connection is gone.
    pub async fn write_all(&mut self, payload: &[u8]) -> Result<(), BackendError> {
        let lost = |_| BackendError::Lost {
            addr: self.addr.clone(),
        };
        self.io.write_all(payload).await.map_err(lost)?;
        // TLS takes bytes it has not sent yet (whatever the socket did not take once its
        // buffer was full): only a flush sends them. On TCP a flush costs nothing.
        self.io.flush().await.map_err(lost)
    }
}

/// Dials `addr`, sends one command and returns its reply within the request timeout: for
/// topology and control queries that must not share a client's connection.
pub async fn request_once(
    addr: &NodeAddr,
    args: &[&str],
    settings: &ConnSettings,
) -> Result<Reply, BackendError> {
    let mut conn = NodeConn::open(addr, Protocol::Resp2, settings).await?;
    let mut out = BytesMut::new();
    encode_command(&mut out, args);
    let replies = tokio::time::timeout(settings.request_timeout, conn.call(&out, 1))
        .await
        .map_err(|_| BackendError::Timeout {
            addr: addr.clone(),
            timeout_ms: settings.request_timeout.as_millis() as u64,
        })??;
    replies
        .into_iter()
        .next()
        .ok_or(BackendError::Lost { addr: addr.clone() })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, BufWriter, DuplexStream};

    use super::*;
    use crate::backend::transport::{Connecting, Connector, Transport};
    use crate::config::BackendConfig;

    /// Hands out one stream that keeps what is written until it is flushed, as TLS keeps the
    /// encrypted bytes the socket did not take.
    struct Buffering(Mutex<Option<DuplexStream>>);

    impl Connector for Buffering {
        fn connect<'a>(&'a self, _addr: &'a NodeAddr) -> Connecting<'a> {
            let stream = self.0.lock().unwrap().take();
            Box::pin(async move {
                let stream = stream.ok_or(std::io::ErrorKind::ConnectionRefused)?;
                Ok(Transport::Other(Box::new(BufWriter::new(stream))))
            })
        }
    }

    #[tokio::test]
    async fn what_the_writer_wrote_leaves_a_transport_that_buffers() {
        let (ours, mut node) = tokio::io::duplex(1 << 16);
        let settings = ConnSettings {
            connector: Arc::new(Buffering(Mutex::new(Some(ours)))),
            ..ConnSettings::from(&BackendConfig::default())
        };
        let conn = NodeConn::open(&NodeAddr::new("node:1"), Protocol::Resp2, &settings)
            .await
            .unwrap();
        let (_reader, mut writer) = conn.split();
        writer.write_all(b"*1\r\n$4\r\nPING\r\n").await.unwrap();
        let mut got = [0u8; 14];
        let read = tokio::time::timeout(Duration::from_secs(5), node.read_exact(&mut got)).await;
        assert!(read.is_ok(), "the request never left the proxy");
        assert_eq!(&got, b"*1\r\n$4\r\nPING\r\n");
    }
}
