//! What one viewer notes about the tags it receives, whatever protocol
//! brought them: sequence gaps per track, the first video frame, stalls,
//! bytes and tags in the measured window, and the latency of every probe
//! sent in that window (into its thread's histogram).
//!
//! ```text
//! read completes at `now` ─▶ on_bytes(n, now) ─▶ on_tag(type, body prefix, now) per tag ─▶ ... ─▶ finish(end)
//! ```
//!
//! All the tags of one read are stamped with the read's completion time.

use std::{cell::RefCell, time::Duration};

use hdrhistogram::Histogram;

use super::{
    media::{classify, BodyKind, Track, TAG_AUDIO, TAG_SCRIPT, TAG_VIDEO},
    tally::{ViewerCounts, ViewerError},
};
use crate::clock::duration_ns;

/// The measured window, CLOCK_MONOTONIC ns, known once the parent sent
/// the start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RunClock {
    pub(crate) measure_start_ns: u64,
    pub(crate) end_ns: u64,
}

impl RunClock {
    pub(crate) fn new(start_ns: u64, warmup: Duration, duration: Duration) -> Self {
        let measure_start_ns = start_ns + duration_ns(warmup);
        Self {
            measure_start_ns,
            end_ns: measure_start_ns + duration_ns(duration),
        }
    }

    pub(crate) fn contains(&self, ns: u64) -> bool {
        (self.measure_start_ns..self.end_ns).contains(&ns)
    }

    /// How much of `from..to` lies in the window, ns.
    fn overlap_ns(&self, from: u64, to: u64) -> u64 {
        to.min(self.end_ns)
            .saturating_sub(from.max(self.measure_start_ns))
    }
}

/// How a viewer's connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ViewerEnd {
    /// The run was over and the viewer stopped reading.
    Stopped,
    /// The server closed, reset or ended the stream first.
    ByServer(ViewerError),
    /// The viewer gave up (the stream was broken).
    Failed(ViewerError),
}

/// Per-viewer bookkeeping; a few dozen bytes.
#[derive(Debug)]
pub(crate) struct TagWatch {
    counts: ViewerCounts,
    /// Next sequence number expected per track, once one was seen.
    next_seq: [Option<u64>; 2],
    /// Whether the first video frame was a keyframe, once there was one.
    first_video_keyframe: Option<bool>,
    last_media_ns: Option<u64>,
    stall_gap_ns: u64,
}

impl TagWatch {
    pub(crate) fn new(stall_gap_ns: u64) -> Self {
        Self {
            counts: ViewerCounts::default(),
            next_seq: [None; 2],
            first_video_keyframe: None,
            last_media_ns: None,
            stall_gap_ns,
        }
    }

    /// `n` bytes arrived at `now_ns`.
    pub(crate) fn on_bytes(&mut self, n: usize, now_ns: u64, clock: Option<RunClock>) {
        self.counts.bytes += n as u64;
        if clock.is_some_and(|c| c.contains(now_ns)) {
            self.counts.bytes_measured += n as u64;
        }
    }

    /// A whole tag of `tag_type` arrived at `now_ns`; `prefix` is the start
    /// of its body. True for the viewer's first video frame (a server
    /// without a GOP cache sends it at the next keyframe, up to a GOP after
    /// the sequence headers and the audio).
    pub(crate) fn on_tag(
        &mut self,
        tag_type: u8,
        prefix: &[u8],
        now_ns: u64,
        clock: Option<RunClock>,
        latency_us: &RefCell<Histogram<u64>>,
    ) -> bool {
        if tag_type == TAG_SCRIPT {
            self.counts.script_tags += 1;
            return false;
        }
        if tag_type != TAG_AUDIO && tag_type != TAG_VIDEO {
            return false;
        }
        self.counts.media_tags += 1;
        if let Some(clock) = clock {
            if clock.contains(now_ns) {
                self.counts.media_tags_measured += 1;
            }
            if let Some(last) = self.last_media_ns {
                self.note_gap(clock, last, now_ns);
            }
        }
        self.last_media_ns = Some(now_ns);
        if let BodyKind::Frame {
            track,
            keyframe,
            probe,
        } = classify(tag_type, prefix)
        {
            let first_video = track == Track::Video && self.first_video_keyframe.is_none();
            if first_video {
                self.first_video_keyframe = Some(keyframe);
            }
            match probe {
                Some(probe) => {
                    self.note_seq(track, probe.seq);
                    if clock.is_some_and(|c| c.contains(probe.sent_ns)) {
                        self.counts.probes_measured += 1;
                        let us = now_ns.saturating_sub(probe.sent_ns) / 1_000;
                        latency_us.borrow_mut().saturating_record(us.max(1));
                    }
                }
                None => self.counts.malformed_tags += 1,
            }
            return first_video;
        }
        false
    }

    fn note_seq(&mut self, track: Track, seq: u64) {
        let next = &mut self.next_seq[track as usize];
        match *next {
            Some(expected) if seq < expected => self.counts.out_of_order += 1,
            Some(expected) => {
                self.counts.skipped_tags += seq - expected;
                *next = Some(seq + 1);
            }
            None => *next = Some(seq + 1),
        }
    }

    fn note_gap(&mut self, clock: RunClock, from_ns: u64, to_ns: u64) {
        if to_ns.saturating_sub(from_ns) <= self.stall_gap_ns {
            return;
        }
        let overlap = clock.overlap_ns(from_ns, to_ns);
        if overlap > 0 {
            self.counts.stalls += 1;
            self.counts.stalled_ns += overlap;
        }
    }

    /// The viewer's counts once its connection ended (`Stopped`: after the
    /// run; a gap still open at the end of the window counts as a stall).
    pub(crate) fn finish(mut self, end: &ViewerEnd, clock: Option<RunClock>) -> ViewerCounts {
        match end {
            ViewerEnd::Stopped => {
                if let (Some(clock), Some(last)) = (clock, self.last_media_ns) {
                    self.note_gap(clock, last, clock.end_ns.max(last));
                }
            }
            ViewerEnd::ByServer(why) => {
                self.counts.disconnected_by_server += 1;
                self.counts.ended_early.record(why, "viewer");
            }
            ViewerEnd::Failed(why) => self.counts.ended_early.record(why, "viewer"),
        }
        self.counts.viewers = 1;
        self.counts.viewers_with_stall = u64::from(self.counts.stalls > 0);
        match self.first_video_keyframe {
            Some(false) => self.counts.first_video_not_keyframe = 1,
            None => self.counts.no_video = 1,
            Some(true) => {}
        }
        self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        flv::media::{avc_sequence_header, write_audio_body, write_video_body, Probe},
        report::new_latency_histogram,
    };

    const MS: u64 = 1_000_000;

    fn video(keyframe: bool, seq: u64, sent_ns: u64) -> Vec<u8> {
        let mut body = Vec::new();
        write_video_body(&mut body, keyframe, 64, Probe { seq, sent_ns });
        body
    }

    #[test]
    fn gaps_latency_and_first_keyframe() {
        let latency = RefCell::new(new_latency_histogram());
        let clock = RunClock::new(
            1_000 * MS,
            Duration::from_millis(1_000),
            Duration::from_secs(1),
        );
        assert_eq!(
            (clock.measure_start_ns, clock.end_ns),
            (2_000 * MS, 3_000 * MS)
        );
        let mut watch = TagWatch::new(500 * MS);
        // Before the start time is known: counted, not timed.
        assert!(!watch.on_tag(TAG_SCRIPT, b"", 10 * MS, None, &latency));
        assert!(!watch.on_tag(TAG_VIDEO, &avc_sequence_header(), 10 * MS, None, &latency));
        assert!(watch.on_tag(TAG_VIDEO, &video(true, 5, 9 * MS), 10 * MS, None, &latency));
        // In the window: 2 ms late, then a skipped frame.
        let at = 2_100 * MS;
        watch.on_bytes(1000, at, Some(clock));
        watch.on_tag(
            TAG_VIDEO,
            &video(false, 6, at - 2 * MS),
            at,
            Some(clock),
            &latency,
        );
        watch.on_tag(
            TAG_VIDEO,
            &video(false, 8, at - MS),
            at,
            Some(clock),
            &latency,
        );
        watch.on_tag(
            TAG_VIDEO,
            &video(false, 7, at - MS),
            at,
            Some(clock),
            &latency,
        );
        let mut audio = Vec::new();
        write_audio_body(
            &mut audio,
            40,
            Probe {
                seq: 0,
                sent_ns: at,
            },
        );
        watch.on_tag(TAG_AUDIO, &audio, at, Some(clock), &latency);
        // A 600 ms gap: one stall of 600 ms.
        let later = at + 600 * MS;
        write_audio_body(
            &mut audio,
            40,
            Probe {
                seq: 1,
                sent_ns: later - MS,
            },
        );
        watch.on_tag(TAG_AUDIO, &audio, later, Some(clock), &latency);
        let counts = watch.finish(&ViewerEnd::Stopped, Some(clock));
        assert_eq!(counts.bytes_measured, 1000);
        assert_eq!(
            (
                counts.media_tags,
                counts.media_tags_measured,
                counts.script_tags
            ),
            (7, 5, 1)
        );
        assert_eq!(counts.probes_measured, 5);
        assert_eq!((counts.skipped_tags, counts.out_of_order), (1, 1));
        // The gap from 10 ms to 2.1 s overlaps the window by 100 ms, then
        // the 600 ms gap; silence from 2.7 s to the end at 3 s is shorter
        // than the stall gap.
        assert_eq!(
            (counts.stalls, counts.stalled_ns, counts.viewers_with_stall),
            (2, 700 * MS, 1)
        );
        assert_eq!((counts.first_video_not_keyframe, counts.no_video), (0, 0));
        let latency = latency.into_inner();
        assert_eq!(latency.len(), 5);
        assert_eq!(latency.max(), 2_000);
    }

    #[test]
    fn silent_end_and_server_close() {
        let latency = RefCell::new(new_latency_histogram());
        let clock = RunClock::new(0, Duration::ZERO, Duration::from_secs(2));
        let mut watch = TagWatch::new(500 * MS);
        assert!(watch.on_tag(
            TAG_VIDEO,
            &video(false, 0, 0),
            100 * MS,
            Some(clock),
            &latency
        ));
        // Nothing after 100 ms: a stall to the end of the window.
        let counts = watch.finish(&ViewerEnd::Stopped, Some(clock));
        assert_eq!((counts.stalls, counts.stalled_ns), (1, 1_900 * MS));
        assert_eq!(counts.first_video_not_keyframe, 1);

        let watch = TagWatch::new(500 * MS);
        let end = ViewerEnd::ByServer(ViewerError::new("ClosedByServer", "EOF"));
        let counts = watch.finish(&end, Some(clock));
        assert_eq!(
            (
                counts.disconnected_by_server,
                counts.no_video,
                counts.stalls
            ),
            (1, 1, 0)
        );
        assert_eq!(counts.ended_early.by_kind["ClosedByServer"], 1);
        let bad = ViewerEnd::Failed(ViewerError::new("FlvMalformed", "tag type"));
        let counts = TagWatch::new(1).finish(&bad, None);
        assert_eq!(
            (counts.disconnected_by_server, counts.ended_early.count),
            (0, 1)
        );
    }
}
