//! The subscription tree: topic filters stored level by level, so that one
//! topic name is matched against all of them in a single walk.
//!
//! Each node stands for a filter prefix. Its literal children sit in a short
//! vector (most nodes have one child, e.g. `devices/42` -> `down`) that turns
//! into a hash map once it passes [`INLINE_CHILDREN_MAX`] entries. The `+`
//! child and the values of filters ending in `#` at this level live in a
//! separate boxed [`Wildcards`], so nodes without wildcards pay one pointer for
//! them. Values of one filter keep their insertion order in a [`ValueList`],
//! which stores a single value inline.
//!
//! Every walk recurses one tree level per call. Insertion recurses once per
//! level of the filter, and everything else only as deep as the tree, so with
//! filters checked by [`validate_topic_filter`](super::validate_topic_filter)
//! no walk goes deeper than [`MAX_FILTER_LEVELS`](super::MAX_FILTER_LEVELS).
//! A match visits each node at most once: a node at depth `d` can only be
//! reached through the topic's first `d` levels.

use std::collections::HashMap;
use std::mem;

use super::split_level;

/// Literal children are kept in a vector up to this many, then in a hash map.
const INLINE_CHILDREN_MAX: usize = 8;

/// A hash map of children that shrinks to this many entries becomes a vector
/// again (below [`INLINE_CHILDREN_MAX`], so one subscription flapping at the
/// boundary does not rebuild the map each time).
const INLINE_CHILDREN_RETURN: usize = INLINE_CHILDREN_MAX / 2;

/// A subscription tree: topic filter -> values.
///
/// Values stored under the same filter are kept in insertion order. Matching
/// ([`for_each_match`](Self::for_each_match), [`any_match`](Self::any_match))
/// does not allocate. Removing the last value of a filter frees the nodes that
/// only that filter needed.
#[derive(Debug)]
pub struct TopicTree<V> {
    /// The node above the first level; it never holds values itself.
    root: Node<V>,
    /// How many values are stored.
    len: usize,
}

impl<V> Default for TopicTree<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> TopicTree<V> {
    /// An empty tree. Does not allocate.
    pub fn new() -> Self {
        Self {
            root: Node::new(),
            len: 0,
        }
    }

    /// Inserts `value` under `filter`. Duplicates are kept: the same value may
    /// be stored under the same filter more than once.
    ///
    /// `filter` must be valid as checked by
    /// [`validate_topic_filter`](super::validate_topic_filter); among other
    /// things that bounds the recursion of this call by
    /// [`MAX_FILTER_LEVELS`](super::MAX_FILTER_LEVELS). Debug builds assert it.
    pub fn insert(&mut self, filter: &str, value: V) {
        debug_assert!(
            super::validate_topic_filter(filter).is_ok(),
            "invalid topic filter {filter:?} inserted into a TopicTree"
        );
        insert_below(&mut self.root, Some(filter), value);
        self.len += 1;
    }

    /// Removes and returns the first value, in insertion order, stored under
    /// exactly `filter` for which `pred` returns true. Nodes left empty are
    /// freed. Returns `None` (and leaves the tree as it was) when there is none.
    pub fn remove_first(&mut self, filter: &str, mut pred: impl FnMut(&V) -> bool) -> Option<V> {
        let removed = remove_below(&mut self.root, Some(filter), &mut pred)?;
        self.len -= 1;
        Some(removed)
    }

    /// Calls `f` with every value whose filter matches the topic name `topic`.
    /// A value stored under several matching filters is seen once per filter.
    /// The order is unspecified.
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(&V)) {
        self.visit_matches(topic, &mut |values| {
            values.iter().for_each(&mut f);
            false
        });
    }

    /// True when at least one stored filter matches the topic name `topic`.
    /// Stops at the first match.
    pub fn any_match(&self, topic: &str) -> bool {
        self.visit_matches(topic, &mut |values| !values.is_empty())
    }

    /// The values stored under exactly the filter `filter` (compared as a
    /// string, not matched), in insertion order; `None` when there are none.
    pub fn get_exact(&self, filter: &str) -> Option<&[V]> {
        let mut node = &self.root;
        let mut rest = filter;
        loop {
            let (level, tail) = split_level(rest);
            node = match level {
                "#" if tail.is_none() => {
                    return non_empty(node.wildcards.as_deref()?.multi.as_slice());
                }
                "#" => return None,
                "+" => node.wildcards.as_deref()?.single.as_ref()?,
                _ => node.children.get(level)?,
            };
            match tail {
                Some(next) => rest = next,
                None => return non_empty(node.values.as_slice()),
            }
        }
    }

    /// Number of values stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no value is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Calls `f` with every stored value and the filter it is stored under,
    /// e.g. to replay the subscriptions elsewhere. The order is unspecified,
    /// except that values of one filter come in insertion order. This walk
    /// rebuilds filter strings in one reused buffer.
    pub fn for_each_entry(&self, mut f: impl FnMut(&str, &V)) {
        let mut filter = String::new();
        entries_below(&self.root, &mut filter, true, &mut f);
    }

    /// Number of nodes below the root (literal and `+` nodes plus wildcard
    /// blocks); zero for an empty tree. For tests of pruning and for memory
    /// accounting.
    #[doc(hidden)]
    pub fn node_count(&self) -> usize {
        count_below(&self.root)
    }

    /// Calls `visit` with the value list of every filter matching `topic`,
    /// stopping as soon as `visit` returns true. Returns whether it stopped.
    fn visit_matches<F>(&self, topic: &str, visit: &mut F) -> bool
    where
        F: FnMut(&[V]) -> bool,
    {
        let root = &self.root;
        let (level, tail) = split_level(topic);
        // §4.7.2: a filter starting with a wildcard does not match `$` topics.
        if !topic.starts_with('$') {
            if let Some(wildcards) = root.wildcards.as_deref() {
                if visit(wildcards.multi.as_slice()) {
                    return true;
                }
                if let Some(single) = &wildcards.single {
                    if visit_below(single, tail, visit) {
                        return true;
                    }
                }
            }
        }
        match root.children.get(level) {
            Some(child) => visit_below(child, tail, visit),
            None => false,
        }
    }
}

/// One filter prefix: the values of the filter that ends here and the
/// branches towards longer filters.
#[derive(Debug)]
struct Node<V> {
    /// Children for literal next levels.
    children: Children<V>,
    /// The `+` child and the `#` values, when any exist.
    wildcards: Option<Box<Wildcards<V>>>,
    /// Values of the filter that ends at this node.
    values: ValueList<V>,
}

/// The wildcard branches of a node.
#[derive(Debug)]
struct Wildcards<V> {
    /// The subtree whose next level is `+`.
    single: Option<Node<V>>,
    /// Values of the filter made of this node's prefix followed by `/#`.
    multi: ValueList<V>,
}

/// Literal children of a node, keyed by level.
#[derive(Debug)]
enum Children<V> {
    /// Up to [`INLINE_CHILDREN_MAX`] children, searched linearly; the vector
    /// grows by exactly one slot at a time, so one child costs one entry.
    Inline(Vec<(Box<str>, Node<V>)>),
    /// More children than that. Boxed so that the common inline case keeps
    /// `Children` at the size of a `Vec` instead of a `HashMap` with its
    /// hasher state; only the rare wide node pays for the extra pointer.
    #[allow(
        clippy::box_collection,
        reason = "keeps every node 24 bytes smaller; wide nodes are rare"
    )]
    Hashed(Box<HashMap<Box<str>, Node<V>>>),
}

/// Values stored under one filter, in insertion order. One value is stored
/// inline; `Many` always holds at least two.
#[derive(Debug)]
enum ValueList<V> {
    /// No value.
    Empty,
    /// Exactly one value, without a heap allocation.
    One(V),
    /// Two or more values.
    Many(Vec<V>),
}

impl<V> Node<V> {
    fn new() -> Self {
        Self {
            children: Children::Inline(Vec::new()),
            wildcards: None,
            values: ValueList::Empty,
        }
    }

    /// True when neither this node nor anything below it holds a value.
    /// (Empty nodes are pruned, so an empty subtree is always a single node.)
    fn is_empty(&self) -> bool {
        self.values.is_empty() && self.wildcards.is_none() && self.children.is_empty()
    }

    fn wildcards_mut(&mut self) -> &mut Wildcards<V> {
        self.wildcards.get_or_insert_with(|| {
            Box::new(Wildcards {
                single: None,
                multi: ValueList::Empty,
            })
        })
    }

    /// Frees the wildcard block once it holds nothing.
    fn prune_wildcards(&mut self) {
        let unused = self
            .wildcards
            .as_deref()
            .is_some_and(|wildcards| wildcards.single.is_none() && wildcards.multi.is_empty());
        if unused {
            self.wildcards = None;
        }
    }
}

/// Stores `value` under the filter levels `rest` below `node`; `None` means
/// the filter ends at `node`.
fn insert_below<V>(node: &mut Node<V>, rest: Option<&str>, value: V) {
    let Some(rest) = rest else {
        node.values.push(value);
        return;
    };
    let (level, tail) = split_level(rest);
    match level {
        "#" => node.wildcards_mut().multi.push(value),
        "+" => {
            let single = node.wildcards_mut().single.get_or_insert_with(Node::new);
            insert_below(single, tail, value);
        }
        _ => node
            .children
            .with_child(level, |child| insert_below(child, tail, value)),
    }
}

/// Removes the first value matching `pred` under exactly the filter levels
/// `rest` below `node`, freeing nodes that become empty on the way back up.
fn remove_below<V, P>(node: &mut Node<V>, rest: Option<&str>, pred: &mut P) -> Option<V>
where
    P: FnMut(&V) -> bool,
{
    let Some(rest) = rest else {
        return node.values.remove_first(pred);
    };
    let (level, tail) = split_level(rest);
    match level {
        "#" => {
            if tail.is_some() {
                return None;
            }
            let wildcards = node.wildcards.as_deref_mut()?;
            let removed = wildcards.multi.remove_first(pred)?;
            node.prune_wildcards();
            Some(removed)
        }
        "+" => {
            let wildcards = node.wildcards.as_deref_mut()?;
            let single = wildcards.single.as_mut()?;
            let removed = remove_below(single, tail, pred)?;
            if single.is_empty() {
                wildcards.single = None;
                node.prune_wildcards();
            }
            Some(removed)
        }
        _ => {
            let child = node.children.get_mut(level)?;
            let removed = remove_below(child, tail, pred)?;
            if child.is_empty() {
                node.children.remove(level);
            }
            Some(removed)
        }
    }
}

/// Matching below the root, where `node` has consumed the topic levels before
/// `rest` (`None`: all of them). See [`TopicTree::visit_matches`].
fn visit_below<V, F>(node: &Node<V>, rest: Option<&str>, visit: &mut F) -> bool
where
    F: FnMut(&[V]) -> bool,
{
    // A trailing `#` matches the remaining levels, none included.
    if let Some(wildcards) = node.wildcards.as_deref() {
        if visit(wildcards.multi.as_slice()) {
            return true;
        }
    }
    let Some(rest) = rest else {
        return visit(node.values.as_slice());
    };
    let (level, tail) = split_level(rest);
    if let Some(child) = node.children.get(level) {
        if visit_below(child, tail, visit) {
            return true;
        }
    }
    match node
        .wildcards
        .as_deref()
        .and_then(|wildcards| wildcards.single.as_ref())
    {
        Some(single) => visit_below(single, tail, visit),
        None => false,
    }
}

/// Reports every value below `node`, whose filter prefix is in `filter`.
fn entries_below<V, F>(node: &Node<V>, filter: &mut String, at_root: bool, f: &mut F)
where
    F: FnMut(&str, &V),
{
    for value in node.values.as_slice() {
        f(filter, value);
    }
    let prefix_len = filter.len();
    let push_level = |filter: &mut String, level: &str| {
        if !at_root {
            filter.push('/');
        }
        filter.push_str(level);
    };
    if let Some(wildcards) = node.wildcards.as_deref() {
        if !wildcards.multi.is_empty() {
            push_level(filter, "#");
            for value in wildcards.multi.as_slice() {
                f(filter, value);
            }
            filter.truncate(prefix_len);
        }
        if let Some(single) = &wildcards.single {
            push_level(filter, "+");
            entries_below(single, filter, false, f);
            filter.truncate(prefix_len);
        }
    }
    node.children.for_each(|level, child| {
        push_level(filter, level);
        entries_below(child, filter, false, f);
        filter.truncate(prefix_len);
    });
}

fn count_below<V>(node: &Node<V>) -> usize {
    let mut count = 0;
    if let Some(wildcards) = node.wildcards.as_deref() {
        count += 1;
        if let Some(single) = &wildcards.single {
            count += 1 + count_below(single);
        }
    }
    node.children
        .for_each(|_, child| count += 1 + count_below(child));
    count
}

fn non_empty<V>(values: &[V]) -> Option<&[V]> {
    (!values.is_empty()).then_some(values)
}

impl<V> Children<V> {
    fn is_empty(&self) -> bool {
        match self {
            Self::Inline(entries) => entries.is_empty(),
            Self::Hashed(map) => map.is_empty(),
        }
    }

    fn get(&self, level: &str) -> Option<&Node<V>> {
        match self {
            Self::Inline(entries) => entries
                .iter()
                .find(|(key, _)| **key == *level)
                .map(|(_, child)| child),
            Self::Hashed(map) => map.get(level),
        }
    }

    fn get_mut(&mut self, level: &str) -> Option<&mut Node<V>> {
        match self {
            Self::Inline(entries) => entries
                .iter_mut()
                .find(|(key, _)| **key == *level)
                .map(|(_, child)| child),
            Self::Hashed(map) => map.get_mut(level),
        }
    }

    /// Runs `f` on the child for `level`, creating the child first if needed.
    fn with_child<R>(&mut self, level: &str, f: impl FnOnce(&mut Node<V>) -> R) -> R {
        match self {
            Self::Inline(entries) => {
                if let Some((_, child)) = entries.iter_mut().find(|(key, _)| **key == *level) {
                    return f(child);
                }
                if entries.len() < INLINE_CHILDREN_MAX {
                    let mut child = Node::new();
                    let result = f(&mut child);
                    entries.reserve_exact(1);
                    entries.push((level.into(), child));
                    return result;
                }
                let mut map = HashMap::with_capacity(2 * INLINE_CHILDREN_MAX);
                map.extend(entries.drain(..));
                let result = f(map.entry(level.into()).or_insert_with(Node::new));
                *self = Self::Hashed(Box::new(map));
                result
            }
            Self::Hashed(map) => {
                if let Some(child) = map.get_mut(level) {
                    return f(child);
                }
                let mut child = Node::new();
                let result = f(&mut child);
                map.insert(level.into(), child);
                result
            }
        }
    }

    /// Drops the child for `level` and gives back memory the container no
    /// longer needs.
    fn remove(&mut self, level: &str) {
        match self {
            Self::Inline(entries) => {
                if let Some(index) = entries.iter().position(|(key, _)| **key == *level) {
                    entries.swap_remove(index);
                    entries.shrink_to_fit();
                }
            }
            Self::Hashed(map) => {
                map.remove(level);
                if map.len() <= INLINE_CHILDREN_RETURN {
                    let entries: Vec<_> = map.drain().collect();
                    *self = Self::Inline(entries);
                } else if map.capacity() > 4 * map.len() {
                    map.shrink_to(2 * map.len());
                }
            }
        }
    }

    fn for_each<'a>(&'a self, mut f: impl FnMut(&'a str, &'a Node<V>)) {
        match self {
            Self::Inline(entries) => entries.iter().for_each(|(key, child)| f(key, child)),
            Self::Hashed(map) => map.iter().for_each(|(key, child)| f(key, child)),
        }
    }
}

impl<V> ValueList<V> {
    fn is_empty(&self) -> bool {
        matches!(self, Self::Empty)
    }

    fn as_slice(&self) -> &[V] {
        match self {
            Self::Empty => &[],
            Self::One(value) => std::slice::from_ref(value),
            Self::Many(values) => values,
        }
    }

    fn push(&mut self, value: V) {
        *self = match mem::replace(self, Self::Empty) {
            Self::Empty => Self::One(value),
            Self::One(first) => Self::Many(vec![first, value]),
            Self::Many(mut values) => {
                values.push(value);
                Self::Many(values)
            }
        };
    }

    fn remove_first<P>(&mut self, pred: &mut P) -> Option<V>
    where
        P: FnMut(&V) -> bool,
    {
        match self {
            Self::Empty => None,
            Self::One(value) => {
                if !pred(value) {
                    return None;
                }
                match mem::replace(self, Self::Empty) {
                    Self::One(value) => Some(value),
                    other => {
                        *self = other;
                        None
                    }
                }
            }
            Self::Many(values) => {
                let index = values.iter().position(pred)?;
                let removed = values.remove(index);
                if values.len() == 1 {
                    if let Some(last) = values.pop() {
                        *self = Self::One(last);
                    }
                } else if values.capacity() >= 4 * values.len() {
                    values.shrink_to_fit();
                }
                Some(removed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{filter_matches, validate_topic_filter, MAX_FILTER_LEVELS};
    use super::*;

    fn matches<V: Clone + Ord>(tree: &TopicTree<V>, topic: &str) -> Vec<V> {
        let mut found = Vec::new();
        tree.for_each_match(topic, |value| found.push(value.clone()));
        found.sort();
        found
    }

    fn entries(tree: &TopicTree<u32>) -> Vec<(String, u32)> {
        let mut found = Vec::new();
        tree.for_each_entry(|filter, value| found.push((filter.to_owned(), *value)));
        found.sort();
        found
    }

    /// The filters of MQTT 3.1.1 §4.7, each stored with its index.
    const SPEC_FILTERS: [&str; 14] = [
        "sport/tennis/player1/#",
        "sport/#",
        "#",
        "sport/tennis/#",
        "sport/tennis/+",
        "sport/+",
        "+",
        "+/tennis/#",
        "sport/+/player1",
        "+/+",
        "/+",
        "+/monitor/Clients",
        "$SYS/#",
        "$SYS/monitor/+",
    ];

    fn spec_tree() -> TopicTree<usize> {
        let mut tree = TopicTree::new();
        for (index, filter) in SPEC_FILTERS.iter().enumerate() {
            tree.insert(filter, index);
        }
        tree
    }

    #[test]
    fn spec_examples_match_like_the_reference() {
        let tree = spec_tree();
        let topics = [
            "sport",
            "sport/",
            "sport/tennis",
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player1/score/wimbledon",
            "sport/tennis/player2",
            "finance",
            "/finance",
            "/",
            "$SYS",
            "$SYS/",
            "$SYS/monitor/Clients",
            "$SYS/broker/uptime",
            "a/monitor/Clients",
        ];
        for topic in topics {
            let expected: Vec<usize> = (0..SPEC_FILTERS.len())
                .filter(|&index| filter_matches(SPEC_FILTERS[index], topic))
                .collect();
            assert_eq!(matches(&tree, topic), expected, "topic {topic:?}");
            assert_eq!(tree.any_match(topic), !expected.is_empty(), "{topic:?}");
        }
    }

    #[test]
    fn spec_examples_spelled_out() {
        let tree = spec_tree();
        let names = |topic: &str| -> Vec<&str> {
            matches(&tree, topic)
                .into_iter()
                .map(|index| SPEC_FILTERS[index])
                .collect()
        };
        assert_eq!(names("sport"), ["sport/#", "#", "+"]);
        assert_eq!(
            names("sport/tennis/player1"),
            [
                "sport/tennis/player1/#",
                "sport/#",
                "#",
                "sport/tennis/#",
                "sport/tennis/+",
                "+/tennis/#",
                "sport/+/player1",
            ]
        );
        assert_eq!(
            names("sport/tennis/player1/score/wimbledon"),
            [
                "sport/tennis/player1/#",
                "sport/#",
                "#",
                "sport/tennis/#",
                "+/tennis/#"
            ]
        );
        assert_eq!(names("/finance"), ["#", "+/+", "/+"]);
        assert_eq!(names("finance"), ["#", "+"]);
        assert_eq!(names("sport/"), ["sport/#", "#", "sport/+", "+/+"]);
        assert_eq!(names("$SYS/monitor/Clients"), ["$SYS/#", "$SYS/monitor/+"]);
        assert_eq!(names("$SYS"), ["$SYS/#"]);
    }

    #[test]
    fn dollar_topics_skip_leading_wildcards_only() {
        let mut tree = TopicTree::new();
        tree.insert("#", 1);
        tree.insert("+/monitor/Clients", 2);
        tree.insert("+", 3);
        assert!(!tree.any_match("$SYS/monitor/Clients"));
        assert!(!tree.any_match("$SYS"));
        assert!(!tree.any_match("$"));
        assert_eq!(matches(&tree, "x/monitor/Clients"), [1, 2]);
        tree.insert("$SYS/#", 4);
        tree.insert("$SYS/+/Clients", 5);
        assert_eq!(matches(&tree, "$SYS/monitor/Clients"), [4, 5]);
        assert_eq!(matches(&tree, "$SYS"), [4]);
        assert!(!tree.any_match("$other"));
        // "$" further down is an ordinary character.
        assert_eq!(matches(&tree, "a/$SYS"), [1]);
    }

    #[test]
    fn duplicates_keep_insertion_order() {
        let mut tree = TopicTree::new();
        for value in [3, 1, 3, 2] {
            tree.insert("devices/+/up", value);
        }
        tree.insert("devices/#", 9);
        assert_eq!(tree.len(), 5);
        assert_eq!(tree.get_exact("devices/+/up"), Some(&[3, 1, 3, 2][..]));
        assert_eq!(matches(&tree, "devices/7/up"), [1, 2, 3, 3, 9]);

        assert_eq!(tree.remove_first("devices/+/up", |&v| v == 3), Some(3));
        assert_eq!(tree.get_exact("devices/+/up"), Some(&[1, 3, 2][..]));
        assert_eq!(tree.remove_first("devices/+/up", |_| true), Some(1));
        assert_eq!(tree.remove_first("devices/+/up", |&v| v == 7), None);
        assert_eq!(tree.remove_first("devices/+/down", |_| true), None);
        assert_eq!(tree.remove_first("devices/+", |_| true), None);
        assert_eq!(tree.get_exact("devices/+/up"), Some(&[3, 2][..]));
        assert_eq!(tree.len(), 3);
        assert_eq!(tree.remove_first("devices/+/up", |&v| v == 2), Some(2));
        assert_eq!(tree.get_exact("devices/+/up"), Some(&[3][..]));
        assert_eq!(tree.remove_first("devices/+/up", |_| true), Some(3));
        assert_eq!(tree.get_exact("devices/+/up"), None);
        assert_eq!(matches(&tree, "devices/7/up"), [9]);
        assert_eq!(tree.remove_first("devices/#", |_| true), Some(9));
        assert!(tree.is_empty());
        assert_eq!(tree.node_count(), 0);
    }

    #[test]
    fn removal_prunes_every_node() {
        let mut tree = TopicTree::new();
        let filters = [
            "a",
            "a/b",
            "a/b/c",
            "a/+/c",
            "a/#",
            "+",
            "#",
            "+/#",
            "/",
            "//",
            "a//b",
            "$SYS/#",
            "a/b/c/d/e/f",
            "+/+/+",
        ];
        for (value, filter) in filters.iter().enumerate() {
            tree.insert(filter, value);
        }
        assert!(tree.node_count() > 0);
        assert_eq!(tree.len(), filters.len());
        // Remove in an order different from insertion.
        for (value, filter) in filters.iter().enumerate().rev().step_by(2) {
            assert_eq!(tree.remove_first(filter, |&v| v == value), Some(value));
        }
        for (value, filter) in filters.iter().enumerate().rev().skip(1).step_by(2) {
            assert_eq!(tree.remove_first(filter, |&v| v == value), Some(value));
        }
        assert_eq!(tree.len(), 0);
        assert!(tree.is_empty());
        assert_eq!(tree.node_count(), 0);
        assert!(!tree.any_match("a/b/c"));
    }

    #[test]
    fn removing_a_prefix_keeps_longer_filters() {
        let mut tree = TopicTree::new();
        tree.insert("a/b", 1);
        tree.insert("a/b/c", 2);
        tree.insert("a/+/c", 3);
        // a, a/b, a/b/c, the wildcard block of a, a/+, a/+/c
        assert_eq!(tree.node_count(), 6);
        assert_eq!(tree.remove_first("a/b", |_| true), Some(1));
        assert_eq!(tree.node_count(), 6);
        assert_eq!(matches(&tree, "a/b/c"), [2, 3]);
        assert_eq!(tree.remove_first("a/+/c", |_| true), Some(3));
        assert_eq!(tree.node_count(), 3);
        assert_eq!(matches(&tree, "a/b/c"), [2]);
    }

    #[test]
    fn node_count_of_simple_shapes() {
        let mut tree = TopicTree::new();
        assert_eq!(tree.node_count(), 0);
        tree.insert("devices/1/down", 1);
        assert_eq!(tree.node_count(), 3);
        tree.insert("devices/2/down", 2);
        assert_eq!(tree.node_count(), 5);
        tree.insert("devices/#", 3);
        assert_eq!(tree.node_count(), 6);
        tree.insert("+", 4);
        assert_eq!(tree.node_count(), 8);
    }

    #[test]
    fn many_children_switch_to_a_map_and_back() {
        let mut tree = TopicTree::new();
        let count = 200u32;
        for id in 0..count {
            tree.insert(&format!("devices/{id}/down"), id);
        }
        tree.insert("devices/+/down", count);
        for id in 0..count {
            assert_eq!(matches(&tree, &format!("devices/{id}/down")), [id, count]);
        }
        assert!(!tree.any_match(&format!("devices/{count}/up")));
        assert_eq!(tree.get_exact("devices/17/down"), Some(&[17][..]));
        for id in (0..count).filter(|id| id % 3 != 0) {
            assert_eq!(
                tree.remove_first(&format!("devices/{id}/down"), |_| true),
                Some(id)
            );
        }
        for id in 0..count {
            let expected: Vec<u32> = if id % 3 == 0 {
                vec![id, count]
            } else {
                vec![count]
            };
            assert_eq!(matches(&tree, &format!("devices/{id}/down")), expected);
        }
        for id in (0..count).step_by(3) {
            assert_eq!(
                tree.remove_first(&format!("devices/{id}/down"), |_| true),
                Some(id)
            );
        }
        assert_eq!(tree.remove_first("devices/+/down", |_| true), Some(count));
        assert!(tree.is_empty());
        assert_eq!(tree.node_count(), 0);
    }

    #[test]
    fn any_match_stops_at_first_and_ignores_empty_nodes() {
        let mut tree = TopicTree::new();
        tree.insert("a/b/c", 1u32);
        // "a" and "a/b" exist as nodes but hold no values.
        assert!(!tree.any_match("a"));
        assert!(!tree.any_match("a/b"));
        assert!(tree.any_match("a/b/c"));
        assert!(!tree.any_match("a/b/c/d"));
        tree.insert("a/#", 2);
        assert!(tree.any_match("a"));
        let mut calls = 0;
        tree.visit_matches("a/b/c", &mut |values: &[u32]| {
            calls += 1;
            !values.is_empty()
        });
        // The `#` list of "a" is visited first and stops the walk.
        assert_eq!(calls, 1);
    }

    #[test]
    fn get_exact_compares_strings() {
        let mut tree = TopicTree::new();
        tree.insert("a/+", 1);
        tree.insert("a/#", 2);
        tree.insert("a/b", 3);
        tree.insert("#", 4);
        tree.insert("/", 5);
        assert_eq!(tree.get_exact("a/+"), Some(&[1][..]));
        assert_eq!(tree.get_exact("a/#"), Some(&[2][..]));
        assert_eq!(tree.get_exact("a/b"), Some(&[3][..]));
        assert_eq!(tree.get_exact("#"), Some(&[4][..]));
        assert_eq!(tree.get_exact("/"), Some(&[5][..]));
        assert_eq!(tree.get_exact("a"), None);
        assert_eq!(tree.get_exact("a/c"), None);
        assert_eq!(tree.get_exact("+"), None);
        assert_eq!(tree.get_exact("a/#/b"), None);
        assert_eq!(tree.get_exact("a/b/c"), None);
        assert_eq!(tree.get_exact(""), None);
    }

    #[test]
    fn for_each_entry_rebuilds_filters() {
        let mut tree = TopicTree::new();
        let filters = [
            "#", "+", "/", "//", "/+", "+/", "a", "a/#", "a/+/#", "a//b", "$SYS/#", "a/b/c",
        ];
        for (value, filter) in (0u32..).zip(filters) {
            tree.insert(filter, value);
        }
        tree.insert("a", 100);
        let mut expected: Vec<(String, u32)> = (0u32..)
            .zip(filters)
            .map(|(value, filter)| (filter.to_owned(), value))
            .collect();
        expected.push(("a".to_owned(), 100));
        expected.sort();
        assert_eq!(entries(&tree), expected);

        // Replaying the entries builds an equivalent tree.
        let mut replica = TopicTree::new();
        tree.for_each_entry(|filter, value| replica.insert(filter, *value));
        assert_eq!(entries(&replica), expected);
        assert_eq!(replica.node_count(), tree.node_count());
        assert_eq!(replica.len(), tree.len());
    }

    #[test]
    fn deepest_valid_filter_and_deep_names_do_not_exhaust_the_stack() {
        let all_plus = vec!["+"; MAX_FILTER_LEVELS].join("/");
        let all_empty = "/".repeat(MAX_FILTER_LEVELS - 1);
        let plus_then_hash = format!("{}/#", vec!["+"; MAX_FILTER_LEVELS - 1].join("/"));
        let filters = [all_plus, all_empty, plus_then_hash];
        let mut tree = TopicTree::new();
        for (value, filter) in filters.iter().enumerate() {
            assert_eq!(validate_topic_filter(filter), Ok(()));
            tree.insert(filter, value);
        }
        let [_, all_empty, _] = &filters;
        assert_eq!(matches(&tree, all_empty), [0, 1, 2]);
        assert_eq!(matches(&tree, &"x/".repeat(32_000)), [2]);
        assert_eq!(matches(&tree, &"/".repeat(60_000)), [2]);
        let mut replayed = 0;
        tree.for_each_entry(|_, _| replayed += 1);
        assert_eq!(replayed, 3);
        for (value, filter) in filters.iter().enumerate() {
            assert_eq!(tree.remove_first(filter, |_| true), Some(value));
        }
        assert_eq!(tree.node_count(), 0);
    }

    #[test]
    fn value_list_keeps_order_and_shape() {
        let mut list = ValueList::Empty;
        assert!(list.as_slice().is_empty());
        list.push('a');
        assert!(matches!(list, ValueList::One('a')));
        list.push('b');
        list.push('c');
        assert_eq!(list.as_slice(), ['a', 'b', 'c']);
        assert_eq!(list.remove_first(&mut |&c| c == 'b'), Some('b'));
        assert_eq!(list.remove_first(&mut |&c| c == 'z'), None);
        assert_eq!(list.remove_first(&mut |_| true), Some('a'));
        assert!(matches!(list, ValueList::One('c')));
        assert_eq!(list.remove_first(&mut |&c| c == 'a'), None);
        assert_eq!(list.remove_first(&mut |_| true), Some('c'));
        assert!(list.is_empty());
    }

    #[test]
    fn layout_stays_small() {
        // One literal child entry of a node: key, children, wildcards, values.
        assert!(size_of::<(Box<str>, Node<u64>)>() <= 72);
        assert!(size_of::<ValueList<u64>>() <= 24);
    }
}
