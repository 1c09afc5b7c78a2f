//! A request/response run over processes and threads: the parent starts
//! `--procs` children (this executable again, see [`crate::multiproc`]),
//! gives them one start time, samples the server over the measured window
//! and reports; each child runs its share of the clients on pinned monoio
//! threads, each thread running the scenario's `thread_main`.
//!
//! ```text
//! parent: check budget ─ spawn ─ all Ready ─ "start T" ─ sample at T+warmup
//!         and T+warmup+duration ─ all Result ─ merge ─ report
//! child:  threads ─▶ Connected (each) ─▶ Ready ─▶ … ─▶ Done (each) ─▶ Result
//! thread: ThreadRun::open_all ─ ThreadRun::connected (waits for T) ─ requests
//!         ─ ThreadRun::done
//! ```

use std::{
    future::Future,
    sync::{mpsc, Arc},
    time::Duration,
};

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::{
    device_id,
    report::{RequestsLoadReport, RequestsReport, RequestsServerReport},
    ClientError, ClientSpec, ConnectSummary, LoadArgs, RequestCounts, RequestSchedule, RunClock,
    ThreadTally, Timing,
};
use crate::{
    clock::{block_until_ns, duration_ns, monotonic_ns, until_ns},
    multiproc::{
        check_socket_budget, send_to_parent, share, shares_before, ChildGroup, ParentCommands,
    },
    proc_stats::{ephemeral_port_count, open_files_limit, ProcessSetWatch},
    report::{
        histogram_from_base64, histogram_to_base64, merge_histogram, new_latency_histogram,
        print_stdout, ConnectionsReport, LatencySummaryUs,
    },
    runtime::{allowed_cpus, require_io_uring, spawn_pinned},
};

/// Least time between sending "start" and the start itself.
const MIN_START_LEAD: Duration = Duration::from_millis(50);
/// How long children get to report after the drain.
const RESULT_GRACE: Duration = Duration::from_secs(30);
/// Slack added to the waits a child bounds itself with.
const CHILD_SLACK: Duration = Duration::from_secs(30);

/// What a scenario says about its run, for the parent's checks and report.
#[derive(Debug, Clone)]
pub(crate) struct RunDescription {
    pub(crate) scenario: &'static str,
    pub(crate) target: String,
    /// What each request is, in words.
    pub(crate) request: String,
    /// `connections` or `devices`.
    pub(crate) client_kind: &'static str,
    pub(crate) clients: u64,
    /// Requests a client keeps outstanding at most.
    pub(crate) in_flight_per_client: u64,
    pub(crate) payload_bytes: u64,
    /// How a status is written (`202`, `2.04`).
    pub(crate) status_name: fn(u16) -> String,
}

/// What a runtime thread tells its process.
#[derive(Debug)]
pub(crate) enum ThreadEvent {
    Connected(ConnectSummary),
    Done(RequestCounts, Box<Histogram<u64>>),
    Failed(String),
}

/// Messages from a child, in the order a run sends them.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum ChildMessage {
    /// Every client of the child is open (or failed, or skipped).
    Ready { connect: ConnectSummary },
    /// The run and its drain are over.
    Result {
        counts: RequestCounts,
        latency_histogram_v2_base64: String,
    },
}

/// The work of one runtime thread, and its line to the process.
#[derive(Debug)]
pub(crate) struct ThreadRun {
    pub(crate) clients: Vec<ClientSpec>,
    pub(crate) schedule: RequestSchedule,
    pub(crate) timing: Timing,
    pub(crate) connect_timeout: Duration,
    pub(crate) pacing_resolution: Duration,
    connect_concurrency: usize,
    setup_timeout: Duration,
    start_wait_limit: Duration,
    commands: Arc<ParentCommands>,
    events: mpsc::Sender<ThreadEvent>,
}

impl ThreadRun {
    /// Opens every client with `open`, at most `--connect-concurrency` at
    /// once; clients not started within `--setup-timeout` are skipped.
    pub(crate) async fn open_all<T, F, Fut>(
        &mut self,
        open: F,
    ) -> (Vec<(ClientSpec, T)>, ConnectSummary)
    where
        T: 'static,
        F: Fn(ClientSpec) -> Fut,
        Fut: Future<Output = (ClientSpec, Result<T, ClientError>)> + 'static,
    {
        let deadline_ns = monotonic_ns() + duration_ns(self.setup_timeout);
        let mut summary = ConnectSummary::default();
        let mut opened = Vec::new();
        let mut clients = std::mem::take(&mut self.clients).into_iter();
        loop {
            if monotonic_ns() >= deadline_ns {
                summary.skipped += clients.len() as u64;
                break;
            }
            let batch: Vec<_> = clients
                .by_ref()
                .take(self.connect_concurrency.max(1))
                .map(|spec| monoio::spawn(open(spec)))
                .collect();
            if batch.is_empty() {
                break;
            }
            for task in batch {
                let (spec, result) = task.await;
                summary.attempted += 1;
                match result {
                    Ok(client) => {
                        summary.established += 1;
                        opened.push((spec, client));
                    }
                    Err(error) => summary
                        .failures
                        .record(&error, &format!("device {}", spec.device_id)),
                }
            }
        }
        (opened, summary)
    }

    /// Reports the setup and waits for the common start: the run's clock,
    /// or `None` when the parent went away or gave no start in time (the
    /// thread then ends).
    pub(crate) async fn connected(&self, summary: ConnectSummary) -> Option<RunClock> {
        self.events.send(ThreadEvent::Connected(summary)).ok()?;
        let deadline_ns = monotonic_ns() + duration_ns(self.start_wait_limit);
        let start_ns = self.commands.start_ns(deadline_ns).await?;
        Some(RunClock::new(start_ns, &self.timing))
    }

    /// Hands the thread's totals to its process.
    pub(crate) fn done(&self, tally: &ThreadTally) {
        let (counts, histogram) = tally.take();
        let _ = self
            .events
            .send(ThreadEvent::Done(counts, Box::new(histogram)));
    }

    /// The thread cannot run.
    pub(crate) fn failed(&self, reason: String) {
        let _ = self.events.send(ThreadEvent::Failed(reason));
    }
}

/// Runs a scenario: the parent when no child flags are given, else child
/// `--child-index` whose threads each run `thread_main`.
pub(crate) fn run<F, Fut>(
    load: &LoadArgs,
    description: &RunDescription,
    thread_main: F,
) -> anyhow::Result<()>
where
    F: Fn(ThreadRun) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()>,
{
    load.validate(description.clients)?;
    match (load.child_index, load.child_count) {
        (Some(index), Some(count)) if index < count => {
            run_child(load, description, index, count, thread_main)
                .with_context(|| format!("child process {index}"))
        }
        (Some(index), count) => bail!("bad child flags: index {index}, count {count:?}"),
        (None, _) => run_parent(load, description),
    }
}

/// Receives the threads' events until a deadline.
struct ThreadEvents {
    rx: mpsc::Receiver<ThreadEvent>,
    threads: usize,
    deadline_ns: u64,
}

impl ThreadEvents {
    fn next(&self) -> anyhow::Result<ThreadEvent> {
        match self.rx.recv_timeout(until_ns(self.deadline_ns)) {
            Ok(ThreadEvent::Failed(reason)) => bail!("runtime thread failed: {reason}"),
            Ok(event) => Ok(event),
            Err(mpsc::RecvTimeoutError::Timeout) => bail!("runtime threads did not finish in time"),
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("a runtime thread ended early"),
        }
    }
}

fn run_child<F, Fut>(
    load: &LoadArgs,
    description: &RunDescription,
    index: u32,
    count: u32,
    thread_main: F,
) -> anyhow::Result<()>
where
    F: Fn(ThreadRun) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()>,
{
    require_io_uring()?;
    let commands = ParentCommands::listen()?;
    let cpus = allowed_cpus();
    let threads = load.threads_per_process(cpus.len());
    let clients = description.clients;
    let units = share(clients, u64::from(count), u64::from(index));
    let first = shares_before(clients, u64::from(count), u64::from(index));
    let start_wait_limit = load.setup_timeout + load.connect_timeout + load.settle + CHILD_SLACK;
    let run_limit = start_wait_limit
        + load.setup_timeout
        + load.warmup
        + load.duration
        + load.drain
        + CHILD_SLACK;
    let schedule = RequestSchedule {
        clients,
        rate_per_s: load.rate_per_s,
    };
    let timing = Timing {
        warmup: load.warmup,
        duration: load.duration,
        drain: load.drain,
    };

    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let cpu = cpus[(index as usize * threads + t) % cpus.len()];
        let run = ThreadRun {
            clients: (t as u64..units)
                .step_by(threads)
                .map(|unit| {
                    let g = first + unit;
                    ClientSpec {
                        index: g,
                        device_id: device_id(&load.id_prefix, g),
                        source: load.source_addrs.pick(g),
                    }
                })
                .collect(),
            schedule,
            timing,
            connect_timeout: load.connect_timeout,
            pacing_resolution: load.pacing_resolution,
            connect_concurrency: load.connect_concurrency as usize,
            setup_timeout: load.setup_timeout,
            start_wait_limit,
            commands: Arc::clone(&commands),
            events: tx.clone(),
        };
        let on_build_error = {
            let events = tx.clone();
            move |reason: String| {
                let _ = events.send(ThreadEvent::Failed(reason));
            }
        };
        let main = thread_main.clone();
        let handle = spawn_pinned(
            format!("{}-{index}-{t}", description.scenario),
            cpu,
            move || main(run),
            on_build_error,
        )
        .context("cannot start a runtime thread")?;
        handles.push(handle);
    }
    drop(tx);

    let events = ThreadEvents {
        rx,
        threads,
        deadline_ns: monotonic_ns() + duration_ns(run_limit),
    };
    let mut connect = ConnectSummary::default();
    for _ in 0..events.threads {
        match events.next()? {
            ThreadEvent::Connected(summary) => connect.merge(summary),
            other => bail!("unexpected thread event {other:?}"),
        }
    }
    send_to_parent(&ChildMessage::Ready { connect })?;
    let mut counts = RequestCounts::default();
    let mut histogram = new_latency_histogram();
    for _ in 0..events.threads {
        match events.next()? {
            ThreadEvent::Done(c, h) => {
                counts.merge(c);
                merge_histogram(&mut histogram, &h);
            }
            other => bail!("unexpected thread event {other:?}"),
        }
    }
    send_to_parent(&ChildMessage::Result {
        counts,
        latency_histogram_v2_base64: histogram_to_base64(&histogram)?,
    })?;
    for handle in handles {
        if handle.join().is_err() {
            bail!("a runtime thread panicked");
        }
    }
    Ok(())
}

fn run_parent(load: &LoadArgs, description: &RunDescription) -> anyhow::Result<()> {
    require_io_uring()?;
    check_socket_budget(
        description.clients,
        1,
        u64::from(load.procs),
        "--procs",
        open_files_limit().context("cannot read the open-file limit")?,
        u64::from(load.source_addrs.count()),
        ephemeral_port_count().unwrap_or(28_232),
    )
    .map_err(anyhow::Error::msg)?;
    let server = ProcessSetWatch::new(&load.server_pid)?;
    let mut group = ChildGroup::<ChildMessage>::spawn(load.procs)?;

    let setup_deadline =
        monotonic_ns() + duration_ns(load.setup_timeout + load.connect_timeout + CHILD_SLACK);
    let mut connect = ConnectSummary::default();
    for summary in group.collect(setup_deadline, "ready", |m| match m {
        ChildMessage::Ready { connect } => Some(connect),
        ChildMessage::Result { .. } => None,
    })? {
        connect.merge(summary);
    }
    if connect.established == 0 {
        bail!(
            "no {} could be opened to {} ({} failed: {})",
            description.client_kind,
            description.target,
            connect.failures.count,
            connect.failures.line()
        );
    }

    let start_ns = monotonic_ns() + duration_ns(load.settle.max(MIN_START_LEAD));
    group.broadcast(&format!("start {start_ns}"))?;
    let measure_start_ns = start_ns + duration_ns(load.warmup);
    let end_ns = measure_start_ns + duration_ns(load.duration);
    block_until_ns(measure_start_ns);
    let before =
        ProcessSetWatch::sample_or_warn(server.as_ref(), "at the start of the measured window");
    block_until_ns(end_ns);
    let after =
        ProcessSetWatch::sample_or_warn(server.as_ref(), "at the end of the measured window");

    let results_deadline = end_ns + duration_ns(load.drain + RESULT_GRACE);
    let results = group.collect(results_deadline, "result", |m| match m {
        ChildMessage::Result {
            counts,
            latency_histogram_v2_base64,
        } => Some((counts, latency_histogram_v2_base64)),
        ChildMessage::Ready { .. } => None,
    })?;
    group.wait()?;
    let mut counts = RequestCounts::default();
    let mut histogram = new_latency_histogram();
    for (child_counts, encoded) in results {
        counts.merge(child_counts);
        merge_histogram(&mut histogram, &histogram_from_base64(&encoded)?);
    }

    let duration_s = load.duration.as_secs_f64();
    let server = match (server, before, after) {
        (Some(watch), Some(before), Some(after)) => {
            let cpu_s = watch.cpu_s_between(before, after);
            let answered = counts.answered_measured;
            Some(RequestsServerReport {
                pids: watch.pids(),
                cpu_s,
                cpu_s_per_1k_requests: (answered > 0).then(|| cpu_s * 1000.0 / answered as f64),
                requests_per_cpu_s: (cpu_s > 0.0).then(|| answered as f64 / cpu_s),
                rss_before_kib: before.rss_kib,
                rss_after_kib: after.rss_kib,
            })
        }
        _ => None,
    };
    let report = RequestsReport::new(
        description,
        RequestsLoadReport {
            target: description.target.clone(),
            request: description.request.clone(),
            client_kind: description.client_kind,
            clients: description.clients,
            in_flight_per_client: description.in_flight_per_client,
            payload_bytes: description.payload_bytes,
            offered_rate_per_s: load.rate_per_s,
            processes: load.procs,
            threads_per_process: load.threads_per_process(allowed_cpus().len()),
            source_addrs: load.source_addrs.to_string(),
            warmup_s: load.warmup.as_secs_f64(),
            duration_s,
            drain_s: load.drain.as_secs_f64(),
        },
        ConnectionsReport {
            attempted: connect.attempted,
            established: connect.established,
            failed: connect.failures.count,
            failures_by_kind: connect.failures.by_kind.clone(),
            first_failure: connect.failures.first.clone(),
        },
        connect.skipped,
        &counts,
        LatencySummaryUs::of(&histogram),
        server,
        histogram_to_base64(&histogram)?,
    );
    let text = if load.json {
        format!("{}\n", serde_json::to_string(&report)?)
    } else {
        report.to_text()
    };
    print_stdout(&text)?;
    if counts.answered == 0 {
        bail!("no request was answered");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_messages_round_trip() {
        let mut counts = RequestCounts {
            sent: 3,
            answered: 2,
            ..RequestCounts::default()
        };
        counts.by_status.insert(202, 1);
        counts.by_status.insert(503, 1);
        let line = serde_json::to_string(&ChildMessage::Result {
            counts: counts.clone(),
            latency_histogram_v2_base64: "AA==".to_owned(),
        })
        .unwrap();
        match serde_json::from_str::<ChildMessage>(&line).unwrap() {
            ChildMessage::Result {
                counts: back,
                latency_histogram_v2_base64,
            } => {
                assert_eq!(back, counts);
                assert_eq!(latency_histogram_v2_base64, "AA==");
            }
            other => panic!("{other:?}"),
        }
        let line = serde_json::to_string(&ChildMessage::Ready {
            connect: ConnectSummary::default(),
        })
        .unwrap();
        assert!(matches!(
            serde_json::from_str::<ChildMessage>(&line).unwrap(),
            ChildMessage::Ready { .. }
        ));
    }
}
