//! Idle mode, one runtime thread: open connections at the common start, log
//! each in, then hold them silent until the parent says stop.
//!
//! ```text
//! Connected (runtime up) ──▶ wait for start ──▶ connect + login all ──▶ Connected
//!   ──▶ hold: one pending read per connection (notices a server close)
//!   ──▶ stop: cancel the reads, close ──▶ IdleDone
//! ```

use std::{
    net::SocketAddr,
    sync::{mpsc, Arc},
    time::Duration,
};

use monoio::{
    io::{CancelHandle, CancelableAsyncReadRent as _, Canceller},
    net::TcpStream,
};

use super::{
    child::ThreadEvent,
    login::{connect_and_login, in_batches, DeviceConn},
    messages::{ConnectSummary, IdleCounts},
};
use crate::{
    clock::{duration_ns, monotonic_ns, sleep_until_ns},
    multiproc::ParentCommands,
};

/// Bytes read at a time from a connection that should stay silent.
const IDLE_READ_BYTES: usize = 64;

/// The work of one runtime thread in idle mode.
#[derive(Debug)]
pub(crate) struct IdleThreadPlan {
    pub(crate) target: SocketAddr,
    pub(crate) conns: Vec<DeviceConn>,
    pub(crate) connect_timeout: Duration,
    pub(crate) connect_concurrency: usize,
    /// How long to wait for the parent's start time.
    pub(crate) start_wait_limit: Duration,
    /// Longest hold if the parent never says stop.
    pub(crate) hold_limit: Duration,
}

/// How one held connection ended.
enum HoldOutcome {
    OpenAtEnd {
        unexpected_bytes: u64,
    },
    ClosedByServer {
        unexpected_bytes: u64,
        error: Option<std::io::Error>,
    },
}

/// Runs one thread's idle connections, reporting on `events`.
pub(crate) async fn run_thread(
    plan: IdleThreadPlan,
    commands: Arc<ParentCommands>,
    events: mpsc::Sender<ThreadEvent>,
) {
    if events
        .send(ThreadEvent::Connected(ConnectSummary::default()))
        .is_err()
    {
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

    let (target, timeout) = (plan.target, plan.connect_timeout);
    let results = in_batches(plan.conns, plan.connect_concurrency, |conn| async move {
        connect_and_login(&conn, target, timeout)
            .await
            .map(|stream| (stream, monotonic_ns()))
            .map_err(|e| (e, conn.describe(target)))
    })
    .await;
    let mut connect = ConnectSummary::default();
    let mut streams = Vec::with_capacity(results.len());
    for result in results {
        connect.sockets_attempted += 1;
        match result {
            Ok((stream, at_ns)) => {
                connect.units_established += 1;
                connect.sockets_established += 1;
                connect.last_established_ns = connect.last_established_ns.max(at_ns);
                streams.push(stream);
            }
            Err((error, context)) => connect.failures.record(&error, &context),
        }
    }
    if events.send(ThreadEvent::Connected(connect)).is_err() {
        return;
    }

    let canceller = Canceller::new();
    let holds: Vec<_> = streams
        .into_iter()
        .map(|stream| monoio::spawn(hold(stream, canceller.handle())))
        .collect();
    commands
        .stopped(monotonic_ns() + duration_ns(plan.hold_limit))
        .await;
    canceller.cancel();
    let mut counts = IdleCounts::default();
    for task in holds {
        match task.await {
            HoldOutcome::OpenAtEnd { unexpected_bytes } => {
                counts.open_at_end += 1;
                counts.unexpected_bytes += unexpected_bytes;
            }
            HoldOutcome::ClosedByServer {
                unexpected_bytes,
                error,
            } => {
                counts.closed_by_server += 1;
                counts.unexpected_bytes += unexpected_bytes;
                if let Some(error) = error {
                    counts.errors.record(&error, "idle read");
                }
            }
        }
    }
    let _ = events.send(ThreadEvent::IdleDone(counts));
}

/// Keeps one read pending until it is cancelled (still open) or the server
/// closes the connection; the connection closes when this returns.
async fn hold(mut stream: TcpStream, cancel: CancelHandle) -> HoldOutcome {
    let mut buf = Vec::with_capacity(IDLE_READ_BYTES);
    let mut unexpected_bytes = 0;
    loop {
        buf.clear();
        let (read, back) = stream.cancelable_read(buf, cancel.clone()).await;
        buf = back;
        match read {
            Ok(0) => {
                return HoldOutcome::ClosedByServer {
                    unexpected_bytes,
                    error: None,
                }
            }
            Ok(n) => unexpected_bytes += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => {
                return HoldOutcome::OpenAtEnd { unexpected_bytes }
            }
            Err(error) => {
                return HoldOutcome::ClosedByServer {
                    unexpected_bytes,
                    error: Some(error),
                }
            }
        }
    }
}
