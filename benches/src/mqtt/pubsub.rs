//! `mqtt-pubsub`, the main thread: lay the clients out over the runtime
//! threads, wait until every one is connected and subscribed, give the
//! common start, sample the server over the measured window, merge the
//! threads' counts and histograms, print the report.
//!
//! Layout: fan-in partition k (subscriber k and publishers i with
//! `i % subscribers == k`) lives on thread `k % threads`, so a publisher's
//! deliveries are counted on its own thread; fan-out subscriber k and
//! publisher i live on threads `k % threads` and `i % threads`.

use std::{
    sync::{atomic::Ordering, mpsc, Arc},
    time::Duration,
};

use anyhow::{bail, Context as _};

use super::{
    pubsub_thread::{
        run_thread, PubSpec, PubSubCounts, RunShared, SubSpec, ThreadEvent, ThreadPlan, TrafficPlan,
    },
    report::{
        PubSubLoadReport, PubSubMeasuredReport, PubSubMessagesReport, PubSubReport,
        PubSubServerReport,
    },
    tally::ConnectTally,
    MqttPubSubArgs, PubSubMode,
};
use crate::{
    clock::{block_until_ns, duration_ns, monotonic_ns, until_ns},
    proc_stats::{open_files_limit, sample_or_warn, ProcessWatch},
    report::{
        histogram_to_base64, merge_histogram, new_latency_histogram, ConnectionsReport,
        LatencySummaryUs,
    },
    runtime::{allowed_cpus, require_io_uring, spawn_pinned},
};

/// File descriptors the process keeps for itself.
const FD_RESERVE: u64 = 100;
/// Least time between setting the start and the start itself.
const MIN_START_LEAD: Duration = Duration::from_millis(50);
/// How long threads get to report after the drain.
const RESULT_GRACE: Duration = Duration::from_secs(30);

/// Who goes where, and what they publish and subscribe to.
#[derive(Debug)]
struct Layout {
    subs: Vec<Vec<SubSpec>>,
    pubs: Vec<Vec<PubSpec>>,
    topics: String,
    subscribers_per_message: u64,
}

fn lay_out(args: &MqttPubSubArgs, threads: usize) -> Layout {
    let (n, m) = (args.publisher_count(), args.subscriber_count());
    let prefix = args.topic_prefix();
    let id = format!("{}-{}", args.client_id_prefix, std::process::id());
    let mut subs = vec![Vec::new(); threads];
    let mut pubs = vec![Vec::new(); threads];
    let source = |socket: u64| args.source_addrs.pick(socket);
    for k in 0..m {
        let filter = match args.mode {
            PubSubMode::FanIn => format!("{prefix}/in/{k}/+"),
            PubSubMode::FanOut => format!("{prefix}/out"),
        };
        subs[(k % threads as u64) as usize].push(SubSpec {
            client_id: format!("{id}-s{k}"),
            filter,
            source: source(k),
        });
    }
    for i in 0..n {
        let (topic, thread, remote_feedback) = match args.mode {
            PubSubMode::FanIn => (
                format!("{prefix}/in/{}/{i}", i % m),
                (i % m) % threads as u64,
                false,
            ),
            PubSubMode::FanOut => (format!("{prefix}/out"), i % threads as u64, threads > 1),
        };
        pubs[thread as usize].push(PubSpec {
            index: i as u32,
            client_id: format!("{id}-p{i}"),
            topic,
            source: source(m + i),
            remote_feedback,
        });
    }
    let (topics, subscribers_per_message) = match args.mode {
        PubSubMode::FanIn => (
            format!(
                "publisher i -> {prefix}/in/{{i % {m}}}/{{i}}, subscriber k -> {prefix}/in/{{k}}/+"
            ),
            1,
        ),
        PubSubMode::FanOut => (format!("all -> {prefix}/out"), m),
    };
    Layout {
        subs,
        pubs,
        topics,
        subscribers_per_message,
    }
}

/// Receives the threads' events until a deadline.
struct Events {
    rx: mpsc::Receiver<ThreadEvent>,
}

impl Events {
    fn next(&self, deadline_ns: u64) -> anyhow::Result<ThreadEvent> {
        match self.rx.recv_timeout(until_ns(deadline_ns)) {
            Ok(ThreadEvent::Failed(reason)) => bail!("runtime thread failed: {reason}"),
            Ok(event) => Ok(event),
            Err(mpsc::RecvTimeoutError::Timeout) => bail!("runtime threads did not finish in time"),
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("a runtime thread ended early"),
        }
    }
}

pub(super) fn run(args: &MqttPubSubArgs) -> anyhow::Result<()> {
    require_io_uring()?;
    let (n, m) = (args.publisher_count(), args.subscriber_count());
    let fd_limit = open_files_limit().context("cannot read the open-file limit")?;
    if n + m + FD_RESERVE > fd_limit {
        bail!(
            "{} clients exceed the open-file limit ({fd_limit}, {FD_RESERVE} kept in reserve)",
            n + m
        );
    }
    let cpus = allowed_cpus();
    let threads = args.threads.map_or(cpus.len(), |t| t as usize).max(1);
    let layout = lay_out(args, threads);
    let traffic = TrafficPlan {
        version: args.protocol.wire(),
        qos: args.qos(),
        payload_bytes: args.payload_bytes as usize,
        publishers: n,
        fanout: layout.subscribers_per_message,
        rate_per_s: args.rate_per_s,
        window: args.window,
        inflight: args.inflight,
        batch: args.batch,
        warmup: args.warmup,
        duration: args.duration,
        drain: args.drain,
        recv_buffer_bytes: args.recv_buffer_bytes as usize,
        pacing_resolution: args.pacing_resolution,
        connect_timeout: args.connect_timeout,
        connect_concurrency: args.connect_concurrency as usize,
        setup_timeout: args.setup_timeout,
    };
    let server = args.server_pid.map(ProcessWatch::new).transpose()?;
    let shared = Arc::new(RunShared::new(n));

    let (tx, rx) = mpsc::channel();
    let events = Events { rx };
    let mut handles = Vec::with_capacity(threads);
    for (t, (subs, pubs)) in layout
        .subs
        .iter()
        .cloned()
        .zip(layout.pubs.iter().cloned())
        .enumerate()
    {
        let plan = ThreadPlan {
            target: args.target,
            subs,
            pubs,
            traffic,
            shared: Arc::clone(&shared),
        };
        let thread_events = tx.clone();
        let on_build_error = {
            let events = tx.clone();
            move |reason: String| {
                let _ = events.send(ThreadEvent::Failed(reason));
            }
        };
        let handle = spawn_pinned(
            format!("mqtt-pubsub-{t}"),
            cpus[t % cpus.len()],
            move || run_thread(plan, thread_events),
            on_build_error,
        )
        .context("cannot start a runtime thread")?;
        handles.push(handle);
    }
    drop(tx);
    let abort = |why: anyhow::Error| -> anyhow::Error {
        shared.abort.store(true, Ordering::Release);
        why
    };

    let setup_deadline = monotonic_ns() + duration_ns(args.setup_timeout * 2);
    let mut connect = ConnectTally::default();
    for _ in 0..threads {
        match events.next(setup_deadline).map_err(abort)? {
            ThreadEvent::Connected(tally) => connect.merge(tally),
            other => return Err(abort(anyhow::anyhow!("unexpected thread event {other:?}"))),
        }
    }
    if connect.established < n + m {
        shared.abort.store(true, Ordering::Release);
        for handle in handles {
            let _ = handle.join();
        }
        bail!(
            "{} of {} clients connected to {} ({} failed, {} not tried in time): {}",
            connect.established,
            n + m,
            args.target,
            connect.failures.count,
            connect.skipped,
            connect.failures.line()
        );
    }

    let start_ns = monotonic_ns() + duration_ns(args.settle.max(MIN_START_LEAD));
    shared.start_ns.store(start_ns, Ordering::Release);
    let measure_start_ns = start_ns + duration_ns(args.warmup);
    let end_ns = measure_start_ns + duration_ns(args.duration);
    block_until_ns(measure_start_ns);
    let before = sample_or_warn(server.as_ref(), "at the start of the measured window");
    block_until_ns(end_ns);
    let after = sample_or_warn(server.as_ref(), "at the end of the measured window");

    let results_deadline = end_ns + duration_ns(args.drain + RESULT_GRACE);
    let mut counts = PubSubCounts::default();
    let mut histogram = new_latency_histogram();
    for _ in 0..threads {
        match events.next(results_deadline)? {
            ThreadEvent::Done(c, h) => {
                counts.merge(c);
                merge_histogram(&mut histogram, &h);
            }
            other => bail!("unexpected thread event {other:?}"),
        }
    }
    for handle in handles {
        if handle.join().is_err() {
            bail!("a runtime thread panicked");
        }
    }

    let duration_s = args.duration.as_secs_f64();
    let expected = counts.published * layout.subscribers_per_message;
    let server = match (server, before, after) {
        (Some(watch), Some(before), Some(after)) => {
            let cpu_s = watch.cpu_s_between(before, after);
            let delivered = counts.delivered_measured;
            Some(PubSubServerReport {
                pid: watch.pid(),
                cpu_s,
                cpu_us_per_delivered: (delivered > 0).then(|| cpu_s * 1e6 / delivered as f64),
                delivered_per_cpu_s: (cpu_s > 0.0).then(|| delivered as f64 / cpu_s),
                rss_before_kib: before.rss_kib,
                rss_after_kib: after.rss_kib,
            })
        }
        _ => None,
    };
    let report = PubSubReport {
        scenario: "mqtt-pubsub",
        mode: args.mode.name(),
        load: PubSubLoadReport {
            target: args.target.to_string(),
            protocol: args.protocol.name(),
            qos: args.qos,
            payload_bytes: args.payload_bytes as usize,
            publishers: n,
            subscribers: m,
            subscribers_per_message: layout.subscribers_per_message,
            topics: layout.topics,
            offered_rate_per_s: args.rate_per_s,
            window: args.window,
            inflight: args.inflight,
            threads,
            source_addrs: args.source_addrs.to_string(),
            warmup_s: args.warmup.as_secs_f64(),
            duration_s,
            drain_s: args.drain.as_secs_f64(),
        },
        connections: ConnectionsReport {
            attempted: connect.attempted,
            established: connect.established,
            failed: connect.failures.count,
            failures_by_kind: connect.failures.by_kind.clone(),
            first_failure: connect.failures.first.clone(),
        },
        run_errors: counts.run_errors.clone(),
        messages: PubSubMessagesReport {
            published: counts.published,
            expected_deliveries: expected,
            delivered: counts.delivered,
            lost: expected.saturating_sub(counts.delivered),
            sequence_gaps: counts.sequence_gaps,
            duplicate_or_reordered: counts.duplicate_or_reordered,
            malformed: counts.malformed,
            unacknowledged: counts.unacknowledged,
            window_resets: counts.window_resets,
        },
        measured: PubSubMeasuredReport {
            published: counts.published_measured,
            published_per_s: counts.published_measured as f64 / duration_s,
            delivered: counts.delivered_measured,
            delivered_per_s: counts.delivered_measured as f64 / duration_s,
        },
        latency_us: LatencySummaryUs::of(&histogram),
        server,
        latency_histogram_v2_base64: histogram_to_base64(&histogram)?,
    };
    let text = if args.json {
        format!("{}\n", serde_json::to_string(&report)?)
    } else {
        report.to_text()
    };
    super::report::print(&text)?;
    if counts.delivered == 0 {
        bail!("no message was delivered");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        args: MqttPubSubArgs,
    }

    fn args(extra: &[&str]) -> MqttPubSubArgs {
        let mut argv = vec!["x", "--topic-prefix", "b/1", "--client-id-prefix", "c"];
        argv.extend_from_slice(extra);
        Wrap::parse_from(argv).args
    }

    #[test]
    fn fan_in_partitions_stay_on_one_thread() {
        let a = args(&[
            "--mode",
            "fan-in",
            "--publishers",
            "10",
            "--subscribers",
            "3",
        ]);
        let layout = lay_out(&a, 2);
        assert_eq!(layout.subscribers_per_message, 1);
        for (t, (subs, pubs)) in layout.subs.iter().zip(&layout.pubs).enumerate() {
            for p in pubs {
                let partition = p.index as u64 % 3;
                assert_eq!(p.topic, format!("b/1/in/{partition}/{}", p.index));
                assert_eq!(
                    partition % 2,
                    t as u64,
                    "publisher {} on thread {t}",
                    p.index
                );
                assert!(subs
                    .iter()
                    .any(|s| s.filter == format!("b/1/in/{partition}/+")));
                assert!(!p.remote_feedback);
            }
        }
        let count: usize = layout.pubs.iter().map(Vec::len).sum();
        assert_eq!(count, 10);
    }

    #[test]
    fn fan_out_spreads_subscribers() {
        let a = args(&["--mode", "fan-out", "--subscribers", "5"]);
        let layout = lay_out(&a, 2);
        assert_eq!(layout.subscribers_per_message, 5);
        assert_eq!(layout.subs[0].len(), 3);
        assert_eq!(layout.subs[1].len(), 2);
        assert_eq!(layout.pubs[0].len(), 1);
        assert!(layout.pubs[0][0].remote_feedback);
        assert!(layout.subs.iter().flatten().all(|s| s.filter == "b/1/out"));
        let single = lay_out(&a, 1);
        assert!(!single.pubs[0][0].remote_feedback);
    }
}
