//! Counters that threads and processes add up: failures by kind, the
//! outcome of opening connections, and what held connections saw.

use serde::{Deserialize, Serialize};

pub(crate) use crate::tally::FailureTally;

/// Outcome of opening a set of MQTT connections (connect + CONNACK, and
/// SUBSCRIBE + SUBACK for subscribers).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ConnectTally {
    pub(crate) attempted: u64,
    pub(crate) established: u64,
    /// Never tried: the setup deadline passed, or `--give-up-after` failures.
    pub(crate) skipped: u64,
    pub(crate) failures: FailureTally,
    /// CLOCK_MONOTONIC ns of the last CONNACK (or SUBACK), 0 if none.
    pub(crate) last_established_ns: u64,
}

impl ConnectTally {
    pub(crate) fn merge(&mut self, other: Self) {
        self.attempted += other.attempted;
        self.established += other.established;
        self.skipped += other.skipped;
        self.failures.merge(other.failures);
        self.last_established_ns = self.last_established_ns.max(other.last_established_ns);
    }
}

/// What held (idle) connections saw until the hold ended.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct HoldTally {
    pub(crate) open_at_end: u64,
    /// Connections the server closed (end of stream or error) during the hold.
    pub(crate) closed_by_server: u64,
    /// Bytes the server sent on connections that should stay silent.
    pub(crate) unexpected_bytes: u64,
    pub(crate) errors: FailureTally,
}

impl HoldTally {
    pub(crate) fn merge(&mut self, other: Self) {
        self.open_at_end += other.open_at_end;
        self.closed_by_server += other.closed_by_server;
        self.unexpected_bytes += other.unexpected_bytes;
        self.errors.merge(other.errors);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::client::ClientError;

    #[test]
    fn tallies_merge_and_print() {
        let mut a = FailureTally::default();
        a.record(&ClientError::new("TimedOut", "no CONNACK"), "c-1");
        let mut b = FailureTally::default();
        b.record(&ClientError::new("TimedOut", "late"), "c-2");
        b.record(&ClientError::new("ConnAckRefused", "busy"), "c-3");
        a.merge(b);
        assert_eq!(a.count, 3);
        assert_eq!(
            a.line(),
            "ConnAckRefused x1, TimedOut x2 (first: c-1: no CONNACK)"
        );

        let mut c = ConnectTally {
            established: 2,
            last_established_ns: 10,
            ..ConnectTally::default()
        };
        c.merge(ConnectTally {
            established: 3,
            skipped: 1,
            last_established_ns: 4,
            ..ConnectTally::default()
        });
        assert_eq!(
            (c.established, c.skipped, c.last_established_ns),
            (5, 1, 10)
        );
        let line = serde_json::to_string(&c).unwrap();
        let back: ConnectTally = serde_json::from_str(&line).unwrap();
        assert_eq!(back.established, 5);
    }
}
