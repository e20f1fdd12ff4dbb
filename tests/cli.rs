//! The binary's command line: `--check-config`, and the example config documenting the defaults.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use respgate::config::{ClusterConfig, Config, DEFAULT_CLUSTER, Overrides, ServerConfig};

fn respgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_respgate"))
}

/// Runs `respgate --check-config` on a file holding `toml`.
fn check_config(toml: &str) -> std::process::Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("respgate.toml");
    std::fs::write(&path, toml).expect("write");
    respgate()
        .arg("--check-config")
        .arg(&path)
        .output()
        .expect("run respgate")
}

#[test]
fn example_config_is_valid_and_states_every_default() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/respgate.toml");
    let output = respgate()
        .args(["--check-config", path])
        .output()
        .expect("run respgate");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let config =
        Config::load_from(Some(path.as_ref()), &[], &Overrides::default()).expect("load example");
    assert_eq!(config.server, ServerConfig::default());
    let cluster = &config.clusters[DEFAULT_CLUSTER];
    assert_eq!(
        ClusterConfig {
            seeds: Vec::new(),
            ..cluster.clone()
        },
        ClusterConfig::default()
    );
}

#[test]
fn check_config_lists_every_problem_with_its_key() {
    let output = check_config(
        "[server]\nlisten = \"not-an-address\"\nmax_pipeline = 0\n[clusters.default]\nseeds = [\"nohost\"]\nrequest_timeout_ms = 0\n",
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for key in [
        "server.listen",
        "server.max_pipeline",
        "clusters.default.seeds",
        "clusters.default.request_timeout_ms",
    ] {
        assert!(
            stderr.contains(key),
            "no problem reported for {key}: {stderr}"
        );
    }
}

#[test]
fn check_config_rejects_unknown_keys() {
    let output = check_config("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("lisen"));
}
