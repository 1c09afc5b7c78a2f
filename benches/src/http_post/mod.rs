//! `shoal-bench http-post`: devices publishing over HTTP/1.1 keep-alive
//! connections, `POST /v1/devices/{id}/messages` with a fixed-size body,
//! against Shoal's device API (answered 202) or any HTTP server (`--path`;
//! nginx answering 204 is the ceiling in benches/run-http.sh).
//!
//! ```text
//! connection: writer ── up to --pipeline requests in flight (closed loop),
//!             │         or each due on the --rate schedule, stamped ──▶ socket
//!             └ reader ── responses in order: pop the oldest stamp, status,
//!                         latency into the thread's histogram ◀── socket
//! ```
//!
//! The run over processes and threads is [`crate::request_run`]; responses
//! are cut by [`response`].

mod conn;
mod response;

use std::net::SocketAddr;

use anyhow::bail;
use clap::Args;

use crate::request_run::{driver, LoadArgs};

/// Largest body sent (Shoal's default `max_frame_bytes` for HTTP).
const MAX_PAYLOAD_BYTES: u64 = 65_000;
/// Most pipelined requests per connection.
const MAX_PIPELINE: u64 = 256;

/// Options of `http-post`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Opens --connections keep-alive connections (from --procs processes, \
--threads each, --source-addrs) and, from one common start, sends on each \
`POST {path}` with a --payload-byte body (`{id}` in --path is the \
connection's device id, `{prefix}-{i}`). Closed loop (--rate 0): each \
connection keeps --pipeline requests in flight, a new one written as soon \
as an answer arrives (--pipeline 1: one request at a time). --rate R: R \
requests/s in total, spread evenly over the connections, each carrying its \
scheduled time, so falling behind counts as latency; a connection still \
never has more than --pipeline in flight.

Latency is answer time minus the request's stamp (write time, or scheduled \
time when paced) for requests stamped in the measured window (--duration \
after --warmup); requests/s counts answers arriving in it. Non-2xx answers \
and connection failures are counted by kind. With --server-pid (several \
pids: summed) the server's CPU over the window per 1,000 answers, and RSS.")]
pub(crate) struct HttpPostArgs {
    /// Address of the HTTP listener.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub(crate) target: SocketAddr,

    /// Keep-alive connections, split over all processes.
    #[arg(long, default_value_t = 100)]
    pub(crate) connections: u64,

    /// Requests in flight per connection (HTTP/1.1 pipelining when > 1).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=MAX_PIPELINE))]
    pub(crate) pipeline: u64,

    /// Body bytes per request.
    #[arg(long = "payload", alias = "body", value_name = "BYTES", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(0..=MAX_PAYLOAD_BYTES))]
    pub(crate) payload_bytes: u64,

    /// Request path; `{id}` becomes the connection's device id.
    #[arg(long, default_value = "/v1/devices/{id}/messages")]
    pub(crate) path: String,

    /// Send `Authorization: Bearer SECRET` (device_secret listeners).
    #[arg(long, value_name = "SECRET")]
    pub(crate) secret: Option<String>,

    #[command(flatten)]
    pub(crate) load: LoadArgs,
}

impl HttpPostArgs {
    fn validate(&self) -> anyhow::Result<()> {
        if !self.path.starts_with('/')
            || self
                .path
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            bail!("--path must start with '/' and hold no spaces or control characters");
        }
        if self
            .secret
            .as_deref()
            .is_some_and(|s| s.is_empty() || s.bytes().any(|b| b.is_ascii_control()))
        {
            bail!("--secret must not be empty nor hold control characters");
        }
        Ok(())
    }
}

/// Runs `http-post`.
pub(crate) fn run(args: &HttpPostArgs) -> anyhow::Result<()> {
    args.validate()?;
    let plan = conn::HttpPlan {
        target: args.target,
        path: args.path.clone(),
        secret: args.secret.clone(),
        payload_bytes: args.payload_bytes as usize,
        pipeline: args.pipeline as usize,
    };
    let description = driver::RunDescription {
        scenario: "http-post",
        target: args.target.to_string(),
        request: format!(
            "POST {} HTTP/1.1, {} B body, keep-alive",
            args.path, args.payload_bytes
        ),
        client_kind: "connections",
        clients: args.connections,
        in_flight_per_client: args.pipeline,
        payload_bytes: args.payload_bytes,
        status_name: |status| status.to_string(),
    };
    driver::run(&args.load, &description, move |run| {
        conn::run_thread(plan.clone(), run)
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        args: HttpPostArgs,
    }

    #[test]
    fn options_parse_and_check() {
        let a = Wrap::parse_from([
            "x",
            "--connections",
            "5",
            "--pipeline",
            "4",
            "--body",
            "0",
            "--rate",
            "2k/s",
            "--server-pid",
            "10,11",
        ])
        .args;
        assert_eq!((a.connections, a.pipeline, a.payload_bytes), (5, 4, 0));
        assert_eq!(a.load.rate_per_s, 2000);
        assert_eq!(a.load.server_pid, [10, 11]);
        assert!(a.validate().is_ok());
        assert!(Wrap::try_parse_from(["x", "--pipeline", "0"]).is_err());
        let bad = Wrap::parse_from(["x", "--path", "no-slash"]).args;
        assert!(bad.validate().is_err());
        let bad = Wrap::parse_from(["x", "--path", "/a b"]).args;
        assert!(bad.validate().is_err());
    }
}
