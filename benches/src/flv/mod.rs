//! `shoal-bench flv-fanout`: live-video fan-out. One publisher sends a
//! synthetic FLV stream over RTMP; V viewers play it over HTTP-FLV (Shoal)
//! or RTMP (Shoal, nginx-rtmp), so two servers can be compared with the
//! same load.
//!
//! ```text
//! parent:  publisher thread (RTMP publish, paced media) ─ preroll (a GOP cache fills)
//!          ─ sample server RSS ─ spawn children ─ all "ready" ─ "start T"
//!          ─ warmup ─ measured window: server CPU at both ends, RSS at the end
//!          ─ drain ─ children's results ─ stop the publisher ─ report
//! child:   pinned monoio threads: connect viewers (bounded concurrency) ─ each reads
//!          its stream from connect to the end ─ "ready" once every viewer started
//!          (or the setup deadline) ─ T ─ cancel the reads after T + warmup + duration
//!          + drain ─ result (counts, latency histogram)
//! ```
//!
//! Every media tag carries a probe ([`media`]): a sequence number per
//! track (gaps = tags the server skipped for that viewer) and its send time
//! on CLOCK_MONOTONIC, shared by every process (latency = arrival - send
//! time). HTTP-FLV bodies are read by a de-chunker and an FLV scanner that
//! copy nothing but tag heads and probes ([`scan`]).

mod child;
mod media;
mod parent;
mod publisher;
mod report;
mod scan;
mod tally;
mod viewer;
mod watch;

use std::{net::SocketAddr, time::Duration};

use anyhow::{bail, Context as _};
use clap::{Args, ValueEnum};

use crate::net::SourceAddrs;

/// How viewers play the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Proto {
    /// `GET /{app}/{name}.flv` on --http-target, a chunked FLV body.
    HttpFlv,
    /// RTMP play of `{app}/{name}` on --rtmp-target.
    Rtmp,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Self::HttpFlv => "http-flv",
            Self::Rtmp => "rtmp",
        }
    }
}

/// Parses a bitrate in bit/s: `2000000`, `500k`, `2M`, `1.5M`.
fn parse_bitrate(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (number, scale) = match t.char_indices().last() {
        Some((at, 'k' | 'K')) => (&t[..at], 1e3),
        Some((at, 'm' | 'M')) => (&t[..at], 1e6),
        Some((at, 'g' | 'G')) => (&t[..at], 1e9),
        _ => (t, 1.0),
    };
    number
        .parse::<f64>()
        .ok()
        .map(|n| n * scale)
        .filter(|bps| bps.is_finite() && *bps >= 1.0 && *bps <= 1e11)
        .map(|bps| bps.round() as u64)
        .ok_or_else(|| format!("{text:?} is not a bitrate (e.g. 2000000, 500k, 2M)"))
}

/// Options of `flv-fanout`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
One publisher publishes `{app}/{stream}` over RTMP to --rtmp-target: \
onMetaData, AVC and AAC sequence headers, then video at --fps with a \
keyframe every --gop and AAC audio every 21.3 ms (unless --no-audio), \
--bitrate in total (tag bodies; audio takes 64 kbit/s). After --preroll \
the viewers connect and play it (--proto). Every media tag carries its \
sequence number and send time: viewers time it (latency), count sequence \
gaps (tags the server skipped for them), stalls (media gaps longer than \
--stall-gap) and whether they started on a keyframe.

Measured window: --duration after --warmup, counted from the moment every \
viewer is playing. Delivered bytes and tags count by arrival time; latency \
and expected tags by the probe's send time. With --server-pid: server CPU \
over the window (and per delivered Gbit/s), RSS before the viewers came \
and at the end of the window (growth per viewer). Run it against Shoal \
(RTMP and HTTP listeners) or nginx-rtmp (--proto rtmp) unchanged.")]
pub(crate) struct FlvFanoutArgs {
    /// RTMP listener: the publisher, and viewers with --proto rtmp.
    #[arg(long, default_value = "127.0.0.1:1935")]
    pub(crate) rtmp_target: SocketAddr,

    /// HTTP listener: viewers with --proto http-flv.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub(crate) http_target: SocketAddr,

    /// How viewers play: http-flv (Shoal only) or rtmp.
    #[arg(long, value_enum, default_value_t = Proto::HttpFlv)]
    pub(crate) proto: Proto,

    /// RTMP application (the first path segment).
    #[arg(long, default_value = "live")]
    pub(crate) app: String,

    /// Stream name.
    #[arg(long, default_value = "bench")]
    pub(crate) stream: String,

    /// Viewers, split over all processes.
    #[arg(long, default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub(crate) viewers: u64,

    /// Processes to spread viewers over (each holds < ~19,000 sockets).
    #[arg(long, alias = "processes", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub(crate) procs: u32,

    /// Runtime threads per process [default: CPUs / processes, at least 1].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) threads: Option<u32>,

    /// Whole stream bitrate in bit/s, tag bodies (`2000000`, `500k`, `2M`).
    #[arg(long, default_value = "2M", value_parser = parse_bitrate)]
    pub(crate) bitrate: u64,

    /// Video frames per second.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=240))]
    pub(crate) fps: u32,

    /// Time between keyframes.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
    pub(crate) gop: Duration,

    /// A keyframe is this many times the size of a P frame.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) keyframe_ratio: u32,

    /// Video only.
    #[arg(long)]
    pub(crate) no_audio: bool,

    /// Publishing before the viewers connect (a server with a GOP cache
    /// then has a whole GOP).
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = humantime::parse_duration)]
    pub(crate) preroll: Duration,

    /// Playing before the measured window; not measured.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
    pub(crate) warmup: Duration,

    /// Measured time.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) duration: Duration,

    /// Reading after the window, for tags stamped in it still on their way.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub(crate) drain: Duration,

    /// A gap between two media tags longer than this is a stall.
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub(crate) stall_gap: Duration,

    /// Source IPv4 addresses, bound before connect, used round-robin:
    /// `A.B.C.D-A.B.C.E`, one address, or `any` (kernel's choice).
    #[arg(long, default_value = "127.0.0.1-127.0.0.8")]
    pub(crate) source_addrs: SourceAddrs,

    /// Server pid: its CPU time over the window and its RSS (from /proc).
    #[arg(long, value_name = "PID")]
    pub(crate) server_pid: Option<u32>,

    /// Print the report as one JSON object.
    #[arg(long)]
    pub(crate) json: bool,

    /// Give up on a viewer not playing this long after it started to
    /// connect (and on the publisher's setup).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) connect_timeout: Duration,

    /// Viewers setting up at once, per thread.
    #[arg(long, value_name = "VIEWERS", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) connect_concurrency: u32,

    /// Longest time for every viewer to connect and get its first video frame;
    /// later viewers are skipped.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub(crate) setup_timeout: Duration,

    /// Read buffer per viewer.
    #[arg(long, value_name = "BYTES", default_value_t = 16_384,
          value_parser = clap::value_parser!(u64).range(scan::MAX_HEAD_BYTES as u64..=(1 << 20)))]
    pub(crate) read_buffer: u64,

    #[arg(long, hide = true)]
    pub(crate) child_index: Option<u32>,

    #[arg(long, hide = true, requires = "child_index")]
    pub(crate) child_count: Option<u32>,
}

impl FlvFanoutArgs {
    /// Runtime threads in each child process.
    fn threads_per_process(&self, cpus: usize) -> usize {
        self.threads.map_or_else(
            || (cpus / self.procs as usize).max(1),
            |threads| threads as usize,
        )
    }

    /// Where the viewers connect.
    fn viewer_target(&self) -> SocketAddr {
        match self.proto {
            Proto::HttpFlv => self.http_target,
            Proto::Rtmp => self.rtmp_target,
        }
    }

    fn shape(&self) -> anyhow::Result<media::StreamShape> {
        media::StreamShape::new(
            self.bitrate,
            self.fps,
            self.gop,
            self.keyframe_ratio,
            !self.no_audio,
        )
        .map_err(anyhow::Error::msg)
    }

    fn validate(&self) -> anyhow::Result<()> {
        for (flag, value) in [("--app", &self.app), ("--stream", &self.stream)] {
            if value.is_empty()
                || value.len() > 128
                || !value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                bail!("{flag} must be 1 to 128 ASCII letters, digits, '-', '_' or '.'");
            }
        }
        if self.duration.is_zero() {
            bail!("--duration must be longer than zero");
        }
        if self.stall_gap.is_zero() {
            bail!("--stall-gap must be longer than zero");
        }
        self.shape().map(|_| ())
    }
}

/// Runs `flv-fanout` as the parent, or as child K when the hidden flags say so.
pub(crate) fn run(args: &FlvFanoutArgs) -> anyhow::Result<()> {
    args.validate()?;
    match (args.child_index, args.child_count) {
        (Some(index), Some(count)) if index < count => {
            child::run(args, index, count).with_context(|| format!("child process {index}"))
        }
        (Some(index), count) => bail!("bad child flags: index {index}, count {count:?}"),
        (None, _) => parent::run(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitrates_parse() {
        assert_eq!(parse_bitrate("2000000"), Ok(2_000_000));
        assert_eq!(parse_bitrate("500k"), Ok(500_000));
        assert_eq!(parse_bitrate("2M"), Ok(2_000_000));
        assert_eq!(parse_bitrate(" 1.5m "), Ok(1_500_000));
        assert_eq!(parse_bitrate("1G"), Ok(1_000_000_000));
        for bad in ["", "M", "fast", "-1", "0", "2 Mbit", "nan", "1e300"] {
            assert!(parse_bitrate(bad).is_err(), "{bad:?} accepted");
        }
    }
}
