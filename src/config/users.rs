//! `[users.NAME]`: the proxy's ACL users (passwords or where to read them, and what each may
//! run and touch), and [`Secret`], the type every password is held in so that none is ever
//! printed. The rules are compiled and checked by [`crate::acl::Users`].

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::REDACTED;

/// A password: compared, never shown. `Debug` prints `"<redacted>"` (or `""` when empty), and
/// so does serializing it (`/config`), so a config printed whole, a log line or an error cannot
/// leak it; there is no `Display`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The password's bytes, for comparing.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Whether no password is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "\"<redacted>\""
        })
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(if self.0.is_empty() { "" } else { REDACTED })
    }
}

impl From<&str> for Secret {
    fn from(text: &str) -> Self {
        Secret(text.to_string())
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Self {
        Secret(text)
    }
}

/// One user (`[users.NAME]`), as Redis's `ACL SETUSER NAME on >password ~keys &channels
/// +commands` would make it, plus the backends it may reach.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct UserConfig {
    /// Whether the user may log in (Redis's `on`/`off`).
    pub enabled: bool,
    /// Passwords written here; any of them logs in (several, for rotation). Prefer
    /// `password_file` or `password_env`.
    pub passwords: Vec<Secret>,
    /// Files holding passwords, one per line (blank lines ignored): a mounted Kubernetes
    /// Secret. One path or a list; read at start and at each reload.
    #[serde(deserialize_with = "one_or_many")]
    pub password_file: Vec<String>,
    /// Environment variables each holding one password. One name or a list; read at start
    /// and at each reload.
    #[serde(deserialize_with = "one_or_many")]
    pub password_env: Vec<String>,
    /// Any password logs in (Redis's `nopass`); a client that never authenticates is this
    /// user when it is the default user.
    pub nopass: bool,
    /// The commands the user may run, as Redis's ACL rules applied in order: `+@all`,
    /// `-@dangerous`, `+get`, `-config|set`, `allcommands`, `nocommands`. Empty: none.
    pub commands: String,
    /// Key patterns the user may touch, as Redis writes them: `~app:*` (read and write),
    /// `%R~pattern` (read), `%W~pattern` (write), `%RW~pattern`, or `allkeys`. Empty: none.
    pub keys: Vec<String>,
    /// Pub/Sub channel patterns, as Redis writes them: `&news.*`, or `allchannels`. Empty:
    /// none (Redis 7's `resetchannels` default).
    pub channels: Vec<String>,
    /// The backends the user's commands may reach, by name; empty means every backend.
    pub backends: Vec<String>,
}

impl Default for UserConfig {
    fn default() -> Self {
        UserConfig {
            enabled: true,
            passwords: Vec::new(),
            password_file: Vec::new(),
            password_env: Vec::new(),
            nopass: false,
            commands: String::new(),
            keys: Vec::new(),
            channels: Vec::new(),
            backends: Vec::new(),
        }
    }
}

/// A string or a list of strings, read as a list.
fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(one) if one.is_empty() => Vec::new(),
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    })
}

/// The passwords of `user`, read from where it says; each problem with the key it concerns
/// (`password_file`, `password_env`) and a message that never holds a password.
pub fn read_secrets(
    user: &UserConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> (Vec<Secret>, Vec<(String, String)>) {
    let mut secrets: Vec<Secret> = Vec::new();
    let mut problems = Vec::new();
    for (i, secret) in user.passwords.iter().enumerate() {
        if secret.is_empty() {
            problems.push((format!("passwords[{i}]"), "is empty".to_string()));
        } else {
            secrets.push(secret.clone());
        }
    }
    for path in &user.password_file {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let before = secrets.len();
                secrets.extend(
                    text.lines()
                        .map(|line| line.strip_suffix('\r').unwrap_or(line))
                        .filter(|line| !line.is_empty())
                        .map(Secret::from),
                );
                if secrets.len() == before {
                    problems.push((
                        "password_file".into(),
                        format!("{path:?} holds no password"),
                    ));
                }
            }
            Err(error) => problems.push((
                "password_file".into(),
                format!("cannot read {path:?}: {error}"),
            )),
        }
    }
    for name in &user.password_env {
        match env(name) {
            Some(value) if !value.is_empty() => secrets.push(Secret::from(value)),
            Some(_) => problems.push(("password_env".into(), format!("${name} is empty"))),
            None => problems.push(("password_env".into(), format!("${name} is not set"))),
        }
    }
    (secrets, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug_output() {
        let user = UserConfig {
            passwords: vec!["hunter2".into()],
            ..UserConfig::default()
        };
        let shown = format!("{user:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert_eq!(format!("{:?}", Secret::default()), "\"\"");
    }

    #[test]
    fn passwords_come_from_files_and_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "old-one\r\n\nnew-one\n").unwrap();
        let user = UserConfig {
            passwords: vec!["inline".into()],
            password_file: vec![file.display().to_string(), "/nonexistent/pw".into()],
            password_env: vec!["APP_PW".into(), "UNSET_PW".into()],
            ..UserConfig::default()
        };
        let env = |name: &str| (name == "APP_PW").then(|| "from-env".to_string());
        let (secrets, problems) = read_secrets(&user, &env);
        let secrets: Vec<&[u8]> = secrets.iter().map(Secret::expose).collect();
        assert_eq!(
            secrets,
            [&b"inline"[..], b"old-one", b"new-one", b"from-env"]
        );
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["password_file", "password_env"], "{problems:?}");
        assert!(problems[1].1.contains("$UNSET_PW is not set"));
    }
}
