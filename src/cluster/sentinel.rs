//! A Sentinel-managed backend: its master and replicas as the sentinels say, checked with `ROLE`
//! on the node, and the sentinels' events (`+switch-master`, ...) turned into refreshes at once,
//! so traffic moves to a promoted replica as soon as a sentinel announces it.

use std::sync::Arc;
use std::time::Duration;

use crate::protocol::Value;
use bytes::BytesMut;
use futures_util::future::join_all;
use tracing::{debug, info};

use super::ask::{TopologyError, answers_within_grace, ask};
use super::{Backend, StopSignal};
use crate::backend::{ConnSettings, NodeAddr, NodeConn};
use crate::protocol::Protocol;
use crate::protocol::request::encode_command;

/// Sentinel events after which the master or the healthy replicas may have changed.
const REFRESH_EVENTS: [&str; 7] = [
    "+switch-master",
    "+failover-end",
    "+odown",
    "-odown",
    "+sdown",
    "-sdown",
    "+slave",
];

/// Events that say a failover of a master has started: from then until the new master is
/// known, a write acknowledged by the old master could be lost when it is demoted, so writes
/// are held (see [`Backend::hold_writes`]).
const FAILOVER_STARTED: [&str; 3] = [
    "+try-failover",
    "+selected-slave",
    "+failover-state-send-slaveof-noone",
];

/// Events that say a failover ended without a new master: writes go on to the old one.
const FAILOVER_ABORTED: [&str; 3] = [
    "-failover-abort-no-good-slave",
    "-failover-abort-not-elected",
    "+failover-end-for-timeout",
];

/// Longest pause before subscribing to a sentinel's events again.
const RESUBSCRIBE_MAX: Duration = Duration::from_secs(5);

impl Backend {
    /// Settings for connections to the sentinels: their own credentials, no `READONLY`.
    fn sentinel_settings(&self) -> ConnSettings {
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        ConnSettings {
            username: non_empty(&self.config.sentinel_username),
            password: non_empty(&self.config.sentinel_password),
            readonly: false,
            ..self.pools.settings().clone()
        }
    }
}

/// How long the other sentinels have to answer once one has: a sentinel that is down must not
/// hold up discovery, but live ones answer within milliseconds of each other.
const MORE_ANSWERS_GRACE: Duration = Duration::from_millis(100);
/// How long a named master has to confirm with `ROLE`: one that does not answer at once is
/// stopped or cut off, and waiting a whole request timeout on it would keep the proxy from the
/// successor another sentinel already names.
const ROLE_TIMEOUT: Duration = Duration::from_millis(500);

/// The master and healthy replicas of the Sentinel-managed backend.
///
/// Every sentinel is asked at once. The masters they name are ranked by how many sentinels name
/// each (a sentinel may lag behind a failover), every one of them is asked `ROLE` at once, and
/// the best-ranked that says master wins: a stopped old master costs at most [`ROLE_TIMEOUT`],
/// and one that wakes up still believing it is the master loses to the master the sentinels
/// now name.
pub(super) async fn discover(
    cluster: &Backend,
) -> Result<(NodeAddr, Vec<NodeAddr>), TopologyError> {
    let name = cluster.config.master_name.as_str();
    let settings = cluster.sentinel_settings();
    let mut reasons = Vec::new();
    // Each named master, with the sentinels that name it, in the order first named.
    let mut named: Vec<(NodeAddr, Vec<NodeAddr>)> = Vec::new();
    let asks = cluster.config.sentinels.iter().map(|sentinel| {
        let sentinel = NodeAddr::new(sentinel);
        let settings = &settings;
        async move {
            let named = master_named_by(&sentinel, name, settings).await;
            (sentinel, named)
        }
    });
    let answers = answers_within_grace(asks, MORE_ANSWERS_GRACE, |(_, named)| named.is_ok()).await;
    for (sentinel, answer) in answers {
        match answer {
            Ok(master) => match named.iter_mut().find(|(m, _)| *m == master) {
                Some((_, by)) => by.push(sentinel),
                None => named.push((master, vec![sentinel])),
            },
            Err(reason) => {
                debug!(backend = %cluster.name, %sentinel, %reason, "sentinel gave no usable master");
                reasons.push(format!("{sentinel}: {reason}"));
            }
        }
    }
    named.sort_by_key(|(_, by)| std::cmp::Reverse(by.len()));
    let limit = ROLE_TIMEOUT.min(cluster.pools.settings().request_timeout);
    let roles = join_all(named.iter().map(|(master, _)| async move {
        tokio::time::timeout(limit, says_master(cluster, master))
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "did not answer ROLE within {} ms",
                    limit.as_millis()
                ))
            })
    }))
    .await;
    for ((master, by), role) in named.into_iter().zip(roles) {
        match role {
            Ok(()) => {
                let replicas = replicas_named_by(&by, name, &settings).await;
                return Ok((master, replicas));
            }
            Err(reason) => reasons.push(format!("{master}: {reason}")),
        }
    }
    Err(TopologyError::NoMaster {
        master_name: name.to_string(),
        reason: reasons.join("; "),
    })
}

/// The master `sentinel` names for `name`.
async fn master_named_by(
    sentinel: &NodeAddr,
    name: &str,
    settings: &ConnSettings,
) -> Result<NodeAddr, String> {
    let reply = ask(
        sentinel,
        &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", name],
        settings,
        "SENTINEL GET-MASTER-ADDR-BY-NAME",
    )
    .await
    .map_err(|e| e.to_string())?;
    match reply {
        Value::Array(parts) => match parts.as_slice() {
            [host, port] => address(host, port).ok_or_else(|| "unexpected master address".into()),
            _ => Err("unexpected master address".into()),
        },
        Value::Null => Err(format!("does not know a master named '{name}'")),
        _ => Err("unexpected master address".into()),
    }
}

/// Whether `master` itself says `ROLE` master: a sentinel may lag behind a failover.
async fn says_master(cluster: &Backend, master: &NodeAddr) -> Result<(), String> {
    let role = ask(master, &["ROLE"], cluster.pools.settings(), "ROLE")
        .await
        .map_err(|e| e.to_string())?;
    let is_master = matches!(&role, Value::Array(parts)
        if matches!(parts.first(), Some(Value::Bulk(r)) if r.as_ref() == b"master"));
    if is_master {
        Ok(())
    } else {
        Err("does not say it is a master".into())
    }
}

/// The healthy replicas of `name`, from the first of `sentinels` that lists them.
async fn replicas_named_by(
    sentinels: &[NodeAddr],
    name: &str,
    settings: &ConnSettings,
) -> Vec<NodeAddr> {
    for sentinel in sentinels {
        if let Ok(Value::Array(replicas)) = ask(
            sentinel,
            &["SENTINEL", "REPLICAS", name],
            settings,
            "SENTINEL REPLICAS",
        )
        .await
        {
            return replicas.iter().filter_map(healthy_replica).collect();
        }
    }
    // Reads then stay on the master; the master alone is enough to serve.
    Vec::new()
}

/// The channel and payload of a Pub/Sub `message` push, as text.
fn message(frame: &[u8]) -> Option<(String, String)> {
    let parts = crate::protocol::array_elements(frame, Protocol::Resp2)?;
    let [kind, channel, payload] = parts.as_slice() else {
        return None;
    };
    let bulk = |element: &[u8]| -> Option<String> {
        Some(String::from_utf8_lossy(crate::protocol::bulk_value(element)?).into_owned())
    };
    (bulk(kind)? == "message").then_some(())?;
    Some((bulk(channel)?, bulk(payload)?))
}

fn text(frame: &Value) -> Option<String> {
    match frame {
        Value::Bulk(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::Simple(s) => Some(String::from_utf8_lossy(s).into_owned()),
        _ => None,
    }
}

fn address(host: &Value, port: &Value) -> Option<NodeAddr> {
    Some(NodeAddr::new(&format!("{}:{}", text(host)?, text(port)?)))
}

/// A replica of `SENTINEL REPLICAS` (a flat list of field, value pairs) that is up.
fn healthy_replica(entry: &Value) -> Option<NodeAddr> {
    let Value::Array(fields) = entry else {
        return None;
    };
    let field = |name: &str| {
        fields
            .chunks(2)
            .find(|pair| pair.first().and_then(text).as_deref() == Some(name))
            .and_then(|pair| pair.get(1))
    };
    let flags = field("flags").and_then(text).unwrap_or_default();
    if flags
        .split(',')
        .any(|f| matches!(f, "s_down" | "o_down" | "disconnected"))
    {
        return None;
    }
    address(field("ip")?, field("port")?)
}

/// Subscribes to the events of every sentinel of `cluster`, each on a task of its own, asking
/// for a refresh at each event, until `stop` fires.
pub(super) fn watch_sentinels(cluster: &Arc<Backend>, stop: &StopSignal) {
    for sentinel in &cluster.config.sentinels {
        let cluster = Arc::clone(cluster);
        let sentinel = NodeAddr::new(sentinel);
        let mut stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = watch_one(&cluster, &sentinel) => {}
                _ = stop.stopped() => {}
            }
        });
    }
}

async fn watch_one(cluster: &Backend, sentinel: &NodeAddr) {
    let settings = cluster.sentinel_settings();
    let mut backoff = settings.backoff_min;
    loop {
        match listen(cluster, sentinel, &settings).await {
            Ok(()) => backoff = settings.backoff_min,
            Err(error) => {
                debug!(backend = %cluster.name, %sentinel, %error, "sentinel events unavailable")
            }
        }
        // The periodic refresh still polls the sentinels meanwhile.
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RESUBSCRIBE_MAX);
    }
}

/// Listens to one sentinel's events until its connection ends.
async fn listen(
    cluster: &Backend,
    sentinel: &NodeAddr,
    settings: &ConnSettings,
) -> Result<(), crate::backend::BackendError> {
    let mut conn = NodeConn::open(sentinel, Protocol::Resp2, settings).await?;
    let mut subscribe = BytesMut::new();
    let mut args = vec!["SUBSCRIBE"];
    args.extend(REFRESH_EVENTS);
    args.extend(FAILOVER_STARTED);
    args.extend(FAILOVER_ABORTED);
    encode_command(&mut subscribe, &args);
    conn.write_all(&subscribe).await?;
    info!(backend = %cluster.name, %sentinel, "listening to sentinel events");
    loop {
        let event = conn.read_reply().await?;
        let Some((channel, payload)) = message(&event.bytes) else {
            continue;
        };
        // Every event names the master it is about: `master <name> <ip> <port>` (or, for
        // +switch-master, `<name> <old-ip> ...`). Other masters' events are not ours.
        if !payload
            .split(' ')
            .take(2)
            .any(|word| word == cluster.config.master_name)
        {
            continue;
        }
        debug!(backend = %cluster.name, %sentinel, %channel, "sentinel event");
        if FAILOVER_STARTED.contains(&channel.as_str()) {
            cluster.hold_writes();
        } else if FAILOVER_ABORTED.contains(&channel.as_str()) {
            cluster.release_writes();
        }
        cluster.request_refresh();
    }
}
