//! Planning a split: the client's keys grouped by slot, each group a part, and the parts'
//! sub-commands encoded into one buffer.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use super::{KeyRef, Part, Split};
use crate::command::Access;
use crate::command::policy::SplitKind;
use crate::keyspace::{Place, RouteTable};
use crate::protocol::Request;

/// Groups searched one by one before a map takes over: a few slots (the common split, say ten
/// keys over three masters) cost a few comparisons and no hashing at all.
const LINEAR_GROUPS: usize = 16;

/// Plans the split of `request` if its keys span several slots or backends (`routes` says
/// which backend each key is on, and which prefix it loses there). `None` means: not a command
/// that splits (an odd `MSET` is the backend's error to give), or a single slot (forward it
/// whole).
pub fn plan(kind: SplitKind, request: Request, routes: &RouteTable) -> Option<Split> {
    let Request { raw, args } = request;
    let step = kind.step();
    let body = args.get(1..)?;
    if body.is_empty() || body.len() % step != 0 {
        return None;
    }
    let count = body.len() / step;
    let mut groups: Groups<Place> = Groups::with_capacity(count.min(LINEAR_GROUPS + 1));
    // Each key's group, in the client's order; then sorted by group into `keys`.
    let mut located: Vec<(u32, KeyRef)> = Vec::with_capacity(count);
    for (position, chunk) in body.chunks(step).enumerate() {
        let key = chunk.first()?;
        let (place, strip) = if routes.is_single() {
            let backend = routes.default_backend();
            let place = Place {
                backend,
                slot: routes.slot_on(backend, key),
            };
            (place, 0)
        } else {
            let route = routes.route(key);
            let slot = routes.slot_on(route.backend, key.get(route.strip..).unwrap_or_default());
            let place = Place {
                backend: route.backend,
                slot,
            };
            (place, route.strip)
        };
        let group = groups.add(place);
        let key = KeyRef {
            position: u32::try_from(position).ok()?,
            strip: u32::try_from(strip).ok()?,
        };
        located.push((group, key));
    }
    if groups.len() < 2 {
        return None;
    }
    // A counting sort by group: linear, and each part's keys stay in the client's order. Each
    // part's `end` is where its next key goes until all are placed.
    let mut parts = Vec::with_capacity(groups.len());
    let mut start = 0u32;
    for (place, size) in groups.iter() {
        parts.push(Part {
            backend: place.backend,
            slot: place.slot,
            start,
            end: start,
        });
        start += size;
    }
    let mut keys = vec![KeyRef::default(); count];
    for (group, key) in located {
        if let Some(part) = parts.get_mut(group as usize) {
            if let Some(entry) = keys.get_mut(part.end as usize) {
                *entry = key;
            }
            part.end += 1;
        }
    }
    let mut split = Split {
        kind,
        raw,
        args,
        command: 0..0,
        keys,
        parts,
    };
    split.command = split.span_as_sent(0, 0).unwrap_or(0..0);
    Some(split)
}

impl SplitKind {
    /// Arguments per key: 2 for `MSET` (key and value), 1 for the others.
    pub(super) fn step(self) -> usize {
        match self {
            SplitKind::Mset => 2,
            _ => 1,
        }
    }

    /// Whether the command only reads.
    pub(super) fn access(self) -> Access {
        match self {
            SplitKind::Mget | SplitKind::Exists => Access::Read,
            SplitKind::Mset | SplitKind::Del | SplitKind::Unlink | SplitKind::Touch => {
                Access::Write
            }
        }
    }
}

impl Split {
    /// Bytes enough to encode every part (see [`Split::encode`]): the arguments with room for
    /// their headers, and each part's header and command name.
    pub fn encoded_capacity(&self) -> usize {
        let command = self.args.first().map_or(0, Bytes::len);
        let args: usize = self.args.iter().skip(1).map(|a| a.len() + 16).sum();
        args + self.parts.len() * (command + 32)
    }

    /// Appends `part`'s sub-command to `out`: the client's command name, then its keys (each
    /// stripped of the prefix its route removes) with their values, in the client's order.
    ///
    /// What the proxy does not rewrite is copied as the client encoded it, a key and its value
    /// in one copy, rather than encoded again argument by argument (five small copies each).
    pub fn encode(&self, part: &Part, out: &mut BytesMut) {
        let step = self.kind.step();
        let keys = self.part_keys(part);
        put_header(out, b'*', 1 + keys.len() * step);
        match self.raw.get(self.command.clone()) {
            Some(command) if !command.is_empty() => out.put_slice(command),
            _ => put_bulk(out, self.args.first().map_or(&[][..], |a| &a[..])),
        }
        for key in keys {
            let first = 1 + key.position as usize * step;
            if key.strip == 0
                && let Some(chunk) = self.as_sent(first, first + step - 1)
            {
                out.put_slice(chunk);
                continue;
            }
            let Some(chunk) = self.args.get(first..first + step) else {
                continue;
            };
            for (i, arg) in chunk.iter().enumerate() {
                if i == 0 {
                    // The key as its backend knows it.
                    put_bulk(out, arg.get(key.strip as usize..).unwrap_or_default());
                } else {
                    put_bulk(out, arg);
                }
            }
        }
    }
}

impl Split {
    /// The bytes the client sent for arguments `first..=last`, each with its `$` header and
    /// CRLF; `None` when they cannot be told (an inline command, re-encoded, or an empty
    /// argument, which is not a slice of `raw`).
    ///
    /// The parser makes every argument of a multibulk request a slice of `raw`, so an
    /// argument's header begins right after the CRLF that ends the previous argument (or the
    /// `*N` line, for the first).
    pub(super) fn as_sent(&self, first: usize, last: usize) -> Option<&[u8]> {
        self.raw.get(self.span_as_sent(first, last)?)
    }

    /// Where [`Split::as_sent`]'s bytes are in `raw`.
    fn span_as_sent(&self, first: usize, last: usize) -> Option<Range<usize>> {
        let offset = |arg: &Bytes| -> Option<usize> {
            let at = (arg.as_ptr() as usize).checked_sub(self.raw.as_ptr() as usize)?;
            (!arg.is_empty() && at + arg.len() + 2 <= self.raw.len()).then_some(at)
        };
        let start = match first.checked_sub(1) {
            None => self.raw.iter().position(|&b| b == b'\r')? + 2,
            Some(previous) => {
                let previous = self.args.get(previous)?;
                offset(previous)? + previous.len() + 2
            }
        };
        for arg in self.args.get(first..last)? {
            offset(arg)?;
        }
        let last = self.args.get(last)?;
        let end = offset(last)? + last.len() + 2;
        let sent = self.raw.get(start..end)?;
        (sent.first() == Some(&b'$')).then_some(start..end)
    }
}

fn put_bulk(out: &mut BytesMut, arg: &[u8]) {
    put_header(out, b'$', arg.len());
    out.put_slice(arg);
    out.put_slice(b"\r\n");
}

/// Appends a header line, `*3\r\n` or `$5\r\n`, in one copy.
fn put_header(out: &mut BytesMut, kind: u8, mut n: usize) {
    let mut line = [0u8; 24];
    let mut at = line.len() - 2;
    line[at..].copy_from_slice(b"\r\n");
    loop {
        at -= 1;
        line[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    at -= 1;
    line[at] = kind;
    out.put_slice(&line[at..]);
}

/// Distinct values in order of first appearance, each with how often it came.
///
/// A value's group is found by a search of the groups while they are few, then by a map: the
/// cost stays linear in the number of keys whatever the number of distinct slots, where a
/// search per key would cost keys x slots (650 ms of a worker's time for an `MGET` of 100,000
/// keys).
pub(super) struct Groups<K> {
    /// Each group's value and size.
    groups: Vec<(K, u32)>,
    /// Group by value, once there are more than [`LINEAR_GROUPS`].
    index: Option<HashMap<K, u32, BuildHasherDefault<SmallKeyHasher>>>,
}

impl<K> Groups<K> {
    /// No groups yet, room for `groups` of them before growing.
    pub(super) fn with_capacity(groups: usize) -> Self {
        Groups {
            groups: Vec::with_capacity(groups),
            index: None,
        }
    }
}

impl<K: Copy + Eq + Hash> Groups<K> {
    /// Counts `value` in its group, made if new; returns the group's index.
    pub(super) fn add(&mut self, value: K) -> u32 {
        let found = match &mut self.index {
            Some(index) => match index.entry(value) {
                Entry::Occupied(group) => Some(*group.get()),
                Entry::Vacant(group) => {
                    group.insert(self.groups.len() as u32);
                    None
                }
            },
            None => self
                .groups
                .iter()
                .position(|(first, _)| *first == value)
                .map(|group| group as u32),
        };
        if let Some(group) = found {
            if let Some((_, size)) = self.groups.get_mut(group as usize) {
                *size += 1;
            }
            return group;
        }
        self.groups.push((value, 1));
        if self.index.is_none() && self.groups.len() > LINEAR_GROUPS {
            self.index = Some(
                self.groups
                    .iter()
                    .enumerate()
                    .map(|(group, (value, _))| (*value, group as u32))
                    .collect(),
            );
        }
        (self.groups.len() - 1) as u32
    }

    /// The number of groups.
    pub(super) fn len(&self) -> usize {
        self.groups.len()
    }

    /// Each group's value and size, in order of first appearance.
    pub(super) fn iter(&self) -> impl Iterator<Item = (K, u32)> + '_ {
        self.groups.iter().copied()
    }
}

/// A hasher for small fixed-size keys (a slot and a backend index): a multiply-rotate per
/// word, a few instructions where SipHash spends a hundred. The keys come from a bounded
/// space (16384 slots per backend), so a client cannot make them collide in quantity.
#[derive(Default)]
pub(super) struct SmallKeyHasher(u64);

impl SmallKeyHasher {
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for SmallKeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.mix(u64::from(byte));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.mix(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.mix(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.mix(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
