//! Runs the real `shoal-bench mqtt-conn` and `mqtt-pubsub` briefly against
//! a real `shoal-dataplane` (its MQTT listener on a free loopback port) and
//! checks that connections were held and messages delivered. Not a speed
//! test: the loads are tiny.
//!
//! The data plane binary is taken from the same target directory as this
//! test (build it first: `cargo build -p shoal-dataplane`, or
//! `cargo build --workspace --bins` as `.ci/run` does).

use std::{
    io::{BufRead as _, BufReader},
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

/// No bench run outlives this.
const RUN_LIMIT: Duration = Duration::from_secs(60);
/// How long the data plane gets to say it is ready.
const START_LIMIT: Duration = Duration::from_secs(20);

/// `shoal-dataplane` next to this test's own target directory.
fn dataplane_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    let deps = exe.parent().expect("the test lives in a directory");
    let profile = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().unwrap_or(deps)
    } else {
        deps
    };
    let bin = profile.join(format!("shoal-dataplane{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build -p shoal-dataplane` (or `cargo build --workspace --bins`) first",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running data plane with one anonymous MQTT listener; stopped on drop.
struct Dataplane {
    child: Child,
    port: u16,
    config: PathBuf,
}

impl Dataplane {
    fn start() -> Self {
        let port = free_port();
        let config = std::env::temp_dir().join(format!(
            "shoal-bench-mqtt-smoke-{}-{port}.toml",
            std::process::id()
        ));
        std::fs::write(
            &config,
            format!(
                "[runtime]\ndrain_timeout = \"1s\"\n\n\
                 [[listener]]\nname = \"mqtt-smoke\"\nprotocol = \"mqtt\"\n\
                 bind = \"127.0.0.1:{port}\"\nauth = \"none\"\nmax_connections = 10000\n\
                 max_frame_bytes = 65000\nidle_timeout = \"5m\"\n"
            ),
        )
        .unwrap();
        let mut child = Command::new(dataplane_bin())
            .args(["--cores", "2", "--stats-interval", "0s", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("shoal-dataplane: {line}");
                if line.contains("shoal-dataplane ready") {
                    let _ = tx.send(());
                }
            }
        });
        let dataplane = Self {
            child,
            port,
            config,
        };
        rx.recv_timeout(START_LIMIT)
            .expect("shoal-dataplane did not become ready");
        dataplane
    }

    fn target(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        // SAFETY: plain syscall on the pid of a child this test started.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

/// Runs `shoal-bench` with `args`, killing it if it outlives the limit.
fn run_bench(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal-bench"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + RUN_LIMIT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("shoal-bench did not finish within {RUN_LIMIT:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn json_report(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "shoal-bench failed: {}\nstdout: {stdout}\nstderr: {stderr}",
        output.status
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("report is not JSON ({e}): {stdout}\nstderr: {stderr}"))
}

fn pubsub(dp: &Dataplane, extra: &[&str]) -> Value {
    let target = dp.target();
    let pid = dp.pid();
    let mut args = vec![
        "mqtt-pubsub",
        "--target",
        &target,
        "--server-pid",
        &pid,
        "--threads",
        "2",
        "--warmup",
        "200ms",
        "--duration",
        "1s",
        "--drain",
        "3s",
        "--settle",
        "300ms",
        "--json",
    ];
    args.extend_from_slice(extra);
    let report = json_report(&run_bench(&args));
    assert_eq!(report["scenario"], "mqtt-pubsub");
    assert_eq!(report["connections"]["failed"], 0, "{report}");
    assert_eq!(report["run_errors"]["count"], 0, "{report}");
    let messages = &report["messages"];
    let expected = messages["expected_deliveries"].as_u64().unwrap();
    assert!(expected > 0, "{report}");
    assert_eq!(messages["delivered"].as_u64(), Some(expected), "{report}");
    assert_eq!(messages["lost"], 0, "{report}");
    assert_eq!(messages["malformed"], 0, "{report}");
    assert_eq!(messages["duplicate_or_reordered"], 0, "{report}");
    assert_eq!(messages["unacknowledged"], 0, "{report}");
    assert!(report["measured"]["delivered"].as_u64().unwrap() > 0);
    assert!(
        report["latency_us"]["samples"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert!(report["server"]["cpu_s"].as_f64().is_some(), "{report}");
    report
}

#[test]
fn mqtt_scenarios_against_the_data_plane() {
    let dp = Dataplane::start();
    let target = dp.target();
    let pid = dp.pid();

    // Idle connections from two processes.
    let report = json_report(&run_bench(&[
        "mqtt-conn",
        "--target",
        &target,
        "--connections",
        "60",
        "--procs",
        "2",
        "--threads",
        "1",
        "--hold",
        "300ms",
        "--settle",
        "100ms",
        "--source-addrs",
        "127.0.0.1-127.0.0.3",
        "--server-pid",
        &pid,
        "--json",
    ]));
    assert_eq!(report["scenario"], "mqtt-conn");
    assert_eq!(report["connections"]["established"], 60, "{report}");
    assert_eq!(report["connections"]["failed"], 0, "{report}");
    assert_eq!(report["open_at_end"], 60, "{report}");
    assert_eq!(report["closed_by_server"], 0, "{report}");
    assert_eq!(report["unexpected_bytes_received"], 0, "{report}");
    assert!(report["connections_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(report["handshake_us"]["samples"], 60, "{report}");
    assert!(report["server"]["rss_held_kib"].as_u64().unwrap() > 0);

    // Fan-in at a fixed rate, QoS 1 (PUBACKs both ways), MQTT 5.
    let report = pubsub(
        &dp,
        &[
            "--mode",
            "fan-in",
            "--publishers",
            "6",
            "--subscribers",
            "2",
            "--qos",
            "1",
            "--rate",
            "600/s",
            "--protocol",
            "5",
        ],
    );
    assert_eq!(report["load"]["subscribers_per_message"], 1);
    // 600 msg/s for 1.2 s.
    let published = report["messages"]["published"].as_u64().unwrap();
    assert!((600..=800).contains(&published), "{report}");

    // Fan-out at max rate, QoS 0 and QoS 1, 1 KiB payloads.
    for qos in ["0", "1"] {
        let report = pubsub(
            &dp,
            &[
                "--mode",
                "fan-out",
                "--subscribers",
                "5",
                "--qos",
                qos,
                "--payload",
                "1024",
                "--rate",
                "0",
            ],
        );
        assert_eq!(report["load"]["subscribers_per_message"], 5);
        let published = report["messages"]["published"].as_u64().unwrap();
        assert_eq!(
            report["messages"]["expected_deliveries"].as_u64(),
            Some(published * 5)
        );
    }

    // Text report of a small fan-out.
    let output = run_bench(&[
        "mqtt-pubsub",
        "--target",
        &target,
        "--mode",
        "fan-out",
        "--subscribers",
        "3",
        "--rate",
        "100",
        "--warmup",
        "100ms",
        "--duration",
        "500ms",
        "--settle",
        "300ms",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("mqtt-pubsub fan-out"), "{stdout}");
    assert!(stdout.contains("latency us  p50"), "{stdout}");
    assert!(stdout.contains("lost 0"), "{stdout}");
}

#[test]
fn refused_connections_are_counted() {
    // A port nothing listens on.
    let target = format!("127.0.0.1:{}", free_port());
    let output = run_bench(&[
        "mqtt-conn",
        "--target",
        &target,
        "--connections",
        "3",
        "--hold",
        "100ms",
        "--settle",
        "10ms",
        "--connect-timeout",
        "1s",
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("no MQTT connection"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["connections"]["failed"], 3, "{report}");
    assert_eq!(
        report["connections"]["failures_by_kind"]["ConnectionRefused"],
        3
    );
}
