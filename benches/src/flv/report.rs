//! The report of `flv-fanout`, as text (the layout of the other scenarios)
//! or one JSON object.

use std::fmt::Write as _;

use serde::Serialize;

use super::{publisher::PublisherReport, tally::ConnectSummary};
use crate::report::{latency_line, LatencySummaryUs};
use crate::tally::FailureTally;

/// The load of a run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FlvLoadReport {
    /// Where the publisher publishes.
    pub(crate) rtmp_target: String,
    /// Where the viewers play.
    pub(crate) viewer_target: String,
    pub(crate) proto: &'static str,
    pub(crate) stream: String,
    pub(crate) viewers_requested: u64,
    pub(crate) bitrate_bps: u64,
    pub(crate) video_bps: u64,
    pub(crate) audio_bps: u64,
    pub(crate) fps: u32,
    pub(crate) gop_s: f64,
    pub(crate) audio: bool,
    pub(crate) keyframe_bytes: usize,
    pub(crate) p_frame_bytes: usize,
    pub(crate) audio_tag_bytes: Option<usize>,
    pub(crate) media_tags_per_s: f64,
    pub(crate) processes: u32,
    pub(crate) threads_per_process: usize,
    pub(crate) source_addrs: String,
    pub(crate) preroll_s: f64,
    pub(crate) warmup_s: f64,
    pub(crate) duration_s: f64,
    pub(crate) drain_s: f64,
    pub(crate) stall_gap_ms: f64,
}

/// What the viewers received in the measured window.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DeliveredReport {
    pub(crate) bytes: u64,
    pub(crate) gbit_per_s: f64,
    /// Media tags that arrived in the window.
    pub(crate) tags: u64,
    pub(crate) tags_per_s: f64,
    /// Media tags stamped in the window that arrived (= latency samples).
    pub(crate) probed_tags: u64,
    /// Media tags the publisher stamped in the window x viewers connected.
    pub(crate) expected_probed_tags: u64,
}

/// Server cost over the measured window (`--server-pid`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FlvServerReport {
    pub(crate) pid: u32,
    pub(crate) cpu_s: f64,
    /// Server CPU seconds per Gbit delivered to the viewers.
    pub(crate) cpu_s_per_gbit: Option<f64>,
    /// After the preroll, before any viewer.
    pub(crate) rss_baseline_kib: u64,
    /// At the end of the measured window.
    pub(crate) rss_end_kib: u64,
    pub(crate) rss_growth_per_viewer_kib: Option<f64>,
}

/// Media gaps longer than `--stall-gap` overlapping the window.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StallsReport {
    pub(crate) count: u64,
    pub(crate) viewers_with_stall: u64,
    /// Time inside the window the stalls covered, summed over viewers.
    pub(crate) total_s: f64,
}

/// Final report of `flv-fanout`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FlvReport {
    pub(crate) scenario: &'static str,
    pub(crate) load: FlvLoadReport,
    /// Viewer setup: attempted, established, started, failures by kind.
    pub(crate) connect: ConnectSummary,
    pub(crate) delivered: DeliveredReport,
    pub(crate) server: Option<FlvServerReport>,
    /// Arrival minus send time of tags stamped in the window, µs.
    pub(crate) latency_us: Option<LatencySummaryUs>,
    pub(crate) stalls: StallsReport,
    /// Sequence gaps: tags the server skipped, summed over viewers.
    pub(crate) skipped_tags: u64,
    pub(crate) out_of_order_tags: u64,
    pub(crate) malformed_tags: u64,
    pub(crate) disconnected_by_server: u64,
    /// Why viewers ended before the run did.
    pub(crate) ended_early: FailureTally,
    pub(crate) first_video_not_keyframe: u64,
    pub(crate) no_video: u64,
    pub(crate) publisher: PublisherReport,
    /// The merged latency histogram (µs), HdrHistogram V2, base64.
    pub(crate) latency_histogram_v2_base64: String,
}

impl FlvReport {
    pub(crate) fn to_text(&self) -> String {
        let l = &self.load;
        let mut t = String::new();
        let _ = writeln!(
            t,
            "flv-fanout {} -> {} (publisher -> {}, stream {})",
            l.proto, l.viewer_target, l.rtmp_target, l.stream
        );
        let audio = if l.audio {
            format!("audio {} kbit/s", l.audio_bps / 1000)
        } else {
            "no audio".to_owned()
        };
        let _ = writeln!(
            t,
            "  load        {} viewers, {:.3} Mbit/s ({} fps, GOP {:.1} s, keyframe {} B, P frame {} B, {audio}), {} process(es) x {} thread(s), sources {}",
            l.viewers_requested,
            l.bitrate_bps as f64 / 1e6,
            l.fps,
            l.gop_s,
            l.keyframe_bytes,
            l.p_frame_bytes,
            l.processes,
            l.threads_per_process,
            l.source_addrs
        );
        let _ = writeln!(
            t,
            "  timing      preroll {:.1} s, warmup {:.1} s, measured {:.1} s, drain {:.1} s",
            l.preroll_s, l.warmup_s, l.duration_s, l.drain_s
        );
        let c = &self.connect;
        let _ = writeln!(
            t,
            "  viewers     {} playing of {} ({} started, {} failed, {} skipped)",
            c.established, l.viewers_requested, c.started, c.failures.count, c.skipped
        );
        if c.failures.count > 0 {
            let _ = writeln!(t, "  connect     {}", c.failures.line());
        }
        let d = &self.delivered;
        let _ = writeln!(
            t,
            "  delivered   {} B = {:.3} Gbit/s, {} tags = {:.0} tags/s; {} of {} tags stamped in the window arrived",
            d.bytes, d.gbit_per_s, d.tags, d.tags_per_s, d.probed_tags, d.expected_probed_tags
        );
        latency_line(
            &mut t,
            "latency us",
            self.latency_us.as_ref(),
            "no tag stamped in the measured window arrived",
        );
        if let Some(s) = &self.server {
            let per_gbit = s
                .cpu_s_per_gbit
                .map_or_else(|| "n/a".to_owned(), |v| format!("{v:.3}"));
            let per_viewer = s
                .rss_growth_per_viewer_kib
                .map_or_else(|| "n/a".to_owned(), |v| format!("{v:.1}"));
            let _ = writeln!(
                t,
                "  server      pid {}: cpu {:.2} s = {per_gbit} cpu-s per Gbit, rss {} -> {} KiB = {per_viewer} KiB per viewer",
                s.pid, s.cpu_s, s.rss_baseline_kib, s.rss_end_kib
            );
        }
        let st = &self.stalls;
        let _ = writeln!(
            t,
            "  stalls      {} ({} viewers, {:.2} s in all); skipped tags {}, out of order {}, malformed {}",
            st.count,
            st.viewers_with_stall,
            st.total_s,
            self.skipped_tags,
            self.out_of_order_tags,
            self.malformed_tags
        );
        let _ = writeln!(
            t,
            "  start       {} viewers' first video frame not a keyframe, {} without video",
            self.first_video_not_keyframe, self.no_video
        );
        if self.ended_early.count > 0 || self.disconnected_by_server > 0 {
            let _ = writeln!(
                t,
                "  ended       {} viewers ended early ({} by the server): {}",
                self.ended_early.count,
                self.disconnected_by_server,
                self.ended_early.line()
            );
        }
        let p = &self.publisher;
        let lag = p.lag_us.as_ref().map_or_else(
            || "n/a".to_owned(),
            |l| format!("p99 {} max {}", l.p99, l.max),
        );
        let _ = writeln!(
            t,
            "  publisher   {} tags sent ({} in the window), {} dropped, lag us in the window {lag}, max {}",
            p.tags_sent, p.tags_sent_measured, p.tags_dropped, p.lag_max_us
        );
        if let Some(error) = &p.error {
            let _ = writeln!(t, "  publisher   stopped early: {error}");
        }
        t
    }
}
