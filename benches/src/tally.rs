//! Failures counted by kind, with the first one spelled out: what threads
//! and processes of every scenario add up.

use std::collections::BTreeMap;
use std::io;

use serde::{Deserialize, Serialize};

use crate::net::error_kind_name;

/// An error a [`FailureTally`] counts: its kind (the count's key) and its
/// words (the first one is kept).
pub(crate) trait CountedError {
    fn kind_name(&self) -> String;
    fn detail(&self) -> String;
}

impl CountedError for io::Error {
    fn kind_name(&self) -> String {
        error_kind_name(self)
    }

    fn detail(&self) -> String {
        self.to_string()
    }
}

/// Failures counted by kind, with the first one spelled out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FailureTally {
    pub(crate) count: u64,
    pub(crate) by_kind: BTreeMap<String, u64>,
    pub(crate) first: Option<String>,
}

impl FailureTally {
    pub(crate) fn record(&mut self, error: &impl CountedError, context: &str) {
        self.count += 1;
        *self.by_kind.entry(error.kind_name()).or_default() += 1;
        if self.first.is_none() {
            self.first = Some(format!("{context}: {}", error.detail()));
        }
    }

    pub(crate) fn merge(&mut self, other: Self) {
        self.count += other.count;
        for (kind, n) in other.by_kind {
            *self.by_kind.entry(kind).or_default() += n;
        }
        if self.first.is_none() {
            self.first = other.first;
        }
    }

    /// `Kind xN, ...` and the first failure.
    pub(crate) fn line(&self) -> String {
        let mut line = self
            .by_kind
            .iter()
            .map(|(kind, n)| format!("{kind} x{n}"))
            .collect::<Vec<_>>()
            .join(", ");
        if let Some(first) = &self.first {
            line.push_str(&format!(" (first: {first})"));
        }
        line
    }
}
