//! The workspace's binaries as processes: `shoal-dataplane` with its config
//! file and ports, a running instance ([`Dataplane`]), and one-shot runs of
//! any of the binaries ([`run_bin`], [`run_dataplane`]).

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::log::{core_of, has_field, Log};
use crate::stats::{CoreStats, Stats};
use crate::{CORES, READY_LINE, STATS_INTERVAL, STOPPED_LINE, WAIT};

/// How long a data plane gets to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the capture threads get to read the last output of a process
/// that has exited.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// Path of the workspace binary `name` built in the same target dir as the
/// running test (`<target>/debug/deps/<test> → <target>/debug/<name>`).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    let deps = exe
        .parent()
        .expect("the test executable lives in a directory");
    let profile_dir = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().unwrap_or(deps)
    } else {
        deps
    };
    let bin = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first",
        bin.display()
    );
    bin
}

/// Path of the `shoal-dataplane` binary (see [`workspace_bin`]).
pub fn dataplane_bin() -> PathBuf {
    workspace_bin("shoal-dataplane")
}

/// Starts `command` with `RUST_LOG=info`, the given stdin and both output
/// streams captured (echoed to the test's stderr as `tag`); returns the
/// child with its stderr and stdout logs.
pub(crate) fn spawn_captured(command: &mut Command, stdin: Stdio, tag: &str) -> (Child, Log, Log) {
    let mut child = command
        .env("RUST_LOG", "info")
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", command.get_program().to_string_lossy()));
    let pid = child.id();
    let stderr = Log::capture(
        child.stderr.take().expect("piped stderr"),
        format!("{tag} {pid}"),
    );
    let stdout = Log::capture(
        child.stdout.take().expect("piped stdout"),
        format!("{tag} {pid} stdout"),
    );
    (child, stderr, stdout)
}

// ----- temporary config files ------------------------------------------

/// A config file in the temp dir, removed on drop.
#[derive(Debug)]
pub struct TempConfig {
    path: PathBuf,
}

impl TempConfig {
    /// Writes `text` to a fresh file.
    pub fn new(text: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "shoal-e2e-{}-{}-{nanos}.toml",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, text).expect("write the config file");
        Self { path }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

// ----- free ports ------------------------------------------------------

/// `n` distinct loopback ports that were free for both TCP and UDP a
/// moment ago.
pub fn free_ports(n: usize) -> Vec<u16> {
    let mut held = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < n {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral tcp port");
        let port = tcp.local_addr().expect("local addr").port();
        // The same port must be free for UDP too: placeholders serve both.
        if let Ok(udp) = UdpSocket::bind(("127.0.0.1", port)) {
            ports.push(port);
            held.push((tcp, udp));
        }
    }
    ports
}

// ----- the data plane process ------------------------------------------

/// A running `shoal-dataplane --cores 2 --stats-interval 200ms --config ...`,
/// killed on drop if it is still running.
#[derive(Debug)]
pub struct Dataplane {
    child: Child,
    stderr: Log,
    stdout: Log,
    ports: Vec<u16>,
    status: Option<ExitStatus>,
    _config: TempConfig,
}

impl Dataplane {
    /// Starts the data plane with `config` (TOML text or a
    /// [`Config`](crate::Config)), in which `@port0@`, `@port1@`, ... are
    /// replaced by free loopback ports, and waits for its ready line. A
    /// start that loses a port to another process is retried with fresh
    /// ports.
    pub fn start(config: impl fmt::Display) -> Self {
        let config = config.to_string();
        let wanted = (0..16)
            .filter(|i| config.contains(&port_placeholder(*i)))
            .max()
            .map_or(0, |last| last + 1);
        let mut last_failure = String::new();
        for _attempt in 0..5 {
            let ports = free_ports(wanted);
            let mut text = config.clone();
            for (i, port) in ports.iter().enumerate() {
                text = text.replace(&port_placeholder(i), &port.to_string());
            }
            let mut dp = Self::spawn(&text, ports);
            match dp.stderr.wait_until(READY_TIMEOUT, |lines| {
                lines
                    .iter()
                    .any(|l| l.text.contains(READY_LINE))
                    .then_some(())
            }) {
                Ok(()) => return dp,
                Err(why) => {
                    eprintln!("not ready ({why}); threads:\n{}", thread_states(dp.pid()));
                    let status = dp.exit_or_kill(Duration::from_secs(5));
                    last_failure = format!("{why}; exit {status}:\n{}", dp.stderr.text());
                    if !last_failure.contains("cannot bind") {
                        break;
                    }
                }
            }
        }
        panic!("the data plane did not start: {last_failure}");
    }

    fn spawn(config: &str, ports: Vec<u16>) -> Self {
        let file = TempConfig::new(config);
        let (child, stderr, stdout) = spawn_captured(
            Command::new(dataplane_bin())
                .arg("--cores")
                .arg(CORES.to_string())
                .arg("--stats-interval")
                .arg(STATS_INTERVAL)
                .arg("--config")
                .arg(file.path()),
            Stdio::null(),
            "dataplane",
        );
        Self {
            child,
            stderr,
            stdout,
            ports,
            status: None,
            _config: file,
        }
    }

    /// Rewrites the config file with `config` (placeholders get the ports
    /// already chosen; new placeholders get free ports), sends SIGHUP and
    /// waits for the outcome. Returns the line that says it: `config
    /// reloaded ...` or `config reload refused ...`.
    pub fn reload(&mut self, config: impl fmt::Display) -> String {
        let mut text = config.to_string();
        let wanted = (0..16)
            .filter(|i| text.contains(&port_placeholder(*i)))
            .max()
            .map_or(0, |last| last + 1);
        if wanted > self.ports.len() {
            let extra = free_ports(wanted + self.ports.len())
                .into_iter()
                .filter(|p| !self.ports.contains(p))
                .take(wanted - self.ports.len())
                .collect::<Vec<_>>();
            self.ports.extend(extra);
        }
        for (i, port) in self.ports.iter().enumerate() {
            text = text.replace(&port_placeholder(i), &port.to_string());
        }
        std::fs::write(self._config.path(), text).expect("rewrite the config file");
        let outcomes = |lines: &[crate::LogLine]| {
            lines
                .iter()
                .filter(|l| l.text.contains("config reload"))
                .count()
        };
        let before = outcomes(&self.stderr.lines());
        self.signal(libc::SIGHUP);
        self.stderr
            .wait_until(READY_TIMEOUT, |lines| {
                (outcomes(lines) > before).then(|| {
                    lines
                        .iter()
                        .rfind(|l| l.text.contains("config reload"))
                        .map(|l| l.text.clone())
                        .unwrap_or_default()
                })
            })
            .unwrap_or_else(|why| panic!("no outcome of the reload ({why})"))
    }

    /// The port that replaced `@port{i}@`.
    pub fn port(&self, i: usize) -> u16 {
        self.ports[i]
    }

    /// `127.0.0.1:` the port that replaced `@port{i}@`.
    pub fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port(i)))
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its stderr (the log).
    pub fn log(&self) -> &Log {
        &self.stderr
    }

    /// Its stdout.
    pub fn stdout(&self) -> &Log {
        &self.stdout
    }

    /// Log lines so far that contain `pattern`.
    pub fn logs_matching(&self, pattern: &str) -> Vec<String> {
        self.stderr
            .lines()
            .into_iter()
            .filter(|l| l.text.contains(pattern))
            .map(|l| l.text)
            .collect()
    }

    /// Waits for a log line containing `pattern`; returns it.
    pub fn wait_for_log(&self, pattern: &str, timeout: Duration) -> String {
        self.wait_for_line(pattern, timeout, |_| true)
    }

    /// Waits for a log line containing `pattern` for which `also` holds.
    pub fn wait_for_line(
        &self,
        pattern: &str,
        timeout: Duration,
        also: impl Fn(&str) -> bool,
    ) -> String {
        self.stderr
            .wait_until(timeout, |lines| {
                lines
                    .iter()
                    .find(|l| l.text.contains(pattern) && also(&l.text))
                    .map(|l| l.text.clone())
            })
            .unwrap_or_else(|why| panic!("no log line with {pattern:?} ({why})"))
    }

    /// Waits until `count` log lines contain `pattern`; returns them.
    pub fn wait_for_logs(&self, pattern: &str, count: usize, timeout: Duration) -> Vec<String> {
        self.stderr
            .wait_until(timeout, |lines| {
                let found: Vec<String> = lines
                    .iter()
                    .filter(|l| l.text.contains(pattern))
                    .map(|l| l.text.clone())
                    .collect();
                (found.len() >= count).then_some(found)
            })
            .unwrap_or_else(|why| {
                let seen = self.logs_matching(pattern).len();
                panic!("wanted {count} log lines with {pattern:?}, saw {seen} ({why})")
            })
    }

    /// The core whose thread logged `device online ... device=ID` (TCP or
    /// UDP), waiting for the line.
    pub fn device_core(&self, device: &str, timeout: Duration) -> usize {
        let line = self.wait_for_line("device online", timeout, |l| has_field(l, "device", device));
        core_of(&line).unwrap_or_else(|| panic!("not logged by a core thread: {line}"))
    }

    /// The latest stats line of every core, each read after `since`.
    pub fn stats_after(&self, since: Instant, timeout: Duration) -> Stats {
        self.stderr
            .wait_until(timeout, |lines| {
                let mut latest: Vec<Option<CoreStats>> = vec![None; CORES];
                for line in lines.iter().rev().take_while(|l| l.at > since) {
                    if let Some(s) = CoreStats::parse(line) {
                        if let Some(slot) = latest.get_mut(s.core) {
                            if slot.is_none() {
                                *slot = Some(s);
                            }
                        }
                    }
                }
                latest.into_iter().collect::<Option<Vec<_>>>()
            })
            .map(|cores| Stats { cores })
            .unwrap_or_else(|why| panic!("no fresh stats line from every core ({why})"))
    }

    /// Stats printed after this call.
    pub fn stats(&self) -> Stats {
        self.stats_after(Instant::now(), Duration::from_secs(5))
    }

    /// Waits for stats (printed after this call) for which `done` holds.
    pub fn wait_for_stats(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Stats) -> bool,
    ) -> Stats {
        let deadline = Instant::now() + timeout;
        let mut since = Instant::now();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let stats = self.stats_after(since, left.max(Duration::from_secs(1)));
            if done(&stats) {
                return stats;
            }
            assert!(
                Instant::now() < deadline,
                "stats never showed {what} within {timeout:?}; last:\n{stats}"
            );
            since = stats.cores.iter().map(|c| c.at).max().unwrap_or(since);
        }
    }

    /// Waits (up to [`WAIT`]) for stats in which the counter `name`,
    /// summed over the cores, has reached `count`, and asserts that it did
    /// not go past it.
    pub fn wait_for_sum(&self, name: &str, count: u64) -> Stats {
        let stats =
            self.wait_for_stats(&format!("{name} = {count}"), WAIT, |s| s.sum(name) >= count);
        assert_eq!(stats.sum(name), count, "{name}:\n{stats}");
        stats
    }

    /// Sends SIGTERM.
    pub fn sigterm(&mut self) {
        self.signal(libc::SIGTERM);
    }

    /// Sends `signal` to the process, unless it has been reaped already.
    pub fn signal(&mut self, signal: libc::c_int) {
        assert!(self.try_status().is_none(), "the data plane already exited");
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) only sends a signal; the pid is our own child,
        // which has not been reaped (checked above), so it names no other
        // process.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill: {}", io::Error::last_os_error());
    }

    fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Waits up to `timeout` for the process to exit, then kills it.
    fn exit_or_kill(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.try_status() {
                return status;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let status = self.child.wait().expect("wait for the killed data plane");
        self.status = Some(status);
        status
    }

    /// Waits for the process to exit and for its output to be read.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.try_status() {
                break status;
            }
            if Instant::now() >= deadline {
                panic!("the data plane did not exit within {timeout:?}");
            }
            thread::sleep(Duration::from_millis(10));
        };
        // The capture threads end with the pipes; give them a moment.
        for log in [&self.stderr, &self.stdout] {
            let _ = log.wait_until(OUTPUT_DRAIN, |_| None::<()>);
        }
        status
    }

    /// Waits for the process to exit and asserts a clean stop: exit code 0
    /// and the stopped line last in the log.
    pub fn expect_clean_exit(&mut self, timeout: Duration) {
        let status = self.wait_exit(timeout);
        assert_eq!(status.code(), Some(0), "{status}");
        let last = self.last_log_line();
        assert!(last.contains(STOPPED_LINE), "last line: {last}");
    }

    /// The latest log line, empty when there is none.
    pub fn last_log_line(&self) -> String {
        self.stderr
            .lines()
            .pop()
            .map(|l| l.text)
            .unwrap_or_default()
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Name, state and wait channel of every thread of process `pid`, from
/// /proc (for the message of a data plane that does not start).
pub fn thread_states(pid: u32) -> String {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return format!("process {pid} is gone");
    };
    let mut out = String::new();
    for task in tasks.flatten() {
        let path = task.path();
        let read = |name: &str| {
            std::fs::read_to_string(path.join(name))
                .unwrap_or_default()
                .trim()
                .to_owned()
        };
        let stat = read("stat");
        let state = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or("?")
            .to_owned();
        out.push_str(&format!(
            "  {} {:?} state={state} wchan={}\n",
            task.file_name().to_string_lossy(),
            read("comm"),
            read("wchan")
        ));
    }
    out
}

fn port_placeholder(i: usize) -> String {
    format!("@port{i}@")
}

/// What a finished run of a binary printed.
#[derive(Debug)]
pub struct RunOutput {
    /// Its exit status.
    pub status: ExitStatus,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

impl RunOutput {
    /// Asserts that the run exited with `code`.
    pub fn assert_exit_code(&self, code: i32) {
        assert_eq!(self.status.code(), Some(code), "{self:?}");
    }
}

/// Runs the workspace binary `name` with `args` to its end, with `stdin`
/// written to its standard input, killing it after `timeout`.
pub fn run_bin(
    name: &str,
    args: &[impl AsRef<OsStr>],
    stdin: &[u8],
    timeout: Duration,
) -> RunOutput {
    let (mut child, stderr, stdout) = spawn_captured(
        Command::new(workspace_bin(name)).args(args),
        Stdio::piped(),
        name,
    );
    // Written from a thread: a binary that exits without reading all of
    // it must not block the test.
    let mut input = child.stdin.take().expect("piped stdin");
    let text = stdin.to_vec();
    let writer = thread::spawn(move || {
        let _ = input.write_all(&text);
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let args: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
            panic!("{name} {args:?} did not exit within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let _ = writer.join();
    for log in [&stderr, &stdout] {
        let _ = log.wait_until(OUTPUT_DRAIN, |_| None::<()>);
    }
    RunOutput {
        status,
        stdout: stdout.text(),
        stderr: stderr.text(),
    }
}

/// Runs `shoal-dataplane` with `args` (and `--config FILE` holding
/// `config`, if given) to its end, killing it after `timeout`.
pub fn run_dataplane(args: &[&str], config: Option<&str>, timeout: Duration) -> RunOutput {
    let file = config.map(TempConfig::new);
    let mut all: Vec<OsString> = args.iter().map(OsString::from).collect();
    if let Some(f) = &file {
        all.push("--config".into());
        all.push(f.path().into());
    }
    run_bin("shoal-dataplane", &all, b"", timeout)
}
