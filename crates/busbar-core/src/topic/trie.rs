//! [`TopicTrie`]: the dispatch structure from filters to subscribers.
//!
//! Every transport that receives a message has to answer "which subscriptions want this
//! topic?". A list scanned with [`TopicFilter::matches`] costs time proportional to the
//! number of subscriptions, which hurts exactly when a process is busiest. The trie instead
//! walks the topic's levels once: at each node it follows the child named like the level
//! (a hash lookup) and the `+` child, and collects the values parked under `#`. The cost is
//! proportional to the topic's depth times the number of wildcard branches actually taken,
//! plus the number of matches — independent of how many unrelated filters are stored.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use super::name::{TopicFilter, dollar_excluded};

/// A map from [`TopicFilter`]s to values (typically subscriber handles) that finds every
/// value whose filter matches a topic without looking at the others.
///
/// A filter may hold many values (several subscriptions to the same filter); they are kept
/// in insertion order. [`for_each_match`](Self::for_each_match) does not allocate.
pub struct TopicTrie<V> {
    root: Node<V>,
    len: usize,
}

/// One level of the trie. A filter ending at this node stores its values in `values`; a
/// filter whose next (and therefore last) level is `#` stores them in `multi`, because `#`
/// has no children and matching it needs no further walking.
struct Node<V> {
    values: Vec<V>,
    multi: Vec<V>,
    children: HashMap<Box<str>, Node<V>, LevelHasher>,
    plus: Option<Box<Node<V>>>,
}

/// Hashes topic levels for the child maps. Levels are short strings and dispatch hashes one
/// per level of every message, so a multiply-rotate hash (FxHash's scheme) beats SipHash
/// several times over. Its weakness, crafted collisions, needs control of the *stored* keys,
/// which come from local subscriptions, not from message senders.
#[derive(Default, Clone, Copy)]
struct LevelHash(u64);

type LevelHasher = BuildHasherDefault<LevelHash>;

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl LevelHash {
    #[inline]
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for LevelHash {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(c);
            self.mix(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i));
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.mix(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

impl<V> Node<V> {
    fn new() -> Self {
        Node { values: Vec::new(), multi: Vec::new(), children: HashMap::default(), plus: None }
    }

    fn is_empty(&self) -> bool {
        self.values.is_empty()
            && self.multi.is_empty()
            && self.children.is_empty()
            && self.plus.is_none()
    }

    /// The child reached by `level`, which must not be `#` (that is stored in `multi`).
    fn child(&self, level: &str) -> Option<&Node<V>> {
        if level == "+" { self.plus.as_deref() } else { self.children.get(level) }
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut Node<V>> {
        if level == "+" { self.plus.as_deref_mut() } else { self.children.get_mut(level) }
    }

    fn child_or_insert(&mut self, level: &str) -> &mut Node<V> {
        if level == "+" {
            self.plus.get_or_insert_with(|| Box::new(Node::new()))
        } else {
            self.children.entry(Box::from(level)).or_insert_with(Node::new)
        }
    }

    fn remove_child(&mut self, level: &str) {
        if level == "+" {
            self.plus = None;
        } else {
            self.children.remove(level);
        }
    }
}

impl<V> Drop for Node<V> {
    /// Drops descendants iteratively: a filter may have tens of thousands of levels, and the
    /// default recursive drop would overflow the stack on such a chain.
    fn drop(&mut self) {
        if self.children.is_empty() && self.plus.is_none() {
            return;
        }
        let mut stack: Vec<Node<V>> = self.children.drain().map(|(_, n)| n).collect();
        stack.extend(self.plus.take().map(|b| *b));
        while let Some(mut node) = stack.pop() {
            stack.extend(node.children.drain().map(|(_, n)| n));
            stack.extend(node.plus.take().map(|b| *b));
            // `node` now has no children, so its own drop returns immediately.
        }
    }
}

/// Splits a filter into the path of levels to walk (`""` for the root) and whether it ends
/// in `#`, in which case the `#` is not walked but selects the `multi` slot of the node the
/// path leads to.
fn split_filter(filter: &TopicFilter) -> (&str, bool) {
    let s = filter.as_str();
    if s == "#" {
        ("", true)
    } else if let Some(prefix) = s.strip_suffix("/#") {
        (prefix, true)
    } else {
        (s, false)
    }
}

/// The levels of `path`, or none at all for the empty path (the root).
fn path_levels(path: &str) -> impl Iterator<Item = &str> {
    (!path.is_empty()).then(|| path.split('/')).into_iter().flatten()
}

impl<V> TopicTrie<V> {
    /// An empty trie.
    pub fn new() -> Self {
        TopicTrie { root: Node::new(), len: 0 }
    }

    /// Number of stored values (not of distinct filters).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no values are stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Removes every value.
    pub fn clear(&mut self) {
        self.root = Node::new();
        self.len = 0;
    }

    /// Stores `value` under `filter`. A filter may hold any number of values; inserting does
    /// not replace earlier ones.
    pub fn insert(&mut self, filter: &TopicFilter, value: V) {
        let (path, multi) = split_filter(filter);
        let mut node = &mut self.root;
        for level in path_levels(path) {
            node = node.child_or_insert(level);
        }
        if multi {
            node.multi.push(value);
        } else {
            node.values.push(value);
        }
        self.len += 1;
    }

    /// Removes and returns the first value stored under exactly `filter` (not under filters
    /// that merely overlap it) for which `pred` returns true. Nodes left empty are pruned,
    /// so a trie whose subscriptions come and go does not grow without bound.
    pub fn remove(&mut self, filter: &TopicFilter, mut pred: impl FnMut(&V) -> bool) -> Option<V> {
        let (path, multi) = split_filter(filter);

        // Find and take the value.
        let mut node = &mut self.root;
        for level in path_levels(path) {
            node = node.child_mut(level)?;
        }
        let slot = if multi { &mut node.multi } else { &mut node.values };
        let index = slot.iter().position(&mut pred)?;
        let value = slot.remove(index);
        self.len -= 1;
        let now_empty = node.is_empty();

        if now_empty {
            self.prune(path);
        }
        Some(value)
    }

    /// Cuts off the chain of nodes along `path` that became empty. Done iteratively in two
    /// walks (find the highest node that may go, then unlink it) so very deep filters cannot
    /// overflow the stack.
    fn prune(&mut self, path: &str) {
        // Depth (number of levels below the root) of the deepest node on the path that must
        // stay; everything below it on the path is empty apart from the path itself.
        let mut keep_depth = 0;
        let mut node = &self.root;
        for (depth, level) in path_levels(path).enumerate() {
            let keeps_others = !node.values.is_empty()
                || !node.multi.is_empty()
                || node.children.len() + usize::from(node.plus.is_some()) > 1;
            if keeps_others {
                keep_depth = depth;
            }
            match node.child(level) {
                Some(child) => node = child,
                None => return,
            }
        }

        // Unlink the child of the kept node along the path; dropping it frees the chain.
        let mut node = &mut self.root;
        let mut levels = path_levels(path);
        for level in levels.by_ref().take(keep_depth) {
            match node.child_mut(level) {
                Some(child) => node = child,
                None => return,
            }
        }
        if let Some(level) = levels.next() {
            node.remove_child(level);
        }
    }

    /// Calls `f` once for every stored value whose filter matches the concrete topic `topic`.
    ///
    /// `topic` is not validated (it usually comes straight off the wire); it is matched level
    /// by level as written, with the same semantics as [`TopicFilter::matches_str`],
    /// including the `$` rule. The order of calls is unspecified. Does not allocate.
    pub fn for_each_match<'a>(&'a self, topic: &str, mut f: impl FnMut(&'a V)) {
        let dollar = dollar_excluded(true, topic);
        let root = &self.root;
        if !dollar {
            root.multi.iter().for_each(&mut f);
        }
        let (level, rest) = split_level(topic);
        if let Some(child) = root.children.get(level) {
            walk(child, rest, &mut f);
        }
        if !dollar && let Some(plus) = root.plus.as_deref() {
            walk(plus, rest, &mut f);
        }
    }

    /// Every `(filter, value)` pair, in no particular order. Builds the filter strings, so
    /// it allocates; meant for debugging and introspection, not for dispatch.
    pub fn iter(&self) -> impl Iterator<Item = (TopicFilter, &V)> {
        let mut out = Vec::with_capacity(self.len);
        let mut stack: Vec<(String, &Node<V>)> = vec![(String::new(), &self.root)];
        while let Some((prefix, node)) = stack.pop() {
            let join = |last: &str| {
                if prefix.is_empty() { last.to_owned() } else { format!("{prefix}/{last}") }
            };
            if !node.values.is_empty() {
                let filter = TopicFilter::from_valid(prefix.clone());
                out.extend(node.values.iter().map(|v| (filter.clone(), v)));
            }
            if !node.multi.is_empty() {
                let filter = TopicFilter::from_valid(join("#"));
                out.extend(node.multi.iter().map(|v| (filter.clone(), v)));
            }
            if let Some(plus) = node.plus.as_deref() {
                stack.push((join("+"), plus));
            }
            for (level, child) in &node.children {
                stack.push((join(level), child));
            }
        }
        out.into_iter()
    }
}

/// The first level of `topic` and the remainder after its `/`, if any.
fn split_level(topic: &str) -> (&str, Option<&str>) {
    match topic.split_once('/') {
        Some((level, rest)) => (level, Some(rest)),
        None => (topic, None),
    }
}

/// Matches the remaining topic levels `rest` (`None` once all are consumed) below `node`.
///
/// Loops rather than recursing where only one branch continues, and recurses only where a
/// level matches both a literal child and a `+` child, so stack depth grows with the number
/// of such forks rather than with the topic's depth.
fn walk<'a, V>(mut node: &'a Node<V>, mut rest: Option<&str>, f: &mut impl FnMut(&'a V)) {
    loop {
        // '#' here matches the remaining levels, including none ("a/#" matches "a").
        node.multi.iter().for_each(&mut *f);
        let Some(remaining) = rest else {
            node.values.iter().for_each(&mut *f);
            return;
        };
        let (level, tail) = split_level(remaining);
        let literal = node.children.get(level);
        let plus = node.plus.as_deref();
        node = match (literal, plus) {
            (Some(literal), Some(plus)) => {
                walk(literal, tail, f);
                plus
            }
            (Some(next), None) | (None, Some(next)) => next,
            (None, None) => return,
        };
        rest = tail;
    }
}

impl<V> Default for TopicTrie<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: fmt::Debug> fmt::Debug for TopicTrie<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut entries: Vec<_> = self.iter().collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        f.debug_map().entries(entries.iter().map(|(k, v)| (k.as_str(), v))).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::Topic;
    use proptest::prelude::*;

    fn filter(s: &str) -> TopicFilter {
        TopicFilter::new(s).expect("valid filter")
    }

    fn matches<V: Clone + Ord>(trie: &TopicTrie<V>, topic: &str) -> Vec<V> {
        let mut out = Vec::new();
        trie.for_each_match(topic, |v| out.push(v.clone()));
        out.sort();
        out
    }

    fn node_count<V>(node: &Node<V>) -> usize {
        1 + node.children.values().map(node_count).sum::<usize>()
            + node.plus.as_deref().map_or(0, node_count)
    }

    #[test]
    fn dispatch() {
        let mut trie = TopicTrie::new();
        let filters = ["a/b", "a/+", "a/#", "#", "+/b", "+", "a/b/c", "$SYS/#", "+/+/c", "a/b"];
        for (i, f) in filters.iter().enumerate() {
            trie.insert(&filter(f), i);
        }
        assert_eq!(trie.len(), filters.len());
        assert_eq!(matches(&trie, "a/b"), [0, 1, 2, 3, 4, 9]);
        assert_eq!(matches(&trie, "a"), [2, 3, 5]);
        assert_eq!(matches(&trie, "a/b/c"), [2, 3, 6, 8]);
        assert_eq!(matches(&trie, "x/b"), [3, 4]);
        assert_eq!(matches(&trie, "$SYS/b"), [7]);
        assert_eq!(matches(&trie, "$SYS"), [7]);
        assert_eq!(matches(&trie, "x/y/z/w"), [3]);
        // Agrees with TopicFilter::matches.
        for t in ["a/b", "a", "a/b/c", "x/b", "$SYS/b", "b/$x", "q"] {
            let topic = Topic::new(t).expect("valid");
            let expected: Vec<usize> =
                (0..filters.len()).filter(|&i| filter(filters[i]).matches(&topic)).collect();
            assert_eq!(matches(&trie, t), expected, "{t}");
        }
    }

    #[test]
    fn remove_exact_filter_and_prune() {
        let mut trie = TopicTrie::new();
        trie.insert(&filter("a/b/c"), 1);
        trie.insert(&filter("a/b/c"), 2);
        trie.insert(&filter("a/#"), 3);
        trie.insert(&filter("a/+/c"), 4);
        // Only exactly this filter; overlapping ones are untouched.
        assert_eq!(trie.remove(&filter("a/+/+"), |_| true), None);
        assert_eq!(trie.remove(&filter("a/b/c"), |v| *v == 2), Some(2));
        assert_eq!(trie.remove(&filter("a/b/c"), |v| *v == 2), None);
        assert_eq!(matches(&trie, "a/b/c"), [1, 3, 4]);
        assert_eq!(trie.remove(&filter("a/b/c"), |_| true), Some(1));
        assert_eq!(trie.remove(&filter("a/#"), |_| true), Some(3));
        assert_eq!(node_count(&trie.root), 4); // root, a, +, c
        assert_eq!(trie.remove(&filter("a/+/c"), |_| true), Some(4));
        assert!(trie.is_empty());
        assert_eq!(node_count(&trie.root), 1);
        assert!(trie.root.is_empty());
    }

    #[test]
    fn root_filters() {
        let mut trie = TopicTrie::new();
        trie.insert(&filter("#"), 'h');
        trie.insert(&filter("+"), 'p');
        assert_eq!(matches(&trie, "x"), ['h', 'p']);
        assert_eq!(trie.remove(&filter("#"), |_| true), Some('h'));
        assert_eq!(trie.remove(&filter("+"), |_| true), Some('p'));
        assert_eq!(node_count(&trie.root), 1);
    }

    #[test]
    fn iter_and_debug() {
        let mut trie = TopicTrie::new();
        for f in ["a/b", "a/#", "#", "+/x", "a/b"] {
            trie.insert(&filter(f), f.len());
        }
        let mut pairs: Vec<(String, usize)> =
            trie.iter().map(|(f, v)| (f.as_str().to_owned(), *v)).collect();
        pairs.sort();
        let expected = [("#", 1), ("+/x", 3), ("a/#", 3), ("a/b", 3), ("a/b", 3)];
        let expected: Vec<(String, usize)> =
            expected.iter().map(|(f, v)| ((*f).to_owned(), *v)).collect();
        assert_eq!(pairs, expected);
        assert!(format!("{trie:?}").contains("\"a/#\": 3"));
    }

    #[test]
    fn very_deep_filters_do_not_overflow_the_stack() {
        let deep = vec!["a"; 30_000].join("/");
        let deep_plus = vec!["+"; 30_000].join("/");
        let mut trie = TopicTrie::new();
        trie.insert(&filter(&deep), 1);
        trie.insert(&filter(&format!("{deep}/#")), 2);
        trie.insert(&filter(&deep_plus), 3);
        assert_eq!(matches(&trie, &deep), [1, 2, 3]);
        assert_eq!(trie.remove(&filter(&deep), |_| true), Some(1));
        assert_eq!(trie.remove(&filter(&format!("{deep}/#")), |_| true), Some(2));
        trie.insert(&filter(&deep), 1);
        drop(trie);
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 256,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]
        /// Removing everything that was inserted, in any order, leaves only the root node:
        /// pruning must not leak empty nodes.
        #[test]
        fn removal_prunes_completely(
            (filters, order) in prop::collection::vec(
                (prop::collection::vec(prop::sample::select(vec!["a", "b", "+"]), 0..4), any::<bool>()),
                1..24,
            ).prop_flat_map(|f| {
                let n = f.len();
                (Just(f), Just((0..n).collect::<Vec<usize>>()).prop_shuffle())
            }),
        ) {
            let filters: Vec<TopicFilter> = filters
                .into_iter()
                .map(|(mut levels, hash)| {
                    if hash || levels.is_empty() {
                        levels.push("#");
                    }
                    filter(&levels.join("/"))
                })
                .collect();
            let mut trie = TopicTrie::new();
            for (i, f) in filters.iter().enumerate() {
                trie.insert(f, i);
            }
            for i in order {
                prop_assert_eq!(trie.remove(&filters[i], |v| *v == i), Some(i));
            }
            prop_assert!(trie.is_empty());
            prop_assert_eq!(node_count(&trie.root), 1);
            prop_assert!(trie.root.is_empty());
        }
    }
}
