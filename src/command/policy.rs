//! What the proxy does with a command: decided once, when the command table loads.
//!
//! Every [`CommandSpec`](super::CommandSpec) carries a [`Policy`], computed by
//! [`CommandTable::new`](super::CommandTable::new) from its name and flags; the proxy's own
//! commands (answered here, subscriptions, transactions) have theirs in [`PROXY_COMMANDS`], which
//! the session consults first so they work before the backend's table is known. A request then
//! costs one lookup and one `match` on the policy; only what depends on the arguments (`XREAD`
//! with or without `BLOCK`, the admin switch in the config) is checked per request, inside that
//! policy's arm.

/// What a command does to the data, which decides where it may run and whether it may run twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read-only: may go to a replica (per `read_from`), and may be sent again when an earlier
    /// sending may have run, since running it twice changes nothing.
    Read,
    /// Anything else: runs on the master, and is sent again only when the earlier sending
    /// surely did not reach the node.
    Write,
}

/// What the proxy does with one command (or subcommand).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Forwarded whole to the node owning its keys' slot (any master when keyless); keys in
    /// several slots get `CROSSSLOT`.
    Forward {
        /// Whether it only reads.
        access: Access,
    },
    /// Forwarded whole when its keys share a slot, otherwise split by slot and the replies
    /// merged (`MGET`, `MSET`, `DEL`, ...).
    Split {
        /// Which split.
        kind: SplitKind,
        /// Access when forwarded whole; each split part's access is the splitter's.
        access: Access,
    },
    /// Sent to every master, the replies combined (`DBSIZE`, `KEYS`, `FLUSHALL`, ...).
    EveryMaster {
        /// How the replies combine.
        response: ResponsePolicy,
        /// Whether it only reads.
        access: Access,
    },
    /// `SCAN`: one master after another, the cursor saying which.
    Scan,
    /// `WAIT`: on the shared connection that carried the client's last write.
    Wait,
    /// `PUBLISH`: to the master of the channel's slot, where the proxy's subscribers of that
    /// channel are, so one publisher's messages to a channel take one path and the count
    /// includes the proxy's clients.
    Publish,
    /// On the client's own connection.
    Own(OwnKind),
    /// On the client's subscription connections.
    Subscription(SubscriptionKind),
    /// Answered by the proxy itself.
    Local(LocalKind),
    /// Also told to the proxy's script cache, then routed like [`ScriptKind::then`].
    Script(ScriptKind),
    /// Administrative: refused with [`Refusal::Admin`] unless `server.allow_admin_commands`
    /// is set, then sent where its [`AdminReach`] says.
    Admin(AdminReach),
    /// About the server rather than the data (`CONFIG GET`): answered by one master of the
    /// default backend, on its control connection. Every node was given the same settings
    /// (`CONFIG SET` reaches them all), so one answers for all.
    OneMaster,
    /// `SCRIPT KILL`, `FUNCTION KILL`: sent to every node (the one running the busy script is
    /// not known) on its control connection; `+OK` when one killed its script, `NOTBUSY` when
    /// none ran one.
    KillScript,
    /// Always refused.
    Refused(Refusal),
}

impl Default for Policy {
    /// A command nothing is known of is forwarded by key, as a write: never resent when its
    /// fate is unknown.
    fn default() -> Self {
        Policy::Forward {
            access: Access::Write,
        }
    }
}

/// Where an administrative command goes, once allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminReach {
    /// Forwarded by its keys like any command (`MIGRATE`); a keyless one to any master of the
    /// default backend (`FAILOVER`, `SWAPDB`, `ACL ...`, `MODULE ...`).
    ByKey {
        /// Whether it only reads.
        access: Access,
    },
    /// Every node of every backend, replicas too, so a failover keeps what it set
    /// (`CONFIG SET`, `CONFIG RESETSTAT`, `CONFIG REWRITE`).
    EveryNode,
    /// Every master of every backend, where the data is (`SAVE`, `BGSAVE`, `BGREWRITEAOF`).
    EveryMaster,
    /// `DEBUG`: where depends on the subcommand, decided per request.
    Debug,
}

/// The multi-key commands split across slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitKind {
    /// `MGET`.
    Mget,
    /// `MSET`.
    Mset,
    /// `DEL`.
    Del,
    /// `UNLINK`.
    Unlink,
    /// `EXISTS`.
    Exists,
    /// `TOUCH`.
    Touch,
}

impl SplitKind {
    /// The command's lowercase name, which the splitter keys its merge rules by.
    pub fn name(self) -> &'static str {
        match self {
            SplitKind::Mget => "mget",
            SplitKind::Mset => "mset",
            SplitKind::Del => "del",
            SplitKind::Unlink => "unlink",
            SplitKind::Exists => "exists",
            SplitKind::Touch => "touch",
        }
    }
}

/// How the replies of several nodes combine into the client's one reply, after redis-rs's
/// `ResponsePolicy`: the one list for every gathering, whether the nodes are every master
/// (`DBSIZE`), the parts of a split command (`MGET`) or a broadcast (`CONFIG SET`). The
/// rules the policies share (the error that stands for the whole, sums, the order of nodes)
/// are in `crate::combine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponsePolicy {
    /// Every node succeeded: `+OK` (`FLUSHALL`, a split `MSET`), or the first reply when they
    /// agree (`CONFIG SET`, a broadcast); an error otherwise.
    AllSucceeded,
    /// Integers summed (`DBSIZE`, `PUBSUB NUMPAT`, a split `DEL`).
    Sum,
    /// Arrays concatenated in the nodes' order (`KEYS`).
    Concat,
    /// Each part's array elements put back at its keys' positions (a split `MGET`).
    ByKeyPosition,
    /// The first reply; they should agree (`SCRIPT LOAD` -> sha).
    First,
    /// Arrays of 0/1 combined element by element with AND (`SCRIPT EXISTS`).
    ScriptsExist,
    /// `RANDOMKEY`: a key from a master chosen at random, weighted by its number of keys.
    RandomKey,
    /// Arrays merged without repeats (`PUBSUB CHANNELS`).
    Union,
    /// `[channel, count, ...]` arrays with the counts summed per channel (`PUBSUB NUMSUB`).
    SumPairs,
    /// `DEBUG DIGEST`: the masters' dataset digests combined into one Redis's.
    DatasetDigest,
    /// `SCRIPT KILL`, `FUNCTION KILL`: `+OK` when some node killed its script.
    AnyKilled,
}

/// Work on the client's own connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnKind {
    /// May block (`BLPOP`, `BLMOVE`, ...): always on the own connection.
    Blocking,
    /// Blocks only when called with `BLOCK` (`XREAD`, `XREADGROUP`); without it, answers at once
    /// and is forwarded by key with `access`.
    BlockingWithBlockArg {
        /// Whether it only reads.
        access: Access,
    },
    /// `MULTI`, `EXEC`, `WATCH`, ...
    Transaction(Transaction),
}

/// The transaction commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transaction {
    /// `MULTI`.
    Multi,
    /// `EXEC`.
    Exec,
    /// `DISCARD`.
    Discard,
    /// `WATCH`.
    Watch,
    /// `UNWATCH`.
    Unwatch,
}

/// The (un)subscribe commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionKind {
    /// `SUBSCRIBE`.
    Subscribe,
    /// `PSUBSCRIBE`.
    Psubscribe,
    /// `UNSUBSCRIBE`.
    Unsubscribe,
    /// `PUNSUBSCRIBE`.
    Punsubscribe,
    /// `SSUBSCRIBE`: channels of one slot, on the connection to that slot's master.
    Ssubscribe,
    /// `SUNSUBSCRIBE`.
    Sunsubscribe,
}

impl SubscriptionKind {
    /// The lowercase name, as Redis writes it in (un)subscribe confirmations.
    pub fn name(self) -> &'static str {
        match self {
            SubscriptionKind::Subscribe => "subscribe",
            SubscriptionKind::Psubscribe => "psubscribe",
            SubscriptionKind::Unsubscribe => "unsubscribe",
            SubscriptionKind::Punsubscribe => "punsubscribe",
            SubscriptionKind::Ssubscribe => "ssubscribe",
            SubscriptionKind::Sunsubscribe => "sunsubscribe",
        }
    }
}

/// The commands the proxy answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalKind {
    /// `PING`.
    Ping,
    /// `ECHO`.
    Echo,
    /// `QUIT`.
    Quit,
    /// `SELECT`.
    Select,
    /// `HELLO`.
    Hello,
    /// `AUTH`.
    Auth,
    /// `CLIENT ...`.
    Client,
    /// `INFO`.
    Info,
    /// `CLUSTER ...`.
    Cluster,
    /// `READONLY`.
    ReadOnly,
    /// `READWRITE`.
    ReadWrite,
    /// `ASKING`.
    Asking,
    /// `RESET`.
    Reset,
    /// `SLOWLOG ...`: the proxy's own slow log.
    Slowlog,
    /// `ACL ...`: the proxy's users, not the backend's.
    Acl,
}

/// Commands the proxy's script cache must hear of, so that it can heal `NOSCRIPT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptKind {
    /// `EVAL`, `EVAL_RO`: the body (argument 1) is remembered.
    Eval {
        /// Whether it only reads.
        access: Access,
    },
    /// `SCRIPT LOAD`: the body (argument 2) is remembered.
    Load,
    /// `SCRIPT FLUSH`: the cache is emptied.
    Flush,
}

impl ScriptKind {
    /// Where the command goes once the cache has heard of it.
    pub fn then(self) -> Policy {
        match self {
            ScriptKind::Eval { access } => Policy::Forward { access },
            ScriptKind::Load => Policy::EveryMaster {
                response: ResponsePolicy::First,
                access: Access::Write,
            },
            ScriptKind::Flush => Policy::EveryMaster {
                response: ResponsePolicy::AllSucceeded,
                access: Access::Write,
            },
        }
    }
}

/// Why a command is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// It takes over the connection or acts on one server process (`MONITOR`, `SHUTDOWN`, ...).
    NeverThroughProxy,
    /// Administrative, and `server.allow_admin_commands` is not set.
    Admin,
    /// It needs something the proxy does not do yet (`WAITAOF`).
    NotSupportedYet,
}

impl Refusal {
    /// The error text (without the leading `-`) for the command called `spec_name`
    /// (`config|set`).
    pub fn message(self, spec_name: &str) -> String {
        let shown = spec_name.replace('|', " ").to_ascii_uppercase();
        match self {
            Refusal::NeverThroughProxy => format!(
                "ERR respgate: {shown} cannot work through a proxy; connect to a node directly"
            ),
            Refusal::Admin => format!(
                "ERR respgate: {shown} is an administrative command and is refused through the proxy (server.allow_admin_commands enables it)"
            ),
            Refusal::NotSupportedYet => {
                format!("ERR respgate: {shown} is not supported by this proxy yet")
            }
        }
    }
}

/// The proxy's own commands, sorted by name (a unit test checks it) for [`proxy_command`].
pub const PROXY_COMMANDS: &[(&str, Policy)] = &[
    ("acl", Policy::Local(LocalKind::Acl)),
    ("asking", Policy::Local(LocalKind::Asking)),
    ("auth", Policy::Local(LocalKind::Auth)),
    ("client", Policy::Local(LocalKind::Client)),
    ("cluster", Policy::Local(LocalKind::Cluster)),
    ("discard", txn(Transaction::Discard)),
    ("echo", Policy::Local(LocalKind::Echo)),
    ("exec", txn(Transaction::Exec)),
    ("hello", Policy::Local(LocalKind::Hello)),
    ("info", Policy::Local(LocalKind::Info)),
    ("multi", txn(Transaction::Multi)),
    ("ping", Policy::Local(LocalKind::Ping)),
    ("psubscribe", sub(SubscriptionKind::Psubscribe)),
    ("punsubscribe", sub(SubscriptionKind::Punsubscribe)),
    ("quit", Policy::Local(LocalKind::Quit)),
    ("readonly", Policy::Local(LocalKind::ReadOnly)),
    ("readwrite", Policy::Local(LocalKind::ReadWrite)),
    ("reset", Policy::Local(LocalKind::Reset)),
    ("select", Policy::Local(LocalKind::Select)),
    ("slowlog", Policy::Local(LocalKind::Slowlog)),
    ("ssubscribe", sub(SubscriptionKind::Ssubscribe)),
    ("subscribe", sub(SubscriptionKind::Subscribe)),
    ("sunsubscribe", sub(SubscriptionKind::Sunsubscribe)),
    ("unsubscribe", sub(SubscriptionKind::Unsubscribe)),
    ("unwatch", txn(Transaction::Unwatch)),
    ("watch", txn(Transaction::Watch)),
];

const fn txn(kind: Transaction) -> Policy {
    Policy::Own(OwnKind::Transaction(kind))
}

const fn sub(kind: SubscriptionKind) -> Policy {
    Policy::Subscription(kind)
}

/// The policy of the proxy's own command called `name` (lowercase), if it is one.
pub fn proxy_command(name: &str) -> Option<Policy> {
    PROXY_COMMANDS
        .binary_search_by(|(n, _)| (*n).cmp(name))
        .ok()
        .and_then(|i| PROXY_COMMANDS.get(i))
        .map(|(_, policy)| *policy)
}

/// Commands that cannot work through a proxy at all: they take over the connection or act on
/// one server process as a whole. Matched on the top-level name.
const NEVER_THROUGH_PROXY: &[&str] = &[
    "monitor",
    "sync",
    "psync",
    "replicaof",
    "slaveof",
    "shutdown",
];

/// Administrative commands, refused unless `server.allow_admin_commands` is set. Matched on the
/// full name and on the top-level name.
const ADMIN: &[&str] = &[
    "debug",
    "save",
    "bgsave",
    "bgrewriteaof",
    "config|set",
    "config|rewrite",
    "config|resetstat",
    "acl|setuser",
    "acl|deluser",
    "acl|load",
    "acl|save",
    "migrate",
    "failover",
    "module|load",
    "module|loadex",
    "module|unload",
    "swapdb",
];

/// Commands that change the state of the connection they run on, or hold it, and so cannot run
/// on a connection shared by many clients. They are refused until the proxy gives them a
/// connection of their own.
const NEEDS_OWN_CONNECTION: &[&str] = &["waitaof"];

impl Policy {
    /// The policy of the backend's command `name` (full lowercase name, `script|load`) with
    /// these lowercase flags. The first rule that applies wins; their order is the order in
    /// which the session used to test them, so precedence is unchanged.
    pub fn of(name: &str, flags: &[String]) -> Policy {
        if let Some(own) = proxy_command(name) {
            return own;
        }
        let has = |flag: &str| flags.iter().any(|f| f == flag);
        let access = if has("readonly") {
            Access::Read
        } else {
            Access::Write
        };
        let base = name.split('|').next().unwrap_or(name);
        if NEVER_THROUGH_PROXY.contains(&base) {
            return Policy::Refused(Refusal::NeverThroughProxy);
        }
        if ADMIN.contains(&name) || ADMIN.contains(&base) {
            return Policy::Admin(match name {
                "config|set" | "config|resetstat" | "config|rewrite" => AdminReach::EveryNode,
                "save" | "bgsave" | "bgrewriteaof" => AdminReach::EveryMaster,
                "debug" => AdminReach::Debug,
                _ => AdminReach::ByKey { access },
            });
        }
        if name == "config|get" {
            return Policy::OneMaster;
        }
        if name == "script|kill" || name == "function|kill" {
            return Policy::KillScript;
        }
        if NEEDS_OWN_CONNECTION.contains(&base) {
            return Policy::Refused(Refusal::NotSupportedYet);
        }
        // Before the `blocking` flag: Valkey 8 flags `WAIT` blocking (Redis 7.0 does not), and
        // on a connection of its own it would wait for nothing (no write of the client went
        // there) and without the proxy's cap on its timeout.
        if name == "wait" {
            return Policy::Wait;
        }
        if has("blocking") {
            return Policy::Own(match name {
                "xread" | "xreadgroup" => OwnKind::BlockingWithBlockArg { access },
                _ => OwnKind::Blocking,
            });
        }
        let every = |response, access| Policy::EveryMaster { response, access };
        let split = |kind| Policy::Split { kind, access };
        match name {
            "eval" | "eval_ro" => Policy::Script(ScriptKind::Eval { access }),
            "script|load" => Policy::Script(ScriptKind::Load),
            "script|flush" => Policy::Script(ScriptKind::Flush),
            "scan" => Policy::Scan,
            "dbsize" | "pubsub|numpat" => every(ResponsePolicy::Sum, Access::Read),
            "keys" => every(ResponsePolicy::Concat, Access::Read),
            "randomkey" => every(ResponsePolicy::RandomKey, Access::Read),
            // A restore reaches every master, as a load does, so that the restored functions
            // can be called whichever master owns the keys; `FUNCTION DUMP` is forwarded to
            // any one master, since every master holds the same functions.
            "flushall" | "flushdb" | "function|flush" | "function|restore" => {
                every(ResponsePolicy::AllSucceeded, Access::Write)
            }
            "function|load" | "function|delete" => every(ResponsePolicy::First, Access::Write),
            "script|exists" => every(ResponsePolicy::ScriptsExist, Access::Read),
            "pubsub|channels" | "pubsub|shardchannels" => {
                every(ResponsePolicy::Union, Access::Read)
            }
            "pubsub|numsub" | "pubsub|shardnumsub" => every(ResponsePolicy::SumPairs, Access::Read),
            "publish" => Policy::Publish,
            "mget" => split(SplitKind::Mget),
            "mset" => split(SplitKind::Mset),
            "del" => split(SplitKind::Del),
            "unlink" => split(SplitKind::Unlink),
            "exists" => split(SplitKind::Exists),
            "touch" => split(SplitKind::Touch),
            _ => Policy::Forward { access },
        }
    }

    /// Whether a client that has not authenticated may send it.
    pub fn allowed_before_auth(self) -> bool {
        matches!(
            self,
            Policy::Local(LocalKind::Auth | LocalKind::Hello | LocalKind::Quit | LocalKind::Reset)
        )
    }
}

#[cfg(test)]
mod tests;
