//! `shoal-bench tcp-frames`: devices on the data plane's length-prefixed TCP
//! listener.
//!
//! The parent process only orchestrates: it starts `--processes` children
//! (this executable again), gives them a common start time once all are set
//! up, samples the server's /proc files, merges what the children report and
//! prints the report. Each child runs its share of the connections on
//! `--threads` pinned monoio runtimes.

mod child;
mod idle;
mod login;
mod messages;
mod pairs;
mod parent;
mod plan;

use std::{net::SocketAddr, time::Duration};

use anyhow::{bail, Context as _};
use clap::{Args, ValueEnum};

use crate::{
    net::SourceAddrs,
    wire::{MAX_PAYLOAD_BYTES, PROBE_HEADER_BYTES},
};

/// What the connections do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    /// Sender `X` and receiver `X-rx` per pair; frames go X -> server -> X-rx.
    Pairs,
    /// Connections log in and stay silent (server memory per connection).
    Idle,
}

/// Options of `tcp-frames`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
FULL SPEED (--rate 0): each sender writes batches of up to --batch-frames \
frames as fast as the socket accepts them, keeping at most --window frames \
sent but not yet seen by its receiver (--window 0: only TCP backpressure \
limits it). Full-speed frames are stamped when the batch is written; paced \
frames (--rate R) carry their scheduled send time, so falling behind counts \
as latency; they wake on a --pacing-resolution grid (a precise timerfd, not \
the runtime's 1 ms timer), so a paced frame leaves at most about one step \
late. Paced senders are spread evenly over one interval (1/R) unless \
--aligned.

Latency is receive time minus the stamp, for frames stamped in the measured \
window (after --warmup, for --duration). Lost = sent - received after --drain.")]
pub(crate) struct TcpFramesArgs {
    /// Address of the device TCP listener.
    #[arg(long, default_value = "127.0.0.1:7000")]
    pub(crate) target: SocketAddr,

    /// pairs: frames flow from senders to receivers; idle: connections only.
    #[arg(long, value_enum, default_value_t = Mode::Pairs)]
    pub(crate) mode: Mode,

    /// Pairs mode: sender/receiver pairs (2 sockets each). Idle mode:
    /// connections. Split over all processes.
    #[arg(long, default_value_t = 100)]
    pub(crate) connections: u64,

    /// Frames per second per sender; 0 = full speed.
    #[arg(long = "rate", value_name = "FRAMES_PER_S", default_value_t = 0)]
    pub(crate) rate_per_s: u64,

    /// Paced senders all send at the same instants (bursts) instead of being
    /// spread evenly over one send interval.
    #[arg(long)]
    pub(crate) aligned: bool,

    /// Paced senders wake on a grid of this step: senders due within one
    /// step write together. Bounds how late a paced frame can leave.
    #[arg(long, value_name = "DURATION", default_value = "100us", value_parser = humantime::parse_duration)]
    pub(crate) pacing_resolution: Duration,

    /// Most frames a sender has in flight (sent, not yet received); 0 = unbounded.
    #[arg(long = "window", value_name = "FRAMES", default_value_t = 64)]
    pub(crate) window_frames: u64,

    /// Most frames per write.
    #[arg(long, value_name = "FRAMES", default_value_t = 16,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub(crate) batch_frames: u64,

    /// Payload bytes per frame: 8-byte send time, 8-byte sequence number, filler.
    #[arg(long, value_name = "BYTES", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(PROBE_HEADER_BYTES as u64..=MAX_PAYLOAD_BYTES as u64))]
    pub(crate) payload_bytes: u64,

    /// Measured time (after warmup); in idle mode, how long connections are held.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) duration: Duration,

    /// Sending before the measured window; frames sent then are not in the histogram.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
    pub(crate) warmup: Duration,

    /// Wait after every login before sending (pairs) or before sampling RSS (idle).
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub(crate) settle: Duration,

    /// Wait after sending stops for frames still in flight.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub(crate) drain: Duration,

    /// Device ids are `{prefix}{process}-{i}` (receivers add `-rx`).
    #[arg(long, default_value = "bench")]
    pub(crate) id_prefix: String,

    /// Processes to spread connections over (each holds < ~20k sockets).
    #[arg(long, default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub(crate) processes: u32,

    /// Runtime threads per process [default: CPUs / processes, at least 1].
    /// Thread t of process k is pinned to allowed CPU number (k * threads + t) mod CPUs.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) threads: Option<u32>,

    /// Source IPv4 addresses, bound before connect, used round-robin:
    /// `A.B.C.D-A.B.C.E`, one address, or `any` (kernel's choice).
    #[arg(long, default_value = "127.0.0.1-127.0.0.8")]
    pub(crate) source_addrs: SourceAddrs,

    /// Server pid: report its CPU time and RSS (from /proc) over the measured window.
    #[arg(long, value_name = "PID")]
    pub(crate) server_pid: Option<u32>,

    /// Print the report as one JSON object.
    #[arg(long)]
    pub(crate) json: bool,

    /// Give up on a connect after this long.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) connect_timeout: Duration,

    /// Connects in flight per thread.
    #[arg(long, value_name = "CONNECTS", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) connect_concurrency: u32,

    /// Initial receive buffer per receiver (grows to fit one frame).
    #[arg(long, value_name = "BYTES", default_value_t = 8192,
          value_parser = clap::value_parser!(u64).range(64..=(1 << 24)))]
    pub(crate) recv_buffer_bytes: u64,

    /// Longest time for all processes to connect and log in.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = humantime::parse_duration)]
    pub(crate) setup_timeout: Duration,

    #[arg(long, hide = true)]
    pub(crate) child_index: Option<u32>,

    #[arg(long, hide = true, requires = "child_index")]
    pub(crate) child_count: Option<u32>,
}

impl TcpFramesArgs {
    /// Runtime threads in each process.
    pub(crate) fn threads_per_process(&self, processes: u32, cpus: usize) -> usize {
        self.threads.map_or_else(
            || (cpus / processes as usize).max(1),
            |threads| threads as usize,
        )
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.connections == 0 {
            bail!("--connections must be at least 1");
        }
        if self.id_prefix.contains(['/', '+', '#']) || self.id_prefix.chars().any(char::is_control)
        {
            bail!("--id-prefix must not contain '/', '+', '#' or control characters");
        }
        if self.duration.is_zero() {
            bail!("--duration must be longer than zero");
        }
        Ok(())
    }
}

/// Runs the scenario as the parent, or as child K when the hidden flags say so.
pub(crate) fn run(args: &TcpFramesArgs) -> anyhow::Result<()> {
    args.validate()?;
    match (args.child_index, args.child_count) {
        (Some(index), Some(count)) if index < count => {
            child::run(args, index, count).with_context(|| format!("child process {index}"))
        }
        (Some(index), count) => bail!("bad child flags: index {index}, count {count:?}"),
        (None, _) => parent::run(args),
    }
}
