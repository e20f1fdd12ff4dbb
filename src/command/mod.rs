//! The command table: what every command is called, its arity, flags, where its keys are, and
//! what the proxy does with it.
//!
//! Built from the backend's own `COMMAND` reply, so every command the backend knows (module
//! commands included) is routed by the backend's own key specs. Building the table gives every
//! command and subcommand its [`Policy`] (forward, split, every master, own connection, refuse,
//! ...), so the session decides with one lookup and one `match`. The proxy's own commands
//! ([`PROXY_COMMANDS`]) are looked up before this table, so they work before it is known.

mod keys;
mod parse;
pub mod policy;

use std::collections::HashMap;

use bytes::Bytes;
use foldhash::fast::RandomState;
use tracing::warn;

use crate::acl::{Categories, CommandFacts, UserSet, Users};
use crate::metrics::{CommandCounters, Family};

pub use keys::{KeyAccess, KeySpec, KeysProc, SearchBegin, SearchKeys};
pub use parse::{CommandTableError, parse_command_reply};
pub use policy::{
    Access, AdminReach, LocalKind, OwnKind, PROXY_COMMANDS, Policy, Refusal, ResponsePolicy,
    ScriptKind, SplitKind, SubscriptionKind, Transaction, proxy_command,
};

/// Commands (or subcommands) by lowercase name. Hashed with foldhash rather than std's SipHash:
/// every request looks its name up here (`lookup_lowercased` for `get`: 263 instructions with
/// SipHash, 119 with foldhash, under callgrind). SipHash's strength is against keys an attacker
/// inserts; these keys are the backend's command names, and a client's name is only looked up.
pub type NameMap<V> = HashMap<String, V, RandomState>;

/// Longest command name looked up without allocating.
pub const MAX_NAME_LEN: usize = 64;

/// What the proxy knows of one command (or subcommand).
#[derive(Debug, Clone, Default)]
pub struct CommandSpec {
    /// Full lowercase name, `get` or `object|encoding`.
    pub name: String,
    /// Redis arity: positive for an exact argument count, negative for a minimum.
    pub arity: i64,
    /// Flags such as `write`, `readonly`, `blocking`, `movablekeys`.
    pub flags: Vec<String>,
    /// Its ACL categories (`@read`, `@fast`, ...).
    pub categories: Categories,
    /// Legacy key positions: first key, last key (negative counts from the end), step.
    pub first_key: i64,
    /// See `first_key`.
    pub last_key: i64,
    /// See `first_key`.
    pub step: i64,
    /// Key specifications (Redis 7); used instead of the legacy positions when present.
    pub key_specs: Vec<KeySpec>,
    /// Redis's own key-finding procedure, for the few commands whose key specs cannot say;
    /// set by [`CommandTable::new`] from the name.
    pub keys_proc: KeysProc,
    /// Whether it runs a script or function (`EVAL`, `EVALSHA`, `FCALL` and their `_RO`
    /// forms), whose calls only the node can check; set by [`CommandTable::new`].
    pub runs_code: bool,
    /// Whether a `CLIENT PAUSE ... WRITE` holds it: it writes, or may replicate (Redis's
    /// `may_replicate` flag, which `COMMAND` hides: [`MAY_REPLICATE`]); set by
    /// [`CommandTable::new`]. A script with a shebang may still be let through: see
    /// `session::pause`.
    pub may_replicate: bool,
    /// Whether the slow log leaves it out (Redis's `skip_slowlog`: `EXEC`, `AUTH`, ...); set
    /// by [`CommandTable::new`].
    pub skip_slowlog: bool,
    /// Subcommands of a container command such as `OBJECT`, by lowercase subcommand name.
    pub subcommands: NameMap<CommandSpec>,
    /// What the proxy does with the command. [`CommandTable::new`] sets it from the name and
    /// flags (replacing any value given), so it is computed once, when the table loads.
    pub policy: Policy,
    /// The policy of the proxy's own command of its top-level name (`client` for
    /// `client|list`), if it is one: what a request learns from the one lookup it makes,
    /// set by [`CommandTable::new`].
    pub proxy_policy: Option<Policy>,
    /// Its family (from its ACL categories), the label of its latency.
    pub family: Family,
    /// Its counters by result, set by [`CommandTable::new`]: resolved once, not per request.
    pub counters: Option<&'static CommandCounters>,
    /// The users who may run it, set by [`CommandTable::grant`] for the users of the
    /// configuration snapshot the table is used under; only restricted users are ever checked
    /// against it.
    pub allowed: UserSet,
}

impl CommandSpec {
    /// Its counters (those of `other` for a spec not made by [`CommandTable::new`]).
    #[inline]
    pub fn counters(&self) -> &'static CommandCounters {
        self.counters.unwrap_or(&crate::metrics::OTHER)
    }

    /// Whether the command has the given flag.
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// Whether `argc` arguments (command name included) satisfy the arity.
    pub fn arity_ok(&self, argc: usize) -> bool {
        let argc = argc as i64;
        if self.arity >= 0 {
            argc == self.arity
        } else {
            argc >= -self.arity
        }
    }

    /// Collects the keys of `args` into `out`, by key specs when present.
    pub fn keys(&self, args: &[Bytes], out: &mut Vec<Bytes>) {
        let mut positions = Vec::new();
        keys::positions(self, args, &mut positions);
        out.extend(positions.into_iter().filter_map(|i| args.get(i).cloned()));
    }

    /// Collects the positions in `args` of its keys into `out` (the command name is 0).
    pub fn key_positions(&self, args: &[Bytes], out: &mut Vec<usize>) {
        keys::positions(self, args, out);
    }

    /// Collects the positions in `args` of its keys, each with what the command does with
    /// it, into `out`.
    pub fn key_access(&self, args: &[Bytes], out: &mut Vec<(usize, KeyAccess)>) {
        keys::positions_with_access(self, args, out);
    }
}

/// What a lookup of a request's command name found.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// A known command or subcommand.
    Found(&'a CommandSpec),
    /// No such command.
    Unknown,
    /// A container command called with a subcommand it does not have.
    UnknownSubcommand,
}

/// All commands of the backend, by lowercase name.
#[derive(Debug, Clone, Default)]
pub struct CommandTable {
    commands: NameMap<CommandSpec>,
}

impl CommandTable {
    /// A table of the given commands, each (and each subcommand) given its [`Policy`].
    pub fn new(specs: impl IntoIterator<Item = CommandSpec>) -> Self {
        CommandTable {
            commands: specs
                .into_iter()
                .map(|mut s| {
                    assign_policies(&mut s);
                    (s.name.clone(), s)
                })
                .collect(),
        }
    }

    /// Number of top-level commands.
    pub fn len(&self) -> usize {
        self.commands.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// Finds the spec for a request, descending into the subcommand of a container command.
    pub fn lookup(&self, args: &[Bytes]) -> Lookup<'_> {
        let mut buf = [0u8; MAX_NAME_LEN];
        match args.first().and_then(|name| lowercase(name, &mut buf)) {
            Some(name) => self.lookup_lowercased(name, args),
            None => Lookup::Unknown,
        }
    }

    /// [`CommandTable::lookup`] for a caller that has already lowercased the command name.
    pub fn lookup_lowercased(&self, name: &str, args: &[Bytes]) -> Lookup<'_> {
        let Some(spec) = self.commands.get(name) else {
            return Lookup::Unknown;
        };
        if spec.subcommands.is_empty() {
            return Lookup::Found(spec);
        }
        match args.get(1) {
            // The arity check of the container reports the missing subcommand.
            None => Lookup::Found(spec),
            Some(sub) => match with_lowercase(sub, |s| spec.subcommands.get(s)) {
                Some(Some(found)) => Lookup::Found(found),
                _ => Lookup::UnknownSubcommand,
            },
        }
    }

    /// Records on every command (and subcommand) which of `users` may run it, by their rules:
    /// decided once here for a snapshot's users, so a request tests one bit. Commands Redis lets anyone run
    /// (`no_auth`: `AUTH`, `HELLO`, `QUIT`) are everyone's. Rules naming a command the table
    /// lacks are logged: they allow nothing.
    pub fn grant(&mut self, users: &Users) {
        if !users.any_restricted() {
            return;
        }
        let everyone = |spec: &CommandSpec| spec.has_flag("no_auth");
        for spec in self.commands.values_mut() {
            let facts = CommandFacts {
                name: &spec.name,
                categories: spec.categories,
                container: None,
                module: spec.has_flag("module"),
            };
            let open = everyone(spec);
            spec.allowed = UserSet::of(users, |u| open || u.may_run(&facts));
            let container = Some((spec.name.as_str(), spec.categories));
            for sub in spec.subcommands.values_mut() {
                let facts = CommandFacts {
                    name: &sub.name,
                    categories: sub.categories,
                    container,
                    module: sub.has_flag("module"),
                };
                let open = everyone(sub);
                sub.allowed = UserSet::of(users, |u| open || u.may_run(&facts));
            }
        }
        for (user, command) in users.mentioned_commands() {
            let (name, sub) = match command.split_once('|') {
                Some((name, sub)) => (name, Some(sub)),
                None => (command.as_str(), None),
            };
            let known = self
                .commands
                .get(name)
                .is_some_and(|spec| sub.is_none_or(|sub| spec.subcommands.contains_key(sub)));
            if !known {
                warn!(user = %user, rule = %command, "a command rule names a command the backend does not have; it allows nothing");
            }
        }
    }

    /// Every command and subcommand (for `ACL CAT`).
    pub fn all_specs(&self) -> impl Iterator<Item = &CommandSpec> {
        self.commands
            .values()
            .flat_map(|spec| std::iter::once(spec).chain(spec.subcommands.values()))
    }

    /// The top-level command called `name` in any case.
    pub fn get(&self, name: &[u8]) -> Option<&CommandSpec> {
        with_lowercase(name, |n| self.commands.get(n)).flatten()
    }
}

/// Sets the policy of `spec` and of its subcommands, from their names and flags.
fn assign_policies(spec: &mut CommandSpec) {
    spec.policy = Policy::of(&spec.name, &spec.flags);
    spec.proxy_policy = policy::proxy_command(spec.name.split('|').next().unwrap_or_default());
    spec.keys_proc = KeysProc::of(&spec.name);
    spec.runs_code = runs_code(spec);
    spec.may_replicate = spec.has_flag("write") || MAY_REPLICATE.contains(&spec.name.as_str());
    spec.skip_slowlog = spec.has_flag("skip_slowlog");
    spec.counters = Some(crate::metrics::command_counters(&spec.name));
    for sub in spec.subcommands.values_mut() {
        assign_policies(sub);
    }
}

/// Redis 7.0's commands with the `may_replicate` flag, which `COMMAND` does not show: they do
/// not write, but may add to the replication stream, so a `CLIENT PAUSE ... WRITE` holds them.
pub const MAY_REPLICATE: [&str; 6] = ["eval", "evalsha", "fcall", "pfcount", "publish", "spublish"];

/// Whether `spec` runs a script or function: Redis's `EVAL`, `EVALSHA`, `FCALL` and their
/// `_RO` forms, and any other command in the `@scripting` category (a module's, such as
/// triggers and functions' `TFCALL`) but the ones that manage scripts (`SCRIPT ...`,
/// `FUNCTION ...`), which run none.
fn runs_code(spec: &CommandSpec) -> bool {
    const RUNS_CODE: [&str; 6] = [
        "eval",
        "eval_ro",
        "evalsha",
        "evalsha_ro",
        "fcall",
        "fcall_ro",
    ];
    let base = spec.name.split('|').next().unwrap_or(&spec.name);
    RUNS_CODE.contains(&spec.name.as_str())
        || (Categories::named("scripting").is_some_and(|c| spec.categories.intersects(c))
            && !matches!(base, "script" | "function"))
}

/// Calls `f` with the ASCII-lowercased `name` as `&str` without allocating; `None` when the
/// name is too long or not UTF-8 (no command has such a name).
pub fn with_lowercase<T>(name: &[u8], f: impl FnOnce(&str) -> T) -> Option<T> {
    let mut buf = [0u8; MAX_NAME_LEN];
    lowercase(name, &mut buf).map(f)
}

/// The ASCII-lowercased `name`, written into `buf`; `None` when the name is too long or not
/// UTF-8 (no command has such a name).
pub fn lowercase<'a>(name: &[u8], buf: &'a mut [u8; MAX_NAME_LEN]) -> Option<&'a str> {
    let lower = buf.get_mut(..name.len())?;
    for (dst, src) in lower.iter_mut().zip(name) {
        *dst = src.to_ascii_lowercase();
    }
    std::str::from_utf8(lower).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, arity: i64) -> CommandSpec {
        CommandSpec {
            name: name.into(),
            arity,
            ..CommandSpec::default()
        }
    }

    #[test]
    fn commands_that_run_code_are_known_by_name_and_by_the_scripting_category() {
        let scripting = |name: &str| CommandSpec {
            categories: Categories::from_names(["@scripting", "@slow"]),
            ..spec(name, -3)
        };
        let table = CommandTable::new([
            scripting("eval"),
            scripting("fcall_ro"),
            scripting("tfcall"),
            scripting("script|load"),
            scripting("function|load"),
            spec("get", 2),
        ]);
        let runs = |name: &str| table.commands.get(name).unwrap().runs_code;
        assert!(runs("eval") && runs("fcall_ro") && runs("tfcall"));
        assert!(!runs("script|load") && !runs("function|load") && !runs("get"));
    }

    #[test]
    fn lookup_is_case_insensitive_and_descends_into_subcommands() {
        let mut object = spec("object", -2);
        object
            .subcommands
            .insert("encoding".into(), spec("object|encoding", 3));
        let table = CommandTable::new([spec("get", 2), object]);
        let args = |a: &[&str]| {
            a.iter()
                .map(|s| Bytes::from(s.to_string()))
                .collect::<Vec<_>>()
        };
        assert!(matches!(table.lookup(&args(&["GeT", "k"])), Lookup::Found(s) if s.name == "get"));
        assert!(
            matches!(table.lookup(&args(&["OBJECT", "Encoding", "k"])), Lookup::Found(s) if s.name == "object|encoding")
        );
        assert!(matches!(
            table.lookup(&args(&["object", "nope"])),
            Lookup::UnknownSubcommand
        ));
        assert!(matches!(table.lookup(&args(&["object"])), Lookup::Found(s) if s.name == "object"));
        assert!(matches!(table.lookup(&args(&["nope"])), Lookup::Unknown));
    }

    #[test]
    fn arity_follows_redis_rules() {
        assert!(spec("get", 2).arity_ok(2));
        assert!(!spec("get", 2).arity_ok(3));
        assert!(spec("mget", -2).arity_ok(5));
        assert!(!spec("mget", -2).arity_ok(1));
    }
}
