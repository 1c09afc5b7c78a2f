//! Runs the real `shoal-bench coap` briefly against a real
//! `shoal-dataplane` (a CoAP listener, `protocol = "coap"`, on a free
//! loopback UDP port) and checks the reports: requests answered 2.04, no
//! retransmission, timeout or error, latency figures. Not a speed test:
//! the loads are tiny.
//!
//! The data plane binary is taken from the same target directory as this
//! test (build it first: `cargo build -p shoal-dataplane`, or
//! `cargo build --workspace --bins` as `.ci/run` does).

mod support;

use serde_json::Value;
use support::{
    assert_contains, assert_zero, count, free_udp_port, loopback, run_failing, run_requests,
    run_text, Dataplane, BENCH_LIMIT,
};

/// The data plane's CoAP listener, beyond its address.
const LISTENER_SETTINGS: &str =
    "max_connections = 1000\nmax_frame_bytes = 16384\nidle_timeout = \"5m\"";

/// One short `coap` run with `extra` options; checks what every run must
/// show and returns the report.
fn coap(dp: &Dataplane, target: &str, devices: u64, extra: &str) -> Value {
    let report = run_requests("coap", dp, target, "--devices", devices, extra);
    let answered = count(&report, "/requests/answered");
    assert_eq!(count(&report, "/requests/success"), answered, "{report}");
    assert_eq!(
        report["requests"]["by_status"]["2.04"].as_u64(),
        Some(answered),
        "{report}"
    );
    assert_zero(
        &report,
        &[
            "/requests/timeouts",
            "/requests/resets",
            "/requests/retransmissions",
        ],
    );
    report
}

#[test]
fn coap_against_the_data_plane() {
    let (dp, target) = Dataplane::start_one("coap", free_udp_port(), LISTENER_SETTINGS);

    // CON, closed loop, from two processes and three source addresses.
    let report = coap(
        &dp,
        &target,
        20,
        "--procs 2 --threads 1 --source-addrs 127.0.0.1-127.0.0.3",
    );
    assert_eq!(report["load"]["in_flight_per_client"], 1);

    // NON at a fixed rate: 400 requests/s for 1.2 s.
    let report = coap(&dp, &target, 10, "--non --rate 400 --payload 512");
    let sent = count(&report, "/requests/sent");
    assert!((440..=520).contains(&sent), "{report}");

    // The text report.
    let text = format!("coap --target {target} --devices 3 --warmup 100ms --duration 500ms");
    assert_contains(&run_text(&text, BENCH_LIMIT), &["coap -> ", "(2.04 x"]);
}

#[test]
fn a_silent_port_fails_the_ping() {
    // A UDP port nothing listens on: the kernel answers the ping with an
    // ICMP port unreachable, seen as a refused receive.
    let target = loopback(free_udp_port());
    let args = format!("coap --target {target} --devices 3 --duration 100ms --connect-timeout 1s");
    assert_contains(
        &run_failing(&args, BENCH_LIMIT),
        &["no devices could be opened"],
    );
}
