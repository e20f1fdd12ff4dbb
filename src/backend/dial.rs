//! Opening a connection to a node: TCP with the right socket options, then the handshake
//! (`AUTH`, `HELLO 3`) for the connection's protocol.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{BackendError, ConnSettings, NodeAddr, Reply};
use crate::protocol::request::encode_command;
use crate::protocol::{Protocol, ReplyKind, frame_reply};

/// Connects to `addr` and performs the handshake for `protocol`.
pub async fn dial(
    addr: &NodeAddr,
    protocol: Protocol,
    settings: &ConnSettings,
) -> Result<TcpStream, BackendError> {
    let unreachable = |reason: String| BackendError::Unreachable {
        addr: addr.clone(),
        reason,
    };
    let connect = TcpStream::connect(addr.as_str());
    let mut stream = match tokio::time::timeout(settings.connect_timeout, connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(unreachable(e.to_string())),
        Err(_) => {
            return Err(unreachable(format!(
                "no connection within {} ms",
                settings.connect_timeout.as_millis()
            )));
        }
    };
    stream
        .set_nodelay(true)
        .map_err(|e| unreachable(e.to_string()))?;
    let keepalive = socket2::TcpKeepalive::new().with_time(std::time::Duration::from_secs(60));
    socket2::SockRef::from(&stream)
        .set_tcp_keepalive(&keepalive)
        .map_err(|e| unreachable(e.to_string()))?;

    let mut handshake: Vec<Vec<Bytes>> = Vec::new();
    let password = settings
        .password
        .as_deref()
        .map(|p| Bytes::from(p.to_string()));
    let user = settings
        .username
        .as_deref()
        .map(|u| Bytes::from(u.to_string()));
    match (protocol, password) {
        (Protocol::Resp3, password) => {
            let mut hello: Vec<Bytes> = vec!["HELLO".into(), "3".into()];
            if let Some(password) = password {
                hello.extend([
                    Bytes::from("AUTH"),
                    user.unwrap_or(Bytes::from("default")),
                    password,
                ]);
            }
            handshake.push(hello);
        }
        (Protocol::Resp2, Some(password)) => {
            let mut auth: Vec<Bytes> = vec!["AUTH".into()];
            auth.extend(user);
            auth.push(password);
            handshake.push(auth);
        }
        (Protocol::Resp2, None) => {}
    }
    if settings.readonly {
        handshake.push(vec![Bytes::from("READONLY")]);
    }
    for command in handshake {
        let step = async {
            let reply = exchange(&mut stream, &command, protocol).await?;
            match reply.error_text() {
                None => Ok(()),
                // READONLY on a node without cluster support is not a reason to fail.
                Some(_) if command.first().is_some_and(|c| c == "READONLY") => Ok(()),
                Some(text) => Err(BackendError::Auth {
                    addr: addr.clone(),
                    reason: String::from_utf8_lossy(text).into_owned(),
                }),
            }
        };
        tokio::time::timeout(settings.connect_timeout, step)
            .await
            .map_err(|_| unreachable("no reply to the handshake in time".into()))??;
    }
    Ok(stream)
}

/// Sends one command on `stream` and reads its reply; for handshakes and control queries only,
/// never on a multiplexed connection.
async fn exchange(
    stream: &mut TcpStream,
    args: &[Bytes],
    protocol: Protocol,
) -> Result<Reply, BackendError> {
    let addr = NodeAddr::new(
        &stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into()),
    );
    let lost = |_| BackendError::Lost { addr: addr.clone() };
    let mut out = BytesMut::new();
    encode_command(&mut out, args);
    stream.write_all(&out).await.map_err(lost)?;
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        match frame_reply(&buf, protocol) {
            Ok(Some(frame)) => {
                let bytes = buf.split_to(frame.len).freeze();
                return Ok(Reply {
                    bytes,
                    kind: frame.kind,
                });
            }
            Ok(None) => {}
            Err(_) => return Err(BackendError::Protocol { addr }),
        }
        if stream.read_buf(&mut buf).await.map_err(lost)? == 0 {
            return Err(BackendError::Lost { addr });
        }
    }
}

/// Dials `addr`, sends one command and returns its reply, skipping RESP3 pushes: for topology
/// and control queries that must not share a client connection.
pub async fn request_once(
    addr: &NodeAddr,
    args: &[&str],
    settings: &ConnSettings,
) -> Result<Reply, BackendError> {
    let mut stream = dial(addr, Protocol::Resp2, settings).await?;
    let args: Vec<Bytes> = args
        .iter()
        .map(|a| Bytes::copy_from_slice(a.as_bytes()))
        .collect();
    let reply = tokio::time::timeout(
        settings.request_timeout,
        exchange(&mut stream, &args, Protocol::Resp2),
    )
    .await
    .map_err(|_| BackendError::Timeout {
        addr: addr.clone(),
        timeout_ms: settings.request_timeout.as_millis() as u64,
    })??;
    debug_assert!(reply.kind != ReplyKind::Push);
    Ok(reply)
}
