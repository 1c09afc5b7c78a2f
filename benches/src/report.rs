//! Latency histograms (how they are recorded, carried between processes and
//! merged) and the final reports, as text or one JSON object.

use std::{collections::BTreeMap, fmt::Write as _};

use anyhow::Context as _;
use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use hdrhistogram::{
    serialization::{Deserializer, Serializer as _, V2Serializer},
    Histogram,
};
use serde::Serialize;

/// Smallest latency told apart, in µs.
const LATENCY_LOWEST_US: u64 = 1;
/// Largest latency tracked, in µs (60 s); longer ones are recorded as 60 s.
const LATENCY_HIGHEST_US: u64 = 60_000_000;
const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;

/// An empty latency histogram in µs, 1 µs .. 60 s, 3 significant digits.
pub(crate) fn new_latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(
        LATENCY_LOWEST_US,
        LATENCY_HIGHEST_US,
        LATENCY_SIGNIFICANT_DIGITS,
    )
    .unwrap_or_else(|e| unreachable!("constant histogram bounds are valid: {e}"))
}

/// Histogram in the HdrHistogram V2 encoding, base64.
pub(crate) fn histogram_to_base64(histogram: &Histogram<u64>) -> anyhow::Result<String> {
    let mut bytes = Vec::new();
    V2Serializer::new()
        .serialize(histogram, &mut bytes)
        .map_err(|e| anyhow::anyhow!("cannot serialize histogram: {e:?}"))?;
    Ok(BASE64.encode(bytes))
}

/// Inverse of [`histogram_to_base64`].
pub(crate) fn histogram_from_base64(text: &str) -> anyhow::Result<Histogram<u64>> {
    let bytes = BASE64.decode(text).context("histogram is not base64")?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| anyhow::anyhow!("cannot decode V2 histogram: {e:?}"))
}

/// Adds `other` into `into`, keeping the bounds of `into`.
pub(crate) fn merge_histogram(into: &mut Histogram<u64>, other: &Histogram<u64>) {
    if into.add(other).is_err() {
        // Only possible if `other` has values beyond our bounds: clamp them.
        for bucket in other.iter_recorded() {
            into.saturating_record_n(bucket.value_iterated_to(), bucket.count_at_value());
        }
    }
}

/// Writes a finished report to stdout; a closed stdout is an error, not a
/// panic.
pub(crate) fn print_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// One line of a text report: `label`, then the percentiles, or `none`
/// when there are none.
pub(crate) fn latency_line(
    t: &mut String,
    label: &str,
    latency: Option<&LatencySummaryUs>,
    none: &str,
) {
    match latency {
        Some(s) => {
            let _ = writeln!(
                t,
                "  {label:<11} p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {:.1}, {} samples)",
                s.p50, s.p90, s.p99, s.p99_9, s.max, s.mean, s.samples
            );
        }
        None => {
            let _ = writeln!(t, "  {label:<11} {none}");
        }
    }
}

/// Percentiles of a latency histogram, µs.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct LatencySummaryUs {
    pub(crate) samples: u64,
    pub(crate) p50: u64,
    pub(crate) p90: u64,
    pub(crate) p99: u64,
    pub(crate) p99_9: u64,
    pub(crate) max: u64,
    pub(crate) mean: f64,
}

impl LatencySummaryUs {
    /// `None` for an empty histogram.
    pub(crate) fn of(histogram: &Histogram<u64>) -> Option<Self> {
        (!histogram.is_empty()).then(|| Self {
            samples: histogram.len(),
            p50: histogram.value_at_quantile(0.50),
            p90: histogram.value_at_quantile(0.90),
            p99: histogram.value_at_quantile(0.99),
            p99_9: histogram.value_at_quantile(0.999),
            max: histogram.max(),
            mean: histogram.mean(),
        })
    }
}

/// Connection outcomes of a run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ConnectionsReport {
    pub(crate) attempted: u64,
    pub(crate) established: u64,
    pub(crate) failed: u64,
    /// Failures by kind (`ConnectionRefused`, `TimedOut`, ...).
    pub(crate) failures_by_kind: BTreeMap<String, u64>,
    pub(crate) first_failure: Option<String>,
}

/// Errors on established connections during the run.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct RunErrorsReport {
    pub(crate) connections: u64,
    pub(crate) by_kind: BTreeMap<String, u64>,
    pub(crate) first: Option<String>,
}

/// Server cost over the measured window (`--server-pid`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ServerCostReport {
    pub(crate) pid: u32,
    pub(crate) cpu_s: f64,
    pub(crate) cpu_us_per_frame: Option<f64>,
    pub(crate) rss_before_kib: u64,
    pub(crate) rss_after_kib: u64,
}

/// What the frames of a pairs run did.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FramesReport {
    pub(crate) sent: u64,
    pub(crate) received: u64,
    /// Sent minus received once the drain wait is over.
    pub(crate) lost: u64,
    pub(crate) sequence_gaps: u64,
    pub(crate) out_of_order: u64,
    /// Frames too short to carry a probe header.
    pub(crate) malformed: u64,
}

/// Counts over the measured window (after warmup, `duration_s` long).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct MeasuredReport {
    /// Frames stamped inside the window.
    pub(crate) frames_sent: u64,
    /// Frames that arrived inside the window.
    pub(crate) frames_received: u64,
    pub(crate) frames_received_per_s: f64,
}

/// Load shape of a pairs run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LoadReport {
    pub(crate) target: String,
    pub(crate) processes: u32,
    pub(crate) threads_per_process: usize,
    pub(crate) source_addrs: String,
    pub(crate) pairs_requested: u64,
    pub(crate) pairs_connected: u64,
    /// Frames per second per sender; 0 = full speed.
    pub(crate) rate_per_sender: u64,
    /// Most frames in flight per sender; 0 = unbounded.
    pub(crate) window_frames: u64,
    pub(crate) payload_bytes: usize,
    pub(crate) warmup_s: f64,
    pub(crate) duration_s: f64,
    pub(crate) drain_s: f64,
}

/// Final report of `tcp-frames --mode pairs`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PairsReport {
    pub(crate) scenario: &'static str,
    pub(crate) mode: &'static str,
    pub(crate) load: LoadReport,
    pub(crate) connections: ConnectionsReport,
    pub(crate) run_errors: RunErrorsReport,
    pub(crate) frames: FramesReport,
    pub(crate) measured: MeasuredReport,
    /// Send-to-receive latency of frames stamped in the measured window.
    pub(crate) latency_us: Option<LatencySummaryUs>,
    pub(crate) server: Option<ServerCostReport>,
    /// The merged latency histogram (µs), HdrHistogram V2, base64.
    pub(crate) latency_histogram_v2_base64: String,
}

/// Server memory for `--mode idle`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct IdleServerReport {
    pub(crate) pid: u32,
    pub(crate) rss_before_kib: u64,
    pub(crate) rss_established_kib: u64,
    pub(crate) rss_after_close_kib: u64,
    pub(crate) rss_growth_bytes: i64,
    pub(crate) rss_bytes_per_connection: Option<f64>,
}

/// Final report of `tcp-frames --mode idle`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct IdleReport {
    pub(crate) scenario: &'static str,
    pub(crate) mode: &'static str,
    pub(crate) target: String,
    pub(crate) processes: u32,
    pub(crate) threads_per_process: usize,
    pub(crate) source_addrs: String,
    pub(crate) connections: ConnectionsReport,
    /// From the common start until the last login was written.
    pub(crate) connect_s: f64,
    pub(crate) established_per_s: f64,
    pub(crate) hold_s: f64,
    /// Connections still open when the hold ended.
    pub(crate) open_at_end: u64,
    /// Connections the server closed (or reset) during the hold.
    pub(crate) closed_by_server: u64,
    /// Bytes the server sent on connections that should stay silent.
    pub(crate) unexpected_bytes_received: u64,
    pub(crate) server: Option<IdleServerReport>,
}

fn failures_line(by_kind: &BTreeMap<String, u64>, first: Option<&str>) -> String {
    let mut line = by_kind
        .iter()
        .map(|(kind, n)| format!("{kind} x{n}"))
        .collect::<Vec<_>>()
        .join(", ");
    if let Some(first) = first {
        let _ = write!(line, " (first: {first})");
    }
    line
}

impl PairsReport {
    pub(crate) fn to_text(&self) -> String {
        let l = &self.load;
        let mut t = String::new();
        let _ = writeln!(t, "tcp-frames pairs -> {}", l.target);
        let speed = if l.rate_per_sender == 0 {
            "full speed".to_owned()
        } else {
            format!("{} frames/s per sender", l.rate_per_sender)
        };
        let window = if l.window_frames == 0 {
            "unbounded".to_owned()
        } else {
            format!("{} frames", l.window_frames)
        };
        let _ = writeln!(
            t,
            "  load        {speed}, window {window}, payload {} B, {} process(es) x {} thread(s), sources {}",
            l.payload_bytes, l.processes, l.threads_per_process, l.source_addrs
        );
        let _ = writeln!(
            t,
            "  timing      warmup {:.1} s, measured {:.1} s, drain {:.1} s",
            l.warmup_s, l.duration_s, l.drain_s
        );
        let c = &self.connections;
        let _ = writeln!(
            t,
            "  pairs       {} connected of {} ({} connections failed)",
            l.pairs_connected, l.pairs_requested, c.failed
        );
        if c.failed > 0 {
            let _ = writeln!(
                t,
                "  connect     {}",
                failures_line(&c.failures_by_kind, c.first_failure.as_deref())
            );
        }
        let f = &self.frames;
        let _ = writeln!(
            t,
            "  frames      sent {}, received {}, lost {} (sequence gaps {}, out of order {}, malformed {})",
            f.sent, f.received, f.lost, f.sequence_gaps, f.out_of_order, f.malformed
        );
        let m = &self.measured;
        let _ = writeln!(
            t,
            "  measured    sent {}, received {} = {:.0} frames/s",
            m.frames_sent, m.frames_received, m.frames_received_per_s
        );
        latency_line(
            &mut t,
            "latency us",
            self.latency_us.as_ref(),
            "no frame stamped in the measured window arrived",
        );
        if let Some(s) = &self.server {
            let per_frame = s
                .cpu_us_per_frame
                .map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}"));
            let _ = writeln!(
                t,
                "  server      pid {}: cpu {:.2} s = {per_frame} us/frame, rss {} -> {} KiB",
                s.pid, s.cpu_s, s.rss_before_kib, s.rss_after_kib
            );
        }
        let e = &self.run_errors;
        if e.connections > 0 {
            let _ = writeln!(
                t,
                "  errors      {} connection(s) failed during the run: {}",
                e.connections,
                failures_line(&e.by_kind, e.first.as_deref())
            );
        }
        t
    }
}

impl IdleReport {
    pub(crate) fn to_text(&self) -> String {
        let mut t = String::new();
        let c = &self.connections;
        let _ = writeln!(t, "tcp-frames idle -> {}", self.target);
        let _ = writeln!(
            t,
            "  load        {} process(es) x {} thread(s), sources {}",
            self.processes, self.threads_per_process, self.source_addrs
        );
        let _ = writeln!(
            t,
            "  connections {} established of {} ({} failed) in {:.2} s = {:.0} /s",
            c.established, c.attempted, c.failed, self.connect_s, self.established_per_s
        );
        if c.failed > 0 {
            let _ = writeln!(
                t,
                "  connect     {}",
                failures_line(&c.failures_by_kind, c.first_failure.as_deref())
            );
        }
        let _ = writeln!(
            t,
            "  hold        {:.1} s: {} open at end, {} closed by server, {} unexpected bytes received",
            self.hold_s, self.open_at_end, self.closed_by_server, self.unexpected_bytes_received
        );
        if let Some(s) = &self.server {
            let per_conn = s
                .rss_bytes_per_connection
                .map_or_else(|| "n/a".to_owned(), |v| format!("{v:.0}"));
            let _ = writeln!(
                t,
                "  server      pid {}: rss {} -> {} KiB (+{} B = {per_conn} B/connection), {} KiB after close",
                s.pid,
                s.rss_before_kib,
                s.rss_established_kib,
                s.rss_growth_bytes,
                s.rss_after_close_kib
            );
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_base64_round_trip_and_merge() {
        let mut a = new_latency_histogram();
        let mut b = new_latency_histogram();
        for v in 1..=1000 {
            a.record(v).unwrap();
        }
        b.record_n(50_000, 10).unwrap();
        b.saturating_record(u64::MAX);

        let a2 = histogram_from_base64(&histogram_to_base64(&a).unwrap()).unwrap();
        let b2 = histogram_from_base64(&histogram_to_base64(&b).unwrap()).unwrap();
        assert_eq!(a2, a);
        assert_eq!(b2, b);

        let mut merged = new_latency_histogram();
        merge_histogram(&mut merged, &a2);
        merge_histogram(&mut merged, &b2);
        assert_eq!(merged.len(), 1000 + 10 + 1);
        // 1011 samples: the median is the 506th, which is 506.
        assert_eq!(merged.value_at_quantile(0.5), 506);
        assert!(merged.equivalent(merged.max(), LATENCY_HIGHEST_US));

        let summary = LatencySummaryUs::of(&merged).unwrap();
        assert_eq!(summary.samples, 1011);
        assert!(summary.p50 <= summary.p90 && summary.p90 <= summary.p99);
        assert!(summary.p99 <= summary.p99_9 && summary.p99_9 <= summary.max);
        assert_eq!(LatencySummaryUs::of(&new_latency_histogram()), None);
    }

    #[test]
    fn empty_histogram_round_trips() {
        let empty = new_latency_histogram();
        let back = histogram_from_base64(&histogram_to_base64(&empty).unwrap()).unwrap();
        assert!(back.is_empty());
        assert!(histogram_from_base64("not base64!").is_err());
        assert!(histogram_from_base64("AAAA").is_err());
    }

    #[test]
    fn failures_line_lists_kinds() {
        let mut kinds = BTreeMap::new();
        kinds.insert("ConnectionRefused".to_owned(), 3);
        kinds.insert("TimedOut".to_owned(), 1);
        assert_eq!(
            failures_line(&kinds, Some("refused")),
            "ConnectionRefused x3, TimedOut x1 (first: refused)"
        );
    }
}
