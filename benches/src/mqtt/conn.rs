//! `mqtt-conn`: many idle MQTT connections, for the connect rate and the
//! server's memory per connection.
//!
//! ```text
//! parent: spawn ─ all Ready ─ sample RSS ─ "start T" ─ all Established
//!         ─ settle ─ sample RSS ─ hold ─ "stop" ─ all Result ─ settle
//!         ─ sample RSS ─ report
//! thread: Up ─ wait for T ─ open its connections (paced by --rate, at most
//!         --connect-concurrency at once) ─ Established ─ one pending read
//!         per connection until stop ─ DISCONNECT, close ─ Done
//! ```
//!
//! Connection `g` (run-wide index) has client id `{prefix}-{ppid}-{g}` and
//! source address `pick(g)`; with `--rate R` it starts at `T + g / R`.

use std::{
    collections::VecDeque,
    net::{Ipv4Addr, SocketAddr},
    rc::Rc,
    sync::{mpsc, Arc},
    time::Duration,
};

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;
use monoio::{
    io::{AsyncWriteRentExt as _, CancelHandle, CancelableAsyncReadRent as _, Canceller},
    net::TcpStream,
};
use serde::{Deserialize, Serialize};

use super::{
    client::{connect_client, disconnect_bytes, ClientError, Hello},
    report::{ConnReport, ConnServerReport},
    tally::{ConnectTally, HoldTally},
    MqttConnArgs,
};
use crate::{
    clock::{block_until_ns, duration_ns, monotonic_ns, sleep_until_ns, until_ns},
    multiproc::{
        check_socket_budget, send_to_parent, share, shares_before, ChildGroup, ParentCommands,
    },
    pacer::Pacer,
    proc_stats::{ephemeral_port_count, open_files_limit, sample_or_warn, ProcessWatch},
    report::{
        histogram_from_base64, histogram_to_base64, merge_histogram, new_latency_histogram,
        ConnectionsReport, LatencySummaryUs,
    },
    runtime::{allowed_cpus, require_io_uring, spawn_pinned},
};

/// Least time between sending "start" and the start itself.
const MIN_START_LEAD: Duration = Duration::from_millis(50);
/// How long children get to report after the hold.
const RESULT_GRACE: Duration = Duration::from_secs(30);
/// Slack added to the waits a child bounds itself with.
const CHILD_SLACK: Duration = Duration::from_secs(30);
/// Bytes read at a time from a connection that should stay silent.
const IDLE_READ_BYTES: usize = 64;
/// Receive buffer for the handshake.
const HANDSHAKE_BUFFER_BYTES: usize = 64;
/// Longest a DISCONNECT may take to write at the end.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Messages from a child, in the order a run sends them.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum ChildMessage {
    /// Runtime threads are up, waiting for "start".
    Ready,
    /// Every connection is open (or failed, or skipped).
    Established {
        connect: ConnectTally,
        handshake_histogram_v2_base64: String,
    },
    /// The hold is over and the connections are closed.
    Result { hold: HoldTally },
}

/// When connection `g` starts at `rate_per_s` (0: at once).
fn start_offset_ns(g: u64, rate_per_s: u64) -> u64 {
    if rate_per_s == 0 {
        return 0;
    }
    u64::try_from(u128::from(g) * 1_000_000_000 / u128::from(rate_per_s)).unwrap_or(u64::MAX)
}

pub(super) fn run_parent(args: &MqttConnArgs) -> anyhow::Result<()> {
    require_io_uring()?;
    check_socket_budget(
        args.connections,
        1,
        u64::from(args.procs),
        "--procs",
        open_files_limit().context("cannot read the open-file limit")?,
        u64::from(args.source_addrs.count()),
        ephemeral_port_count().unwrap_or(28_232),
    )
    .map_err(anyhow::Error::msg)?;
    let server = args.server_pid.map(ProcessWatch::new).transpose()?;
    let mut group = ChildGroup::<ChildMessage>::spawn(args.procs)?;

    let setup_deadline = monotonic_ns() + duration_ns(args.setup_timeout);
    group.collect(setup_deadline, "ready", |m| match m {
        ChildMessage::Ready => Some(()),
        _ => None,
    })?;
    let rss_before = sample_or_warn(server.as_ref(), "before connecting");
    let start_ns = monotonic_ns() + duration_ns(MIN_START_LEAD);
    group.broadcast(&format!("start {start_ns}"))?;
    let connect_deadline =
        start_ns + duration_ns(args.setup_timeout + args.connect_timeout + CHILD_SLACK);
    let established = group.collect(connect_deadline, "established", |m| match m {
        ChildMessage::Established {
            connect,
            handshake_histogram_v2_base64,
        } => Some((connect, handshake_histogram_v2_base64)),
        _ => None,
    })?;
    let mut connect = ConnectTally::default();
    let mut handshakes = new_latency_histogram();
    for (tally, encoded) in established {
        connect.merge(tally);
        merge_histogram(&mut handshakes, &histogram_from_base64(&encoded)?);
    }
    let hold_start_ns = monotonic_ns();
    block_until_ns(hold_start_ns + duration_ns(args.settle));
    let rss_held = sample_or_warn(server.as_ref(), "while the connections are held");
    let held_at_ns = monotonic_ns();
    let hold = args.hold.max(args.settle);
    block_until_ns(hold_start_ns + duration_ns(hold));
    let hold_end = sample_or_warn(server.as_ref(), "at the end of the hold");
    let hold_sampled_s = monotonic_ns().saturating_sub(held_at_ns) as f64 / 1e9;
    group.broadcast("stop")?;
    let results = group.collect(
        monotonic_ns() + duration_ns(RESULT_GRACE),
        "result",
        |m| match m {
            ChildMessage::Result { hold } => Some(hold),
            _ => None,
        },
    )?;
    group.wait()?;
    let held = results
        .into_iter()
        .fold(HoldTally::default(), |mut all, one| {
            all.merge(one);
            all
        });
    block_until_ns(monotonic_ns() + duration_ns(args.settle));
    let rss_after = sample_or_warn(server.as_ref(), "after closing");

    let connect_s = connect.last_established_ns.saturating_sub(start_ns) as f64 / 1e9;
    let server = match (server, rss_before, rss_held, hold_end, rss_after) {
        (Some(watch), Some(before), Some(held), Some(hold_end), Some(after)) => {
            let growth_bytes = (held.rss_kib as i64 - before.rss_kib as i64) * 1024;
            Some(ConnServerReport {
                pid: watch.pid(),
                cpu_connect_s: watch.cpu_s_between(before, held),
                cpu_hold_s: watch.cpu_s_between(held, hold_end),
                hold_sampled_s,
                rss_before_kib: before.rss_kib,
                rss_held_kib: held.rss_kib,
                rss_after_close_kib: after.rss_kib,
                rss_growth_bytes: growth_bytes,
                rss_bytes_per_connection: (connect.established > 0)
                    .then(|| growth_bytes as f64 / connect.established as f64),
            })
        }
        _ => None,
    };
    let report = ConnReport {
        scenario: "mqtt-conn",
        target: args.target.to_string(),
        protocol: args.protocol.name(),
        processes: args.procs,
        threads_per_process: args.threads_per_process(allowed_cpus().len()),
        source_addrs: args.source_addrs.to_string(),
        rate_per_s: args.rate_per_s,
        keepalive_s: args.keepalive,
        connections: ConnectionsReport {
            attempted: connect.attempted,
            established: connect.established,
            failed: connect.failures.count,
            failures_by_kind: connect.failures.by_kind.clone(),
            first_failure: connect.failures.first.clone(),
        },
        skipped: connect.skipped,
        connect_s,
        connections_per_s: if connect_s > 0.0 {
            connect.established as f64 / connect_s
        } else {
            0.0
        },
        handshake_us: LatencySummaryUs::of(&handshakes),
        hold_s: hold.as_secs_f64(),
        open_at_end: held.open_at_end,
        closed_by_server: held.closed_by_server,
        unexpected_bytes_received: held.unexpected_bytes,
        hold_errors: held.errors,
        server,
    };
    let text = if args.json {
        format!("{}\n", serde_json::to_string(&report)?)
    } else {
        report.to_text()
    };
    super::report::print(&text)?;
    if connect.established == 0 {
        bail!(
            "no MQTT connection to {} could be established (first failure: {})",
            args.target,
            connect.failures.first.as_deref().unwrap_or("none")
        );
    }
    Ok(())
}

/// What a runtime thread tells its process.
#[derive(Debug)]
enum ThreadEvent {
    Up,
    Established(ConnectTally, Box<Histogram<u64>>),
    Done(HoldTally),
    Failed(String),
}

/// The work of one runtime thread.
#[derive(Debug)]
struct ThreadPlan {
    target: SocketAddr,
    /// (run-wide index, source address) of each connection.
    conns: Vec<(u64, Option<Ipv4Addr>)>,
    client_id_prefix: String,
    version: shoal_protocols::mqtt::Version,
    keep_alive_secs: u16,
    rate_per_s: u64,
    connect_timeout: Duration,
    connect_concurrency: usize,
    setup_timeout: Duration,
    give_up_after: u64,
    start_wait_limit: Duration,
    hold_limit: Duration,
}

pub(super) fn run_child(args: &MqttConnArgs, index: u32, count: u32) -> anyhow::Result<()> {
    require_io_uring()?;
    let commands = ParentCommands::listen()?;
    let cpus = allowed_cpus();
    let threads = args.threads_per_process(cpus.len());
    let units = share(args.connections, u64::from(count), u64::from(index));
    let first = shares_before(args.connections, u64::from(count), u64::from(index));
    let client_id_prefix = format!(
        "{}-{}",
        args.client_id_prefix,
        std::os::unix::process::parent_id()
    );
    let start_wait_limit = args.setup_timeout + args.settle + CHILD_SLACK;
    let hold_limit = args.setup_timeout
        + args.connect_timeout
        + args.hold.max(args.settle) * 2
        + RESULT_GRACE
        + CHILD_SLACK;
    let run_limit = start_wait_limit + hold_limit + CHILD_SLACK;

    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let cpu = cpus[(index as usize * threads + t) % cpus.len()];
        let plan = ThreadPlan {
            target: args.target,
            conns: (t as u64..units)
                .step_by(threads)
                .map(|i| (first + i, args.source_addrs.pick(first + i)))
                .collect(),
            client_id_prefix: client_id_prefix.clone(),
            version: args.protocol.wire(),
            keep_alive_secs: args.keepalive,
            rate_per_s: args.rate_per_s,
            connect_timeout: args.connect_timeout,
            connect_concurrency: args.connect_concurrency as usize,
            setup_timeout: args.setup_timeout,
            give_up_after: args.give_up_after,
            start_wait_limit,
            hold_limit,
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
            format!("mqtt-conn-{index}-{t}"),
            cpu,
            move || run_thread(plan, commands, events),
            on_build_error,
        )
        .context("cannot start a runtime thread")?;
        handles.push(handle);
    }
    drop(tx);

    let deadline_ns = monotonic_ns() + duration_ns(run_limit);
    let next = || -> anyhow::Result<ThreadEvent> {
        match rx.recv_timeout(until_ns(deadline_ns)) {
            Ok(ThreadEvent::Failed(reason)) => bail!("runtime thread failed: {reason}"),
            Ok(event) => Ok(event),
            Err(mpsc::RecvTimeoutError::Timeout) => bail!("runtime threads did not finish in time"),
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("a runtime thread ended early"),
        }
    };
    for _ in 0..threads {
        match next()? {
            ThreadEvent::Up => {}
            other => bail!("unexpected thread event {other:?}"),
        }
    }
    send_to_parent(&ChildMessage::Ready)?;
    let mut connect = ConnectTally::default();
    let mut handshakes = new_latency_histogram();
    for _ in 0..threads {
        match next()? {
            ThreadEvent::Established(tally, histogram) => {
                connect.merge(tally);
                merge_histogram(&mut handshakes, &histogram);
            }
            other => bail!("unexpected thread event {other:?}"),
        }
    }
    send_to_parent(&ChildMessage::Established {
        connect,
        handshake_histogram_v2_base64: histogram_to_base64(&handshakes)?,
    })?;
    let mut hold = HoldTally::default();
    for _ in 0..threads {
        match next()? {
            ThreadEvent::Done(tally) => hold.merge(tally),
            other => bail!("unexpected thread event {other:?}"),
        }
    }
    send_to_parent(&ChildMessage::Result { hold })?;
    for handle in handles {
        if handle.join().is_err() {
            bail!("a runtime thread panicked");
        }
    }
    Ok(())
}

/// A connection that got its CONNACK: the stream, when, and how long the
/// handshake took (µs).
type Opened = (TcpStream, u64, u64);

async fn run_thread(
    plan: ThreadPlan,
    commands: Arc<ParentCommands>,
    events: mpsc::Sender<ThreadEvent>,
) {
    let pacer = match Pacer::new(100_000) {
        Ok(pacer) => pacer,
        Err(e) => {
            let _ = events.send(ThreadEvent::Failed(format!("cannot create a timerfd: {e}")));
            return;
        }
    };
    if events.send(ThreadEvent::Up).is_err() {
        return;
    }
    let start_deadline = monotonic_ns() + duration_ns(plan.start_wait_limit);
    let Some(start_ns) = commands.start_ns(start_deadline).await else {
        let _ = events.send(ThreadEvent::Failed(
            "no start time from the parent".to_owned(),
        ));
        return;
    };
    sleep_until_ns(start_ns).await;
    let pacer_driver = monoio::spawn(Rc::clone(&pacer).drive());
    let (streams, connect, handshakes) = open_all(&plan, start_ns, &pacer).await;
    pacer.stop();
    pacer_driver.await;
    if events
        .send(ThreadEvent::Established(connect, Box::new(handshakes)))
        .is_err()
    {
        return;
    }

    let canceller = Canceller::new();
    let disconnect = Rc::new(disconnect_bytes(plan.version));
    let holds: Vec<_> = streams
        .into_iter()
        .map(|stream| monoio::spawn(hold(stream, canceller.handle(), Rc::clone(&disconnect))))
        .collect();
    commands
        .stopped(monotonic_ns() + duration_ns(plan.hold_limit))
        .await;
    canceller.cancel();
    let mut tally = HoldTally::default();
    for task in holds {
        tally.merge(task.await);
    }
    let _ = events.send(ThreadEvent::Done(tally));
}

/// Opens every connection of the thread: paced by the rate, at most
/// `connect_concurrency` handshakes at once, none started after the setup
/// deadline or after `give_up_after` failures.
async fn open_all(
    plan: &ThreadPlan,
    start_ns: u64,
    pacer: &Pacer,
) -> (Vec<TcpStream>, ConnectTally, Histogram<u64>) {
    let setup_deadline = start_ns + duration_ns(plan.setup_timeout);
    let mut tally = ConnectTally::default();
    let mut handshakes = new_latency_histogram();
    let mut streams = Vec::with_capacity(plan.conns.len());
    let mut in_flight = VecDeque::with_capacity(plan.connect_concurrency);
    let mut account = |result: Result<Opened, (ClientError, String)>,
                       tally: &mut ConnectTally,
                       streams: &mut Vec<TcpStream>| match result {
        Ok((stream, at_ns, handshake_us)) => {
            tally.established += 1;
            tally.last_established_ns = tally.last_established_ns.max(at_ns);
            handshakes.saturating_record(handshake_us.max(1));
            streams.push(stream);
        }
        Err((error, context)) => tally.failures.record(&error, &context),
    };
    for &(g, source) in &plan.conns {
        let given_up = plan.give_up_after > 0 && tally.failures.count >= plan.give_up_after;
        if given_up || monotonic_ns() >= setup_deadline {
            tally.skipped += 1;
            continue;
        }
        if plan.rate_per_s > 0 {
            pacer
                .sleep_until(start_ns + start_offset_ns(g, plan.rate_per_s))
                .await;
        }
        if in_flight.len() >= plan.connect_concurrency {
            if let Some(task) = in_flight.pop_front() {
                account(task.await, &mut tally, &mut streams);
            }
        }
        tally.attempted += 1;
        let client_id = format!("{}-{g}", plan.client_id_prefix);
        let (target, version, keep_alive_secs, timeout) = (
            plan.target,
            plan.version,
            plan.keep_alive_secs,
            plan.connect_timeout,
        );
        in_flight.push_back(monoio::spawn(async move {
            let began = monotonic_ns();
            let hello = Hello {
                version,
                client_id: &client_id,
                keep_alive_secs,
            };
            match connect_client(source, target, hello, timeout, HANDSHAKE_BUFFER_BYTES).await {
                Ok((stream, _reader)) => {
                    let at = monotonic_ns();
                    Ok((stream, at, (at - began) / 1_000))
                }
                Err(error) => {
                    let context = match source {
                        Some(source) => format!("{client_id} ({source} -> {target})"),
                        None => format!("{client_id} (-> {target})"),
                    };
                    Err((error, context))
                }
            }
        }));
    }
    while let Some(task) = in_flight.pop_front() {
        account(task.await, &mut tally, &mut streams);
    }
    (streams, tally, handshakes)
}

/// Keeps one read pending until it is cancelled (the hold is over: send
/// DISCONNECT) or the server closes the connection.
async fn hold(mut stream: TcpStream, cancel: CancelHandle, disconnect: Rc<Vec<u8>>) -> HoldTally {
    let mut tally = HoldTally::default();
    let mut buf = Vec::with_capacity(IDLE_READ_BYTES);
    loop {
        buf.clear();
        let (read, back) = stream.cancelable_read(buf, cancel.clone()).await;
        buf = back;
        match read {
            Ok(0) => {
                tally.closed_by_server += 1;
                return tally;
            }
            Ok(n) => tally.unexpected_bytes += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => {
                tally.open_at_end += 1;
                let bye = disconnect.as_ref().clone();
                let _ = monoio::time::timeout(DISCONNECT_TIMEOUT, stream.write_all(bye)).await;
                return tally;
            }
            Err(error) => {
                tally.closed_by_server += 1;
                tally.errors.record(&ClientError::from(error), "idle read");
                return tally;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_offsets() {
        assert_eq!(start_offset_ns(3, 0), 0);
        assert_eq!(start_offset_ns(3, 1000), 3_000_000);
        assert_eq!(start_offset_ns(20_000, 20_000), 1_000_000_000);
    }
}
