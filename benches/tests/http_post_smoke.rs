//! Runs the real `shoal-bench http-post` briefly against a real
//! `shoal-dataplane` (its HTTP device API on a free loopback port) and
//! checks the reports: requests answered, no errors, latency figures. Not a
//! speed test: the loads are tiny.
//!
//! The data plane binary is taken from the same target directory as this
//! test (build it first: `cargo build -p shoal-dataplane`, or
//! `cargo build --workspace --bins` as `.ci/run` does).

mod support;

use serde_json::Value;
use support::{
    assert_contains, assert_zero, count, free_tcp_port, loopback, run_failing, run_requests,
    run_text, Dataplane, BENCH_LIMIT,
};

/// The data plane's HTTP listener, beyond its address.
const LISTENER_SETTINGS: &str =
    "max_connections = 1000\nmax_frame_bytes = 65000\nidle_timeout = \"5m\"";

/// One short `http-post` run with `extra` options; checks what every run
/// must show and returns the report.
fn http_post(dp: &Dataplane, target: &str, connections: u64, extra: &str) -> Value {
    let report = run_requests("http-post", dp, target, "--connections", connections, extra);
    assert_zero(&report, &["/requests/unmatched"]);
    assert!(report["server"]["cpu_s"].as_f64().is_some(), "{report}");
    report
}

#[test]
fn http_post_against_the_data_plane() {
    let (dp, target) = Dataplane::start_one("http", free_tcp_port(), LISTENER_SETTINGS);

    // Closed loop from two processes, one request at a time.
    let report = http_post(
        &dp,
        &target,
        20,
        "--procs 2 --threads 1 --source-addrs 127.0.0.1-127.0.0.3",
    );
    let requests = &report["requests"];
    assert_eq!(requests["success"], requests["answered"], "{report}");
    assert_eq!(requests["non_success"], 0, "{report}");
    assert_eq!(
        requests["by_status"]["202"], requests["answered"],
        "{report}"
    );

    // Pipelined, 1 KiB bodies.
    let report = http_post(&dp, &target, 4, "--pipeline 8 --payload 1024 --threads 2");
    assert_eq!(report["load"]["in_flight_per_client"], 8);
    assert_eq!(report["requests"]["non_success"], 0, "{report}");

    // A fixed rate: 500 requests/s for 1.2 s.
    let report = http_post(&dp, &target, 10, "--rate 500/s");
    let sent = count(&report, "/requests/sent");
    assert!((550..=650).contains(&sent), "{report}");
    assert_eq!(report["requests"]["non_success"], 0, "{report}");

    // A path the data plane does not serve: every answer is a 404, counted.
    let report = http_post(&dp, &target, 2, "--path /v1/nothing/{id}");
    let requests = &report["requests"];
    assert_eq!(requests["success"], 0, "{report}");
    assert_eq!(requests["non_success"], requests["answered"], "{report}");
    assert_eq!(
        requests["by_status"]["404"], requests["answered"],
        "{report}"
    );

    // The text report.
    let text =
        format!("http-post --target {target} --connections 3 --warmup 100ms --duration 500ms");
    assert_contains(
        &run_text(&text, BENCH_LIMIT),
        &["http-post -> ", "unanswered 0"],
    );
}

#[test]
fn refused_connections_are_reported() {
    // A port nothing listens on.
    let target = loopback(free_tcp_port());
    let args = format!(
        "http-post --target {target} --connections 3 --duration 100ms --connect-timeout 1s"
    );
    assert_contains(
        &run_failing(&args, BENCH_LIMIT),
        &["no connections could be opened", "ConnectionRefused x3"],
    );
}
