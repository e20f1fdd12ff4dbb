//! The settings a running proxy cannot change: the sockets it listens on (and the admin
//! listener's limits), its worker threads and how its log lines are written. A reload applies everything else and reports these as needing a restart.

use std::fmt::Display;

use super::Config;

/// A setting whose new value takes effect only when the proxy restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartNeeded {
    /// Dotted key, such as `server.listen`.
    pub key: &'static str,
    /// The value in force.
    pub running: String,
    /// The value the new configuration asks for.
    pub configured: String,
}

impl Display for RestartNeeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} -> {} needs a restart",
            self.key, self.running, self.configured
        )
    }
}

impl Config {
    /// The restart-only settings of `new` that differ from this running configuration. `new`
    /// keeps the running values instead, so that it describes what is in force once applied.
    pub fn hold_restart_only(&self, new: &mut Config) -> Vec<RestartNeeded> {
        let mut held = Vec::new();
        let (running, next) = (&self.server, &mut new.server);
        hold(
            "server.listen",
            &running.listen,
            &mut next.listen,
            &mut held,
        );
        hold(
            "server.threads",
            &running.threads,
            &mut next.threads,
            &mut held,
        );
        hold(
            "server.backlog",
            &running.backlog,
            &mut next.backlog,
            &mut held,
        );
        hold(
            "server.admin_listen",
            &running.admin_listen,
            &mut next.admin_listen,
            &mut held,
        );
        hold(
            "server.admin_max_connections",
            &running.admin_max_connections,
            &mut next.admin_max_connections,
            &mut held,
        );
        hold(
            "server.admin_timeout_ms",
            &running.admin_timeout_ms,
            &mut next.admin_timeout_ms,
            &mut held,
        );
        // The TLS listener's files are read again when they change; which files they are,
        // like the listener itself, is fixed at start.
        let (running_tls, next_tls) = (&running.tls, &mut next.tls);
        hold(
            "server.tls.listen",
            &running_tls.listen,
            &mut next_tls.listen,
            &mut held,
        );
        hold(
            "server.tls.cert_file",
            &running_tls.cert_file,
            &mut next_tls.cert_file,
            &mut held,
        );
        hold(
            "server.tls.key_file",
            &running_tls.key_file,
            &mut next_tls.key_file,
            &mut held,
        );
        hold(
            "server.tls.client_ca_file",
            &running_tls.client_ca_file,
            &mut next_tls.client_ca_file,
            &mut held,
        );
        hold(
            "server.tls.handshake_timeout_ms",
            &running_tls.handshake_timeout_ms,
            &mut next_tls.handshake_timeout_ms,
            &mut held,
        );
        hold(
            "log.format",
            &self.log.format,
            &mut new.log.format,
            &mut held,
        );
        held
    }
}

fn hold<T: PartialEq + Clone + Display>(
    key: &'static str,
    running: &T,
    next: &mut T,
    held: &mut Vec<RestartNeeded>,
) {
    if running != next {
        held.push(RestartNeeded {
            key,
            running: running.to_string(),
            configured: next.to_string(),
        });
        *next = running.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_and_threads_are_held_and_reported_the_rest_applies() {
        let running = Config::default();
        let mut new = Config::default();
        new.server.listen = "127.0.0.1:7000".into();
        new.server.threads = 3;
        new.server.max_clients = 5;
        let held = running.hold_restart_only(&mut new);
        let keys: Vec<&str> = held.iter().map(|h| h.key).collect();
        assert_eq!(keys, ["server.listen", "server.threads"]);
        assert_eq!(
            held[0].to_string(),
            "server.listen: 127.0.0.1:6380 -> 127.0.0.1:7000 needs a restart"
        );
        assert_eq!(new.server.listen, running.server.listen);
        assert_eq!(new.server.threads, running.server.threads);
        assert_eq!(new.server.max_clients, 5);
    }
}
