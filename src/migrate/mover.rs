//! Moving one key from a backend to another, atomically and with its time to live: the source
//! master's own `MIGRATE` sends the key to the target's master, which stores it, and deletes it
//! once the target has it, serving no other command in between. So the key is on exactly one
//! side at any moment a client could look, and one that expires on the source meanwhile is not
//! moved. The copier and a request touching a key first both move keys this way (see
//! [`super`]); what calls it makes sure the key's requests do not reach the source meanwhile.

use bytes::{Bytes, BytesMut};
use thiserror::Error;

use crate::cluster::{Backend, Sending, Target};
use crate::command::Access;
use crate::protocol::Protocol;
use crate::protocol::request::encode_command;
use crate::slot::Slot;

/// What a move did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moved {
    /// The key is on the target now, and no longer on the source.
    Moved,
    /// The source had no such key (never written, deleted or expired): nothing to move.
    Absent,
}

/// Why a key did not move.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum MoveError {
    /// The target's master for the key is not known (its topology is not learnt yet).
    #[error("the target backend has no master for slot {0}")]
    NoTarget(u16),
    /// The target already has the key: it stays on both sides until the caller decides.
    #[error("the target already has the key")]
    TargetHasKey,
    /// The source refused or failed the move (the target unreachable from the source, a
    /// timeout, the node's own error); the key is still on the source.
    #[error("the source did not move the key: {0}")]
    Refused(String),
}

/// Moves `key` (as both backends store it) from `source` to `target`, within `timeout_ms`
/// for the transfer itself. The target's master is the one the proxy knows for the key's slot
/// (its address as the target announces it, which its peers reach).
pub async fn move_key(
    source: &Backend,
    target: &Backend,
    key: &Bytes,
    timeout_ms: u64,
) -> Result<Moved, MoveError> {
    move_keys(source, target, std::slice::from_ref(key), timeout_ms).await
}

/// [`move_key`] for several keys in one `MIGRATE`: they must share the source's master and
/// slot and the target's master (keys of one slot do). [`Moved::Moved`] when any moved; on an
/// error, those the target took are moved and the others are still on the source.
pub async fn move_keys(
    source: &Backend,
    target: &Backend,
    keys: &[Bytes],
    timeout_ms: u64,
) -> Result<Moved, MoveError> {
    let Some(first) = keys.first() else {
        return Ok(Moved::Absent);
    };
    let slot = Slot::for_key(first);
    let to = target
        .node_for(&Target::Slot(slot))
        .ok_or(MoveError::NoTarget(slot.get()))?;
    let (host, port) = to
        .as_str()
        .rsplit_once(':')
        .ok_or_else(|| MoveError::Refused(format!("no port in {to}")))?;
    let settings = target.conn_settings();
    let timeout = timeout_ms.to_string();
    let mut args: Vec<&[u8]> = vec![
        b"MIGRATE",
        host.as_bytes(),
        port.as_bytes(),
        b"",
        b"0",
        timeout.as_bytes(),
    ];
    match (settings.username.as_deref(), settings.password.as_deref()) {
        (Some(user), Some(password)) => {
            args.extend([&b"AUTH2"[..], user.as_bytes(), password.as_bytes()]);
        }
        (None, Some(password)) => args.extend([&b"AUTH"[..], password.as_bytes()]),
        _ => {}
    }
    args.push(b"KEYS");
    args.extend(keys.iter().map(|key| &key[..]));
    let mut payload = BytesMut::new();
    encode_command(&mut payload, &args);
    let reply = source
        .execute(Sending {
            payload: payload.freeze(),
            target: Target::Slot(slot),
            access: Access::Write,
            protocol: Protocol::Resp2,
            db: 0,
            affinity: 0,
        })
        .await;
    judge(&reply)
}

/// What the source's reply to `MIGRATE` means.
fn judge(reply: &[u8]) -> Result<Moved, MoveError> {
    match reply {
        b"+OK\r\n" => Ok(Moved::Moved),
        b"+NOKEY\r\n" => Ok(Moved::Absent),
        // The target's refusal, as the source passes it on.
        _ if reply.starts_with(b"-ERR Target instance replied with error: BUSYKEY") => {
            Err(MoveError::TargetHasKey)
        }
        _ => Err(MoveError::Refused(
            String::from_utf8_lossy(reply).trim_end().to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sources_reply_says_what_happened_to_the_key() {
        assert_eq!(judge(b"+OK\r\n"), Ok(Moved::Moved));
        assert_eq!(judge(b"+NOKEY\r\n"), Ok(Moved::Absent));
        assert_eq!(
            judge(
                b"-ERR Target instance replied with error: BUSYKEY Target key name already \
                  exists.\r\n"
            ),
            Err(MoveError::TargetHasKey)
        );
        assert_eq!(
            judge(b"-IOERR error or timeout connecting to the client\r\n"),
            Err(MoveError::Refused(
                "-IOERR error or timeout connecting to the client".into()
            ))
        );
    }
}
