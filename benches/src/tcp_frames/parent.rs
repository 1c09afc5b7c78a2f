//! The parent process: start the children, give them one start time, sample
//! the server, merge the children's counts and histograms, print the report.
//!
//! ```text
//! pairs: spawn ─ all Ready ─ "start T" (T = now + settle) ─ T+warmup: sample server
//!        ─ T+warmup+duration: sample server ─ all PairsResult ─ report
//! idle:  spawn ─ all Ready ─ sample RSS ─ "start T" ─ all Established ─ settle
//!        ─ sample RSS ─ hold until duration is over ─ "stop" ─ all IdleResult
//!        ─ settle ─ sample RSS ─ report
//! ```

use std::time::Duration;

use anyhow::{bail, Context as _};

use super::{
    messages::{ChildMessage, ConnectSummary, IdleCounts, PairsCounts},
    plan::check_socket_budget,
    Mode, TcpFramesArgs,
};
use crate::{
    clock::{block_until_ns, duration_ns, monotonic_ns},
    multiproc::ChildGroup,
    proc_stats::{ephemeral_port_count, open_files_limit, ProcSample, ProcessWatch},
    report::{
        histogram_from_base64, histogram_to_base64, merge_histogram, new_latency_histogram,
        ConnectionsReport, FramesReport, IdleReport, IdleServerReport, LatencySummaryUs,
        LoadReport, MeasuredReport, PairsReport, RunErrorsReport, ServerCostReport,
    },
    runtime::{allowed_cpus, require_io_uring},
};

/// Least time between sending "start" and the start itself.
const MIN_START_LEAD: Duration = Duration::from_millis(50);
/// How long children get to report after their run is over.
const RESULT_GRACE: Duration = Duration::from_secs(30);

pub(super) fn run(args: &TcpFramesArgs) -> anyhow::Result<()> {
    require_io_uring()?;
    let sockets_per_unit = match args.mode {
        Mode::Pairs => 2,
        Mode::Idle => 1,
    };
    check_socket_budget(
        args.connections,
        sockets_per_unit,
        u64::from(args.processes),
        "--processes",
        open_files_limit().context("cannot read the open-file limit")?,
        u64::from(args.source_addrs.count()),
        ephemeral_port_count().unwrap_or(28_232),
    )
    .map_err(anyhow::Error::msg)?;
    let server = args.server_pid.map(ProcessWatch::new).transpose()?;
    let group = ChildGroup::<ChildMessage>::spawn(args.processes)?;
    match args.mode {
        Mode::Pairs => run_pairs(args, group, server),
        Mode::Idle => run_idle(args, group, server),
    }
}

fn merge_connects(summaries: Vec<ConnectSummary>) -> ConnectSummary {
    summaries
        .into_iter()
        .fold(ConnectSummary::default(), |mut all, one| {
            all.merge(one);
            all
        })
}

fn connections_report(connect: &ConnectSummary) -> ConnectionsReport {
    ConnectionsReport {
        attempted: connect.sockets_attempted,
        established: connect.sockets_established,
        failed: connect.failures.count,
        failures_by_kind: connect.failures.by_kind.clone(),
        first_failure: connect.failures.first.clone(),
    }
}

fn sample_or_warn(server: Option<&ProcessWatch>, when: &str) -> Option<ProcSample> {
    let server = server?;
    match server.sample() {
        Ok(sample) => Some(sample),
        Err(e) => {
            eprintln!(
                "shoal-bench: cannot sample server pid {} {when}: {e:#}",
                server.pid()
            );
            None
        }
    }
}

fn print_report<T: serde::Serialize>(json: bool, report: &T, text: impl FnOnce() -> String) {
    if json {
        match serde_json::to_string(report) {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("shoal-bench: cannot encode the report: {e}"),
        }
    } else {
        print!("{}", text());
    }
}

fn run_pairs(
    args: &TcpFramesArgs,
    mut group: ChildGroup<ChildMessage>,
    server: Option<ProcessWatch>,
) -> anyhow::Result<()> {
    let setup_deadline = monotonic_ns() + duration_ns(args.setup_timeout);
    let connect = merge_connects(group.collect(setup_deadline, "ready", |m| match m {
        ChildMessage::Ready { connect } => Some(connect),
        _ => None,
    })?);
    if connect.units_established == 0 {
        bail!(
            "no pair could connect to {} ({} connection failures; first: {})",
            args.target,
            connect.failures.count,
            connect.failures.first.as_deref().unwrap_or("none")
        );
    }

    let start_ns = monotonic_ns() + duration_ns(args.settle.max(MIN_START_LEAD));
    group.broadcast(&format!("start {start_ns}"))?;
    let measure_start_ns = start_ns + duration_ns(args.warmup);
    let end_ns = measure_start_ns + duration_ns(args.duration);
    block_until_ns(measure_start_ns);
    let before = sample_or_warn(server.as_ref(), "at the start of the measured window");
    block_until_ns(end_ns);
    let after = sample_or_warn(server.as_ref(), "at the end of the measured window");

    let results_deadline = end_ns + duration_ns(args.drain + RESULT_GRACE);
    let results = group.collect(results_deadline, "result", |m| match m {
        ChildMessage::PairsResult {
            counts,
            latency_histogram_v2_base64,
        } => Some((counts, latency_histogram_v2_base64)),
        _ => None,
    })?;
    group.wait()?;

    let mut counts = PairsCounts::default();
    let mut histogram = new_latency_histogram();
    for (child_counts, encoded) in results {
        counts.merge(child_counts);
        merge_histogram(&mut histogram, &histogram_from_base64(&encoded)?);
    }
    let duration_s = args.duration.as_secs_f64();
    let server = match (server, before, after) {
        (Some(watch), Some(before), Some(after)) => {
            let cpu_s = watch.cpu_s_between(before, after);
            Some(ServerCostReport {
                pid: watch.pid(),
                cpu_s,
                cpu_us_per_frame: (counts.frames_received_measured > 0)
                    .then(|| cpu_s * 1e6 / counts.frames_received_measured as f64),
                rss_before_kib: before.rss_kib,
                rss_after_kib: after.rss_kib,
            })
        }
        _ => None,
    };
    let report = PairsReport {
        scenario: "tcp-frames",
        mode: "pairs",
        load: LoadReport {
            target: args.target.to_string(),
            processes: args.processes,
            threads_per_process: args.threads_per_process(args.processes, allowed_cpus().len()),
            source_addrs: args.source_addrs.to_string(),
            pairs_requested: args.connections,
            pairs_connected: connect.units_established,
            rate_per_sender: args.rate_per_s,
            window_frames: args.window_frames,
            payload_bytes: args.payload_bytes as usize,
            warmup_s: args.warmup.as_secs_f64(),
            duration_s,
            drain_s: args.drain.as_secs_f64(),
        },
        connections: connections_report(&connect),
        run_errors: RunErrorsReport {
            connections: counts.run_errors.count,
            by_kind: counts.run_errors.by_kind.clone(),
            first: counts.run_errors.first.clone(),
        },
        frames: FramesReport {
            sent: counts.frames_sent,
            received: counts.frames_received,
            lost: counts.frames_sent.saturating_sub(counts.frames_received),
            sequence_gaps: counts.sequence_gaps,
            out_of_order: counts.out_of_order,
            malformed: counts.malformed,
        },
        measured: MeasuredReport {
            frames_sent: counts.frames_sent_measured,
            frames_received: counts.frames_received_measured,
            frames_received_per_s: counts.frames_received_measured as f64 / duration_s,
        },
        latency_us: LatencySummaryUs::of(&histogram),
        server,
        latency_histogram_v2_base64: histogram_to_base64(&histogram)?,
    };
    print_report(args.json, &report, || report.to_text());
    Ok(())
}

fn run_idle(
    args: &TcpFramesArgs,
    mut group: ChildGroup<ChildMessage>,
    server: Option<ProcessWatch>,
) -> anyhow::Result<()> {
    let setup_deadline = monotonic_ns() + duration_ns(args.setup_timeout);
    group.collect(setup_deadline, "ready", |m| match m {
        ChildMessage::Ready { connect } => Some(connect),
        _ => None,
    })?;
    let rss_before = sample_or_warn(server.as_ref(), "before connecting");

    let start_ns = monotonic_ns() + duration_ns(MIN_START_LEAD);
    group.broadcast(&format!("start {start_ns}"))?;
    let connect_deadline = start_ns + duration_ns(args.setup_timeout);
    let connect = merge_connects(group.collect(connect_deadline, "established", |m| match m {
        ChildMessage::Established { connect } => Some(connect),
        _ => None,
    })?);
    let hold_start_ns = monotonic_ns();
    block_until_ns(hold_start_ns + duration_ns(args.settle));
    let rss_established = sample_or_warn(server.as_ref(), "after logins settled");
    let hold = args.duration.max(args.settle);
    block_until_ns(hold_start_ns + duration_ns(hold));
    group.broadcast("stop")?;
    let results = group.collect(
        monotonic_ns() + duration_ns(RESULT_GRACE),
        "result",
        |m| match m {
            ChildMessage::IdleResult { counts } => Some(counts),
            _ => None,
        },
    )?;
    group.wait()?;
    let counts = results
        .into_iter()
        .fold(IdleCounts::default(), |mut all, one| {
            all.merge(one);
            all
        });
    block_until_ns(monotonic_ns() + duration_ns(args.settle));
    let rss_after_close = sample_or_warn(server.as_ref(), "after closing");

    let connect_s = connect.last_established_ns.saturating_sub(start_ns) as f64 / 1e9;
    let established = connect.units_established;
    let server = match (server, rss_before, rss_established, rss_after_close) {
        (Some(watch), Some(before), Some(held), Some(closed)) => {
            let growth_bytes = (held.rss_kib as i64 - before.rss_kib as i64) * 1024;
            Some(IdleServerReport {
                pid: watch.pid(),
                rss_before_kib: before.rss_kib,
                rss_established_kib: held.rss_kib,
                rss_after_close_kib: closed.rss_kib,
                rss_growth_bytes: growth_bytes,
                rss_bytes_per_connection: (established > 0)
                    .then(|| growth_bytes as f64 / established as f64),
            })
        }
        _ => None,
    };
    let report = IdleReport {
        scenario: "tcp-frames",
        mode: "idle",
        target: args.target.to_string(),
        processes: args.processes,
        threads_per_process: args.threads_per_process(args.processes, allowed_cpus().len()),
        source_addrs: args.source_addrs.to_string(),
        connections: connections_report(&connect),
        connect_s,
        established_per_s: if connect_s > 0.0 {
            established as f64 / connect_s
        } else {
            0.0
        },
        hold_s: hold.as_secs_f64(),
        open_at_end: counts.open_at_end,
        closed_by_server: counts.closed_by_server,
        unexpected_bytes_received: counts.unexpected_bytes,
        server,
    };
    print_report(args.json, &report, || report.to_text());
    if established == 0 {
        bail!(
            "no connection to {} could be established (first failure: {})",
            args.target,
            connect.failures.first.as_deref().unwrap_or("none")
        );
    }
    Ok(())
}
