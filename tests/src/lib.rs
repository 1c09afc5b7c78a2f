//! Helpers for the end-to-end tests in `tests/`: start the real
//! `shoal-dataplane` binary with a config, watch its log, read its stats
//! lines, and drive it with plain std sockets acting as devices and
//! upstreams.
//!
//! Every wait here is bounded: a helper that runs out of time panics with
//! what it was waiting for, and the data plane's log is echoed to the test's
//! stderr (shown when a test fails).

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Cores every data plane of the suite runs with.
pub const CORES: usize = 2;

/// Stats interval passed to every data plane of the suite.
pub const STATS_INTERVAL: &str = "200ms";

/// How long a data plane gets to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// The ready line's marker.
pub const READY_LINE: &str = "shoal-dataplane ready";

/// The last line of a clean stop.
pub const STOPPED_LINE: &str = "shoal-dataplane stopped";

/// Path of the `shoal-dataplane` binary built in the same target dir as the
/// running test (`<target>/debug/deps/<test> → <target>/debug/shoal-dataplane`).
pub fn dataplane_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    let deps = exe
        .parent()
        .expect("the test executable lives in a directory");
    let profile_dir = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().unwrap_or(deps)
    } else {
        deps
    };
    let bin = profile_dir.join(format!("shoal-dataplane{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first",
        bin.display()
    );
    bin
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

// ----- captured output -------------------------------------------------

/// One line a process wrote, with the moment the test read it.
#[derive(Debug, Clone)]
pub struct LogLine {
    /// When the reader thread got it.
    pub at: Instant,
    /// The line, without its newline.
    pub text: String,
}

#[derive(Debug, Default)]
struct LogState {
    lines: Vec<LogLine>,
    /// The writer closed the stream (the process exited).
    closed: bool,
}

/// Lines of one output stream of a child process, filled by a reader
/// thread; waiters are woken on every new line.
#[derive(Debug, Clone, Default)]
pub struct Log {
    inner: Arc<(Mutex<LogState>, Condvar)>,
}

impl Log {
    /// Starts a thread that reads `from` line by line into a new log,
    /// echoing each line to the test's stderr with `tag`.
    fn capture(from: impl Read + Send + 'static, tag: String) -> Self {
        let log = Self::default();
        let writer = log.clone();
        thread::Builder::new()
            .name(format!("capture {tag}"))
            .spawn(move || {
                let mut reader = BufReader::new(from);
                let mut raw = Vec::new();
                loop {
                    raw.clear();
                    match reader.read_until(b'\n', &mut raw) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let text = String::from_utf8_lossy(&raw).trim_end().to_owned();
                            eprintln!("[{tag}] {text}");
                            writer.push(text);
                        }
                    }
                }
                writer.close();
            })
            .expect("start a capture thread");
        log
    }

    fn state(&self) -> MutexGuard<'_, LogState> {
        self.inner.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, text: String) {
        self.state().lines.push(LogLine {
            at: Instant::now(),
            text,
        });
        self.inner.1.notify_all();
    }

    fn close(&self) {
        self.state().closed = true;
        self.inner.1.notify_all();
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<LogLine> {
        self.state().lines.clone()
    }

    /// Every line so far, as text.
    pub fn text(&self) -> String {
        self.state()
            .lines
            .iter()
            .map(|l| l.text.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Whether the stream has ended.
    pub fn is_closed(&self) -> bool {
        self.state().closed
    }

    /// Waits until `select` holds, given every line so far, or the time is
    /// up or the stream ended without it; `Err` then says which.
    pub fn wait_until<T>(
        &self,
        timeout: Duration,
        mut select: impl FnMut(&[LogLine]) -> Option<T>,
    ) -> Result<T, &'static str> {
        let deadline = Instant::now() + timeout;
        let mut state = self.state();
        loop {
            if let Some(found) = select(&state.lines) {
                return Ok(found);
            }
            if state.closed {
                return Err("the process closed its output");
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("timed out");
            }
            state = self
                .inner
                .1
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

// ----- stats lines -----------------------------------------------------

/// Figures of one pool size class from a stats line
/// (`poolBYTES=IN_USE/ALLOCATED/CAPACITY/HIGH_WATER/EXHAUSTED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolFigures {
    /// Bytes per buffer of the class.
    pub buffer_bytes: u32,
    /// Buffers in use.
    pub in_use: u64,
    /// Buffers allocated.
    pub allocated: u64,
    /// The class's capacity.
    pub capacity: u64,
    /// Most buffers in use at once.
    pub high_water: u64,
    /// Requests the class could not serve.
    pub exhausted: u64,
}

/// One core's stats line, parsed.
#[derive(Debug, Clone)]
pub struct CoreStats {
    /// Core index.
    pub core: usize,
    counters: BTreeMap<String, u64>,
    /// Pool classes, smallest first.
    pub pools: Vec<PoolFigures>,
    /// When the line was read.
    pub at: Instant,
}

impl CoreStats {
    /// Parses the `core=N ...` part of a `shoal::stats` line; `None` when the
    /// line is not one.
    pub fn parse(line: &LogLine) -> Option<Self> {
        let (_, fields) = line.text.split_once(" shoal::stats: ")?;
        let mut counters = BTreeMap::new();
        let mut pools = Vec::new();
        for field in fields.split_whitespace() {
            let (key, value) = field.split_once('=')?;
            if let Some(bytes) = key.strip_prefix("pool") {
                let parts: Vec<u64> = value
                    .split('/')
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .ok()?;
                let [in_use, allocated, capacity, high_water, exhausted] = parts[..] else {
                    return None;
                };
                pools.push(PoolFigures {
                    buffer_bytes: bytes.parse().ok()?,
                    in_use,
                    allocated,
                    capacity,
                    high_water,
                    exhausted,
                });
            } else {
                counters.insert(key.to_owned(), value.parse().ok()?);
            }
        }
        let core = usize::try_from(*counters.get("core")?).ok()?;
        Some(Self {
            core,
            counters,
            pools,
            at: line.at,
        })
    }

    /// A counter or gauge by its name in the line (`conns`, `mesh_sent`, ...).
    pub fn get(&self, name: &str) -> u64 {
        *self
            .counters
            .get(name)
            .unwrap_or_else(|| panic!("stats line of core {} has no field {name:?}", self.core))
    }

    /// The pool class of `buffer_bytes`.
    pub fn pool(&self, buffer_bytes: u32) -> PoolFigures {
        *self
            .pools
            .iter()
            .find(|p| p.buffer_bytes == buffer_bytes)
            .unwrap_or_else(|| {
                panic!(
                    "core {} has no pool class of {buffer_bytes} bytes",
                    self.core
                )
            })
    }
}

/// The latest stats line of every core.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Indexed by core.
    pub cores: Vec<CoreStats>,
}

impl Stats {
    /// A counter summed over the cores.
    pub fn sum(&self, name: &str) -> u64 {
        self.cores.iter().map(|c| c.get(name)).sum()
    }

    /// One core's figures.
    pub fn core(&self, index: usize) -> &CoreStats {
        &self.cores[index]
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.cores {
            write!(f, "core {}:", c.core)?;
            for (k, v) in &c.counters {
                write!(f, " {k}={v}")?;
            }
            for p in &c.pools {
                write!(
                    f,
                    " pool{}={}/{}/{}/{}/{}",
                    p.buffer_bytes, p.in_use, p.allocated, p.capacity, p.high_water, p.exhausted
                )?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// The thread a log line came from (`main`, `shoal-core-0`, ...): the token
/// after the level.
pub fn thread_of(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace();
    words.find(|w| matches!(*w, "TRACE" | "DEBUG" | "INFO" | "WARN" | "ERROR"))?;
    words.next()
}

/// The core a log line came from, when a core thread wrote it.
pub fn core_of(line: &str) -> Option<usize> {
    thread_of(line)?.strip_prefix("shoal-core-")?.parse().ok()
}

/// Whether a log line carries the field `key=value` exactly (the value
/// plain or quoted, as the log prints it).
pub fn has_field(line: &str, key: &str, value: &str) -> bool {
    let plain = format!("{key}={value}");
    let quoted = format!("{key}={value:?}");
    line.split_whitespace().any(|w| w == plain || w == quoted)
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
    /// Starts the data plane with `config`, in which `@port0@`, `@port1@`,
    /// ... are replaced by free loopback ports, and waits for its ready
    /// line. A start that loses a port to another process is retried with
    /// fresh ports.
    pub fn start(config: &str) -> Self {
        let wanted = (0..16)
            .filter(|i| config.contains(&port_placeholder(*i)))
            .count();
        let mut last_failure = String::new();
        for _attempt in 0..5 {
            let ports = free_ports(wanted);
            let mut text = config.to_owned();
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
        let mut child = Command::new(dataplane_bin())
            .arg("--cores")
            .arg(CORES.to_string())
            .arg("--stats-interval")
            .arg(STATS_INTERVAL)
            .arg("--config")
            .arg(file.path())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start shoal-dataplane");
        let pid = child.id();
        let stderr = Log::capture(
            child.stderr.take().expect("piped stderr"),
            format!("dataplane {pid}"),
        );
        let stdout = Log::capture(
            child.stdout.take().expect("piped stdout"),
            format!("dataplane {pid} stdout"),
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
        let _ = self
            .stderr
            .wait_until(Duration::from_secs(2), |_| None::<()>);
        let _ = self
            .stdout
            .wait_until(Duration::from_secs(2), |_| None::<()>);
        status
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

fn port_placeholder(i: usize) -> String {
    format!("@port{i}@")
}

/// What a finished run of the binary printed.
#[derive(Debug)]
pub struct RunOutput {
    /// Its exit status.
    pub status: ExitStatus,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

/// Runs the binary with `args` (and `--config FILE` holding `config`, if
/// given) to its end, killing it after `timeout`.
pub fn run_dataplane(args: &[&str], config: Option<&str>, timeout: Duration) -> RunOutput {
    let file = config.map(TempConfig::new);
    let mut command = Command::new(dataplane_bin());
    command.args(args);
    if let Some(f) = &file {
        command.arg("--config").arg(f.path());
    }
    let mut child = command
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start shoal-dataplane");
    let pid = child.id();
    let stderr = Log::capture(
        child.stderr.take().expect("piped stderr"),
        format!("run {pid}"),
    );
    let stdout = Log::capture(
        child.stdout.take().expect("piped stdout"),
        format!("run {pid} stdout"),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("shoal-dataplane {args:?} did not exit within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    for log in [&stderr, &stdout] {
        let _ = log.wait_until(Duration::from_secs(2), |_| None::<()>);
    }
    RunOutput {
        status,
        stdout: stdout.text(),
        stderr: stderr.text(),
    }
}

// ----- devices ---------------------------------------------------------

/// How a connection ended, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// An orderly end of stream (FIN).
    Eof,
    /// A reset or another error.
    Reset,
}

/// A raw TCP device speaking the 2-byte big-endian length framing.
#[derive(Debug)]
pub struct TcpDevice {
    stream: TcpStream,
    /// Bytes read but not yet returned as frames.
    pending: Vec<u8>,
    /// Its device id, if it logged in.
    pub id: String,
}

/// Encodes one frame: 2-byte big-endian length, then the payload.
pub fn length_frame(payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(payload.len()).expect("payload fits a 2-byte length");
    let mut out = Vec::with_capacity(payload.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

impl TcpDevice {
    /// Connects and sends `id` as the login frame.
    pub fn connect(addr: SocketAddr, id: &str) -> Self {
        let mut device = Self::connect_raw(addr);
        device.send(id.as_bytes());
        device.id = id.to_owned();
        device
    }

    /// Connects without sending anything.
    pub fn connect_raw(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_nodelay(true).expect("set TCP_NODELAY");
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .expect("set a write timeout");
        Self {
            stream,
            pending: Vec::new(),
            id: String::new(),
        }
    }

    /// Its local address (what the data plane logs as `peer=`).
    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("local addr")
    }

    /// Sends one length-framed payload.
    pub fn send(&mut self, payload: &[u8]) {
        self.send_raw(&length_frame(payload));
    }

    /// Sends bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        if let Err(e) = self.try_send_raw(bytes) {
            panic!("device {:?}: write: {e}", self.id);
        }
    }

    /// Sends bytes as they are, reporting failure.
    pub fn try_send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads more bytes into `pending` until `deadline`: `Ok(0)` at end of
    /// stream, `Err(TimedOut)` when the time is up.
    fn fill(&mut self, deadline: Instant) -> io::Result<usize> {
        let mut chunk = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.pending.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn take_frame(&mut self) -> Option<Vec<u8>> {
        let header = self.pending.get(..2)?;
        let len = usize::from(u16::from_be_bytes([header[0], header[1]]));
        if self.pending.len() < 2 + len {
            return None;
        }
        let frame = self.pending[2..2 + len].to_vec();
        self.pending.drain(..2 + len);
        Some(frame)
    }

    /// The next frame's payload, or `None` when none came within `timeout`.
    /// Panics when the connection ends.
    pub fn try_recv_frame(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(frame) = self.take_frame() {
                return Some(frame);
            }
            match self.fill(deadline) {
                Ok(0) => panic!(
                    "device {:?}: connection closed while waiting for a frame",
                    self.id
                ),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => return None,
                Err(e) => panic!("device {:?}: read: {e}", self.id),
            }
        }
    }

    /// The next frame's payload; panics when none comes within `timeout`.
    pub fn recv_frame(&mut self, timeout: Duration) -> Vec<u8> {
        self.try_recv_frame(timeout)
            .unwrap_or_else(|| panic!("device {:?}: no frame within {timeout:?}", self.id))
    }

    /// The bytes read so far but not yet returned, or the next ones to
    /// arrive within `timeout` (for framings other than the length field).
    pub fn recv_bytes(&mut self, timeout: Duration) -> Vec<u8> {
        if self.pending.is_empty() {
            match self.fill(Instant::now() + timeout) {
                Ok(0) => panic!(
                    "device {:?}: connection closed while waiting for bytes",
                    self.id
                ),
                Ok(_) => {}
                Err(e) => panic!("device {:?}: no bytes within {timeout:?}: {e}", self.id),
            }
        }
        std::mem::take(&mut self.pending)
    }

    /// Asserts that no frame arrives within `wait`.
    pub fn expect_no_frame(&mut self, wait: Duration) {
        if let Some(frame) = self.try_recv_frame(wait) {
            panic!(
                "device {:?}: unexpected frame {:?}",
                self.id,
                String::from_utf8_lossy(&frame)
            );
        }
    }

    /// Waits for the server to end the connection (reading and discarding
    /// whatever comes before); panics if it stays open for `timeout`.
    pub fn expect_closed(&mut self, timeout: Duration) -> Closed {
        let deadline = Instant::now() + timeout;
        loop {
            match self.fill(deadline) {
                Ok(0) => return Closed::Eof,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    panic!("device {:?}: still open after {timeout:?}", self.id)
                }
                Err(_) => return Closed::Reset,
            }
        }
    }

    /// Waits for an orderly end of stream with no data before it.
    pub fn expect_eof(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        match self.fill(deadline) {
            Ok(0) => {}
            Ok(_) => panic!(
                "device {:?}: data instead of end of stream: {:?}",
                self.id,
                String::from_utf8_lossy(&self.pending)
            ),
            Err(e) => panic!(
                "device {:?}: no end of stream within {timeout:?}: {e}",
                self.id
            ),
        }
    }

    /// Half-closes: no more bytes from this side.
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

/// Connects devices `ids` and waits for each one's `device online` line;
/// returns them with the core each landed on.
pub fn connect_devices(
    dp: &Dataplane,
    addr: SocketAddr,
    ids: &[String],
) -> Vec<(TcpDevice, usize)> {
    let devices: Vec<TcpDevice> = ids.iter().map(|id| TcpDevice::connect(addr, id)).collect();
    devices
        .into_iter()
        .map(|d| {
            let core = dp.device_core(&d.id, Duration::from_secs(5));
            (d, core)
        })
        .collect()
}

/// Subscriptions are announced to the other cores asynchronously after a
/// device's login line; this is how long the suite lets that settle before
/// relying on cross-core delivery.
pub const INTEREST_SETTLE: Duration = Duration::from_millis(300);

/// A UDP socket on loopback with an ephemeral port.
pub fn udp_socket() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").expect("bind a udp socket")
}

/// One datagram and its sender, or `None` when none came within `timeout`.
pub fn udp_recv(socket: &UdpSocket, timeout: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        socket
            .set_read_timeout(Some(left))
            .expect("set a read timeout");
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => return Some((buf[..n].to_vec(), from)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("udp receive: {e}"),
        }
    }
}

// ----- upstreams -------------------------------------------------------

/// A TCP server standing for a forward route's upstream: accepts any
/// number of connections and decodes 2-byte big-endian length frames from
/// each. Stops its threads on drop.
#[derive(Debug)]
pub struct FrameSink {
    addr: SocketAddr,
    frames: mpsc::Receiver<Vec<u8>>,
    connections: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl FrameSink {
    /// Listens on an ephemeral loopback port.
    pub fn start() -> Self {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Listens on `addr`.
    pub fn start_on(addr: SocketAddr) -> Self {
        let listener =
            TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind the sink on {addr}: {e}"));
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("sink addr");
        let (tx, frames) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicU64::new(0));
        let (stop_accept, count) = (Arc::clone(&stop), Arc::clone(&connections));
        thread::spawn(move || {
            while !stop_accept.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        count.fetch_add(1, Ordering::Relaxed);
                        let (tx, stop) = (tx.clone(), Arc::clone(&stop_accept));
                        thread::spawn(move || read_frames(stream, &tx, &stop));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Self {
            addr,
            frames,
            connections,
            stop,
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// The next frame's payload, or `None` within `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<Vec<u8>> {
        self.frames.recv_timeout(timeout).ok()
    }
}

impl Drop for FrameSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn read_frames(mut stream: TcpStream, tx: &mpsc::Sender<Vec<u8>>, stop: &AtomicBool) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let mut pending = Vec::new();
    let mut chunk = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
        while pending.len() >= 2 {
            let len = usize::from(u16::from_be_bytes([pending[0], pending[1]]));
            if pending.len() < 2 + len {
                break;
            }
            let frame = pending[2..2 + len].to_vec();
            pending.drain(..2 + len);
            if tx.send(frame).is_err() {
                return;
            }
        }
    }
}
