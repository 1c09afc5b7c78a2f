//! What the smoke tests share: a real `shoal-dataplane` on a temporary
//! config of loopback listeners ([`Dataplane`], [`listener_toml`]), bounded
//! runs of the `shoal-bench` built with the tests ([`run_bench`]), the
//! checks on their output ([`run_json`], [`run_text`], [`run_failing`]) and
//! free loopback ports.
//!
//! ```text
//! Dataplane::start(name, listeners) ─ temp config ─ shoal-dataplane --cores 2
//!     stderr ─▶ reader thread ─▶ echoed, last STDERR_LINES kept ─▶ "ready" (≤ START_LIMIT)
//! run_bench("scenario --opt v", limit) ─ shoal-bench ─ stdout/stderr readers (≤ OUTPUT_LIMIT_BYTES each)
//!     ─ polled until it exits (≤ limit, else killed, reaped, failed) ─ Output
//! drop(Dataplane) ─ SIGTERM ─ exit (≤ STOP_LIMIT) or SIGKILL ─ reaped ─ config removed
//! ```
//!
//! The data plane binary is taken from the same target directory as the
//! test (build it first: `cargo build -p shoal-dataplane`, or
//! `cargo build --workspace --bins` as `.ci/run` does).
//!
//! Each test binary uses a part of this module; the rest is dead code there.
#![allow(dead_code)]

use std::{
    collections::VecDeque,
    io::{self, BufRead as _, BufReader, Read},
    net::{TcpListener, UdpSocket},
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc, Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

/// No bench run of the smoke tests outlives this unless a test says so.
pub(crate) const BENCH_LIMIT: Duration = Duration::from_secs(60);
/// How long the data plane gets to say it is ready.
const START_LIMIT: Duration = Duration::from_secs(20);
/// How long the data plane gets to exit after SIGTERM before SIGKILL.
const STOP_LIMIT: Duration = Duration::from_secs(10);
/// The line the data plane logs once it serves.
const READY_LINE: &str = "shoal-dataplane ready";
/// The data plane's last stderr lines kept for failure messages; older
/// lines are dropped (and counted).
const STDERR_LINES: usize = 200;
/// Bytes kept of each of a bench run's stdout and stderr; the rest is read
/// and dropped (and counted) so that the run never blocks on a full pipe.
const OUTPUT_LIMIT_BYTES: u64 = 4 << 20;
/// How often a running process is polled.
const POLL: Duration = Duration::from_millis(20);

/// `127.0.0.1:port`.
pub(crate) fn loopback(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// A loopback TCP port nothing listens on (at the time of the call).
pub(crate) fn free_tcp_port() -> u16 {
    let [port] = free_tcp_ports();
    port
}

/// `N` distinct loopback TCP ports nothing listens on (at the time of the
/// call): all are held at once while they are picked.
pub(crate) fn free_tcp_ports<const N: usize>() -> [u16; N] {
    let listeners: [TcpListener; N] = std::array::from_fn(|_| {
        TcpListener::bind("127.0.0.1:0").expect("bind a loopback TCP port")
    });
    listeners.map(|l| {
        l.local_addr()
            .expect("a bound socket has an address")
            .port()
    })
}

/// A loopback UDP port nothing is bound to (at the time of the call).
pub(crate) fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind a loopback UDP port")
        .port()
}

/// A workspace binary next to this test's own target directory
/// (`<target>/debug/deps/<test>` → `<target>/debug/<name>`).
fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    let deps = exe.parent().expect("the test lives in a directory");
    let profile = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().unwrap_or(deps)
    } else {
        deps
    };
    let bin = profile.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build -p {name}` (or `cargo build --workspace --bins`) first",
        bin.display()
    );
    bin
}

/// The last lines a process wrote, at most [`STDERR_LINES`].
#[derive(Debug, Default)]
struct LineTail {
    lines: VecDeque<String>,
    dropped: u64,
}

impl LineTail {
    fn push(&mut self, line: String) {
        if self.lines.len() == STDERR_LINES {
            self.lines.pop_front();
            self.dropped += 1;
        }
        self.lines.push_back(line);
    }

    fn render(&self) -> String {
        let mut text = if self.dropped > 0 {
            format!("({} earlier lines dropped)\n", self.dropped)
        } else {
            String::new()
        };
        for line in &self.lines {
            text.push_str(line);
            text.push('\n');
        }
        text
    }
}

/// One anonymous (`auth = "none"`) listener on `127.0.0.1:port`, with
/// `settings` (TOML lines) added, for [`Dataplane::start`].
pub(crate) fn listener_toml(name: &str, protocol: &str, port: u16, settings: &str) -> String {
    format!(
        "[[listener]]\nname = \"{name}\"\nprotocol = \"{protocol}\"\n\
         bind = \"127.0.0.1:{port}\"\nauth = \"none\"\n{settings}\n"
    )
}

/// A running `shoal-dataplane` (`--cores 2`, no periodic stats) on a
/// temporary config file; stopped, reaped and its config removed on drop.
#[derive(Debug)]
pub(crate) struct Dataplane {
    child: Child,
    config: PathBuf,
    stderr: Arc<Mutex<LineTail>>,
}

impl Dataplane {
    /// Writes a config of `listeners` ([`listener_toml`]) and a 1 s drain
    /// to a temporary file named after `name`, starts the data plane on it
    /// and waits (at most [`START_LIMIT`]) for its ready line; panics with
    /// its stderr if it does not come.
    pub(crate) fn start(name: &str, listeners: &[String]) -> Self {
        static STARTED: AtomicU64 = AtomicU64::new(0);
        let config = std::env::temp_dir().join(format!(
            "shoal-bench-{name}-{}-{}.toml",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        let toml = format!(
            "[runtime]\ndrain_timeout = \"1s\"\n\n{}",
            listeners.join("\n")
        );
        std::fs::write(&config, toml).unwrap_or_else(|e| panic!("write {}: {e}", config.display()));
        let bin = workspace_bin("shoal-dataplane");
        let mut child = Command::new(&bin)
            .args(["--cores", "2", "--stats-interval", "0s", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let pipe = child.stderr.take().expect("stderr is piped");
        let stderr = Arc::new(Mutex::new(LineTail::default()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let tail = Arc::clone(&stderr);
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                eprintln!("shoal-dataplane: {line}");
                if line.contains(READY_LINE) {
                    let _ = ready_tx.send(());
                }
                tail.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        // Built before the wait, so that a failed start is still stopped.
        let dataplane = Self {
            child,
            config,
            stderr,
        };
        match ready_rx.recv_timeout(START_LIMIT) {
            Ok(()) => dataplane,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                "shoal-dataplane did not become ready within {START_LIMIT:?}; stderr:\n{}",
                dataplane.stderr()
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                "shoal-dataplane closed its stderr before it was ready; stderr:\n{}",
                dataplane.stderr()
            ),
        }
    }

    /// A data plane with one listener ([`listener_toml`]) on `port`,
    /// named `{protocol}-smoke`, and the listener's address.
    pub(crate) fn start_one(protocol: &str, port: u16, settings: &str) -> (Self, String) {
        let name = format!("{protocol}-smoke");
        let dp = Self::start(&name, &[listener_toml(&name, protocol, port, settings)]);
        (dp, loopback(port))
    }

    /// The process id, as `--server-pid` takes it.
    pub(crate) fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// The last lines the data plane wrote to stderr.
    pub(crate) fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .render()
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap_or(libc::pid_t::MAX);
        // SAFETY: plain syscall on the pid of a child this test started and
        // has not reaped yet, so the pid cannot have been reused.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_LIMIT;
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(POLL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

/// Reads `pipe` to its end on a thread, keeping the first
/// [`OUTPUT_LIMIT_BYTES`] and a note of how many more were dropped.
fn collect(pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut pipe = pipe;
        let mut kept = Vec::new();
        let _ = (&mut pipe).take(OUTPUT_LIMIT_BYTES).read_to_end(&mut kept);
        let dropped = io::copy(&mut pipe, &mut io::sink()).unwrap_or(0);
        if dropped > 0 {
            kept.extend_from_slice(format!("\n({dropped} more bytes dropped)\n").as_bytes());
        }
        kept
    })
}

/// Runs `shoal-bench` with `args` (split at whitespace, so no argument
/// holds any) and returns its output; kills it and fails the test if it
/// runs longer than `limit`.
pub(crate) fn run_bench(args: &str, limit: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal-bench"))
        .args(args.split_whitespace())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start shoal-bench: {e}"));
    let stdout = collect(child.stdout.take().expect("stdout is piped"));
    let stderr = collect(child.stderr.take().expect("stderr is piped"));
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() <= deadline => thread::sleep(POLL),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                let stderr = stderr.join().unwrap_or_default();
                panic!(
                    "shoal-bench {args} did not finish within {limit:?}; stderr:\n{}",
                    String::from_utf8_lossy(&stderr)
                );
            }
            Err(e) => panic!("wait for shoal-bench: {e}"),
        }
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// The JSON report on a run's stdout, whether or not the run succeeded.
pub(crate) fn parse_report(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "report is not JSON ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// The JSON report of a run that must have succeeded.
pub(crate) fn json_report(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "shoal-bench failed: {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    parse_report(output)
}

/// Runs `shoal-bench` with `args` (see [`run_bench`]) and returns its JSON
/// report; the run must succeed.
pub(crate) fn run_json(args: &str, limit: Duration) -> Value {
    json_report(&run_bench(args, limit))
}

/// Runs `shoal-bench` with `args` (see [`run_bench`]) and returns its text
/// report (stdout); the run must succeed and show latency percentiles.
pub(crate) fn run_text(args: &str, limit: Duration) -> String {
    let output = run_bench(args, limit);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("latency us  p50"), "{stdout}");
    stdout
}

/// Runs `shoal-bench` with `args` (see [`run_bench`]) and returns its
/// stderr; the run must fail, and without a panic.
pub(crate) fn run_failing(args: &str, limit: Duration) -> String {
    failure_stderr(&run_bench(args, limit))
}

/// The stderr of a run that must have failed, and without a panic.
pub(crate) fn failure_stderr(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "the run succeeded: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// Asserts that every field at the JSON `pointers` of `report` is 0 (a
/// missing field is not).
pub(crate) fn assert_zero(report: &Value, pointers: &[&str]) {
    for pointer in pointers {
        assert!(
            report.pointer(pointer).is_some_and(|v| *v == 0),
            "{pointer} is not 0: {report}"
        );
    }
}

/// Asserts that `text` holds every one of `parts`.
pub(crate) fn assert_contains(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "no {part:?} in: {text}");
    }
}

/// A number at a JSON pointer of `report`; fails the test if there is none.
pub(crate) fn count(report: &Value, pointer: &str) -> u64 {
    report
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{pointer} is not a count: {report}"))
}

/// A short run of a request/response scenario (`http-post`, `coap`):
/// `clients` clients (`clients_flag`) against `target` with `extra`
/// options, the server sampled. Checks what every such run must show:
/// every client connected, every request sent answered, none malformed,
/// no run error, latency figures in order, the server's cost per 1k
/// requests. Returns the report.
pub(crate) fn run_requests(
    scenario: &str,
    dp: &Dataplane,
    target: &str,
    clients_flag: &str,
    clients: u64,
    extra: &str,
) -> Value {
    let report = run_json(
        &format!(
            "{scenario} --target {target} --server-pid {} {clients_flag} {clients} \
             --warmup 200ms --duration 1s --drain 2s --json {extra}",
            dp.pid()
        ),
        BENCH_LIMIT,
    );
    assert_eq!(report["scenario"], scenario);
    assert_eq!(report["connections"]["established"], clients, "{report}");
    assert_zero(
        &report,
        &[
            "/connections/failed",
            "/run_errors/count",
            "/requests/unanswered",
            "/requests/malformed",
        ],
    );
    let answered = count(&report, "/requests/answered");
    assert!(answered > 0, "{report}");
    assert_eq!(count(&report, "/requests/sent"), answered, "{report}");
    assert!(report["measured"]["answered_per_s"].as_f64().unwrap() > 0.0);
    let latency = &report["latency_us"];
    assert!(count(latency, "/samples") > 0, "{report}");
    assert!(latency["p50"].as_u64() <= latency["p99"].as_u64());
    assert!(latency["p99"].as_u64() <= latency["max"].as_u64());
    assert!(
        report["server"]["cpu_s_per_1k_requests"].as_f64().is_some(),
        "{report}"
    );
    report
}
