//! Driving `respgate migrate` in a test: the command line, replicas with admin addresses, and
//! clients writing a prefix while it moves.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use respgate::config::Config;

use super::free_port;
use super::proxy::{Proxy, Raw};

/// The admin token the tests' replicas read from their token file.
pub const TOKEN: &str = "migrate-test-token-0123456789";

/// `respgate migrate --admin 127.0.0.1:admin ARGS`, with the token in the environment.
pub fn migrate(admin: u16, args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_respgate"))
        .args(["migrate", "--admin", &format!("127.0.0.1:{admin}")])
        .args(args)
        .env("RESPGATE_ADMIN_TOKEN", TOKEN)
        .output()
        .expect("run respgate migrate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// The migration's record, as `status --json` prints it.
pub fn status(admin: u16) -> serde_json::Value {
    let (ok, text) = migrate(admin, &["status", "--json"]);
    assert!(ok, "status --json: {text}");
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// A replica with its own admin address.
pub fn replica(config: &Config) -> (Proxy, u16) {
    let admin = free_port();
    let mut config = config.clone();
    config.server.admin_listen = format!("127.0.0.1:{admin}");
    let proxy = Proxy::start_with(config);
    proxy.wait_until_serving();
    (proxy, admin)
}

/// A client writing through `port` until `stop`: `INCR` on a counter of its own and a shared
/// one, a key it sets, expires and deletes in turn, an `MSET` and `MGET` over two keys of its
/// own (in different slots) and one of another prefix, and a script that counts. Returns the
/// acknowledged increments of both counters, and every reply that was not as it should be
/// (the `MGET` must read the `MSET`, and at the end the script's count must be its calls).
pub fn writer(
    port: u16,
    name: String,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<(u64, u64, Vec<String>)> {
    thread::spawn(move || {
        let mut client = Raw::connect(port);
        let (mut own, mut shared, mut errors) = (0, 0, Vec::new());
        let mut scripted = 0u64;
        let churn = format!("{name}:churn");
        let mut round = 0u64;
        while !stop.load(Ordering::Relaxed) {
            round += 1;
            for (key, count) in [(name.as_str(), &mut own), ("archive:shared", &mut shared)] {
                let reply = client.command(&["INCR", key]);
                if reply.first() == Some(&b':') {
                    *count += 1;
                } else {
                    errors.push(String::from_utf8_lossy(&reply).into_owned());
                }
            }
            let reply = match round % 3 {
                0 => client.command(&["SET", &churn, "x"]),
                1 => client.command(&["PEXPIRE", &churn, "50"]),
                _ => client.command(&["DEL", &churn]),
            };
            if reply.first() == Some(&b'-') {
                errors.push(String::from_utf8_lossy(&reply).into_owned());
            }
            let (a, b, other) = (
                format!("{name}:a"),
                format!("{name}:b"),
                format!("other:{name}"),
            );
            let value = round.to_string();
            let reply = client.command(&["MSET", &a, &value, &b, &value, &other, &value]);
            if reply != b"+OK\r\n" {
                errors.push(format!("MSET: {}", String::from_utf8_lossy(&reply)));
            }
            let bulk = format!("${}\r\n{value}\r\n", value.len());
            let reply = client.command(&["MGET", &a, &b, &other]);
            if reply != format!("*3\r\n{bulk}{bulk}{bulk}").as_bytes() {
                errors.push(format!("MGET: {}", String::from_utf8_lossy(&reply)));
            }
            let reply = client.command(&["EVAL", SCRIPT, "1", &format!("{name}:eval")]);
            if reply.first() == Some(&b':') {
                scripted += 1;
            } else {
                errors.push(format!("EVAL: {}", String::from_utf8_lossy(&reply)));
            }
        }
        let reply = client.command(&["GET", &format!("{name}:eval")]);
        let want = format!("${}\r\n{scripted}\r\n", scripted.to_string().len());
        if scripted > 0 && reply != want.as_bytes() {
            errors.push(format!(
                "the script ran {scripted} times, its count: {}",
                String::from_utf8_lossy(&reply)
            ));
        }
        (own, shared, errors)
    })
}

/// The script the writers count with.
const SCRIPT: &str = "return redis.call('INCR', KEYS[1])";

/// Waits (at most `within`) until the latest migration is in `phase`; returns its record.
pub fn wait_for_phase(admin: u16, phase: &str, within: std::time::Duration) -> serde_json::Value {
    let deadline = std::time::Instant::now() + within;
    loop {
        let record = status(admin);
        if record["phase"] == phase {
            return record;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never {phase}: {record}"
        );
        thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Waits (at most 30 s) until the latest migration's copier moved `keys` keys.
pub fn wait_for_keys_moved(admin: u16, keys: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while status(admin)["keys_moved"].as_u64().unwrap_or(0) < keys {
        assert!(
            std::time::Instant::now() < deadline,
            "the copier never moved {keys} keys: {}",
            status(admin)
        );
        thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `config` with migrations on (a 3 s lease, or `lease_ms`) and the admin token in a file
/// named for `name`; returns the file, to remove at the end.
pub fn with_migrations(config: &mut Config, name: &str, lease_ms: u64) -> std::path::PathBuf {
    let token_file = std::env::temp_dir().join(format!("respgate-{name}-{}", std::process::id()));
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write the token file");
    config.migration.enabled = true;
    config.migration.lease_ms = lease_ms;
    config.server.admin_token_file = token_file.to_string_lossy().into_owned();
    token_file
}

/// Stops the writers; checks that none saw an error; the acknowledged increments of each
/// writer's own counter and of the shared one.
pub fn stop_writers(
    stop: &AtomicBool,
    writers: Vec<thread::JoinHandle<(u64, u64, Vec<String>)>>,
) -> (Vec<u64>, u64) {
    stop.store(true, Ordering::Relaxed);
    let mut own = Vec::new();
    let mut shared = 0;
    for (i, writer) in writers.into_iter().enumerate() {
        let (mine, theirs, errors) = writer.join().expect("writer");
        assert!(errors.is_empty(), "writer {i} saw errors: {errors:?}");
        own.push(mine);
        shared += theirs;
    }
    (own, shared)
}

/// `value` as a bulk reply.
pub fn bulk(value: &str) -> Vec<u8> {
    format!("${}\r\n{value}\r\n", value.len()).into_bytes()
}

/// Writers through every replica, on counters of the prefix `prefix`.
pub fn writers(
    replicas: &[(Proxy, u16)],
    prefix: &str,
    stop: &Arc<AtomicBool>,
) -> Vec<thread::JoinHandle<(u64, u64, Vec<String>)>> {
    replicas
        .iter()
        .enumerate()
        .map(|(i, (r, _))| writer(r.port, format!("{prefix}counter{i}"), Arc::clone(stop)))
        .collect()
}

/// Seeds `archive:k0..` (`keys` of them, values `v0..`) through `proxy`.
pub fn seed(proxy: &Proxy, keys: usize) {
    let mut client = proxy.raw();
    for i in 0..keys {
        let (key, value) = (format!("archive:k{i}"), format!("v{i}"));
        assert_eq!(client.command(&["SET", &key, &value]), b"+OK\r\n");
    }
}
