//! The small binaries run to their end: `shoalctl` (config check and
//! default, figures from a real data plane's stats lines) and
//! `shoal-controlplane` (config check and default). Exit codes: 0 success,
//! 2 invalid input.

use std::collections::BTreeMap;

use serde_json::Value;
use shoal_tests::{
    run_bin, Config, CoreStats, Dataplane, Listener, LogLine, Route, RunOutput, TcpDevice,
    TempConfig, CORES, WAIT,
};

const SHOALCTL: &str = "shoalctl";
const CONTROLPLANE: &str = "shoal-controlplane";

/// Runs `bin` with `args` and nothing on stdin.
fn run(bin: &str, args: &[&str]) -> RunOutput {
    run_bin(bin, args, b"", WAIT)
}

/// Runs `bin` with `args`, then the path of a file holding `config`.
fn run_on_file(bin: &str, args: &[&str], config: &str) -> RunOutput {
    let file = TempConfig::new(config);
    let path = file.path().to_str().expect("the temp dir has a UTF-8 path");
    let mut all = args.to_vec();
    all.push(path);
    run(bin, &all)
}

/// The default config as `bin default` (or `bin config default`) prints it.
fn printed_default(bin: &str, args: &[&str]) -> String {
    let out = run(bin, args);
    out.assert_exit_code(0);
    assert!(out.stdout.contains("[[listener]]"), "{out:?}");
    out.stdout
}

/// The usual device listener on a fixed port: the configs here are
/// checked, never started.
fn checked_only() -> Config {
    Config::new().listener(Listener::tcp("tcp", 0).bind("127.0.0.1:7000"))
}

/// A config whose first listener binds a port that does not exist.
fn bad_bind_config() -> String {
    Config::new()
        .listener(Listener::tcp("tcp-meters", 0).bind("127.0.0.1:99999"))
        .to_string()
}

/// Asserts exit code 2 (invalid input) and a stderr containing `needles`.
fn assert_invalid_input(out: &RunOutput, needles: &[&str]) {
    out.assert_exit_code(2);
    for needle in needles {
        assert!(out.stderr.contains(needle), "no {needle:?} in {out:?}");
    }
    assert!(out.stdout.is_empty(), "{out:?}");
}

/// `bin ARGS... FILE` on a file that does not exist: invalid input, and
/// stderr says it cannot read that file.
fn assert_refuses_a_missing_file(bin: &str, args: &[&str]) {
    let gone = std::env::temp_dir().join(format!("shoal-e2e-{}-missing.toml", std::process::id()));
    let path = gone.to_str().expect("the temp dir has a UTF-8 path");
    let mut all = args.to_vec();
    all.push(path);
    assert_invalid_input(&run(bin, &all), &["cannot read", path]);
}

/// The words of each line of a table.
fn table_rows(table: &str) -> Vec<Vec<&str>> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect()
}

fn parse_json(out: &RunOutput) -> Value {
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {out:?}"))
}

// ----- shoalctl config -------------------------------------------------

#[test]
fn shoalctl_accepts_its_default_config_and_lists_its_listeners() {
    let default = printed_default(SHOALCTL, &["config", "default"]);
    let out = run_on_file(SHOALCTL, &["config", "check"], &default);
    out.assert_exit_code(0);
    let rows = table_rows(&out.stdout);
    let row = |name: &str| {
        rows.iter()
            .find(|r| r.first() == Some(&name))
            .unwrap_or_else(|| panic!("no row for {name}: {out:?}"))
    };
    assert_eq!(
        row("LISTENER")[..3],
        ["LISTENER", "PROTO", "BIND"],
        "{out:?}"
    );
    assert_eq!(
        row("tcp-default")[1..3],
        ["tcp", "127.0.0.1:7000"],
        "{out:?}"
    );
    assert_eq!(
        row("udp-default")[1..3],
        ["udp", "127.0.0.1:7001"],
        "{out:?}"
    );
    assert_eq!(row("ROUTE"), &["ROUTE", "FILTER"], "{out:?}");
}

#[test]
fn shoalctl_checks_a_config_to_json() {
    let default = printed_default(SHOALCTL, &["config", "default"]);
    let out = run_on_file(SHOALCTL, &["-o", "json", "config", "check"], &default);
    out.assert_exit_code(0);
    let doc = parse_json(&out);
    assert_eq!(doc["valid"], Value::Bool(true), "{doc}");
    let listeners = doc["listeners"].as_array().expect("a listener array");
    let names: Vec<&str> = listeners
        .iter()
        .map(|l| l["name"].as_str().expect("a listener name"))
        .collect();
    assert_eq!(
        names,
        [
            "tcp-default",
            "udp-default",
            "mqtt-default",
            "http-default",
            "rtmp-default",
            "coap-default"
        ],
        "{doc}"
    );
    assert_eq!(listeners[0]["protocol"], "tcp", "{doc}");
    assert_eq!(listeners[0]["max_frame_bytes"], 4096, "{doc}");
    assert_eq!(listeners[1]["protocol"], "udp", "{doc}");
    assert_eq!(listeners[2]["protocol"], "mqtt", "{doc}");
    assert_eq!(listeners[3]["protocol"], "http", "{doc}");
    assert_eq!(doc["routes"], Value::Array(Vec::new()), "{doc}");
}

#[test]
fn shoalctl_lists_the_routes_of_a_config() {
    let config = checked_only()
        .route(Route::echo())
        .route(Route::dropping("mute", "devices/noisy/up"));
    let out = run_on_file(
        SHOALCTL,
        &["-o", "json", "config", "check"],
        &config.to_string(),
    );
    out.assert_exit_code(0);
    let doc = parse_json(&out);
    let routes: Vec<(&str, &str)> = doc["routes"]
        .as_array()
        .expect("a route array")
        .iter()
        .map(|r| {
            let field = |key: &str| r[key].as_str().expect("a string");
            (field("name"), field("filter"))
        })
        .collect();
    assert_eq!(
        routes,
        [("echo", "devices/+/up"), ("mute", "devices/noisy/up")],
        "{doc}"
    );
}

#[test]
fn shoalctl_refuses_a_bad_config_and_names_the_place() {
    let out = run_on_file(SHOALCTL, &["config", "check"], &bad_bind_config());
    assert_invalid_input(
        &out,
        &["shoalctl:", "listener[0]", "\"tcp-meters\"", "99999"],
    );
    // The same in JSON mode: an error is never printed as a document.
    let out = run_on_file(
        SHOALCTL,
        &["-o", "json", "config", "check"],
        &bad_bind_config(),
    );
    assert_invalid_input(&out, &["listener[0]"]);
}

#[test]
fn shoalctl_refuses_a_file_it_cannot_read() {
    assert_refuses_a_missing_file(SHOALCTL, &["config", "check"]);
}

// ----- shoalctl figures ------------------------------------------------

/// A data plane (stats every 200 ms) with device `meter` on one core, its
/// one message echoed; returns the log lines that carry `core=` once
/// stats show the message, and the core of `meter`.
fn figure_lines_of_a_running_data_plane() -> (Vec<LogLine>, usize) {
    let dp = Dataplane::start(Config::tcp().route(Route::echo()));
    let mut meter = TcpDevice::login(&dp, "meter");
    let meter_core = dp.device_core("meter", WAIT);
    meter.assert_echo(b"reading 1");
    dp.wait_for_stats("the echo", WAIT, |s| {
        s.sum("msgs_in") >= 1 && s.sum("msgs_out") >= 1
    });
    let lines = dp.log().lines();
    let figures = lines.into_iter().filter(|l| l.text.contains("core="));
    (figures.collect(), meter_core)
}

#[test]
fn shoalctl_summarises_the_figure_lines_of_a_data_plane() {
    let (lines, meter_core) = figure_lines_of_a_running_data_plane();
    let input: String = lines.iter().map(|l| format!("{}\n", l.text)).collect();

    // What the harness reads from the same lines: the last one per core.
    let expected: BTreeMap<usize, CoreStats> = lines
        .iter()
        .filter_map(CoreStats::parse)
        .map(|stats| (stats.core, stats))
        .collect();
    assert_eq!(expected.len(), CORES, "stats from every core: {lines:#?}");

    let out = run_bin(SHOALCTL, &["-o", "json", "figures"], input.as_bytes(), WAIT);
    out.assert_exit_code(0);
    let doc = parse_json(&out);
    let entries = doc.as_array().expect("an array of cores");
    assert_eq!(entries.len(), CORES, "one entry per core: {doc}");
    for (entry, (core, stats)) in entries.iter().zip(&expected) {
        for key in ["core", "conns", "msgs_in"] {
            let shown = entry[key]
                .as_str()
                .unwrap_or_else(|| panic!("core {core}: no {key:?} in {entry}"));
            let read = if key == "core" {
                *core as u64
            } else {
                stats.get(key)
            };
            assert_eq!(shown, read.to_string(), "core {core}: {key}: {entry}");
        }
    }
    let meter = &entries[meter_core];
    assert_eq!(meter["conns"], "1", "{doc}");
    assert_eq!(meter["msgs_in"], "1", "{doc}");

    // The table shows a header and a row per core.
    let out = run_bin(SHOALCTL, &["figures"], input.as_bytes(), WAIT);
    out.assert_exit_code(0);
    let rows = table_rows(&out.stdout);
    assert_eq!(rows.len(), 1 + CORES, "{out:?}");
    assert_eq!(rows[0][..3], ["core", "conns", "msgs_in"], "{out:?}");
    let cores: Vec<&str> = rows[1..].iter().map(|r| r[0]).collect();
    assert_eq!(cores, ["0", "1"], "{out:?}");
}

#[test]
fn shoalctl_figures_without_figure_lines_is_invalid_input() {
    for stdin in ["", "shoal-dataplane ready cores=2\nno figures here\n"] {
        let out = run_bin(SHOALCTL, &["figures"], stdin.as_bytes(), WAIT);
        assert_invalid_input(&out, &["no figure lines"]);
    }
}

// ----- shoal-controlplane ----------------------------------------------

#[test]
fn controlplane_accepts_the_default_config() {
    let default = printed_default(CONTROLPLANE, &["default"]);
    assert_eq!(
        default,
        printed_default(SHOALCTL, &["config", "default"]),
        "both binaries print the same embedded default"
    );
    let out = run_on_file(CONTROLPLANE, &["check"], &default);
    out.assert_exit_code(0);
    assert!(
        out.stdout.contains(": ok (6 listeners, 0 routes)"),
        "{out:?}"
    );
}

#[test]
fn controlplane_refuses_a_bad_config_and_names_the_place() {
    let out = run_on_file(CONTROLPLANE, &["check"], &bad_bind_config());
    assert_invalid_input(&out, &["listener[0]", "\"tcp-meters\""]);

    let unknown_listener = checked_only().route(Route::echo().listener("nowhere"));
    let out = run_on_file(CONTROLPLANE, &["check"], &unknown_listener.to_string());
    assert_invalid_input(&out, &["route[0]", "\"echo\"", "\"nowhere\""]);
}

#[test]
fn controlplane_refuses_a_file_it_cannot_read() {
    assert_refuses_a_missing_file(CONTROLPLANE, &["check"]);
}
