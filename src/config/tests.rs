//! Loading the configuration: layers, variables, problems by key.
use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn flags_alone_make_a_default_cluster() {
    let overrides = Overrides {
        listen: Some("127.0.0.1:7777".into()),
        seeds: Some(vec!["127.0.0.1:7000".into(), "127.0.0.1:7001".into()]),
        threads: None,
    };
    let config = Config::load_from(None, &[], &overrides).unwrap();
    assert_eq!(config.server.listen, "127.0.0.1:7777");
    assert_eq!(config.clusters[DEFAULT_CLUSTER].seeds.len(), 2);
    assert_eq!(config.clusters[DEFAULT_CLUSTER].connections_per_node, 1);
}

#[test]
fn layers_apply_file_then_environment_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:1\"\nmax_pipeline = 7\n[clusters.default]\nseeds = [\"a:1\"]\n",
    )
    .unwrap();
    let vars = env(&[
        ("RESPGATE_SERVER__MAX_PIPELINE", "9"),
        ("RESPGATE_SERVER__LISTEN", "127.0.0.1:2"),
        ("RESPGATE_CLUSTERS__DEFAULT__SEEDS", "b:1,c:2"),
    ]);
    let overrides = Overrides {
        listen: Some("127.0.0.1:3".into()),
        ..Overrides::default()
    };
    let config = Config::load_from(Some(&path), &vars, &overrides).unwrap();
    assert_eq!(config.server.max_pipeline, 9);
    assert_eq!(config.server.listen, "127.0.0.1:3");
    assert_eq!(config.clusters[DEFAULT_CLUSTER].seeds, ["b:1", "c:2"]);
}

#[test]
fn string_variables_without_a_list_variable_stay_strings() {
    let vars = env(&[
        ("RESPGATE_SERVER__PASSWORD", "a,b"),
        ("RESPGATE_BACKENDS__DEFAULT__PASSWORD", "secret"),
    ]);
    let overrides = Overrides {
        seeds: Some(vec!["a:1".into()]),
        ..Overrides::default()
    };
    let config = Config::load_from(None, &vars, &overrides).unwrap();
    assert_eq!(config.server.password.expose(), b"a,b");
    assert_eq!(config.backends[DEFAULT_CLUSTER].password, "secret");
}

#[test]
fn variables_that_are_not_config_keys_are_ignored() {
    let vars = env(&[
        ("RESPGATE_SERVICE_HOST", "10.0.0.1"),
        ("RESPGATE_PORT", "tcp://10.0.0.1:6379"),
        ("RESPGATE_PORT_6379_TCP_ADDR", "10.0.0.1"),
        ("RESPGATE_CLUSTERS__DEFAULT__SEEDS", "a:1"),
    ]);
    let config = Config::load_from(None, &vars, &Overrides::default()).unwrap();
    assert_eq!(config.clusters[DEFAULT_CLUSTER].seeds, ["a:1"]);
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let mut config = Config::default();
    config.server.listen = "nowhere".into();
    config.clusters.insert(
        "default".into(),
        BackendConfig {
            seeds: vec!["nohost".into()],
            request_timeout_ms: 0,
            ..BackendConfig::default()
        },
    );
    let keys: Vec<String> = config.validate().into_iter().map(|p| p.key).collect();
    assert_eq!(
        keys,
        [
            "server.listen",
            "clusters.default.seeds",
            "clusters.default.request_timeout_ms"
        ]
    );
}

#[test]
fn max_request_bytes_defaults_to_a_gibibyte_and_must_be_positive() {
    assert_eq!(ServerConfig::default().max_request_bytes, 1 << 30);
    let mut config = Config::default();
    config.server.max_request_bytes = 0;
    let keys: Vec<String> = config.validate().into_iter().map(|p| p.key).collect();
    assert!(
        keys.contains(&"server.max_request_bytes".to_string()),
        "{keys:?}"
    );
}

#[test]
fn backends_take_seeds_and_routing_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[backends.main]\nseeds = [\"x:1\"]\n[backends.archive]\nkind = \"cluster\"\nseeds = [\"y:1\"]\n",
    )
    .unwrap();
    let vars = env(&[
        ("RESPGATE_BACKENDS__MAIN__SEEDS", "a:1,b:2"),
        ("RESPGATE_BACKENDS__ARCHIVE__READ_FROM", "replica"),
        ("RESPGATE_ROUTING__DEFAULT", "main"),
    ]);
    let config = Config::load_from(Some(&path), &vars, &Overrides::default()).unwrap();
    assert_eq!(config.backends["main"].seeds, ["a:1", "b:2"]);
    assert_eq!(config.backends["archive"].read_from, ReadFrom::Replica);
    assert_eq!(config.backends["archive"].kind, BackendKind::Cluster);
    assert_eq!(config.routing.default, "main");
    assert_eq!(config.deprecations(), []);
}

#[test]
fn the_cluster_flag_seeds_the_default_backend_where_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[backends.default]\nmax_retries = 3\n").unwrap();
    let overrides = Overrides {
        seeds: Some(vec!["a:1".into()]),
        ..Overrides::default()
    };
    let config = Config::load_from(Some(&path), &[], &overrides).unwrap();
    assert!(config.clusters.is_empty());
    assert_eq!(config.backends[DEFAULT_CLUSTER].seeds, ["a:1"]);
    assert_eq!(config.backends[DEFAULT_CLUSTER].max_retries, 3);
}

#[test]
fn the_clusters_spelling_still_loads_with_a_note() {
    let vars = env(&[("RESPGATE_CLUSTERS__DEFAULT__SEEDS", "a:1")]);
    let config = Config::load_from(None, &vars, &Overrides::default()).unwrap();
    let notes = config.deprecations();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].key, "clusters.default");
    assert!(notes[0].message.contains("[backends.default]"), "{notes:?}");
}

#[test]
fn log_level_takes_a_level_or_filter_directives() {
    let mut config = Config::default();
    config.clusters.insert(
        "default".into(),
        BackendConfig {
            seeds: vec!["a:1".into()],
            ..BackendConfig::default()
        },
    );
    for good in ["warn", "info,respgate::cluster=debug"] {
        config.log.level = good.into();
        assert_eq!(config.validate(), [], "{good}");
    }
    config.log.level = "respgate=loud".into();
    let keys: Vec<String> = config.validate().into_iter().map(|p| p.key).collect();
    assert_eq!(keys, ["log.level"]);
}

#[test]
fn unknown_keys_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[server]\nlisten_on = \"x\"\n").unwrap();
    let err = Config::load_from(Some(&path), &[], &Overrides::default()).unwrap_err();
    assert!(err.to_string().contains("listen_on"), "{err}");
}

#[test]
fn an_admin_token_file_that_cannot_be_read_or_is_empty_is_a_problem() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let problems_with = |file: String| {
        let mut config = Config::default();
        config.server.admin_token_file = file;
        config
            .validate()
            .into_iter()
            .filter(|p| p.key == "server.admin_token_file")
            .map(|p| p.message)
            .collect::<Vec<_>>()
    };
    let missing = problems_with("/nonexistent/admin-token".into());
    assert!(
        missing.len() == 1 && missing[0].contains("cannot read"),
        "{missing:?}"
    );
    let blank = problems_with(empty.display().to_string());
    assert!(
        blank.len() == 1 && blank[0].contains("holds no token"),
        "{blank:?}"
    );
    let good = dir.path().join("token");
    std::fs::write(&good, "a-token-long-enough\n").unwrap();
    assert!(problems_with(good.display().to_string()).is_empty());
}
