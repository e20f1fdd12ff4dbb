//! Compiling users from the configuration, logging in, and the per-request check.

use bytes::Bytes;

use super::*;
use crate::command::{
    CommandSpec, CommandTable, KeyAccess, KeySpec, Lookup, SearchBegin, SearchKeys,
};
use crate::config::{BackendConfig, RouteConfig, UserConfig};
use crate::keyspace::RouteTable;

fn no_env(_: &str) -> Option<String> {
    None
}

/// Two backends, `main` (the default) and `archive`, which keys under `old:` route to.
fn config(users: &[(&str, UserConfig)]) -> Config {
    let mut config = Config::default();
    for name in ["main", "archive"] {
        config.backends.insert(
            name.into(),
            BackendConfig {
                seeds: vec!["127.0.0.1:7000".into()],
                ..BackendConfig::default()
            },
        );
    }
    config.routing.default = "main".into();
    config.routing.routes.push(RouteConfig {
        prefix: "old:".into(),
        backend: "archive".into(),
        ..RouteConfig::default()
    });
    for (name, user) in users {
        config.users.insert((*name).into(), user.clone());
    }
    config
}

fn user(commands: &str, keys: &[&str]) -> UserConfig {
    UserConfig {
        passwords: vec!["pw".into()],
        commands: commands.into(),
        keys: keys.iter().map(|k| k.to_string()).collect(),
        ..UserConfig::default()
    }
}

fn args(line: &str) -> Vec<Bytes> {
    line.split(' ')
        .map(|s| Bytes::from(s.to_string()))
        .collect()
}

fn key_spec(access: KeyAccess, last_key: i64, key_step: i64) -> KeySpec {
    KeySpec {
        begin: SearchBegin::Index(1),
        find: SearchKeys::Range {
            last_key,
            key_step,
            limit: 0,
        },
        access,
    }
}

/// A small table like Redis 7.0's, with categories and key access flags.
fn table() -> CommandTable {
    let read = KeyAccess {
        read: true,
        ..KeyAccess::default()
    };
    let write = KeyAccess {
        write: true,
        ..KeyAccess::default()
    };
    let spec = |name: &str, cats: &[&str], flags: &[&str], keys: Vec<KeySpec>| CommandSpec {
        name: name.into(),
        arity: -1,
        flags: flags.iter().map(|f| f.to_string()).collect(),
        categories: Categories::from_names(cats.iter().copied()),
        key_specs: keys,
        ..CommandSpec::default()
    };
    let mut config = spec("config", &["@slow"], &[], Vec::new());
    for (sub, cats) in [
        ("get", &["@admin", "@slow", "@dangerous"]),
        ("set", &["@admin", "@slow", "@dangerous"]),
    ] {
        config.subcommands.insert(
            sub.into(),
            spec(&format!("config|{sub}"), cats, &[], Vec::new()),
        );
    }
    CommandTable::new([
        spec(
            "get",
            &["@read", "@string", "@fast"],
            &[],
            vec![key_spec(read, 0, 1)],
        ),
        spec(
            "set",
            &["@write", "@string", "@slow"],
            &[],
            vec![key_spec(write, 0, 1)],
        ),
        spec(
            "mget",
            &["@read", "@string", "@fast"],
            &[],
            vec![key_spec(read, -1, 1)],
        ),
        spec(
            "exists",
            &["@keyspace", "@read", "@fast"],
            &[],
            vec![key_spec(KeyAccess::default(), -1, 1)],
        ),
        spec(
            "flushall",
            &["@keyspace", "@write", "@slow", "@dangerous"],
            &[],
            Vec::new(),
        ),
        spec("publish", &["@pubsub", "@fast"], &[], Vec::new()),
        spec("psubscribe", &["@pubsub", "@slow"], &[], Vec::new()),
        spec("auth", &["@fast", "@connection"], &["no_auth"], Vec::new()),
        spec(
            "randomkey",
            &["@keyspace", "@read", "@slow"],
            &[],
            Vec::new(),
        ),
        config,
    ])
}

/// Compiles `config`, grants a table, and checks `line` for user `name`.
fn check(config: &Config, name: &str, line: &str) -> Result<(), Denial> {
    let users = Users::compile(config, &no_env).unwrap();
    let mut table = table();
    table.grant(&users);
    let routes = RouteTable::from_config(
        config,
        &config
            .backend_list()
            .into_iter()
            .map(|(n, _)| n)
            .collect::<Vec<_>>(),
    );
    let user = users.all().iter().find(|u| u.name == name).unwrap();
    let args = args(line);
    let Lookup::Found(spec) = table.lookup(&args) else {
        panic!("no {line} in the table");
    };
    user.check(spec, &args, &routes, &mut Vec::new())
}

#[test]
fn commands_are_allowed_and_denied_by_name_and_category() {
    let config = config(&[("app", user("+@all -@dangerous +config|get", &["allkeys"]))]);
    assert_eq!(check(&config, "app", "get k"), Ok(()));
    assert_eq!(
        check(&config, "app", "flushall"),
        Err(Denial::Command("flushall".into()))
    );
    assert_eq!(check(&config, "app", "config get x"), Ok(()));
    assert_eq!(
        check(&config, "app", "config set x y"),
        Err(Denial::Command("config|set".into()))
    );
    assert_eq!(
        Denial::Command("config|set".into()).message(),
        "NOPERM this user has no permissions to run the 'config|set' command"
    );
    assert_eq!(
        check(&config, "app", "auth a b"),
        Ok(()),
        "no_auth commands are everyone's"
    );
    let reader = config_with_reader();
    assert_eq!(
        check(&reader, "reader", "set k v"),
        Err(Denial::Command("set".into()))
    );
}

fn config_with_reader() -> Config {
    config(&[("reader", user("+@read", &["~*"]))])
}

#[test]
fn keys_are_checked_one_by_one_with_read_and_write_patterns() {
    let config = config(&[("app", user("+@all", &["~app:*", "%R~shared:*"]))]);
    assert_eq!(check(&config, "app", "get app:1"), Ok(()));
    assert_eq!(check(&config, "app", "get other"), Err(Denial::Key));
    assert_eq!(check(&config, "app", "mget app:1 app:2"), Ok(()));
    assert_eq!(check(&config, "app", "mget app:1 other"), Err(Denial::Key));
    assert_eq!(check(&config, "app", "get shared:1"), Ok(()));
    assert_eq!(check(&config, "app", "set shared:1 v"), Err(Denial::Key));
    // EXISTS neither reads nor writes the value: a read-only pattern is enough, as in Redis.
    assert_eq!(check(&config, "app", "exists shared:1"), Ok(()));
    assert_eq!(
        Denial::Key.message(),
        "NOPERM this user has no permissions to access one of the keys used as arguments"
    );
}

#[test]
fn backends_bound_keys_and_keyless_commands() {
    let mut archive_only = user("+@all", &["allkeys"]);
    archive_only.backends = vec!["archive".into()];
    let config = config(&[("arch", archive_only)]);
    assert_eq!(check(&config, "arch", "get old:1"), Ok(()));
    assert_eq!(check(&config, "arch", "get new:1"), Err(Denial::Key));
    assert_eq!(check(&config, "arch", "mget old:1 new:1"), Err(Denial::Key));
    // Keyless: RANDOMKEY and FLUSHALL reach every backend.
    assert_eq!(check(&config, "arch", "randomkey"), Err(Denial::Backend));
    assert_eq!(check(&config, "arch", "flushall"), Err(Denial::Backend));
    // PUBLISH goes to the channel's backend.
    let mut with_channels = config.clone();
    if let Some(u) = with_channels.users.get_mut("arch") {
        u.channels = vec!["allchannels".into()];
    }
    assert_eq!(check(&with_channels, "arch", "publish old:news x"), Ok(()));
    assert_eq!(
        check(&with_channels, "arch", "publish news x"),
        Err(Denial::Backend)
    );
}

#[test]
fn channels_match_patterns_and_psubscribe_patterns_match_literally() {
    let mut news = user("+@all", &[]);
    news.channels = vec!["&news.*".into()];
    let config = config(&[("news", news)]);
    assert_eq!(check(&config, "news", "publish news.1 x"), Ok(()));
    assert_eq!(
        check(&config, "news", "publish sport x"),
        Err(Denial::Channel)
    );
    assert_eq!(check(&config, "news", "psubscribe news.*"), Ok(()));
    assert_eq!(
        check(&config, "news", "psubscribe news.1*"),
        Err(Denial::Channel),
        "a pattern must be one of the user's as written"
    );
    let none = config_with_reader();
    assert_eq!(
        check(&none, "reader", "publish a x"),
        Err(Denial::Command("publish".into()))
    );
}

#[test]
fn the_default_user_is_open_without_users_and_closed_with_them() {
    let open = Users::compile(&config(&[]), &no_env).unwrap();
    let default = open.at_connect().expect("logged in at connect");
    assert_eq!(default.name, "default");
    assert!(!default.restricted());
    assert!(!open.any_restricted());
    assert_eq!(
        open.login(None, b"x").unwrap_err(),
        LoginError::DefaultHasNoPassword
    );

    let closed = Users::compile(&config(&[("app", user("+@all", &["allkeys"]))]), &no_env).unwrap();
    assert!(
        closed.at_connect().is_none(),
        "users configured: clients must log in"
    );
    assert_eq!(
        closed.login(None, b"pw").unwrap_err(),
        LoginError::WrongPass
    );
    assert_eq!(closed.login(Some(b"app"), b"pw").unwrap().name, "app");

    let mut with_password = config(&[("app", user("+@read", &["~*"]))]);
    with_password.server.password = "s3cret".into();
    let users = Users::compile(&with_password, &no_env).unwrap();
    assert!(users.at_connect().is_none());
    assert_eq!(users.login(None, b"s3cret").unwrap().name, "default");
    assert_eq!(
        users.login(Some(b"default"), b"s3cret").unwrap().name,
        "default"
    );
    assert!(users.any_restricted());
}

#[test]
fn rotation_disabled_users_and_wrong_passwords() {
    let mut rotating = user("+@all", &[]);
    rotating.passwords = vec!["old".into(), "new".into()];
    let mut off = user("+@all", &[]);
    off.enabled = false;
    let users = Users::compile(&config(&[("rot", rotating), ("off", off)]), &no_env).unwrap();
    assert!(users.login(Some(b"rot"), b"old").is_ok());
    assert!(users.login(Some(b"rot"), b"new").is_ok());
    assert_eq!(
        users.login(Some(b"rot"), b"ne").unwrap_err(),
        LoginError::WrongPass
    );
    assert_eq!(
        users.login(Some(b"off"), b"pw").unwrap_err(),
        LoginError::WrongPass
    );
    assert_eq!(
        users.login(Some(b"nobody"), b"pw").unwrap_err(),
        LoginError::WrongPass
    );
}

#[test]
fn every_problem_is_reported_with_its_key_and_no_password() {
    let mut bad = user("+@read +@nope", &["app:*", "%X~y"]);
    bad.passwords = vec!["topsecret".into()];
    bad.password_file = vec!["/nonexistent/respgate-pw".into()];
    bad.channels = vec!["news".into()];
    bad.backends = vec!["nope".into()];
    let mut nopass_too = user("+@all", &[]);
    nopass_too.nopass = true;
    let mut nothing = user("", &[]);
    nothing.passwords.clear();
    let mut with_default = config(&[
        ("bad", bad),
        ("np", nopass_too),
        ("none", nothing),
        ("default", user("", &[])),
    ]);
    with_default.server.password = "s".into();
    let problems = Users::compile(&with_default, &no_env).unwrap_err();
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "users.default",
            "users.bad.password_file",
            "users.bad.commands",
            "users.bad.keys[0]",
            "users.bad.keys[1]",
            "users.bad.channels[0]",
            "users.bad.backends[0]",
            "users.none",
            "users.np.nopass",
        ],
        "{problems:?}"
    );
    let all: String = problems.iter().map(|p| p.to_string()).collect();
    assert!(!all.contains("topsecret"), "{all}");
}

#[test]
fn a_configured_default_user_with_nopass_is_every_new_client() {
    let anonymous = UserConfig {
        nopass: true,
        commands: "+@read".into(),
        keys: vec!["~public:*".into()],
        ..UserConfig::default()
    };
    let users = Users::compile(&config(&[("default", anonymous)]), &no_env).unwrap();
    let at_connect = users.at_connect().expect("anonymous readers");
    assert_eq!(at_connect.name, "default");
    assert!(at_connect.restricted());
    assert_eq!(
        users.login(None, b"x").unwrap_err(),
        LoginError::DefaultHasNoPassword
    );
    assert!(users.login(Some(b"default"), b"anything").is_ok());
}
