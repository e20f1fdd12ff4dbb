//! The migrations' state store against a real Redis: its scripts' compare-and-set, the one
//! migration per prefix rule, and the replicas' roster.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::cell::RefCell;
use std::future::Future;

use bytes::Bytes;
use common::proxy::Raw;
use common::sentinel::StandaloneServer;
use respgate::migrate::{Exec, Migration, Phase, Store};

/// Commands straight to one server over the harness's RESP client.
struct Direct(RefCell<Raw>);

impl Exec for Direct {
    fn exec(&self, args: Vec<Bytes>) -> impl Future<Output = Bytes> {
        let args: Vec<String> = args
            .iter()
            .map(|a| String::from_utf8(a.to_vec()).unwrap())
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let reply = self.0.borrow_mut().command(&args);
        std::future::ready(Bytes::from(reply))
    }
}

fn migration(id: &str, prefix: &str) -> Migration {
    Migration {
        id: id.into(),
        prefix: prefix.into(),
        slots: None,
        from: "main".into(),
        to: "archive".into(),
        phase: Phase::Preparing,
        version: 0,
        keys_moved: 0,
        bytes_moved: 0,
        error: None,
        ..Migration::default()
    }
}

fn store(server: &StandaloneServer) -> Store<Direct> {
    let port: u16 = server
        .address()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    Store::new(Direct(RefCell::new(Raw::connect(port))))
}

#[tokio::test(flavor = "current_thread")]
async fn one_migration_per_prefix_and_every_change_a_compare_and_set() {
    let server = StandaloneServer::start();
    let store = store(&server);
    assert!(store.migrations().await.unwrap().is_empty());

    let first = migration("m1", "user:");
    assert_eq!(store.create(&first).await.unwrap(), None);
    assert_eq!(store.migrations().await.unwrap(), vec![first.clone()]);
    // The same id, a prefix inside it, a prefix around it: refused, naming m1.
    for (id, prefix) in [("m1", "order:"), ("m2", "user:vip:"), ("m3", "us")] {
        assert_eq!(
            store.create(&migration(id, prefix)).await.unwrap(),
            Some("m1".to_string()),
            "{id} {prefix}"
        );
    }
    assert_eq!(
        store.create(&migration("m4", "order:")).await.unwrap(),
        None
    );

    // Two controllers read version 0; the first write wins, the second sees it changed.
    let holding = Migration {
        phase: Phase::Holding,
        keys_moved: 10,
        ..first.clone()
    };
    assert!(store.update(&first, &holding).await.unwrap());
    let aborting = Migration {
        phase: Phase::Aborted,
        ..first.clone()
    };
    assert!(
        !store.update(&first, &aborting).await.unwrap(),
        "a stale read"
    );
    let stored = store.migrations().await.unwrap();
    let m1 = stored.iter().find(|m| m.id == "m1").unwrap();
    assert_eq!(
        (m1.phase, m1.version, m1.keys_moved),
        (Phase::Holding, 1, 10)
    );

    // Once m1 is over, the prefix may move again.
    let moving = Migration {
        phase: Phase::Moving,
        ..m1.clone()
    };
    assert!(store.update(m1, &moving).await.unwrap());
    let moving = Migration {
        version: 2,
        ..moving
    };
    let verifying = Migration {
        phase: Phase::Verifying,
        ..moving.clone()
    };
    assert!(store.update(&moving, &verifying).await.unwrap());
    let verifying = Migration {
        version: 3,
        ..verifying
    };
    let done = Migration {
        phase: Phase::Done,
        ..verifying.clone()
    };
    assert!(store.update(&verifying, &done).await.unwrap());
    assert_eq!(
        store.create(&migration("m5", "user:vip:")).await.unwrap(),
        None
    );
}

#[tokio::test(flavor = "current_thread")]
async fn replicas_write_their_entries_and_leave_the_roster() {
    let server = StandaloneServer::start();
    let store = store(&server);
    store.beat("proxy-a", "1;m1=holding").await.unwrap();
    store.beat("proxy-b", "1;").await.unwrap();
    store.beat("proxy-a", "2;m1=holding").await.unwrap();
    let mut roster = store.roster().await.unwrap();
    roster.sort();
    assert_eq!(
        roster,
        vec![
            ("proxy-a".to_string(), "2;m1=holding".to_string()),
            ("proxy-b".to_string(), "1;".to_string())
        ]
    );
    store.leave("proxy-b").await.unwrap();
    assert_eq!(store.roster().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn records_that_break_the_rules_are_refused_before_they_are_written() {
    let server = StandaloneServer::start();
    let store = store(&server);
    let late = Migration {
        phase: Phase::Moving,
        ..migration("m1", "user:")
    };
    assert!(
        store.create(&late).await.is_err(),
        "a migration starts holding"
    );
    assert!(
        store.create(&migration("m,1", "user:")).await.is_err(),
        "an id with a comma"
    );
    let first = migration("m1", "user:");
    assert_eq!(store.create(&first).await.unwrap(), None);
    let elsewhere = Migration {
        to: "other".into(),
        ..first.clone()
    };
    assert!(
        store.update(&first, &elsewhere).await.is_err(),
        "the target changed"
    );
    let done = Migration {
        phase: Phase::Done,
        ..first.clone()
    };
    assert!(
        store.update(&first, &done).await.is_err(),
        "holding to done skips the move"
    );
    assert_eq!(store.migrations().await.unwrap(), vec![first]);
}
