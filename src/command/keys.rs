//! Key positions: Redis 7 key specifications, with the legacy first/last/step as fallback.

use bytes::Bytes;

use super::CommandSpec;
use crate::protocol::request::parse_int;

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

/// Appends the keys of `args` to `out`. Positions beyond the arguments are ignored: the backend
/// reports a malformed command itself.
/// Appends the positions in `args` of the command's keys to `out`, by key specs when present.
pub(super) fn positions(spec: &CommandSpec, args: &[Bytes], out: &mut Vec<usize>) {
    if spec.key_specs.is_empty() {
        legacy(spec, args, out);
    } else {
        for key_spec in &spec.key_specs {
            from_spec(key_spec, args, out);
        }
    }
}

/// Appends the positions of the command's keys with what it does with each: by key spec, so
/// each key has its spec's access; legacy positions have no flags.
pub(super) fn positions_with_access(
    spec: &CommandSpec,
    args: &[Bytes],
    out: &mut Vec<(usize, KeyAccess)>,
) {
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
            .is_some_and(|a| a.eq_ignore_ascii_case(keyword.as_bytes()))
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
}
