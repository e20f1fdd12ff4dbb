//! The proxy's users: logging in (`AUTH`, `HELLO 3 AUTH`, rotation, passwords from files and
//! the environment), and what each may run, touch and reach: commands by name and category,
//! key patterns (in a split `MGET` and inside `MULTI` too), channels and backends. Refusals are
//! compared byte for byte with a Redis node's refusal of the same request by the same ACL user.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::RedisCluster;
use common::proxy::{Proxy, Raw, cluster_backend, config_for, config_with};
use common::sentinel::StandaloneServer;
use respgate::config::{BackendConfig, BackendKind, RouteConfig, UserConfig};

const ADMIN_PW: &str = "admin-secret-1";
const APP_OLD: &str = "app-old-secret";
const APP_NEW: &str = "app-new-secret";
const READER_PW: &str = "reader-file-secret";

fn text(reply: Vec<u8>) -> String {
    String::from_utf8_lossy(&reply).into_owned()
}

fn command(raw: &mut Raw, args: &[&str]) -> String {
    text(raw.command(args))
}

/// The `app` user's rules, as the proxy's config writes them and as `ACL SETUSER` takes them.
const APP_COMMANDS: &str = "+@all -@dangerous +config|get";
const APP_KEYS: [&str; 2] = ["~app:*", "%R~shared:*"];
const APP_CHANNELS: [&str; 1] = ["&news.*"];

fn app_user() -> UserConfig {
    UserConfig {
        passwords: vec![APP_OLD.into(), APP_NEW.into()],
        commands: APP_COMMANDS.into(),
        keys: APP_KEYS.iter().map(|k| k.to_string()).collect(),
        channels: APP_CHANNELS.iter().map(|c| c.to_string()).collect(),
        ..UserConfig::default()
    }
}

/// Waits until the proxy serves every slot, logging in as `user`.
fn wait_serving(proxy: &Proxy, user: &str, password: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut raw = proxy.raw();
        if command(&mut raw, &["AUTH", user, password]) == "+OK\r\n"
            && command(&mut raw, &["INFO", "proxy"]).contains("slots_served=16384")
            && command(&mut raw, &["EXISTS", "app:probe"]) == ":0\r\n"
        {
            return;
        }
        assert!(Instant::now() < deadline, "proxy never served");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A proxy in front of `cluster` with the default user's password, `app`, a read-only user
/// whose password is in a file, and a disabled user.
fn proxy(cluster: &RedisCluster, dir: &tempfile::TempDir) -> Proxy {
    let mut config = config_for(&cluster.seeds());
    config.server.password = ADMIN_PW.into();
    config.users.insert("app".into(), app_user());
    let file = dir.path().join("reader-password");
    std::fs::write(&file, format!("{READER_PW}\n")).unwrap();
    config.users.insert(
        "reader".into(),
        UserConfig {
            password_file: vec![file.display().to_string()],
            commands: "+@read +ping".into(),
            keys: vec!["allkeys".into()],
            ..UserConfig::default()
        },
    );
    config.users.insert(
        "off".into(),
        UserConfig {
            enabled: false,
            passwords: vec!["off-pw".into()],
            commands: "+@all".into(),
            ..UserConfig::default()
        },
    );
    let proxy = Proxy::start_with(config);
    wait_serving(&proxy, "default", ADMIN_PW);
    proxy
}

/// Logs in as `user`.
fn login(proxy: &Proxy, user: &str, password: &str) -> Raw {
    let mut raw = proxy.raw();
    assert_eq!(command(&mut raw, &["AUTH", user, password]), "+OK\r\n");
    raw
}

const WRONGPASS: &str = "-WRONGPASS invalid username-password pair or user is disabled.\r\n";

#[test]
fn users_log_in_with_auth_or_hello_and_any_of_their_passwords() {
    let cluster = RedisCluster::start(3, 0);
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy(&cluster, &dir);

    let mut raw = proxy.raw();
    assert_eq!(
        command(&mut raw, &["GET", "app:1"]),
        "-NOAUTH Authentication required.\r\n"
    );
    // Both passwords of a rotation log in.
    assert_eq!(command(&mut raw, &["AUTH", "app", APP_OLD]), "+OK\r\n");
    assert_eq!(command(&mut raw, &["ACL", "WHOAMI"]), "$3\r\napp\r\n");
    assert_eq!(command(&mut raw, &["AUTH", "app", APP_NEW]), "+OK\r\n");
    // A failed AUTH leaves the client logged in as it was, as in Redis.
    assert_eq!(command(&mut raw, &["AUTH", "app", "wrong"]), WRONGPASS);
    assert_eq!(command(&mut raw, &["ACL", "WHOAMI"]), "$3\r\napp\r\n");
    // One-argument AUTH is the default user's.
    assert_eq!(command(&mut raw, &["AUTH", ADMIN_PW]), "+OK\r\n");
    assert_eq!(command(&mut raw, &["ACL", "WHOAMI"]), "$7\r\ndefault\r\n");

    // HELLO 3 AUTH, as Lettuce and redis-py send it.
    let mut hello = proxy.raw();
    let reply = command(&mut hello, &["HELLO", "3", "AUTH", "reader", READER_PW]);
    assert!(reply.starts_with('%'), "{reply}");
    // ACL WHOAMI is a command like any other (@slow): not in reader's rules, as in Redis.
    assert_eq!(
        command(&mut hello, &["ACL", "WHOAMI"]),
        "-NOPERM this user has no permissions to run the 'acl|whoami' command\r\n"
    );
    let mut refused = proxy.raw();
    assert_eq!(
        command(&mut refused, &["HELLO", "3", "AUTH", "reader", "nope"]),
        WRONGPASS
    );
    assert!(command(&mut refused, &["PING"]).starts_with("-NOAUTH"));

    // Unknown and disabled users are refused alike.
    assert_eq!(command(&mut refused, &["AUTH", "nobody", "x"]), WRONGPASS);
    assert_eq!(command(&mut refused, &["AUTH", "off", "off-pw"]), WRONGPASS);

    // The failures are counted; CLIENT LIST names users; no password shows anywhere.
    let mut admin = login(&proxy, "default", ADMIN_PW);
    let info = command(&mut admin, &["INFO"]);
    assert!(info.contains("acl_access_denied_auth:4\r\n"), "{info}");
    let list = command(&mut admin, &["CLIENT", "LIST"]);
    assert!(list.contains(" user=reader "), "{list}");
    assert!(list.contains(" user=default "), "{list}");
    for secret in [ADMIN_PW, APP_OLD, APP_NEW, READER_PW, "off-pw"] {
        assert!(!info.contains(secret), "INFO shows a password");
        assert!(!list.contains(secret), "CLIENT LIST shows a password");
    }
    let users = command(&mut admin, &["ACL", "USERS"]);
    assert_eq!(
        users,
        "*4\r\n$3\r\napp\r\n$7\r\ndefault\r\n$3\r\noff\r\n$6\r\nreader\r\n"
    );
    assert!(
        command(&mut admin, &["ACL", "SETUSER", "x", "on"])
            .starts_with("-ERR respgate: ACL SETUSER is not supported"),
    );
    assert_eq!(
        command(&mut admin, &["ACL", "NOPE"]),
        "-ERR unknown subcommand 'NOPE'. Try ACL HELP.\r\n"
    );
    assert!(command(&mut admin, &["ACL", "CAT"]).starts_with("*21\r\n$8\r\nkeyspace\r\n"));
    let dangerous = command(&mut admin, &["ACL", "CAT", "dangerous"]);
    assert!(dangerous.contains("$8\r\nflushall\r\n"), "{dangerous}");
    assert!(dangerous.contains("$10\r\nconfig|set\r\n"), "{dangerous}");
    assert_eq!(
        command(&mut admin, &["ACL", "CAT", "nope"]),
        "-ERR Unknown category 'nope'\r\n"
    );
}

/// Sends `args` as `user` to a node of `cluster` that has the same user (made with `ACL
/// SETUSER`): Redis checks permissions before it redirects, so its refusal is comparable.
fn redis_reply(port: u16, user: &str, password: &str, args: &[&str]) -> String {
    let mut raw = Raw::connect(port);
    assert_eq!(command(&mut raw, &["AUTH", user, password]), "+OK\r\n");
    command(&mut raw, args)
}

#[test]
fn commands_keys_and_channels_are_refused_as_redis_refuses_them() {
    let cluster = RedisCluster::start(3, 0);
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy(&cluster, &dir);
    // The same user on one node, for Redis's own replies.
    let node = cluster.master_ports()[0];
    let mut setuser = vec!["ACL", "SETUSER", "app", "on", ">pw"];
    setuser.extend(APP_COMMANDS.split(' '));
    setuser.extend(APP_KEYS);
    setuser.extend(APP_CHANNELS);
    cluster.cli(node, &setuser);

    let mut app = login(&proxy, "app", APP_OLD);
    let refused: &[&[&str]] = &[
        &["FLUSHALL"],
        &["CONFIG", "SET", "maxmemory", "0"],
        &["GET", "other"],
        &["SET", "shared:1", "x"],
        &["MGET", "app:1", "app:2", "other"],
        &["MSET", "app:{x}1", "1", "other", "2"],
        &["DEL", "app:1", "other"],
        &["PUBLISH", "sport", "hi"],
        &["SUBSCRIBE", "news.1", "sport"],
        &["PSUBSCRIBE", "news.1*"],
        &["KEYS", "*"],
    ];
    for args in refused {
        let ours = command(&mut app, args);
        assert!(ours.starts_with("-NOPERM"), "{args:?}: {ours}");
        assert_eq!(ours, redis_reply(node, "app", "pw", args), "{args:?}");
    }
    // What the rules allow goes through.
    assert_eq!(command(&mut app, &["SET", "app:1", "one"]), "+OK\r\n");
    assert_eq!(command(&mut app, &["GET", "shared:1"]), "$-1\r\n");
    assert!(command(&mut app, &["CONFIG", "GET", "maxmemory"]).starts_with("*2\r\n"));
    assert_eq!(command(&mut app, &["PUBLISH", "news.1", "hi"]), ":0\r\n");
    assert_eq!(
        command(&mut app, &["MGET", "app:1", "app:2", "app:3"]),
        "*3\r\n$3\r\none\r\n$-1\r\n$-1\r\n"
    );

    // A split MSET with one forbidden key runs no part: app:{x}1 was not set.
    assert_eq!(command(&mut app, &["EXISTS", "app:{x}1"]), ":0\r\n");

    // Inside MULTI, a forbidden command is refused when queued and EXEC aborts, as in Redis.
    let mut expected = Raw::connect(node);
    command(&mut expected, &["AUTH", "app", "pw"]);
    for raw in [&mut app, &mut expected] {
        assert_eq!(command(raw, &["MULTI"]), "+OK\r\n");
        // A key of the node's own slots, so that Redis queues it rather than redirecting.
        assert!(
            command(raw, &["GET", "other"])
                .starts_with("-NOPERM this user has no permissions to access one of the keys")
        );
        assert!(
            command(raw, &["FLUSHALL"])
                .starts_with("-NOPERM this user has no permissions to run the 'flushall'")
        );
        assert_eq!(
            command(raw, &["EXEC"]),
            "-EXECABORT Transaction discarded because of previous errors.\r\n"
        );
    }
    assert_eq!(command(&mut app, &["MULTI"]), "+OK\r\n");
    assert_eq!(command(&mut app, &["SET", "app:1", "two"]), "+QUEUED\r\n");
    assert!(command(&mut app, &["SET", "other", "x"]).starts_with("-NOPERM"));
    assert!(command(&mut app, &["EXEC"]).starts_with("-EXECABORT"));
    assert_eq!(
        command(&mut app, &["GET", "app:1"]),
        "$3\r\none\r\n",
        "nothing ran"
    );

    // A subscription to an allowed channel works.
    let mut sub = login(&proxy, "app", APP_NEW);
    assert!(command(&mut sub, &["SUBSCRIBE", "news.1"]).contains("news.1"));

    // The read-only user: writes are refused by category, PING by name is allowed.
    let mut reader = login(&proxy, "reader", READER_PW);
    assert_eq!(command(&mut reader, &["GET", "app:1"]), "$3\r\none\r\n");
    assert_eq!(command(&mut reader, &["PING"]), "+PONG\r\n");
    assert_eq!(
        command(&mut reader, &["SET", "app:1", "x"]),
        "-NOPERM this user has no permissions to run the 'set' command\r\n"
    );
    assert_eq!(
        command(&mut reader, &["CLIENT", "SETNAME", "x"]),
        "-NOPERM this user has no permissions to run the 'client|setname' command\r\n"
    );
    // INFO counts the refusals as Redis does.
    let mut admin = login(&proxy, "default", ADMIN_PW);
    let info = command(&mut admin, &["INFO", "stats"]);
    assert!(!info.contains("acl_access_denied_cmd:0"), "{info}");
    assert!(!info.contains("acl_access_denied_key:0"), "{info}");
    assert!(!info.contains("acl_access_denied_channel:0"), "{info}");
}

#[test]
fn users_reach_only_their_backends() {
    let main = RedisCluster::start(3, 0);
    let archive = StandaloneServer::start();
    let mut config = config_with(vec![
        ("main", cluster_backend(&main.seeds())),
        (
            "archive",
            BackendConfig {
                kind: BackendKind::Standalone,
                address: archive.address(),
                request_timeout_ms: 2000,
                ..BackendConfig::default()
            },
        ),
    ]);
    config.routing.routes.push(RouteConfig {
        prefix: "archive:".into(),
        backend: "archive".into(),
        ..RouteConfig::default()
    });
    let every = |backends: &[&str]| UserConfig {
        passwords: vec!["pw".into()],
        commands: "+@all".into(),
        keys: vec!["allkeys".into()],
        channels: vec!["allchannels".into()],
        backends: backends.iter().map(|b| b.to_string()).collect(),
        ..UserConfig::default()
    };
    config.users.insert("arch".into(), every(&["archive"]));
    config.users.insert("all".into(), every(&[]));
    let proxy = Proxy::start_with(config);
    wait_serving(&proxy, "all", "pw");

    let mut arch = login(&proxy, "arch", "pw");
    assert_eq!(command(&mut arch, &["SET", "archive:1", "a"]), "+OK\r\n");
    assert_eq!(archive.cli(&["GET", "archive:1"]), "a");
    let key_refusal =
        "-NOPERM this user has no permissions to access one of the keys used as arguments\r\n";
    assert_eq!(command(&mut arch, &["SET", "main:1", "m"]), key_refusal);
    // A split across the two backends is refused whole: archive:2 is not written.
    assert_eq!(
        command(&mut arch, &["MSET", "archive:2", "a", "main:2", "m"]),
        key_refusal
    );
    assert_eq!(archive.cli(&["EXISTS", "archive:2"]), "0");
    // Inside MULTI too.
    assert_eq!(command(&mut arch, &["MULTI"]), "+OK\r\n");
    assert_eq!(command(&mut arch, &["GET", "main:1"]), key_refusal);
    assert!(command(&mut arch, &["EXEC"]).starts_with("-EXECABORT"));
    // Commands for every master reach the main backend too.
    assert_eq!(
        command(&mut arch, &["DBSIZE"]),
        "-NOPERM this user has no permissions to access one of the backends the command reaches\r\n"
    );
    // A user of every backend reaches both.
    let mut all = login(&proxy, "all", "pw");
    assert_eq!(
        command(&mut all, &["MSET", "archive:3", "a", "main:3", "m"]),
        "+OK\r\n"
    );
    assert!(command(&mut all, &["DBSIZE"]).starts_with(':'));
}

/// A `respgate` process with `toml` (listening on `port`) and `env`, killed on drop.
struct ProxyProcess {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn passwords_from_the_environment_and_files_log_in_and_never_reach_the_log() {
    let cluster = RedisCluster::start(3, 0);
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let file = dir.path().join("pw");
    std::fs::write(&file, "file-secret-1\nfile-secret-2\n").unwrap();
    let seeds: Vec<String> = cluster.seeds().iter().map(|s| format!("{s:?}")).collect();
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nthreads = 1\n\
         [backends.default]\nseeds = [{}]\nrequest_timeout_ms = 2000\nrefresh_interval_ms = 1000\n\
         [users.app]\npassword_env = \"RESPGATE_TEST_APP_PW\"\npassword_file = {:?}\n\
         commands = \"+@all\"\nkeys = [\"allkeys\"]\n",
        seeds.join(", "),
        file.display().to_string(),
    );
    let config = dir.path().join("respgate.toml");
    std::fs::write(&config, &toml).unwrap();
    let log = dir.path().join("respgate.log");
    let child = Command::new(env!("CARGO_BIN_EXE_respgate"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "debug")
        .env("RESPGATE_TEST_APP_PW", "env-secret-1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start respgate");
    let process = ProxyProcess { child, log };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut raw = loop {
        if let Ok(stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            drop(stream);
            let mut raw = Raw::connect(port);
            if command(&mut raw, &["AUTH", "app", "env-secret-1"]) == "+OK\r\n"
                && command(&mut raw, &["GET", "probe"]) == "$-1\r\n"
            {
                break raw;
            }
        }
        assert!(Instant::now() < deadline, "respgate never served");
        std::thread::sleep(Duration::from_millis(100));
    };
    for password in ["file-secret-1", "file-secret-2"] {
        assert_eq!(command(&mut raw, &["AUTH", "app", password]), "+OK\r\n");
    }
    assert_eq!(
        command(&mut raw, &["AUTH", "app", "wrong-guess-1"]),
        WRONGPASS
    );
    // The failure is logged with the user and the client's address, and without the password.
    let deadline = Instant::now() + Duration::from_secs(10);
    let logged = loop {
        let logged = std::fs::read_to_string(&process.log).unwrap();
        if logged.contains("authentication failed") || Instant::now() > deadline {
            break logged;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let line = logged
        .lines()
        .find(|l| l.contains("authentication failed"))
        .unwrap_or_else(|| panic!("no log line for the failed AUTH:\n{logged}"));
    assert!(line.contains("\"app\""), "{line}");
    assert!(line.contains("127.0.0.1:"), "{line}");
    // A client guessing as fast as it can send gets a log line a second at most, not one per
    // guess: 500 guesses pipelined, then a correct AUTH to know they were all answered.
    let guesses: Vec<u8> = (0..500)
        .flat_map(|i| {
            let guess = format!("guess-{i}");
            format!(
                "*3\r\n$4\r\nAUTH\r\n$3\r\napp\r\n${}\r\n{guess}\r\n",
                guess.len()
            )
            .into_bytes()
        })
        .collect();
    raw.send(&guesses);
    for _ in 0..500 {
        assert_eq!(text(raw.reply()), WRONGPASS);
    }
    assert_eq!(
        command(&mut raw, &["AUTH", "app", "file-secret-1"]),
        "+OK\r\n"
    );
    std::thread::sleep(Duration::from_millis(200));
    let logged = std::fs::read_to_string(&process.log).unwrap();
    let lines = logged.matches("authentication failed").count();
    assert!(
        (1..50).contains(&lines),
        "{lines} log lines for 501 failed logins:\n{logged}"
    );
    for secret in [
        "env-secret-1",
        "file-secret-1",
        "file-secret-2",
        "wrong-guess-1",
    ] {
        assert!(
            !logged.contains(secret),
            "the log shows a password:\n{logged}"
        );
    }
}

#[test]
fn a_proxy_without_users_costs_clients_no_login() {
    // Backward compatibility: no [users] and no server.password, every client is `default`.
    let cluster = RedisCluster::start(3, 0);
    let proxy = Proxy::start(&cluster.seeds());
    let mut raw = proxy.raw();
    assert_eq!(command(&mut raw, &["ACL", "WHOAMI"]), "$7\r\ndefault\r\n");
    assert_eq!(command(&mut raw, &["SET", "k", "v"]), "+OK\r\n");
    assert_eq!(
        command(&mut raw, &["AUTH", "x"]),
        "-ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?\r\n"
    );
    assert_eq!(
        command(&mut raw, &["AUTH", "default", "anything"]),
        "+OK\r\n"
    );
}

#[test]
fn a_restricted_users_scripts_keep_its_rights_on_a_replica_promoted_by_failover() {
    let cluster = RedisCluster::start(3, 1);
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy(&cluster, &dir);
    let master = cluster.slot_owner(respgate::slot::Slot::for_key(b"{t}").get());
    cluster.cli(master, &["SET", "other{t}", "secret"]);
    let mut app = login(&proxy, "app", APP_OLD);
    let read = |app: &mut Raw, key: &str| {
        command(
            app,
            &[
                "EVAL",
                "return redis.call('get', ARGV[1])",
                "1",
                "app:{t}",
                key,
            ],
        )
    };
    let denied = "-ERR The user executing the script can't access at least one of the keys mentioned in the command arguments script: ";
    assert!(read(&mut app, "other{t}").starts_with(denied));
    assert_eq!(command(&mut app, &["SET", "app:{t}", "mine"]), "+OK\r\n");
    assert_eq!(read(&mut app, "app:{t}"), "$4\r\nmine\r\n");

    // The replica never saw the twin; once promoted, the first login there makes it.
    let replica = cluster.replica_of(master);
    let twins = |port| {
        cluster
            .cli(port, &["ACL", "USERS"])
            .lines()
            .filter(|u| u.starts_with("respgate:app:"))
            .count()
    };
    assert_eq!(twins(master), 1);
    assert_eq!(twins(replica), 0);
    cluster.cli(replica, &["CLUSTER", "FAILOVER"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cluster.cli(replica, &["ROLE"]).starts_with("master") {
        assert!(
            Instant::now() < deadline,
            "replica {replica} never promoted"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    cluster.wait_for_ok();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // The first script after may find its connection to the old master gone.
        let reply = read(&mut app, "app:{t}");
        if reply == "$4\r\nmine\r\n" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "scripts never served again: {reply}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(read(&mut app, "other{t}").starts_with(denied));
    assert_eq!(twins(replica), 1);
}
