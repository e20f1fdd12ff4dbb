//! redis-rs through the proxy, as the scripts under tests/clients/ drive the other libraries:
//! a plain multiplexed connection over RESP2 (its default) and RESP3, and the async cluster
//! client over RESP3 (the protocol its Pub/Sub needs), whose every node connection is recorded
//! to prove it dials only the announced address.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::PoisonError;
use std::time::Duration;

use futures_util::StreamExt;
use redis::cluster::ClusterClientBuilder;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{
    AsyncConnectionConfig, AsyncTypedCommands, Cmd, ProtocolVersion, PushKind, RedisError, Value,
    cmd, pipe,
};
use respgate::slot::Slot;

use crate::Run;
use crate::redis_rs_conn::{Conn, DIALED, Recorded};

/// How long a check waits for a message or a blocked pop, and a client for a reply.
const WAIT: Duration = Duration::from_secs(10);
/// How long one check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// The client kinds run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `MultiplexedConnection` with its default protocol, RESP2.
    PlainResp2,
    /// `MultiplexedConnection` with `protocol=resp3`.
    PlainResp3,
    /// The async `ClusterConnection` over RESP3.
    Cluster,
}

impl Mode {
    /// Every mode, in the order they run.
    pub const ALL: [Mode; 3] = [Mode::PlainResp2, Mode::PlainResp3, Mode::Cluster];

    fn name(self) -> &'static str {
        match self {
            Mode::PlainResp2 => "resp2",
            Mode::PlainResp3 => "resp3",
            Mode::Cluster => "cluster",
        }
    }
}

/// Why a check failed.
struct Failed(String);

impl From<RedisError> for Failed {
    fn from(e: RedisError) -> Failed {
        Failed(format!("redis error: {e}"))
    }
}

impl From<redis::ParsingError> for Failed {
    fn from(e: redis::ParsingError) -> Failed {
        Failed(format!("unexpected reply: {e}"))
    }
}

type Checked = Result<(), Failed>;

macro_rules! ensure {
    ($cond:expr, $($why:tt)+) => {
        if !$cond {
            return Err(Failed(format!($($why)+)));
        }
    };
}

macro_rules! ensure_eq {
    ($got:expr, $want:expr) => {{
        let (got, want) = ($got, $want);
        ensure!(got == want, "got {got:?}, want {want:?}");
    }};
}

/// Where and how a mode's clients connect.
#[derive(Clone)]
struct Endpoint {
    mode: Mode,
    host: String,
    port: u16,
}

impl Endpoint {
    fn url(&self) -> String {
        let protocol = if self.mode == Mode::PlainResp2 {
            ""
        } else {
            "?protocol=resp3"
        };
        format!("redis://{}:{}/{protocol}", self.host, self.port)
    }

    fn cluster_builder(&self) -> ClusterClientBuilder {
        ClusterClientBuilder::new([self.url()])
            .use_protocol(ProtocolVersion::RESP3)
            // The defaults (1 s, 500 ms) are short for a loaded CI machine and for BLPOP.
            .connection_timeout(Duration::from_secs(10))
            .response_timeout(WAIT * 3)
    }

    /// A new client of this mode (its own connection, or its own cluster client).
    async fn connect(&self) -> Result<Conn, Failed> {
        Ok(match self.mode {
            Mode::Cluster => Conn::Cluster(
                self.cluster_builder()
                    .build()?
                    .get_async_generic_connection::<Recorded>()
                    .await?,
            ),
            _ => Conn::Plain(
                redis::Client::open(self.url())?
                    .get_multiplexed_async_connection_with_config(
                        &AsyncConnectionConfig::new()
                            .set_connection_timeout(Some(Duration::from_secs(10)))
                            .set_response_timeout(Some(WAIT * 3)),
                    )
                    .await?,
            ),
        })
    }
}

/// One mode's checks: the endpoint, the client under test, and the key prefix of this run.
struct Ctx {
    at: Endpoint,
    conn: Conn,
    prefix: String,
}

impl Ctx {
    /// Runs a node-wide command: as it is on a plain connection, on the one announced node
    /// through the cluster client.
    async fn on_node(&mut self, command: &Cmd) -> Result<Value, Failed> {
        Ok(match &mut self.conn {
            Conn::Plain(c) => command.query_async(c).await?,
            Conn::Cluster(c) => {
                let node = SingleNodeRoutingInfo::ByAddress {
                    host: self.at.host.clone(),
                    port: self.at.port,
                };
                c.route_command(command.clone(), RoutingInfo::SingleNode(node))
                    .await?
            }
        })
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn keys_of_many_slots(&self, name: &str, count: usize) -> Result<Vec<String>, Failed> {
        let keys: Vec<String> = (0..count)
            .map(|i| self.key(&format!("{name}:{i}")))
            .collect();
        let slots: BTreeSet<u16> = keys
            .iter()
            .map(|k| Slot::for_key(k.as_bytes()).get())
            .collect();
        ensure!(
            slots.len() > count / 2,
            "the keys hash to only {} slots",
            slots.len()
        );
        Ok(keys)
    }
}

/// Runs every check of `mode` against the proxy on `host:port`.
pub async fn run(mode: Mode, host: &str, port: u16) -> Run {
    let label = format!("redis-rs {}", mode.name());
    let mut output = format!("redis-rs 1.8, mode {}\n", mode.name());
    let at = Endpoint {
        mode,
        host: host.to_string(),
        port,
    };
    let mut ctx = match at.connect().await {
        Ok(conn) => Ctx {
            at,
            conn,
            prefix: format!("redis-rs-{}:", mode.name()),
        },
        Err(Failed(why)) => {
            output.push_str(&format!("FAIL connect: {why}\n"));
            return Run {
                label,
                passed: false,
                output,
            };
        }
    };
    let mut failed = 0;
    let mut total = 0;
    macro_rules! checks {
        ($($check:ident),+ $(,)?) => {$(
            total += 1;
            let name = stringify!($check).trim_start_matches("check_");
            let result = match tokio::time::timeout(CHECK_TIMEOUT, $check(&mut ctx)).await {
                Ok(result) => result,
                Err(_) => Err(Failed(format!("ran past {CHECK_TIMEOUT:?}"))),
            };
            match result {
                Ok(()) => output.push_str(&format!("PASS {name}\n")),
                Err(Failed(why)) => {
                    failed += 1;
                    output.push_str(&format!("FAIL {name}: {why}\n"));
                }
            }
        )+};
    }
    checks!(
        check_protocol,
        check_set_get,
        check_multi_slot_mget_mset_del,
        check_pipeline_of_200,
        check_multi_exec,
        check_publish_subscribe,
        check_blpop_woken_by_lpush,
        check_scan_match,
        check_eval,
        check_hash,
        check_sorted_set,
        check_stream,
        check_one_megabyte_value,
        check_client_setname_getname,
        check_dialed_only_the_announced_address,
    );
    output.push_str(&format!(
        "{label}: {} of {total} checks pass\n",
        total - failed
    ));
    Run {
        label,
        passed: failed == 0,
        output,
    }
}

// ---------------------------------------------------------------------------------------------
// The checks, as in tests/clients/python/redis_py.py.

/// The value of `name` in a HELLO reply: a map (RESP3) or a flat array (RESP2).
fn hello_field(hello: &Value, name: &str) -> Option<Value> {
    let pairs: Vec<(Value, Value)> = match hello {
        Value::Map(pairs) => pairs.clone(),
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|p| Some((p.first()?.clone(), p.get(1)?.clone())))
            .collect(),
        _ => return None,
    };
    pairs.into_iter().find_map(|(k, v)| {
        (redis::from_redis_value::<String>(k).ok().as_deref() == Some(name)).then_some(v)
    })
}

async fn check_protocol(ctx: &mut Ctx) -> Checked {
    let hello = ctx.on_node(&cmd("HELLO")).await?;
    let want = if ctx.at.mode == Mode::PlainResp2 {
        2
    } else {
        3
    };
    ensure!(
        hello_field(&hello, "proto") == Some(Value::Int(want)),
        "HELLO says {hello:?}, want proto {want}"
    );
    Ok(())
}

async fn check_set_get(ctx: &mut Ctx) -> Checked {
    for i in 0..100 {
        let key = ctx.key(&format!("k{i}"));
        ctx.conn.set(&key, format!("value-{i}")).await?;
    }
    for i in 0..100 {
        let key = ctx.key(&format!("k{i}"));
        ensure_eq!(ctx.conn.get(&key).await?, Some(format!("value-{i}")));
    }
    ensure_eq!(ctx.conn.get(ctx.key("missing")).await?, None);
    Ok(())
}

async fn check_multi_slot_mget_mset_del(ctx: &mut Ctx) -> Checked {
    // A plain client sends one command over many slots (the proxy splits it); the cluster
    // client splits it by slot itself.
    let keys = ctx.keys_of_many_slots("multi", 40)?;
    let pairs: Vec<(String, String)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.clone(), format!("m{i}")))
        .collect();
    ctx.conn.mset(&pairs).await?;
    let mut asked = keys.clone();
    asked.push(ctx.key("multi:missing"));
    let mut want: Vec<Option<String>> = (0..keys.len()).map(|i| Some(format!("m{i}"))).collect();
    want.push(None);
    ensure_eq!(ctx.conn.mget(&asked).await?, want);
    ensure_eq!(ctx.conn.del(&asked).await?, keys.len());
    ensure_eq!(ctx.conn.exists(&keys).await?, false);
    Ok(())
}

async fn check_pipeline_of_200(ctx: &mut Ctx) -> Checked {
    let keys = if ctx.at.mode == Mode::Cluster {
        // The cluster client refuses a pipeline over several slots before sending it
        // ("Received crossed slots in pipeline"): keys of one slot, a hash tag.
        (0..100)
            .map(|i| format!("{{{}pipe}}:{i}", ctx.prefix))
            .collect()
    } else {
        ctx.keys_of_many_slots("pipe", 100)?
    };
    let mut pipeline = pipe();
    for (i, key) in keys.iter().enumerate() {
        pipeline.set(key, format!("p{i}"));
    }
    for key in &keys {
        pipeline.get(key);
    }
    let replies: Vec<String> = pipeline.query_async(&mut ctx.conn).await?;
    let want: Vec<String> = (0..100)
        .map(|_| "OK".to_string())
        .chain((0..100).map(|i| format!("p{i}")))
        .collect();
    ensure_eq!(replies, want);
    Ok(())
}

async fn check_multi_exec(ctx: &mut Ctx) -> Checked {
    let counter = format!("{{t}}{}counter", ctx.prefix);
    let note = format!("{{t}}{}note", ctx.prefix);
    let replies: (String, i64, String, String, String) = pipe()
        .atomic()
        .set(&counter, 1)
        .incr(&counter, 1)
        .set(&note, "done")
        .get(&note)
        .get(&counter)
        .query_async(&mut ctx.conn)
        .await?;
    ensure_eq!(
        replies,
        (
            "OK".to_string(),
            2,
            "OK".to_string(),
            "done".to_string(),
            "2".to_string()
        )
    );
    Ok(())
}

async fn check_publish_subscribe(ctx: &mut Ctx) -> Checked {
    let channel = ctx.key("channel");
    if ctx.at.mode == Mode::Cluster {
        // The cluster client delivers Pub/Sub messages as RESP3 pushes to its push sender.
        let (pushes, mut received) = tokio::sync::mpsc::unbounded_channel();
        let mut subscriber = ctx
            .at
            .cluster_builder()
            .push_sender(pushes)
            .build()?
            .get_async_generic_connection::<Recorded>()
            .await?;
        subscriber.subscribe(&channel).await?;
        ensure_eq!(ctx.conn.publish(&channel, "hello").await?, 1);
        let message = within(async {
            while let Some(push) = received.recv().await {
                if push.kind == PushKind::Message {
                    return Some(push.data);
                }
            }
            None
        })
        .await?;
        let want = vec![
            Value::BulkString(channel.into_bytes()),
            Value::BulkString(b"hello".to_vec()),
        ];
        ensure_eq!(message, Some(want));
    } else {
        let mut subscriber = redis::Client::open(ctx.at.url())?
            .get_async_pubsub()
            .await?;
        subscriber.subscribe(&channel).await?;
        ensure_eq!(ctx.conn.publish(&channel, "hello").await?, 1);
        let mut messages = subscriber.on_message();
        let message = within(messages.next()).await?;
        let Some(message) = message else {
            return Err(Failed("the subscription ended".into()));
        };
        ensure_eq!(message.get_channel_name(), channel.as_str());
        ensure_eq!(message.get_payload::<String>()?, "hello");
    }
    Ok(())
}

/// `future`'s output, or a failure after [`WAIT`].
async fn within<T>(future: impl Future<Output = T>) -> Result<T, Failed> {
    tokio::time::timeout(WAIT, future)
        .await
        .map_err(|_| Failed(format!("nothing within {WAIT:?}")))
}

async fn check_blpop_woken_by_lpush(ctx: &mut Ctx) -> Checked {
    let queue = ctx.key("queue");
    ctx.conn.del(&queue).await?;
    // A connection of its own: a blocked command holds its connection.
    let mut blocker = ctx.at.connect().await?;
    let popping = {
        let queue = queue.clone();
        tokio::spawn(async move { blocker.blpop(&queue, WAIT.as_secs_f64()).await })
    };
    // Give BLPOP time to reach the node and block; a pop that happens to start after the push
    // still passes, so this wait only makes the wake-up the likely path.
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure_eq!(ctx.conn.lpush(&queue, "job").await?, 1);
    let popped = within(popping)
        .await?
        .map_err(|e| Failed(format!("the BLPOP task failed: {e}")))??;
    ensure_eq!(popped, Some([queue, "job".to_string()]));
    Ok(())
}

async fn check_scan_match(ctx: &mut Ctx) -> Checked {
    let want: BTreeSet<String> = ctx.keys_of_many_slots("scan", 60)?.into_iter().collect();
    for key in &want {
        ctx.conn.set(key, "s").await?;
    }
    ctx.conn.set(ctx.key("scanx:other"), "not matched").await?;
    // The cluster client runs SCAN on the one node announced, as an application runs it on
    // each master.
    let pattern = ctx.key("scan:*");
    let mut got = BTreeSet::new();
    let mut cursor = "0".to_string();
    for round in 0.. {
        ensure!(round < 100_000, "SCAN never returned cursor 0");
        let mut scan = cmd("SCAN");
        scan.arg(&cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(7);
        let reply = ctx.on_node(&scan).await?;
        let (next, keys): (String, Vec<String>) = redis::from_redis_value(reply)?;
        got.extend(keys);
        cursor = next;
        if cursor == "0" {
            break;
        }
    }
    ensure_eq!(got, want);
    Ok(())
}

async fn check_eval(ctx: &mut Ctx) -> Checked {
    let key = ctx.key("eval");
    let script = "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[1])";
    let got: String = cmd("EVAL")
        .arg(script)
        .arg(1)
        .arg(&key)
        .arg("from-lua")
        .query_async(&mut ctx.conn)
        .await?;
    ensure_eq!(got, "from-lua");
    // redis-rs's Script: EVALSHA, then SCRIPT LOAD and EVALSHA again on NOSCRIPT.
    let got: String = redis::Script::new(script)
        .key(&key)
        .arg("from-script")
        .invoke_async(&mut ctx.conn)
        .await?;
    ensure_eq!(got, "from-script");
    ensure_eq!(ctx.conn.get(&key).await?, Some("from-script".to_string()));
    Ok(())
}

async fn check_hash(ctx: &mut Ctx) -> Checked {
    let key = ctx.key("hash");
    ctx.conn.del(&key).await?;
    ctx.conn
        .hset_multiple(&key, &[("f1", "v1"), ("f2", "v2")])
        .await?;
    let got: HashMap<String, String> = cmd("HGETALL").arg(&key).query_async(&mut ctx.conn).await?;
    let want: HashMap<String, String> = [("f1", "v1"), ("f2", "v2")]
        .into_iter()
        .map(|(f, v)| (f.to_string(), v.to_string()))
        .collect();
    ensure_eq!(got, want);
    Ok(())
}

async fn check_sorted_set(ctx: &mut Ctx) -> Checked {
    let key = ctx.key("zset");
    ctx.conn.del(&key).await?;
    let added = ctx
        .conn
        .zadd_multiple(&key, &[(1.0, "a"), (2.5, "b"), (-3.0, "c")])
        .await?;
    ensure_eq!(added, 3);
    let got = ctx.conn.zrange_withscores(&key, 0, -1).await?;
    let want: Vec<(String, f64)> = vec![("c".into(), -3.0), ("a".into(), 1.0), ("b".into(), 2.5)];
    ensure_eq!(got, want);
    Ok(())
}

async fn check_stream(ctx: &mut Ctx) -> Checked {
    let key = ctx.key("stream");
    ctx.conn.del(&key).await?;
    let first = ctx.conn.xadd(&key, "*", &[("field", "one")]).await?;
    let second = ctx.conn.xadd(&key, "*", &[("field", "two")]).await?;
    ensure_eq!(ctx.conn.xlen(&key).await?, 2);
    let got = ctx.conn.xrange_all(&key).await?;
    let ids: Vec<Option<String>> = got.ids.iter().map(|e| Some(e.id.clone())).collect();
    ensure_eq!(ids, vec![first, second]);
    let fields: Vec<Option<String>> = got.ids.iter().map(|e| e.get("field")).collect();
    ensure_eq!(
        fields,
        vec![Some("one".to_string()), Some("two".to_string())]
    );
    Ok(())
}

async fn check_one_megabyte_value(ctx: &mut Ctx) -> Checked {
    let key = ctx.key("big");
    // Every byte value, in an order that repeats only every 251 bytes.
    let value: Vec<u8> = (0..1usize << 20).map(|i| (i % 251) as u8).collect();
    ctx.conn.set(&key, &value).await?;
    let got: Vec<u8> = cmd("GET").arg(&key).query_async(&mut ctx.conn).await?;
    ensure!(
        got == value,
        "read back {} bytes, not the 1 MiB written",
        got.len()
    );
    Ok(())
}

async fn check_client_setname_getname(ctx: &mut Ctx) -> Checked {
    let name = format!("redis-rs-{}-client", ctx.at.mode.name());
    let set = ctx.on_node(cmd("CLIENT").arg("SETNAME").arg(&name)).await?;
    ensure!(
        matches!(&set, Value::Okay) || set == Value::SimpleString("OK".into()),
        "CLIENT SETNAME: {set:?}"
    );
    let got = ctx.on_node(cmd("CLIENT").arg("GETNAME")).await?;
    ensure_eq!(redis::from_redis_value::<String>(got)?, name);
    Ok(())
}

async fn check_dialed_only_the_announced_address(ctx: &mut Ctx) -> Checked {
    if ctx.at.mode != Mode::Cluster {
        // A plain client dials the address it is given, and nothing else.
        return Ok(());
    }
    let dialed = DIALED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let want = format!("{}:{}", ctx.at.host, ctx.at.port);
    ensure!(!dialed.is_empty(), "no connection recorded");
    let others: BTreeSet<&String> = dialed.iter().filter(|a| **a != want).collect();
    ensure!(
        others.is_empty(),
        "dialed {others:?} besides the announced {want}"
    );
    Ok(())
}
