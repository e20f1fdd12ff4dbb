//! Longest-prefix match for the route table: a byte trie flattened into three arrays, so a
//! lookup walks the key once, touching one small node and a few edge bytes per key byte, and
//! costs the same with 100 prefixes as with 2 (a linear scan of the rules grows with each one).

use std::collections::BTreeMap;

/// Marks "no rule" in a node, which keeps a node at 16 bytes (an `Option<u32>` would take 8).
const NONE: u32 = u32::MAX;

/// One node: its outgoing edges are `edge_bytes[first_edge..first_edge + edge_count]`, sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    first_edge: u32,
    edge_count: u32,
    /// The rule whose prefix ends here, or [`NONE`].
    rule: u32,
    /// The same rule when it may match the text of a hash tag (it strips nothing), or [`NONE`].
    tag_rule: u32,
}

/// Which rules a lookup considers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Match {
    /// Every rule: the key's literal front.
    Literal,
    /// Rules that strip nothing: matching a hash tag's text, where no prefix sits at the key's
    /// front to be removed.
    Tag,
}

/// Prefix -> rule index, longest prefix first. Node 0 is the root (the empty prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PrefixTrie {
    nodes: Vec<Node>,
    edge_bytes: Vec<u8>,
    edge_targets: Vec<u32>,
}

/// A node while the trie is built.
#[derive(Default)]
struct Draft {
    edges: BTreeMap<u8, usize>,
    rule: Option<(u32, bool)>,
}

impl PrefixTrie {
    /// A trie of `prefixes` (each with whether its rule strips it), indexed by their position;
    /// of identical prefixes the first wins.
    pub(super) fn new<'a>(prefixes: impl IntoIterator<Item = (&'a [u8], bool)>) -> PrefixTrie {
        let mut drafts = vec![Draft::default()];
        for (index, (prefix, strip)) in prefixes.into_iter().enumerate() {
            let Ok(index) = u32::try_from(index) else {
                // More than 4 billion rules cannot come from a configuration file.
                break;
            };
            let mut at = 0;
            for &byte in prefix {
                let next = drafts.len();
                let Some(draft) = drafts.get_mut(at) else {
                    break;
                };
                at = *draft.edges.entry(byte).or_insert(next);
                if at == next {
                    drafts.push(Draft::default());
                }
            }
            if let Some(draft) = drafts.get_mut(at) {
                draft.rule.get_or_insert((index, strip));
            }
        }
        let mut trie = PrefixTrie {
            nodes: Vec::with_capacity(drafts.len()),
            edge_bytes: Vec::new(),
            edge_targets: Vec::new(),
        };
        for draft in drafts {
            let (rule, tag_rule) = match draft.rule {
                Some((rule, strip)) => (rule, if strip { NONE } else { rule }),
                None => (NONE, NONE),
            };
            trie.nodes.push(Node {
                first_edge: small(trie.edge_bytes.len()),
                edge_count: small(draft.edges.len()),
                rule,
                tag_rule,
            });
            for (byte, target) in draft.edges {
                trie.edge_bytes.push(byte);
                trie.edge_targets.push(small(target));
            }
        }
        trie
    }

    /// The index of the rule with the longest prefix of `key` that `kind` allows.
    pub(super) fn longest(&self, key: &[u8], kind: Match) -> Option<usize> {
        let pick = |node: &Node| match kind {
            Match::Literal => node.rule,
            Match::Tag => node.tag_rule,
        };
        let mut node = self.nodes.first()?;
        let mut best = pick(node);
        for &byte in key {
            let first = node.first_edge as usize;
            let edges = self
                .edge_bytes
                .get(first..first + node.edge_count as usize)
                .unwrap_or_default();
            // Few edges per node in real prefix sets: a scan beats a binary search.
            let Some(at) = edges.iter().position(|&b| b == byte) else {
                break;
            };
            let Some(next) = self
                .edge_targets
                .get(first + at)
                .and_then(|&t| self.nodes.get(t as usize))
            else {
                break;
            };
            node = next;
            if pick(node) != NONE {
                best = pick(node);
            }
        }
        (best != NONE).then_some(best as usize)
    }
}

/// A count or index of the trie as `u32`. A trie's size is bounded by the configured prefixes'
/// total length, far below 4 billion; saturating keeps a lookup in bounds (it misses) rather
/// than panicking if that ever failed.
fn small(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(NONE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins_and_stripping_rules_skip_tag_matches() {
        let trie = PrefixTrie::new([
            (&b"user:"[..], false),
            (&b"user:vip:"[..], true),
            (&b"u"[..], false),
            (&b"user:"[..], true),
        ]);
        assert_eq!(trie.longest(b"user:vip:1", Match::Literal), Some(1));
        assert_eq!(trie.longest(b"user:vip:1", Match::Tag), Some(0));
        assert_eq!(trie.longest(b"user:1", Match::Literal), Some(0));
        assert_eq!(trie.longest(b"us", Match::Literal), Some(2));
        assert_eq!(trie.longest(b"x", Match::Literal), None);
        assert_eq!(trie.longest(b"", Match::Literal), None);
        let everything = PrefixTrie::new([(&b""[..], false)]);
        assert_eq!(everything.longest(b"", Match::Literal), Some(0));
        assert_eq!(everything.longest(b"abc", Match::Tag), Some(0));
    }
}
