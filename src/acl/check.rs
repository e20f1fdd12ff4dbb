//! The per-request check of a restricted user: the command, then every key (and the backend
//! it routes to), then every channel, in Redis's order, with Redis 7.0's `NOPERM` replies.
//!
//! It runs on the whole request before it is split, fanned out or queued, so a split `MGET`
//! with one forbidden key runs no part, and a queued command is judged when it is queued.

use bytes::Bytes;

use super::User;
use crate::command::{
    CommandSpec, KeyAccess, KeysProc, OwnKind, Policy, ScriptKind, SubscriptionKind,
};
use crate::keyspace::{BackendId, RouteTable};
use crate::protocol::request::{is_option, parse_int};

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// The command (full name, `config|set`) is not allowed.
    Command(String),
    /// A key matches no pattern of the user, or routes to a backend it may not reach.
    Key,
    /// A channel matches no channel pattern of the user.
    Channel,
    /// A keyless command reaches a backend the user may not reach.
    Backend,
    /// `SORT`'s `BY` pattern or `GET` (the option named), for a user who may not read every
    /// key: which keys they read depends on the data, so Redis refuses them to such a user
    /// (`sortCommandGeneric`). `in_cluster`: the key's backend is a Redis Cluster, whose node
    /// refuses them first, for being in cluster mode.
    SortOption {
        /// `BY` or `GET`.
        option: &'static str,
        /// Whether the backend is a Redis Cluster.
        in_cluster: bool,
    },
}

impl Denial {
    /// The error reply without the leading `-`: Redis 7.0's words where Redis has the case.
    pub fn message(&self) -> String {
        match self {
            Denial::Command(name) => {
                format!("NOPERM this user has no permissions to run the '{name}' command")
            }
            Denial::Key => {
                "NOPERM this user has no permissions to access one of the keys used as arguments"
                    .into()
            }
            Denial::Channel => {
                "NOPERM this user has no permissions to access one of the channels used as arguments"
                    .into()
            }
            Denial::Backend => {
                "NOPERM this user has no permissions to access one of the backends the command reaches"
                    .into()
            }
            Denial::SortOption {
                option,
                in_cluster: true,
            } => format!("ERR {option} option of SORT denied in Cluster mode."),
            Denial::SortOption {
                option,
                in_cluster: false,
            } => format!("ERR {option} option of SORT denied due to insufficient ACL permissions."),
        }
    }
}

/// Which arguments are channels (Redis's `getChannelsFromCommand`, for the commands that
/// publish or subscribe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Channels {
    None,
    /// The first argument (`PUBLISH`, `SPUBLISH`).
    First,
    /// Every argument (`SUBSCRIBE`, `SSUBSCRIBE`).
    All,
    /// Every argument, each a pattern compared as written (`PSUBSCRIBE`).
    Patterns,
}

fn channels_of(spec: &CommandSpec) -> Channels {
    match spec.policy {
        Policy::Publish => Channels::First,
        Policy::Subscription(SubscriptionKind::Subscribe | SubscriptionKind::Ssubscribe) => {
            Channels::All
        }
        Policy::Subscription(SubscriptionKind::Psubscribe) => Channels::Patterns,
        _ if spec.name == "spublish" => Channels::First,
        _ => Channels::None,
    }
}

/// The backends a request without keys reaches.
enum Reach {
    /// None: the proxy answers it.
    Nothing,
    /// The default backend.
    Default,
    /// Every backend.
    Every,
    /// The backend of each channel.
    Channels,
}

fn reach_of(spec: &CommandSpec) -> Reach {
    match spec.policy {
        Policy::EveryMaster { .. }
        | Policy::Scan
        | Policy::Script(ScriptKind::Load | ScriptKind::Flush)
        | Policy::Subscription(SubscriptionKind::Psubscribe) => Reach::Every,
        Policy::Publish
        | Policy::Subscription(SubscriptionKind::Subscribe | SubscriptionKind::Ssubscribe) => {
            Reach::Channels
        }
        Policy::Local(_)
        | Policy::Subscription(_)
        | Policy::Wait
        | Policy::Own(OwnKind::Transaction(_)) => Reach::Nothing,
        _ if spec.name == "spublish" => Reach::Channels,
        _ => Reach::Default,
    }
}

impl User {
    /// Checks a request of this user: `spec` is its command, `args` its arguments, `routes`
    /// where its keys go; `scratch` is reused between requests for the key positions.
    pub fn check(
        &self,
        spec: &CommandSpec,
        args: &[Bytes],
        routes: &RouteTable,
        scratch: &mut Vec<(usize, KeyAccess)>,
    ) -> Result<(), Denial> {
        if !self.all_commands && !spec.allowed.contains(self.id) {
            return Err(Denial::Command(spec.name.clone()));
        }
        let mut keyed = false;
        if self.keys.is_some() || self.backends.is_some() {
            scratch.clear();
            spec.key_access(args, scratch);
            for &(position, access) in scratch.iter() {
                let Some(key) = args.get(position).filter(|_| !access.not_key) else {
                    continue;
                };
                keyed = true;
                if !self.may_touch(key, access) || !self.may_reach(backend_of(routes, key)) {
                    return Err(Denial::Key);
                }
            }
        }
        let channels = channels_of(spec);
        let names = match channels {
            Channels::None => &[][..],
            Channels::First => args.get(1..2).unwrap_or_default(),
            Channels::All | Channels::Patterns => args.get(1..).unwrap_or_default(),
        };
        if self.channels.is_some() {
            let pattern = channels == Channels::Patterns;
            if !names.iter().all(|name| self.may_subscribe(name, pattern)) {
                return Err(Denial::Channel);
            }
        }
        if matches!(spec.keys_proc, KeysProc::Sort | KeysProc::SortRo)
            && !self.reads_every_key()
            && let Some(option) = sort_option_needing_every_key(args, spec.keys_proc)
        {
            // A Redis 7.0 cluster node refuses these to everyone, for being in cluster mode,
            // before it looks at the ACL: its words then. Later ones (7.4, Valkey 8) run them
            // when the pattern shares the key's slot, so the proxy refuses them itself.
            let backend = args.get(1).map(|key| backend_of(routes, key));
            return Err(Denial::SortOption {
                option,
                in_cluster: backend.is_some_and(|b| routes.has_slots(b)),
            });
        }
        if self.backends.is_none() || keyed {
            return Ok(());
        }
        let reached = match reach_of(spec) {
            Reach::Nothing => true,
            Reach::Default => self.may_reach(routes.default_backend()),
            Reach::Every => self
                .backends
                .as_ref()
                .is_none_or(|allowed| allowed.iter().all(|&ok| ok)),
            Reach::Channels => names
                .iter()
                .all(|name| self.may_reach(backend_of(routes, name))),
        };
        if reached {
            Ok(())
        } else {
            Err(Denial::Backend)
        }
    }

    /// Whether the channel patterns allow channel `name`, or for a `pattern` subscription the
    /// pattern `name` itself (Redis lets a client subscribe only to patterns it was given
    /// verbatim).
    pub fn may_subscribe(&self, name: &[u8], pattern: bool) -> bool {
        self.channels.as_ref().is_none_or(|allowed| {
            allowed.iter().any(|glob| {
                if pattern {
                    glob.is_literally(name)
                } else {
                    glob.matches(name)
                }
            })
        })
    }

    /// Whether the user may read every key (`allkeys`, `~*`, `%R~*`): Redis's
    /// `ACLUserCheckCmdWithUnrestrictedKeyAccess`, which `SORT ... BY`/`GET` need.
    fn reads_every_key(&self) -> bool {
        self.keys
            .as_ref()
            .is_none_or(|patterns| patterns.iter().any(|p| p.read && p.glob.is_literally(b"*")))
    }

    /// Whether a key pattern allows `key` for `access`.
    fn may_touch(&self, key: &[u8], access: KeyAccess) -> bool {
        let Some(patterns) = &self.keys else {
            return true;
        };
        patterns
            .iter()
            .any(|p| (p.read || !access.read) && (p.write || !access.write) && p.glob.matches(key))
    }

    /// Whether the user may reach `backend`.
    fn may_reach(&self, backend: BackendId) -> bool {
        self.backends
            .as_ref()
            .is_none_or(|allowed| allowed.get(backend.index()).copied().unwrap_or(false))
    }
}

/// The first `SORT` option that reads keys named by the data (`BY` with a `*` pattern, any
/// `GET`), walking the options as `sortCommandGeneric` does: an option it would refuse first
/// (a bad `LIMIT`, a syntax error) stops the walk, and the backend answers it.
fn sort_option_needing_every_key(args: &[Bytes], proc: KeysProc) -> Option<&'static str> {
    let is = |arg: &Bytes, word: &str| is_option(arg, word);
    let mut i = 2;
    while let Some(arg) = args.get(i) {
        let left = args.len() - i - 1;
        if is(arg, "asc") || is(arg, "desc") || is(arg, "alpha") {
            // No argument of its own.
        } else if is(arg, "limit") && left >= 2 {
            let ints = args
                .get(i + 1..=i + 2)
                .is_some_and(|n| n.iter().all(|n| parse_int(n).is_some()));
            if !ints {
                return None;
            }
            i += 2;
        } else if proc == KeysProc::Sort && is(arg, "store") && left >= 1 {
            i += 1;
        } else if is(arg, "by") && left >= 1 {
            if args.get(i + 1).is_some_and(|p| p.contains(&b'*')) {
                return Some("BY");
            }
            i += 1;
        } else if is(arg, "get") && left >= 1 {
            return Some("GET");
        } else {
            return None;
        }
        i += 1;
    }
    None
}

/// The backend a key (or channel) routes to.
fn backend_of(routes: &RouteTable, key: &[u8]) -> BackendId {
    if routes.is_single() {
        routes.default_backend()
    } else {
        routes.route(key).backend
    }
}
