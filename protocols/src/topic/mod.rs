//! MQTT topic names, topic filters, and the subscription tree that matches
//! them (MQTT 3.1.1 and MQTT 5.0, section 4.7).
//!
//! - A topic is split into *levels* by `/`. Empty levels are valid: `/finance`
//!   has the levels `""` and `"finance"`, and `/` has two empty levels.
//! - `#` (multi-level wildcard) may only be the whole last level of a filter.
//!   It matches any number of levels, including none: `sport/#` matches
//!   `sport`, `sport/` and `sport/tennis/player1`.
//! - `+` (single-level wildcard) may only be a whole level. It matches exactly
//!   one level, which may be empty: `sport/+` matches `sport/` but not `sport`.
//! - A topic name whose first character is `$` is not matched by a filter whose
//!   first level is `#` or `+`, so `#` does not see `$SYS/uptime`, while
//!   `$SYS/#` does.
//! - Topic names carry no wildcards. Names and filters are non-empty UTF-8 of
//!   at most [`MAX_TOPIC_BYTES`] bytes without U+0000.
//!
//! Invariant: matching against a [`TopicTree`] never allocates and recurses
//! only as deep as the deepest stored filter, which [`validate_topic_filter`]
//! bounds by [`MAX_FILTER_LEVELS`]. Topic names have no level limit: a name
//! deeper than every stored filter is only walked as far as the tree goes.
//!
//! ```
//! use shoal_protocols::topic::{validate_topic_filter, validate_topic_name, TopicTree};
//!
//! let mut subscriptions = TopicTree::new();
//! for (filter, client) in [("devices/+/up", 1), ("devices/42/#", 2), ("#", 3)] {
//!     validate_topic_filter(filter).unwrap();
//!     subscriptions.insert(filter, client);
//! }
//! validate_topic_name("devices/42/up").unwrap();
//! let mut receivers = Vec::new();
//! subscriptions.for_each_match("devices/42/up", |client| receivers.push(*client));
//! receivers.sort_unstable();
//! assert_eq!(receivers, [1, 2, 3]);
//! assert!(!subscriptions.any_match("$SYS/uptime"));
//! ```

mod tree;

pub use tree::TopicTree;

/// Longest topic name or topic filter, in bytes of UTF-8 (the limit of an
/// MQTT UTF-8 encoded string).
pub const MAX_TOPIC_BYTES: usize = 65535;

/// Most levels a topic filter may have.
///
/// MQTT sets no such limit; Shoal sets one so that the subscription tree has a
/// bounded depth and its recursive walks a bounded stack. Topic names are not
/// limited: a 32k-level name is matched without recursing past the tree.
pub const MAX_FILTER_LEVELS: usize = 1024;

/// Why a string is not a valid topic name or topic filter.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TopicError {
    /// The string is empty; names and filters need at least one character.
    #[error("topic is empty")]
    Empty,
    /// The string is longer than [`MAX_TOPIC_BYTES`].
    #[error("topic is {bytes} bytes long, over the limit of {limit} bytes", limit = MAX_TOPIC_BYTES)]
    TooLong {
        /// Length of the rejected string in bytes.
        bytes: usize,
    },
    /// The string contains the null character U+0000.
    #[error("topic contains the null character U+0000")]
    NullChar,
    /// A topic name contains `+` or `#`; wildcards belong only in filters.
    #[error("topic name contains a wildcard character ('+' or '#')")]
    WildcardInName,
    /// `#` appears somewhere other than as the whole last level of a filter.
    #[error("'#' must be the whole last level of a topic filter")]
    MisplacedMultiLevel,
    /// `+` appears inside a level instead of being the whole level.
    #[error("'+' must be a whole level of a topic filter")]
    MisplacedSingleLevel,
    /// A filter has more than [`MAX_FILTER_LEVELS`] levels.
    #[error("topic filter has {levels} levels, over the limit of {limit}", limit = MAX_FILTER_LEVELS)]
    TooManyLevels {
        /// Number of levels in the rejected filter.
        levels: usize,
    },
}

/// Checks the rules shared by names and filters: non-empty, length, no U+0000.
fn validate_common(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > MAX_TOPIC_BYTES {
        return Err(TopicError::TooLong { bytes: topic.len() });
    }
    if topic.as_bytes().contains(&0) {
        return Err(TopicError::NullChar);
    }
    Ok(())
}

/// Checks that `name` is a valid topic name, the topic a message is published
/// on: non-empty, at most [`MAX_TOPIC_BYTES`] bytes, no U+0000, no wildcards.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    validate_common(name)?;
    if name.bytes().any(|byte| byte == b'+' || byte == b'#') {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Checks that `filter` is a valid topic filter: the rules of
/// [`validate_topic_name`] except that `+` may be any whole level and `#` the
/// whole last level, and at most [`MAX_FILTER_LEVELS`] levels.
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    validate_common(filter)?;
    let mut levels = 0usize;
    let mut rest = Some(filter);
    while let Some(remaining) = rest {
        let (level, tail) = split_level(remaining);
        levels += 1;
        if level.contains('#') && (level != "#" || tail.is_some()) {
            return Err(TopicError::MisplacedMultiLevel);
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::MisplacedSingleLevel);
        }
        rest = tail;
    }
    if levels > MAX_FILTER_LEVELS {
        return Err(TopicError::TooManyLevels { levels });
    }
    Ok(())
}

/// True when `filter` contains a wildcard level (`+` or `#`), so it can match
/// more than the one topic name spelled like it.
pub fn is_wildcard_filter(filter: &str) -> bool {
    filter.bytes().any(|byte| byte == b'+' || byte == b'#')
}

/// Reference matcher: does `filter` match the topic name `topic`?
///
/// Both are assumed valid. This walks the two strings level by level; it is
/// the specification the [`TopicTree`] is tested against, and fine for a
/// one-off check. To match one topic against many filters, use a tree.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    if topic.starts_with('$') && matches!(filter_levels.clone().next(), Some("#" | "+")) {
        return false;
    }
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(filter_level), Some(topic_level)) if filter_level == topic_level => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Splits the first level off `rest`: `("a", Some("b/c"))` for `"a/b/c"`, and
/// `("c", None)` for `"c"`, whose only level is also the last.
#[inline]
fn split_level(rest: &str) -> (&str, Option<&str>) {
    match rest.split_once('/') {
        Some((level, tail)) => (level, Some(tail)),
        None => (rest, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // MQTT 3.1.1 §4.7.1.2 "Multi-level wildcard".
    #[test]
    fn multi_level_wildcard_examples() {
        let filter = "sport/tennis/player1/#";
        assert_eq!(validate_topic_filter(filter), Ok(()));
        for topic in [
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player1/score/wimbledon",
        ] {
            assert!(
                filter_matches(filter, topic),
                "{filter} should match {topic}"
            );
        }
        assert!(!filter_matches(filter, "sport/tennis/player2"));
        assert!(!filter_matches(filter, "sport/tennis"));

        // "sport/#" also matches the singular "sport", since # includes the parent level.
        assert!(filter_matches("sport/#", "sport"));
        assert!(filter_matches("sport/#", "sport/"));

        // "#" is valid and will receive every application message.
        assert_eq!(validate_topic_filter("#"), Ok(()));
        for topic in ["sport", "/", "a/b/c", "/finance"] {
            assert!(filter_matches("#", topic), "# should match {topic}");
        }

        // "sport/tennis/#" is valid; "sport/tennis#" and "sport/tennis/#/ranking" are not.
        assert_eq!(validate_topic_filter("sport/tennis/#"), Ok(()));
        assert_eq!(
            validate_topic_filter("sport/tennis#"),
            Err(TopicError::MisplacedMultiLevel)
        );
        assert_eq!(
            validate_topic_filter("sport/tennis/#/ranking"),
            Err(TopicError::MisplacedMultiLevel)
        );
        assert_eq!(
            validate_topic_filter("#/"),
            Err(TopicError::MisplacedMultiLevel)
        );
        assert_eq!(
            validate_topic_filter("##"),
            Err(TopicError::MisplacedMultiLevel)
        );
    }

    // MQTT 3.1.1 §4.7.1.3 "Single level wildcard".
    #[test]
    fn single_level_wildcard_examples() {
        // "sport/tennis/+" matches "sport/tennis/player1" and "sport/tennis/player2",
        // but not "sport/tennis/player1/ranking".
        assert!(filter_matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(filter_matches("sport/tennis/+", "sport/tennis/player2"));
        assert!(!filter_matches(
            "sport/tennis/+",
            "sport/tennis/player1/ranking"
        ));

        // "sport/+" does not match "sport" but does match "sport/".
        assert!(!filter_matches("sport/+", "sport"));
        assert!(filter_matches("sport/+", "sport/"));

        // "+", "+/tennis/#" and "sport/+/player1" are valid; "sport+" is not.
        for filter in ["+", "+/tennis/#", "sport/+/player1", "+/+", "/+", "+/#"] {
            assert_eq!(validate_topic_filter(filter), Ok(()), "{filter}");
        }
        assert_eq!(
            validate_topic_filter("sport+"),
            Err(TopicError::MisplacedSingleLevel)
        );
        assert_eq!(
            validate_topic_filter("sport/+tennis"),
            Err(TopicError::MisplacedSingleLevel)
        );
        assert_eq!(
            validate_topic_filter("++"),
            Err(TopicError::MisplacedSingleLevel)
        );

        // "/finance" is matched by "+/+" and "/+", but not by "+".
        assert!(filter_matches("+/+", "/finance"));
        assert!(filter_matches("/+", "/finance"));
        assert!(!filter_matches("+", "/finance"));
        assert!(filter_matches("+", "finance"));

        assert!(filter_matches("sport/+/player1", "sport/tennis/player1"));
        assert!(filter_matches("+/tennis/#", "sport/tennis"));
        assert!(filter_matches("+/#", "sport"));
    }

    // MQTT 3.1.1 §4.7.2 "Topics beginning with $".
    #[test]
    fn dollar_topic_examples() {
        assert!(!filter_matches("#", "$SYS"));
        assert!(!filter_matches("#", "$SYS/broker/uptime"));
        assert!(!filter_matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(!filter_matches("+", "$SYS"));
        assert!(!filter_matches("+/#", "$SYS/x"));
        assert!(filter_matches("$SYS/#", "$SYS/"));
        assert!(filter_matches("$SYS/#", "$SYS"));
        assert!(filter_matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
        // Only the first character counts: "$" deeper in the name is ordinary.
        assert!(filter_matches("#", "a/$SYS"));
        assert!(filter_matches("a/+", "a/$SYS"));
        assert!(filter_matches("$", "$"));
    }

    #[test]
    fn levels_and_empty_levels() {
        assert!(filter_matches("/", "/"));
        assert!(filter_matches("+/+", "/"));
        assert!(!filter_matches("+", "/"));
        assert!(filter_matches("a//b", "a//b"));
        assert!(filter_matches("a/+/b", "a//b"));
        assert!(!filter_matches("a/b", "a//b"));
        assert!(!filter_matches("a/b", "a/b/"));
        assert!(!filter_matches("a/b/", "a/b"));
        assert!(filter_matches("ACCOUNTS", "ACCOUNTS"));
        assert!(!filter_matches("ACCOUNTS", "Accounts"));
        assert!(!filter_matches("a/b/c", "a/b"));
        assert!(filter_matches("a/b/#", "a/b/c/d/e"));
    }

    #[test]
    fn name_validation() {
        for name in [
            "a",
            "/",
            "//",
            "sport/tennis/player1",
            "/finance",
            "$SYS/x",
            "caf\u{e9}",
            " ",
        ] {
            assert_eq!(validate_topic_name(name), Ok(()), "{name:?}");
        }
        assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
        assert_eq!(validate_topic_name("a\0b"), Err(TopicError::NullChar));
        assert_eq!(validate_topic_name("a/+"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name("#"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name("a/b#"), Err(TopicError::WildcardInName));

        let longest = "x".repeat(MAX_TOPIC_BYTES);
        assert_eq!(validate_topic_name(&longest), Ok(()));
        let too_long = "x".repeat(MAX_TOPIC_BYTES + 1);
        assert_eq!(
            validate_topic_name(&too_long),
            Err(TopicError::TooLong {
                bytes: MAX_TOPIC_BYTES + 1
            })
        );
        // Names have no level limit.
        assert_eq!(validate_topic_name(&"/".repeat(MAX_TOPIC_BYTES)), Ok(()));
    }

    #[test]
    fn filter_validation() {
        assert_eq!(validate_topic_filter(""), Err(TopicError::Empty));
        assert_eq!(validate_topic_filter("+/\0"), Err(TopicError::NullChar));
        assert_eq!(
            validate_topic_filter(&"+".repeat(MAX_TOPIC_BYTES + 2)),
            Err(TopicError::TooLong {
                bytes: MAX_TOPIC_BYTES + 2
            })
        );
        for filter in ["/", "a//b", "//#", "$SYS/#", "a/b/c"] {
            assert_eq!(validate_topic_filter(filter), Ok(()), "{filter}");
        }

        let deepest = vec!["+"; MAX_FILTER_LEVELS].join("/");
        assert_eq!(validate_topic_filter(&deepest), Ok(()));
        let too_deep = format!("{deepest}/#");
        assert_eq!(
            validate_topic_filter(&too_deep),
            Err(TopicError::TooManyLevels {
                levels: MAX_FILTER_LEVELS + 1
            })
        );
        assert_eq!(
            validate_topic_filter(&"/".repeat(5000)),
            Err(TopicError::TooManyLevels { levels: 5001 })
        );
    }

    #[test]
    fn wildcard_detection() {
        assert!(is_wildcard_filter("#"));
        assert!(is_wildcard_filter("a/+/b"));
        assert!(is_wildcard_filter("a/#"));
        assert!(!is_wildcard_filter("devices/42/down"));
        assert!(!is_wildcard_filter("/"));
    }

    #[test]
    fn error_messages_name_the_limit() {
        let message = TopicError::TooLong { bytes: 70000 }.to_string();
        assert!(
            message.contains("70000") && message.contains("65535"),
            "{message}"
        );
        let message = TopicError::TooManyLevels { levels: 2000 }.to_string();
        assert!(
            message.contains("2000") && message.contains("1024"),
            "{message}"
        );
    }

    #[test]
    fn split_level_keeps_empty_levels() {
        assert_eq!(split_level("a/b/c"), ("a", Some("b/c")));
        assert_eq!(split_level("c"), ("c", None));
        assert_eq!(split_level("/"), ("", Some("")));
        assert_eq!(split_level(""), ("", None));
    }
}
