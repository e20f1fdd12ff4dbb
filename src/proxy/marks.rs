//! The migrations' marks on the routes in force (see [`crate::migrate`]): laid over the
//! configuration's routes whenever a migration appears, changes its kind of mark or ends.

use std::sync::{Arc, PoisonError, Weak};

use super::{Proxy, Snapshot};
use crate::keyspace::{Destination, Marks, RouteTable};

impl Proxy {
    /// Lays `marks` (every migration's mark and the fence, replacing the last ones) over the
    /// routes in force. Returns the snapshot it replaced, which sessions keep until the
    /// requests they routed by it are answered: once none holds it, no request routed as
    /// before is left.
    pub fn reroute(&self, marks: Marks) -> Weak<Snapshot> {
        let mut current = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
        let old = self.current.load_full();
        let generation = old.generation + 1;
        // From the configuration's own routes: the marks replace, rather than add to, the last.
        let routes = RouteTable::from_config(&old.config, &old.names())
            .with_overlays(&marks.overlays, marks.fence.as_ref());
        let snapshot = old.rerouted(routes, generation);
        *current = marks;
        self.put(Arc::new(snapshot));
        Arc::downgrade(&old)
    }

    /// Whether a migration moved, or is moving, the keys of `prefix` to the backend named `to`.
    pub fn moved_by_migration(&self, prefix: &str, to: &str) -> bool {
        let marks = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
        let snapshot = self.current.load();
        let named = |id| snapshot.backend(id).is_some_and(|b| b.name() == to);
        marks.overlays.iter().any(|o| {
            o.prefix == prefix.as_bytes()
                && match &o.to {
                    Destination::Backend(id) => named(*id),
                    Destination::Moving(moving) => named(moving.to),
                    Destination::BySlot(_) => false,
                }
        })
    }
}
