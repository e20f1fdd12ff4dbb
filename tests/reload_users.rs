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
