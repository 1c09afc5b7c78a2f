//! One child process: its share of the connections on pinned runtime
//! threads, each phase reported to the parent once every thread finished it.

use std::{
    sync::{mpsc, Arc},
    time::Duration,
};

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;

use super::{
    idle::{self, IdleThreadPlan},
    login::DeviceConn,
    messages::{ChildMessage, ConnectSummary, IdleCounts, PairsCounts},
    pairs::{self, spread_phase_ns, PairSpec, PairsThreadPlan, TrafficPlan},
    plan::{device_id, receiver_id, share, shares_before},
    Mode, TcpFramesArgs,
};
use crate::{
    clock::{duration_ns, monotonic_ns, until_ns},
    multiproc::{send_to_parent, ParentCommands},
    report::{histogram_to_base64, merge_histogram, new_latency_histogram},
    runtime::{allowed_cpus, require_io_uring, spawn_pinned},
};

/// Slack added to the waits a child bounds itself with.
const CHILD_SLACK: Duration = Duration::from_secs(30);

/// What a runtime thread tells its process.
#[derive(Debug)]
pub(crate) enum ThreadEvent {
    /// A setup phase is over (pairs: connected; idle: first "up", then "established").
    Connected(ConnectSummary),
    PairsDone(PairsCounts, Box<Histogram<u64>>),
    IdleDone(IdleCounts),
    Failed(String),
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

    fn connected(&self) -> anyhow::Result<ConnectSummary> {
        let mut summary = ConnectSummary::default();
        for _ in 0..self.threads {
            match self.next()? {
                ThreadEvent::Connected(s) => summary.merge(s),
                other => bail!("unexpected thread event {other:?}"),
            }
        }
        Ok(summary)
    }
}

/// Runs child `index` of `count`.
pub(super) fn run(args: &TcpFramesArgs, index: u32, count: u32) -> anyhow::Result<()> {
    require_io_uring()?;
    let commands = ParentCommands::listen()?;
    let cpus = allowed_cpus();
    let threads = args.threads_per_process(count, cpus.len());
    let units = share(args.connections, u64::from(count), u64::from(index));
    let first_unit = shares_before(args.connections, u64::from(count), u64::from(index));
    let sockets_per_unit = match args.mode {
        Mode::Pairs => 2,
        Mode::Idle => 1,
    };
    let start_wait_limit = args.setup_timeout + args.settle + CHILD_SLACK;
    let run_limit = start_wait_limit
        + args.setup_timeout
        + args.warmup
        + args.duration.max(args.settle)
        + args.drain
        + CHILD_SLACK;

    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let cpu = cpus[(index as usize * threads + t) % cpus.len()];
        // Unit i of this process goes to thread i % threads.
        let my_units = (t as u64..units).step_by(threads);
        let conn = |unit: u64, id: String, socket: u64| DeviceConn {
            device_id: id,
            source: args
                .source_addrs
                .pick((first_unit + unit) * sockets_per_unit + socket),
        };
        let events = tx.clone();
        let on_build_error = {
            let events = tx.clone();
            move |reason: String| {
                let _ = events.send(ThreadEvent::Failed(reason));
            }
        };
        let commands = Arc::clone(&commands);
        let name = format!("tcp-frames-{index}-{t}");
        let handle = match args.mode {
            Mode::Pairs => {
                let plan = PairsThreadPlan {
                    target: args.target,
                    pairs: my_units
                        .map(|unit| {
                            let sender = device_id(&args.id_prefix, index, unit);
                            let receiver = receiver_id(&sender);
                            let phase_ns = if args.aligned {
                                0
                            } else {
                                spread_phase_ns(
                                    first_unit + unit,
                                    args.connections,
                                    args.rate_per_s,
                                )
                            };
                            PairSpec {
                                sender: conn(unit, sender, 1),
                                receiver: conn(unit, receiver, 0),
                                phase_ns,
                            }
                        })
                        .collect(),
                    connect_timeout: args.connect_timeout,
                    connect_concurrency: args.connect_concurrency as usize,
                    start_wait_limit,
                    traffic: TrafficPlan {
                        payload_bytes: args.payload_bytes as usize,
                        rate_per_s: args.rate_per_s,
                        window_frames: args.window_frames,
                        batch_frames: args.batch_frames,
                        warmup: args.warmup,
                        duration: args.duration,
                        drain: args.drain,
                        recv_buffer_bytes: args.recv_buffer_bytes as usize,
                        pacing_resolution: args.pacing_resolution,
                    },
                };
                spawn_pinned(
                    name,
                    cpu,
                    move || pairs::run_thread(plan, commands, events),
                    on_build_error,
                )
            }
            Mode::Idle => {
                let plan = IdleThreadPlan {
                    target: args.target,
                    conns: my_units
                        .map(|unit| conn(unit, device_id(&args.id_prefix, index, unit), 0))
                        .collect(),
                    connect_timeout: args.connect_timeout,
                    connect_concurrency: args.connect_concurrency as usize,
                    start_wait_limit,
                    hold_limit: args.duration.max(args.settle) + CHILD_SLACK,
                };
                spawn_pinned(
                    name,
                    cpu,
                    move || idle::run_thread(plan, commands, events),
                    on_build_error,
                )
            }
        }
        .context("cannot start a runtime thread")?;
        handles.push(handle);
    }
    drop(tx);

    let events = ThreadEvents {
        rx,
        threads,
        deadline_ns: monotonic_ns() + duration_ns(run_limit),
    };
    match args.mode {
        Mode::Pairs => {
            send_to_parent(&ChildMessage::Ready {
                connect: events.connected()?,
            })?;
            let mut counts = PairsCounts::default();
            let mut histogram = new_latency_histogram();
            for _ in 0..threads {
                match events.next()? {
                    ThreadEvent::PairsDone(c, h) => {
                        counts.merge(c);
                        merge_histogram(&mut histogram, &h);
                    }
                    other => bail!("unexpected thread event {other:?}"),
                }
            }
            send_to_parent(&ChildMessage::PairsResult {
                counts,
                latency_histogram_v2_base64: histogram_to_base64(&histogram)?,
            })?;
        }
        Mode::Idle => {
            send_to_parent(&ChildMessage::Ready {
                connect: events.connected()?,
            })?;
            send_to_parent(&ChildMessage::Established {
                connect: events.connected()?,
            })?;
            let mut counts = IdleCounts::default();
            for _ in 0..threads {
                match events.next()? {
                    ThreadEvent::IdleDone(c) => counts.merge(c),
                    other => bail!("unexpected thread event {other:?}"),
                }
            }
            send_to_parent(&ChildMessage::IdleResult { counts })?;
        }
    }
    for handle in handles {
        if handle.join().is_err() {
            bail!("a runtime thread panicked");
        }
    }
    Ok(())
}
