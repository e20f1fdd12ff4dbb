//! An immutable snapshot of which master serves each slot, with the masters' pools resolved.

use std::sync::Arc;

use super::topology::SlotRange;
use crate::backend::{NodeAddr, NodePool, NodePools};
use crate::slot::{SLOT_COUNT, Slot};

/// Marks a slot no master serves.
const UNSERVED: u16 = u16::MAX;

/// Slot -> master, replaced whole on every topology change and read without locks.
#[derive(Clone)]
pub struct SlotMap {
    owners: Vec<u16>,
    masters: Vec<Arc<NodePool>>,
    replicas: Vec<Vec<Arc<NodePool>>>,
}

impl SlotMap {
    /// A map with no slot served.
    pub fn empty() -> Self {
        SlotMap {
            owners: vec![UNSERVED; usize::from(SLOT_COUNT)],
            masters: Vec::new(),
            replicas: Vec::new(),
        }
    }

    /// Builds a map from `CLUSTER SLOTS` ranges, taking pools from `backends`.
    pub fn from_ranges(ranges: &[SlotRange], backends: &NodePools) -> Self {
        let mut map = SlotMap::empty();
        for range in ranges {
            let index = match map.masters.iter().position(|p| p.addr() == &range.master) {
                Some(i) => i,
                None => {
                    map.masters.push(backends.pool(&range.master));
                    map.replicas.push(Vec::new());
                    map.masters.len() - 1
                }
            };
            if let Some(replicas) = map.replicas.get_mut(index) {
                for r in &range.replicas {
                    if !replicas.iter().any(|p| p.addr() == r) {
                        replicas.push(backends.pool(r));
                    }
                }
            }
            let end = range.end.min(SLOT_COUNT - 1);
            for slot in range.start..=end {
                if let Some(owner) = map.owners.get_mut(usize::from(slot)) {
                    *owner = index as u16;
                }
            }
        }
        map
    }

    /// Whether no slot is served (the topology is not known yet).
    pub fn is_empty(&self) -> bool {
        self.masters.is_empty()
    }

    /// The pool of the master serving `slot`.
    pub fn master(&self, slot: Slot) -> Option<&Arc<NodePool>> {
        let owner = *self.owners.get(usize::from(slot.get()))?;
        self.masters.get(usize::from(owner))
    }

    /// The position in [`SlotMap::masters`] of the master serving `slot`.
    pub fn master_index(&self, slot: Slot) -> Option<usize> {
        let owner = *self.owners.get(usize::from(slot.get()))?;
        (owner != UNSERVED).then_some(usize::from(owner))
    }

    /// The slot ranges of each master, as (first, last, index in [`SlotMap::masters`]), in
    /// slot order.
    pub fn ranges(&self) -> Vec<(u16, u16, usize)> {
        let mut ranges: Vec<(u16, u16, usize)> = Vec::new();
        for (slot, &owner) in self.owners.iter().enumerate() {
            if owner == UNSERVED {
                continue;
            }
            let slot = slot as u16;
            match ranges.last_mut() {
                Some(last) if last.2 == usize::from(owner) && last.1 + 1 == slot => last.1 = slot,
                _ => ranges.push((slot, slot, usize::from(owner))),
            }
        }
        ranges
    }

    /// The replicas of the master at `index` in [`SlotMap::masters`].
    pub fn replicas_of(&self, index: usize) -> &[Arc<NodePool>] {
        self.replicas.get(index).map_or(&[], Vec::as_slice)
    }

    /// A healthy replica of the master serving `slot`, chosen by `n` among the healthy ones.
    pub fn replica(&self, slot: Slot, n: usize) -> Option<&Arc<NodePool>> {
        let owner = *self.owners.get(usize::from(slot.get()))?;
        let replicas = self.replicas.get(usize::from(owner))?;
        let healthy = replicas.iter().filter(|p| p.is_healthy()).count();
        if healthy == 0 {
            return None;
        }
        replicas.iter().filter(|p| p.is_healthy()).nth(n % healthy)
    }

    /// Every replica's pool.
    pub fn replicas(&self) -> impl Iterator<Item = &Arc<NodePool>> {
        self.replicas.iter().flatten()
    }

    /// A master chosen by `n` (round robin), for commands without keys.
    pub fn any_master(&self, n: usize) -> Option<&Arc<NodePool>> {
        match self.masters.len() {
            0 => None,
            len => self.masters.get(n % len),
        }
    }

    /// Whether `addr` is a master in this map.
    pub fn is_master(&self, addr: &NodeAddr) -> bool {
        self.masters.iter().any(|p| p.addr() == addr)
    }

    /// The masters' pools.
    pub fn masters(&self) -> &[Arc<NodePool>] {
        &self.masters
    }

    /// Every node address, masters first.
    pub fn nodes(&self) -> Vec<NodeAddr> {
        let mut nodes: Vec<NodeAddr> = self.masters.iter().map(|p| p.addr().clone()).collect();
        nodes.extend(self.replicas.iter().flatten().map(|p| p.addr().clone()));
        nodes
    }

    /// Number of slots served by some master.
    pub fn slots_served(&self) -> usize {
        self.owners.iter().filter(|&&o| o != UNSERVED).count()
    }

    /// Whether two maps route every slot to the same node and give each master the same
    /// replicas, whatever order the answering node listed them in.
    pub fn same_routes(&self, other: &SlotMap) -> bool {
        let addr =
            |map: &SlotMap, o: u16| map.masters.get(usize::from(o)).map(|p| p.addr().clone());
        let shards = |map: &SlotMap| -> Vec<(NodeAddr, Vec<NodeAddr>)> {
            let mut shards: Vec<_> = map
                .masters
                .iter()
                .zip(&map.replicas)
                .map(|(master, replicas)| {
                    let mut replicas: Vec<NodeAddr> =
                        replicas.iter().map(|p| p.addr().clone()).collect();
                    replicas.sort();
                    (master.addr().clone(), replicas)
                })
                .collect();
            shards.sort();
            shards
        };
        shards(self) == shards(other)
            && self
                .owners
                .iter()
                .zip(&other.owners)
                .all(|(&a, &b)| addr(self, a) == addr(other, b))
    }

    /// A copy with `slot` served by `pool`: what a `MOVED` says until the next refresh.
    pub fn with_slot_moved(&self, slot: Slot, pool: &Arc<NodePool>) -> SlotMap {
        let mut map = self.clone();
        let index = match map.masters.iter().position(|p| p.addr() == pool.addr()) {
            Some(i) => i,
            None => {
                map.masters.push(Arc::clone(pool));
                map.replicas.push(Vec::new());
                map.masters.len() - 1
            }
        };
        if let Some(owner) = map.owners.get_mut(usize::from(slot.get())) {
            *owner = index as u16;
        }
        map
    }
}
