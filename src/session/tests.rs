//! Sizes of what an idle session holds, pinned so that a regression shows.

use std::mem::size_of;

/// The size of the future `f` returns.
fn future_size<F, A, B, C>(_: fn(A, B, C) -> F) -> usize {
    size_of::<F>()
}

/// An idle client costs its task, as large as the session's future, and its entry in the
/// client list: the bounds keep the task inside jemalloc's 1,024-byte size class (`serve`
/// plus tokio's task header and the accept loop's wrapper) and the entry, in its `Arc`,
/// inside the 256-byte one. `benches/tls_memory.sh` measures the whole.
#[test]
fn an_idle_session_stays_small() {
    let sizes = [
        ("serve's future", future_size(super::serve), 800),
        ("Conn", size_of::<super::Conn<'static>>(), 512),
        ("ClientState", size_of::<super::ClientState>(), 240),
        (
            "ClientHandle",
            size_of::<crate::clients::ClientHandle>(),
            240,
        ),
    ];
    for (what, size, bound) in sizes {
        assert!(size <= bound, "{what} is {size} bytes, more than {bound}");
    }
}
