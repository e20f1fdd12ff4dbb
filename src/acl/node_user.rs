//! A restricted user on the backend's nodes: how a script or function is held to the rights of
//! the user who sent it.
//!
//! The proxy cannot read a script, so it lets Redis do what Redis does: check every call the
//! script makes against the user running it. Each restricted user has a twin on the nodes,
//! `respgate:NAME`, with the same command, key and channel rules, made by the proxy with
//! `ACL SETUSER`. A restricted user's scripts, and everything on its own connection (blocking
//! commands, transactions), run on a connection logged in as that twin.
//!
//! The twin's password is derived, never configured: a SHA-256 of the user's name, its rules
//! and the backend's password, so every proxy replica with the same configuration agrees on it
//! without talking to the others, and changed rules give a new password. A connection logging
//! in with a password the node does not know (a new node, a replica promoted by a failover, a
//! restarted node, rules changed by a reload) makes the twin again first; there is no list of
//! nodes to keep in step. The node stores only the password's hash (`#...`).

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
    /// The name on the nodes.
    name: String,
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
            name: format!("{NODE_USER_PREFIX}{name}"),
            rules,
        }
    }

    /// The name on the nodes.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How to log in as the twin on a backend whose own password is `backend_password`.
    pub fn login(&self, backend_password: Option<&str>) -> NodeLogin {
        let mut seed = Vec::with_capacity(256);
        for part in [
            "respgate node user",
            &self.name,
            backend_password.unwrap_or_default(),
        ] {
            seed.extend_from_slice(part.as_bytes());
            seed.push(0);
        }
        for rule in &self.rules {
            seed.extend_from_slice(rule.as_bytes());
            seed.push(0);
        }
        let password = sha256_hex(&seed);
        let mut setuser = vec![
            "ACL".to_string(),
            "SETUSER".to_string(),
            self.name.clone(),
            "reset".to_string(),
            "on".to_string(),
            format!("#{}", sha256_hex(password.as_bytes())),
        ];
        setuser.extend(self.rules.iter().cloned());
        NodeLogin {
            user: self.name.clone(),
            password,
            setuser,
        }
    }
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
    fn the_twin_has_the_users_rules_and_a_password_only_its_rules_and_backend_give() {
        let app = NodeUser::of(
            "app",
            &user("+@all -@dangerous", &["~app:*", "%R~shared:*"]),
        );
        let login = app.login(Some("backend-secret"));
        assert_eq!(login.user, "respgate:app");
        assert_eq!(
            login.setuser[..5],
            ["ACL", "SETUSER", "respgate:app", "reset", "on"]
        );
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
        // The same on every replica; another backend or other rules, another password.
        assert_eq!(login, app.login(Some("backend-secret")));
        assert_ne!(login.password, app.login(Some("other")).password);
        let wider = NodeUser::of("app", &user("+@all", &["~app:*", "%R~shared:*"]));
        assert_ne!(login.password, wider.login(Some("backend-secret")).password);
        assert!(!format!("{login:?}").contains(&login.password));
    }
}
