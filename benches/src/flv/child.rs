//! One child process: its share of the viewers on pinned runtime threads.
//!
//! ```text
//! thread: start viewers (at most --connect-concurrency setting up at once, none
//!         after the setup deadline) ─ wait until each started or failed ─ Ready
//!         ─ wait for T ─ the window is known to every viewer ─ sleep until
//!         T + warmup + duration + drain ─ cancel every read ─ gather ─ Done
//! child:  all threads Ready ─ "ready" ─ all threads Done ─ "result"
//! ```

use std::{
    cell::{Cell, RefCell},
    net::Ipv4Addr,
    rc::Rc,
    sync::{mpsc, Arc},
    time::Duration,
};

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;
use monoio::io::Canceller;
use serde::{Deserialize, Serialize};

use super::{
    tally::{ConnectSummary, ViewerCounts},
    viewer::{run_viewer, SetupGate, ThreadRun, ViewerPlan},
    watch::RunClock,
    FlvFanoutArgs,
};
use crate::{
    clock::{duration_ns, monotonic_ns, sleep_until_ns, until_ns},
    multiproc::{send_to_parent, share, shares_before, ParentCommands},
    report::{histogram_to_base64, merge_histogram, new_latency_histogram},
    runtime::{allowed_cpus, require_io_uring, spawn_pinned},
};

/// Slack added to the waits a child bounds itself with.
pub(super) const CHILD_SLACK: Duration = Duration::from_secs(30);

/// Messages from a child, in the order a run sends them.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(super) enum ChildMessage {
    /// Every viewer started (got its first video frame), failed, or the
    /// setup deadline passed.
    Ready { connect: ConnectSummary },
    /// The run is over and the viewers are closed.
    Result {
        connect: ConnectSummary,
        counts: Box<ViewerCounts>,
        latency_histogram_v2_base64: String,
    },
}

/// What a runtime thread tells its process.
#[derive(Debug)]
enum ThreadEvent {
    Ready(ConnectSummary),
    Done(ConnectSummary, ViewerCounts, Box<Histogram<u64>>),
    Failed(String),
}

/// The work of one runtime thread.
#[derive(Debug)]
struct ThreadPlan {
    viewer: ViewerPlan,
    /// (run-wide index, source address) of each viewer.
    viewers: Vec<(u64, Option<Ipv4Addr>)>,
    connect_concurrency: usize,
    setup_deadline_ns: u64,
    start_wait_deadline_ns: u64,
    warmup: Duration,
    duration: Duration,
    drain: Duration,
}

/// Runs child `index` of `count`.
pub(super) fn run(args: &FlvFanoutArgs, index: u32, count: u32) -> anyhow::Result<()> {
    require_io_uring()?;
    let commands = ParentCommands::listen()?;
    let cpus = allowed_cpus();
    let threads = args.threads_per_process(cpus.len());
    let units = share(args.viewers, u64::from(count), u64::from(index));
    let first = shares_before(args.viewers, u64::from(count), u64::from(index));
    let now = monotonic_ns();
    let setup_deadline_ns = now + duration_ns(args.setup_timeout);
    let start_wait_deadline_ns =
        setup_deadline_ns + duration_ns(args.connect_timeout + CHILD_SLACK);
    let run_limit = args.setup_timeout
        + args.connect_timeout
        + CHILD_SLACK
        + args.warmup
        + args.duration
        + args.drain
        + args.connect_timeout
        + CHILD_SLACK;

    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let cpu = cpus[(index as usize * threads + t) % cpus.len()];
        let plan = ThreadPlan {
            viewer: ViewerPlan {
                proto: args.proto,
                target: args.viewer_target(),
                app: args.app.clone(),
                stream: args.stream.clone(),
                connect_timeout: args.connect_timeout,
                read_buffer_bytes: args.read_buffer as usize,
                stall_gap: args.stall_gap,
            },
            viewers: (t as u64..units)
                .step_by(threads)
                .map(|i| (first + i, args.source_addrs.pick(first + i)))
                .collect(),
            connect_concurrency: args.connect_concurrency as usize,
            setup_deadline_ns,
            start_wait_deadline_ns,
            warmup: args.warmup,
            duration: args.duration,
            drain: args.drain,
        };
        let events = tx.clone();
        let on_build_error = {
            let events = tx.clone();
            move |reason: String| {
                let _ = events.send(ThreadEvent::Failed(reason));
            }
        };
        let commands = Arc::clone(&commands);
        let handle = spawn_pinned(
            format!("flv-viewers-{index}-{t}"),
            cpu,
            move || run_thread(plan, commands, events),
            on_build_error,
        )
        .context("cannot start a runtime thread")?;
        handles.push(handle);
    }
    drop(tx);

    let deadline_ns = now + duration_ns(run_limit);
    let next = || -> anyhow::Result<ThreadEvent> {
        match rx.recv_timeout(until_ns(deadline_ns)) {
            Ok(ThreadEvent::Failed(reason)) => bail!("runtime thread failed: {reason}"),
            Ok(event) => Ok(event),
            Err(mpsc::RecvTimeoutError::Timeout) => bail!("runtime threads did not finish in time"),
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("a runtime thread ended early"),
        }
    };
    let mut ready = ConnectSummary::default();
    for _ in 0..threads {
        match next()? {
            ThreadEvent::Ready(connect) => ready.merge(connect),
            other => bail!("unexpected thread event {other:?}"),
        }
    }
    send_to_parent(&ChildMessage::Ready { connect: ready })?;
    let mut connect = ConnectSummary::default();
    let mut counts = ViewerCounts::default();
    let mut latency = new_latency_histogram();
    for _ in 0..threads {
        match next()? {
            ThreadEvent::Done(c, n, histogram) => {
                connect.merge(c);
                counts.merge(n);
                merge_histogram(&mut latency, &histogram);
            }
            other => bail!("unexpected thread event {other:?}"),
        }
    }
    send_to_parent(&ChildMessage::Result {
        connect,
        counts: Box::new(counts),
        latency_histogram_v2_base64: histogram_to_base64(&latency)?,
    })?;
    for handle in handles {
        if handle.join().is_err() {
            bail!("a runtime thread panicked");
        }
    }
    Ok(())
}

async fn run_thread(
    plan: ThreadPlan,
    commands: Arc<ParentCommands>,
    events: mpsc::Sender<ThreadEvent>,
) {
    let canceller = Canceller::new();
    let run = Rc::new(ThreadRun {
        plan: plan.viewer,
        clock: Cell::new(None),
        latency_us: RefCell::new(new_latency_histogram()),
        connect: RefCell::new(ConnectSummary::default()),
        gate: SetupGate::new(plan.connect_concurrency),
        cancel: canceller.handle(),
    });
    let mut tasks = Vec::with_capacity(plan.viewers.len());
    for &(index, source) in &plan.viewers {
        if until_ns(plan.setup_deadline_ns).is_zero()
            || !run.gate.take_slot(plan.setup_deadline_ns).await
        {
            run.connect.borrow_mut().skipped += 1;
            continue;
        }
        run.connect.borrow_mut().attempted += 1;
        tasks.push(monoio::spawn(run_viewer(index, source, Rc::clone(&run))));
    }
    run.gate
        .all_settled(tasks.len() as u64, plan.setup_deadline_ns)
        .await;
    let snapshot = run.connect.borrow().clone();
    if events.send(ThreadEvent::Ready(snapshot)).is_err() {
        return;
    }
    let Some(start_ns) = commands.start_ns(plan.start_wait_deadline_ns).await else {
        let _ = events.send(ThreadEvent::Failed(
            "no start time from the parent".to_owned(),
        ));
        let _ = canceller.cancel();
        for task in tasks {
            task.await;
        }
        return;
    };
    let clock = RunClock::new(start_ns, plan.warmup, plan.duration);
    run.clock.set(Some(clock));
    sleep_until_ns(clock.end_ns + duration_ns(plan.drain)).await;
    let _ = canceller.cancel();
    let mut counts = ViewerCounts::default();
    for task in tasks {
        counts.merge(task.await);
    }
    let connect = run.connect.borrow().clone();
    let latency = Box::new(run.latency_us.replace(new_latency_histogram()));
    let _ = events.send(ThreadEvent::Done(connect, counts, latency));
}
