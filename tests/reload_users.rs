//! Live reload of users and passwords (`[users.*]`, `server.password`, password files): new
//! logins take the new passwords while clients already logged in keep working under their
//! user's new rules, a removed user's clients are closed as Redis closes those of a deleted
//! user, and `/config` never shows a password.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::proxy::{Raw, admin_request};
use common::reload::{Reloadable, command, eventually, info_field, routing, server, standalone};
use common::sentinel::StandaloneServer;

const WRONGPASS: &str = "-WRONGPASS invalid username-password pair or user is disabled.\r\n";

/// A proxy configuration over one standalone server with `users` (TOML `[users.*]` sections).
fn with_users(admin: u16, main: &StandaloneServer, users: &str) -> String {
    server(admin, 0, "") + &standalone("main", main) + &routing("main", &[]) + users
}

/// A proxy on `text`, once its admin endpoint says it is ready (every client must log in, so
/// the usual probe cannot ask).
fn start(admin: u16, text: &str) -> Reloadable {
    let proxy = Reloadable::start_unready(admin, text);
    eventually(
        "the proxy serves every slot",
        || admin_request(admin, "GET", "/ready").0,
        |status| *status == 200,
    );
    proxy
}

fn logged_in(proxy: &Reloadable, user: &str, password: &str) -> Raw {
    let mut raw = proxy.proxy.raw();
    assert_eq!(command(&mut raw, &["AUTH", user, password]), "+OK\r\n");
    raw
}

fn login_reply(proxy: &Reloadable, user: &str, password: &str) -> String {
    let mut raw = proxy.proxy.raw();
    command(&mut raw, &["AUTH", user, password])
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn passwords_and_users_change_by_reload_while_logged_in_clients_keep_working() {
    let main = StandaloneServer::start();
    let admin = common::free_port();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("reader-password");
    write(&file, "file-old\n");
    let reader = |commands: &str| {
        format!(
            "[users.reader]\npassword_file = {:?}\ncommands = \"{commands}\"\nkeys = [\"allkeys\"]\n",
            file.display().to_string()
        )
    };
    let app = |password: &str| {
        format!(
            "[users.app]\npasswords = [\"{password}\"]\ncommands = \"+@all\"\nkeys = [\"allkeys\"]\n"
        )
    };
    let gone =
        "[users.gone]\npasswords = [\"gone-pw\"]\ncommands = \"+@all\"\nkeys = [\"allkeys\"]\n";
    let first = with_users(
        admin,
        &main,
        &(app("app-old") + &reader("+get +ping") + gone),
    );
    let proxy = start(admin, &first);

    let mut app_client = logged_in(&proxy, "app", "app-old");
    assert_eq!(command(&mut app_client, &["SET", "k", "v1"]), "+OK\r\n");
    let mut reader_client = logged_in(&proxy, "reader", "file-old");
    assert_eq!(
        command(&mut reader_client, &["SET", "k", "x"]),
        "-NOPERM this user has no permissions to run the 'set' command\r\n"
    );
    let mut gone_client = logged_in(&proxy, "gone", "gone-pw");
    assert_eq!(command(&mut gone_client, &["GET", "k"]), "$2\r\nv1\r\n");
    let mut anonymous = proxy.proxy.raw();

    // app's password changes, reader may now write, gone is removed, ops is added.
    let ops = "[users.ops]\npasswords = [\"ops-pw\"]\ncommands = \"+@all\"\nkeys = [\"allkeys\"]\n";
    let second = with_users(
        admin,
        &main,
        &(app("app-new") + &reader("+get +set +ping") + ops),
    );
    let report = proxy.reload_ok(&second);
    assert!(report.contains("reloaded: generation 2"), "{report}");

    // Clients logged in stay so, without logging in again, under their user's new rules.
    assert_eq!(command(&mut app_client, &["GET", "k"]), "$2\r\nv1\r\n");
    assert_eq!(command(&mut app_client, &["SET", "k", "v2"]), "+OK\r\n");
    assert_eq!(command(&mut reader_client, &["SET", "r", "1"]), "+OK\r\n");
    assert_eq!(
        command(&mut app_client, &["ACL", "WHOAMI"]),
        "$3\r\napp\r\n"
    );
    // A client of a removed user is closed, as Redis closes those of a deleted user.
    assert!(
        gone_client.is_closed(),
        "the removed user's client is closed"
    );
    assert_eq!(
        command(&mut anonymous, &["GET", "k"]),
        "-NOAUTH Authentication required.\r\n"
    );
    // New logins take the new passwords and users only.
    assert_eq!(login_reply(&proxy, "app", "app-old"), WRONGPASS);
    assert_eq!(login_reply(&proxy, "gone", "gone-pw"), WRONGPASS);
    let mut app_again = logged_in(&proxy, "app", "app-new");
    assert_eq!(command(&mut app_again, &["GET", "k"]), "$2\r\nv2\r\n");
    let mut ops_client = logged_in(&proxy, "ops", "ops-pw");
    assert_eq!(command(&mut ops_client, &["GET", "r"]), "$1\r\n1\r\n");
    assert_eq!(
        info_field(&mut ops_client, "proxy", "config_generation"),
        "2"
    );

    // A rotated password file is read again by a reload of an unchanged configuration.
    write(&file, "file-new\n");
    let report = proxy.reload_ok(&second);
    assert!(report.contains("reloaded: generation 3"), "{report}");
    assert_eq!(login_reply(&proxy, "reader", "file-old"), WRONGPASS);
    let mut reader_again = logged_in(&proxy, "reader", "file-new");
    assert_eq!(command(&mut reader_again, &["GET", "r"]), "$1\r\n1\r\n");
    assert_eq!(command(&mut reader_client, &["GET", "r"]), "$1\r\n1\r\n");
    assert_eq!(command(&mut app_client, &["PING"]), "+PONG\r\n");

    // No password reaches /config: not the inline ones, not the file's content.
    let (status, shown) = admin_request(admin, "GET", "/config");
    assert_eq!(status, 200, "{shown}");
    for secret in ["app-new", "ops-pw", "file-new"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(
        shown.contains(&file.display().to_string()),
        "the password file's path shows: {shown}"
    );
    assert!(shown.contains("\"<redacted>\""), "{shown}");
}

#[test]
fn a_subscriber_whose_user_loses_its_channel_is_closed_and_others_keep_theirs() {
    let main = StandaloneServer::start();
    let admin = common::free_port();
    let user = |name: &str, channels: &str| {
        format!(
            "[users.{name}]\npasswords = [\"pw\"]\ncommands = \"+@all\"\nkeys = [\"allkeys\"]\nchannels = [{channels}]\n"
        )
    };
    let first = with_users(
        admin,
        &main,
        &(user("news", "\"&news.*\"") + &user("sports", "\"&sports.*\"")),
    );
    let proxy = start(admin, &first);
    let mut news = logged_in(&proxy, "news", "pw");
    assert_eq!(
        news.command(&["SUBSCRIBE", "news.1"]),
        b"*3\r\n$9\r\nsubscribe\r\n$6\r\nnews.1\r\n:1\r\n"
    );
    let mut sports = logged_in(&proxy, "sports", "pw");
    assert_eq!(
        sports.command(&["SUBSCRIBE", "sports.1"]),
        b"*3\r\n$9\r\nsubscribe\r\n$8\r\nsports.1\r\n:1\r\n"
    );

    // news may no longer hold news.*; sports keeps its channels.
    let second = with_users(
        admin,
        &main,
        &(user("news", "\"&weather.*\"") + &user("sports", "\"&sports.*\"")),
    );
    proxy.reload_ok(&second);
    assert!(
        news.is_closed(),
        "Redis closes a subscriber whose channel was revoked"
    );
    let mut publisher = logged_in(&proxy, "sports", "pw");
    assert_eq!(
        command(&mut publisher, &["PUBLISH", "sports.1", "goal"]),
        ":1\r\n"
    );
    assert_eq!(
        sports.reply(),
        b"*3\r\n$7\r\nmessage\r\n$8\r\nsports.1\r\n$4\r\ngoal\r\n"
    );
}

/// `[users.*]` of the tests below: the default user with every right, for the harness, and
/// `name` (password `NAME-pw`), restricted to `+@all -@dangerous` and the key patterns `keys`
/// (TOML list items).
fn restricted_user(name: &str, keys: &str) -> String {
    format!(
        "[users.default]\nnopass = true\ncommands = \"+@all\"\nkeys = [\"allkeys\"]\nchannels = [\"allchannels\"]\n\
         [users.{name}]\npasswords = [\"{name}-pw\"]\ncommands = \"+@all -@dangerous\"\nkeys = [{keys}]\n"
    )
}

/// `EVAL` of a script that reads `key`, undeclared, as the client on `raw`.
fn script_reads(raw: &mut Raw, key: &str) -> String {
    command(
        raw,
        &["EVAL", "return redis.call('get', ARGV[1])", "1", "n:1", key],
    )
}

const SCRIPT_KEY_DENIED: &str = "-ERR The user executing the script can't access at least one of the keys mentioned in the command arguments script: ";

#[test]
fn a_restricted_users_scripts_follow_its_rules_through_a_reload_and_a_node_that_forgot_its_twin() {
    let main = StandaloneServer::start();
    main.cli(&["SET", "x:1", "secret"]);
    let admin = common::free_port();
    let app = |keys: &str| restricted_user("app", keys);
    let proxy = start(admin, &with_users(admin, &main, &app("\"~n:*\"")));
    let mut client = logged_in(&proxy, "app", "app-pw");
    assert!(script_reads(&mut client, "x:1").starts_with(SCRIPT_KEY_DENIED));
    assert_eq!(script_reads(&mut client, "n:1"), "$-1\r\n");
    // Its twin on the node has its rules, under a name of the proxy's.
    let twins = || -> Vec<String> {
        main.cli(&["ACL", "USERS"])
            .lines()
            .filter(|u| u.starts_with("respgate:app:"))
            .map(str::to_string)
            .collect()
    };
    let first = twins();
    assert_eq!(first.len(), 1, "{first:?}");
    let twin = main.cli(&["ACL", "GETUSER", &first[0]]);
    assert!(twin.contains("~n:*"), "{twin}");

    // A reload widens the user's keys: the logged-in client's scripts may read x: now.
    let report = proxy.reload_ok(&with_users(admin, &main, &app("\"~n:*\", \"%R~x:*\"")));
    assert!(report.contains("reloaded"), "{report}");
    assert_eq!(script_reads(&mut client, "x:1"), "$6\r\nsecret\r\n");
    // Under a twin of its own: a proxy still on the old rules keeps the narrow one.
    assert_eq!(twins().len(), 2);
    // ... to read, not to write.
    let write = command(
        &mut client,
        &[
            "EVAL",
            "return redis.call('set', ARGV[1], 'v')",
            "1",
            "n:1",
            "x:1",
        ],
    );
    assert!(write.starts_with(SCRIPT_KEY_DENIED), "{write}");

    // A node that forgot the twin (restarted, replaced) gets it again on the next login. The
    // node closes the twin's connections as it deletes it: the first script after may find
    // its connection gone.
    for twin in twins() {
        main.cli(&["ACL", "DELUSER", &twin]);
    }
    eventually(
        "a script runs as the twin again",
        || script_reads(&mut client, "x:1"),
        |reply| reply == "$6\r\nsecret\r\n",
    );
    assert!(script_reads(&mut client, "y:1").starts_with(SCRIPT_KEY_DENIED));
    // Back to the narrow rules: so is the twin on the node.
    proxy.reload_ok(&with_users(admin, &main, &app("\"~n:*\"")));
    assert!(script_reads(&mut client, "x:1").starts_with(SCRIPT_KEY_DENIED));
}

#[test]
fn a_backend_that_cannot_hold_users_refuses_restricted_scripts_and_serves_the_rest() {
    let main = StandaloneServer::start();
    // The proxy's own user on the node may do everything but manage users.
    main.cli(&[
        "ACL",
        "SETUSER",
        "proxy",
        "on",
        ">proxy-pw",
        "+@all",
        "-acl",
        "~*",
        "&*",
    ]);
    let admin = common::free_port();
    let users = &restricted_user("app", "\"~n:*\"");
    let text = server(admin, 0, "")
        + &standalone("main", &main).replace(
            "request_timeout_ms",
            "username = \"proxy\"\npassword = \"proxy-pw\"\nrequest_timeout_ms",
        )
        + &routing("main", &[])
        + users;
    let proxy = start(admin, &text);
    let mut client = logged_in(&proxy, "app", "app-pw");
    let refused = script_reads(&mut client, "n:2");
    assert!(
        refused.starts_with("-ERR respgate: backend 127.0.0.1:")
            && refused.contains("cannot hold the user \"respgate:app:")
            && refused.contains("that a restricted user's scripts run as (ACL SETUSER: NOPERM")
            && refused.contains("see the README, \"Users and permissions\""),
        "{refused}"
    );
    // Its transactions and blocking commands go on as the backend's user.
    assert_eq!(command(&mut client, &["MULTI"]), "+OK\r\n");
    assert_eq!(command(&mut client, &["SET", "n:1", "v"]), "+QUEUED\r\n");
    assert_eq!(command(&mut client, &["EXEC"]), "*1\r\n+OK\r\n");
    assert_eq!(command(&mut client, &["BLPOP", "n:q", "0.01"]), "*-1\r\n");
    // A transaction holding a script does not run at all.
    assert_eq!(command(&mut client, &["MULTI"]), "+OK\r\n");
    assert_eq!(command(&mut client, &["SET", "n:1", "w"]), "+QUEUED\r\n");
    let queued = script_reads(&mut client, "n:1");
    assert!(queued.contains("cannot hold the user"), "{queued}");
    assert!(command(&mut client, &["EXEC"]).starts_with("-"));
    assert_eq!(command(&mut client, &["GET", "n:1"]), "$1\r\nv\r\n");
    // The default user's scripts keep the shared path.
    let mut default = proxy.proxy.raw();
    assert_eq!(script_reads(&mut default, "n:1"), "$1\r\nv\r\n");
}

#[test]
fn a_reload_ends_a_watch_and_the_old_rights_it_held() {
    let main = StandaloneServer::start();
    main.cli(&["SET", "x:1", "secret"]);
    let admin = common::free_port();
    let user = |keys: &str| restricted_user("p", keys);
    let proxy = start(
        admin,
        &with_users(admin, &main, &user("\"~n:*\", \"~x:*\"")),
    );
    let mut client = logged_in(&proxy, "p", "p-pw");
    assert_eq!(command(&mut client, &["WATCH", "n:a"]), "+OK\r\n");
    assert_eq!(command(&mut client, &["GET", "x:1"]), "$6\r\nsecret\r\n");

    // The rules narrow while the client holds its WATCH: they apply at once.
    proxy.reload_ok(&with_users(admin, &main, &user("\"~n:*\"")));
    eventually(
        "the watching client takes its user's new rules",
        || command(&mut client, &["GET", "x:1"]),
        |reply| reply.starts_with("-NOPERM"),
    );
    // The watch ended with the move: EXEC fails as when a watched key changed.
    assert_eq!(command(&mut client, &["MULTI"]), "+OK\r\n");
    assert_eq!(command(&mut client, &["SET", "n:a", "1"]), "+QUEUED\r\n");
    assert_eq!(command(&mut client, &["EXEC"]), "*-1\r\n");
    assert_eq!(command(&mut client, &["GET", "n:a"]), "$-1\r\n");
    // The next transaction runs.
    assert_eq!(command(&mut client, &["MULTI"]), "+OK\r\n");
    assert_eq!(command(&mut client, &["SET", "n:a", "2"]), "+QUEUED\r\n");
    assert_eq!(command(&mut client, &["EXEC"]), "*1\r\n+OK\r\n");
}

#[test]
fn a_transaction_queued_under_rules_a_reload_changed_is_discarded_at_exec() {
    let main = StandaloneServer::start();
    main.cli(&["SET", "x:1", "secret"]);
    let admin = common::free_port();
    let user = |keys: &str| restricted_user("p", keys);
    let proxy = start(
        admin,
        &with_users(admin, &main, &user("\"~n:*\", \"~x:*\"")),
    );
    let mut client = logged_in(&proxy, "p", "p-pw");
    assert_eq!(command(&mut client, &["MULTI"]), "+OK\r\n");
    assert_eq!(command(&mut client, &["GET", "x:1"]), "+QUEUED\r\n");
    proxy.reload_ok(&with_users(admin, &main, &user("\"~n:*\"")));
    assert_eq!(
        command(&mut client, &["EXEC"]),
        "-EXECABORT Transaction discarded because of: NOPERM ACLs rules changed between the moment the transaction was accumulated and the EXEC call\r\n"
    );
    assert!(command(&mut client, &["GET", "x:1"]).starts_with("-NOPERM"));
    // A reload that leaves the user's rules alone lets its transactions run.
    assert_eq!(command(&mut client, &["MULTI"]), "+OK\r\n");
    assert_eq!(command(&mut client, &["SET", "n:1", "v"]), "+QUEUED\r\n");
    let unchanged = with_users(admin, &main, &user("\"~n:*\"")).replace(
        "[users.default]",
        "[users.other]\npasswords = [\"o-pw\"]\ncommands = \"+@all\"\nkeys = [\"allkeys\"]\n[users.default]",
    );
    proxy.reload_ok(&unchanged);
    assert_eq!(command(&mut client, &["EXEC"]), "*1\r\n+OK\r\n");
}

#[test]
fn a_restricted_users_evalsha_is_healed_on_a_node_that_lost_its_scripts() {
    let main = StandaloneServer::start();
    let admin = common::free_port();
    let users = &restricted_user("app", "\"~n:*\"");
    let proxy = start(admin, &with_users(admin, &main, users));
    let mut client = logged_in(&proxy, "app", "app-pw");
    assert_eq!(command(&mut client, &["SET", "n:1", "v"]), "+OK\r\n");
    let loaded = command(
        &mut client,
        &["SCRIPT", "LOAD", "return redis.call('get', ARGV[1])"],
    );
    let sha = loaded.lines().nth(1).unwrap().to_string();
    let call = |client: &mut Raw, key: &str| command(client, &["EVALSHA", &sha, "1", "n:1", key]);
    assert_eq!(call(&mut client, "n:1"), "$1\r\nv\r\n");
    // The node loses its scripts (a restart, a promoted replica): the proxy loads it again.
    main.cli(&["SCRIPT", "FLUSH"]);
    assert_eq!(call(&mut client, "n:1"), "$1\r\nv\r\n");
    // Still as the user: a key it may not read is refused by the node.
    main.cli(&["SCRIPT", "FLUSH"]);
    assert!(call(&mut client, "x:1").starts_with(SCRIPT_KEY_DENIED));
}
