//! Runs the real `shoal-bench flv-fanout` briefly against a real
//! `shoal-dataplane` (an RTMP and an HTTP listener on free loopback ports),
//! with HTTP-FLV and with RTMP viewers, and checks from the JSON report that
//! every viewer played the whole measured window. Not a speed test: a few
//! viewers of a 500 kbit/s stream for a second.
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
const RUN_LIMIT: Duration = Duration::from_secs(30);
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

/// A running data plane with an anonymous RTMP and HTTP listener; stopped
/// on drop.
struct Dataplane {
    child: Child,
    rtmp_port: u16,
    http_port: u16,
    config: PathBuf,
}

impl Dataplane {
    fn start() -> Self {
        let rtmp_port = free_port();
        let mut http_port = free_port();
        while http_port == rtmp_port {
            http_port = free_port();
        }
        let config = std::env::temp_dir().join(format!(
            "shoal-bench-flv-smoke-{}-{rtmp_port}.toml",
            std::process::id()
        ));
        std::fs::write(
            &config,
            format!(
                "[runtime]\ndrain_timeout = \"1s\"\n\n\
                 [[listener]]\nname = \"rtmp-smoke\"\nprotocol = \"rtmp\"\n\
                 bind = \"127.0.0.1:{rtmp_port}\"\nauth = \"none\"\nmax_connections = 1000\n\n\
                 [[listener]]\nname = \"http-smoke\"\nprotocol = \"http\"\n\
                 bind = \"127.0.0.1:{http_port}\"\nauth = \"none\"\nmax_connections = 1000\n\
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
            rtmp_port,
            http_port,
            config,
        };
        rx.recv_timeout(START_LIMIT)
            .expect("shoal-dataplane did not become ready");
        dataplane
    }

    fn rtmp(&self) -> String {
        format!("127.0.0.1:{}", self.rtmp_port)
    }

    fn http(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
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

/// A short fan-out run with 4 viewers (2 processes) of stream `name`.
fn fanout(dp: &Dataplane, proto: &str, name: &str) -> Value {
    let (rtmp, http, pid) = (dp.rtmp(), dp.http(), dp.pid());
    let report = json_report(&run_bench(&[
        "flv-fanout",
        "--rtmp-target",
        &rtmp,
        "--http-target",
        &http,
        "--proto",
        proto,
        "--stream",
        name,
        "--viewers",
        "4",
        "--procs",
        "2",
        "--threads",
        "1",
        "--bitrate",
        "500k",
        "--gop",
        "1s",
        "--preroll",
        "1200ms",
        "--warmup",
        "300ms",
        "--duration",
        "1s",
        "--drain",
        "500ms",
        "--source-addrs",
        "127.0.0.1-127.0.0.3",
        "--server-pid",
        &pid,
        "--json",
    ]));
    assert_eq!(report["scenario"], "flv-fanout");
    assert_eq!(report["load"]["proto"], proto);
    let connect = &report["connect"];
    assert_eq!(connect["established"], 4, "{report}");
    assert_eq!(connect["started"], 4, "{report}");
    assert_eq!(connect["failures"]["count"], 0, "{report}");
    let delivered = &report["delivered"];
    assert!(delivered["tags"].as_u64().unwrap() > 0, "{report}");
    assert!(delivered["bytes"].as_u64().unwrap() > 0, "{report}");
    // Tags stamped in the window arrived and were timed (on a loaded
    // machine a few may still be on their way when the drain ends).
    let expected = delivered["expected_probed_tags"].as_u64().unwrap();
    let probed = delivered["probed_tags"].as_u64().unwrap();
    assert!(probed > 0 && probed <= expected, "{report}");
    assert_eq!(report["latency_us"]["samples"].as_u64(), Some(probed));
    assert_eq!(report["skipped_tags"], 0, "{report}");
    assert_eq!(report["out_of_order_tags"], 0, "{report}");
    assert_eq!(report["malformed_tags"], 0, "{report}");
    assert_eq!(report["first_video_not_keyframe"], 0, "{report}");
    assert_eq!(report["no_video"], 0, "{report}");
    assert_eq!(report["disconnected_by_server"], 0, "{report}");
    assert!(report["publisher"]["error"].is_null(), "{report}");
    assert!(report["server"]["cpu_s"].as_f64().is_some(), "{report}");
    assert!(report["server"]["rss_end_kib"].as_u64().unwrap() > 0);
    report
}

#[test]
fn flv_fanout_against_the_data_plane() {
    let dp = Dataplane::start();
    fanout(&dp, "http-flv", "smoke-http");
    fanout(&dp, "rtmp", "smoke-rtmp");

    // Viewers on a port nothing listens on: counted, and the run fails.
    let (rtmp, pid) = (dp.rtmp(), dp.pid());
    let nowhere = format!("127.0.0.1:{}", free_port());
    let output = run_bench(&[
        "flv-fanout",
        "--rtmp-target",
        &rtmp,
        "--http-target",
        &nowhere,
        "--stream",
        "smoke-refused",
        "--viewers",
        "3",
        "--preroll",
        "100ms",
        "--server-pid",
        &pid,
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("no viewer could play"), "{stderr}");
    assert!(
        stderr.contains("ConnectionRefused") || stderr.contains("refused"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
