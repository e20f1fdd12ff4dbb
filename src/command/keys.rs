//! Key positions: Redis 7 key specifications, with the legacy first/last/step as fallback.

use bytes::Bytes;

use super::CommandSpec;
use crate::protocol::request::{is_option, parse_int};

/// Where the search for a key spec's keys begins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchBegin {
    /// At a fixed argument index.
    Index(i64),
    /// After the first (or, for a negative `start_from`, last) occurrence of a keyword.
    Keyword {
        /// The keyword, lowercase.
        keyword: String,
        /// Index to start searching from; negative searches backwards from the end.
        start_from: i64,
    },
    /// Keys cannot be found from the arguments alone.
    Unknown,
}

/// How keys are found once the search has begun.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchKeys {
    /// A range: the last key's offset (negative from the end), the step, and a limit that
    /// divides the remaining arguments (as `XREAD ... STREAMS k1 k2 id1 id2` needs).
    Range {
        /// Offset of the last key from the first, or from the end when negative.
        last_key: i64,
        /// Distance between keys.
        key_step: i64,
        /// When `last_key` is negative and this is non-zero, only `1/limit` of the rest are keys.
        limit: i64,
    },
    /// The number of keys is an argument (`EVAL script numkeys k1 k2`).
    KeyNum {
        /// Offset of the count from the begin index.
        key_num_index: i64,
        /// Offset of the first key from the begin index.
        first_key: i64,
        /// Distance between keys.
        key_step: i64,
    },
    /// Keys cannot be found from the arguments alone.
    Unknown,
}

/// One key specification of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    /// Where the search begins.
    pub begin: SearchBegin,
    /// How keys are found from there.
    pub find: SearchKeys,
    /// What the command does with these keys, for read- and write-only key permissions.
    pub access: KeyAccess,
}

/// What a command does with the keys of one key spec, from its flags (`ACCESS`, `INSERT`,
/// `DELETE`, `UPDATE`, `NOT_KEY`), as Redis's ACL reads them: a `%R~` pattern allows keys
/// whose value is read, a `%W~` pattern keys that are written; a key doing neither (`EXISTS`)
/// needs only some pattern.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyAccess {
    /// The value is read or returned (`ACCESS`).
    pub read: bool,
    /// The key is written, created or deleted (`INSERT`, `DELETE`, `UPDATE`).
    pub write: bool,
    /// Not a key but routed like one: the shard channel of `SPUBLISH`/`SSUBSCRIBE` (`NOT_KEY`).
    pub not_key: bool,
}

impl KeyAccess {
    /// The access a key spec's flags (in any case) describe.
    pub fn from_flags<'a>(flags: impl IntoIterator<Item = &'a str>) -> KeyAccess {
        let mut access = KeyAccess::default();
        for flag in flags {
            match flag.to_ascii_lowercase().as_str() {
                "access" => access.read = true,
                "insert" | "delete" | "update" => access.write = true,
                "not_key" => access.not_key = true,
                _ => {}
            }
        }
        access
    }
}

/// Redis's own key-finding function, for the commands whose key specs cannot say which
/// arguments are keys or what is done with them: a spec with `VARIABLE_FLAGS` (`SET`,
/// `BITFIELD`), an `INCOMPLETE` one (`MIGRATE ... KEYS`) or an unknown begin search (`SORT`'s
/// `STORE`). Redis 7.0 calls the command's `getkeys_proc` for these, both to route and for the
/// ACL; the proxy does the same, by name, decided when the command table loads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KeysProc {
    /// The key specs (or the legacy positions) say it all.
    #[default]
    Specs,
    /// `SET`: a write, and a read too when `GET` is among the options (`setGetKeys`).
    Set,
    /// `BITFIELD`: a read when it only has `GET` (and `OVERFLOW`) operations, else a write
    /// (`bitfieldGetKeys`).
    Bitfield,
    /// `SORT`: the sorted key is read, the last `STORE` destination written (`sortGetKeys`).
    Sort,
    /// `SORT_RO`: the sorted key, read.
    SortRo,
    /// `MIGRATE`: the key, or with `KEYS` (and an empty key) the keys after it
    /// (`migrateGetKeys`).
    Migrate,
}

impl KeysProc {
    /// The procedure for the command (or subcommand) called `name`, lowercase.
    pub fn of(name: &str) -> KeysProc {
        match name {
            "set" => KeysProc::Set,
            "bitfield" => KeysProc::Bitfield,
            "sort" => KeysProc::Sort,
            "sort_ro" => KeysProc::SortRo,
            "migrate" => KeysProc::Migrate,
            _ => KeysProc::Specs,
        }
    }

    /// Gives `out` the position of each key in `args` with its access, as Redis's procedure
    /// finds them; allocates nothing (`SET` comes this way on every request).
    fn find(self, args: &[Bytes], mut out: impl FnMut(usize, KeyAccess)) {
        let argc = args.len();
        if argc < 2 {
            return;
        }
        match self {
            KeysProc::Specs => {}
            KeysProc::Set => {
                let get = (3..argc).any(|i| is_at(args, i, "get"));
                out(1, if get { READ_WRITE } else { WRITE });
            }
            KeysProc::Bitfield => out(1, bitfield_access(args)),
            KeysProc::SortRo => out(1, READ),
            KeysProc::Sort => {
                out(1, READ);
                if let Some(store) = sort_store(args) {
                    out(store, WRITE);
                }
            }
            KeysProc::Migrate => migrate_keys(args, &mut out),
        }
    }
}

/// A key the command reads.
const READ: KeyAccess = KeyAccess {
    read: true,
    write: false,
    not_key: false,
};
/// A key the command writes.
const WRITE: KeyAccess = KeyAccess {
    read: false,
    write: true,
    not_key: false,
};
/// A key the command reads and writes.
const READ_WRITE: KeyAccess = KeyAccess {
    read: true,
    write: true,
    not_key: false,
};

/// Whether argument `i` is the option `word` (any case).
#[inline]
fn is_at(args: &[Bytes], i: usize, word: &str) -> bool {
    args.get(i).is_some_and(|a| is_option(a, word))
}

/// How `BITFIELD` touches its key: a read only when every operation is a well-formed `GET`
/// (or `OVERFLOW`), as `bitfieldGetKeys` decides.
fn bitfield_access(args: &[Bytes]) -> KeyAccess {
    let argc = args.len();
    let mut readonly = true;
    let mut i = 2;
    while i < argc {
        let remaining = argc - i - 1;
        if is_at(args, i, "get") && remaining >= 2 {
            i += 3;
        } else if (is_at(args, i, "set") || is_at(args, i, "incrby")) && remaining >= 3 {
            readonly = false;
            break;
        } else if is_at(args, i, "overflow") && remaining >= 1 {
            i += 2;
        } else {
            // A syntax error: Redis assumes a write, the safer guess.
            readonly = false;
            break;
        }
    }
    if readonly { READ } else { READ_WRITE }
}

/// The position of `SORT`'s `STORE` destination, if it has one, skipping the other options'
/// arguments as `sortGetKeys` does.
fn sort_store(args: &[Bytes]) -> Option<usize> {
    let argc = args.len();
    let mut store = None;
    let mut i = 2;
    while i < argc {
        if is_at(args, i, "limit") {
            i += 2;
        } else if is_at(args, i, "store") && i + 1 < argc {
            // The last STORE wins, as in SORT itself.
            store = Some(i + 1);
        } else if is_at(args, i, "get") || is_at(args, i, "by") {
            i += 1;
        }
        i += 1;
    }
    store
}

/// Gives `out` `MIGRATE`'s keys: the key argument, or with `KEYS` (and an empty key
/// argument) the keys after it, as `migrateGetKeys` finds them.
fn migrate_keys(args: &[Bytes], out: &mut impl FnMut(usize, KeyAccess)) {
    let argc = args.len();
    // The key spec finds `KEYS` searching back from the last but one argument;
    // only then does Redis ask `migrateGetKeys`.
    if !(1..argc.saturating_sub(1)).any(|i| is_at(args, i, "keys")) {
        if argc > 3 {
            out(3, READ_WRITE);
        }
        return;
    }
    let mut first = 3;
    let mut count = 1;
    let mut i = 6;
    while i < argc {
        if is_at(args, i, "keys") {
            if args.get(3).is_some_and(|k| !k.is_empty()) {
                // A syntax error MIGRATE reports itself.
                count = 0;
            } else {
                first = i + 1;
                count = argc - first;
            }
            break;
        }
        if is_at(args, i, "auth") {
            i += 1;
        } else if is_at(args, i, "auth2") {
            i += 2;
        }
        i += 1;
    }
    for position in (first..first + count).filter(|&p| p < argc) {
        out(position, READ_WRITE);
    }
}

/// Appends the positions in `args` of the command's keys to `out`: by Redis's own procedure
/// where the command has one, else by key specs when present. Positions beyond the arguments
/// are ignored: the backend reports a malformed command itself.
pub(super) fn positions(spec: &CommandSpec, args: &[Bytes], out: &mut Vec<usize>) {
    if spec.keys_proc != KeysProc::Specs {
        spec.keys_proc.find(args, |position, _| out.push(position));
    } else if spec.key_specs.is_empty() {
        legacy(spec, args, out);
    } else {
        for key_spec in &spec.key_specs {
            from_spec(key_spec, args, out);
        }
    }
}

/// Appends the positions of the command's keys with what it does with each: by Redis's own
/// procedure where the command has one, else by key spec, so each key has its spec's access;
/// legacy positions have no flags.
pub(super) fn positions_with_access(
    spec: &CommandSpec,
    args: &[Bytes],
    out: &mut Vec<(usize, KeyAccess)>,
) {
    if spec.keys_proc != KeysProc::Specs {
        spec.keys_proc
            .find(args, |position, access| out.push((position, access)));
        return;
    }
    let mut found = Vec::new();
    if spec.key_specs.is_empty() {
        legacy(spec, args, &mut found);
        out.extend(found.into_iter().map(|p| (p, KeyAccess::default())));
        return;
    }
    for key_spec in &spec.key_specs {
        found.clear();
        from_spec(key_spec, args, &mut found);
        out.extend(found.iter().map(|&p| (p, key_spec.access)));
    }
}

fn legacy(spec: &CommandSpec, args: &[Bytes], out: &mut Vec<usize>) {
    if spec.first_key <= 0 || spec.step <= 0 {
        return;
    }
    let argc = args.len() as i64;
    let last = if spec.last_key < 0 {
        argc + spec.last_key
    } else {
        spec.last_key
    };
    push_range(args, spec.first_key, last, spec.step, out);
}

fn from_spec(spec: &KeySpec, args: &[Bytes], out: &mut Vec<usize>) {
    let argc = args.len() as i64;
    let begin = match &spec.begin {
        SearchBegin::Index(i) => *i,
        SearchBegin::Keyword {
            keyword,
            start_from,
        } => match find_keyword(args, keyword, *start_from) {
            Some(i) => i + 1,
            None => return,
        },
        SearchBegin::Unknown => return,
    };
    match spec.find {
        SearchKeys::Range {
            last_key,
            key_step,
            limit,
        } => {
            let last = if last_key >= 0 {
                begin + last_key
            } else if limit <= 1 {
                argc + last_key
            } else {
                begin + (argc - begin) / limit + last_key
            };
            push_range(args, begin, last, key_step, out);
        }
        SearchKeys::KeyNum {
            key_num_index,
            first_key,
            key_step,
        } => {
            let count = usize::try_from(begin + key_num_index)
                .ok()
                .and_then(|i| args.get(i))
                .and_then(|n| parse_int(n));
            let Some(count) = count.filter(|n| *n > 0) else {
                return;
            };
            let first = begin + first_key;
            let last = first + (count - 1) * key_step.max(1);
            push_range(args, first, last, key_step, out);
        }
        SearchKeys::Unknown => {}
    }
}

fn find_keyword(args: &[Bytes], keyword: &str, start_from: i64) -> Option<i64> {
    let argc = args.len() as i64;
    let matches = |i: i64| {
        usize::try_from(i)
            .ok()
            .and_then(|i| args.get(i))
            .is_some_and(|a| is_option(a, keyword))
    };
    if start_from >= 0 {
        (start_from..argc).find(|&i| matches(i))
    } else {
        (1..=argc + start_from).rev().find(|&i| matches(i))
    }
}

fn push_range(args: &[Bytes], first: i64, last: i64, step: i64, out: &mut Vec<usize>) {
    if first <= 0 || step <= 0 || last < first {
        return;
    }
    let mut i = first;
    while i <= last {
        match usize::try_from(i).ok().filter(|&i| i < args.len()) {
            Some(position) => out.push(position),
            None => return,
        }
        i += step;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &str) -> Vec<Bytes> {
        a.split(' ').map(|s| Bytes::from(s.to_string())).collect()
    }

    fn keys(spec: &CommandSpec, line: &str) -> Vec<String> {
        let mut out = Vec::new();
        spec.keys(&args(line), &mut out);
        out.iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect()
    }

    fn with_specs(specs: Vec<KeySpec>) -> CommandSpec {
        CommandSpec {
            key_specs: specs,
            ..CommandSpec::default()
        }
    }

    #[test]
    fn legacy_positions_cover_mset_style_steps() {
        let mset = CommandSpec {
            first_key: 1,
            last_key: -1,
            step: 2,
            ..CommandSpec::default()
        };
        assert_eq!(keys(&mset, "MSET a 1 b 2"), ["a", "b"]);
    }

    #[test]
    fn keynum_spec_finds_eval_keys() {
        let eval = with_specs(vec![KeySpec {
            begin: SearchBegin::Index(2),
            find: SearchKeys::KeyNum {
                key_num_index: 0,
                first_key: 1,
                key_step: 1,
            },
            access: KeyAccess::default(),
        }]);
        assert_eq!(keys(&eval, "EVAL s 2 k1 k2 arg"), ["k1", "k2"]);
        assert!(keys(&eval, "EVAL s 0 arg").is_empty());
        // A count past the arguments yields what is there; the backend reports the error.
        assert_eq!(keys(&eval, "EVAL s 5 k1"), ["k1"]);
    }

    #[test]
    fn keyword_range_with_limit_finds_xread_streams() {
        let xread = with_specs(vec![KeySpec {
            begin: SearchBegin::Keyword {
                keyword: "streams".into(),
                start_from: 1,
            },
            find: SearchKeys::Range {
                last_key: -1,
                key_step: 1,
                limit: 2,
            },
            access: KeyAccess::default(),
        }]);
        assert_eq!(
            keys(&xread, "XREAD COUNT 2 STREAMS s1 s2 0 0"),
            ["s1", "s2"]
        );
        assert!(keys(&xread, "XREAD COUNT 2").is_empty());
    }

    #[test]
    fn backwards_keyword_search_starts_from_the_end() {
        let spec = with_specs(vec![KeySpec {
            begin: SearchBegin::Keyword {
                keyword: "store".into(),
                start_from: -2,
            },
            find: SearchKeys::Range {
                last_key: 0,
                key_step: 1,
                limit: 0,
            },
            access: KeyAccess::default(),
        }]);
        assert_eq!(keys(&spec, "GEORADIUS k 1 2 3 m STORE dst"), ["dst"]);
    }

    /// Positions and (read, write) of `line`'s keys, by the procedure of command `name`.
    fn by_proc(name: &str, line: &str) -> Vec<(usize, bool, bool)> {
        let spec = CommandSpec {
            keys_proc: KeysProc::of(name),
            ..CommandSpec::default()
        };
        let mut out = Vec::new();
        positions_with_access(&spec, &args(line), &mut out);
        out.into_iter().map(|(p, a)| (p, a.read, a.write)).collect()
    }

    #[test]
    fn set_reads_its_key_only_with_get() {
        assert_eq!(by_proc("set", "SET k v"), [(1, false, true)]);
        assert_eq!(by_proc("set", "SET k v EX 10"), [(1, false, true)]);
        assert_eq!(by_proc("set", "SET k v get"), [(1, true, true)]);
        // GET as the value is not the option.
        assert_eq!(by_proc("set", "SET k get"), [(1, false, true)]);
    }

    #[test]
    fn bitfield_with_only_gets_is_a_read() {
        assert_eq!(
            by_proc("bitfield", "BITFIELD k GET u8 0"),
            [(1, true, false)]
        );
        assert_eq!(
            by_proc("bitfield", "BITFIELD k OVERFLOW SAT GET u8 0 GET i4 8"),
            [(1, true, false)]
        );
        assert_eq!(
            by_proc("bitfield", "BITFIELD k GET u8 0 SET u8 0 1"),
            [(1, true, true)]
        );
        assert_eq!(
            by_proc("bitfield", "BITFIELD k INCRBY u8 0 1"),
            [(1, true, true)]
        );
        // A syntax error is taken for a write, as Redis takes it.
        assert_eq!(by_proc("bitfield", "BITFIELD k GET u8"), [(1, true, true)]);
        assert_eq!(by_proc("bitfield", "BITFIELD k"), [(1, true, false)]);
    }

    #[test]
    fn sort_writes_its_last_store_destination() {
        assert_eq!(by_proc("sort", "SORT k"), [(1, true, false)]);
        assert_eq!(
            by_proc("sort", "SORT k BY w_* LIMIT 0 1 GET # STORE d"),
            [(1, true, false), (10, false, true)]
        );
        assert_eq!(
            by_proc("sort", "SORT k STORE a STORE b"),
            [(1, true, false), (5, false, true)]
        );
        // A GET pattern named "store" is skipped with GET, not taken for the option.
        assert_eq!(by_proc("sort", "SORT k GET store"), [(1, true, false)]);
        assert_eq!(by_proc("sort_ro", "SORT_RO k STORE d"), [(1, true, false)]);
    }

    #[test]
    fn migrate_takes_the_keys_after_keys_only_with_an_empty_key() {
        let empty = |line: &str| {
            let mut a = args(line);
            a[3] = Bytes::new();
            let spec = CommandSpec {
                keys_proc: KeysProc::Migrate,
                ..CommandSpec::default()
            };
            let mut out = Vec::new();
            positions_with_access(&spec, &a, &mut out);
            out.into_iter().map(|(p, _)| p).collect::<Vec<_>>()
        };
        assert_eq!(by_proc("migrate", "MIGRATE h 1 k 0 10"), [(3, true, true)]);
        assert_eq!(empty("MIGRATE h 1 _ 0 10 KEYS a b"), [7, 8]);
        assert_eq!(empty("MIGRATE h 1 _ 0 10 AUTH keys KEYS a"), [9]);
        assert_eq!(
            empty("MIGRATE h 1 _ 0 10 COPY REPLACE AUTH2 u p KEYS a"),
            [12]
        );
        // A key and KEYS together is MIGRATE's syntax error: no keys.
        assert!(by_proc("migrate", "MIGRATE h 1 k 0 10 KEYS a").is_empty());
    }
}
