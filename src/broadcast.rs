//! Commands about the servers rather than the data: sent to every node of every backend
//! (`CONFIG SET`), to every master (`SAVE`, `DEBUG DIGEST`) or to one master (`CONFIG GET`),
//! each on the node's control connection, and their replies combined into the one reply a
//! single Redis would give.
//!
//! The control connection carries no client's data commands, so a setting reaches a node even
//! while a long script or a `WAIT` holds the shared connections, as it would on one Redis.
//! Which commands come here is their [`Policy`](crate::command::Policy) (`Admin`, `OneMaster`).

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::join_all;

use crate::backend::{BackendError, NodeAddr, NodePool, Reply};
use crate::cluster::Backend;
use crate::combine;
use crate::command::ResponsePolicy;
use crate::protocol::{Protocol, reply};
use crate::proxy::ProxyRef;

/// Which nodes a command goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Every node of every backend, masters and replicas: a setting survives a failover.
    EveryNode,
    /// Every master of every backend: where the data is.
    EveryMaster,
    /// One master of the default backend (the next one when it cannot be reached).
    OneMaster,
}

/// A command for several nodes.
#[derive(Debug, Clone)]
pub struct Broadcast {
    /// The command as the client wrote it (`CONFIG SET`), for error messages.
    pub name: String,
    /// The command in RESP.
    pub payload: Bytes,
    /// Where it goes.
    pub reach: Reach,
    /// How the replies combine: [`ResponsePolicy::AllSucceeded`] (the first node's reply when
    /// every node succeeded, otherwise its error with the nodes that failed named),
    /// [`ResponsePolicy::DatasetDigest`] or [`ResponsePolicy::AnyKilled`] (`+OK` when some
    /// node killed its script; otherwise the first other error, such as `UNKILLABLE`, `BUSY`
    /// or a node that cannot be reached; otherwise `NOTBUSY`, as from a Redis that runs no
    /// script).
    pub response: ResponsePolicy,
    /// What it also changes in the proxy once every node has taken it.
    pub effect: Option<ProxyEffect>,
}

/// What a command every node took also changes in the proxy, which answers for them as one
/// Redis: its own settings and figures follow the same commands as the nodes'.
#[derive(Debug, Clone)]
pub enum ProxyEffect {
    /// `CONFIG SET`, with its `name value` pairs: the proxy's own settings among them (the
    /// slow log's, `tracking-table-max-keys`).
    ConfigSet(Vec<Bytes>),
    /// `CONFIG RESETSTAT`: the error replies the proxy counted start again (its other figures
    /// are also `/metrics` counters, which never go back).
    ResetStat,
}

impl ProxyEffect {
    fn apply(&self, proxy: ProxyRef<'_>) {
        match self {
            ProxyEffect::ConfigSet(pairs) => {
                proxy.slowlog.config_set(pairs, &proxy.config().server);
                proxy.tracking.config_set(pairs);
            }
            ProxyEffect::ResetStat => proxy.stats.errors.reset(),
        }
    }
}

impl Broadcast {
    /// `payload` for the nodes `reach` names, its replies combined by `response`;
    /// `spec_name` (`config|set`) names it in errors.
    pub fn new(
        spec_name: &str,
        payload: Bytes,
        reach: Reach,
        response: ResponsePolicy,
    ) -> Broadcast {
        Broadcast {
            name: spec_name.replace('|', " ").to_ascii_uppercase(),
            payload,
            reach,
            response,
            effect: None,
        }
    }

    /// The same, with `effect` on the proxy once every node has taken it.
    pub fn with_effect(mut self, effect: Option<ProxyEffect>) -> Broadcast {
        self.effect = effect;
        self
    }
}

/// One node's answer: its reply, or why there is none.
pub type Answer = (NodeAddr, Result<Reply, BackendError>);

/// Sends the command where it goes and combines the replies into the client's one reply.
pub async fn run(proxy: ProxyRef<'_>, broadcast: Broadcast, protocol: Protocol) -> Bytes {
    if broadcast.reach == Reach::OneMaster {
        return one_master(proxy, &broadcast.payload, protocol).await;
    }
    let nodes = match nodes(proxy, broadcast.reach) {
        Ok(nodes) => nodes,
        Err(error) => return error,
    };
    let answers = ask(&nodes, &broadcast.payload, protocol).await;
    let combined = match broadcast.response {
        ResponsePolicy::DatasetDigest => dataset_digest(&answers),
        ResponsePolicy::AnyKilled => any_killed(&answers, &broadcast.name),
        // What every other policy asks of a broadcast: that each node took it.
        _ => all_succeed(&answers),
    };
    if let Some(effect) = &broadcast.effect
        && !matches!(combined.first(), Some(b'-' | b'!'))
    {
        effect.apply(proxy);
    }
    combined
}

/// Every node `reach` names, backends in id order and each backend's nodes in address order
/// (masters before replicas); an error reply when a backend's topology is not known yet.
pub fn nodes(proxy: ProxyRef<'_>, reach: Reach) -> Result<Vec<Arc<NodePool>>, Bytes> {
    let mut all = Vec::new();
    for cluster in proxy.backends() {
        match nodes_of(cluster, reach) {
            Some(nodes) => all.extend(nodes),
            None => return Err(reply::error(&cluster.unreachable_error())),
        }
    }
    Ok(all)
}

/// The nodes of one backend that `reach` names, masters in address order then replicas;
/// `None` while its topology is not known.
pub fn nodes_of(cluster: &Backend, reach: Reach) -> Option<Vec<Arc<NodePool>>> {
    let map = cluster.slot_map();
    if map.masters().is_empty() {
        return None;
    }
    let mut nodes = combine::masters_in_order(&map);
    if reach == Reach::EveryNode {
        nodes.extend(combine::replicas_in_order(&map));
    }
    Some(nodes)
}

/// Sends `payload` to every one of `nodes` at once, on their control connections; each
/// answer comes within the node's request timeout.
pub async fn ask(nodes: &[Arc<NodePool>], payload: &Bytes, protocol: Protocol) -> Vec<Answer> {
    join_all(nodes.iter().map(|pool| async move {
        let answer = pool.send_control(protocol, payload.clone(), 0).await;
        (pool.addr().clone(), answer)
    }))
    .await
}

/// The default backend's masters in address order, until one answers.
async fn one_master(proxy: ProxyRef<'_>, payload: &Bytes, protocol: Protocol) -> Bytes {
    let Some(cluster) = proxy.default_backend() else {
        return reply::error("ERR respgate: no backend configured");
    };
    let masters = combine::masters_in_order(&cluster.slot_map());
    let mut last: Option<BackendError> = None;
    for pool in masters {
        match pool.send_control(protocol, payload.clone(), 0).await {
            Ok(reply) => return reply.bytes,
            Err(error) => last = Some(error),
        }
    }
    match last {
        Some(error) => cluster.backend_error(&error),
        None => reply::error(&cluster.unreachable_error()),
    }
}

/// See [`ResponsePolicy::AnyKilled`].
fn any_killed(answers: &[Answer], name: &str) -> Bytes {
    let replies: Vec<&Reply> = answers
        .iter()
        .filter_map(|(_, a)| a.as_ref().ok())
        .collect();
    if let Some(killed) = replies.iter().find(|r| r.error_text().is_none()) {
        return killed.bytes.clone();
    }
    let busy_elsewhere = replies
        .iter()
        .find(|r| r.error_text().is_some_and(|e| !e.starts_with(b"NOTBUSY")));
    if let Some(reply) = busy_elsewhere {
        return reply.bytes.clone();
    }
    if let Some((addr, Err(error))) = answers.iter().find(|(_, a)| a.is_err()) {
        // A node that did not answer may be the busy one: say so rather than NOTBUSY.
        return reply::error(&format!(
            "ERR respgate: {name} did not reach {addr}: {error}"
        ));
    }
    match replies.first() {
        Some(notbusy) => notbusy.bytes.clone(),
        None => reply::error("ERR respgate: no node answered"),
    }
}

/// The first reply when every node succeeded, else an error naming the nodes that did not.
fn all_succeed(answers: &[Answer]) -> Bytes {
    let failed: Vec<&Answer> = answers
        .iter()
        .filter(|(_, answer)| !matches!(answer, Ok(reply) if reply.error_text().is_none()))
        .collect();
    if failed.is_empty()
        && let Some((_, Ok(first))) = answers.first()
    {
        return first.bytes.clone();
    }
    // Every node refused with the same error (a value no node takes): as one Redis refuses it.
    if failed.len() == answers.len()
        && let Some((_, Ok(first))) = failed.first()
        && failed
            .iter()
            .all(|(_, answer)| matches!(answer, Ok(reply) if reply.bytes == first.bytes))
    {
        return first.bytes.clone();
    }
    reply::error(&refusal(&failed, answers.len()))
}

/// The error text for nodes that failed: the first node's own error as Redis wrote it (a
/// connection failure when no node sent one), then which nodes failed.
pub fn refusal(failed: &[&Answer], total: usize) -> String {
    let own = failed.iter().find_map(|(_, answer)| match answer {
        Ok(reply) => reply
            .error_text()
            .map(|text| String::from_utf8_lossy(text).into_owned()),
        Err(_) => None,
    });
    let first = own.unwrap_or_else(|| {
        failed
            .iter()
            .find_map(|(_, answer)| answer.as_ref().err())
            .map_or_else(
                || "ERR respgate: no node answered".to_string(),
                |error| format!("ERR respgate: {error}"),
            )
    });
    let addrs: Vec<&str> = failed.iter().map(|(addr, _)| addr.as_str()).collect();
    format!(
        "{first} (respgate: failed on {} of {total} nodes: {})",
        failed.len(),
        addrs.join(", ")
    )
}

/// `DEBUG DIGEST` over the masters: Redis's digest of a dataset is the SHA1 mix of the
/// database number, XORed with the digest of every key; each master's digest holds that mix
/// once (when it has keys), so XORing them holds it once per non-empty master. Putting it back
/// once more when that count is even gives what one Redis with every key would report (for a
/// dataset in database 0, the only one a Redis Cluster has).
fn dataset_digest(answers: &[Answer]) -> Bytes {
    let mut combined = [0u8; 20];
    let mut non_empty = 0usize;
    for answer in answers {
        let digest = match &answer.1 {
            Ok(reply) if reply.error_text().is_some() => return reply.bytes.clone(),
            Ok(reply) => parse_digest(&reply.bytes),
            Err(_) => None,
        };
        let Some(digest) = digest else {
            return reply::error(&refusal(&[answer], answers.len()));
        };
        if digest != [0u8; 20] {
            non_empty += 1;
        }
        for (c, d) in combined.iter_mut().zip(digest) {
            *c ^= d;
        }
    }
    if non_empty > 0 && non_empty.is_multiple_of(2) {
        for (c, d) in combined.iter_mut().zip(db0_mix()) {
            *c ^= d;
        }
    }
    let hex: String = combined.iter().map(|b| format!("{b:02x}")).collect();
    Bytes::from(format!("+{hex}\r\n"))
}

/// What Redis mixes into a digest for database 0 before its keys: `SHA1(SHA1(htonl(0)))`.
fn db0_mix() -> [u8; 20] {
    let inner = sha1_smol::Sha1::from([0u8; 4]).digest().bytes();
    sha1_smol::Sha1::from(inner).digest().bytes()
}

/// The 20 bytes of a `+<40 hex digits>` reply.
fn parse_digest(reply: &[u8]) -> Option<[u8; 20]> {
    let hex = reply.strip_prefix(b"+")?.strip_suffix(b"\r\n")?;
    if hex.len() != 40 {
        return None;
    }
    let mut out = [0u8; 20];
    for (byte, pair) in out.iter_mut().zip(hex.chunks(2)) {
        let text = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ReplyKind;

    fn ok(addr: &str, bytes: &'static [u8]) -> Answer {
        (
            NodeAddr::new(addr),
            Ok(Reply {
                bytes: Bytes::from_static(bytes),
                kind: ReplyKind::Value,
            }),
        )
    }

    fn refused(addr: &str, text: &'static str) -> Answer {
        let bytes = Bytes::from(format!("-{text}\r\n"));
        let end = bytes.len() - 2;
        (
            NodeAddr::new(addr),
            Ok(Reply {
                bytes,
                kind: ReplyKind::Error(1, end),
            }),
        )
    }

    #[test]
    fn a_kill_is_ok_when_one_node_killed_then_a_node_error_then_notbusy() {
        const NOTBUSY: &str = "NOTBUSY No scripts in execution right now.";
        const UNKILLABLE: &str = "UNKILLABLE Sorry the script already executed write commands against the dataset. You can either wait the script termination or kill the server in a hard way using the SHUTDOWN NOSAVE command.";
        let killed = [
            refused("a:1", NOTBUSY),
            ok("b:2", b"+OK\r\n"),
            refused("c:3", NOTBUSY),
        ];
        assert_eq!(&any_killed(&killed, "SCRIPT KILL")[..], b"+OK\r\n");
        let unkillable = [refused("a:1", NOTBUSY), refused("b:2", UNKILLABLE)];
        assert_eq!(
            any_killed(&unkillable, "SCRIPT KILL"),
            format!("-{UNKILLABLE}\r\n")
        );
        let lost = [
            refused("a:1", NOTBUSY),
            (
                NodeAddr::new("b:2"),
                Err(BackendError::Lost {
                    addr: NodeAddr::new("b:2"),
                }),
            ),
        ];
        assert!(
            any_killed(&lost, "SCRIPT KILL")
                .starts_with(b"-ERR respgate: SCRIPT KILL did not reach b:2")
        );
        let none = [refused("a:1", NOTBUSY), refused("b:2", NOTBUSY)];
        assert_eq!(any_killed(&none, "SCRIPT KILL"), format!("-{NOTBUSY}\r\n"));
    }

    #[test]
    fn every_node_ok_is_ok_and_a_refusal_names_the_nodes() {
        let all = [ok("a:1", b"+OK\r\n"), ok("b:2", b"+OK\r\n")];
        assert_eq!(&all_succeed(&all)[..], b"+OK\r\n");
        let some = [
            ok("a:1", b"+OK\r\n"),
            refused(
                "b:2",
                "ERR CONFIG SET failed (possibly related to argument 'x') - nope",
            ),
            (
                NodeAddr::new("c:3"),
                Err(BackendError::Unreachable {
                    addr: NodeAddr::new("c:3"),
                    reason: "refused".into(),
                }),
            ),
        ];
        assert_eq!(
            &all_succeed(&some)[..],
            &b"-ERR CONFIG SET failed (possibly related to argument 'x') - nope (respgate: failed on 2 of 3 nodes: b:2, c:3)\r\n"[..]
        );
        let refused = b"-ERR CONFIG SET failed (possibly related to argument 'x') - nope\r\n";
        let all = [ok("a:1", refused), ok("b:2", refused)];
        assert_eq!(
            &all_succeed(&all)[..],
            &refused[..],
            "as one Redis refuses it"
        );
    }

    #[test]
    fn digests_combine_as_one_redis_holding_every_key() {
        // One master with keys: its digest is the answer, whatever the empty ones say.
        let one = [
            ok("a:1", b"+00000000000000000000000000000000000000ff\r\n"),
            ok("b:2", b"+0000000000000000000000000000000000000000\r\n"),
        ];
        assert_eq!(
            &dataset_digest(&one)[..],
            b"+00000000000000000000000000000000000000ff\r\n"
        );
        // Two with keys: the database mix, held twice, is put back once.
        let mix = db0_mix();
        let two = [
            ok("a:1", b"+0000000000000000000000000000000000000001\r\n"),
            ok("b:2", b"+0000000000000000000000000000000000000002\r\n"),
        ];
        let mut expected = mix;
        if let Some(last) = expected.last_mut() {
            *last ^= 3;
        }
        let hex: String = expected.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(dataset_digest(&two), Bytes::from(format!("+{hex}\r\n")));
    }
}
