//! The proxy's users against Redis's: the same users made with `ACL SETUSER` on a real Redis
//! and as `[users.NAME]` in the proxy, the same commands sent as each user to both, and every
//! difference in what is refused a failure. Refused means what Redis refuses for permissions:
//! `NOPERM`, `EXECABORT ... NOPERM`, `SORT`'s "insufficient ACL permissions", and a script's
//! "The user executing the script ..."; the refusals are compared byte for byte.
//!
//! Twice: a proxy in front of a Redis Cluster against one Redis node in cluster mode, and a
//! proxy in front of a standalone server against a standalone server. The corpus is
//! `tests/acl/corpus.txt` (every command family, every key-spec shape, scripts, functions and
//! Pub/Sub), each command with its keys in every combination of the users' key patterns, and
//! pipelined transactions below.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::RedisCluster;
use common::proxy::{Proxy, Raw, config_for, config_with};
use common::sentinel::{StandaloneServer, cli};
use respgate::config::{BackendConfig, BackendKind, Config, UserConfig};

/// One user, as both sides are given it.
struct TestUser {
    name: &'static str,
    commands: &'static str,
    keys: &'static [&'static str],
    channels: &'static [&'static str],
}

const PASSWORD: &str = "differential-pw";

/// Commands a user with every command must not run on the reference: they would change what
/// later commands see (users, scripts, the server itself) on one side only.
const HARMFUL: &str = "-flushall -flushdb -swapdb -shutdown -debug -monitor -function|flush -function|delete -function|restore -script|flush -script|kill -function|kill -acl|setuser -acl|deluser -acl|load -acl|save -config|set -config|rewrite -client|kill -client|pause -failover -replicaof -slaveof -cluster -save -bgsave -bgrewriteaof -module";

fn users() -> Vec<TestUser> {
    vec![
        // An application: its own keys, a read-only and a write-only prefix, its channels.
        TestUser {
            name: "app",
            commands: "+@all -@dangerous",
            keys: &["~n:*", "%R~r:*", "%W~w:*"],
            channels: &["&n.*"],
        },
        // Reads, scripts, transactions without EXEC, Pub/Sub and SET.
        TestUser {
            name: "narrow",
            commands: "-@all +@read +@transaction +@scripting +@pubsub +@connection +set -exec -function|flush -function|delete -function|restore -script|flush -script|kill -function|kill",
            keys: &["~n:*", "%R~r:*"],
            channels: &["&n.*"],
        },
        // Every command that does no harm, few keys: SORT, MIGRATE, OBJECT, ...
        TestUser {
            name: "sorter",
            commands: "+@all",
            keys: &["~n:*", "%W~w:*"],
            channels: &["allchannels"],
        },
        // Every key, no administration: SORT ... BY/GET and scripts reading anything.
        TestUser {
            name: "wide",
            commands: "+@all -@admin",
            keys: &["allkeys"],
            channels: &["&n.*"],
        },
    ]
}

/// The full command rules of `user`.
fn rules(user: &TestUser) -> String {
    if user.commands.contains("-@all") {
        user.commands.to_string()
    } else {
        format!("{} {HARMFUL}", user.commands)
    }
}

/// Makes the users on the Redis server at `port`.
fn make_users(port: u16) {
    for user in users() {
        let mut args = vec!["ACL".to_string(), "SETUSER".into(), user.name.into()];
        args.extend(["reset", "on"].map(String::from));
        args.push(format!(">{PASSWORD}"));
        args.extend(rules(&user).split_whitespace().map(String::from));
        args.extend(user.keys.iter().map(|k| k.to_string()));
        args.extend(user.channels.iter().map(|c| c.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_eq!(cli(port, &args).unwrap(), "OK", "{args:?}");
    }
}

/// The proxy's users, and a default user with every permission for the harness.
fn add_users(config: &mut Config) {
    config.users.insert(
        "default".into(),
        UserConfig {
            nopass: true,
            commands: "+@all".into(),
            keys: vec!["allkeys".into()],
            channels: vec!["allchannels".into()],
            ..UserConfig::default()
        },
    );
    for user in users() {
        config.users.insert(
            user.name.into(),
            UserConfig {
                passwords: vec![PASSWORD.into()],
                commands: rules(&user),
                keys: user.keys.iter().map(|k| k.to_string()).collect(),
                channels: user.channels.iter().map(|c| c.to_string()).collect(),
                ..UserConfig::default()
            },
        );
    }
}

/// The scripts `$SHA_*` names, and the function library `FCALL` calls.
const SCRIPTS: [(&str, &str); 3] = [
    ("$SHA_GETKEY", "return redis.call('get', KEYS[1])"),
    ("$SHA_GETARG", "return redis.call('get', ARGV[1])"),
    ("$SHA_SETARG", "return redis.call('set', ARGV[1], 'v')"),
];
const LIBRARY: &str = "#!lua name=acltest
redis.register_function{function_name='getkey', callback=function(keys, args) return redis.call('get', keys[1]) end, flags={'no-writes'}}
redis.register_function{function_name='getarg', callback=function(keys, args) return redis.call('get', args[1]) end, flags={'no-writes'}}
redis.register_function('setarg', function(keys, args) return redis.call('set', args[1], 'v') end)";

/// Loads the scripts and the library on the node at `port`; the scripts' SHA1s.
fn load_code(port: u16) -> Vec<(&'static str, String)> {
    cli(port, &["FUNCTION", "LOAD", "REPLACE", LIBRARY]).unwrap();
    SCRIPTS
        .iter()
        .map(|(name, body)| (*name, cli(port, &["SCRIPT", "LOAD", body]).unwrap()))
        .collect()
}

/// Splits a corpus line on spaces, keeping "double-quoted" arguments whole (`""` is empty).
fn split(line: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').expect("closing quote");
            args.push(quoted[..end].to_string());
            rest = quoted[end + 1..].trim_start();
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            args.push(rest[..end].to_string());
            rest = rest[end..].trim_start();
        }
    }
    args.into_iter().map(|a| a.replace("\\0", "\0")).collect()
}

/// The key prefixes: each user's patterns allow some of them for some access.
const PREFIXES: [&str; 4] = ["n", "r", "w", "x"];

/// Every instance of a corpus line: its keys in every combination of prefixes.
fn instances(line: &str, shas: &[(&str, String)]) -> Vec<Vec<String>> {
    let template = split(line);
    let keys = ["$K1", "$K2", "$K3"]
        .iter()
        .filter(|k| line.contains(*k))
        .count()
        .max(1);
    let mut out = Vec::new();
    let combinations = PREFIXES.len().pow(keys as u32);
    for mut combination in 0..combinations {
        let mut prefix = [""; 3];
        for slot in prefix.iter_mut().take(keys) {
            *slot = PREFIXES[combination % PREFIXES.len()];
            combination /= PREFIXES.len();
        }
        let args = template
            .iter()
            .map(|arg| {
                let mut arg = arg
                    .replace("$K1", &format!("{}:{{t}}1", prefix[0]))
                    .replace("$K2", &format!("{}:{{t}}2", prefix[1]))
                    .replace("$K3", &format!("{}:{{t}}3", prefix[2]))
                    .replace("$C", &format!("{}.1", prefix[0]))
                    .replace("$P", &format!("{}.*", prefix[0]));
                for (name, sha) in shas {
                    arg = arg.replace(name, sha);
                }
                arg
            })
            .collect();
        out.push(args);
    }
    out
}

/// Commands that change the connection (or leave it waiting): sent on a connection of their own.
fn changes_connection(args: &[String]) -> bool {
    let name = args[0].to_ascii_lowercase();
    matches!(
        name.as_str(),
        "multi"
            | "watch"
            | "subscribe"
            | "psubscribe"
            | "ssubscribe"
            | "select"
            | "readonly"
            | "readwrite"
            | "reset"
            | "hello"
            | "auth"
            | "quit"
    )
}

/// What Redis refuses for permissions in `reply`: every such error, as sent.
fn refusals(reply: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(reply)
        .split("\r\n")
        .filter(|line| line.starts_with('-'))
        .filter(|line| {
            line.starts_with("-NOPERM")
                || line.contains("EXECABORT Transaction discarded because of: NOPERM")
                || line.contains("option of SORT denied due to insufficient ACL permissions")
                || line.contains("The user executing the script")
        })
        .map(str::to_string)
        .collect()
}

/// One side: a Redis server or a proxy, with a logged-in connection per user.
struct Side {
    port: u16,
    conns: HashMap<&'static str, Raw>,
}

impl Side {
    fn new(port: u16) -> Side {
        Side {
            port,
            conns: HashMap::new(),
        }
    }

    fn login(&self, user: &str) -> Raw {
        let mut raw = Raw::connect(self.port);
        let reply = raw.command(&["AUTH", user, PASSWORD]);
        assert_eq!(reply, b"+OK\r\n", "AUTH {user} on {}", self.port);
        raw
    }

    /// `commands` as `user`, sent in one write; their replies.
    fn send(&mut self, user: &'static str, commands: &[Vec<String>]) -> Vec<Vec<u8>> {
        let alone = commands.len() > 1 || changes_connection(&commands[0]);
        let mut fresh;
        let raw = if alone {
            fresh = self.login(user);
            &mut fresh
        } else {
            let port = self.port;
            self.conns.entry(user).or_insert_with(|| {
                let mut raw = Raw::connect(port);
                assert_eq!(raw.command(&["AUTH", user, PASSWORD]), b"+OK\r\n");
                raw
            })
        };
        let mut out = bytes::BytesMut::new();
        for args in commands {
            respgate::protocol::request::encode_command(&mut out, args);
        }
        raw.send(&out);
        commands.iter().map(|_| raw.reply()).collect()
    }
}

/// Waits until the single cluster-mode node on `port` serves every slot.
fn wait_cluster_ok(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cli(port, &["CLUSTER", "INFO"]).is_ok_and(|i| i.contains("cluster_state:ok")) {
        assert!(
            Instant::now() < deadline,
            "node {port} never served its slots"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Transactions sent in one write with what follows them, as client libraries send them.
const PIPELINES: &[&[&str]] = &[
    &["MULTI", "GET $K1", "EXEC", "PING"],
    &["MULTI", "SET $K1 v", "GET $K1", "EXEC", "PING"],
    &["MULTI", "NOSUCHCMD", "EXEC", "PING"],
    &["MULTI", "GET", "EXEC", "PING"],
    &["MULTI", "FLUSHALL", "EXEC", "PING"],
    &["MULTI", "WATCH $K1", "EXEC", "PING"],
    &["MULTI", "SET $K1 v", "DISCARD", "PING"],
    &["MULTI", "NOSUCHCMD", "DISCARD", "PING"],
    &["WATCH $K1", "MULTI", "SET $K1 v", "EXEC", "PING"],
    &[
        "MULTI",
        "EVAL \"return redis.call('get', ARGV[1])\" 1 $K1 $K2",
        "EXEC",
        "PING",
    ],
    &[
        "MULTI",
        "EVAL \"return redis.call('set', ARGV[1], 'v')\" 1 $K1 $K2",
        "EXEC",
        "PING",
    ],
    &["MULTI", "FCALL getarg 1 $K1 $K2", "EXEC", "PING"],
    &["MULTI", "SORT $K1 GET #", "EXEC", "PING"],
    &["MULTI", "SORT $K1 STORE $K2", "EXEC", "PING"],
    &["MULTI", "EXEC", "PING"],
    &["EXEC", "PING"],
];

/// Runs the corpus and the pipelines against `reference` and `proxy`; every difference, named.
fn compare(
    label: &str,
    reference: u16,
    proxy: u16,
    shas: &[(&str, String)],
) -> (usize, Vec<String>) {
    let corpus = include_str!("acl/corpus.txt");
    let mut redis = Side::new(reference);
    let mut ours = Side::new(proxy);
    let mut differences = Vec::new();
    let mut compared = 0;
    // Each kind of refusal Redis made, so the corpus is known to reach each.
    let mut kinds: HashMap<&'static str, usize> = HashMap::new();
    let mut check = |user: &'static str, commands: Vec<Vec<String>>| {
        let theirs = redis.send(user, &commands);
        let mine = ours.send(user, &commands);
        compared += 1;
        for ((command, theirs), mine) in commands.iter().zip(&theirs).zip(&mine) {
            let (expected, got) = (refusals(theirs), refusals(mine));
            for refusal in &expected {
                *kinds.entry(kind(refusal)).or_default() += 1;
            }
            if expected != got {
                differences.push(format!(
                    "{label}, user {user}: {}\n    redis: {}\n    proxy: {}",
                    command.join(" "),
                    String::from_utf8_lossy(theirs).trim_end(),
                    String::from_utf8_lossy(mine).trim_end()
                ));
            }
        }
    };
    for user in users() {
        for line in corpus.lines() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            for args in instances(line, shas) {
                check(user.name, vec![args]);
            }
        }
        for pipeline in PIPELINES {
            let lines: Vec<Vec<Vec<String>>> =
                pipeline.iter().map(|l| instances(l, shas)).collect();
            // The same prefix throughout: as many instances as the first command has.
            for i in 0..PREFIXES.len() {
                let commands = lines
                    .iter()
                    .map(|each| each[i.min(each.len() - 1)].clone())
                    .collect();
                check(user.name, commands);
            }
        }
    }
    let sort = (label == "standalone").then_some("sort");
    for wanted in KINDS.into_iter().chain(sort) {
        assert!(
            kinds.get(wanted).is_some_and(|n| *n > 0),
            "{label}: Redis never refused {wanted}; refusals seen: {kinds:?}"
        );
    }
    eprintln!("{label}: Redis's refusals by kind: {kinds:?}");
    (compared, differences)
}

/// The kinds of refusal every run must see Redis make (a corpus that reached none of one kind
/// would prove nothing of it).
const KINDS: [&str; 7] = [
    "command",
    "key",
    "channel",
    "exec",
    "script key",
    "script command",
    "script channel",
];

/// The kind of a refusal, for [`KINDS`].
fn kind(refusal: &str) -> &'static str {
    if refusal.contains("EXECABORT") {
        "exec"
    } else if refusal.contains("SORT") {
        "sort"
    } else if refusal.contains("script can't access") {
        "script key"
    } else if refusal.contains("script can't run") {
        "script command"
    } else if refusal.contains("script can't publish") {
        "script channel"
    } else if refusal.contains("to run the") {
        "command"
    } else if refusal.contains("of the keys") {
        "key"
    } else {
        "channel"
    }
}

#[test]
fn restricted_users_are_refused_what_redis_refuses_them() {
    // In front of a Redis Cluster, against one node in cluster mode.
    let cluster = RedisCluster::start(3, 0);
    let reference = StandaloneServer::start_with(&["--cluster-enabled", "yes"]);
    cli(reference.port, &["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]).unwrap();
    wait_cluster_ok(reference.port);
    let mut config = config_for(&cluster.seeds());
    add_users(&mut config);
    let proxy = Proxy::start_with(config);
    proxy.wait_until_serving();
    make_users(reference.port);
    let shas = load_code(reference.port);
    for port in cluster.master_ports() {
        assert_eq!(load_code(port), shas);
    }
    let (on_cluster, mut differences) = compare("cluster", reference.port, proxy.port, &shas);

    // In front of a standalone server, against a standalone server.
    let backend = StandaloneServer::start();
    let reference = StandaloneServer::start();
    let mut config = config_with(vec![(
        "main",
        BackendConfig {
            kind: BackendKind::Standalone,
            address: backend.address(),
            request_timeout_ms: 2000,
            ..BackendConfig::default()
        },
    )]);
    add_users(&mut config);
    let proxy = Proxy::start_with(config);
    proxy.wait_until_serving();
    make_users(reference.port);
    assert_eq!(load_code(reference.port), shas);
    assert_eq!(load_code(backend.port), shas);
    let (standalone, more) = compare("standalone", reference.port, proxy.port, &shas);
    differences.extend(more);

    eprintln!(
        "compared {on_cluster} requests in front of a cluster and {standalone} in front of a standalone server, as {} users",
        users().len()
    );
    assert!(
        differences.is_empty(),
        "{} differences in what is refused:\n{}",
        differences.len(),
        differences.join("\n")
    );
}
