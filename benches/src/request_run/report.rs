//! The report of a request/response run, as text or one JSON object.

use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;

use super::{driver::RunDescription, RequestCounts};
use crate::{
    report::{latency_line, ConnectionsReport, LatencySummaryUs},
    tally::FailureTally,
};

/// Load shape of the run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RequestsLoadReport {
    pub(crate) target: String,
    pub(crate) request: String,
    pub(crate) client_kind: &'static str,
    pub(crate) clients: u64,
    /// Most requests a client keeps outstanding.
    pub(crate) in_flight_per_client: u64,
    pub(crate) payload_bytes: u64,
    /// Requests/s offered, all clients together; 0 = closed loop.
    pub(crate) offered_rate_per_s: u64,
    pub(crate) processes: u32,
    pub(crate) threads_per_process: usize,
    pub(crate) source_addrs: String,
    pub(crate) warmup_s: f64,
    pub(crate) duration_s: f64,
    pub(crate) drain_s: f64,
}

/// What the requests of the whole run did.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RequestsTotalsReport {
    pub(crate) sent: u64,
    pub(crate) answered: u64,
    /// 2xx (HTTP) or 2.xx (CoAP).
    pub(crate) success: u64,
    /// Answered with another status.
    pub(crate) non_success: u64,
    /// Answers by status (`202`, `2.04`, ...).
    pub(crate) by_status: BTreeMap<String, u64>,
    /// Sent, never answered (given up, connection ended, or still
    /// outstanding after the drain).
    pub(crate) unanswered: u64,
    /// CoAP: CONs sent again after ACK_TIMEOUT (RFC 7252 §4.2).
    pub(crate) retransmissions: u64,
    /// CoAP: requests given up on (CON after MAX_RETRANSMIT, NON after
    /// the response timeout).
    pub(crate) timeouts: u64,
    /// CoAP: requests answered with RST.
    pub(crate) resets: u64,
    /// Answers that matched no outstanding request.
    pub(crate) unmatched: u64,
    /// Answers that could not be parsed.
    pub(crate) malformed: u64,
}

/// Counts over the measured window.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RequestsMeasuredReport {
    /// Requests stamped inside the window.
    pub(crate) sent: u64,
    /// Answers that arrived inside the window.
    pub(crate) answered: u64,
    pub(crate) answered_per_s: f64,
    pub(crate) success_per_s: f64,
}

/// Server cost over the measured window (`--server-pid`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RequestsServerReport {
    pub(crate) pids: Vec<u32>,
    pub(crate) cpu_s: f64,
    /// Server CPU seconds per 1,000 answers that arrived in the window.
    pub(crate) cpu_s_per_1k_requests: Option<f64>,
    /// Answers per second of server CPU.
    pub(crate) requests_per_cpu_s: Option<f64>,
    pub(crate) rss_before_kib: u64,
    pub(crate) rss_after_kib: u64,
}

/// Final report of `http-post` and `coap`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RequestsReport {
    pub(crate) scenario: &'static str,
    pub(crate) load: RequestsLoadReport,
    pub(crate) connections: ConnectionsReport,
    /// Clients not opened within --setup-timeout.
    pub(crate) skipped: u64,
    pub(crate) requests: RequestsTotalsReport,
    pub(crate) measured: RequestsMeasuredReport,
    /// Request-to-answer latency of requests stamped in the measured window.
    pub(crate) latency_us: Option<LatencySummaryUs>,
    pub(crate) server: Option<RequestsServerReport>,
    pub(crate) run_errors: FailureTally,
    /// The merged latency histogram (µs), HdrHistogram V2, base64.
    pub(crate) latency_histogram_v2_base64: String,
}

impl RequestsReport {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        description: &RunDescription,
        load: RequestsLoadReport,
        connections: ConnectionsReport,
        skipped: u64,
        counts: &RequestCounts,
        latency_us: Option<LatencySummaryUs>,
        server: Option<RequestsServerReport>,
        latency_histogram_v2_base64: String,
    ) -> Self {
        let duration_s = load.duration_s.max(f64::MIN_POSITIVE);
        Self {
            scenario: description.scenario,
            connections,
            skipped,
            requests: RequestsTotalsReport {
                sent: counts.sent,
                answered: counts.answered,
                success: counts.success,
                non_success: counts.non_success(),
                by_status: counts
                    .by_status
                    .iter()
                    .map(|(&status, &n)| ((description.status_name)(status), n))
                    .collect(),
                unanswered: counts.unanswered,
                retransmissions: counts.retransmissions,
                timeouts: counts.timeouts,
                resets: counts.resets,
                unmatched: counts.unmatched,
                malformed: counts.malformed,
            },
            measured: RequestsMeasuredReport {
                sent: counts.sent_measured,
                answered: counts.answered_measured,
                answered_per_s: counts.answered_measured as f64 / duration_s,
                success_per_s: counts.success_measured as f64 / duration_s,
            },
            load,
            latency_us,
            server,
            run_errors: counts.run_errors.clone(),
            latency_histogram_v2_base64,
        }
    }

    pub(crate) fn to_text(&self) -> String {
        let l = &self.load;
        let mut t = String::new();
        let _ = writeln!(t, "{} -> {}", self.scenario, l.target);
        let offered = if l.offered_rate_per_s == 0 {
            "closed loop".to_owned()
        } else {
            format!("{} requests/s offered", l.offered_rate_per_s)
        };
        let _ = writeln!(
            t,
            "  load        {} {}, {} in flight each, {offered}; {}",
            l.clients, l.client_kind, l.in_flight_per_client, l.request
        );
        let _ = writeln!(
            t,
            "  setup       {} process(es) x {} thread(s), sources {}; warmup {:.1} s, measured {:.1} s, drain {:.1} s",
            l.processes, l.threads_per_process, l.source_addrs, l.warmup_s, l.duration_s, l.drain_s
        );
        let c = &self.connections;
        let _ = writeln!(
            t,
            "  {:<11} {} opened of {} ({} failed, {} skipped)",
            l.client_kind, c.established, c.attempted, c.failed, self.skipped
        );
        if c.failed > 0 {
            let tally = FailureTally {
                count: c.failed,
                by_kind: c.failures_by_kind.clone(),
                first: c.first_failure.clone(),
            };
            let _ = writeln!(t, "  open        {}", tally.line());
        }
        let r = &self.requests;
        let statuses = r
            .by_status
            .iter()
            .map(|(status, n)| format!("{status} x{n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            t,
            "  requests    sent {}, answered {} ({statuses}), non-success {}, unanswered {}, retransmissions {}, timeouts {}, resets {}, unmatched {}, malformed {}",
            r.sent,
            r.answered,
            r.non_success,
            r.unanswered,
            r.retransmissions,
            r.timeouts,
            r.resets,
            r.unmatched,
            r.malformed
        );
        let m = &self.measured;
        let _ = writeln!(
            t,
            "  measured    sent {}, answered {} = {:.0} requests/s ({:.0} success/s)",
            m.sent, m.answered, m.answered_per_s, m.success_per_s
        );
        latency_line(
            &mut t,
            "latency us",
            self.latency_us.as_ref(),
            "no request stamped in the measured window was answered",
        );
        if let Some(s) = &self.server {
            let per_1k = s
                .cpu_s_per_1k_requests
                .map_or_else(|| "n/a".to_owned(), |v| format!("{v:.4}"));
            let rate = s
                .requests_per_cpu_s
                .map_or_else(|| "n/a".to_owned(), |v| format!("{v:.0}"));
            let pids = s
                .pids
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let _ = writeln!(
                t,
                "  server      pid {pids}: cpu {:.2} s = {per_1k} cpu-s per 1k requests ({rate} requests per cpu-s), rss {} -> {} KiB",
                s.cpu_s, s.rss_before_kib, s.rss_after_kib
            );
        }
        if self.run_errors.count > 0 {
            let _ = writeln!(
                t,
                "  errors      {} during the run: {}",
                self.run_errors.count,
                self.run_errors.line()
            );
        }
        t
    }
}
