//! Runs the real `shoal-bench coap` briefly against a real
//! `shoal-dataplane` (a CoAP listener, `protocol = "coap"`, on a free
//! loopback UDP port) and checks the reports: requests answered 2.04, no
//! retransmission, timeout or error, latency figures. Not a speed test:
//! the loads are tiny.
//!
//! The data plane binary is taken from the same target directory as this
//! test (build it first: `cargo build -p shoal-dataplane`, or
//! `cargo build --workspace --bins` as `.ci/run` does).

use std::{
    io::{BufRead as _, BufReader},
    net::UdpSocket,
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

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running data plane with one anonymous CoAP listener; stopped on drop.
struct Dataplane {
    child: Child,
    port: u16,
    config: PathBuf,
}

impl Dataplane {
    fn start() -> Self {
        let port = free_udp_port();
        let config = std::env::temp_dir().join(format!(
            "shoal-bench-coap-smoke-{}-{port}.toml",
            std::process::id()
        ));
        std::fs::write(
            &config,
            format!(
                "[runtime]\ndrain_timeout = \"1s\"\n\n\
                 [[listener]]\nname = \"coap-smoke\"\nprotocol = \"coap\"\n\
                 bind = \"127.0.0.1:{port}\"\nauth = \"none\"\nmax_connections = 1000\n\
                 max_frame_bytes = 16384\nidle_timeout = \"5m\"\n"
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

/// One short `coap` run with `extra` options; checks what every run must
/// show and returns the report.
fn coap(dp: &Dataplane, devices: u64, extra: &[&str]) -> Value {
    let target = dp.target();
    let pid = dp.pid();
    let devices_arg = devices.to_string();
    let mut args = vec![
        "coap",
        "--target",
        &target,
        "--server-pid",
        &pid,
        "--devices",
        &devices_arg,
        "--warmup",
        "200ms",
        "--duration",
        "1s",
        "--drain",
        "2s",
        "--json",
    ];
    args.extend_from_slice(extra);
    let report = json_report(&run_bench(&args));
    assert_eq!(report["scenario"], "coap");
    assert_eq!(report["connections"]["established"], devices, "{report}");
    assert_eq!(report["connections"]["failed"], 0, "{report}");
    assert_eq!(report["run_errors"]["count"], 0, "{report}");
    let requests = &report["requests"];
    let answered = requests["answered"].as_u64().unwrap();
    assert!(answered > 0, "{report}");
    assert_eq!(requests["sent"].as_u64(), Some(answered), "{report}");
    assert_eq!(requests["success"].as_u64(), Some(answered), "{report}");
    assert_eq!(
        requests["by_status"]["2.04"].as_u64(),
        Some(answered),
        "{report}"
    );
    for zero in [
        "unanswered",
        "timeouts",
        "resets",
        "retransmissions",
        "malformed",
    ] {
        assert_eq!(requests[zero], 0, "{zero}: {report}");
    }
    assert!(report["measured"]["answered_per_s"].as_f64().unwrap() > 0.0);
    let latency = &report["latency_us"];
    assert!(latency["samples"].as_u64().unwrap() > 0, "{report}");
    assert!(latency["p50"].as_u64() <= latency["p99"].as_u64());
    assert!(latency["p99"].as_u64() <= latency["max"].as_u64());
    assert!(
        report["server"]["cpu_s_per_1k_requests"].as_f64().is_some(),
        "{report}"
    );
    report
}

#[test]
fn coap_against_the_data_plane() {
    let dp = Dataplane::start();

    // CON, closed loop, from two processes and three source addresses.
    let report = coap(
        &dp,
        20,
        &[
            "--procs",
            "2",
            "--threads",
            "1",
            "--source-addrs",
            "127.0.0.1-127.0.0.3",
        ],
    );
    assert_eq!(report["load"]["in_flight_per_client"], 1);

    // NON at a fixed rate: 400 requests/s for 1.2 s.
    let report = coap(&dp, 10, &["--non", "--rate", "400", "--payload", "512"]);
    let sent = report["requests"]["sent"].as_u64().unwrap();
    assert!((440..=520).contains(&sent), "{report}");

    // The text report.
    let target = dp.target();
    let output = run_bench(&[
        "coap",
        "--target",
        &target,
        "--devices",
        "3",
        "--warmup",
        "100ms",
        "--duration",
        "500ms",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("coap -> "), "{stdout}");
    assert!(stdout.contains("latency us  p50"), "{stdout}");
    assert!(stdout.contains("(2.04 x"), "{stdout}");
}

#[test]
fn a_silent_port_fails_the_ping() {
    // A UDP port nothing listens on: the kernel answers the ping with an
    // ICMP port unreachable, seen as a refused receive.
    let target = format!("127.0.0.1:{}", free_udp_port());
    let output = run_bench(&[
        "coap",
        "--target",
        &target,
        "--devices",
        "3",
        "--duration",
        "100ms",
        "--connect-timeout",
        "1s",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("no devices could be opened"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
