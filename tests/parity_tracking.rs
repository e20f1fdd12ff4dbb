//! `CLIENT TRACKING`, `CACHING`, `GETREDIR` and `TRACKINGINFO` compared byte for byte with a
//! single `redis-server`, for a client whose tracking is off: every bad input gets Redis's own
//! error, `OFF` succeeds, and the two read-only subcommands say tracking is off (RESP2 and
//! RESP3). A valid `ON` is the one difference (the README names it): the proxy refuses it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::proxy::{Proxy, Raw, config_with, standalone_backend};
use common::sentinel::StandaloneServer;

/// What Redis or the proxy at `port` answers to each command, labelled.
fn transcript(port: u16) -> Vec<String> {
    let mut raw = Raw::connect(port);
    let own_id = String::from_utf8_lossy(&raw.command(&["CLIENT", "ID"]))
        .trim_start_matches(':')
        .trim()
        .to_owned();
    let mut seen = Vec::new();
    let mut run = |raw: &mut Raw, args: &[&str]| {
        let reply = String::from_utf8_lossy(&raw.command(args)).into_owned();
        // The client's own id differs between the two: labelled by what it is.
        let label: Vec<&str> = args
            .iter()
            .map(|a| if *a == own_id { "OWN-ID" } else { a })
            .collect();
        seen.push(format!("{} -> {reply}", label.join(" ")));
    };
    for args in [
        &["CLIENT", "TRACKING"][..],
        &["CLIENT", "TRACKING", "maybe"],
        &["CLIENT", "TRACKING", "on", "sometimes"],
        &["CLIENT", "TRACKING", "on", "REDIRECT"],
        &["CLIENT", "TRACKING", "on", "REDIRECT", "abc"],
        &["CLIENT", "TRACKING", "on", "REDIRECT", "987654321"],
        &[
            "CLIENT", "TRACKING", "on", "REDIRECT", &own_id, "REDIRECT", &own_id,
        ],
        &["CLIENT", "TRACKING", "on", "PREFIX"],
        &["CLIENT", "TRACKING", "on", "PREFIX", "user:"],
        &["CLIENT", "TRACKING", "on", "BCAST", "OPTIN"],
        &["CLIENT", "TRACKING", "on", "OPTIN", "OPTOUT"],
        &[
            "CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "a", "PREFIX", "ab",
        ],
        &["CLIENT", "TRACKING", "off"],
        &["CLIENT", "TRACKING", "OFF", "BCAST", "NOLOOP"],
        &["CLIENT", "TRACKING", "off", "bogus"],
        &["CLIENT", "CACHING"],
        &["CLIENT", "CACHING", "yes"],
        &["CLIENT", "CACHING", "maybe"],
        &["CLIENT", "GETREDIR"],
        &["CLIENT", "GETREDIR", "x"],
        &["CLIENT", "TRACKINGINFO"],
        &["CLIENT", "TRACKINGINFO", "x"],
    ] {
        run(&mut raw, args);
    }
    let mut resp3 = Raw::connect(port);
    resp3.command(&["HELLO", "3"]);
    run(&mut resp3, &["CLIENT", "TRACKINGINFO"]);
    run(&mut resp3, &["CLIENT", "GETREDIR"]);
    seen
}

#[test]
fn tracking_subcommands_answer_as_redis_with_tracking_off() {
    let redis = StandaloneServer::start();
    let expected = transcript(redis.port);

    let backend = StandaloneServer::start();
    let config = config_with(vec![("solo", standalone_backend(backend.address()))]);
    let proxy = Proxy::start_with(config);
    proxy.wait_until_serving();
    let seen = transcript(proxy.port);
    assert_eq!(seen, expected);

    // A valid ON is refused, in the proxy's words.
    let mut raw = Raw::connect(proxy.port);
    let on = String::from_utf8_lossy(&raw.command(&["CLIENT", "TRACKING", "on"])).into_owned();
    assert!(
        on.starts_with("-ERR respgate: CLIENT TRACKING ON is not supported"),
        "{on}"
    );
}
