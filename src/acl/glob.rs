//! Redis's glob patterns (`*`, `?`, `[...]`, `\` escapes), compiled once when the users load and
//! matched without recursion, for the key (`~pattern`) and channel (`&pattern`) permissions.
//!
//! The semantics are Redis's `stringmatchlen` (no case folding), quirks included: an empty
//! string matches only the empty pattern (Redis's `*` does not match `""`), an unterminated
//! class ends at the end of the pattern, `-` ranges may be written backwards, and a `\` at the
//! very end is a literal backslash. Matching walks pattern and text once each, going back only
//! to the last `*`, so its cost is bounded by their product and its stack by nothing.

/// One element of a compiled pattern.
#[derive(Clone, PartialEq, Eq)]
enum Token {
    /// This byte.
    Byte(u8),
    /// `?`: any one byte.
    Any,
    /// `*`: any run of bytes (consecutive stars are one).
    Star,
    /// `[...]`: one byte of the set (256 bits), already negated for `[^...]`.
    Class(Box<[u64; 4]>),
}

impl Token {
    /// Whether this single-byte token takes `byte`.
    fn takes(&self, byte: u8) -> bool {
        match self {
            Token::Byte(b) => *b == byte,
            Token::Any => true,
            Token::Star => false,
            Token::Class(set) => set
                .get(usize::from(byte / 64))
                .is_some_and(|word| word >> (byte % 64) & 1 == 1),
        }
    }
}

/// A compiled glob pattern.
#[derive(Clone, PartialEq, Eq)]
pub struct Glob {
    tokens: Vec<Token>,
    /// The pattern as written, for `is_literally` and diagnostics.
    source: Box<[u8]>,
}

impl std::fmt::Debug for Glob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Glob({:?})", String::from_utf8_lossy(&self.source))
    }
}

impl Glob {
    /// Compiles `pattern`. Every byte string is a pattern, as in Redis.
    pub fn new(pattern: &[u8]) -> Glob {
        let mut tokens = Vec::new();
        let mut i = 0;
        while let Some(&byte) = pattern.get(i) {
            i += 1;
            match byte {
                b'*' => {
                    if tokens.last() != Some(&Token::Star) {
                        tokens.push(Token::Star);
                    }
                }
                b'?' => tokens.push(Token::Any),
                b'[' => {
                    let (set, next) = class(pattern, i);
                    tokens.push(Token::Class(Box::new(set)));
                    i = next;
                }
                b'\\' => match pattern.get(i) {
                    Some(&escaped) => {
                        tokens.push(Token::Byte(escaped));
                        i += 1;
                    }
                    None => tokens.push(Token::Byte(b'\\')),
                },
                _ => tokens.push(Token::Byte(byte)),
            }
        }
        Glob {
            tokens,
            source: pattern.into(),
        }
    }

    /// Whether the pattern, as written, is `text` (how `PSUBSCRIBE` patterns are checked).
    pub fn is_literally(&self, text: &[u8]) -> bool {
        *self.source == *text
    }

    /// Whether the pattern is exactly `*`: every non-empty string.
    pub fn is_star(&self) -> bool {
        *self.source == *b"*"
    }

    /// Whether `text` matches.
    pub fn matches(&self, text: &[u8]) -> bool {
        if text.is_empty() {
            // Redis's quirk: not even `*` matches the empty string.
            return self.tokens.is_empty();
        }
        let (mut p, mut t) = (0usize, 0usize);
        // After the last `*` seen: the token following it and the text position it was tried
        // from; on a mismatch the star takes one more byte and matching resumes there.
        let mut resume: Option<(usize, usize)> = None;
        while let Some(&byte) = text.get(t) {
            match self.tokens.get(p) {
                Some(Token::Star) => {
                    p += 1;
                    resume = Some((p, t));
                    continue;
                }
                Some(token) if token.takes(byte) => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
            match resume {
                Some((after_star, from)) => {
                    p = after_star;
                    t = from + 1;
                    resume = Some((after_star, t));
                }
                None => return false,
            }
        }
        self.tokens
            .get(p..)
            .is_some_and(|rest| rest.iter().all(|t| *t == Token::Star))
    }
}

/// The set of a class starting at `pattern[start]` (just after `[`), and the index after it.
fn class(pattern: &[u8], start: usize) -> ([u64; 4], usize) {
    let mut set = [0u64; 4];
    let mut add = |byte: u8| {
        if let Some(word) = set.get_mut(usize::from(byte / 64)) {
            *word |= 1 << (byte % 64);
        }
    };
    let mut i = start;
    let negated = pattern.get(i) == Some(&b'^');
    if negated {
        i += 1;
    }
    loop {
        let rest = pattern.get(i..).unwrap_or_default();
        match rest {
            // Unterminated: the class ends with the pattern.
            [] => break,
            [b'\\', escaped, ..] => {
                add(*escaped);
                i += 2;
            }
            [b']', ..] => {
                i += 1;
                break;
            }
            [low, b'-', high, ..] => {
                let (low, high) = if low <= high {
                    (*low, *high)
                } else {
                    (*high, *low)
                };
                for byte in low..=high {
                    add(byte);
                }
                i += 3;
            }
            [byte, ..] => {
                add(*byte);
                i += 1;
            }
        }
    }
    if negated {
        for word in &mut set {
            *word = !*word;
        }
    }
    (set, i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(pattern: &str, text: &str) -> bool {
        Glob::new(pattern.as_bytes()).matches(text.as_bytes())
    }

    #[test]
    fn stars_questions_and_literals() {
        assert!(m("app:*", "app:1"));
        assert!(m("app:*", "app:"));
        assert!(!m("app:*", "ap"));
        assert!(m("*", "x"));
        assert!(m("a*b*c", "axxbyyc"));
        assert!(!m("a*b*c", "axxbyy"));
        assert!(m("h?llo", "hello"));
        assert!(!m("h?llo", "hllo"));
        assert!(m("**a**", "bab"));
        assert!(m("exact", "exact"));
        assert!(!m("exact", "exactly"));
    }

    #[test]
    fn classes_ranges_negation_and_escapes() {
        assert!(m("h[ae]llo", "hallo"));
        assert!(!m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-c]llo", "hbllo"));
        assert!(m("h[c-a]llo", "hbllo"), "a backwards range is a range");
        assert!(m("a\\*b", "a*b"));
        assert!(!m("a\\*b", "axb"));
        assert!(m("[\\]]", "]"));
        assert!(m("a\\", "a\\"), "a trailing backslash is itself");
    }

    #[test]
    fn redis_quirks_are_kept() {
        assert!(!m("*", ""), "Redis's * does not match the empty string");
        assert!(m("", ""));
        assert!(!m("", "a"));
        assert!(
            m("[abc", "b"),
            "an unterminated class ends with the pattern"
        );
        assert!(!m("[", "a"), "an empty class matches nothing");
        assert!(m("[^", "a"), "an empty negated class matches anything");
        assert!(
            m("[a-]x", "]"),
            "a range may end with ], which then does not close the class"
        );
    }

    #[test]
    fn literal_comparison_is_on_the_pattern_as_written() {
        let glob = Glob::new(b"news.*");
        assert!(glob.is_literally(b"news.*"));
        assert!(!glob.is_literally(b"news.x"));
        assert!(Glob::new(b"*").is_star());
    }

    /// A direct, recursive reading of Redis's rules, for comparison on small inputs.
    fn reference(pattern: &[u8], text: &[u8]) -> bool {
        fn go(p: &[u8], t: &[u8], first: bool) -> bool {
            if !first && t.is_empty() {
                return p.iter().all(|&b| b == b'*');
            }
            if t.is_empty() {
                return p.is_empty();
            }
            match p {
                [] => false,
                [b'*', rest @ ..] => (0..=t.len()).any(|k| go(rest, &t[k..], false)),
                [b'?', rest @ ..] => go(rest, &t[1..], false),
                [b'[', ..] => {
                    let (set, next) = class(p, 1);
                    let b = t[0];
                    set[usize::from(b / 64)] >> (b % 64) & 1 == 1 && go(&p[next..], &t[1..], false)
                }
                [b'\\', e, rest @ ..] => *e == t[0] && go(rest, &t[1..], false),
                [c, rest @ ..] => *c == t[0] && go(rest, &t[1..], false),
            }
        }
        go(pattern, text, true)
    }

    proptest! {
        #[test]
        fn agrees_with_the_reference(
            pattern in proptest::collection::vec(prop::sample::select(b"ab*?[]^-\\".to_vec()), 0..8),
            text in proptest::collection::vec(prop::sample::select(b"ab]-^\\*".to_vec()), 0..8),
        ) {
            prop_assert_eq!(Glob::new(&pattern).matches(&text), reference(&pattern, &text));
        }

        #[test]
        fn never_panics_on_any_bytes(pattern in proptest::collection::vec(any::<u8>(), 0..64),
                                     text in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Glob::new(&pattern).matches(&text);
        }
    }

    #[test]
    fn the_worst_case_for_backtracking_stays_iterative() {
        // Redis's recursive matcher needed a nesting limit for patterns like this one; here
        // the work is at most pattern length times text length, on a flat loop.
        let pattern = "*a".repeat(5000) + "b";
        let text = "a".repeat(20_000);
        assert!(!Glob::new(pattern.as_bytes()).matches(text.as_bytes()));
    }
}
