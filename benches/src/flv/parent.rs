//! The parent process: the publisher, the children's timeline, the
//! server's figures, and the report.
//!
//! ```text
//! publisher: connect, publish ─ Publish.Start ─ preroll ─ RSS baseline ─ spawn children
//! ─ all "ready" ─ "start T" (T = now + 50 ms) ─ T + warmup: server CPU
//! ─ T + warmup + duration: server CPU and RSS ─ all "result" (after the drain)
//! ─ stop the publisher ─ merge ─ report
//! ```

use std::time::Duration;

use anyhow::{bail, Context as _};

use super::{
    child::{ChildMessage, CHILD_SLACK},
    publisher::{Publisher, PublisherPlan},
    report::{DeliveredReport, FlvLoadReport, FlvReport, FlvServerReport, StallsReport},
    tally::{ConnectSummary, ViewerCounts},
    watch::RunClock,
    FlvFanoutArgs,
};
use crate::{
    clock::{block_until_ns, duration_ns, monotonic_ns},
    multiproc::{check_socket_budget, ChildGroup},
    proc_stats::{ephemeral_port_count, open_files_limit, sample_or_warn, ProcessWatch},
    report::{
        histogram_from_base64, histogram_to_base64, merge_histogram, new_latency_histogram,
        print_stdout, LatencySummaryUs,
    },
    runtime::{allowed_cpus, require_io_uring},
};

/// Least time between sending "start" and the start itself.
const MIN_START_LEAD: Duration = Duration::from_millis(50);
/// How long children get to report after the drain.
const RESULT_GRACE: Duration = Duration::from_secs(30);
/// How long the publisher gets to stop.
const PUBLISHER_STOP_LIMIT: Duration = Duration::from_secs(10);

pub(super) fn run(args: &FlvFanoutArgs) -> anyhow::Result<()> {
    require_io_uring()?;
    check_socket_budget(
        args.viewers,
        1,
        u64::from(args.procs),
        "--procs",
        open_files_limit().context("cannot read the open-file limit")?,
        u64::from(args.source_addrs.count()),
        ephemeral_port_count().unwrap_or(28_232),
    )
    .map_err(anyhow::Error::msg)?;
    let server = args.server_pid.map(ProcessWatch::new).transpose()?;
    let shape = args.shape()?;
    let cpus = allowed_cpus();
    let life_limit = args.preroll
        + args.setup_timeout
        + args.connect_timeout * 2
        + CHILD_SLACK
        + args.warmup
        + args.duration
        + args.drain
        + RESULT_GRACE;
    let mut publisher = Publisher::start(PublisherPlan {
        target: args.rtmp_target,
        app: args.app.clone(),
        stream: args.stream.clone(),
        shape: shape.clone(),
        setup_timeout: args.connect_timeout,
        life_limit,
        cpu: cpus.last().copied().unwrap_or(0),
    })?;
    publisher.wait_publishing(args.connect_timeout + Duration::from_secs(1))?;
    block_until_ns(monotonic_ns() + duration_ns(args.preroll));
    if let Some(why) = publisher.failure() {
        bail!("the publisher stopped during the preroll: {why}");
    }
    let rss_baseline = sample_or_warn(server.as_ref(), "after the preroll");

    let mut group = ChildGroup::<ChildMessage>::spawn(args.procs)?;
    let ready_deadline =
        monotonic_ns() + duration_ns(args.setup_timeout + args.connect_timeout + CHILD_SLACK);
    let mut ready = ConnectSummary::default();
    for connect in group.collect(ready_deadline, "ready", |m| match m {
        ChildMessage::Ready { connect } => Some(connect),
        ChildMessage::Result { .. } => None,
    })? {
        ready.merge(connect);
    }
    if let Some(why) = publisher.failure() {
        bail!("the publisher stopped while the viewers connected: {why}");
    }
    if ready.established == 0 {
        bail!(
            "no viewer could play {}/{} from {} ({} failures; first: {})",
            args.app,
            args.stream,
            args.viewer_target(),
            ready.failures.count,
            ready.failures.first.as_deref().unwrap_or("none")
        );
    }

    let start_ns = monotonic_ns() + duration_ns(MIN_START_LEAD);
    let clock = RunClock::new(start_ns, args.warmup, args.duration);
    publisher.set_window(clock.measure_start_ns, clock.end_ns);
    group.broadcast(&format!("start {start_ns}"))?;
    block_until_ns(clock.measure_start_ns);
    let before = sample_or_warn(server.as_ref(), "at the start of the measured window");
    block_until_ns(clock.end_ns);
    let after = sample_or_warn(server.as_ref(), "at the end of the measured window");

    let results_deadline =
        clock.end_ns + duration_ns(args.drain + args.connect_timeout + RESULT_GRACE);
    let results = group.collect(results_deadline, "result", |m| match m {
        ChildMessage::Result {
            connect,
            counts,
            latency_histogram_v2_base64,
        } => Some((connect, counts, latency_histogram_v2_base64)),
        ChildMessage::Ready { .. } => None,
    })?;
    group.wait()?;
    let publisher = publisher.stop(PUBLISHER_STOP_LIMIT);

    let mut connect = ConnectSummary::default();
    let mut counts = ViewerCounts::default();
    let mut latency = new_latency_histogram();
    for (c, n, encoded) in results {
        connect.merge(c);
        counts.merge(*n);
        merge_histogram(&mut latency, &histogram_from_base64(&encoded)?);
    }
    let duration_s = args.duration.as_secs_f64();
    let gbit = counts.bytes_measured as f64 * 8.0 / 1e9;
    let server = match (server, rss_baseline, before, after) {
        (Some(watch), Some(baseline), Some(before), Some(after)) => {
            let cpu_s = watch.cpu_s_between(before, after);
            let growth_kib = after.rss_kib as f64 - baseline.rss_kib as f64;
            Some(FlvServerReport {
                pid: watch.pid(),
                cpu_s,
                cpu_s_per_gbit: (gbit > 0.0).then(|| cpu_s / gbit),
                rss_baseline_kib: baseline.rss_kib,
                rss_end_kib: after.rss_kib,
                rss_growth_per_viewer_kib: (connect.established > 0)
                    .then(|| growth_kib / connect.established as f64),
            })
        }
        _ => None,
    };
    let report = FlvReport {
        scenario: "flv-fanout",
        load: FlvLoadReport {
            rtmp_target: args.rtmp_target.to_string(),
            viewer_target: args.viewer_target().to_string(),
            proto: args.proto.name(),
            stream: format!("{}/{}", args.app, args.stream),
            viewers_requested: args.viewers,
            bitrate_bps: args.bitrate,
            video_bps: shape.video_bps,
            audio_bps: shape.audio_bps,
            fps: shape.fps,
            gop_s: shape.gop_ns() as f64 / 1e9,
            audio: shape.audio_tag_bytes.is_some(),
            keyframe_bytes: shape.keyframe_bytes,
            p_frame_bytes: shape.p_frame_bytes,
            audio_tag_bytes: shape.audio_tag_bytes,
            media_tags_per_s: shape.tags_per_s(),
            processes: args.procs,
            threads_per_process: args.threads_per_process(cpus.len()),
            source_addrs: args.source_addrs.to_string(),
            preroll_s: args.preroll.as_secs_f64(),
            warmup_s: args.warmup.as_secs_f64(),
            duration_s,
            drain_s: args.drain.as_secs_f64(),
            stall_gap_ms: args.stall_gap.as_secs_f64() * 1e3,
        },
        delivered: DeliveredReport {
            bytes: counts.bytes_measured,
            gbit_per_s: gbit / duration_s,
            tags: counts.media_tags_measured,
            tags_per_s: counts.media_tags_measured as f64 / duration_s,
            probed_tags: counts.probes_measured,
            expected_probed_tags: publisher.tags_sent_measured * counts.viewers,
        },
        server,
        latency_us: LatencySummaryUs::of(&latency),
        stalls: StallsReport {
            count: counts.stalls,
            viewers_with_stall: counts.viewers_with_stall,
            total_s: counts.stalled_ns as f64 / 1e9,
        },
        skipped_tags: counts.skipped_tags,
        out_of_order_tags: counts.out_of_order,
        malformed_tags: counts.malformed_tags,
        disconnected_by_server: counts.disconnected_by_server,
        ended_early: counts.ended_early.clone(),
        first_video_not_keyframe: counts.first_video_not_keyframe,
        no_video: counts.no_video,
        connect,
        publisher,
        latency_histogram_v2_base64: histogram_to_base64(&latency)?,
    };
    let text = if args.json {
        format!("{}\n", serde_json::to_string(&report)?)
    } else {
        report.to_text()
    };
    print_stdout(&text)?;
    if let Some(error) = &report.publisher.error {
        bail!("the publisher stopped early: {error}");
    }
    Ok(())
}
