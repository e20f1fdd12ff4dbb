//! `CLIENT TRACKING`, `CACHING`, `GETREDIR` and `TRACKINGINFO` compared byte for byte with a
//! single `redis-server`: every bad input gets Redis's own error, each mode's options are
//! shown as Redis shows them, and a tracking client gets the invalidations Redis sends, in the
//! same order as its replies: for a write by another client, by itself (after its reply, and
//! none with `NOLOOP`), straight on the node, for a read inside `MULTI`, in `BCAST` mode,
//! through a RESP2 `REDIRECT`, and the null of a `FLUSHALL`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::proxy::{Proxy, Raw, config_with, standalone_backend};
use common::sentinel::StandaloneServer;

/// What Redis or the proxy at `port` answers to each command, labelled; `node` is the port of
/// the server behind it (the same for Redis itself).
fn transcript(port: u16, node: u16) -> Vec<String> {
    let mut raw = Raw::connect(port);
    let own_id = String::from_utf8_lossy(&raw.command(&["CLIENT", "ID"]))
        .trim_start_matches(':')
        .trim()
        .to_owned();
    let mut seen = Vec::new();
    let mut run = |raw: &mut Raw, args: &[&str]| {
        let reply = String::from_utf8_lossy(&raw.command(args))
            .replace(&format!(":{own_id}\r\n"), ":OWN-ID\r\n");
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
    for args in [
        &["CLIENT", "TRACKING", "on"][..],
        &["CLIENT", "TRACKINGINFO"],
        &["CLIENT", "GETREDIR"],
        &["CLIENT", "CACHING", "yes"],
        &["CLIENT", "TRACKING", "on", "BCAST"],
        &["CLIENT", "TRACKING", "on", "OPTIN"],
        &["CLIENT", "CACHING", "yes"],
        &["CLIENT", "TRACKINGINFO"],
        &["CLIENT", "CACHING", "no"],
        &["CLIENT", "TRACKING", "on", "OPTOUT"],
        &["CLIENT", "TRACKING", "off"],
        &["CLIENT", "TRACKINGINFO"],
        &[
            "CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "b", "PREFIX", "a", "NOLOOP",
        ],
        &["CLIENT", "TRACKINGINFO"],
        &["CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "ab"],
        &["CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "c"],
        &["CLIENT", "TRACKINGINFO"],
        &["CLIENT", "TRACKING", "on"],
        &["CLIENT", "TRACKING", "off"],
        &["CLIENT", "TRACKING", "on", "REDIRECT", &own_id],
        &["CLIENT", "GETREDIR"],
        &["CLIENT", "TRACKINGINFO"],
        &["CLIENT", "TRACKING", "off"],
    ] {
        run(&mut raw, args);
    }
    let mut resp3 = Raw::connect(port);
    resp3.command(&["HELLO", "3"]);
    run(&mut resp3, &["CLIENT", "TRACKINGINFO"]);
    run(&mut resp3, &["CLIENT", "GETREDIR"]);
    seen.extend(invalidations(port, node));
    seen
}

/// What a tracking client hears of changes, in order with its replies.
fn invalidations(port: u16, node: u16) -> Vec<String> {
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    let mut seen = Vec::new();
    let mut writer = Raw::connect(port);
    let mut direct = Raw::connect(node);
    writer.command(&["DEL", "k1", "k2", "k3", "k4"]);
    let mut tracker = Raw::connect(port);
    tracker.command(&["HELLO", "3"]);
    seen.push(text(tracker.command(&["CLIENT", "TRACKING", "on"])));
    // Another client's write.
    seen.push(text(tracker.command(&["GET", "k1"])));
    writer.command(&["SET", "k1", "v"]);
    seen.push(text(tracker.reply()));
    // A write straight on the node.
    seen.push(text(tracker.command(&["MGET", "k1", "k2"])));
    direct.command(&["SET", "k2", "v"]);
    seen.push(text(tracker.reply()));
    // Its own write: the invalidation follows the reply.
    seen.push(text(tracker.command(&["GET", "k3"])));
    seen.push(text(tracker.command(&["SET", "k3", "v"])));
    seen.push(text(tracker.reply()));
    // Not read again: no invalidation.
    writer.command(&["SET", "k3", "w"]);
    seen.push(text(tracker.command(&["PING"])));
    // A read inside a transaction: tracked at EXEC.
    seen.push(text(tracker.command(&["MULTI"])));
    seen.push(text(tracker.command(&["GET", "k4"])));
    seen.push(text(tracker.command(&["EXEC"])));
    writer.command(&["SET", "k4", "v"]);
    seen.push(text(tracker.reply()));
    // NOLOOP: its own write is not told, another's is.
    seen.push(text(
        tracker.command(&["CLIENT", "TRACKING", "on", "NOLOOP"]),
    ));
    seen.push(text(tracker.command(&["GET", "k1"])));
    seen.push(text(tracker.command(&["SET", "k1", "w"])));
    seen.push(text(tracker.command(&["GET", "k1"])));
    writer.command(&["DEL", "k1"]);
    seen.push(text(tracker.reply()));
    // FLUSHALL: a null, after its reply.
    seen.push(text(tracker.command(&["FLUSHALL"])));
    seen.push(text(tracker.reply()));
    // BCAST: keys under the prefix, read or not.
    let mut bcast = Raw::connect(port);
    bcast.command(&["HELLO", "3"]);
    seen.push(text(bcast.command(&[
        "CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "user:",
    ])));
    writer.command(&["SET", "other", "v"]);
    writer.command(&["SET", "user:1", "v"]);
    seen.push(text(bcast.reply()));
    // RESP2 through REDIRECT, to a client subscribed to __redis__:invalidate.
    let mut listener = Raw::connect(port);
    let listener_id = text(listener.command(&["CLIENT", "ID"]));
    let listener_id = listener_id.trim_start_matches(':').trim().to_owned();
    seen.push(text(
        listener.command(&["SUBSCRIBE", "__redis__:invalidate"]),
    ));
    let mut redirected = Raw::connect(port);
    seen.push(text(redirected.command(&[
        "CLIENT",
        "TRACKING",
        "on",
        "REDIRECT",
        &listener_id,
    ])));
    seen.push(text(redirected.command(&["GET", "k2"])));
    writer.command(&["SET", "k2", "w"]);
    seen.push(text(listener.reply()));
    seen
}

#[test]
fn tracking_replies_and_invalidations_match_redis() {
    let redis = StandaloneServer::start();
    let expected = transcript(redis.port, redis.port);

    let backend = StandaloneServer::start();
    let config = config_with(vec![("solo", standalone_backend(backend.address()))]);
    let proxy = Proxy::start_with(config);
    proxy.wait_until_serving();
    let seen = transcript(proxy.port, backend.port);
    for (seen, expected) in seen.iter().zip(&expected) {
        assert_eq!(seen, expected);
    }
    assert_eq!(seen.len(), expected.len());
}
