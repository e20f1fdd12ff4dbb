//! The proxy's users: who may log in (`AUTH`, `HELLO ... AUTH`) and what each may run, touch
//! and reach, checked before a request goes anywhere.
//!
//! # Layout
//! - this module: [`Users`], compiled from `[users.NAME]` and `server.password` when the proxy
//!   starts and at each reload (passwords read from files and the environment then), and
//!   logging in;
//! - `rules`: command rules (`+@all -@dangerous +get`) and the ACL categories;
//! - `glob`: Redis's glob patterns, for keys and channels, matched without recursion;
//! - `check`: the per-request check and its `NOPERM` replies.
//!
//! What a user may run is decided per command once per configuration snapshot and command
//! table ([`CommandTable::grant`](crate::command::CommandTable::grant), called by
//! [`Snapshot::commands`](crate::proxy::Snapshot::commands)): each command carries the set of
//! users allowed to run it, so a request tests one bit. A user with every permission (the
//! `default` user of a proxy without `[users]`) is *unrestricted* and skips the check
//! altogether: a session tests one flag.
//!
//! A reload compiles the users again into the new snapshot. A session moving to it looks its
//! user up by name there: the new rules and passwords apply to it, it stays logged in through
//! a password change, and it is disconnected if its user was removed, as Redis disconnects the
//! clients of a user `ACL DELUSER` deletes.

mod check;
mod glob;
mod node_user;
pub mod rules;

use std::sync::Arc;

pub use check::Denial;
pub use glob::Glob;
pub use node_user::{NODE_USER_PREFIX, NodeUser};
pub use rules::{CATEGORIES, Categories, CommandFacts, CommandRules};

use crate::config::{Config, Problem, Secret, UserConfig, read_secrets};

/// Position of a user in [`Users`]: the bit that stands for it in a command's
/// [`UserSet`].
pub type UserId = usize;

/// One key pattern: `~pattern` (read and write), `%R~`, `%W~`.
#[derive(Debug, Clone)]
pub(crate) struct KeyPattern {
    glob: Glob,
    read: bool,
    write: bool,
}

/// One user, compiled.
#[derive(Debug)]
pub struct User {
    /// The name, as `ACL WHOAMI` and `CLIENT LIST` show it.
    pub name: String,
    id: UserId,
    enabled: bool,
    nopass: bool,
    passwords: Vec<Secret>,
    commands: CommandRules,
    all_commands: bool,
    /// `None`: every key.
    keys: Option<Vec<KeyPattern>>,
    /// `None`: every channel.
    channels: Option<Vec<Glob>>,
    /// `None`: every backend; else allowed or not, by backend id.
    backends: Option<Vec<bool>>,
    /// Its twin on the nodes, which its scripts run as: for a user whose commands, keys or
    /// channels are restricted (a user restricted only in backends needs none).
    node_user: Option<NodeUser>,
    /// Its rules as configured (commands, keys, channels, backends, whether enabled): equal
    /// for two compilations exactly when the user's rights are the same.
    rights: String,
}

impl User {
    /// A user with every permission and the given passwords (none: any password).
    fn unrestricted(name: &str, id: UserId, passwords: Vec<Secret>) -> User {
        User {
            name: name.to_string(),
            id,
            enabled: true,
            nopass: passwords.is_empty(),
            passwords,
            commands: CommandRules::default(),
            all_commands: true,
            keys: None,
            channels: None,
            backends: None,
            node_user: None,
            rights: String::new(),
        }
    }

    /// Whether `other` (the same user in another configuration) has the same rights.
    pub fn same_rights(&self, other: &User) -> bool {
        self.rights == other.rights && self.restricted() == other.restricted()
    }

    /// Its twin on the nodes, when its scripts must run with its rights there.
    pub fn node_user(&self) -> Option<&NodeUser> {
        self.node_user.as_ref()
    }

    /// Whether any command, key, channel or backend is out of reach: only then are its
    /// requests checked.
    pub fn restricted(&self) -> bool {
        !self.all_commands
            || self.keys.is_some()
            || self.channels.is_some()
            || self.backends.is_some()
    }

    /// Whether `password` is one of the user's (any is, for `nopass`). Every password is
    /// compared in full, so the time taken says nothing of how much of one matched.
    fn accepts(&self, password: &[u8]) -> bool {
        if self.nopass {
            return true;
        }
        self.passwords.iter().fold(false, |found, secret| {
            let expected = secret.expose();
            let same = expected.len() == password.len()
                && expected
                    .iter()
                    .zip(password)
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0;
            found | same
        })
    }

    /// Whether the command rules allow the command `facts` describes.
    pub fn may_run(&self, facts: &CommandFacts<'_>) -> bool {
        self.all_commands || self.commands.allows(facts)
    }

    /// Compiles one `[users.NAME]` entry as user `id`, each problem reported under its key in
    /// the order the fields are read; the user is only used when there were none.
    fn compile(
        user: &UserConfig,
        id: UserId,
        backend_names: &[String],
        env: &dyn Fn(&str) -> Option<String>,
        report: &mut UserProblems<'_>,
    ) -> User {
        let name = report.name;
        if name.is_empty()
            || name
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            report.entry("a user name is not empty and has no spaces or control characters".into());
        }
        let passwords = compile_passwords(user, env, report);
        let commands = compile_commands(user, report);
        let keys = compile_keys(user, report);
        let channels = compile_channels(user, report);
        let backends = compile_backends(user, backend_names, report);
        let all_commands = commands.allows_all();
        let node_user = (!all_commands || keys.is_some() || channels.is_some())
            .then(|| NodeUser::of(name, user));
        let rights = format!(
            "{}\n{}\n{:?}\n{:?}\n{:?}",
            user.enabled, user.commands, user.keys, user.channels, user.backends
        );
        User {
            rights,
            node_user,
            name: name.to_string(),
            id,
            enabled: user.enabled,
            nopass: user.nopass,
            passwords,
            all_commands,
            commands,
            keys,
            channels,
            backends,
        }
    }
}

/// Why a login failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginError {
    /// No such user, user disabled, or wrong password: Redis does not say which.
    WrongPass,
    /// One-argument `AUTH` while the default user takes any password.
    DefaultHasNoPassword,
}

/// Every user, compiled; shared by the sessions and the command tables.
#[derive(Debug, Default, Clone)]
pub struct Users {
    users: Vec<Arc<User>>,
    /// Who one-argument `AUTH` and a client that never authenticates are: `server.username`.
    default_name: String,
    /// The command names rules mention, with the user, to report those the table lacks.
    mentioned: Vec<(String, String)>,
}

impl Users {
    /// Compiles `[users]` and `server.password`, reading password files and variables from
    /// `env`; every problem is reported with its key, none with a password.
    pub fn compile(
        config: &Config,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Users, Vec<Problem>> {
        let mut problems = Vec::new();
        let default_name = config.server.username.clone();
        let mut users = default_users(config, &mut problems);
        let backend_names: Vec<String> = config
            .backend_list()
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        let mut mentioned = Vec::new();
        for (name, user) in &config.users {
            let mut report = UserProblems {
                name,
                problems: &mut problems,
            };
            let compiled = User::compile(user, users.len(), &backend_names, env, &mut report);
            mentioned.extend(
                compiled
                    .commands
                    .command_names()
                    .map(|command| (name.clone(), command.to_string())),
            );
            users.push(Arc::new(compiled));
        }
        if problems.is_empty() {
            Ok(Users {
                users,
                default_name,
                mentioned,
            })
        } else {
            Err(problems)
        }
    }

    /// Whether `other` has the same users with the same passwords. Of two compilations of one
    /// configuration only the passwords read from files and variables can differ, so a reload
    /// that finds the configuration unchanged asks this to know whether they did.
    pub fn same_passwords(&self, other: &Users) -> bool {
        self.users.len() == other.users.len()
            && self
                .users
                .iter()
                .zip(&other.users)
                .all(|(a, b)| a.name == b.name && a.passwords == b.passwords)
    }

    /// The user called `name`: who a client logged in as `name` under other users is once it
    /// moves to these. `None` when there is none (a reload removed the user); a disabled user
    /// is returned, as Redis keeps the clients of a user turned `off`.
    pub fn get(&self, name: &str) -> Option<Arc<User>> {
        self.named(name.as_bytes()).cloned()
    }

    /// Every user, by id.
    pub fn all(&self) -> &[Arc<User>] {
        &self.users
    }

    /// Command names the rules mention, with the user mentioning them.
    pub fn mentioned_commands(&self) -> &[(String, String)] {
        &self.mentioned
    }

    /// Whether any user is restricted: only then do command tables carry permissions.
    pub fn any_restricted(&self) -> bool {
        self.users.iter().any(|u| u.restricted())
    }

    /// The user a new connection is before any `AUTH`: the default user when it is enabled
    /// and takes any password (Redis's `nopass` default user); `None` means the client must
    /// authenticate.
    pub fn at_connect(&self) -> Option<Arc<User>> {
        self.named(self.default_name.as_bytes())
            .filter(|u| u.enabled && u.nopass)
            .cloned()
    }

    /// Logs in as `user` (the default user when `None`, as one-argument `AUTH`) with
    /// `password`.
    pub fn login(&self, user: Option<&[u8]>, password: &[u8]) -> Result<Arc<User>, LoginError> {
        let name = user.unwrap_or(self.default_name.as_bytes());
        let found = self.named(name);
        if user.is_none() && found.is_some_and(|u| u.nopass) {
            return Err(LoginError::DefaultHasNoPassword);
        }
        match found {
            Some(u) if u.enabled && u.accepts(password) => Ok(Arc::clone(u)),
            _ => Err(LoginError::WrongPass),
        }
    }

    fn named(&self, name: &[u8]) -> Option<&Arc<User>> {
        self.users.iter().find(|u| u.name.as_bytes() == name)
    }
}

/// The users `server.password` makes before any `[users]` entry: the default user with that
/// password or, with no credentials configured at all, the default user taking any password.
fn default_users(config: &Config, problems: &mut Vec<Problem>) -> Vec<Arc<User>> {
    let server = &config.server;
    let default_name = &server.username;
    let mut users = Vec::new();
    if !server.password.is_empty() {
        users.push(Arc::new(User::unrestricted(
            default_name,
            0,
            vec![server.password.clone()],
        )));
        if config.users.contains_key(default_name) {
            problems.push(Problem {
                key: format!("users.{default_name}"),
                message: format!(
                    "server.password is the password of user {default_name:?} (server.username) already: set it in one of the two places"
                ),
            });
        }
    } else if config.users.is_empty() {
        // No credentials at all: every client is the default user, as before users existed.
        users.push(Arc::new(User::unrestricted(default_name, 0, Vec::new())));
    }
    users
}

/// Where the problems of one `[users.NAME]` entry go, so that each helper names only the field
/// it read and every key comes out spelled the same way.
struct UserProblems<'a> {
    /// The entry's name, as `[users.NAME]` writes it.
    name: &'a str,
    /// Every problem of the configuration, in the order found.
    problems: &'a mut Vec<Problem>,
}

impl UserProblems<'_> {
    /// A problem with the entry as a whole, under `users.NAME`.
    fn entry(&mut self, message: String) {
        let key = format!("users.{}", self.name);
        self.problems.push(Problem { key, message });
    }

    /// A problem with one field of the entry, under `users.NAME.field`.
    fn field(&mut self, field: &str, message: String) {
        let key = format!("users.{}.{field}", self.name);
        self.problems.push(Problem { key, message });
    }
}

/// The user's passwords, read from where it says; a user has some source of passwords or
/// `nopass`, never both, since `nopass` would make the passwords meaningless.
fn compile_passwords(
    user: &UserConfig,
    env: &dyn Fn(&str) -> Option<String>,
    report: &mut UserProblems<'_>,
) -> Vec<Secret> {
    let (passwords, secret_problems) = read_secrets(user, env);
    for (field, message) in secret_problems {
        report.field(&field, message);
    }
    let has_source = !user.passwords.is_empty()
        || !user.password_file.is_empty()
        || !user.password_env.is_empty();
    if user.nopass && has_source {
        report.field(
            "nopass",
            "nopass takes any password: give no passwords with it".into(),
        );
    } else if !user.nopass && !has_source {
        report.entry(
            "no password: give passwords, password_file or password_env (or nopass = true)".into(),
        );
    }
    passwords
}

/// The user's command rules; rules that do not parse leave the defaults, so that the other
/// fields are still checked and every problem is reported at once.
fn compile_commands(user: &UserConfig, report: &mut UserProblems<'_>) -> CommandRules {
    match CommandRules::parse(&user.commands) {
        Ok(rules) => rules,
        Err(bad) => {
            for message in bad {
                report.field("commands", message);
            }
            CommandRules::default()
        }
    }
}

/// The user's key patterns: `None` (every key) as soon as one entry allows every key.
fn compile_keys(user: &UserConfig, report: &mut UserProblems<'_>) -> Option<Vec<KeyPattern>> {
    let mut keys = Some(Vec::new());
    for (i, entry) in user.keys.iter().enumerate() {
        match key_pattern(entry) {
            Ok(None) => keys = None,
            Ok(Some(pattern)) => {
                if let Some(list) = keys.as_mut() {
                    list.push(pattern);
                }
            }
            Err(message) => report.field(&format!("keys[{i}]"), message),
        }
    }
    keys
}

/// The user's channel patterns: `None` (every channel) as soon as one entry allows every
/// channel.
fn compile_channels(user: &UserConfig, report: &mut UserProblems<'_>) -> Option<Vec<Glob>> {
    let mut channels = Some(Vec::new());
    for (i, entry) in user.channels.iter().enumerate() {
        if entry == "allchannels" || entry == "&*" {
            channels = None;
        } else if let Some(pattern) = entry.strip_prefix('&') {
            if let Some(list) = channels.as_mut() {
                list.push(Glob::new(pattern.as_bytes()));
            }
        } else {
            report.field(
                &format!("channels[{i}]"),
                format!("{entry:?} is not &pattern or allchannels, as Redis writes them"),
            );
        }
    }
    channels
}

/// The backends the user may reach, by backend id: `None` (every backend) when the entry
/// names none.
fn compile_backends(
    user: &UserConfig,
    backend_names: &[String],
    report: &mut UserProblems<'_>,
) -> Option<Vec<bool>> {
    if user.backends.is_empty() {
        return None;
    }
    let mut allowed = vec![false; backend_names.len()];
    for (i, backend) in user.backends.iter().enumerate() {
        match backend_names.iter().position(|b| b == backend) {
            Some(index) => {
                if let Some(slot) = allowed.get_mut(index) {
                    *slot = true;
                }
            }
            None => report.field(
                &format!("backends[{i}]"),
                format!("no backend named {backend:?}"),
            ),
        }
    }
    Some(allowed)
}

/// One `keys` entry: `None` for every key (`allkeys`, `~*`).
fn key_pattern(entry: &str) -> Result<Option<KeyPattern>, String> {
    if entry == "allkeys" || entry == "~*" {
        return Ok(None);
    }
    let (read, write, pattern) = if let Some(p) = entry.strip_prefix('~') {
        (true, true, p)
    } else if let Some((access, p)) = entry
        .strip_prefix('%')
        .and_then(|rest| rest.split_once('~'))
    {
        let read = access.contains(['R', 'r']);
        let write = access.contains(['W', 'w']);
        if access.is_empty() || !access.chars().all(|c| "RWrw".contains(c)) {
            return Err(format!(
                "{entry:?}: the access before ~ is R, W or RW (as in %R~pattern)"
            ));
        }
        (read, write, p)
    } else {
        return Err(format!(
            "{entry:?} is not ~pattern, %R~pattern, %W~pattern, %RW~pattern or allkeys, as Redis writes them"
        ));
    };
    Ok(Some(KeyPattern {
        glob: Glob::new(pattern.as_bytes()),
        read,
        write,
    }))
}

/// A set of users (bits by [`UserId`]): who may run one command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserSet(Box<[u64]>);

impl UserSet {
    /// The users for whom `allowed` says yes.
    pub fn of(users: &Users, mut allowed: impl FnMut(&User) -> bool) -> UserSet {
        let mut words = vec![0u64; users.users.len().div_ceil(64)];
        for user in &users.users {
            if allowed(user)
                && let Some(word) = words.get_mut(user.id / 64)
            {
                *word |= 1 << (user.id % 64);
            }
        }
        UserSet(words.into_boxed_slice())
    }

    /// Whether `user` is in the set.
    pub fn contains(&self, user: UserId) -> bool {
        self.0
            .get(user / 64)
            .is_some_and(|word| word >> (user % 64) & 1 == 1)
    }
}

#[cfg(test)]
mod tests;
