//! `shoal-bench coap`: CoAP devices (RFC 7252 over UDP), each on its own
//! socket and source port, sending `POST /devices/{id}/up` with a
//! fixed-size payload, CON (answer piggybacked in the ACK, retransmitted
//! after ACK_TIMEOUT with exponential back-off) or NON (`--non`, answered
//! with a NON, never retransmitted).
//!
//! ```text
//! device: sender ── one request outstanding (NSTART 1): closed loop, or
//!         │         each due on the --rate schedule; CON: retransmit at
//!         │         2-3 s, x2 each time, give up after MAX_RETRANSMIT ──▶ socket
//!         └ receiver ── ACK / RST / NON / CON matched by message id + token;
//!                        a separate CON answer is ACKed ◀── socket
//! ```
//!
//! Messages are written and read with `shoal_protocols::coap`. The run over
//! processes and threads is [`crate::request_run`].

mod device;

use std::{net::SocketAddr, time::Duration};

use anyhow::bail;
use clap::Args;
use shoal_protocols::coap::ACK_TIMEOUT_MS;

use crate::request_run::{driver, LoadArgs};

/// Largest payload sent: one datagram, no block-wise transfer (RFC 7959
/// would be needed beyond 1024 bytes).
const MAX_PAYLOAD_BYTES: u64 = 1024;

/// Options of `coap`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Opens --devices UDP sockets (each its own source port, spread over \
--procs processes, --threads each, --source-addrs), checks each with a \
CoAP ping (Empty CON answered by RST) and, from one common start, sends on \
each `POST /devices/{id}/up` with a --payload-byte payload ({id} = \
`{prefix}-{i}`), one request outstanding per device. Closed loop (--rate \
0): the next request as soon as the answer arrives. --rate R: R \
requests/s in total, spread evenly over the devices, each carrying its \
scheduled time, so falling behind counts as latency.

CON (default): the answer is matched by message id and token; a request \
not answered within ACK_TIMEOUT x (1 to 1.5) is retransmitted, the timeout \
doubling each time, and given up after MAX_RETRANSMIT (4) retransmissions \
(RFC 7252 §4.2). --non: NON requests, answered with NON responses matched \
by token, given up (counted as timeouts) after --non-timeout.

Latency is answer time minus the stamp (first transmission, or scheduled \
time when paced), retransmissions included. With --server-pid the \
server's CPU over the window per 1,000 answers, and RSS.")]
pub(crate) struct CoapArgs {
    /// Address of the CoAP listener.
    #[arg(long, default_value = "127.0.0.1:5683")]
    pub(crate) target: SocketAddr,

    /// Devices (UDP sockets), split over all processes.
    #[arg(long, default_value_t = 100)]
    pub(crate) devices: u64,

    /// Payload bytes per request (one datagram).
    #[arg(long = "payload", value_name = "BYTES", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(0..=MAX_PAYLOAD_BYTES))]
    pub(crate) payload_bytes: u64,

    /// Send NON requests (no ACK, no retransmission).
    #[arg(long)]
    pub(crate) non: bool,

    /// --non: give a request up when no answer came within this.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
    pub(crate) non_timeout: Duration,

    /// Send `?secret=SECRET` (device_secret listeners).
    #[arg(long, value_name = "SECRET")]
    pub(crate) secret: Option<String>,

    #[command(flatten)]
    pub(crate) load: LoadArgs,
}

/// How a CoAP answer is written in the report: `2.04`, `RST` for a reset.
fn status_name(status: u16) -> String {
    if status == device::RESET_STATUS {
        "RST".to_owned()
    } else {
        format!("{}.{:02}", status / 100, status % 100)
    }
}

/// Runs `coap`.
pub(crate) fn run(args: &CoapArgs) -> anyhow::Result<()> {
    if args
        .secret
        .as_deref()
        .is_some_and(|s| s.is_empty() || s.len() > 200)
    {
        bail!("--secret must hold 1 to 200 bytes");
    }
    if args.non_timeout.is_zero() {
        bail!("--non-timeout must be more than 0");
    }
    let plan = device::CoapPlan {
        target: args.target,
        payload_bytes: args.payload_bytes as usize,
        confirmable: !args.non,
        non_timeout: args.non_timeout,
        secret: args.secret.clone(),
    };
    let kind = if args.non {
        format!(
            "NON, given up after {}",
            humantime::format_duration(args.non_timeout)
        )
    } else {
        format!("CON, ACK_TIMEOUT {ACK_TIMEOUT_MS} ms")
    };
    let description = driver::RunDescription {
        scenario: "coap",
        target: args.target.to_string(),
        request: format!(
            "POST /devices/{{id}}/up {kind}, {} B payload",
            args.payload_bytes
        ),
        client_kind: "devices",
        clients: args.devices,
        in_flight_per_client: 1,
        payload_bytes: args.payload_bytes,
        status_name,
    };
    driver::run(&args.load, &description, move |run| {
        device::run_thread(plan.clone(), run)
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        args: CoapArgs,
    }

    #[test]
    fn options_and_status_names() {
        let a = Wrap::parse_from(["x", "--devices", "7", "--non", "--payload", "1024"]).args;
        assert_eq!((a.devices, a.non, a.payload_bytes), (7, true, 1024));
        assert!(Wrap::try_parse_from(["x", "--payload", "1025"]).is_err());
        assert_eq!(status_name(204), "2.04");
        assert_eq!(status_name(401), "4.01");
        assert_eq!(status_name(device::RESET_STATUS), "RST");
    }
}
