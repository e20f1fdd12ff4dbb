//! The tracked keys: per backend, each key as the backend stores it, with the clients that
//! read it and the name each knows it by.

use std::collections::HashMap;

use bytes::Bytes;

/// Who read one key: client ids, each with the name it gave the key.
type Readers = Vec<(u64, Bytes)>;

/// [`Readers`] as kept: a name only where it differs from the stored key (a route that strips
/// a prefix), so that most keys are held once.
type Kept = Vec<(u64, Option<Bytes>)>;

/// Tracked keys by backend serial, then by stored key.
#[derive(Debug, Default)]
pub(super) struct Table {
    backends: HashMap<u64, HashMap<Bytes, Kept>>,
    keys: usize,
    items: usize,
}

impl Table {
    /// Keys tracked, over every backend.
    pub fn len(&self) -> usize {
        self.keys
    }

    /// Pairs of a key and a client that read it.
    pub fn items(&self) -> usize {
        self.items
    }

    /// Records that `client` read `stored` on `backend`, naming it `named` (`None`: as stored).
    pub fn add(&mut self, backend: u64, stored: Bytes, client: u64, named: Option<Bytes>) {
        let named = named.filter(|n| *n != stored);
        let keys = self.backends.entry(backend).or_default();
        let readers = keys.entry(stored).or_insert_with(|| {
            self.keys += 1;
            // Most keys have one reader: a `Vec` would make room for four on its first push.
            Vec::with_capacity(1)
        });
        if !readers.iter().any(|(id, n)| *id == client && *n == named) {
            readers.push((client, named));
            self.items += 1;
        }
    }

    /// Takes `stored` on `backend` out of the table, with its readers.
    pub fn remove(&mut self, backend: u64, stored: &[u8]) -> Option<Readers> {
        let keys = self.backends.get_mut(&backend)?;
        let (stored, kept) = keys.remove_entry(stored)?;
        if keys.is_empty() {
            self.backends.remove(&backend);
        }
        self.keys -= 1;
        self.items -= kept.len();
        Some(
            kept.into_iter()
                .map(|(id, named)| (id, named.unwrap_or_else(|| stored.clone())))
                .collect(),
        )
    }

    /// Takes `count` keys out of the table, to make room, with their readers: the first of each
    /// backend's map in turn, whose order the hasher's random seed makes arbitrary, as Redis
    /// evicts random keys. One pass over each map, however many are taken.
    pub fn evict(&mut self, count: usize) -> Vec<Readers> {
        let mut evicted = Vec::with_capacity(count.min(1024));
        let backends: Vec<u64> = self.backends.keys().copied().collect();
        for backend in backends {
            let left = count - evicted.len();
            if left == 0 {
                break;
            }
            let Some(keys) = self.backends.get_mut(&backend) else {
                continue;
            };
            let chosen: Vec<Bytes> = keys.keys().take(left).cloned().collect();
            for stored in chosen {
                if let Some(readers) = self.remove(backend, &stored) {
                    evicted.push(readers);
                }
            }
        }
        evicted
    }

    /// Forgets every key of `backend`.
    pub fn drop_backend(&mut self, backend: u64) {
        if let Some(keys) = self.backends.remove(&backend) {
            self.keys -= keys.len();
            self.items -= keys.values().map(Vec::len).sum::<usize>();
        }
    }
}
