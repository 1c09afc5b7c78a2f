//! Both planes as processes: a `shoal-controlplane run` and a
//! `shoal-dataplane --control ...` sharing a temporary directory (sockets
//! and state), and `shoalctl` runs against them.
//!
//! The control plane seeds an empty store with the embedded default
//! listeners (fixed ports 7000/7001). Tests run side by side, so
//! [`Planes::start`] removes those two listeners before any data plane
//! connects, and data planes start from a config without listeners: each
//! test adds its own on free ports.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::log::Log;
use crate::process::{free_ports, run_bin, spawn_captured, workspace_bin, RunOutput, TempConfig};
use crate::{CORES, READY_LINE, STATS_INTERVAL};

/// The control plane's ready line.
pub const CONTROLPLANE_READY: &str = "shoal-controlplane ready";

/// How long a daemon gets to print its ready line.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A data-plane config with the suite's pools and no listeners: the
/// listeners come from the control plane.
pub const EMPTY_DATAPLANE_CONFIG: &str = "[runtime]\ndrain_timeout = \"2s\"\n";

/// A daemon started by a test, killed on drop if it still runs.
#[derive(Debug)]
pub struct Daemon {
    name: &'static str,
    child: Child,
    stderr: Log,
    status: Option<ExitStatus>,
    _config: Option<TempConfig>,
}

impl Daemon {
    /// Starts `command` with its output captured (echoed to the test's
    /// stderr as `name`).
    pub fn start(name: &'static str, command: &mut Command) -> Self {
        Self::spawn(name, command, None)
    }

    fn spawn(name: &'static str, command: &mut Command, config: Option<TempConfig>) -> Self {
        let (child, stderr, _stdout) = spawn_captured(command, Stdio::null(), name);
        Self {
            name,
            child,
            stderr,
            status: None,
            _config: config,
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its log (stderr).
    pub fn log(&self) -> &Log {
        &self.stderr
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

    /// Waits until `count` log lines contain `pattern`; returns the last.
    pub fn wait_for_logs(&self, pattern: &str, count: usize, timeout: Duration) -> String {
        self.stderr
            .wait_until(timeout, |lines| {
                let found: Vec<&str> = lines
                    .iter()
                    .filter(|l| l.text.contains(pattern))
                    .map(|l| l.text.as_str())
                    .collect();
                (found.len() >= count).then(|| found.last().copied().unwrap_or("").to_owned())
            })
            .unwrap_or_else(|why| {
                panic!(
                    "{}: wanted {count} log lines with {pattern:?}, saw {} ({why})",
                    self.name,
                    self.logs_matching(pattern).len()
                )
            })
    }

    /// Waits for a log line containing `pattern`.
    pub fn wait_for_log(&self, pattern: &str, timeout: Duration) -> String {
        self.wait_for_logs(pattern, 1, timeout)
    }

    /// Sends `signal`.
    pub fn signal(&mut self, signal: libc::c_int) {
        assert!(self.try_status().is_none(), "{} already exited", self.name);
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) only sends a signal to our own child, which has
        // not been reaped (checked above), so the pid names no other
        // process.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self) {
        if self.try_status().is_none() {
            self.signal(libc::SIGKILL);
        }
        self.wait_exit(Duration::from_secs(10));
    }

    /// SIGTERM, then waits for exit code 0.
    pub fn stop(&mut self) {
        self.signal(libc::SIGTERM);
        let status = self.wait_exit(Duration::from_secs(20));
        assert_eq!(
            status.code(),
            Some(0),
            "{} stopped with {status}:\n{}",
            self.name,
            self.stderr.text()
        );
    }

    fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {timeout:?}",
                self.name
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A temporary directory holding both planes' sockets and state.
#[derive(Debug)]
pub struct Planes {
    dir: PathBuf,
}

impl Planes {
    /// A fresh directory (removed on drop), and a control plane started in
    /// it whose default listeners are already removed.
    pub fn start() -> (Self, Daemon) {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "shoal-planes-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the planes' directory");
        let planes = Self { dir };
        let cp = planes.start_controlplane();
        for name in ["tcp-default", "udp-default"] {
            planes.ctl(&["listener", "rm", name]).assert_exit_code(0);
        }
        (planes, cp)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `control.sock`.
    pub fn control_socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    /// The data plane's state directory.
    pub fn dataplane_state(&self) -> PathBuf {
        self.dir.join("dataplane")
    }

    /// Starts `shoal-controlplane run` on this directory's state and
    /// sockets; waits for its ready line.
    pub fn start_controlplane(&self) -> Daemon {
        let mut cp = Daemon::spawn(
            "controlplane",
            Command::new(workspace_bin("shoal-controlplane"))
                .arg("run")
                .arg("--state-dir")
                .arg(self.dir.join("controlplane"))
                .arg("--socket-dir")
                .arg(&self.dir)
                .arg("--ack-timeout")
                .arg("10s"),
            None,
        );
        if let Err(why) = cp.log().wait_until(START_TIMEOUT, |lines| {
            lines
                .iter()
                .any(|l| l.text.contains(CONTROLPLANE_READY))
                .then_some(())
        }) {
            let status = cp.try_status();
            panic!(
                "the control plane did not start ({why}; exit {status:?}):\n{}",
                cp.log().text()
            );
        }
        cp
    }

    /// Starts `shoal-dataplane --control ... --state-dir ...` with
    /// `config` (runtime and pools; listeners serve only until the control
    /// plane's state arrives); waits for its ready line.
    pub fn start_dataplane(&self, config: &str) -> Daemon {
        let file = TempConfig::new(config);
        let mut command = Command::new(workspace_bin("shoal-dataplane"));
        command
            .arg("--cores")
            .arg(CORES.to_string())
            .arg("--stats-interval")
            .arg(STATS_INTERVAL)
            .arg("--config")
            .arg(file.path())
            .arg("--control")
            .arg(self.dir.join("dataplane.sock"))
            .arg("--state-dir")
            .arg(self.dataplane_state());
        let mut dp = Daemon::spawn("dataplane", &mut command, Some(file));
        if let Err(why) = dp.log().wait_until(START_TIMEOUT, |lines| {
            lines
                .iter()
                .any(|l| l.text.contains(READY_LINE))
                .then_some(())
        }) {
            let status = dp.try_status();
            panic!(
                "the data plane did not start ({why}; exit {status:?}):\n{}",
                dp.log().text()
            );
        }
        dp
    }

    /// Adds, with `shoalctl`, a `device_secret` listener `secure` of
    /// `protocol`, a plain raw TCP listener `plain-tcp`, a route copying
    /// every uplink that arrives on `secure` to the TCP device `watcher`,
    /// and the device `device` (product `meter`) with `secret`. Returns the
    /// two listeners' addresses (secure, TCP).
    pub fn secure_listener_with_watcher(
        &self,
        protocol: &str,
        device: &str,
        secret: &str,
    ) -> (SocketAddr, SocketAddr) {
        let ports = free_ports(2);
        let secure = SocketAddr::from(([127, 0, 0, 1], ports[0]));
        let tcp = SocketAddr::from(([127, 0, 0, 1], ports[1]));
        for (name, protocol, addr, auth) in [
            ("secure", protocol, secure, "device-secret"),
            ("plain-tcp", "tcp", tcp, "none"),
        ] {
            self.ctl(&[
                "listener",
                "add",
                name,
                "--protocol",
                protocol,
                "--bind",
                &addr.to_string(),
                "--auth",
                auth,
            ])
            .assert_exit_code(0);
        }
        self.ctl(&[
            "route",
            "add",
            "to-watcher",
            "--filter",
            "devices/+/up/#",
            "--listener",
            "secure",
            "--republish",
            "devices/watcher/down",
        ])
        .assert_exit_code(0);
        self.ctl(&["product", "add", "meter"]).assert_exit_code(0);
        self.ctl(&[
            "device",
            "add",
            device,
            "--product",
            "meter",
            "--secret",
            secret,
        ])
        .assert_exit_code(0);
        (secure, tcp)
    }

    /// Runs `shoalctl --socket <control.sock> ARGS` to its end.
    pub fn ctl<S: AsRef<OsStr>>(&self, args: &[S]) -> RunOutput {
        self.ctl_with_input(args, b"")
    }

    /// [`Planes::ctl`] with `stdin`.
    pub fn ctl_with_input<S: AsRef<OsStr>>(&self, args: &[S], stdin: &[u8]) -> RunOutput {
        let socket = self.control_socket();
        let mut all: Vec<&OsStr> = vec![OsStr::new("--socket"), socket.as_os_str()];
        all.extend(args.iter().map(AsRef::as_ref));
        run_bin("shoalctl", &all, stdin, Duration::from_secs(60))
    }

    /// `shoalctl -o json ARGS`, parsed.
    pub fn ctl_json<S: AsRef<OsStr>>(&self, args: &[S]) -> serde_json::Value {
        let mut all: Vec<&OsStr> = vec![OsStr::new("-o"), OsStr::new("json")];
        all.extend(args.iter().map(AsRef::as_ref));
        let out = self.ctl(&all);
        out.assert_exit_code(0);
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("shoalctl -o json printed no JSON ({e}): {out:?}"))
    }

    /// Runs shoalctl as `uid`/`gid` (not root) and returns its output.
    pub fn ctl_as(&self, uid: u32, gid: u32, args: &[&str]) -> RunOutput {
        let mut command = Command::new(workspace_bin("shoalctl"));
        command
            .arg("--socket")
            .arg(self.control_socket())
            .args(args)
            .uid(uid)
            .gid(gid)
            .stdin(Stdio::null());
        let output = command.output().expect("run shoalctl as another user");
        RunOutput {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Drop for Planes {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
