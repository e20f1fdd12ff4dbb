use std::net::SocketAddr;

use crate::backend::NodeAddr;

use super::*;

fn registry_with(ids: &[u64]) -> (Arc<ClientRegistry>, Vec<crate::clients::Registered>) {
    let registry = Arc::new(ClientRegistry::default());
    let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let held = ids
        .iter()
        .map(|&id| {
            let r = registry.register(id, addr, addr, -1);
            r.handle.details.lock().unwrap().resp = 3;
            r
        })
        .collect();
    (registry, held)
}

fn key(backend: u64, name: &str) -> ReadKey {
    ReadKey {
        backend,
        stored: Bytes::copy_from_slice(name.as_bytes()),
        named: None,
    }
}

fn mail(r: &crate::clients::Registered) -> Vec<Bytes> {
    r.registry()
        .take_mail(r.handle.id, &r.handle.signal)
        .into_iter()
        .collect()
}

/// Marks `backends` as watched on every node, as their watchers would.
fn watched(tracking: &Tracking, backends: &[u64]) {
    for &backend in backends {
        let task = tokio::spawn(std::future::pending::<()>());
        tracking.watch_once(backend, None, || task.abort_handle());
        tracking.watching(backend, &[NodeAddr::new("127.0.0.1:7000")]);
    }
}

#[tokio::test]
async fn a_reader_is_told_once_of_a_change_and_a_writer_with_noloop_not_at_all() {
    let (registry, held) = registry_with(&[1, 2]);
    let tracking = Tracking::new(registry, 0);
    watched(&tracking, &[8, 9]);
    tracking.turn_on(1, Mode::default());
    tracking.turn_on(
        2,
        Mode {
            noloop: true,
            ..Mode::default()
        },
    );
    tracking.remember(1, [key(9, "k")]);
    tracking.remember(2, [key(9, "k")]);
    assert_eq!((tracking.keys(), tracking.items_and_prefixes().0), (1, 2));
    tracking.invalidate(9, &[Bytes::from_static(b"k")], Some(2));
    assert_eq!(
        mail(&held[0]),
        [invalidation_frame(3, &[Bytes::from_static(b"k")])]
    );
    assert!(mail(&held[1]).is_empty());
    assert!(!tracking.has_keys());
    // Told once: the key left the table.
    tracking.invalidate(9, &[Bytes::from_static(b"k")], None);
    assert!(mail(&held[0]).is_empty());
}

#[tokio::test]
async fn bcast_clients_hear_of_nodes_changes_under_their_prefixes_only() {
    let (registry, held) = registry_with(&[1]);
    let tracking = Tracking::new(registry, 0);
    watched(&tracking, &[8, 9]);
    tracking.turn_on(
        1,
        Mode {
            bcast: true,
            prefixes: vec![Bytes::from_static(b"user:")],
            ..Mode::default()
        },
    );
    let keys = [Bytes::from_static(b"user:1"), Bytes::from_static(b"other")];
    // A write through the proxy is left to the node's report.
    tracking.invalidate(9, &keys, Some(5));
    assert!(mail(&held[0]).is_empty());
    tracking.invalidate(9, &keys, None);
    assert_eq!(mail(&held[0]), [invalidation_frame(3, &keys[..1])]);
}

#[tokio::test]
async fn a_flush_reaches_the_clients_that_read_from_that_backend() {
    let (registry, held) = registry_with(&[1, 2]);
    let tracking = Tracking::new(registry, 0);
    watched(&tracking, &[8, 9]);
    tracking.turn_on(1, Mode::default());
    tracking.turn_on(2, Mode::default());
    tracking.remember(1, [key(9, "a")]);
    tracking.remember(2, [key(8, "b")]);
    tracking.flush_backend(9);
    assert_eq!(mail(&held[0]), [flush_frame(3, 3)]);
    assert!(mail(&held[1]).is_empty());
    assert_eq!(tracking.keys(), 1);
    // Told already: a second loss of the same backend has nobody to tell.
    tracking.flush_backend(9);
    assert!(mail(&held[0]).is_empty());
}

#[tokio::test]
async fn past_the_limit_a_key_is_evicted_and_its_readers_told() {
    let (registry, held) = registry_with(&[1]);
    let tracking = Tracking::new(registry, 2);
    watched(&tracking, &[8, 9]);
    tracking.turn_on(1, Mode::default());
    tracking.remember(1, [key(9, "a"), key(9, "b"), key(9, "c")]);
    assert_eq!(tracking.keys(), 2);
    assert_eq!(tracking.stats.evictions.load(Ordering::Relaxed), 1);
    assert_eq!(mail(&held[0]).len(), 1);
}

#[tokio::test]
async fn a_redirect_to_a_client_gone_tells_the_tracking_client_and_marks_it() {
    let (registry, held) = registry_with(&[1]);
    let tracking = Tracking::new(registry, 0);
    watched(&tracking, &[8, 9]);
    tracking.turn_on(
        1,
        Mode {
            redirect: Some(77),
            ..Mode::default()
        },
    );
    tracking.remember(1, [key(9, "a")]);
    tracking.invalidate(9, &[Bytes::from_static(b"a")], None);
    assert_eq!(mail(&held[0]), [frames::redirect_broken(77)]);
    assert!(tracking.shown(1).broken_redirect);
}

#[tokio::test]
async fn a_client_behind_gets_one_flush_instead_of_its_backlog() {
    let (registry, held) = registry_with(&[1]);
    let tracking = Tracking::new(registry, 0);
    watched(&tracking, &[8, 9]);
    tracking.turn_on(1, Mode::default());
    let big = Bytes::from(vec![b'x'; 300 * 1024]);
    for _ in 0..5 {
        tracking.remember(
            1,
            [ReadKey {
                backend: 9,
                stored: big.clone(),
                named: None,
            }],
        );
        tracking.invalidate(9, std::slice::from_ref(&big), None);
    }
    let frames = mail(&held[0]);
    assert!(
        frames.contains(&flush_frame(3, 3)),
        "{} frames",
        frames.len()
    );
    assert!(frames.len() < 5);
}

#[tokio::test]
async fn a_read_of_a_backend_not_watched_is_invalidated_at_once() {
    let (registry, held) = registry_with(&[1]);
    let tracking = Tracking::new(registry, 0);
    tracking.turn_on(1, Mode::default());
    tracking.remember(1, [key(9, "a")]);
    assert_eq!(
        mail(&held[0]),
        [invalidation_frame(3, &[Bytes::from_static(b"a")])]
    );
    assert!(!tracking.has_keys());
    watched(&tracking, &[9]);
    let node = NodeAddr::new("127.0.0.1:7000");
    tracking.node_watched(9, &node, Some(false));
    tracking.remember(1, [key(9, "a")]);
    assert_eq!(mail(&held[0]).len(), 1);
    tracking.node_watched(9, &node, Some(true));
    tracking.remember(1, [key(9, "a")]);
    assert!(mail(&held[0]).is_empty());
    assert!(tracking.has_keys());
}

#[tokio::test]
async fn a_bcast_client_hears_keys_with_the_prefix_the_route_strips_put_back() {
    let (registry, held) = registry_with(&[1]);
    let tracking = Tracking::new(registry, 0);
    let task = tokio::spawn(std::future::pending::<()>());
    tracking.watch_once(9, Some(Bytes::from_static(b"archive:")), || {
        task.abort_handle()
    });
    tracking.turn_on(
        1,
        Mode {
            bcast: true,
            prefixes: vec![Bytes::from_static(b"archive:")],
            ..Mode::default()
        },
    );
    tracking.invalidate(9, &[Bytes::from_static(b"x")], None);
    assert_eq!(
        mail(&held[0]),
        [invalidation_frame(3, &[Bytes::from_static(b"archive:x")])]
    );
}

#[tokio::test]
async fn a_bcast_noloop_client_is_not_told_of_its_own_write_but_of_the_next() {
    let (registry, held) = registry_with(&[1]);
    let tracking = Tracking::new(registry, 0);
    watched(&tracking, &[9]);
    tracking.turn_on(
        1,
        Mode {
            bcast: true,
            noloop: true,
            prefixes: vec![Bytes::new()],
            ..Mode::default()
        },
    );
    let k = [Bytes::from_static(b"k")];
    // Its own write through the proxy, then the node's report of it: nothing.
    tracking.invalidate(9, &k, Some(1));
    tracking.invalidate(9, &k, None);
    assert!(mail(&held[0]).is_empty());
    // Another change of the same key: told.
    tracking.invalidate(9, &k, None);
    assert_eq!(mail(&held[0]), [invalidation_frame(3, &k)]);
}

#[tokio::test]
async fn a_reader_is_told_the_name_it_gave_a_key_whose_prefix_the_route_strips() {
    let (registry, held) = registry_with(&[1]);
    let tracking = Tracking::new(registry, 0);
    watched(&tracking, &[9]);
    tracking.turn_on(1, Mode::default());
    tracking.remember(
        1,
        [ReadKey {
            backend: 9,
            stored: Bytes::from_static(b"x"),
            named: Some(Bytes::from_static(b"archive:x")),
        }],
    );
    tracking.invalidate(9, &[Bytes::from_static(b"x")], None);
    assert_eq!(
        mail(&held[0]),
        [invalidation_frame(3, &[Bytes::from_static(b"archive:x")])]
    );
}
