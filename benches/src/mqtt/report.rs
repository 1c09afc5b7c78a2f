//! The reports of `mqtt-conn` and `mqtt-pubsub`, as text (the layout of the
//! `tcp-frames` reports) or one JSON object.

use std::fmt::Write as _;

use serde::Serialize;

use super::tally::FailureTally;
use crate::report::{latency_line, ConnectionsReport, LatencySummaryUs};

/// Writes a finished report to stdout; a closed stdout is an error, not a
/// panic.
pub(crate) fn print(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

fn connect_failures_line(t: &mut String, c: &ConnectionsReport) {
    if c.failed > 0 {
        let tally = FailureTally {
            count: c.failed,
            by_kind: c.failures_by_kind.clone(),
            first: c.first_failure.clone(),
        };
        let _ = writeln!(t, "  connect     {}", tally.line());
    }
}

/// Server memory of `mqtt-conn` (`--server-pid`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ConnServerReport {
    pub(crate) pid: u32,
    /// Server CPU from before connecting until the connections settled.
    pub(crate) cpu_connect_s: f64,
    /// Server CPU while the connections were held idle (after the RSS sample).
    pub(crate) cpu_hold_s: f64,
    /// How long that hold sample was.
    pub(crate) hold_sampled_s: f64,
    pub(crate) rss_before_kib: u64,
    pub(crate) rss_held_kib: u64,
    pub(crate) rss_after_close_kib: u64,
    pub(crate) rss_growth_bytes: i64,
    pub(crate) rss_bytes_per_connection: Option<f64>,
}

/// Final report of `mqtt-conn`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ConnReport {
    pub(crate) scenario: &'static str,
    pub(crate) target: String,
    pub(crate) protocol: &'static str,
    pub(crate) processes: u32,
    pub(crate) threads_per_process: usize,
    pub(crate) source_addrs: String,
    /// Connections per second asked for; 0 = unpaced.
    pub(crate) rate_per_s: u64,
    pub(crate) keepalive_s: u16,
    pub(crate) connections: ConnectionsReport,
    /// Connections never tried (setup deadline, `--give-up-after`).
    pub(crate) skipped: u64,
    /// From the common start to the last CONNACK.
    pub(crate) connect_s: f64,
    pub(crate) connections_per_s: f64,
    /// TCP connect to CONNACK, per connection.
    pub(crate) handshake_us: Option<LatencySummaryUs>,
    pub(crate) hold_s: f64,
    pub(crate) open_at_end: u64,
    pub(crate) closed_by_server: u64,
    pub(crate) unexpected_bytes_received: u64,
    pub(crate) hold_errors: FailureTally,
    pub(crate) server: Option<ConnServerReport>,
}

impl ConnReport {
    pub(crate) fn to_text(&self) -> String {
        let mut t = String::new();
        let c = &self.connections;
        let _ = writeln!(t, "mqtt-conn -> {}", self.target);
        let pace = if self.rate_per_s == 0 {
            "unpaced".to_owned()
        } else {
            format!("{} connections/s", self.rate_per_s)
        };
        let _ = writeln!(
            t,
            "  load        MQTT {}, keepalive {} s, {pace}, {} process(es) x {} thread(s), sources {}",
            self.protocol,
            self.keepalive_s,
            self.processes,
            self.threads_per_process,
            self.source_addrs
        );
        let _ = writeln!(
            t,
            "  connections {} established of {} ({} failed, {} skipped) in {:.2} s = {:.0} /s (connect + CONNACK)",
            c.established, c.attempted, c.failed, self.skipped, self.connect_s, self.connections_per_s
        );
        connect_failures_line(&mut t, c);
        latency_line(
            &mut t,
            "handshake us",
            self.handshake_us.as_ref(),
            "no connection was established",
        );
        let _ = writeln!(
            t,
            "  hold        {:.1} s: {} open at end, {} closed by server, {} unexpected bytes received",
            self.hold_s, self.open_at_end, self.closed_by_server, self.unexpected_bytes_received
        );
        if self.hold_errors.count > 0 {
            let _ = writeln!(t, "  errors      {}", self.hold_errors.line());
        }
        if let Some(s) = &self.server {
            let per_conn = s
                .rss_bytes_per_connection
                .map_or_else(|| "n/a".to_owned(), |v| format!("{v:.0}"));
            let _ = writeln!(
                t,
                "  server      pid {}: rss {} -> {} KiB (+{} B = {per_conn} B/connection), {} KiB after close",
                s.pid, s.rss_before_kib, s.rss_held_kib, s.rss_growth_bytes, s.rss_after_close_kib
            );
            let _ = writeln!(
                t,
                "  server cpu  {:.2} s while connecting, {:.2} s in {:.1} s of idle hold",
                s.cpu_connect_s, s.cpu_hold_s, s.hold_sampled_s
            );
        }
        t
    }
}

/// Load shape of `mqtt-pubsub`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PubSubLoadReport {
    pub(crate) target: String,
    pub(crate) protocol: &'static str,
    pub(crate) qos: u8,
    pub(crate) payload_bytes: usize,
    pub(crate) publishers: u64,
    pub(crate) subscribers: u64,
    /// Deliveries each message should get.
    pub(crate) subscribers_per_message: u64,
    /// What publishers publish to and subscribers subscribe to.
    pub(crate) topics: String,
    /// Messages/s offered, all publishers; 0 = max rate.
    pub(crate) offered_rate_per_s: u64,
    /// Messages per publisher not yet received by all its subscribers; 0 = none.
    pub(crate) window: u64,
    /// QoS 1 PUBLISHes per publisher without PUBACK.
    pub(crate) inflight: u64,
    pub(crate) threads: usize,
    pub(crate) source_addrs: String,
    pub(crate) warmup_s: f64,
    pub(crate) duration_s: f64,
    pub(crate) drain_s: f64,
}

/// What the messages of a run did.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PubSubMessagesReport {
    pub(crate) published: u64,
    /// Published × subscribers per message.
    pub(crate) expected_deliveries: u64,
    pub(crate) delivered: u64,
    /// Expected minus delivered once the drain is over.
    pub(crate) lost: u64,
    /// Per (subscriber, publisher): sequence numbers skipped.
    pub(crate) sequence_gaps: u64,
    /// Per (subscriber, publisher): a sequence number at or below one seen.
    pub(crate) duplicate_or_reordered: u64,
    /// PUBLISHes whose payload carries no probe of this run.
    pub(crate) malformed: u64,
    /// QoS 1: PUBLISHes the server never acknowledged.
    pub(crate) unacknowledged: u64,
    /// Times a publisher's delivery window stayed full for a second and its
    /// outstanding messages were given up on.
    pub(crate) window_resets: u64,
}

/// Counts over the measured window.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PubSubMeasuredReport {
    /// Messages stamped inside the window.
    pub(crate) published: u64,
    pub(crate) published_per_s: f64,
    /// Deliveries that arrived inside the window.
    pub(crate) delivered: u64,
    pub(crate) delivered_per_s: f64,
}

/// Server cost over the measured window (`--server-pid`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PubSubServerReport {
    pub(crate) pid: u32,
    pub(crate) cpu_s: f64,
    /// Server CPU time per delivery that arrived in the window.
    pub(crate) cpu_us_per_delivered: Option<f64>,
    /// Deliveries per second of server CPU.
    pub(crate) delivered_per_cpu_s: Option<f64>,
    pub(crate) rss_before_kib: u64,
    pub(crate) rss_after_kib: u64,
}

/// Final report of `mqtt-pubsub`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PubSubReport {
    pub(crate) scenario: &'static str,
    pub(crate) mode: &'static str,
    pub(crate) load: PubSubLoadReport,
    pub(crate) connections: ConnectionsReport,
    pub(crate) run_errors: FailureTally,
    pub(crate) messages: PubSubMessagesReport,
    pub(crate) measured: PubSubMeasuredReport,
    /// Publish-to-delivery latency of messages stamped in the measured window.
    pub(crate) latency_us: Option<LatencySummaryUs>,
    pub(crate) server: Option<PubSubServerReport>,
    /// The merged latency histogram (µs), HdrHistogram V2, base64.
    pub(crate) latency_histogram_v2_base64: String,
}

impl PubSubReport {
    pub(crate) fn to_text(&self) -> String {
        let l = &self.load;
        let mut t = String::new();
        let _ = writeln!(t, "mqtt-pubsub {} -> {}", self.mode, l.target);
        let offered = if l.offered_rate_per_s == 0 {
            "max rate".to_owned()
        } else {
            format!("{} msg/s offered", l.offered_rate_per_s)
        };
        let window = if l.window == 0 {
            "unbounded".to_owned()
        } else {
            l.window.to_string()
        };
        let inflight = if l.qos > 0 {
            format!(", inflight {}", l.inflight)
        } else {
            String::new()
        };
        let _ = writeln!(
            t,
            "  load        MQTT {} QoS {}, payload {} B, {} publisher(s) -> {} subscriber(s) ({} per message), {offered}, window {window}{inflight}",
            l.protocol, l.qos, l.payload_bytes, l.publishers, l.subscribers, l.subscribers_per_message
        );
        let _ = writeln!(
            t,
            "  setup       {}; {} thread(s), sources {}",
            l.topics, l.threads, l.source_addrs
        );
        let _ = writeln!(
            t,
            "  timing      warmup {:.1} s, measured {:.1} s, drain {:.1} s",
            l.warmup_s, l.duration_s, l.drain_s
        );
        let c = &self.connections;
        let _ = writeln!(
            t,
            "  connections {} established of {} ({} failed)",
            c.established, c.attempted, c.failed
        );
        connect_failures_line(&mut t, c);
        let m = &self.messages;
        let _ = writeln!(
            t,
            "  messages    published {}, expected deliveries {}, delivered {}, lost {} (gaps {}, duplicate/reordered {}, malformed {}, unacknowledged {}, window resets {})",
            m.published,
            m.expected_deliveries,
            m.delivered,
            m.lost,
            m.sequence_gaps,
            m.duplicate_or_reordered,
            m.malformed,
            m.unacknowledged,
            m.window_resets
        );
        let w = &self.measured;
        let _ = writeln!(
            t,
            "  measured    published {} = {:.0} msg/s, delivered {} = {:.0} msg/s",
            w.published, w.published_per_s, w.delivered, w.delivered_per_s
        );
        latency_line(
            &mut t,
            "latency us",
            self.latency_us.as_ref(),
            "no message stamped in the measured window arrived",
        );
        if let Some(s) = &self.server {
            let per = s
                .cpu_us_per_delivered
                .map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}"));
            let rate = s
                .delivered_per_cpu_s
                .map_or_else(|| "n/a".to_owned(), |v| format!("{v:.0}"));
            let _ = writeln!(
                t,
                "  server      pid {}: cpu {:.2} s = {per} us/delivered message ({rate} delivered per cpu-s), rss {} -> {} KiB",
                s.pid, s.cpu_s, s.rss_before_kib, s.rss_after_kib
            );
        }
        if self.run_errors.count > 0 {
            let _ = writeln!(
                t,
                "  errors      {} connection(s) failed during the run: {}",
                self.run_errors.count,
                self.run_errors.line()
            );
        }
        t
    }
}
