//! A connection of one client's own, for what cannot share a connection: blocking commands
//! (which hold the connection until they return) and transactions (`WATCH`, `MULTI` ... `EXEC`,
//! whose state lives on the connection). It is closed when the client goes away.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{BackendError, ConnSettings, NodeAddr, Reply, dial};
use crate::protocol::{Protocol, ReplyKind, frame_reply};

/// One client's own connection to one node.
#[derive(Debug)]
pub struct Exclusive {
    addr: NodeAddr,
    protocol: Protocol,
    stream: TcpStream,
    buf: BytesMut,
}

impl Exclusive {
    /// Connects to `addr` with the handshake for `protocol`.
    pub async fn open(
        addr: &NodeAddr,
        protocol: Protocol,
        settings: &ConnSettings,
    ) -> Result<Exclusive, BackendError> {
        let stream = dial(addr, protocol, settings).await?;
        Ok(Exclusive {
            addr: addr.clone(),
            protocol,
            stream,
            buf: BytesMut::with_capacity(4096),
        })
    }

    /// The node it is connected to.
    pub fn addr(&self) -> &NodeAddr {
        &self.addr
    }

    /// The protocol it speaks.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Writes `payload` (`count` commands) and reads their `count` replies, with no time limit:
    /// a blocking command may wait as long as it was told to.
    pub async fn call(&mut self, payload: &[u8], count: usize) -> Result<Vec<Reply>, BackendError> {
        let lost = |_| BackendError::Lost {
            addr: self.addr.clone(),
        };
        self.stream.write_all(payload).await.map_err(lost)?;
        let mut replies = Vec::with_capacity(count);
        while replies.len() < count {
            match frame_reply(&self.buf, self.protocol) {
                Ok(Some(frame)) => {
                    let bytes: Bytes = self.buf.split_to(frame.len).freeze();
                    if frame.kind != ReplyKind::Push {
                        replies.push(Reply {
                            bytes,
                            kind: frame.kind,
                        });
                    }
                    continue;
                }
                Ok(None) => {}
                Err(_) => {
                    return Err(BackendError::Protocol {
                        addr: self.addr.clone(),
                    });
                }
            }
            let read = self.stream.read_buf(&mut self.buf).await;
            match read {
                Ok(0) | Err(_) => {
                    return Err(BackendError::Lost {
                        addr: self.addr.clone(),
                    });
                }
                Ok(_) => {}
            }
        }
        Ok(replies)
    }
}
