//! What a child process tells the parent (one JSON line each), and the
//! counters it carries, which merge by addition.

use serde::{Deserialize, Serialize};

/// Messages from a child, in the order a run sends them.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum ChildMessage {
    /// Set up and waiting for "start" (pairs: connected and logged in).
    Ready { connect: ConnectSummary },
    /// Idle mode: every connection is open and logged in.
    Established { connect: ConnectSummary },
    /// Pairs mode: the run is over.
    PairsResult {
        counts: PairsCounts,
        latency_histogram_v2_base64: String,
    },
    /// Idle mode: the hold is over and connections are closed.
    IdleResult { counts: IdleCounts },
}

pub(crate) use crate::tally::FailureTally;

/// Outcome of opening and logging in a set of connections.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ConnectSummary {
    /// Pairs (pairs mode) or connections (idle mode) fully set up.
    pub(crate) units_established: u64,
    pub(crate) sockets_attempted: u64,
    pub(crate) sockets_established: u64,
    pub(crate) failures: FailureTally,
    /// CLOCK_MONOTONIC ns of the last successful login, 0 if none.
    pub(crate) last_established_ns: u64,
}

impl ConnectSummary {
    pub(crate) fn merge(&mut self, other: Self) {
        self.units_established += other.units_established;
        self.sockets_attempted += other.sockets_attempted;
        self.sockets_established += other.sockets_established;
        self.failures.merge(other.failures);
        self.last_established_ns = self.last_established_ns.max(other.last_established_ns);
    }
}

/// Frame counters of a pairs run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct PairsCounts {
    pub(crate) frames_sent: u64,
    /// Frames stamped inside the measured window.
    pub(crate) frames_sent_measured: u64,
    pub(crate) frames_received: u64,
    /// Frames that arrived inside the measured window.
    pub(crate) frames_received_measured: u64,
    pub(crate) sequence_gaps: u64,
    pub(crate) out_of_order: u64,
    pub(crate) malformed: u64,
    /// Established connections that failed or were closed during the run.
    pub(crate) run_errors: FailureTally,
}

impl PairsCounts {
    pub(crate) fn merge(&mut self, other: Self) {
        self.frames_sent += other.frames_sent;
        self.frames_sent_measured += other.frames_sent_measured;
        self.frames_received += other.frames_received;
        self.frames_received_measured += other.frames_received_measured;
        self.sequence_gaps += other.sequence_gaps;
        self.out_of_order += other.out_of_order;
        self.malformed += other.malformed;
        self.run_errors.merge(other.run_errors);
    }
}

/// Counters of an idle hold.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct IdleCounts {
    pub(crate) open_at_end: u64,
    /// Connections the server closed (end of stream or error) during the hold.
    pub(crate) closed_by_server: u64,
    pub(crate) unexpected_bytes: u64,
    pub(crate) errors: FailureTally,
}

impl IdleCounts {
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
    use std::io;

    #[test]
    fn message_json_round_trip() {
        let mut connect = ConnectSummary {
            units_established: 3,
            sockets_attempted: 7,
            sockets_established: 6,
            last_established_ns: 99,
            ..ConnectSummary::default()
        };
        connect.failures.record(
            &io::Error::from(io::ErrorKind::ConnectionRefused),
            "127.0.0.2 -> 127.0.0.1:7000",
        );
        let line = serde_json::to_string(&ChildMessage::Ready { connect }).unwrap();
        assert!(line.starts_with(r#"{"event":"ready""#), "{line}");
        let ChildMessage::Ready { connect } = serde_json::from_str(&line).unwrap() else {
            panic!("wrong variant");
        };
        assert_eq!(connect.failures.by_kind["ConnectionRefused"], 1);
        assert!(connect.failures.first.unwrap().starts_with("127.0.0.2"));
    }

    #[test]
    fn merges_add_up() {
        let mut a = PairsCounts {
            frames_sent: 5,
            ..PairsCounts::default()
        };
        a.run_errors
            .record(&io::Error::from(io::ErrorKind::ConnectionReset), "first");
        let mut b = PairsCounts {
            frames_sent: 7,
            frames_received: 2,
            ..PairsCounts::default()
        };
        b.run_errors
            .record(&io::Error::from(io::ErrorKind::ConnectionReset), "second");
        a.merge(b);
        assert_eq!((a.frames_sent, a.frames_received), (12, 2));
        assert_eq!(a.run_errors.count, 2);
        assert_eq!(a.run_errors.by_kind["ConnectionReset"], 2);
        assert_eq!(
            a.run_errors.first.as_deref(),
            Some("first: connection reset")
        );

        let mut s = ConnectSummary {
            last_established_ns: 10,
            ..ConnectSummary::default()
        };
        s.merge(ConnectSummary {
            last_established_ns: 4,
            units_established: 1,
            ..ConnectSummary::default()
        });
        assert_eq!((s.last_established_ns, s.units_established), (10, 1));
    }
}
