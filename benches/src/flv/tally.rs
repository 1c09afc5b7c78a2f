//! What viewers count, added up per thread, per process and per run: how
//! their setup went ([`ConnectSummary`]) and what they received
//! ([`ViewerCounts`]).

use serde::{Deserialize, Serialize};

use crate::{
    net::error_kind_name,
    tally::{CountedError, FailureTally},
};

/// Why a viewer failed to start or ended early: a kind to count by and the
/// words of the first one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ViewerError {
    pub(crate) kind: String,
    pub(crate) detail: String,
}

impl ViewerError {
    pub(crate) fn new(kind: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            detail: detail.into(),
        }
    }

    pub(crate) fn io(error: &std::io::Error, during: &str) -> Self {
        Self::new(error_kind_name(error), format!("{during}: {error}"))
    }
}

impl CountedError for ViewerError {
    fn kind_name(&self) -> String {
        self.kind.clone()
    }

    fn detail(&self) -> String {
        self.detail.clone()
    }
}

/// How setting up the viewers went.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ConnectSummary {
    /// Viewers that tried to connect.
    pub(crate) attempted: u64,
    /// Got `200 OK` (HTTP-FLV) or `NetStream.Play.Start` (RTMP).
    pub(crate) established: u64,
    /// Received their first video frame.
    pub(crate) started: u64,
    /// Never tried: the setup deadline passed first.
    pub(crate) skipped: u64,
    /// Failed setups by kind (I/O errors, `HttpStatus404`,
    /// `NetStream.Play.StreamNotFound`, `SetupTimedOut`, ...).
    pub(crate) failures: FailureTally,
}

impl ConnectSummary {
    pub(crate) fn merge(&mut self, other: Self) {
        self.attempted += other.attempted;
        self.established += other.established;
        self.started += other.started;
        self.skipped += other.skipped;
        self.failures.merge(other.failures);
    }
}

/// What established viewers received, summed over viewers. "Measured"
/// counts use the measured window: bytes and tags by arrival time, probes
/// by their send time.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ViewerCounts {
    /// Established viewers these counts cover.
    pub(crate) viewers: u64,
    pub(crate) bytes: u64,
    pub(crate) bytes_measured: u64,
    /// Audio and video tags (sequence headers included).
    pub(crate) media_tags: u64,
    pub(crate) media_tags_measured: u64,
    pub(crate) script_tags: u64,
    /// Tags whose probe was sent in the measured window (each one timed).
    pub(crate) probes_measured: u64,
    /// Sequence numbers missing per track: tags the server skipped.
    pub(crate) skipped_tags: u64,
    /// Sequence numbers at or below one already seen.
    pub(crate) out_of_order: u64,
    /// Media frames without a readable probe.
    pub(crate) malformed_tags: u64,
    /// Media inter-arrival gaps longer than `--stall-gap` that overlap the
    /// measured window, and how much of the window they cover.
    pub(crate) stalls: u64,
    pub(crate) stalled_ns: u64,
    pub(crate) viewers_with_stall: u64,
    /// Viewers whose connection the server closed, reset or ended before
    /// the run was over.
    pub(crate) disconnected_by_server: u64,
    /// Viewers that ended early, by why (server closes and our own errors,
    /// such as a broken FLV stream).
    pub(crate) ended_early: FailureTally,
    /// Viewers whose first video frame (after the sequence header) was not
    /// a keyframe.
    pub(crate) first_video_not_keyframe: u64,
    /// Viewers that got no video frame at all.
    pub(crate) no_video: u64,
}

impl ViewerCounts {
    pub(crate) fn merge(&mut self, other: Self) {
        self.viewers += other.viewers;
        self.bytes += other.bytes;
        self.bytes_measured += other.bytes_measured;
        self.media_tags += other.media_tags;
        self.media_tags_measured += other.media_tags_measured;
        self.script_tags += other.script_tags;
        self.probes_measured += other.probes_measured;
        self.skipped_tags += other.skipped_tags;
        self.out_of_order += other.out_of_order;
        self.malformed_tags += other.malformed_tags;
        self.stalls += other.stalls;
        self.stalled_ns += other.stalled_ns;
        self.viewers_with_stall += other.viewers_with_stall;
        self.disconnected_by_server += other.disconnected_by_server;
        self.ended_early.merge(other.ended_early);
        self.first_video_not_keyframe += other.first_video_not_keyframe;
        self.no_video += other.no_video;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_merge_and_travel_as_json() {
        let mut a = ConnectSummary {
            attempted: 3,
            established: 2,
            ..ConnectSummary::default()
        };
        let mut failed = ConnectSummary::default();
        failed
            .failures
            .record(&ViewerError::new("HttpStatus404", "GET: 404"), "viewer 7");
        a.merge(failed);
        assert_eq!((a.attempted, a.established, a.failures.count), (3, 2, 1));
        assert_eq!(
            a.failures.line(),
            "HttpStatus404 x1 (first: viewer 7: GET: 404)"
        );

        let mut c = ViewerCounts {
            viewers: 1,
            skipped_tags: 4,
            ..ViewerCounts::default()
        };
        c.merge(ViewerCounts {
            viewers: 2,
            stalled_ns: 9,
            ..ViewerCounts::default()
        });
        let back: ViewerCounts = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(
            (back.viewers, back.skipped_tags, back.stalled_ns),
            (3, 4, 9)
        );
        let io = ViewerError::io(
            &std::io::Error::from(std::io::ErrorKind::ConnectionReset),
            "read",
        );
        assert_eq!(io.kind, "ConnectionReset");
    }
}
