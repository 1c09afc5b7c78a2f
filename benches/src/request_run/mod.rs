//! What the request/response scenarios (`http-post`, `coap`) share: their
//! load options, the schedule of paced requests, the per-thread tally of
//! answers and latencies, and the run itself over processes and threads
//! ([`driver`]) with its report ([`report`]).
//!
//! ```text
//! parent: spawn children ─ all Ready ─ "start T" ─ T+warmup: sample server
//!         ─ T+warmup+duration: sample server ─ all Result ─ merge ─ report
//! child:  threads: open clients ─ Connected ─ wait for T ─ requests until
//!         the end of the window (closed loop, or paced at --rate) ─ drain
//!         ─ Done(counts, histogram) ─ Result to the parent
//! ```
//!
//! A request's stamp is when it was written (closed loop) or when it was
//! due (paced: falling behind the schedule counts as latency). Latency is
//! answer time minus stamp, for requests stamped in the measured window;
//! throughput counts the answers that arrived in it.

pub(crate) mod driver;
pub(crate) mod report;

use std::{cell::RefCell, collections::BTreeMap, net::Ipv4Addr, time::Duration};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::{
    args::parse_rate,
    clock::duration_ns,
    net::SourceAddrs,
    report::new_latency_histogram,
    tally::{CountedError, FailureTally},
};

/// Load options every request/response scenario takes.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct LoadArgs {
    /// Requests per second, all clients together, spread evenly over them
    /// (`20000`, `20000/s`, `20k/s`); 0 = closed loop, as fast as the
    /// answers come.
    #[arg(long = "rate", value_name = "PER_S", default_value = "0", value_parser = parse_rate)]
    pub(crate) rate_per_s: u64,

    /// Measured time (after warmup).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) duration: Duration,

    /// Requests before the measured window; not in the histogram.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
    pub(crate) warmup: Duration,

    /// Longest wait after the window for answers still outstanding.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
    pub(crate) drain: Duration,

    /// Wait between the last client set up and the start.
    #[arg(long, value_name = "DURATION", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub(crate) settle: Duration,

    /// Processes to spread the clients over (each holds < ~20k sockets).
    #[arg(long, alias = "processes", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub(crate) procs: u32,

    /// Runtime threads per process [default: CPUs / processes, at least 1];
    /// client i of a process runs on thread i mod threads.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) threads: Option<u32>,

    /// Source IPv4 addresses, bound before connect, used round-robin:
    /// `A.B.C.D-A.B.C.E`, one address, or `any` (kernel's choice).
    #[arg(long, default_value = "127.0.0.1-127.0.0.8")]
    pub(crate) source_addrs: SourceAddrs,

    /// Server pid(s), comma-separated (a master and its workers are summed):
    /// report CPU time over the measured window and RSS.
    #[arg(long, value_name = "PID[,PID...]", value_delimiter = ',')]
    pub(crate) server_pid: Vec<u32>,

    /// Device ids are `{prefix}-{i}` (i run-wide).
    #[arg(long, default_value = "bench")]
    pub(crate) id_prefix: String,

    /// Print the report as one JSON object.
    #[arg(long)]
    pub(crate) json: bool,

    /// Give up on opening one client after this long.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) connect_timeout: Duration,

    /// Clients opened at once per thread.
    #[arg(long, value_name = "CLIENTS", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) connect_concurrency: u32,

    /// Longest time for opening every client; later ones are skipped.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub(crate) setup_timeout: Duration,

    /// Paced clients wake on a grid of this step (a precise timerfd).
    #[arg(long, value_name = "DURATION", default_value = "100us", value_parser = humantime::parse_duration)]
    pub(crate) pacing_resolution: Duration,

    #[arg(long, hide = true)]
    pub(crate) child_index: Option<u32>,

    #[arg(long, hide = true, requires = "child_index")]
    pub(crate) child_count: Option<u32>,
}

impl LoadArgs {
    /// Runtime threads in each process.
    pub(crate) fn threads_per_process(&self, cpus: usize) -> usize {
        self.threads.map_or_else(
            || (cpus / self.procs as usize).max(1),
            |threads| threads as usize,
        )
    }

    pub(crate) fn validate(&self, clients: u64) -> anyhow::Result<()> {
        if clients == 0 {
            anyhow::bail!("at least one client is needed");
        }
        if self.duration.is_zero() {
            anyhow::bail!("--duration must be more than 0");
        }
        if self.id_prefix.is_empty()
            || !self
                .id_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            anyhow::bail!("--id-prefix must be letters, digits, '-' or '_'");
        }
        Ok(())
    }
}

/// Device id of client `index` (run-wide).
pub(crate) fn device_id(prefix: &str, index: u64) -> String {
    format!("{prefix}-{index}")
}

/// One client (a connection or a device) of a thread.
#[derive(Debug, Clone)]
pub(crate) struct ClientSpec {
    /// Run-wide index.
    pub(crate) index: u64,
    pub(crate) device_id: String,
    pub(crate) source: Option<Ipv4Addr>,
}

/// When the requests of paced clients are due: `rate_per_s` in total,
/// spread evenly over `clients`, client g first at `g / rate`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestSchedule {
    pub(crate) clients: u64,
    /// 0 = closed loop (no schedule).
    pub(crate) rate_per_s: u64,
}

impl RequestSchedule {
    pub(crate) fn paced(&self) -> bool {
        self.rate_per_s > 0
    }

    /// Offset of client `index`'s first request from the start.
    pub(crate) fn phase_ns(&self, index: u64) -> u64 {
        if self.rate_per_s == 0 {
            return 0;
        }
        let offset =
            u128::from(index % self.clients.max(1)) * 1_000_000_000 / u128::from(self.rate_per_s);
        u64::try_from(offset).unwrap_or(u64::MAX)
    }

    /// When request `seq` of a client whose first is due at `first_ns` is due.
    pub(crate) fn due_ns(&self, first_ns: u64, seq: u64) -> u64 {
        let offset = u128::from(seq) * u128::from(self.clients) * 1_000_000_000
            / u128::from(self.rate_per_s.max(1));
        first_ns.saturating_add(u64::try_from(offset).unwrap_or(u64::MAX))
    }

    /// How many requests of that client are due by `now_ns`.
    pub(crate) fn due_by(&self, first_ns: u64, now_ns: u64) -> u64 {
        if now_ns < first_ns {
            return 0;
        }
        let elapsed = u128::from(now_ns - first_ns);
        let due = elapsed * u128::from(self.rate_per_s)
            / (u128::from(self.clients.max(1)) * 1_000_000_000)
            + 1;
        u64::try_from(due).unwrap_or(u64::MAX)
    }
}

/// How long each phase of a run lasts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) warmup: Duration,
    pub(crate) duration: Duration,
    pub(crate) drain: Duration,
}

/// Instants of one run, CLOCK_MONOTONIC ns.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunClock {
    pub(crate) start_ns: u64,
    pub(crate) measure_start_ns: u64,
    pub(crate) end_ns: u64,
    pub(crate) drain_end_ns: u64,
}

impl RunClock {
    pub(crate) fn new(start_ns: u64, timing: &Timing) -> Self {
        let measure_start_ns = start_ns + duration_ns(timing.warmup);
        let end_ns = measure_start_ns + duration_ns(timing.duration);
        Self {
            start_ns,
            measure_start_ns,
            end_ns,
            drain_end_ns: end_ns + duration_ns(timing.drain),
        }
    }

    pub(crate) fn in_window(&self, ns: u64) -> bool {
        (self.measure_start_ns..self.end_ns).contains(&ns)
    }
}

/// A failure of one client, counted by kind.
#[derive(Debug, Clone)]
pub(crate) struct ClientError {
    kind: String,
    detail: String,
}

impl ClientError {
    pub(crate) fn new(kind: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            detail: detail.into(),
        }
    }

    pub(crate) fn io(error: &std::io::Error) -> Self {
        Self::new(error.kind_name(), error.to_string())
    }
}

impl CountedError for ClientError {
    fn kind_name(&self) -> String {
        self.kind.clone()
    }

    fn detail(&self) -> String {
        self.detail.clone()
    }
}

/// Outcome of opening the clients.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ConnectSummary {
    pub(crate) attempted: u64,
    pub(crate) established: u64,
    /// Not tried: the setup deadline passed.
    pub(crate) skipped: u64,
    pub(crate) failures: FailureTally,
}

impl ConnectSummary {
    pub(crate) fn merge(&mut self, other: Self) {
        self.attempted += other.attempted;
        self.established += other.established;
        self.skipped += other.skipped;
        self.failures.merge(other.failures);
    }
}

/// What the requests of a thread, a process or a run did; merge by addition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct RequestCounts {
    /// Requests written (first transmissions).
    pub(crate) sent: u64,
    /// Requests stamped in the measured window.
    pub(crate) sent_measured: u64,
    /// Requests answered (any status).
    pub(crate) answered: u64,
    /// Answers that arrived in the measured window.
    pub(crate) answered_measured: u64,
    /// 2xx (HTTP) or 2.xx (CoAP) answers.
    pub(crate) success: u64,
    pub(crate) success_measured: u64,
    /// Answers by status (HTTP status, CoAP class × 100 + detail); carried
    /// between processes as pairs (integer map keys do not survive the
    /// tagged child messages).
    #[serde(with = "status_pairs")]
    pub(crate) by_status: BTreeMap<u16, u64>,
    /// Requests still unanswered at the end of the drain (or when their
    /// connection ended).
    pub(crate) unanswered: u64,
    /// CoAP: CONs sent again after ACK_TIMEOUT.
    pub(crate) retransmissions: u64,
    /// CoAP: requests given up (CON after MAX_RETRANSMIT, NON after the
    /// response timeout).
    pub(crate) timeouts: u64,
    /// CoAP: requests answered with RST.
    pub(crate) resets: u64,
    /// Answers matching no outstanding request (CoAP: duplicates of an
    /// answer to a retransmission, late answers of given-up requests).
    pub(crate) unmatched: u64,
    /// Answers that could not be parsed.
    pub(crate) malformed: u64,
    /// Clients that failed during the run, by kind.
    pub(crate) run_errors: FailureTally,
}

impl RequestCounts {
    pub(crate) fn merge(&mut self, other: Self) {
        self.sent += other.sent;
        self.sent_measured += other.sent_measured;
        self.answered += other.answered;
        self.answered_measured += other.answered_measured;
        self.success += other.success;
        self.success_measured += other.success_measured;
        for (status, n) in other.by_status {
            *self.by_status.entry(status).or_default() += n;
        }
        self.unanswered += other.unanswered;
        self.retransmissions += other.retransmissions;
        self.timeouts += other.timeouts;
        self.resets += other.resets;
        self.unmatched += other.unmatched;
        self.malformed += other.malformed;
        self.run_errors.merge(other.run_errors);
    }

    /// Answers that were not a success.
    pub(crate) fn non_success(&self) -> u64 {
        self.answered - self.success.min(self.answered)
    }
}

/// `by_status` as a list of `[status, count]` pairs.
mod status_pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        map: &BTreeMap<u16, u64>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(map.iter())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<u16, u64>, D::Error> {
        Ok(Vec::<(u16, u64)>::deserialize(deserializer)?
            .into_iter()
            .collect())
    }
}

/// The counts and the latency histogram of one runtime thread, shared by
/// its clients' tasks.
#[derive(Debug)]
pub(crate) struct ThreadTally {
    clock: RunClock,
    counts: RefCell<RequestCounts>,
    histogram: RefCell<Histogram<u64>>,
}

impl ThreadTally {
    pub(crate) fn new(clock: RunClock) -> Self {
        Self {
            clock,
            counts: RefCell::new(RequestCounts::default()),
            histogram: RefCell::new(new_latency_histogram()),
        }
    }

    pub(crate) fn clock(&self) -> &RunClock {
        &self.clock
    }

    /// `n` requests stamped at `stamp_ns` were written.
    pub(crate) fn sent(&self, n: u64, stamp_ns: u64) {
        let mut counts = self.counts.borrow_mut();
        counts.sent += n;
        if self.clock.in_window(stamp_ns) {
            counts.sent_measured += n;
        }
    }

    /// The request stamped at `stamp_ns` was answered with `status` at `at_ns`.
    pub(crate) fn answered(&self, stamp_ns: u64, at_ns: u64, status: u16, success: bool) {
        let mut counts = self.counts.borrow_mut();
        counts.answered += 1;
        let measured = self.clock.in_window(at_ns);
        if measured {
            counts.answered_measured += 1;
        }
        if success {
            counts.success += 1;
            if measured {
                counts.success_measured += 1;
            }
        }
        *counts.by_status.entry(status).or_default() += 1;
        if self.clock.in_window(stamp_ns) {
            let us = at_ns.saturating_sub(stamp_ns) / 1_000;
            self.histogram.borrow_mut().saturating_record(us);
        }
    }

    /// Changes counters not tied to one answer.
    pub(crate) fn update(&self, change: impl FnOnce(&mut RequestCounts)) {
        change(&mut self.counts.borrow_mut());
    }

    /// Counts a client failure.
    pub(crate) fn run_error(&self, error: &ClientError, context: &str) {
        self.counts.borrow_mut().run_errors.record(error, context);
    }

    /// The totals and the histogram, leaving the tally empty.
    pub(crate) fn take(&self) -> (RequestCounts, Histogram<u64>) {
        (
            self.counts.take(),
            self.histogram.replace(new_latency_histogram()),
        )
    }
}

/// A small xorshift generator (retransmission jitter, first message ids):
/// no need for cryptographic randomness in a load generator.
#[derive(Debug, Clone)]
pub(crate) struct Jitter(u64);

impl Jitter {
    pub(crate) fn new(seed: u64) -> Self {
        // splitmix64 of the seed, so that neighbouring seeds differ.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Self((z ^ (z >> 31)) | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A fraction in `[0, 1)`.
    pub(crate) fn fraction(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_spreads_clients_and_counts_due_requests() {
        // 1000 req/s over 10 clients: each every 10 ms, client g at g ms.
        let s = RequestSchedule {
            clients: 10,
            rate_per_s: 1000,
        };
        assert!(s.paced());
        assert_eq!(s.phase_ns(3), 3_000_000);
        assert_eq!(s.due_ns(5, 0), 5);
        assert_eq!(s.due_ns(5, 2), 5 + 20_000_000);
        assert_eq!(s.due_by(100, 99), 0);
        assert_eq!(s.due_by(100, 100), 1);
        assert_eq!(s.due_by(100, 100 + 10_000_000), 2);
        assert_eq!(s.due_by(100, 100 + 29_999_999), 3);
        let closed = RequestSchedule {
            clients: 10,
            rate_per_s: 0,
        };
        assert!(!closed.paced());
        assert_eq!(closed.phase_ns(7), 0);
    }

    #[test]
    fn tally_counts_the_window_only() {
        let clock = RunClock::new(
            1_000,
            &Timing {
                warmup: Duration::from_nanos(1_000),
                duration: Duration::from_nanos(10_000),
                drain: Duration::from_nanos(1_000),
            },
        );
        assert_eq!(
            (clock.measure_start_ns, clock.end_ns, clock.drain_end_ns),
            (2_000, 12_000, 13_000)
        );
        let tally = ThreadTally::new(clock);
        tally.sent(2, 1_500);
        tally.sent(1, 2_000);
        // Stamped in warmup, answered in the window: counted, not timed.
        tally.answered(1_500, 2_500, 202, true);
        tally.answered(2_000, 5_000_000, 503, false);
        tally.update(|c| c.unanswered += 1);
        tally.run_error(&ClientError::new("ClosedByServer", "eof"), "c-1");
        let (counts, histogram) = tally.take();
        assert_eq!((counts.sent, counts.sent_measured), (3, 1));
        assert_eq!((counts.answered, counts.answered_measured), (2, 1));
        assert_eq!((counts.success, counts.success_measured), (1, 1));
        assert_eq!(counts.non_success(), 1);
        assert_eq!(counts.by_status.get(&503), Some(&1));
        assert_eq!(histogram.len(), 1);
        assert_eq!(counts.run_errors.count, 1);

        let mut merged = counts.clone();
        merged.merge(counts);
        assert_eq!(merged.answered, 4);
        assert_eq!(merged.by_status.get(&202), Some(&2));
        let line = serde_json::to_string(&merged).unwrap();
        let back: RequestCounts = serde_json::from_str(&line).unwrap();
        assert_eq!(back, merged);
        assert_eq!(tally.take().0, RequestCounts::default());
    }

    #[test]
    fn jitter_fractions_stay_in_range() {
        let mut a = Jitter::new(1);
        let mut b = Jitter::new(2);
        assert_ne!(a.next_u64(), b.next_u64());
        for _ in 0..1000 {
            let f = a.fraction();
            assert!((0.0..1.0).contains(&f));
        }
    }
}
