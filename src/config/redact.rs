//! The configuration as an operator may see it (`/config` on the admin endpoint): TOML in the
//! shape of the file, with every secret replaced.
//!
//! Passwords held as [`Secret`](super::Secret) serialize redacted themselves. Other secrets are
//! found by key name, not by field, so a secret added to the configuration later is hidden
//! without being listed here: any key naming a password, secret, token or private key. A key
//! naming a file (`..._file`, `..._path`) holds a path, and one naming an environment variable
//! (`..._env`) the variable's name, which are shown; neither the file's content nor the
//! variable's value is ever read here.

use toml::Value;

use super::Config;

/// What stands in for a secret's value.
pub const REDACTED: &str = "<redacted>";

impl Config {
    /// The configuration as TOML, every secret replaced by [`REDACTED`]. An empty secret stays
    /// empty, so that "no password" still shows.
    pub fn to_redacted_toml(&self) -> Result<String, toml::ser::Error> {
        let mut value = Value::try_from(self)?;
        redact(&mut value, false);
        toml::to_string(&value)
    }
}

/// Whether `key` holds a secret.
fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    let names_secret = ["password", "secret", "token", "private_key", "passphrase"]
        .iter()
        .any(|word| key.contains(word));
    names_secret && !key.ends_with("_file") && !key.ends_with("_path") && !key.ends_with("_env")
}

/// Replaces every non-empty string under a secret key (`secret`: `value` is under one).
fn redact(value: &mut Value, secret: bool) {
    match value {
        Value::String(s) if secret && !s.is_empty() => *s = REDACTED.to_string(),
        Value::Array(items) => {
            for item in items {
                redact(item, secret);
            }
        }
        Value::Table(table) => {
            for (key, item) in table.iter_mut() {
                redact(item, secret || is_secret(key));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::config::{BackendConfig, BackendKind, Secret, UserConfig};

    #[test]
    fn every_password_is_redacted_and_the_rest_shows() {
        let mut config = Config::default();
        config.server.password = "client-secret".into();
        config.backends.insert(
            "main".into(),
            BackendConfig {
                seeds: vec!["10.0.0.1:6379".into()],
                password: "node-secret".into(),
                ..BackendConfig::default()
            },
        );
        config.backends.insert(
            "group".into(),
            BackendConfig {
                kind: BackendKind::Sentinel,
                sentinels: vec!["10.0.0.2:26379".into()],
                master_name: "mymaster".into(),
                sentinel_password: "sentinel-secret".into(),
                ..BackendConfig::default()
            },
        );
        let shown = config.to_redacted_toml().unwrap();
        for secret in ["client-secret", "node-secret", "sentinel-secret"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert_eq!(shown.matches(REDACTED).count(), 3, "{shown}");
        for visible in ["10.0.0.1:6379", "mymaster", "listen = \"127.0.0.1:6380\""] {
            assert!(shown.contains(visible), "{visible} not in {shown}");
        }
        // The redacted text is still a configuration file, minus its secrets.
        let again: Config = toml::from_str(&shown).unwrap();
        assert_eq!(again.server.listen, config.server.listen);
        assert_eq!(again.server.password.expose(), REDACTED.as_bytes());
    }

    #[test]
    fn users_passwords_are_redacted_and_where_they_are_read_from_shows() {
        let mut config = Config::default();
        config.users.insert(
            "app".into(),
            UserConfig {
                passwords: vec!["inline-secret".into()],
                password_file: vec!["/run/secrets/app".into()],
                password_env: vec!["APP_PASSWORD".into()],
                ..UserConfig::default()
            },
        );
        let shown = config.to_redacted_toml().unwrap();
        assert!(!shown.contains("inline-secret"), "{shown}");
        for visible in [
            "passwords = [\"<redacted>\"]",
            "password_file = [\"/run/secrets/app\"]",
            "password_env = [\"APP_PASSWORD\"]",
        ] {
            assert!(shown.contains(visible), "{visible} not in {shown}");
        }
        // A secret serialized on its own is redacted too, not only under a secret's key.
        assert_eq!(
            toml::Value::try_from(Secret::from("x")).unwrap(),
            toml::Value::String(REDACTED.into())
        );
    }

    #[test]
    fn secrets_are_found_by_name() {
        for key in [
            "password",
            "sentinel_password",
            "passwords",
            "api_token",
            "client_secret",
        ] {
            assert!(is_secret(key), "{key}");
        }
        for key in [
            "password_file",
            "password_env",
            "username",
            "listen",
            "key_path",
        ] {
            assert!(!is_secret(key), "{key}");
        }
    }
}
