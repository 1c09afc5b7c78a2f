//! Randomized check of `TopicTree` against the reference matcher.
//!
//! A seeded generator drives insert/remove sequences over a small alphabet of
//! levels (empty levels, `$`-prefixed levels, `+`, `#`), mirrored in a plain
//! vector of (filter, value) pairs. After every step the tree must report,
//! for random topic names, exactly the values that `filter_matches` finds in
//! the vector, and `any_match` must agree. Every few steps the whole state is
//! compared through `len`, `get_exact` and `for_each_entry`.

use shoal_protocols::topic::{
    filter_matches, validate_topic_filter, validate_topic_name, TopicTree,
};

/// SplitMix64: small, fast, and good enough to drive a test.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-enough integer in `0..bound` (`bound > 0`).
    fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound as u64) as usize
    }

    fn percent(&mut self, chance: usize) -> bool {
        self.below(100) < chance
    }

    fn pick<'a>(&mut self, choices: &[&'a str]) -> &'a str {
        choices[self.below(choices.len())]
    }
}

/// Levels that topic names and filters are built from. `x` appears only in
/// names, so some names match nothing but `#`-style filters.
const FILTER_LEVELS: [&str; 4] = ["a", "b", "", "$s"];
const NAME_LEVELS: [&str; 6] = ["a", "b", "", "$s", "x", "$SYS"];

fn random_filter(rng: &mut SplitMix64) -> String {
    let levels = 1 + rng.below(4);
    let mut filter = String::new();
    for index in 0..levels {
        if index > 0 {
            filter.push('/');
        }
        let level = if index + 1 == levels && rng.percent(20) {
            "#"
        } else if rng.percent(25) {
            "+"
        } else {
            rng.pick(&FILTER_LEVELS)
        };
        filter.push_str(level);
    }
    if filter.is_empty() {
        // One empty level is not a filter; two are.
        filter.push('/');
    }
    assert_eq!(
        validate_topic_filter(&filter),
        Ok(()),
        "generated {filter:?}"
    );
    filter
}

fn random_topic(rng: &mut SplitMix64) -> String {
    let levels = 1 + rng.below(5);
    let mut topic = String::new();
    for index in 0..levels {
        if index > 0 {
            topic.push('/');
        }
        topic.push_str(rng.pick(&NAME_LEVELS));
    }
    if topic.is_empty() {
        // One empty level is not a name; two are.
        topic.push('/');
    }
    assert_eq!(validate_topic_name(&topic), Ok(()), "generated {topic:?}");
    topic
}

/// The reference: every stored (filter, value) in insertion order.
#[derive(Default)]
struct Naive {
    entries: Vec<(String, u32)>,
}

impl Naive {
    fn matches(&self, topic: &str) -> Vec<u32> {
        let mut found: Vec<u32> = self
            .entries
            .iter()
            .filter(|(filter, _)| filter_matches(filter, topic))
            .map(|(_, value)| *value)
            .collect();
        found.sort_unstable();
        found
    }

    /// Removes what `TopicTree::remove_first` should remove.
    fn remove_first(&mut self, filter: &str, pred: impl Fn(u32) -> bool) -> Option<u32> {
        let index = self
            .entries
            .iter()
            .position(|(stored, value)| stored == filter && pred(*value))?;
        Some(self.entries.remove(index).1)
    }

    fn exact(&self, filter: &str) -> Vec<u32> {
        self.entries
            .iter()
            .filter(|(stored, _)| stored == filter)
            .map(|(_, value)| *value)
            .collect()
    }
}

fn tree_matches(tree: &TopicTree<u32>, topic: &str) -> Vec<u32> {
    let mut found = Vec::new();
    tree.for_each_match(topic, |value| found.push(*value));
    found.sort_unstable();
    found
}

fn check_matches(tree: &TopicTree<u32>, naive: &Naive, topic: &str, context: &str) {
    let expected = naive.matches(topic);
    assert_eq!(
        tree_matches(tree, topic),
        expected,
        "{context}: topic {topic:?}"
    );
    assert_eq!(
        tree.any_match(topic),
        !expected.is_empty(),
        "{context}: any_match {topic:?}"
    );
}

fn check_whole_state(tree: &TopicTree<u32>, naive: &Naive, rng: &mut SplitMix64, context: &str) {
    assert_eq!(tree.len(), naive.entries.len(), "{context}: len");
    assert_eq!(tree.is_empty(), naive.entries.is_empty(), "{context}");

    let mut entries = Vec::new();
    tree.for_each_entry(|filter, value| entries.push((filter.to_owned(), *value)));
    entries.sort_unstable();
    let mut expected = naive.entries.clone();
    expected.sort_unstable();
    assert_eq!(entries, expected, "{context}: for_each_entry");

    for (filter, _) in &naive.entries {
        let expected = naive.exact(filter);
        assert_eq!(
            tree.get_exact(filter),
            Some(&expected[..]),
            "{context}: get_exact {filter:?}"
        );
    }
    let filter = random_filter(rng);
    let expected = naive.exact(&filter);
    let expected = (!expected.is_empty()).then_some(&expected[..]);
    assert_eq!(
        tree.get_exact(&filter),
        expected,
        "{context}: get_exact {filter:?}"
    );

    if naive.entries.is_empty() {
        assert_eq!(
            tree.node_count(),
            0,
            "{context}: nodes left in an empty tree"
        );
    }
}

fn run_seed(seed: u64, steps: usize) {
    let mut rng = SplitMix64(seed);
    let mut tree = TopicTree::new();
    let mut naive = Naive::default();
    let mut next_value = 0u32;

    for step in 0..steps {
        let context = format!("seed {seed:#x} step {step}");
        // Grow towards ~60 entries, then hover around that size.
        let insert_chance = if naive.entries.len() < 60 { 65 } else { 35 };
        if naive.entries.is_empty() || rng.percent(insert_chance) {
            let (filter, value) = match rng.below(10) {
                // Same filter as an existing entry, new value.
                0 | 1 => {
                    let index = rng.below(naive.entries.len().max(1));
                    let filter = naive
                        .entries
                        .get(index)
                        .map_or_else(|| random_filter(&mut rng), |(filter, _)| filter.clone());
                    next_value += 1;
                    (filter, next_value)
                }
                // Exact duplicate of an existing (filter, value).
                2 if !naive.entries.is_empty() => {
                    naive.entries[rng.below(naive.entries.len())].clone()
                }
                _ => {
                    next_value += 1;
                    (random_filter(&mut rng), next_value)
                }
            };
            tree.insert(&filter, value);
            naive.entries.push((filter, value));
        } else {
            match rng.below(4) {
                // A specific stored value.
                0 | 1 => {
                    let (filter, value) = naive.entries[rng.below(naive.entries.len())].clone();
                    let expected = naive.remove_first(&filter, |v| v == value);
                    assert_eq!(expected, Some(value));
                    assert_eq!(
                        tree.remove_first(&filter, |v| *v == value),
                        expected,
                        "{context}: remove {value} from {filter:?}"
                    );
                }
                // Whatever comes first under a random filter, if anything.
                2 => {
                    let filter = random_filter(&mut rng);
                    let expected = naive.remove_first(&filter, |_| true);
                    assert_eq!(
                        tree.remove_first(&filter, |_| true),
                        expected,
                        "{context}: remove first of {filter:?}"
                    );
                }
                // A predicate that refuses everything changes nothing.
                _ => {
                    let filter = naive.entries[rng.below(naive.entries.len())].0.clone();
                    assert_eq!(
                        tree.remove_first(&filter, |_| false),
                        None,
                        "{context}: refused removal from {filter:?}"
                    );
                }
            }
        }

        for _ in 0..12 {
            let topic = random_topic(&mut rng);
            check_matches(&tree, &naive, &topic, &context);
        }
        if step % 16 == 0 {
            check_whole_state(&tree, &naive, &mut rng, &context);
        }
    }

    // Empty the tree in random order: every node must be freed.
    while !naive.entries.is_empty() {
        let (filter, value) = naive.entries[rng.below(naive.entries.len())].clone();
        let expected = naive.remove_first(&filter, |v| v == value);
        assert_eq!(tree.remove_first(&filter, |v| *v == value), expected);
        let topic = random_topic(&mut rng);
        check_matches(&tree, &naive, &topic, &format!("seed {seed:#x} draining"));
    }
    check_whole_state(&tree, &naive, &mut rng, &format!("seed {seed:#x} drained"));
}

#[test]
fn tree_agrees_with_reference_matcher() {
    for seed in [
        1,
        0x5EED,
        0xDEAD_BEEF,
        0x0123_4567_89AB_CDEF,
        42,
        7,
        0xC0FF_EE00,
        u64::MAX,
    ] {
        run_seed(seed, 400);
    }
}

/// Many filters sharing one level, so literal children move from the inline
/// vector to the hash map and back while the reference is checked.
#[test]
fn wide_levels_agree_with_reference_matcher() {
    let mut rng = SplitMix64(0xABCD);
    let mut tree = TopicTree::new();
    let mut naive = Naive::default();
    let ids: Vec<String> = (0..40).map(|id| format!("d{id}")).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let tails = ["up", "down", "+", "#"];
    for step in 0..600u32 {
        let context = format!("wide step {step}");
        if naive.entries.len() < 50 || rng.percent(50) {
            let filter = format!("dev/{}/{}", rng.pick(&id_refs), rng.pick(&tails));
            tree.insert(&filter, step);
            naive.entries.push((filter, step));
        } else {
            let (filter, value) = naive.entries[rng.below(naive.entries.len())].clone();
            let expected = naive.remove_first(&filter, |v| v == value);
            assert_eq!(
                tree.remove_first(&filter, |v| *v == value),
                expected,
                "{context}"
            );
        }
        for _ in 0..4 {
            let topic = format!(
                "dev/{}/{}",
                rng.pick(&id_refs),
                rng.pick(&["up", "down", "x"])
            );
            check_matches(&tree, &naive, &topic, &context);
        }
        check_matches(&tree, &naive, "dev", &context);
        if step % 50 == 0 {
            check_whole_state(&tree, &naive, &mut rng, &context);
        }
    }
    while let Some((filter, value)) = naive.entries.pop() {
        assert_eq!(tree.remove_first(&filter, |v| *v == value), Some(value));
    }
    assert!(tree.is_empty());
    assert_eq!(tree.node_count(), 0);
}
