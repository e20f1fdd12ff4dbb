//! A restricted user on the backend's nodes: how a script or function is held to the rights of
//! the user who sent it.
//!
//! The proxy cannot read a script, so it lets Redis do what Redis does: check every call the
//! script makes against the user running it. Each restricted user has a twin on the nodes with
//! the same command, key and channel rules, made by the proxy with `ACL SETUSER`. A restricted
//! user's scripts, and everything on its own connection (blocking commands, transactions), run
//! on a connection logged in as that twin.
//!
//! The twin's name carries a hash of its rules (`respgate:NAME:1a2b3c4d5e6f`): proxies whose
//! configurations differ for a while (a rolling reload, a canary) each have their own twin,
//! and one never widens the rights the other's connections act with, as `ACL SETUSER` on a
//! shared name would. Its password is derived, never configured: a SHA-256 of the name and the
//! backend's password, so every replica with the same configuration agrees on it without
//! talking to the others. A connection logging in with a password the node does not know (a
//! new node, a replica promoted by a failover, a restarted node) makes the twin first: there is
//! no list of nodes to keep in step. The node stores only the password's hash (`#...`).

use crate::backend::NodeLogin;
use crate::config::UserConfig;

/// The prefix of a twin's name on the nodes, so it never replaces a user of the node's own.
pub const NODE_USER_PREFIX: &str = "respgate:";

/// The commands the proxy itself sends on a connection logged in as the twin, beyond the
/// user's: `ASKING` before a command it follows an `ASK` redirect with. (`SELECT`, `READONLY`
/// and `CLIENT ID` are sent before logging in.)
const PLUMBING: &str = "+asking";

/// One restricted user's twin on the nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeUser {
    /// The proxy user's name.
    user: String,
    /// The rules, as `ACL SETUSER` takes them, in order.
    rules: Vec<String>,
}

impl NodeUser {
    /// The twin of user `name` configured as `config`.
    pub(super) fn of(name: &str, config: &UserConfig) -> NodeUser {
        let mut rules = vec!["resetchannels".to_string()];
        rules.extend(config.commands.split_whitespace().map(str::to_string));
        rules.extend(config.keys.iter().cloned());
        rules.extend(config.channels.iter().cloned());
        rules.push(PLUMBING.to_string());
        NodeUser {
            user: name.to_string(),
            rules,
        }
    }

    /// The proxy user it is the twin of.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// How to log in as the twin on a backend whose own password is `backend_password` and
    /// whose nodes know the commands `known` says yes to: a rule naming a command the nodes
    /// lack (a module's, present on another backend) is left out, as `ACL SETUSER` would
    /// refuse it, and the user may not run it there anyway.
    pub fn login(&self, backend_password: Option<&str>, known: impl Fn(&str) -> bool) -> NodeLogin {
        let rules: Vec<&String> = self
            .rules
            .iter()
            .filter(|rule| named_command(rule).is_none_or(|name| known(&name)))
            .collect();
        let mut digest = Vec::with_capacity(256);
        for rule in &rules {
            digest.extend_from_slice(rule.as_bytes());
            digest.push(0);
        }
        let hash = sha256_hex(&digest);
        let name = format!(
            "{NODE_USER_PREFIX}{}:{}",
            self.user,
            hash.get(..12).unwrap_or(&hash)
        );
        let mut seed = Vec::with_capacity(128);
        for part in [
            "respgate node user",
            &name,
            backend_password.unwrap_or_default(),
        ] {
            seed.extend_from_slice(part.as_bytes());
            seed.push(0);
        }
        let password = sha256_hex(&seed);
        let mut setuser = vec![
            "ACL".to_string(),
            "SETUSER".to_string(),
            name.clone(),
            "reset".to_string(),
            "on".to_string(),
            format!("#{}", sha256_hex(password.as_bytes())),
        ];
        setuser.extend(rules.into_iter().cloned());
        NodeLogin {
            user: name,
            password,
            setuser,
        }
    }
}

/// The command (lowercase, without subcommand) a rule names: `+get`, `-config|set`; `None` for
/// categories and the other rules.
fn named_command(rule: &str) -> Option<String> {
    let name = rule.strip_prefix(['+', '-'])?;
    if name.starts_with('@') {
        return None;
    }
    let base = name.split('|').next().unwrap_or(name);
    Some(base.to_ascii_lowercase())
}

/// SHA-256 of `data` in lowercase hex, as `ACL SETUSER #hash` takes it.
fn sha256_hex(data: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(commands: &str, keys: &[&str]) -> UserConfig {
        UserConfig {
            commands: commands.into(),
            keys: keys.iter().map(|k| k.to_string()).collect(),
            ..UserConfig::default()
        }
    }

    #[test]
    fn the_twin_has_the_users_rules_and_a_name_and_password_only_its_rules_and_backend_give() {
        let app = NodeUser::of(
            "app",
            &user("+@all -@dangerous", &["~app:*", "%R~shared:*"]),
        );
        let login = app.login(Some("backend-secret"), |_| true);
        assert!(login.user.starts_with("respgate:app:"), "{}", login.user);
        assert_eq!(login.user.len(), "respgate:app:".len() + 12);
        assert_eq!(login.setuser[..2], ["ACL", "SETUSER"]);
        assert_eq!(login.setuser[2], login.user);
        assert_eq!(login.setuser[3..5], ["reset", "on"]);
        let hash = &login.setuser[5];
        assert!(hash.starts_with('#') && hash.len() == 65, "{hash}");
        assert_eq!(hash[1..], sha256_hex(login.password.as_bytes()));
        assert_eq!(
            login.setuser[6..],
            [
                "resetchannels",
                "+@all",
                "-@dangerous",
                "~app:*",
                "%R~shared:*",
                "+asking"
            ]
        );
        // The same on every replica; another backend, another password; other rules, another
        // twin.
        assert_eq!(login, app.login(Some("backend-secret"), |_| true));
        let elsewhere = app.login(Some("other"), |_| true);
        assert_eq!(elsewhere.user, login.user);
        assert_ne!(elsewhere.password, login.password);
        let wider = NodeUser::of("app", &user("+@all", &["~app:*", "%R~shared:*"]));
        assert_ne!(
            login.user,
            wider.login(Some("backend-secret"), |_| true).user
        );
        assert!(!format!("{login:?}").contains(&login.password));
    }

    #[test]
    fn rules_naming_commands_the_backend_lacks_are_left_out() {
        let app = NodeUser::of("app", &user("+@all -json.get +config|get -FT.SEARCH", &[]));
        let login = app.login(None, |name| !name.contains('.'));
        assert_eq!(
            login.setuser[6..],
            ["resetchannels", "+@all", "+config|get", "+asking"]
        );
        assert_ne!(login.user, app.login(None, |_| true).user);
    }
}
