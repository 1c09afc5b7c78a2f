//! `shoal-bench mqtt-conn` and `shoal-bench mqtt-pubsub`: MQTT clients
//! against any broker (Shoal's MQTT listener, mosquitto, ...) with the
//! same load, so that two servers can be compared side by side.
//!
//! ```text
//! mqtt-conn:   parent ─ children (--procs, this executable again) ─ pinned
//!              monoio threads: connect + CONNECT + CONNACK for every
//!              connection ─ hold them idle ─ DISCONNECT; the parent samples
//!              the server's RSS before, while held and after
//! mqtt-pubsub: one process, pinned monoio threads: subscribers (CONNECT,
//!              SUBSCRIBE) and publishers (CONNECT) ─ common start ─ warmup,
//!              measured window, drain; publishers stamp every payload,
//!              subscribers time it in an HdrHistogram; the main thread
//!              samples the server's CPU over the measured window
//! ```
//!
//! The wire format is `shoal_protocols::mqtt` ([`client`]).

mod client;
mod conn;
mod pubsub;
mod pubsub_thread;
mod report;
mod tally;

use std::{net::SocketAddr, time::Duration};

use anyhow::{bail, Context as _};
use clap::{Args, ValueEnum};
use shoal_protocols::mqtt::{QoS, Version};

use crate::{args::parse_rate, net::SourceAddrs};

/// The MQTT protocol version the clients speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ProtocolVersion {
    /// MQTT 3.1.1.
    #[value(name = "3.1.1")]
    V311,
    /// MQTT 5.0.
    #[value(name = "5")]
    V5,
}

impl ProtocolVersion {
    fn wire(self) -> Version {
        match self {
            Self::V311 => Version::V311,
            Self::V5 => Version::V5,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::V311 => "3.1.1",
            Self::V5 => "5.0",
        }
    }
}

/// Options of `mqtt-conn`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Opens --connections MQTT connections (TCP connect, CONNECT with a clean \
session and a unique client id, CONNACK) from --procs processes and \
--source-addrs, then holds them idle for --hold and closes them with \
DISCONNECT. Reports connections/s (from the common start to the last \
CONNACK), the connect-to-CONNACK time of each connection, failures by \
kind, and with --server-pid the server's RSS before connecting, while the \
connections are held (after --settle) and after they are closed. Each \
process holds at most its open-file limit minus a reserve.")]
pub(crate) struct MqttConnArgs {
    /// Address of the MQTT listener.
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub(crate) target: SocketAddr,

    /// Connections, split over all processes.
    #[arg(long, default_value_t = 1000)]
    pub(crate) connections: u64,

    /// Processes to spread connections over (each holds < ~20k sockets).
    #[arg(long, alias = "processes", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub(crate) procs: u32,

    /// Runtime threads per process [default: CPUs / processes, at least 1].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) threads: Option<u32>,

    /// New connections per second, all processes together (`20000`,
    /// `20000/s`, `20k/s`); 0 = as fast as --connect-concurrency allows.
    #[arg(long = "rate", value_name = "PER_S", default_value = "0", value_parser = parse_rate)]
    pub(crate) rate_per_s: u64,

    /// How long the connections are held once all are up.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) hold: Duration,

    /// Wait after the last CONNACK (and after closing) before sampling RSS.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub(crate) settle: Duration,

    /// Keep Alive in the CONNECT, seconds (must outlast setup and hold: no
    /// PINGREQ is sent).
    #[arg(long, value_name = "SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) keepalive: u16,

    /// MQTT version.
    #[arg(long, value_enum, default_value_t = ProtocolVersion::V311)]
    pub(crate) protocol: ProtocolVersion,

    /// Client ids are `{prefix}-{pid}-{i}` (i run-wide).
    #[arg(long, default_value = "bench-conn")]
    pub(crate) client_id_prefix: String,

    /// Source IPv4 addresses, bound before connect, used round-robin:
    /// `A.B.C.D-A.B.C.E`, one address, or `any` (kernel's choice).
    #[arg(long, default_value = "127.0.0.1-127.0.0.8")]
    pub(crate) source_addrs: SourceAddrs,

    /// Server pid: report its RSS (from /proc) before, while held, after.
    #[arg(long, value_name = "PID")]
    pub(crate) server_pid: Option<u32>,

    /// Print the report as one JSON object.
    #[arg(long)]
    pub(crate) json: bool,

    /// Give up on a connection without CONNACK after this long.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) connect_timeout: Duration,

    /// Handshakes in flight per thread.
    #[arg(long, value_name = "CONNECTS", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) connect_concurrency: u32,

    /// Longest time for opening connections; later ones are skipped.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = humantime::parse_duration)]
    pub(crate) setup_timeout: Duration,

    /// A thread stops opening connections after this many failed (the rest
    /// are skipped); 0 = never.
    #[arg(long, value_name = "FAILURES", default_value_t = 0)]
    pub(crate) give_up_after: u64,

    #[arg(long, hide = true)]
    pub(crate) child_index: Option<u32>,

    #[arg(long, hide = true, requires = "child_index")]
    pub(crate) child_count: Option<u32>,
}

impl MqttConnArgs {
    /// Runtime threads in each process.
    fn threads_per_process(&self, cpus: usize) -> usize {
        self.threads.map_or_else(
            || (cpus / self.procs as usize).max(1),
            |threads| threads as usize,
        )
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.connections == 0 {
            bail!("--connections must be at least 1");
        }
        check_id_prefix(&self.client_id_prefix, "--client-id-prefix")?;
        let needed = self.setup_timeout + self.hold + self.settle * 2;
        if Duration::from_secs(u64::from(self.keepalive)) <= needed {
            bail!(
                "--keepalive {} s is shorter than setup + hold ({needed:?}); the connections send no PINGREQ, so servers would close them",
                self.keepalive
            );
        }
        Ok(())
    }
}

/// What the publishers and subscribers of `mqtt-pubsub` share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum PubSubMode {
    /// Many publishers, each on its own topic `{prefix}/in/{k}/{i}`; a few
    /// subscribers, subscriber k on the wildcard `{prefix}/in/{k}/+`, so
    /// every message is delivered once.
    FanIn,
    /// Every publisher on one topic `{prefix}/out`, every subscriber on it,
    /// so every message is delivered once per subscriber.
    FanOut,
}

impl PubSubMode {
    fn name(self) -> &'static str {
        match self {
            Self::FanIn => "fan-in",
            Self::FanOut => "fan-out",
        }
    }
}

/// Options of `mqtt-pubsub`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Subscribers connect and subscribe, publishers connect; after --settle all \
start at one instant. Publishers send for --warmup + --duration; messages \
stamped in the measured window (--duration, after --warmup) are timed by \
the subscribers (receive time minus the stamp, in an HdrHistogram). Then \
--drain at most for what is still in flight.

--rate R: R messages/s offered in total, spread evenly over the \
publishers; a message carries its scheduled send time, so falling behind \
counts as latency. --rate 0: as fast as the windows allow, stamped when \
written. Windows: a publisher has at most --window messages sent and not \
yet received by all of its subscribers (0 = no limit), and at QoS 1 at \
most --inflight PUBLISHes without PUBACK. Subscribers PUBACK every QoS 1 \
message.

Reported: published, expected deliveries (published x subscribers per \
message), delivered, lost, delivered/s in the measured window, latency \
percentiles, and with --server-pid the server's CPU time over the measured \
window per delivered message.")]
pub(crate) struct MqttPubSubArgs {
    /// Address of the MQTT listener.
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub(crate) target: SocketAddr,

    /// fan-in: many publishers, few wildcard subscribers; fan-out: one
    /// topic, many subscribers.
    #[arg(long, value_enum)]
    pub(crate) mode: PubSubMode,

    /// QoS of the PUBLISHes and of the subscriptions.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub(crate) qos: u8,

    /// Payload bytes per message (24-byte probe, then filler).
    #[arg(long = "payload", value_name = "BYTES", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(client::PROBE_BYTES as u64..=65_000))]
    pub(crate) payload_bytes: u64,

    /// Publishers [default: fan-in 1000, fan-out 1].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub(crate) publishers: Option<u64>,

    /// Subscribers [default: fan-in 4, fan-out 1000].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub(crate) subscribers: Option<u64>,

    /// Messages per second offered, all publishers together (`20000`,
    /// `20000/s`, `20k/s`); 0 = as fast as the windows allow.
    #[arg(long = "rate", value_name = "PER_S", default_value = "0", value_parser = parse_rate)]
    pub(crate) rate_per_s: u64,

    /// Most messages per publisher sent and not yet received by all its
    /// subscribers; 0 = no limit.
    #[arg(long, value_name = "MESSAGES", default_value_t = 16)]
    pub(crate) window: u64,

    /// QoS 1: most PUBLISHes per publisher without PUBACK (a Receive Maximum).
    #[arg(long, value_name = "MESSAGES", default_value_t = 32,
          value_parser = clap::value_parser!(u64).range(1..=65_535))]
    pub(crate) inflight: u64,

    /// Most messages per write.
    #[arg(long, value_name = "MESSAGES", default_value_t = 16,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub(crate) batch: u64,

    /// Measured time (after warmup).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) duration: Duration,

    /// Publishing before the measured window; not in the histogram.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
    pub(crate) warmup: Duration,

    /// Longest wait after publishing stops for messages still in flight.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
    pub(crate) drain: Duration,

    /// Wait after every SUBACK before publishing (lets a multi-core server
    /// spread the subscriptions).
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub(crate) settle: Duration,

    /// Runtime threads [default: every CPU]; thread t is pinned to allowed
    /// CPU t mod CPUs.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) threads: Option<u32>,

    /// MQTT version.
    #[arg(long, value_enum, default_value_t = ProtocolVersion::V311)]
    pub(crate) protocol: ProtocolVersion,

    /// Topics start with this [default: `bench/{pid}`].
    #[arg(long)]
    pub(crate) topic_prefix: Option<String>,

    /// Client ids are `{prefix}-{pid}-p{i}` and `{prefix}-{pid}-s{k}`.
    #[arg(long, default_value = "bench-ps")]
    pub(crate) client_id_prefix: String,

    /// Source IPv4 addresses, bound before connect, used round-robin.
    #[arg(long, default_value = "127.0.0.1-127.0.0.8")]
    pub(crate) source_addrs: SourceAddrs,

    /// Server pid: report its CPU time over the measured window and its RSS.
    #[arg(long, value_name = "PID")]
    pub(crate) server_pid: Option<u32>,

    /// Print the report as one JSON object.
    #[arg(long)]
    pub(crate) json: bool,

    /// Give up on a connect (CONNACK, SUBACK) after this long.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) connect_timeout: Duration,

    /// Handshakes in flight per thread.
    #[arg(long, value_name = "CONNECTS", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) connect_concurrency: u32,

    /// Longest time for every client to connect and subscribe.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub(crate) setup_timeout: Duration,

    /// Initial receive buffer per subscriber (grows to fit one packet).
    #[arg(long, value_name = "BYTES", default_value_t = 16_384,
          value_parser = clap::value_parser!(u64).range(64..=(1 << 24)))]
    pub(crate) recv_buffer_bytes: u64,

    /// Paced publishers wake on a grid of this step (a precise timerfd).
    #[arg(long, value_name = "DURATION", default_value = "100us", value_parser = humantime::parse_duration)]
    pub(crate) pacing_resolution: Duration,
}

/// Largest number of (subscriber, publisher) sequence trackers a run keeps.
const MAX_TRACKERS: u64 = 16_000_000;

impl MqttPubSubArgs {
    pub(crate) fn publisher_count(&self) -> u64 {
        self.publishers.unwrap_or(match self.mode {
            PubSubMode::FanIn => 1000,
            PubSubMode::FanOut => 1,
        })
    }

    pub(crate) fn subscriber_count(&self) -> u64 {
        self.subscribers.unwrap_or(match self.mode {
            PubSubMode::FanIn => 4,
            PubSubMode::FanOut => 1000,
        })
    }

    pub(crate) fn qos(&self) -> QoS {
        if self.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        }
    }

    pub(crate) fn topic_prefix(&self) -> String {
        self.topic_prefix
            .clone()
            .unwrap_or_else(|| format!("bench/{}", std::process::id()))
    }

    fn validate(&self) -> anyhow::Result<()> {
        let (n, m) = (self.publisher_count(), self.subscriber_count());
        if self.mode == PubSubMode::FanIn && m > n {
            bail!("fan-in needs at least as many publishers ({n}) as subscribers ({m})");
        }
        if n * m > MAX_TRACKERS {
            bail!("{n} publishers x {m} subscribers is more than {MAX_TRACKERS} sequence trackers");
        }
        if self.duration.is_zero() {
            bail!("--duration must be longer than zero");
        }
        check_id_prefix(&self.client_id_prefix, "--client-id-prefix")?;
        let prefix = self.topic_prefix();
        shoal_protocols::topic::validate_topic_name(&prefix)
            .with_context(|| format!("--topic-prefix {prefix:?}"))?;
        if prefix.contains(['+', '#']) {
            bail!("--topic-prefix must not contain wildcards");
        }
        Ok(())
    }
}

fn check_id_prefix(prefix: &str, flag: &str) -> anyhow::Result<()> {
    if prefix.is_empty()
        || prefix.len() > 40
        || !prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("{flag} must be 1 to 40 ASCII letters, digits, '-' or '_'");
    }
    Ok(())
}

/// Runs `mqtt-conn` as the parent, or as child K when the hidden flags say so.
pub(crate) fn run_conn(args: &MqttConnArgs) -> anyhow::Result<()> {
    args.validate()?;
    match (args.child_index, args.child_count) {
        (Some(index), Some(count)) if index < count => {
            conn::run_child(args, index, count).with_context(|| format!("child process {index}"))
        }
        (Some(index), count) => bail!("bad child flags: index {index}, count {count:?}"),
        (None, _) => conn::run_parent(args),
    }
}

/// Runs `mqtt-pubsub`.
pub(crate) fn run_pubsub(args: &MqttPubSubArgs) -> anyhow::Result<()> {
    args.validate()?;
    pubsub::run(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_prefixes() {
        assert!(check_id_prefix("bench-conn", "x").is_ok());
        assert!(check_id_prefix("", "x").is_err());
        assert!(check_id_prefix("a/b", "x").is_err());
    }
}
