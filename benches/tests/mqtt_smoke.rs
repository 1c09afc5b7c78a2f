//! Runs the real `shoal-bench mqtt-conn` and `mqtt-pubsub` briefly against
//! a real `shoal-dataplane` (its MQTT listener on a free loopback port) and
//! checks that connections were held and messages delivered. Not a speed
//! test: the loads are tiny.
//!
//! The data plane binary is taken from the same target directory as this
//! test (build it first: `cargo build -p shoal-dataplane`, or
//! `cargo build --workspace --bins` as `.ci/run` does).

mod support;

use serde_json::Value;
use support::{
    assert_contains, assert_zero, count, failure_stderr, free_tcp_port, loopback, parse_report,
    run_bench, run_json, run_text, Dataplane, BENCH_LIMIT,
};

/// The data plane's MQTT listener, beyond its address.
const LISTENER_SETTINGS: &str =
    "max_connections = 10000\nmax_frame_bytes = 65000\nidle_timeout = \"5m\"";

/// One short `mqtt-pubsub` run with `extra` options; checks that every
/// expected delivery arrived, once and in order, and returns the report.
fn pubsub(dp: &Dataplane, target: &str, extra: &str) -> Value {
    let report = run_json(
        &format!(
            "mqtt-pubsub --target {target} --server-pid {} --threads 2 --warmup 200ms \
             --duration 1s --drain 3s --settle 300ms --json {extra}",
            dp.pid()
        ),
        BENCH_LIMIT,
    );
    assert_eq!(report["scenario"], "mqtt-pubsub");
    assert_zero(
        &report,
        &[
            "/connections/failed",
            "/run_errors/count",
            "/messages/lost",
            "/messages/malformed",
            "/messages/duplicate_or_reordered",
            "/messages/unacknowledged",
        ],
    );
    let expected = count(&report, "/messages/expected_deliveries");
    assert!(expected > 0, "{report}");
    assert_eq!(count(&report, "/messages/delivered"), expected, "{report}");
    assert!(count(&report, "/measured/delivered") > 0, "{report}");
    assert!(count(&report, "/latency_us/samples") > 0, "{report}");
    assert!(report["server"]["cpu_s"].as_f64().is_some(), "{report}");
    report
}

#[test]
fn mqtt_scenarios_against_the_data_plane() {
    let (dp, target) = Dataplane::start_one("mqtt", free_tcp_port(), LISTENER_SETTINGS);

    // Idle connections from two processes.
    let report = run_json(
        &format!(
            "mqtt-conn --target {target} --connections 60 --procs 2 --threads 1 --hold 300ms \
             --settle 100ms --source-addrs 127.0.0.1-127.0.0.3 --server-pid {} --json",
            dp.pid()
        ),
        BENCH_LIMIT,
    );
    assert_eq!(report["scenario"], "mqtt-conn");
    assert_eq!(report["connections"]["established"], 60, "{report}");
    assert_eq!(report["open_at_end"], 60, "{report}");
    assert_zero(
        &report,
        &[
            "/connections/failed",
            "/closed_by_server",
            "/unexpected_bytes_received",
        ],
    );
    assert!(report["connections_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(report["handshake_us"]["samples"], 60, "{report}");
    assert!(count(&report, "/server/rss_held_kib") > 0, "{report}");

    // Fan-in at a fixed rate, QoS 1 (PUBACKs both ways), MQTT 5.
    let report = pubsub(
        &dp,
        &target,
        "--mode fan-in --publishers 6 --subscribers 2 --qos 1 --rate 600/s --protocol 5",
    );
    assert_eq!(report["load"]["subscribers_per_message"], 1);
    // 600 msg/s for 1.2 s.
    let published = count(&report, "/messages/published");
    assert!((600..=800).contains(&published), "{report}");

    // Fan-out at max rate, QoS 0 and QoS 1, 1 KiB payloads.
    for qos in ["0", "1"] {
        let report = pubsub(
            &dp,
            &target,
            &format!("--mode fan-out --subscribers 5 --qos {qos} --payload 1024 --rate 0"),
        );
        assert_eq!(report["load"]["subscribers_per_message"], 5);
        let published = count(&report, "/messages/published");
        assert_eq!(
            report["messages"]["expected_deliveries"].as_u64(),
            Some(published * 5)
        );
    }

    // Text report of a small fan-out.
    let text = format!(
        "mqtt-pubsub --target {target} --mode fan-out --subscribers 3 --rate 100 \
         --warmup 100ms --duration 500ms --settle 300ms"
    );
    assert_contains(
        &run_text(&text, BENCH_LIMIT),
        &["mqtt-pubsub fan-out", "lost 0"],
    );
}

#[test]
fn refused_connections_are_counted() {
    // A port nothing listens on.
    let target = loopback(free_tcp_port());
    let output = run_bench(
        &format!(
            "mqtt-conn --target {target} --connections 3 --hold 100ms --settle 10ms \
             --connect-timeout 1s --json"
        ),
        BENCH_LIMIT,
    );
    assert_contains(&failure_stderr(&output), &["no MQTT connection"]);
    let report = parse_report(&output);
    assert_eq!(report["connections"]["failed"], 3, "{report}");
    assert_eq!(
        report["connections"]["failures_by_kind"]["ConnectionRefused"],
        3
    );
}
