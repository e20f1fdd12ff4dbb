//! `respgate migrate`: an operator's client for the migration endpoints of any replica's admin
//! address (see `crate::admin`). The token comes from `RESPGATE_ADMIN_TOKEN` or a file,
//! never from an argument, where other users of the machine could read it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use thiserror::Error;

use super::{Migration, Phase};

/// Longest an answer from the admin endpoint may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer read.
const MAX_ANSWER: u64 = 16 * 1024 * 1024;

/// Why a call to the admin endpoint failed.
#[derive(Debug, Error)]
pub enum CliError {
    /// The endpoint could not be reached or answered garbage.
    #[error("{0}")]
    Io(String),
    /// It answered with an error status: the status line and its text.
    #[error("{status}: {body}")]
    Refused {
        /// `409 Conflict`, ...
        status: String,
        /// What it said.
        body: String,
    },
    /// No migration to show or act on.
    #[error("no migration {0}")]
    NoMigration(String),
}

/// The admin endpoint at `admin` (`HOST:PORT`), with the token sent on changes.
pub struct Admin {
    /// `HOST:PORT`.
    pub address: String,
    /// The admin token, if any.
    pub token: Option<String>,
}

impl Admin {
    /// `method path` (the query string included); the body of a 2xx answer.
    pub fn call(&self, method: &str, path: &str) -> Result<String, CliError> {
        let io = |e: std::io::Error| CliError::Io(format!("{}: {e}", self.address));
        let mut stream = TcpStream::connect(&self.address).map_err(io)?;
        stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
        let auth = self
            .token
            .as_deref()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{auth}Connection: close\r\n\r\n",
            self.address
        );
        stream.write_all(head.as_bytes()).map_err(io)?;
        let mut answer = Vec::new();
        stream
            .take(MAX_ANSWER)
            .read_to_end(&mut answer)
            .map_err(io)?;
        let answer = String::from_utf8_lossy(&answer);
        let (head, body) = answer
            .split_once("\r\n\r\n")
            .ok_or_else(|| CliError::Io(format!("{}: not an HTTP answer", self.address)))?;
        let status = head
            .lines()
            .next()
            .and_then(|line| line.split_once(' '))
            .map(|(_, status)| status.trim().to_string())
            .unwrap_or_default();
        if status.starts_with('2') {
            Ok(body.to_string())
        } else {
            Err(CliError::Refused {
                status,
                body: body.trim().to_string(),
            })
        }
    }

    /// Every migration, oldest first.
    pub fn migrations(&self) -> Result<Vec<Migration>, CliError> {
        let body = self.call("GET", "/migrations")?;
        serde_json::from_str(&body).map_err(|e| CliError::Io(format!("GET /migrations: {e}")))
    }

    /// Migration `id`, or the latest when `None`.
    pub fn migration(&self, id: Option<&str>) -> Result<Migration, CliError> {
        let all = self.migrations()?;
        let found = match id {
            Some(id) => all.into_iter().find(|m| m.id == id),
            None => all.into_iter().last(),
        };
        found.ok_or_else(|| CliError::NoMigration(id.unwrap_or("yet").to_string()))
    }
}

/// What `--check-config FILE --migrations-from ADMIN` says of each migration against the
/// configuration in FILE: a finished migration whose route the file does not make its own
/// (it holds until forgotten, and forgetting it first would leave its keys behind), one the
/// file agrees with (it can be forgotten once every replica runs the file), one under way.
pub fn differences(config: &crate::config::Config, migrations: &[Migration]) -> Vec<String> {
    let mut lines = Vec::new();
    for m in migrations {
        let routed = super::controller::configured_backend(config, &m.prefix);
        let (id, prefix, to) = (&m.id, &m.prefix, &m.to);
        match m.phase {
            Phase::Done if routed == *to => lines.push(format!(
                "note: migration {id} moved {prefix:?} to {to}, where this configuration routes \
                 it; once every replica runs it, `respgate migrate forget --id {id}`"
            )),
            Phase::Done => lines.push(format!(
                "warning: migration {id} moved {prefix:?} to {to}, but this configuration routes \
                 it to {routed}: the migration's route holds until it is forgotten, and \
                 forgetting it before the configuration routes {prefix:?} to {to} leaves its keys \
                 behind"
            )),
            Phase::Aborted => {}
            phase => lines.push(format!(
                "note: migration {id} is moving {prefix:?} from {} to {to} ({}); its route \
                 holds over this configuration's until it is forgotten",
                m.from,
                phase.name()
            )),
        }
    }
    lines
}

/// `text` percent-encoded for a query string.
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// One status line: phase, a bar, keys and bytes moved, the rate since `before` (the same
/// migration `seconds` ago) and the time left at that rate.
pub fn status_line(m: &Migration, before: Option<&Migration>, seconds: f64) -> String {
    let rate = before
        .filter(|_| seconds > 0.0)
        .map(|b| m.keys_moved.saturating_sub(b.keys_moved) as f64 / seconds);
    let fraction = match (m.phase, m.keys_total) {
        (Phase::Done, _) => Some(1.0),
        (_, Some(total)) if total > 0 => Some((m.keys_moved as f64 / total as f64).min(1.0)),
        _ => None,
    };
    let bar = fraction.map_or_else(
        || "[ ? ]".to_string(),
        |f| {
            let filled = (f * 30.0).round() as usize;
            format!(
                "[{}{}] {:>3.0}%",
                "#".repeat(filled),
                ".".repeat(30 - filled),
                f * 100.0
            )
        },
    );
    let eta = match (rate, m.keys_total) {
        (Some(rate), Some(total)) if rate > 0.0 && !m.phase.is_final() => {
            format!(
                ", ETA {:.0}s",
                total.saturating_sub(m.keys_moved) as f64 / rate
            )
        }
        _ => String::new(),
    };
    let rate = rate.map_or_else(String::new, |r| format!(", {r:.0} keys/s"));
    let error = m
        .error
        .as_deref()
        .map_or_else(String::new, |e| format!(" ({e})"));
    format!(
        "{} {} -> {} {:<12} {bar} {} keys, {} bytes{rate}{eta}{error}",
        m.id,
        m.prefix,
        m.to,
        m.phase.name(),
        m.keys_moved,
        m.bytes_moved
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_config_names_what_a_finished_migration_holds_over_the_file() {
        let mut config: crate::config::Config = toml::from_str(
            "[backends.main]\nseeds = [\"127.0.0.1:1\"]\n[backends.archive]\nseeds = \
             [\"127.0.0.1:2\"]\n[routing]\ndefault = \"main\"\n[[routing.routes]]\nprefix = \
             \"user:\"\nbackend = \"archive\"\n",
        )
        .unwrap();
        let done = |id: &str, prefix: &str| Migration {
            id: id.into(),
            prefix: prefix.into(),
            from: "main".into(),
            to: "archive".into(),
            phase: Phase::Done,
            ..Migration::default()
        };
        let lines = differences(&config, &[done("m1", "user:"), done("m2", "order:")]);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].starts_with("note: migration m1 moved \"user:\" to archive, where"));
        assert!(lines[1].starts_with("warning: migration m2 moved \"order:\" to archive, but this configuration routes it to main"));
        config.routing.routes.clear();
        let aborted = Migration {
            phase: Phase::Aborted,
            ..done("m3", "x:")
        };
        assert!(differences(&config, &[aborted]).is_empty());
    }

    #[test]
    fn a_status_line_shows_progress_rate_and_time_left() {
        let before = Migration {
            id: "m1".into(),
            prefix: "archive:".into(),
            to: "b".into(),
            phase: Phase::Moving,
            keys_total: Some(1000),
            keys_moved: 100,
            ..Migration::default()
        };
        let now = Migration {
            keys_moved: 300,
            bytes_moved: 4096,
            ..before.clone()
        };
        let line = status_line(&now, Some(&before), 2.0);
        assert!(line.contains(" 30%"), "{line}");
        assert!(
            line.contains("300 keys, 4096 bytes, 100 keys/s, ETA 7s"),
            "{line}"
        );
        assert_eq!(encode("user:{a} b"), "user%3A%7Ba%7D%20b");
    }
}
