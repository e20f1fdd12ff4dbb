//! The binary's command line: `--check-config`, and the example config documenting the defaults.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use respgate::config::{
    BackendConfig, Config, DEFAULT_CLUSTER, LogConfig, Overrides, RoutingConfig, ServerConfig,
};

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
    assert_eq!(config.routing, RoutingConfig::default());
    assert_eq!(config.log, LogConfig::default());
    assert!(config.clusters.is_empty(), "the example uses [backends]");
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "",
        "no deprecation note"
    );
    let cluster = &config.backends[DEFAULT_CLUSTER];
    assert_eq!(
        BackendConfig {
            seeds: Vec::new(),
            ..cluster.clone()
        },
        BackendConfig::default()
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

/// Runs `respgate --check-config` on a file of the repository.
fn check_file(relative: &str) -> std::process::Output {
    let path = format!("{}/{relative}", env!("CARGO_MANIFEST_DIR"));
    respgate()
        .args(["--check-config", &path])
        .output()
        .expect("run respgate")
}

#[test]
fn the_routing_examples_are_valid() {
    for example in [
        "config/examples/two-clusters.toml",
        "config/examples/split-namespace.toml",
    ] {
        let output = check_file(example);
        assert!(
            output.status.success(),
            "{example}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&output.stderr), "", "{example}");
    }
}

/// The problems `--check-config` prints for `toml`, which must be refused.
fn refused(toml: &str) -> String {
    let output = check_config(toml);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "{toml}\n{stderr}");
    stderr
}

const TWO: &str = "[backends.main]\nseeds = [\"127.0.0.1:7000\"]\n[backends.archive]\nseeds = [\"127.0.0.1:7100\"]\n";

#[test]
fn check_config_refuses_ambiguous_or_dangling_routes_with_their_keys() {
    let cases = [
        (
            format!("{TWO}[[routing.routes]]\nprefix = \"a:\"\nbackend = \"archive\"\n"),
            "routing.default: 2 backends are configured (archive, main)",
        ),
        (
            format!("{TWO}[routing]\ndefault = \"nope\"\n"),
            "routing.default: no backend named \"nope\"",
        ),
        (
            format!(
                "{TWO}[routing]\ndefault = \"main\"\n[[routing.routes]]\nprefix = \"a:\"\nbackend = \"archive\"\n[[routing.routes]]\nprefix = \"a:\"\nbackend = \"main\"\n"
            ),
            "routing.routes[1].prefix: \"a:\" is the prefix of routing.routes[0] too",
        ),
        (
            format!(
                "{TWO}[routing]\ndefault = \"main\"\n[[routing.routes]]\nprefix = \"a:\"\nbackend = \"archiv\"\n"
            ),
            "routing.routes[0].backend: no backend named \"archiv\"",
        ),
        (
            format!(
                "{TWO}[routing]\ndefault = \"main\"\n[[routing.routes]]\nprefix = \"u:\"\nslots = [{{ range = \"0-8191\", backend = \"main\" }}, {{ range = \"8200-16383\", backend = \"archive\" }}]\n"
            ),
            "routing.routes[0].slots: slots 8192-8199 are not covered",
        ),
        (
            format!(
                "{TWO}[routing]\ndefault = \"main\"\n[[routing.routes]]\nprefix = \"u:\"\nslots = [{{ range = \"0-9000\", backend = \"main\" }}, {{ range = \"8192-16383\", backend = \"archive\" }}]\n"
            ),
            "routing.routes[0].slots: slots 8192-9000 are covered twice",
        ),
        (
            format!(
                "{TWO}[routing]\ndefault = \"main\"\n[[routing.routes]]\nprefix = \"u:\"\nslots = [{{ range = \"0..16383\", backend = \"main\" }}]\n"
            ),
            "routing.routes[0].slots[0].range: \"0..16383\" is not FIRST-LAST",
        ),
        (
            format!(
                "{TWO}[routing]\ndefault = \"main\"\n[[routing.routes]]\nprefix = \"u:\"\nstrip_prefix = true\nslots = [{{ range = \"0-16383\", backend = \"archive\" }}]\n"
            ),
            "routing.routes[0].strip_prefix: not allowed on a slot split",
        ),
        (
            format!(
                "{TWO}[routing]\ndefault = \"main\"\n[[routing.routes]]\nprefix = \"a:\"\nbackend = \"archive\"\nstrip_prefix = true\n[[routing.routes]]\nprefix = \"b:\"\nbackend = \"archive\"\nstrip_prefix = true\n"
            ),
            "routing.routes[0].strip_prefix: backend \"archive\" is reached by stripping \"a:\"",
        ),
        (
            format!(
                "{TWO}[clusters.main]\nseeds = [\"127.0.0.1:7000\"]\n[routing]\ndefault = \"main\"\n"
            ),
            "clusters.main: [backends.main] is configured too",
        ),
        (
            "[server]\nlisten = \"127.0.0.1:6380\"\n".to_string(),
            "backends: no backend configured",
        ),
    ];
    for (toml, expected) in cases {
        let stderr = refused(&toml);
        assert!(
            stderr.contains(expected),
            "want {expected:?} for\n{toml}\ngot {stderr}"
        );
    }
}

#[test]
fn check_config_accepts_several_clusters_and_notes_the_old_spelling() {
    let output = check_config(
        "[clusters.main]\nseeds = [\"127.0.0.1:7000\"]\n[clusters.archive]\nseeds = [\"127.0.0.1:7100\"]\n[routing]\ndefault = \"main\"\n",
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    for name in ["archive", "main"] {
        assert!(
            stderr.contains(&format!(
                "note: clusters.{name}: [clusters.{name}] is the older spelling of [backends.{name}]"
            )),
            "{stderr}"
        );
    }
}

#[test]
fn the_sentinel_example_passes_check_config_and_routes_sessions_to_the_sentinel_group() {
    let relative = "config/examples/sentinel.toml";
    let output = check_file(relative);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stderr), "", "no note");
    let path = format!("{}/{relative}", env!("CARGO_MANIFEST_DIR"));
    let config =
        Config::load_from(Some(path.as_ref()), &[], &Overrides::default()).expect("load example");
    assert_eq!(config.server.listen, "127.0.0.1:6380");
    let sessions = &config.backends["sessions"];
    assert_eq!(sessions.kind, respgate::config::BackendKind::Sentinel);
    assert_eq!(sessions.master_name, "mymaster");
    assert_eq!(
        sessions.sentinels,
        ["127.0.0.1:26379", "127.0.0.1:26380", "127.0.0.1:26381"]
    );
    let main = &config.backends["main"];
    assert_eq!(main.kind, respgate::config::BackendKind::Cluster);
    assert_eq!(main.seeds, ["127.0.0.1:7000"]);
    assert_eq!(config.routing.default, "main");
    let routes: Vec<(&str, &str)> = config
        .routing
        .routes
        .iter()
        .map(|r| (r.prefix.as_str(), r.backend.as_str()))
        .collect();
    assert_eq!(routes, [("session:", "sessions")]);
}

#[test]
fn check_config_refuses_a_drain_delay_not_below_the_timeout() {
    let stderr = refused(
        "[server]\nshutdown_delay_ms = 30000\nshutdown_timeout_ms = 25000\n[backends.default]\nseeds = [\"127.0.0.1:7000\"]\n",
    );
    assert!(
        stderr.contains("server.shutdown_delay_ms: must be less than server.shutdown_timeout_ms"),
        "{stderr}"
    );
}

#[test]
fn the_log_format_comes_from_the_file_or_the_environment() {
    use respgate::config::LogFormat;
    let vars = vec![
        (
            "RESPGATE_BACKENDS__DEFAULT__SEEDS".to_string(),
            "a:1".to_string(),
        ),
        ("RESPGATE_LOG__FORMAT".to_string(), "json".to_string()),
    ];
    let config = Config::load_from(None, &vars, &Overrides::default()).unwrap();
    assert_eq!(config.log.format, LogFormat::Json);
    let output = check_config("[log]\nformat = \"yaml\"\n[backends.default]\nseeds = [\"a:1\"]\n");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("yaml"));
}
#[test]
fn check_config_reports_user_problems_by_key_and_never_shows_a_password() {
    let base = "[backends.main]\nseeds = [\"127.0.0.1:7000\"]\n";
    let stderr = refused(&format!(
        "{base}[users.app]\npasswords = [\"inline-secret-1\"]\npassword_file = \"/nonexistent/respgate-pw\"\n\
         commands = \"+@read +@nope\"\nkeys = [\"app:*\"]\nchannels = [\"news\"]\nbackends = [\"archive\"]\n\
         [users.nopw]\ncommands = \"+@all\"\n"
    ));
    for expected in [
        "users.app.password_file: cannot read \"/nonexistent/respgate-pw\"",
        "users.app.commands: \"+@nope\": no ACL category named \"nope\"",
        "users.app.keys[0]: \"app:*\" is not ~pattern",
        "users.app.channels[0]: \"news\" is not &pattern",
        "users.app.backends[0]: no backend named \"archive\"",
        "users.nopw: no password",
    ] {
        assert!(stderr.contains(expected), "want {expected:?} in\n{stderr}");
    }
    assert!(!stderr.contains("inline-secret-1"), "{stderr}");

    let output = check_config(&format!(
        "{base}[server]\npassword = \"server-secret-1\"\n[users.app]\npasswords = [\"inline-secret-1\"]\ncommands = \"+@all -@dangerous\"\nkeys = [\"~app:*\", \"%R~shared:*\"]\nchannels = [\"&news.*\"]\n"
    ));
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{shown}");
    assert!(!shown.contains("secret-1"), "{shown}");
}

#[test]
fn the_users_example_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/examples/users.toml");
    let output = respgate()
        .args(["--check-config", path])
        .env("RESPGATE_EXAMPLE_APP_PASSWORD", "x")
        .output()
        .expect("run respgate");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn check_config_against_the_configuration_in_force_names_the_keys_left_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, archive_to: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "[backends.main]\nseeds = [\"127.0.0.1:7000\"]\n\
                 [backends.cold]\nseeds = [\"127.0.0.1:7100\"]\n\
                 [routing]\ndefault = \"main\"\n\
                 [[routing.routes]]\nprefix = \"archive:\"\nbackend = \"{archive_to}\"\n"
            ),
        )
        .expect("write");
        path
    };
    let in_force = write("in-force.toml", "main");
    let next = write("next.toml", "cold");
    let output = respgate()
        .arg("--check-config")
        .arg(&next)
        .arg("--against")
        .arg(&in_force)
        .output()
        .expect("run respgate");
    assert!(output.status.success(), "a valid file: {output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "warning: data left behind: keys starting with \"archive:\" or whose hash tag does now \
         route to backend cold instead of backend main; the keys already on main were not moved \
         and can no longer be reached through the proxy (to move a prefix's keys while it is in use, run `respgate migrate start --prefix PREFIX --to BACKEND` before changing its route)\n"
    );
    // Against itself: nothing moves, nothing said.
    let output = respgate()
        .arg("--check-config")
        .arg(&next)
        .arg("--against")
        .arg(&next)
        .output()
        .expect("run respgate");
    assert!(output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
}
