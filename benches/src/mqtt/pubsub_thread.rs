//! `mqtt-pubsub`, one runtime thread: its subscribers and publishers from
//! connect to totals.
//!
//! ```text
//! setup:      subscribers: connect, CONNECT/CONNACK, SUBSCRIBE/SUBACK;
//!             publishers: connect, CONNECT/CONNACK ──▶ Connected
//!             wait for the common start (or abort)
//! publisher:  writer: sleep until start + phase; until end: wait for room
//!             (QoS 1: < --inflight without PUBACK; < --window not yet
//!             delivered), (paced) wait until due, stamp a batch, write it;
//!             then wait (<= drain) for the last PUBACK, DISCONNECT
//!             reader: count PUBACKs, wake the writer
//! subscriber: read, decode, time each PUBLISH stamped in the measured
//!             window, PUBACK QoS 1, add its deliveries to the publishers'
//!             counters (and wake publishers of this thread)
//! stopper:    when publishing is over and every expected delivery arrived,
//!             or at the end of the drain, cancel the subscribers' reads
//! ```
//!
//! The delivery counters are atomics shared by all threads (a fan-out
//! publisher's subscribers live on every thread); a publisher that waits
//! for deliveries from other threads is woken by this thread's watcher on
//! a --pacing-resolution grid, one whose subscribers all live here by the
//! subscribers themselves.

use std::{
    cell::{Cell, RefCell},
    collections::{HashMap, VecDeque},
    future::{poll_fn, Future},
    net::{Ipv4Addr, SocketAddr},
    rc::Rc,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc,
    },
    task::{Poll, Waker},
    time::Duration,
};

use hdrhistogram::Histogram;
use monoio::{
    io::{AsyncWriteRentExt as _, CancelHandle, Canceller, Splitable as _},
    net::{
        tcp::{TcpOwnedReadHalf, TcpOwnedWriteHalf},
        TcpStream,
    },
};
use shoal_protocols::mqtt::{Packet, QoS, Version};

use super::{
    client::{
        append_puback, connect_client, disconnect_bytes, packet_id_of, subscribe, ClientError,
        Hello, PacketReader, Probe, PublishTemplate,
    },
    tally::{ConnectTally, FailureTally},
};
use crate::{
    clock::{duration_ns, monotonic_ns, until_ns},
    pacer::Pacer,
    report::new_latency_histogram,
};

/// How often a thread looks at the common start time and the stop condition.
const POLL: Duration = Duration::from_millis(1);
/// Longest a DISCONNECT may take to write at the end.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A publisher whose delivery window stays full this long counts what is
/// outstanding as lost and opens its window again (a server that drops a
/// message must not stall its publisher for the rest of the run).
const WINDOW_STALL: Duration = Duration::from_secs(1);
/// Receive buffer of a publisher (PUBACKs only).
const PUBLISHER_RECV_BYTES: usize = 4096;

/// What every thread of a run shares.
#[derive(Debug)]
pub(super) struct RunShared {
    /// Deliveries of publisher i's messages, all subscribers together.
    pub(super) delivered_by_publisher: Vec<AtomicU64>,
    pub(super) delivered_total: AtomicU64,
    /// Published × subscribers per message, added as publishers finish.
    pub(super) expected_total: AtomicU64,
    pub(super) publishers_running: AtomicU64,
    /// The common start, 0 until set.
    pub(super) start_ns: AtomicU64,
    /// Setup failed somewhere: give up.
    pub(super) abort: AtomicBool,
}

impl RunShared {
    pub(super) fn new(publishers: u64) -> Self {
        Self {
            delivered_by_publisher: (0..publishers).map(|_| AtomicU64::new(0)).collect(),
            delivered_total: AtomicU64::new(0),
            expected_total: AtomicU64::new(0),
            publishers_running: AtomicU64::new(publishers),
            start_ns: AtomicU64::new(0),
            abort: AtomicBool::new(false),
        }
    }
}

/// How every publisher and subscriber of a run behaves.
#[derive(Debug, Clone, Copy)]
pub(super) struct TrafficPlan {
    pub(super) version: Version,
    pub(super) qos: QoS,
    pub(super) payload_bytes: usize,
    pub(super) publishers: u64,
    /// Deliveries per message.
    pub(super) fanout: u64,
    /// Messages/s, all publishers; 0 = max rate.
    pub(super) rate_per_s: u64,
    pub(super) window: u64,
    pub(super) inflight: u64,
    pub(super) batch: u64,
    pub(super) warmup: Duration,
    pub(super) duration: Duration,
    pub(super) drain: Duration,
    pub(super) recv_buffer_bytes: usize,
    pub(super) pacing_resolution: Duration,
    pub(super) connect_timeout: Duration,
    pub(super) connect_concurrency: usize,
    pub(super) setup_timeout: Duration,
}

impl TrafficPlan {
    /// Send time of message `seq` of a paced publisher whose first message
    /// is due at `first_ns`: each publisher sends rate / publishers per second.
    pub(super) fn scheduled_ns(&self, first_ns: u64, seq: u64) -> u64 {
        let offset = u128::from(seq) * u128::from(self.publishers) * 1_000_000_000
            / u128::from(self.rate_per_s.max(1));
        first_ns.saturating_add(u64::try_from(offset).unwrap_or(u64::MAX))
    }

    /// How many messages of a paced publisher are due at `now_ns`.
    pub(super) fn due(&self, first_ns: u64, now_ns: u64) -> u64 {
        if now_ns < first_ns {
            return 0;
        }
        let elapsed = u128::from(now_ns - first_ns);
        let due = elapsed * u128::from(self.rate_per_s)
            / (u128::from(self.publishers) * 1_000_000_000)
            + 1;
        u64::try_from(due).unwrap_or(u64::MAX)
    }

    /// When publisher `index` sends its first message: paced publishers are
    /// spread evenly over one send interval.
    pub(super) fn phase_ns(&self, index: u64) -> u64 {
        if self.rate_per_s == 0 {
            return 0;
        }
        u64::try_from(u128::from(index) * 1_000_000_000 / u128::from(self.rate_per_s)).unwrap_or(0)
    }

    /// Room a publisher blocked on the delivery window waits for before it
    /// sends again (half the window, at most a batch): fewer, larger writes.
    pub(super) fn window_resume(&self) -> u64 {
        (self.window / 2).clamp(1, self.batch)
    }

    /// Free QoS 1 slots a publisher blocked on PUBACKs waits for.
    pub(super) fn inflight_resume(&self) -> u64 {
        (self.inflight / 2).clamp(1, self.batch)
    }

    /// Messages a publisher may still send under the delivery window, with
    /// `sent` messages sent and `delivered` deliveries of them seen.
    pub(super) fn window_room(&self, sent: u64, delivered: u64) -> u64 {
        if self.window == 0 {
            return u64::MAX;
        }
        let fanout = self.fanout.max(1);
        let missing = (sent * fanout).saturating_sub(delivered);
        self.window.saturating_sub(missing.div_ceil(fanout))
    }
}

/// Instants of one run, CLOCK_MONOTONIC ns.
#[derive(Debug, Clone, Copy)]
pub(super) struct RunClock {
    pub(super) start_ns: u64,
    pub(super) measure_start_ns: u64,
    pub(super) end_ns: u64,
    pub(super) drain_end_ns: u64,
}

impl RunClock {
    pub(super) fn new(start_ns: u64, traffic: &TrafficPlan) -> Self {
        let measure_start_ns = start_ns + duration_ns(traffic.warmup);
        let end_ns = measure_start_ns + duration_ns(traffic.duration);
        Self {
            start_ns,
            measure_start_ns,
            end_ns,
            drain_end_ns: end_ns + duration_ns(traffic.drain),
        }
    }

    pub(super) fn in_measured_window(&self, ns: u64) -> bool {
        (self.measure_start_ns..self.end_ns).contains(&ns)
    }
}

/// One subscriber.
#[derive(Debug, Clone)]
pub(super) struct SubSpec {
    pub(super) client_id: String,
    pub(super) filter: String,
    pub(super) source: Option<Ipv4Addr>,
}

/// One publisher.
#[derive(Debug, Clone)]
pub(super) struct PubSpec {
    pub(super) index: u32,
    pub(super) client_id: String,
    pub(super) topic: String,
    pub(super) source: Option<Ipv4Addr>,
    /// Some of its subscribers live on other threads.
    pub(super) remote_feedback: bool,
}

/// The work of one runtime thread.
#[derive(Debug)]
pub(super) struct ThreadPlan {
    pub(super) target: SocketAddr,
    pub(super) subs: Vec<SubSpec>,
    pub(super) pubs: Vec<PubSpec>,
    pub(super) traffic: TrafficPlan,
    pub(super) shared: Arc<RunShared>,
}

/// Message counters; merge by addition.
#[derive(Debug, Clone, Default)]
pub(super) struct PubSubCounts {
    pub(super) published: u64,
    pub(super) published_measured: u64,
    pub(super) delivered: u64,
    pub(super) delivered_measured: u64,
    pub(super) sequence_gaps: u64,
    pub(super) duplicate_or_reordered: u64,
    pub(super) malformed: u64,
    pub(super) unacknowledged: u64,
    /// Times a publisher gave up on deliveries after a window stall.
    pub(super) window_resets: u64,
    pub(super) run_errors: FailureTally,
}

impl PubSubCounts {
    pub(super) fn merge(&mut self, other: Self) {
        self.published += other.published;
        self.published_measured += other.published_measured;
        self.delivered += other.delivered;
        self.delivered_measured += other.delivered_measured;
        self.sequence_gaps += other.sequence_gaps;
        self.duplicate_or_reordered += other.duplicate_or_reordered;
        self.malformed += other.malformed;
        self.unacknowledged += other.unacknowledged;
        self.window_resets += other.window_resets;
        self.run_errors.merge(other.run_errors);
    }
}

/// What a runtime thread tells the main thread.
#[derive(Debug)]
pub(super) enum ThreadEvent {
    Connected(ConnectTally),
    Done(PubSubCounts, Box<Histogram<u64>>),
    Failed(String),
}

/// A publisher's state, shared by its writer and reader tasks and by the
/// subscribers of its thread.
struct PubState {
    index: usize,
    remote_feedback: bool,
    sent: Cell<u64>,
    pubacks: Cell<u64>,
    /// Deliveries given up on after a window stall (added to the delivered
    /// count for the window).
    forgiven: Cell<u64>,
    reader_done: Cell<bool>,
    waker: Cell<Option<Waker>>,
    /// On the watcher's list.
    watched: Cell<bool>,
    reader_cancel: RefCell<Option<Canceller>>,
}

impl std::fmt::Debug for PubState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubState")
            .field("index", &self.index)
            .field("sent", &self.sent.get())
            .field("pubacks", &self.pubacks.get())
            .finish_non_exhaustive()
    }
}

impl PubState {
    fn wake(&self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

/// What the tasks of one thread share.
struct ThreadCtx {
    traffic: TrafficPlan,
    clock: RunClock,
    shared: Arc<RunShared>,
    pacer: Rc<Pacer>,
    histogram: RefCell<Histogram<u64>>,
    /// Publishers of this thread, by run-wide index.
    local_pubs: HashMap<usize, Rc<PubState>>,
    /// Publishers waiting for deliveries other threads count.
    watched: RefCell<Vec<Rc<PubState>>>,
    /// Every publisher of this thread is done.
    publishers_done: Cell<bool>,
    disconnect: Vec<u8>,
}

impl ThreadCtx {
    fn delivered(&self, publisher: usize) -> u64 {
        self.shared
            .delivered_by_publisher
            .get(publisher)
            .map_or(0, |d| d.load(Ordering::Acquire))
    }

    /// Messages `st` may still send under the delivery window.
    fn room(&self, st: &PubState) -> u64 {
        self.traffic
            .window_room(st.sent.get(), self.delivered(st.index) + st.forgiven.get())
    }

    fn watch(&self, st: &Rc<PubState>) {
        if !st.watched.replace(true) {
            self.watched.borrow_mut().push(Rc::clone(st));
        }
    }
}

/// Waits until `ready` holds (re-checked whenever the publisher is woken)
/// or `deadline_ns` passes; true if `ready` held.
async fn wait_until(
    st: &Rc<PubState>,
    ctx: &ThreadCtx,
    deadline_ns: u64,
    ready: impl Fn(&PubState) -> bool,
) -> bool {
    let condition = poll_fn(|cx| {
        if ready(st) {
            Poll::Ready(())
        } else {
            st.waker.set(Some(cx.waker().clone()));
            if st.remote_feedback {
                ctx.watch(st);
            }
            Poll::Pending
        }
    });
    monoio::time::timeout(until_ns(deadline_ns), condition)
        .await
        .is_ok()
}

/// Runs `setup` for every item with at most `concurrency` in flight; the
/// results come back in order. Items after `deadline_ns` are not started
/// (`None`).
async fn in_window<S, O, F, Fut>(
    items: Vec<S>,
    concurrency: usize,
    deadline_ns: u64,
    setup: F,
) -> Vec<Option<O>>
where
    F: Fn(S) -> Fut,
    Fut: Future<Output = O> + 'static,
    O: 'static,
{
    let mut results = Vec::with_capacity(items.len());
    let mut in_flight = VecDeque::new();
    for item in items {
        if monotonic_ns() >= deadline_ns {
            in_flight.push_back(None);
            continue;
        }
        if in_flight.iter().flatten().count() >= concurrency.max(1) {
            while let Some(front) = in_flight.pop_front() {
                match front {
                    Some(task) => {
                        results.push(Some(task.await));
                        break;
                    }
                    None => results.push(None),
                }
            }
        }
        in_flight.push_back(Some(monoio::spawn(setup(item))));
    }
    for task in in_flight {
        results.push(match task {
            Some(task) => Some(task.await),
            None => None,
        });
    }
    results
}

/// Counts one setup outcome (`None`: not tried in time) and passes the
/// client on.
fn account<T>(
    result: Option<Result<T, (ClientError, String)>>,
    tally: &mut ConnectTally,
) -> Option<T> {
    match result {
        None => {
            tally.skipped += 1;
            None
        }
        Some(Ok(opened)) => {
            tally.attempted += 1;
            tally.established += 1;
            tally.last_established_ns = monotonic_ns();
            Some(opened)
        }
        Some(Err((error, context))) => {
            tally.attempted += 1;
            tally.failures.record(&error, &context);
            None
        }
    }
}

/// Connects (and subscribes) every client of the thread.
async fn setup(
    plan: &ThreadPlan,
) -> (
    Vec<(TcpStream, PacketReader)>,
    Vec<(PubSpec, TcpStream, PacketReader)>,
    ConnectTally,
) {
    let t = plan.traffic;
    let target = plan.target;
    let deadline_ns = monotonic_ns() + duration_ns(t.setup_timeout);
    let mut tally = ConnectTally::default();
    let subs = in_window(
        plan.subs.clone(),
        t.connect_concurrency,
        deadline_ns,
        |spec| async move {
            let hello = Hello {
                version: t.version,
                client_id: &spec.client_id,
                keep_alive_secs: 0,
            };
            let context = format!("subscriber {}", spec.client_id);
            let (mut stream, mut reader) = connect_client(
                spec.source,
                target,
                hello,
                t.connect_timeout,
                t.recv_buffer_bytes,
            )
            .await
            .map_err(|e| (e, context.clone()))?;
            subscribe(
                &mut stream,
                &mut reader,
                t.version,
                &spec.filter,
                t.qos,
                t.connect_timeout,
            )
            .await
            .map_err(|e| (e, context))?;
            Ok((stream, reader))
        },
    )
    .await;
    let subs: Vec<_> = subs
        .into_iter()
        .filter_map(|r| account(r, &mut tally))
        .collect();
    let pubs = in_window(
        plan.pubs.clone(),
        t.connect_concurrency,
        deadline_ns,
        |spec| async move {
            let hello = Hello {
                version: t.version,
                client_id: &spec.client_id,
                keep_alive_secs: 0,
            };
            match connect_client(
                spec.source,
                target,
                hello,
                t.connect_timeout,
                PUBLISHER_RECV_BYTES,
            )
            .await
            {
                Ok((stream, reader)) => Ok((spec, stream, reader)),
                Err(e) => Err((e, format!("publisher {}", spec.client_id))),
            }
        },
    )
    .await;
    let pubs: Vec<_> = pubs
        .into_iter()
        .filter_map(|r| account(r, &mut tally))
        .collect();
    (subs, pubs, tally)
}

/// Waits for the common start; `None` on abort or after `deadline_ns`.
async fn start_time(shared: &RunShared, deadline_ns: u64) -> Option<u64> {
    loop {
        if shared.abort.load(Ordering::Acquire) || until_ns(deadline_ns).is_zero() {
            return None;
        }
        match shared.start_ns.load(Ordering::Acquire) {
            0 => monoio::time::sleep(POLL).await,
            ns => return Some(ns),
        }
    }
}

/// Runs one thread's clients from connect to totals, reporting on `events`.
pub(super) async fn run_thread(plan: ThreadPlan, events: mpsc::Sender<ThreadEvent>) {
    let t = plan.traffic;
    let pacer = match Pacer::new(duration_ns(t.pacing_resolution)) {
        Ok(pacer) => pacer,
        Err(e) => {
            let _ = events.send(ThreadEvent::Failed(format!("cannot create a timerfd: {e}")));
            return;
        }
    };
    let (subs, pubs, tally) = setup(&plan).await;
    if events.send(ThreadEvent::Connected(tally)).is_err() {
        return;
    }
    // The main thread gives the start once every thread is set up (plus
    // settle); bound the wait by a second setup time.
    let start_deadline =
        monotonic_ns() + duration_ns(t.setup_timeout * 2 + Duration::from_secs(30));
    let Some(start_ns) = start_time(&plan.shared, start_deadline).await else {
        return;
    };

    let mut templates = Vec::with_capacity(pubs.len());
    let mut states = Vec::with_capacity(pubs.len());
    for (spec, _, _) in &pubs {
        match PublishTemplate::new(&spec.topic, t.qos, t.payload_bytes, t.version) {
            Ok(template) => templates.push(template),
            Err(e) => {
                let _ = events.send(ThreadEvent::Failed(e));
                return;
            }
        }
        states.push(Rc::new(PubState {
            index: spec.index as usize,
            remote_feedback: spec.remote_feedback,
            sent: Cell::new(0),
            pubacks: Cell::new(0),
            forgiven: Cell::new(0),
            reader_done: Cell::new(false),
            waker: Cell::new(None),
            watched: Cell::new(false),
            reader_cancel: RefCell::new(None),
        }));
    }
    let ctx = Rc::new(ThreadCtx {
        traffic: t,
        clock: RunClock::new(start_ns, &t),
        shared: Arc::clone(&plan.shared),
        pacer: Rc::clone(&pacer),
        histogram: RefCell::new(new_latency_histogram()),
        local_pubs: states.iter().map(|s| (s.index, Rc::clone(s))).collect(),
        watched: RefCell::new(Vec::new()),
        publishers_done: Cell::new(false),
        disconnect: disconnect_bytes(t.version),
    });
    let pacer_driver = monoio::spawn(Rc::clone(&pacer).drive());
    let watcher = monoio::spawn(watch_remote(Rc::clone(&ctx)));

    let sub_canceller = Canceller::new();
    let sub_tasks: Vec<_> = subs
        .into_iter()
        .map(|(stream, reader)| {
            monoio::spawn(run_subscriber(
                stream,
                reader,
                Rc::clone(&ctx),
                sub_canceller.handle(),
            ))
        })
        .collect();
    let stopper = monoio::spawn(stop_subscribers(Rc::clone(&ctx), sub_canceller));
    let pub_tasks: Vec<_> = pubs
        .into_iter()
        .zip(states)
        .zip(templates)
        .map(|(((spec, stream, reader), st), template)| {
            let (read_half, write_half) = stream.into_split();
            let canceller = Canceller::new();
            let cancel = canceller.handle();
            *st.reader_cancel.borrow_mut() = Some(canceller);
            let phase_ns = t.phase_ns(u64::from(spec.index));
            (
                monoio::spawn(run_publisher(
                    write_half,
                    Rc::clone(&st),
                    template,
                    phase_ns,
                    Rc::clone(&ctx),
                )),
                monoio::spawn(run_publisher_reader(read_half, reader, st, cancel)),
            )
        })
        .collect();

    let mut counts = PubSubCounts::default();
    for (writer, reader) in pub_tasks {
        counts.merge(writer.await);
        counts.merge(reader.await);
    }
    ctx.publishers_done.set(true);
    for task in sub_tasks {
        counts.merge(task.await);
    }
    stopper.await;
    watcher.await;
    pacer.stop();
    pacer_driver.await;
    let histogram = ctx.histogram.replace(new_latency_histogram());
    let _ = events.send(ThreadEvent::Done(counts, Box::new(histogram)));
}

/// Wakes the publishers that wait for deliveries other threads count, on
/// the pacing grid, until every publisher of the thread is done.
async fn watch_remote(ctx: Rc<ThreadCtx>) {
    let step_ns = duration_ns(ctx.traffic.pacing_resolution);
    while !ctx.publishers_done.get() && monotonic_ns() < ctx.clock.drain_end_ns {
        if ctx.watched.borrow().is_empty() {
            monoio::time::sleep(POLL).await;
            continue;
        }
        ctx.pacer.sleep_until(monotonic_ns() + step_ns).await;
        let waiting = std::mem::take(&mut *ctx.watched.borrow_mut());
        for st in waiting {
            st.watched.set(false);
            st.wake();
        }
    }
}

/// Cancels the subscribers' reads once every expected delivery arrived
/// after publishing ended, or when the drain is over.
async fn stop_subscribers(ctx: Rc<ThreadCtx>, canceller: Canceller) {
    let clock = ctx.clock;
    let shared = &ctx.shared;
    loop {
        let now = monotonic_ns();
        if now >= clock.drain_end_ns {
            break;
        }
        if now >= clock.end_ns
            && shared.publishers_running.load(Ordering::SeqCst) == 0
            && shared.delivered_total.load(Ordering::SeqCst)
                >= shared.expected_total.load(Ordering::SeqCst)
        {
            break;
        }
        monoio::time::sleep(POLL).await;
    }
    canceller.cancel();
}

async fn run_publisher(
    mut stream: TcpOwnedWriteHalf,
    st: Rc<PubState>,
    template: PublishTemplate,
    phase_ns: u64,
    ctx: Rc<ThreadCtx>,
) -> PubSubCounts {
    let t = ctx.traffic;
    let clock = ctx.clock;
    let qos1 = t.qos != QoS::AtMostOnce;
    let mut counts = PubSubCounts::default();
    let mut out = Vec::with_capacity(t.batch as usize * template.packet_bytes());
    let mut seq = 0u64;
    let first_ns = clock.start_ns + phase_ns;
    ctx.pacer.sleep_until(first_ns).await;
    loop {
        let now = monotonic_ns();
        if now >= clock.end_ns || st.reader_done.get() {
            break;
        }
        let mut budget = t.batch;
        if qos1 {
            let unacked = seq.saturating_sub(st.pubacks.get());
            if unacked >= t.inflight {
                let wanted = t.inflight - t.inflight_resume();
                wait_until(&st, &ctx, clock.end_ns, |s| {
                    s.sent.get().saturating_sub(s.pubacks.get()) <= wanted || s.reader_done.get()
                })
                .await;
                continue;
            }
            budget = budget.min(t.inflight - unacked);
        }
        let room = ctx.room(&st);
        if room == 0 {
            let resume = t.window_resume();
            let stall_end = clock.end_ns.min(now + duration_ns(WINDOW_STALL));
            let opened = wait_until(&st, &ctx, stall_end, |s| {
                ctx.room(s) >= resume || s.reader_done.get()
            })
            .await;
            if !opened && monotonic_ns() < clock.end_ns && ctx.room(&st) == 0 {
                // Nothing came back for a whole stall: what is outstanding
                // is lost (counted at the end); send again.
                let outstanding =
                    (seq * t.fanout).saturating_sub(ctx.delivered(st.index) + st.forgiven.get());
                st.forgiven.set(st.forgiven.get() + outstanding);
                counts.window_resets += 1;
            }
            continue;
        }
        budget = budget.min(room);
        let batch = if t.rate_per_s == 0 {
            budget
        } else {
            let due = t.due(first_ns, now).saturating_sub(seq);
            if due == 0 {
                ctx.pacer.sleep_until(t.scheduled_ns(first_ns, seq)).await;
                continue;
            }
            due.min(budget)
        };
        out.clear();
        for k in seq..seq + batch {
            // Paced messages carry their scheduled time, so time spent behind
            // schedule (a full window, a full socket, a late timer) counts.
            let sent_ns = if t.rate_per_s == 0 {
                now
            } else {
                t.scheduled_ns(first_ns, k)
            };
            let probe = Probe {
                sent_ns,
                seq: k,
                publisher: st.index as u32,
            };
            template.append(&mut out, &probe, packet_id_of(k));
            if clock.in_measured_window(sent_ns) {
                counts.published_measured += 1;
            }
        }
        st.sent.set(seq + batch);
        let (written, buf) = stream.write_all(out).await;
        out = buf;
        if let Err(error) = written {
            counts
                .run_errors
                .record(&ClientError::from(error), "publisher write");
            break;
        }
        seq += batch;
    }
    st.sent.set(seq);
    counts.published = seq;
    ctx.shared
        .expected_total
        .fetch_add(seq * t.fanout, Ordering::SeqCst);
    ctx.shared.publishers_running.fetch_sub(1, Ordering::SeqCst);
    if qos1 {
        wait_until(&st, &ctx, clock.drain_end_ns, |s| {
            s.pubacks.get() >= s.sent.get() || s.reader_done.get()
        })
        .await;
        counts.unacknowledged = seq.saturating_sub(st.pubacks.get());
    }
    if let Some(canceller) = st.reader_cancel.borrow_mut().take() {
        canceller.cancel();
    }
    let _ =
        monoio::time::timeout(DISCONNECT_TIMEOUT, stream.write_all(ctx.disconnect.clone())).await;
    counts
}

async fn run_publisher_reader(
    mut stream: TcpOwnedReadHalf,
    mut reader: PacketReader,
    st: Rc<PubState>,
    cancel: CancelHandle,
) -> PubSubCounts {
    let mut counts = PubSubCounts::default();
    'read: loop {
        loop {
            match reader.next_packet() {
                Ok(Some(Packet::PubAck(_))) => st.pubacks.set(st.pubacks.get() + 1),
                Ok(Some(Packet::PingResp)) => {}
                Ok(Some(other)) => {
                    let kind = if matches!(other, Packet::Disconnect(_)) {
                        "DisconnectedByServer"
                    } else {
                        "UnexpectedPacket"
                    };
                    let error =
                        ClientError::new(kind, format!("publisher got {:?}", other.packet_type()));
                    counts.run_errors.record(&error, "publisher read");
                    break 'read;
                }
                Ok(None) => break,
                Err(e) => {
                    counts
                        .run_errors
                        .record(&ClientError::from(e), "publisher read");
                    break 'read;
                }
            }
        }
        st.wake();
        match reader.read_cancelable(&mut stream, cancel.clone()).await {
            Ok(0) => {
                let error = ClientError::new(
                    "ClosedByServer",
                    "the server closed a publisher's connection",
                );
                counts.run_errors.record(&error, "publisher read");
                break;
            }
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => break,
            Err(e) => {
                counts
                    .run_errors
                    .record(&ClientError::from(e), "publisher read");
                break;
            }
        }
    }
    st.reader_done.set(true);
    st.wake();
    counts
}

/// Per (this subscriber, publisher): the next sequence number expected.
struct Sequences {
    next: Vec<u64>,
    /// Deliveries not yet added to the shared counters, by publisher.
    pending: Vec<u64>,
    touched: Vec<usize>,
}

async fn run_subscriber(
    mut stream: TcpStream,
    mut reader: PacketReader,
    ctx: Rc<ThreadCtx>,
    cancel: CancelHandle,
) -> PubSubCounts {
    let t = ctx.traffic;
    let clock = ctx.clock;
    let publishers = t.publishers as usize;
    let mut counts = PubSubCounts::default();
    let mut seqs = Sequences {
        next: vec![0; publishers],
        pending: vec![0; publishers],
        touched: Vec::new(),
    };
    let mut acks = Vec::new();
    loop {
        let now = monotonic_ns();
        let measured_arrival = clock.in_measured_window(now);
        let mut delivered_now = 0u64;
        let mut failed = false;
        {
            let mut histogram = ctx.histogram.borrow_mut();
            loop {
                match reader.next_packet() {
                    Ok(Some(Packet::Publish(p))) => {
                        if let Some(id) = p.packet_id {
                            append_puback(id, t.version, &mut acks);
                        }
                        let Some(probe) = Probe::parse(p.payload)
                            .filter(|pr| (pr.publisher as usize) < publishers)
                        else {
                            counts.malformed += 1;
                            continue;
                        };
                        delivered_now += 1;
                        if measured_arrival {
                            counts.delivered_measured += 1;
                        }
                        if clock.in_measured_window(probe.sent_ns) {
                            histogram.saturating_record(now.saturating_sub(probe.sent_ns) / 1_000);
                        }
                        let from = probe.publisher as usize;
                        let next = &mut seqs.next[from];
                        if probe.seq >= *next {
                            counts.sequence_gaps += probe.seq - *next;
                            *next = probe.seq + 1;
                        } else {
                            counts.duplicate_or_reordered += 1;
                        }
                        if seqs.pending[from] == 0 {
                            seqs.touched.push(from);
                        }
                        seqs.pending[from] += 1;
                    }
                    Ok(Some(Packet::PingResp)) => {}
                    Ok(Some(other)) => {
                        let kind = if matches!(other, Packet::Disconnect(_)) {
                            "DisconnectedByServer"
                        } else {
                            "UnexpectedPacket"
                        };
                        let error = ClientError::new(
                            kind,
                            format!("subscriber got {:?}", other.packet_type()),
                        );
                        counts.run_errors.record(&error, "subscriber read");
                        failed = true;
                        break;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        counts
                            .run_errors
                            .record(&ClientError::from(e), "subscriber read");
                        failed = true;
                        break;
                    }
                }
            }
        }
        counts.delivered += delivered_now;
        for from in seqs.touched.drain(..) {
            let n = std::mem::take(&mut seqs.pending[from]);
            if let Some(counter) = ctx.shared.delivered_by_publisher.get(from) {
                counter.fetch_add(n, Ordering::AcqRel);
            }
            if let Some(publisher) = ctx.local_pubs.get(&from) {
                if ctx.room(publisher) >= t.window_resume() {
                    publisher.wake();
                }
            }
        }
        if delivered_now > 0 {
            ctx.shared
                .delivered_total
                .fetch_add(delivered_now, Ordering::SeqCst);
        }
        if !acks.is_empty() {
            let (written, buf) = stream.write_all(std::mem::take(&mut acks)).await;
            acks = buf;
            acks.clear();
            if let Err(error) = written {
                counts
                    .run_errors
                    .record(&ClientError::from(error), "subscriber PUBACK write");
                break;
            }
        }
        if failed {
            break;
        }
        match reader.read_cancelable(&mut stream, cancel.clone()).await {
            Ok(0) => {
                let error = ClientError::new(
                    "ClosedByServer",
                    "the server closed a subscriber's connection",
                );
                counts.run_errors.record(&error, "subscriber read");
                break;
            }
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => break,
            Err(e) => {
                counts
                    .run_errors
                    .record(&ClientError::from(e), "subscriber read");
                break;
            }
        }
    }
    let _ =
        monoio::time::timeout(DISCONNECT_TIMEOUT, stream.write_all(ctx.disconnect.clone())).await;
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(publishers: u64, fanout: u64, rate_per_s: u64, window: u64) -> TrafficPlan {
        TrafficPlan {
            version: Version::V311,
            qos: QoS::AtMostOnce,
            payload_bytes: 64,
            publishers,
            fanout,
            rate_per_s,
            window,
            inflight: 32,
            batch: 16,
            warmup: Duration::from_millis(10),
            duration: Duration::from_millis(20),
            drain: Duration::from_millis(5),
            recv_buffer_bytes: 4096,
            pacing_resolution: Duration::from_micros(100),
            connect_timeout: Duration::from_secs(1),
            connect_concurrency: 4,
            setup_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn pacing_spreads_the_total_rate() {
        // 4 publishers sharing 1000 msg/s: each sends every 4 ms, and their
        // first messages are 1 ms apart.
        let t = plan(4, 1, 1000, 0);
        assert_eq!(
            (0..4).map(|i| t.phase_ns(i)).collect::<Vec<_>>(),
            [0, 1_000_000, 2_000_000, 3_000_000]
        );
        assert_eq!(t.scheduled_ns(100, 0), 100);
        assert_eq!(t.scheduled_ns(100, 3), 100 + 12_000_000);
        assert_eq!(t.due(100, 99), 0);
        assert_eq!(t.due(100, 100), 1);
        assert_eq!(t.due(100, 100 + 3_999_999), 1);
        assert_eq!(t.due(100, 100 + 4_000_000), 2);
        for now in [100, 5_000_077, 123_456_789] {
            let due = t.due(100, now);
            assert!(t.scheduled_ns(100, due - 1) <= now);
            assert!(t.scheduled_ns(100, due) > now);
        }
        assert_eq!(plan(1, 1, 0, 0).phase_ns(5), 0);
    }

    #[test]
    fn window_counts_deliveries_per_message() {
        // Fan-out to 10: 16 messages in the window.
        let t = plan(1, 10, 0, 16);
        assert_eq!(t.window_room(0, 0), 16);
        assert_eq!(t.window_room(16, 0), 0);
        // One subscriber has the first message: it is still in flight.
        assert_eq!(t.window_room(16, 1), 0);
        // All ten have it: room for one more.
        assert_eq!(t.window_room(16, 10), 1);
        assert_eq!(t.window_room(16, 160), 16);
        // No window.
        assert_eq!(plan(1, 10, 0, 0).window_room(1_000, 0), u64::MAX);
    }

    #[test]
    fn measured_window_is_half_open() {
        let clock = RunClock::new(1_000, &plan(1, 1, 0, 0));
        assert_eq!(
            (clock.measure_start_ns, clock.end_ns, clock.drain_end_ns),
            (10_001_000, 30_001_000, 35_001_000)
        );
        assert!(!clock.in_measured_window(10_000_999));
        assert!(clock.in_measured_window(10_001_000));
        assert!(!clock.in_measured_window(30_001_000));
    }

    #[test]
    fn counts_merge() {
        let mut a = PubSubCounts {
            published: 3,
            delivered: 2,
            ..PubSubCounts::default()
        };
        a.merge(PubSubCounts {
            published: 1,
            sequence_gaps: 4,
            ..PubSubCounts::default()
        });
        assert_eq!((a.published, a.delivered, a.sequence_gaps), (4, 2, 4));
    }
}
