//! The migrations' marks on the routes in force (see [`crate::migrate`]): laid over the
//! configuration's routes whenever a migration appears, changes its kind of mark or ends.

use std::sync::{Arc, PoisonError, Weak};

use super::{Proxy, Snapshot};
use crate::keyspace::{BackendId, Destination, Marks, Moving, Overlay, RouteTable, Way};

impl Proxy {
    /// Lays `overlays` (every migration's mark, replacing the last ones) over the routes in
    /// force, the fence kept as it is. Returns the snapshot it replaced, which sessions keep
    /// until the requests they routed by it are answered.
    pub fn reroute(&self, overlays: Vec<Overlay>) -> Weak<Snapshot> {
        self.remark(|marks| marks.overlays = overlays)
    }

    /// Fences every key (`on`), while this replica cannot read the migrations' state, or
    /// lifts the fence; the marks kept as they are. Whether it changed.
    pub fn fence(&self, on: bool) -> bool {
        let fenced = self
            .marks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .fence
            .is_some();
        if fenced == on {
            return false;
        }
        self.remark(|marks| {
            marks.fence = on.then(|| {
                Arc::new(Moving::new(
                    "(this replica's fence)".into(),
                    BackendId(0),
                    BackendId(0),
                    Way::Fenced,
                ))
            });
        });
        true
    }

    /// Changes the marks with `change` and puts the routes they make in force.
    fn remark(&self, change: impl FnOnce(&mut Marks)) -> Weak<Snapshot> {
        let mut marks = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
        change(&mut marks);
        let old = self.current.load_full();
        let generation = old.generation + 1;
        // From the configuration's own routes: the marks replace, rather than add to, the last.
        let routes = RouteTable::from_config(&old.config, &old.names())
            .with_overlays(&marks.overlays, marks.fence.as_ref());
        let snapshot = old.rerouted(routes, generation);
        self.put(Arc::new(snapshot));
        drop(marks);
        // A read of a moving key is tracked under the backend the routes name, which the gate
        // may not have read it from: what clients cached is dropped rather than followed.
        self.tracking.flush_all();
        Arc::downgrade(&old)
    }

    /// Notes `snapshot` as put in force, forgetting those no session holds any more.
    pub(super) fn remember(&self, snapshot: &Arc<Snapshot>) {
        let mut history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        history.retain(|old| old.strong_count() > 0);
        history.push(Arc::downgrade(snapshot));
    }

    /// Whether some session (or request) still holds a snapshot older than `generation`:
    /// while one does, requests may still be routed by routes without the marks laid since.
    pub fn holds_older_than(&self, generation: u64) -> bool {
        let history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        history
            .iter()
            .filter_map(Weak::upgrade)
            .any(|snapshot| snapshot.generation < generation)
    }

    /// Whether a configuration with backends `names` (in order) may be put in force under the
    /// marks: they name backends by their place in that order, so it may not change while
    /// there is a mark (a migration under way, or done and not forgotten).
    pub fn marks_allow(&self, names: &[String]) -> Result<(), String> {
        let marks = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
        if marks.overlays.is_empty() || self.current.load().names() == names {
            return Ok(());
        }
        Err(
            "backends may not be added or removed while a migration's mark is in force (one \
             under way, or done and not forgotten): finish and forget it first (see GET \
             /migrations)"
                .to_string(),
        )
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
