//! Configuration files for a test that reloads them, and a proxy started from one.

use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::proxy::{Proxy, Raw, admin_request_with};
use super::sentinel::StandaloneServer;

/// How long an eventual effect (a watcher's reload, connections closing) may take.
pub const EVENTUALLY: Duration = Duration::from_secs(20);

/// `[server]` for a proxy in a test: admin endpoint on `admin`, the file watcher every
/// `watch_ms` (0: off), then `extra` lines.
pub fn server(admin: u16, watch_ms: u64, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
         config_watch_interval_ms = {watch_ms}\n{extra}\n"
    )
}

/// `[backends.NAME]` for a Redis Cluster on `seeds`, then `extra` lines.
pub fn cluster(name: &str, seeds: &[String], extra: &str) -> String {
    let seeds: Vec<String> = seeds.iter().map(|s| format!("{s:?}")).collect();
    format!(
        "[backends.{name}]\nseeds = [{}]\nrequest_timeout_ms = 2000\nrefresh_interval_ms = 1000\n{extra}\n",
        seeds.join(", ")
    )
}

/// `[backends.NAME]` for a standalone server.
pub fn standalone(name: &str, server: &StandaloneServer) -> String {
    format!(
        "[backends.{name}]\nkind = \"standalone\"\naddress = \"{}\"\nrequest_timeout_ms = 2000\nrefresh_interval_ms = 1000\n\n",
        server.address()
    )
}

/// `[routing]` with `default` and a route per (prefix, backend).
pub fn routing(default: &str, routes: &[(&str, &str)]) -> String {
    let mut text = format!("[routing]\ndefault = \"{default}\"\n");
    for (prefix, backend) in routes {
        text.push_str(&format!(
            "[[routing.routes]]\nprefix = \"{prefix}\"\nbackend = \"{backend}\"\n"
        ));
    }
    text
}

/// The admin token of every [`Reloadable`], which `POST /reload` needs.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// A proxy started from a configuration file the test rewrites. Its `[server]` is given
/// `admin_token_file`, a file holding [`ADMIN_TOKEN`], and [`Reloadable::reload`] sends it.
pub struct Reloadable {
    /// The proxy.
    pub proxy: Proxy,
    path: PathBuf,
    token_file: PathBuf,
    admin: u16,
    _dir: tempfile::TempDir,
}

impl Reloadable {
    /// Writes `text` (which must name `admin` as admin endpoint), starts a proxy on it and
    /// waits until it serves every slot.
    pub fn start(admin: u16, text: &str) -> Reloadable {
        let started = Reloadable::start_unready(admin, text);
        started.proxy.wait_until_serving();
        started
    }

    /// Like `start`, without waiting for the backends.
    pub fn start_unready(admin: u16, text: &str) -> Reloadable {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("respgate.toml");
        let token_file = dir.path().join("admin-token");
        std::fs::write(&token_file, format!("{ADMIN_TOKEN}\n")).unwrap();
        replace_file(&path, &with_token_file(text, &token_file));
        Reloadable {
            proxy: Proxy::start_from_file(&path),
            path,
            token_file,
            admin,
            _dir: dir,
        }
    }

    /// Replaces the file with `text` and asks for a reload: the status and the report.
    pub fn reload(&self, text: &str) -> (u16, String) {
        self.write(text);
        admin_request_with(
            self.admin,
            "POST",
            "/reload",
            &[&format!("Authorization: Bearer {ADMIN_TOKEN}")],
        )
    }

    /// Replaces the file with `text`, `admin_token_file` added, without asking for a reload.
    pub fn write(&self, text: &str) {
        replace_file(&self.path, &with_token_file(text, &self.token_file));
    }

    /// The admin endpoint's port.
    pub fn admin(&self) -> u16 {
        self.admin
    }

    /// Like `reload`, asserting it was applied.
    pub fn reload_ok(&self, text: &str) -> String {
        let (status, report) = self.reload(text);
        assert_eq!(status, 200, "{report}");
        report
    }
}

/// `text` with `admin_token_file` naming `token_file` first in its `[server]` table (a text
/// without one, such as a file that is not TOML, is left as it is).
fn with_token_file(text: &str, token_file: &Path) -> String {
    text.replacen(
        "[server]\n",
        &format!(
            "[server]\nadmin_token_file = {:?}\n",
            token_file.display().to_string()
        ),
        1,
    )
}

/// Writes `text` to `path` whole (through a rename), so no reader sees half of it.
pub fn replace_file(path: &Path, text: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, text).unwrap();
    std::fs::rename(&next, path).unwrap();
}

/// The value of `field` in `INFO section` from `raw`.
pub fn info_field(raw: &mut Raw, section: &str, field: &str) -> String {
    let info = raw.info(section);
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {info}"))
        .trim()
        .to_string()
}

pub fn command(raw: &mut Raw, args: &[&str]) -> String {
    String::from_utf8_lossy(&raw.command(args)).into_owned()
}

/// Waits until `check` holds, or panics with `what` and the last value seen.
pub fn eventually<T: std::fmt::Debug>(
    what: &str,
    mut probe: impl FnMut() -> T,
    check: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + EVENTUALLY;
    loop {
        let seen = probe();
        if check(&seen) {
            return seen;
        }
        assert!(Instant::now() < deadline, "{what}; last seen: {seen:?}");
        sleep(Duration::from_millis(50));
    }
}
