//! A client waiting in a blocking command, as `INFO`'s `blocked_clients`, `CLIENT LIST`'s flag
//! `b` and `CLIENT UNBLOCK` see it: marked once its node says the command blocks there, not
//! when the proxy wrote it, so a client that waits for another to block and then pushes (as
//! Redis's own tests do) never pushes before the blocking command reached the node.

use std::time::Duration;

use bytes::BytesMut;

use crate::clients::{BlockedOn, ClientHandle};
use crate::cluster::Sending;
use crate::cluster::{Backend, Target};
use crate::command::Access;
use crate::keyspace::BackendId;
use crate::protocol::Protocol;
use crate::protocol::request::encode_command;

/// First pause before asking the node, long enough for a command that does not block to be
/// answered first (then nothing is asked); each further pause doubles it.
const FIRST_PROBE: Duration = Duration::from_millis(2);
/// Longest pause between two questions.
const MAX_PROBE: Duration = Duration::from_millis(200);
/// Questions asked at most; a node that never shows the client blocked (it runs no `CLIENT
/// LIST`, say) gets it marked all the same, so `CLIENT UNBLOCK` can still reach it.
const MAX_PROBES: u32 = 12;

/// Whose blocking command runs, on which backend.
#[derive(Clone, Copy)]
pub struct Blocked<'a> {
    /// The client's entry.
    pub client: &'a ClientHandle,
    /// The backend of the node the command goes to.
    pub backend: BackendId,
}

impl Blocked<'_> {
    /// Marks the client blocked on `node` once the node shows its connection `node_client_id`
    /// blocked (flag `b` in `CLIENT LIST`), then waits forever: run it beside the read of the
    /// command's reply, which ends it. An [`Unblock`] guard beside it takes the mark away.
    pub async fn mark_when_blocked(
        self,
        cluster: &Backend,
        node: &crate::backend::NodeAddr,
        node_client_id: Option<i64>,
    ) {
        let mark = || {
            self.client.set_blocked(Some(BlockedOn {
                backend: self.backend,
                node: node.clone(),
                node_client_id,
            }))
        };
        if let Some(id) = node_client_id {
            let mut probe = BytesMut::new();
            encode_command(&mut probe, &["CLIENT", "LIST", "ID", &id.to_string()]);
            let probe = probe.freeze();
            let pool = cluster.pool(node);
            let mut pause = FIRST_PROBE;
            for _ in 0..MAX_PROBES {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PROBE);
                let target = Target::Control(pool.clone());
                let affinity = self.client.id as usize;
                let reply = cluster
                    .execute(Sending {
                        payload: probe.clone(),
                        target,
                        access: Access::Read,
                        protocol: Protocol::Resp2,
                        db: 0,
                        affinity,
                    })
                    .await;
                if reply.starts_with(b"-") || shows_blocked(&reply) {
                    break;
                }
            }
        }
        mark();
        std::future::pending::<()>().await;
    }
}

/// Whether a `CLIENT LIST` reply shows the flag `b`.
fn shows_blocked(reply: &[u8]) -> bool {
    let Some(at) = reply.windows(6).position(|w| w == b"flags=") else {
        return false;
    };
    reply
        .get(at + 6..)
        .unwrap_or_default()
        .iter()
        .take_while(|b| !b.is_ascii_whitespace())
        .any(|&b| b == b'b')
}

/// Clears the client's blocked mark when its blocking command is done, or given up.
pub struct Unblock<'a>(pub &'a ClientHandle);

impl Drop for Unblock<'_> {
    fn drop(&mut self) {
        self.0.set_blocked(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_b_is_read_from_the_flags_field_only() {
        assert!(shows_blocked(
            b"$40\r\nid=7 addr=a:1 name=b flags=b db=0 cmd=blpop\n\r\n"
        ));
        assert!(!shows_blocked(
            b"$40\r\nid=7 addr=a:1 name=b flags=N db=0 cmd=blpop\n\r\n"
        ));
        assert!(!shows_blocked(b"$0\r\n\r\n"));
    }
}
