//! `shoal-bench`: load generator for Shoal.
//!
//! Each scenario drives the server from one or more processes, each running
//! pinned monoio (io_uring) runtimes, one per thread; processes share one
//! clock (CLOCK_MONOTONIC), so a frame stamped in one process is timed when
//! it arrives in another. Invariant: every load loop is bounded in count and
//! time, and a peer's failure is counted and reported, never a panic.
//!
//! ```text
//! parent: check limits → spawn children → wait "ready" → "start T" → sample server
//!         → collect results → merge histograms → report
//! child:  threads connect + log in → "ready" → run from T → result line
//! ```

mod args;
mod clock;
mod coap;
mod flv;
mod http_post;
mod mqtt;
mod multiproc;
mod net;
mod pacer;
mod proc_stats;
mod report;
mod request_run;
mod runtime;
mod tally;
mod tcp_frames;
mod wire;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Load generator for Shoal: latency histograms, throughput and server cost.
#[derive(Debug, Parser)]
#[command(name = "shoal-bench", version)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Devices on the length-prefixed TCP listener: sender/receiver pairs
    /// (latency, throughput, server CPU per frame) or idle connections
    /// (server memory per connection, connect rate).
    TcpFrames(tcp_frames::TcpFramesArgs),
    /// Idle MQTT connections: connections/s (connect + CONNACK) and the
    /// server's memory per connection.
    MqttConn(mqtt::MqttConnArgs),
    /// MQTT publishers and subscribers (fan-in or fan-out, QoS 0 or 1):
    /// delivered messages/s, losses, latency, server CPU per message.
    MqttPubsub(mqtt::MqttPubSubArgs),
    /// Live-video fan-out: one RTMP publisher, many HTTP-FLV or RTMP
    /// viewers: delivered Gbit/s, latency, stalls, skipped tags, server
    /// CPU per Gbit and memory per viewer.
    FlvFanout(flv::FlvFanoutArgs),
    /// Devices publishing over HTTP/1.1 keep-alive connections (`POST
    /// /v1/devices/{id}/messages`, or any --path): requests/s, latency,
    /// non-2xx, server CPU per 1k requests.
    HttpPost(http_post::HttpPostArgs),
    /// CoAP devices, each on its own UDP socket, sending CON (or NON)
    /// `POST /devices/{id}/up`: requests/s, latency, retransmissions and
    /// timeouts, server CPU per 1k requests.
    Coap(coap::CoapArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match &cli.scenario {
        Scenario::TcpFrames(args) => tcp_frames::run(args),
        Scenario::MqttConn(args) => mqtt::run_conn(args),
        Scenario::MqttPubsub(args) => mqtt::run_pubsub(args),
        Scenario::FlvFanout(args) => flv::run(args),
        Scenario::HttpPost(args) => http_post::run(args),
        Scenario::Coap(args) => coap::run(args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("shoal-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}
