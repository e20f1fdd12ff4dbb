//! Users loaded from the file and the environment.
use super::*;

#[test]
fn users_load_from_the_file_and_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[backends.main]\nseeds = [\"a:1\"]\n[users.app]\npassword_env = \"APP_PW\"\ncommands = \"+@read\"\nkeys = [\"~app:*\"]\n[users.Admin]\npasswords = [\"x\"]\n",
    )
    .unwrap();
    let vars: Vec<(String, String)> = [
        ("APP_PW", "from-env"),
        ("RESPGATE_USERS__APP__CHANNELS", "&a,&b"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let config = Config::load_from(Some(&path), &vars, &Overrides::default()).unwrap();
    let app = &config.users["app"];
    assert_eq!(app.password_env, ["APP_PW"]);
    assert_eq!(app.channels, ["&a", "&b"]);
    assert_eq!(app.keys, ["~app:*"]);
    // Names keep their case in the file (Redis's user names are case-sensitive).
    assert!(config.users.contains_key("Admin"));
    // Without the variable, compiling the users names it.
    let config = Config::load_from(Some(&path), &[], &Overrides::default()).unwrap();
    let problems = crate::acl::Users::compile(&config, &|_| None).unwrap_err();
    assert!(
        problems
            .iter()
            .any(|p| p.to_string() == "users.app.password_env: $APP_PW is not set"),
        "{problems:?}"
    );
}
