//! Pairs mode, one runtime thread: each pair is a sender device `X` and a
//! receiver device `X-rx`; the server routes what `X` sends to `X-rx`.
//!
//! ```text
//! connect + login every pair ──▶ Connected ──▶ wait for start ──▶ run ──▶ PairsDone
//!
//! sender:   sleep (on the thread's Pacer) until start + phase; until end:
//!           wait for window room, (paced) sleep until the next frame is due,
//!           stamp a batch, write it; then wait (<= drain) until the receiver
//!           saw the last sequence number, and cancel the receiver's read
//! receiver: read, decode frames, record latency of frames stamped in the
//!           measured window, track sequence numbers
//! ```
//!
//! Sender and receiver of a pair live on the same thread and share a
//! [`PairState`]; nothing crosses threads until the thread's totals.

use std::{
    cell::{Cell, RefCell},
    future::poll_fn,
    net::SocketAddr,
    rc::Rc,
    sync::{mpsc, Arc},
    task::{Poll, Waker},
    time::Duration,
};

use hdrhistogram::Histogram;
use monoio::{
    buf::IoBufMut as _,
    io::{AsyncWriteRentExt as _, CancelHandle, CancelableAsyncReadRent as _, Canceller},
    net::TcpStream,
};
use shoal_protocols::framing::FramingError;

use super::{
    child::ThreadEvent,
    login::{connect_and_login, in_batches, DeviceConn},
    messages::{ConnectSummary, PairsCounts},
};
use crate::{
    clock::{duration_ns, monotonic_ns, until_ns},
    multiproc::ParentCommands,
    pacer::Pacer,
    report::new_latency_histogram,
    wire::{parse_probe, FrameReader, Probe, ProbeFrameTemplate},
};

/// How senders load the server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TrafficPlan {
    pub(crate) payload_bytes: usize,
    /// Frames per second per sender; 0 = full speed.
    pub(crate) rate_per_s: u64,
    /// Most frames a sender has in flight; 0 = unbounded.
    pub(crate) window_frames: u64,
    /// Most frames per write.
    pub(crate) batch_frames: u64,
    pub(crate) warmup: Duration,
    pub(crate) duration: Duration,
    pub(crate) drain: Duration,
    pub(crate) recv_buffer_bytes: usize,
    /// Paced sends fall on multiples of this.
    pub(crate) pacing_resolution: Duration,
}

/// One sender/receiver pair.
#[derive(Debug, Clone)]
pub(crate) struct PairSpec {
    pub(crate) sender: DeviceConn,
    pub(crate) receiver: DeviceConn,
    /// Paced senders start this long after the common start, so that a fleet
    /// spreads over the send interval instead of sending in bursts.
    pub(crate) phase_ns: u64,
}

/// Phase of pair `index` of `count` when paced senders are spread evenly
/// over one interval of `rate_per_s`.
pub(crate) fn spread_phase_ns(index: u64, count: u64, rate_per_s: u64) -> u64 {
    if rate_per_s == 0 || count == 0 {
        return 0;
    }
    let offset =
        u128::from(index % count) * 1_000_000_000 / (u128::from(count) * u128::from(rate_per_s));
    u64::try_from(offset).unwrap_or(0)
}

/// The work of one runtime thread in pairs mode.
#[derive(Debug)]
pub(crate) struct PairsThreadPlan {
    pub(crate) target: SocketAddr,
    pub(crate) pairs: Vec<PairSpec>,
    pub(crate) connect_timeout: Duration,
    pub(crate) connect_concurrency: usize,
    /// How long to wait for the parent's start time after connecting.
    pub(crate) start_wait_limit: Duration,
    pub(crate) traffic: TrafficPlan,
}

/// Instants of one run, CLOCK_MONOTONIC ns.
#[derive(Debug, Clone, Copy)]
struct RunClock {
    start_ns: u64,
    measure_start_ns: u64,
    end_ns: u64,
    drain_end_ns: u64,
}

impl RunClock {
    fn new(start_ns: u64, traffic: &TrafficPlan) -> Self {
        let measure_start_ns = start_ns + duration_ns(traffic.warmup);
        let end_ns = measure_start_ns + duration_ns(traffic.duration);
        Self {
            start_ns,
            measure_start_ns,
            end_ns,
            drain_end_ns: end_ns + duration_ns(traffic.drain),
        }
    }

    fn in_measured_window(&self, ns: u64) -> bool {
        (self.measure_start_ns..self.end_ns).contains(&ns)
    }
}

/// Send time of frame `seq` of a paced sender.
fn scheduled_ns(start_ns: u64, rate_per_s: u64, seq: u64) -> u64 {
    let offset = u128::from(seq) * 1_000_000_000 / u128::from(rate_per_s);
    start_ns.saturating_add(u64::try_from(offset).unwrap_or(u64::MAX))
}

/// How many frames of a paced sender are due at `now_ns` (frame k is due
/// at `scheduled_ns(k)`).
fn frames_due(start_ns: u64, rate_per_s: u64, now_ns: u64) -> u64 {
    if now_ns < start_ns {
        return 0;
    }
    let elapsed = u128::from(now_ns - start_ns);
    let due = elapsed * u128::from(rate_per_s) / 1_000_000_000 + 1;
    u64::try_from(due).unwrap_or(u64::MAX)
}

/// Receiver-side sequence tracking.
#[derive(Debug, Default, Clone, Copy)]
struct SequenceTracker {
    /// Highest sequence number seen + 1.
    next_expected: u64,
    gaps: u64,
    out_of_order: u64,
}

impl SequenceTracker {
    fn observe(&mut self, seq: u64) {
        if seq >= self.next_expected {
            self.gaps += seq - self.next_expected;
            self.next_expected = seq + 1;
        } else {
            self.out_of_order += 1;
        }
    }
}

/// State shared by the sender and the receiver of one pair.
#[derive(Default)]
struct PairState {
    /// Frames handed to the socket.
    sent: Cell<u64>,
    /// Highest sequence number received + 1.
    acked: Cell<u64>,
    receiver_done: Cell<bool>,
    sender_waker: Cell<Option<Waker>>,
    /// Cancels the receiver's pending read once the pair is finished.
    receiver_read: RefCell<Option<Canceller>>,
}

impl PairState {
    fn in_flight(&self) -> u64 {
        self.sent.get().saturating_sub(self.acked.get())
    }

    fn wake_sender(&self) {
        if let Some(waker) = self.sender_waker.take() {
            waker.wake();
        }
    }

    /// Waits until `ready` holds (re-checked whenever the receiver makes
    /// progress) or `deadline_ns` passes; true if `ready` held.
    async fn wait_until(&self, deadline_ns: u64, ready: impl Fn(&Self) -> bool) -> bool {
        let condition = poll_fn(|cx| {
            if ready(self) {
                Poll::Ready(())
            } else {
                self.sender_waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        });
        monoio::time::timeout(until_ns(deadline_ns), condition)
            .await
            .is_ok()
    }

    fn cancel_receiver(&self) {
        if let Some(canceller) = self.receiver_read.borrow_mut().take() {
            canceller.cancel();
        }
    }
}

/// What stays the same for every pair of a thread.
struct ThreadShared {
    traffic: TrafficPlan,
    clock: RunClock,
    template: ProbeFrameTemplate,
    pacer: Rc<Pacer>,
    histogram: RefCell<Histogram<u64>>,
}

/// Runs one thread's pairs from connect to totals, reporting on `events`.
pub(crate) async fn run_thread(
    plan: PairsThreadPlan,
    commands: Arc<ParentCommands>,
    events: mpsc::Sender<ThreadEvent>,
) {
    let Some(template) = ProbeFrameTemplate::new(plan.traffic.payload_bytes) else {
        let _ = events.send(ThreadEvent::Failed("payload size out of range".to_owned()));
        return;
    };
    let pacer = match Pacer::new(duration_ns(plan.traffic.pacing_resolution)) {
        Ok(pacer) => pacer,
        Err(e) => {
            let _ = events.send(ThreadEvent::Failed(format!("cannot create a timerfd: {e}")));
            return;
        }
    };
    let (pairs, connect) = connect_pairs(&plan).await;
    if events.send(ThreadEvent::Connected(connect)).is_err() {
        return;
    }
    let start_deadline = monotonic_ns() + duration_ns(plan.start_wait_limit);
    let Some(start_ns) = commands.start_ns(start_deadline).await else {
        let _ = events.send(ThreadEvent::Failed(
            "no start time from the parent".to_owned(),
        ));
        return;
    };
    let shared = Rc::new(ThreadShared {
        traffic: plan.traffic,
        clock: RunClock::new(start_ns, &plan.traffic),
        template,
        pacer: Rc::clone(&pacer),
        histogram: RefCell::new(new_latency_histogram()),
    });
    let pacer_driver = monoio::spawn(Rc::clone(&pacer).drive());
    let tasks: Vec<_> = pairs
        .into_iter()
        .map(|(sender, receiver, phase_ns)| {
            let pair = Rc::new(PairState::default());
            let canceller = Canceller::new();
            let cancel = canceller.handle();
            *pair.receiver_read.borrow_mut() = Some(canceller);
            (
                monoio::spawn(run_sender(
                    sender,
                    phase_ns,
                    Rc::clone(&pair),
                    Rc::clone(&shared),
                )),
                monoio::spawn(run_receiver(receiver, pair, Rc::clone(&shared), cancel)),
            )
        })
        .collect();
    let mut counts = PairsCounts::default();
    for (sender, receiver) in tasks {
        counts.merge(sender.await);
        counts.merge(receiver.await);
    }
    pacer.stop();
    pacer_driver.await;
    let histogram = shared.histogram.replace(new_latency_histogram());
    let _ = events.send(ThreadEvent::PairsDone(counts, Box::new(histogram)));
}

/// Connected pairs: (sender, receiver, phase_ns).
type ConnectedPair = (TcpStream, TcpStream, u64);

async fn connect_pairs(plan: &PairsThreadPlan) -> (Vec<ConnectedPair>, ConnectSummary) {
    let target = plan.target;
    let timeout = plan.connect_timeout;
    let results = in_batches(
        plan.pairs.clone(),
        plan.connect_concurrency,
        |PairSpec {
             sender,
             receiver,
             phase_ns,
         }| async move {
            // The receiver logs in first so it is registered before its sender.
            let rx = connect_and_login(&receiver, target, timeout)
                .await
                .map_err(|e| (0, e, receiver.describe(target)))?;
            let tx = connect_and_login(&sender, target, timeout)
                .await
                .map_err(|e| (1, e, sender.describe(target)))?;
            Ok::<_, (u64, std::io::Error, String)>((tx, rx, phase_ns, monotonic_ns()))
        },
    )
    .await;
    let mut summary = ConnectSummary::default();
    let mut pairs = Vec::with_capacity(results.len());
    for result in results {
        match result {
            Ok((tx, rx, phase_ns, at_ns)) => {
                summary.units_established += 1;
                summary.sockets_attempted += 2;
                summary.sockets_established += 2;
                summary.last_established_ns = summary.last_established_ns.max(at_ns);
                pairs.push((tx, rx, phase_ns));
            }
            Err((established, error, context)) => {
                summary.sockets_attempted += established + 1;
                summary.sockets_established += established;
                summary.failures.record(&error, &context);
            }
        }
    }
    (pairs, summary)
}

async fn run_sender(
    mut stream: TcpStream,
    phase_ns: u64,
    pair: Rc<PairState>,
    shared: Rc<ThreadShared>,
) -> PairsCounts {
    let traffic = shared.traffic;
    let clock = shared.clock;
    let mut counts = PairsCounts::default();
    let mut out = Vec::with_capacity(traffic.batch_frames as usize * shared.template.frame_bytes());
    let mut seq = 0u64;
    let start_ns = clock.start_ns + phase_ns;
    shared.pacer.sleep_until(start_ns).await;
    loop {
        let now = monotonic_ns();
        if now >= clock.end_ns || pair.receiver_done.get() {
            break;
        }
        let mut budget = traffic.batch_frames;
        if traffic.window_frames > 0 {
            let in_flight = pair.in_flight();
            if in_flight >= traffic.window_frames {
                let window = traffic.window_frames;
                pair.wait_until(clock.end_ns, |p| {
                    p.in_flight() < window || p.receiver_done.get()
                })
                .await;
                continue;
            }
            budget = budget.min(traffic.window_frames - in_flight);
        }
        let batch = if traffic.rate_per_s == 0 {
            budget
        } else {
            let due = frames_due(start_ns, traffic.rate_per_s, now).saturating_sub(seq);
            if due == 0 {
                let next_ns = scheduled_ns(start_ns, traffic.rate_per_s, seq);
                shared.pacer.sleep_until(next_ns).await;
                continue;
            }
            due.min(budget)
        };
        out.clear();
        for k in seq..seq + batch {
            // Paced frames carry their scheduled time, so time spent behind
            // schedule (window full, socket full, late timer) counts as latency.
            let sent_ns = if traffic.rate_per_s == 0 {
                now
            } else {
                scheduled_ns(start_ns, traffic.rate_per_s, k)
            };
            shared.template.append(&mut out, Probe { sent_ns, seq: k });
            if clock.in_measured_window(sent_ns) {
                counts.frames_sent_measured += 1;
            }
        }
        pair.sent.set(seq + batch);
        let (written, buf) = stream.write_all(out).await;
        out = buf;
        if let Err(error) = written {
            pair.sent.set(seq);
            counts.run_errors.record(&error, "sender write");
            break;
        }
        seq += batch;
    }
    counts.frames_sent = seq;
    // Drain: give in-flight frames until drain_end to arrive, then stop the receiver.
    pair.wait_until(clock.drain_end_ns, |p| {
        p.acked.get() >= seq || p.receiver_done.get()
    })
    .await;
    pair.cancel_receiver();
    drop(stream);
    counts
}

async fn run_receiver(
    mut stream: TcpStream,
    pair: Rc<PairState>,
    shared: Rc<ThreadShared>,
    cancel: CancelHandle,
) -> PairsCounts {
    let clock = shared.clock;
    let mut counts = PairsCounts::default();
    let mut sequence = SequenceTracker::default();
    let mut reader = FrameReader::with_capacity(shared.traffic.recv_buffer_bytes);
    loop {
        let buf = reader.begin_read();
        let (filled, capacity) = (buf.len(), buf.capacity());
        let (read, buf) = stream
            .cancelable_read(buf.slice_mut(filled..capacity), cancel.clone())
            .await;
        reader.finish_read(buf.into_inner());
        match read {
            Ok(0) => {
                let eof = std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "server closed the connection",
                );
                counts.run_errors.record(&eof, "receiver read");
                break;
            }
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => break,
            Err(error) => {
                counts.run_errors.record(&error, "receiver read");
                break;
            }
        }
        let decoded = take_frames(
            &mut reader,
            monotonic_ns(),
            &clock,
            &mut shared.histogram.borrow_mut(),
            &mut counts,
            &mut sequence,
        );
        pair.acked.set(sequence.next_expected);
        pair.wake_sender();
        if let Err(error) = decoded {
            let error = std::io::Error::new(std::io::ErrorKind::InvalidData, error);
            counts.run_errors.record(&error, "receiver decode");
            break;
        }
    }
    counts.sequence_gaps = sequence.gaps;
    counts.out_of_order = sequence.out_of_order;
    pair.receiver_done.set(true);
    pair.wake_sender();
    counts
}

/// Accounts for every whole frame buffered in `reader`, received at `now_ns`.
fn take_frames(
    reader: &mut FrameReader,
    now_ns: u64,
    clock: &RunClock,
    histogram: &mut Histogram<u64>,
    counts: &mut PairsCounts,
    sequence: &mut SequenceTracker,
) -> Result<(), FramingError> {
    let measured_arrival = clock.in_measured_window(now_ns);
    while let Some(payload) = reader.next_frame()? {
        let Some(probe) = parse_probe(payload) else {
            counts.malformed += 1;
            continue;
        };
        counts.frames_received += 1;
        if measured_arrival {
            counts.frames_received_measured += 1;
        }
        if clock.in_measured_window(probe.sent_ns) {
            histogram.saturating_record(now_ns.saturating_sub(probe.sent_ns) / 1_000);
        }
        sequence.observe(probe.seq);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_schedule() {
        // 1000 frames/s: frame k is due k ms after start.
        assert_eq!(scheduled_ns(5, 1000, 0), 5);
        assert_eq!(scheduled_ns(5, 1000, 3), 5 + 3_000_000);
        assert_eq!(frames_due(5, 1000, 4), 0);
        assert_eq!(frames_due(5, 1000, 5), 1);
        assert_eq!(frames_due(5, 1000, 5 + 2_999_999), 3);
        assert_eq!(frames_due(5, 1000, 5 + 3_000_000), 4);
        // Every frame counted as due is scheduled no later than now.
        for now in [5, 1_000_004, 7_654_321] {
            let due = frames_due(5, 1000, now);
            assert!(scheduled_ns(5, 1000, due - 1) <= now);
            assert!(scheduled_ns(5, 1000, due) > now);
        }
        // Odd rates do not drift: 3/s puts frame 3 exactly 1 s after start.
        assert_eq!(scheduled_ns(0, 3, 3), 1_000_000_000);
    }

    #[test]
    fn phases_spread_over_one_interval() {
        // 4 pairs at 10 frames/s: 0, 25, 50, 75 ms.
        let phases: Vec<_> = (0..4).map(|i| spread_phase_ns(i, 4, 10)).collect();
        assert_eq!(phases, [0, 25_000_000, 50_000_000, 75_000_000]);
        assert_eq!(spread_phase_ns(3, 4, 0), 0);
        assert_eq!(spread_phase_ns(0, 0, 10), 0);
    }

    #[test]
    fn sequence_tracking() {
        let mut t = SequenceTracker::default();
        for seq in [0, 1, 2, 5, 6, 4, 7] {
            t.observe(seq);
        }
        assert_eq!(t.next_expected, 8);
        assert_eq!(t.gaps, 2);
        assert_eq!(t.out_of_order, 1);
    }

    #[test]
    fn take_frames_counts_and_times() {
        let traffic = TrafficPlan {
            payload_bytes: 16,
            rate_per_s: 0,
            window_frames: 0,
            batch_frames: 1,
            warmup: Duration::from_micros(100),
            duration: Duration::from_micros(1000),
            drain: Duration::ZERO,
            recv_buffer_bytes: 256,
            pacing_resolution: Duration::from_micros(100),
        };
        let clock = RunClock::new(0, &traffic);
        let template = ProbeFrameTemplate::new(16).unwrap();
        let mut stream = Vec::new();
        // Stamped during warmup: counted, not timed.
        template.append(
            &mut stream,
            Probe {
                sent_ns: 50_000,
                seq: 0,
            },
        );
        // Stamped in the window, arrives 200 µs later.
        template.append(
            &mut stream,
            Probe {
                sent_ns: 300_000,
                seq: 2,
            },
        );
        // Too short for a probe.
        crate::wire::device_framer()
            .encode_into(b"short", &mut stream)
            .unwrap();

        let mut reader = FrameReader::with_capacity(256);
        let mut buf = reader.begin_read();
        buf.extend_from_slice(&stream);
        reader.finish_read(buf);
        let mut histogram = new_latency_histogram();
        let mut counts = PairsCounts::default();
        let mut sequence = SequenceTracker::default();
        take_frames(
            &mut reader,
            500_000,
            &clock,
            &mut histogram,
            &mut counts,
            &mut sequence,
        )
        .unwrap();
        assert_eq!(counts.frames_received, 2);
        assert_eq!(counts.frames_received_measured, 2);
        assert_eq!(counts.malformed, 1);
        assert_eq!((sequence.next_expected, sequence.gaps), (3, 1));
        assert_eq!(histogram.len(), 1);
        assert_eq!(histogram.max(), 200);
    }

    #[test]
    fn measured_window_is_half_open() {
        let traffic = TrafficPlan {
            payload_bytes: 64,
            rate_per_s: 0,
            window_frames: 64,
            batch_frames: 16,
            warmup: Duration::from_nanos(10),
            duration: Duration::from_nanos(20),
            drain: Duration::from_nanos(5),
            recv_buffer_bytes: 4096,
            pacing_resolution: Duration::from_micros(100),
        };
        let clock = RunClock::new(100, &traffic);
        assert_eq!(
            (clock.measure_start_ns, clock.end_ns, clock.drain_end_ns),
            (110, 130, 135)
        );
        assert!(!clock.in_measured_window(109));
        assert!(clock.in_measured_window(110));
        assert!(!clock.in_measured_window(130));
    }
}
