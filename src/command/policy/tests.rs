//! The policies of a representative set of commands, from a table like Redis 7.0's.

use super::*;

#[test]
fn proxy_commands_are_sorted_for_binary_search() {
    for pair in PROXY_COMMANDS.windows(2) {
        if let [(a, _), (b, _)] = pair {
            assert!(a < b, "{a} before {b}");
        }
    }
    for (name, policy) in PROXY_COMMANDS {
        assert_eq!(proxy_command(name), Some(*policy), "{name}");
    }
    assert_eq!(proxy_command("get"), None);
    assert_eq!(proxy_command(""), None);
}

use crate::command::{CommandSpec, CommandTable, Lookup};
use bytes::Bytes;

fn spec(name: &str, flags: &[&str], subcommands: &[CommandSpec]) -> CommandSpec {
    CommandSpec {
        name: name.into(),
        arity: -1,
        flags: flags.iter().map(|f| f.to_string()).collect(),
        subcommands: subcommands
            .iter()
            .map(|s| {
                let short = s.name.rsplit('|').next().unwrap_or(&s.name).to_string();
                (short, s.clone())
            })
            .collect(),
        ..CommandSpec::default()
    }
}

/// A table like the one Redis 7.0's `COMMAND` gives, for the commands that matter here.
fn table() -> CommandTable {
    let leaf = |name: &str, flags: &[&str]| spec(name, flags, &[]);
    CommandTable::new([
        leaf("get", &["readonly", "fast"]),
        leaf("set", &["write", "denyoom"]),
        leaf("mget", &["readonly", "fast"]),
        leaf("mset", &["write", "denyoom"]),
        leaf("del", &["write"]),
        leaf("unlink", &["write", "fast"]),
        leaf("exists", &["readonly", "fast"]),
        leaf("touch", &["readonly", "fast"]),
        leaf("msetnx", &["write", "denyoom"]),
        leaf("blpop", &["write", "noscript", "blocking"]),
        leaf("xread", &["readonly", "blocking", "movablekeys"]),
        leaf("xreadgroup", &["write", "blocking", "movablekeys"]),
        leaf("eval", &["noscript", "stale", "movablekeys"]),
        leaf("eval_ro", &["noscript", "readonly", "movablekeys"]),
        leaf("evalsha", &["noscript", "stale", "movablekeys"]),
        spec(
            "script",
            &[],
            &[
                leaf("script|load", &["noscript", "stale"]),
                leaf("script|flush", &["noscript"]),
                leaf("script|exists", &["noscript"]),
                leaf("script|help", &["loading", "stale"]),
                leaf("script|kill", &["noscript", "allow_busy"]),
            ],
        ),
        spec(
            "function",
            &[],
            &[
                leaf("function|load", &["write", "denyoom", "noscript"]),
                leaf("function|delete", &["write", "noscript"]),
                leaf("function|flush", &["write", "noscript"]),
                leaf("function|list", &["noscript"]),
                leaf("function|dump", &["noscript"]),
                leaf("function|restore", &["write", "denyoom", "noscript"]),
                leaf("function|kill", &["noscript", "allow_busy"]),
            ],
        ),
        spec(
            "pubsub",
            &[],
            &[
                leaf("pubsub|numsub", &["pubsub", "loading", "stale"]),
                leaf("pubsub|shardchannels", &["pubsub", "loading", "stale"]),
                leaf("pubsub|help", &["loading", "stale"]),
            ],
        ),
        leaf("dbsize", &["readonly", "fast"]),
        leaf("keys", &["readonly"]),
        leaf("randomkey", &["readonly"]),
        leaf("flushall", &["write"]),
        leaf("scan", &["readonly"]),
        leaf("wait", &["noscript"]),
        leaf("publish", &["pubsub", "loading", "stale", "fast"]),
        leaf("waitaof", &["noscript"]),
        leaf("monitor", &["admin", "noscript", "loading", "stale"]),
        leaf("shutdown", &["admin", "noscript", "loading", "stale"]),
        leaf("debug", &["admin", "noscript", "loading", "stale"]),
        leaf("bgsave", &["admin", "noscript"]),
        leaf("swapdb", &["write", "fast"]),
        spec(
            "config",
            &[],
            &[
                leaf("config|set", &["admin", "noscript", "loading", "stale"]),
                leaf("config|get", &["admin", "noscript", "loading", "stale"]),
                leaf(
                    "config|resetstat",
                    &["admin", "noscript", "loading", "stale"],
                ),
            ],
        ),
        leaf("ping", &["fast"]),
        leaf("subscribe", &["pubsub", "noscript", "loading", "stale"]),
        leaf("multi", &["noscript", "loading", "stale", "fast"]),
        spec("client", &[], &[leaf("client|id", &["noscript"])]),
    ])
}

fn policy_of(table: &CommandTable, line: &str) -> Policy {
    let args: Vec<Bytes> = line
        .split(' ')
        .map(|a| Bytes::from(a.to_string()))
        .collect();
    match table.lookup(&args) {
        Lookup::Found(spec) => spec.policy,
        other => panic!("{line}: {other:?}"),
    }
}

fn forward(access: Access) -> Policy {
    Policy::Forward { access }
}

fn split(kind: SplitKind, access: Access) -> Policy {
    Policy::Split { kind, access }
}

fn every(response: ResponsePolicy, access: Access) -> Policy {
    Policy::EveryMaster { response, access }
}

#[test]
fn the_table_gives_every_command_and_subcommand_its_policy() {
    use Access::{Read, Write};
    let table = table();
    let expected = [
        ("GET k", forward(Read)),
        ("SET k v", forward(Write)),
        ("EVALSHA x 0", forward(Write)),
        ("MSETNX a 1 b 2", forward(Write)),
        ("CONFIG GET x", Policy::OneMaster),
        ("FUNCTION LIST", forward(Write)),
        ("PUBSUB HELP", forward(Write)),
        ("SCRIPT HELP", forward(Write)),
        ("MGET a b", split(SplitKind::Mget, Read)),
        ("MSET a 1", split(SplitKind::Mset, Write)),
        ("DEL a", split(SplitKind::Del, Write)),
        ("UNLINK a", split(SplitKind::Unlink, Write)),
        ("EXISTS a", split(SplitKind::Exists, Read)),
        // Forwarded whole as a read, as its flags say; the splitter decides its parts.
        ("TOUCH a", split(SplitKind::Touch, Read)),
        ("BLPOP l 0", Policy::Own(OwnKind::Blocking)),
        (
            "XREAD STREAMS s 0",
            Policy::Own(OwnKind::BlockingWithBlockArg { access: Read }),
        ),
        (
            "XREADGROUP GROUP g c STREAMS s >",
            Policy::Own(OwnKind::BlockingWithBlockArg { access: Write }),
        ),
        (
            "EVAL s 0",
            Policy::Script(ScriptKind::Eval { access: Write }),
        ),
        (
            "EVAL_RO s 0",
            Policy::Script(ScriptKind::Eval { access: Read }),
        ),
        ("SCRIPT LOAD s", Policy::Script(ScriptKind::Load)),
        ("script flush", Policy::Script(ScriptKind::Flush)),
        ("SCRIPT EXISTS x", every(ResponsePolicy::ScriptsExist, Read)),
        ("FUNCTION LOAD x", every(ResponsePolicy::First, Write)),
        ("FUNCTION DELETE x", every(ResponsePolicy::First, Write)),
        ("FUNCTION FLUSH", every(ResponsePolicy::AllSucceeded, Write)),
        (
            "FUNCTION RESTORE p",
            every(ResponsePolicy::AllSucceeded, Write),
        ),
        ("FUNCTION DUMP", forward(Write)),
        ("PUBSUB NUMSUB c", every(ResponsePolicy::SumPairs, Read)),
        ("PUBSUB SHARDCHANNELS", every(ResponsePolicy::Union, Read)),
        ("DBSIZE", every(ResponsePolicy::Sum, Read)),
        ("KEYS *", every(ResponsePolicy::Concat, Read)),
        ("RANDOMKEY", every(ResponsePolicy::RandomKey, Read)),
        ("SCRIPT KILL", Policy::KillScript),
        ("function kill", Policy::KillScript),
        ("FLUSHALL", every(ResponsePolicy::AllSucceeded, Write)),
        ("SCAN 0", Policy::Scan),
        ("WAIT 1 0", Policy::Wait),
        ("PUBLISH c m", Policy::Publish),
        ("WAITAOF 1 1 0", Policy::Refused(Refusal::NotSupportedYet)),
        ("MONITOR", Policy::Refused(Refusal::NeverThroughProxy)),
        ("SHUTDOWN", Policy::Refused(Refusal::NeverThroughProxy)),
        ("DEBUG SLEEP 0", Policy::Admin(AdminReach::Debug)),
        ("CONFIG SET a b", Policy::Admin(AdminReach::EveryNode)),
        ("CONFIG RESETSTAT", Policy::Admin(AdminReach::EveryNode)),
        ("BGSAVE", Policy::Admin(AdminReach::EveryMaster)),
        (
            "SWAPDB 0 1",
            Policy::Admin(AdminReach::ByKey { access: Write }),
        ),
        // The proxy's own commands keep their policy in the backend's table too.
        ("PING", Policy::Local(LocalKind::Ping)),
        ("SUBSCRIBE c", sub(SubscriptionKind::Subscribe)),
        ("MULTI", txn(Transaction::Multi)),
        // A subcommand is judged by its full name, so `client|id` is not `client`.
        ("CLIENT ID", forward(Write)),
    ];
    for (line, policy) in expected {
        assert_eq!(policy_of(&table, line), policy, "{line}");
    }
}

#[test]
fn scripts_go_where_their_command_goes_once_the_cache_knows() {
    assert_eq!(
        ScriptKind::Eval {
            access: Access::Read
        }
        .then(),
        Policy::Forward {
            access: Access::Read
        }
    );
    assert!(matches!(
        ScriptKind::Flush.then(),
        Policy::EveryMaster {
            response: ResponsePolicy::AllSucceeded,
            ..
        }
    ));
}

#[test]
fn only_auth_hello_quit_and_reset_come_before_auth() {
    let before: Vec<&str> = PROXY_COMMANDS
        .iter()
        .filter(|(_, p)| p.allowed_before_auth())
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(before, ["auth", "hello", "quit", "reset"]);
    assert!(!Policy::of("get", &[]).allowed_before_auth());
}

#[test]
fn refusal_text_names_the_command_as_the_client_wrote_it() {
    assert_eq!(
        Refusal::Admin.message("config|set"),
        "ERR respgate: CONFIG SET is an administrative command and is refused through the proxy (server.allow_admin_commands enables it)"
    );
    assert_eq!(
        Refusal::NeverThroughProxy.message("monitor"),
        "ERR respgate: MONITOR cannot work through a proxy; connect to a node directly"
    );
    assert_eq!(
        Refusal::NotSupportedYet.message("waitaof"),
        "ERR respgate: WAITAOF is not supported by this proxy yet"
    );
}

#[test]
fn wait_is_the_proxys_wait_also_when_flagged_blocking() {
    // Redis 7.0 flags WAIT `noscript`, Valkey 8 `blocking`: both must reach the master of the
    // client's last write with the capped timeout, not a connection of the client's own.
    assert_eq!(Policy::of("wait", &["noscript".to_string()]), Policy::Wait);
    assert_eq!(Policy::of("wait", &["blocking".to_string()]), Policy::Wait);
}
