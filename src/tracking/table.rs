//! The tracked keys: per backend, each key as the backend stores it, with the clients that
//! read it and the name each knows it by.

use std::collections::HashMap;

use bytes::Bytes;

/// Who read one key: client ids, each with the name it gave the key.
type Readers = Vec<(u64, Bytes)>;

/// Tracked keys by backend serial, then by stored key.
#[derive(Debug, Default)]
pub(super) struct Table {
    backends: HashMap<u64, HashMap<Bytes, Readers>>,
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

    /// Records that `client` read `stored` on `backend`, naming it `named`.
    pub fn add(&mut self, backend: u64, stored: Bytes, client: u64, named: Bytes) {
        let keys = self.backends.entry(backend).or_default();
        let readers = keys.entry(stored).or_insert_with(|| {
            self.keys += 1;
            Vec::new()
        });
        if !readers.iter().any(|(id, n)| *id == client && *n == named) {
            readers.push((client, named));
            self.items += 1;
        }
    }

    /// Takes `stored` on `backend` out of the table, with its readers.
    pub fn remove(&mut self, backend: u64, stored: &[u8]) -> Option<Readers> {
        let keys = self.backends.get_mut(&backend)?;
        let readers = keys.remove(stored)?;
        if keys.is_empty() {
            self.backends.remove(&backend);
        }
        self.keys -= 1;
        self.items -= readers.len();
        Some(readers)
    }

    /// Takes some key out of the table, to make room: the first of the largest backend's
    /// map, whose order the hasher's random seed makes arbitrary, as Redis evicts a random key.
    pub fn evict_one(&mut self) -> Option<Readers> {
        let (&backend, keys) = self.backends.iter().max_by_key(|(_, keys)| keys.len())?;
        let stored = keys.keys().next()?.clone();
        self.remove(backend, &stored)
    }

    /// Forgets every key of `backend`.
    pub fn drop_backend(&mut self, backend: u64) {
        if let Some(keys) = self.backends.remove(&backend) {
            self.keys -= keys.len();
            self.items -= keys.values().map(Vec::len).sum::<usize>();
        }
    }
}
