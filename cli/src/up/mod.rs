//! `shoalctl up`: a control plane and a data plane in the foreground.
//!
//! ```text
//! find both binaries (next to shoalctl, else on PATH)
//! shoal-controlplane run --state-dir DIR/controlplane --socket-dir DIR
//!   └─ wait until DIR/control.sock answers a hello (10 s at most)
//! shoal-dataplane --control DIR/dataplane.sock --state-dir DIR/dataplane [--cores N]
//!   └─ banner once it logs `shoal-dataplane ready`
//! loop: a signal → stop the data plane, then the control plane
//!       a child exits on its own → stop the other, exit 1
//! ```
//!
//! Both children stay in shoalctl's process group. A Ctrl-C at the
//! terminal reaches all three at once, and both daemons take their first
//! SIGINT as "drain and stop" (a second one as "exit now"), so shoalctl
//! sends nothing more then: it only waits. A SIGTERM, or a SIGINT sent to
//! shoalctl alone (no terminal, or shoalctl not in the terminal's
//! foreground group), is passed on as SIGTERM: first to the data plane,
//! then to the control plane.

mod relay;

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGINT, SIGTERM};

use crate::args::UpArgs;
use crate::client::ControlClient;
use crate::error::{CliError, CliResult};
use relay::LineWatch;

/// The control plane's binary.
const CONTROLPLANE_BIN: &str = "shoal-controlplane";
/// The data plane's binary.
const DATAPLANE_BIN: &str = "shoal-dataplane";
/// How long the control plane gets to accept connections.
const SOCKET_WAIT: Duration = Duration::from_secs(10);
/// How long a child gets to stop before it is killed.
const STOP_WAIT: Duration = Duration::from_secs(15);
/// How often the supervisor looks at signals and children.
const POLL: Duration = Duration::from_millis(50);
/// The line the data plane logs once it serves.
const DATAPLANE_READY: &str = "shoal-dataplane ready";

/// A running child and the threads relaying its output.
#[derive(Debug)]
struct Plane {
    /// For messages: "control plane" or "data plane".
    what: &'static str,
    child: Child,
    relays: Vec<JoinHandle<()>>,
    /// Whether it was sent (or got from the terminal) a stop signal.
    signaled: bool,
}

impl Plane {
    /// Starts `command` with its output relayed behind `prefix`.
    fn start(
        what: &'static str,
        mut command: Command,
        prefix: &'static str,
        watch: Option<LineWatch>,
    ) -> CliResult<Self> {
        let program = command.get_program().to_string_lossy().into_owned();
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| CliError::runtime(format!("cannot start {program}: {e}")))?;
        let mut relays = Vec::new();
        let spawned = (|| {
            if let Some(out) = child.stdout.take() {
                relays.push(relay::spawn(out, prefix, None)?);
            }
            if let Some(err) = child.stderr.take() {
                relays.push(relay::spawn(err, prefix, watch)?);
            }
            Ok::<(), std::io::Error>(())
        })();
        let mut plane = Self {
            what,
            child,
            relays,
            signaled: false,
        };
        if let Err(e) = spawned {
            plane.kill_now();
            return Err(CliError::runtime(format!(
                "cannot start a thread to relay the {what}'s output: {e}"
            )));
        }
        Ok(plane)
    }

    /// Its exit status if it has exited.
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends SIGTERM (unless it already got a stop signal), waits up to
    /// [`STOP_WAIT`], then kills it. Returns how it ended.
    fn stop(&mut self) -> ExitStatus {
        if let Some(status) = self.exited() {
            return self.finish(status);
        }
        if !self.signaled {
            eprintln!("shoalctl: stopping the {} (SIGTERM)", self.what);
            if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
                // SAFETY: kill takes plain integers; the pid is our own
                // child, not yet reaped, so it names no other process.
                unsafe { libc::kill(pid, SIGTERM) };
            }
            self.signaled = true;
        }
        let deadline = Instant::now() + STOP_WAIT;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return self.finish(status);
            }
            std::thread::sleep(POLL);
        }
        eprintln!(
            "shoalctl: the {} did not stop within {}s; killing it",
            self.what,
            STOP_WAIT.as_secs()
        );
        self.kill_now()
    }

    /// SIGKILL and reap.
    fn kill_now(&mut self) -> ExitStatus {
        let _ = self.child.kill();
        match self.child.wait() {
            Ok(status) => self.finish(status),
            Err(_) => ExitStatus::default(),
        }
    }

    /// Lets the relays print the child's last lines, then returns `status`.
    fn finish(&mut self, status: ExitStatus) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.relays.iter().any(|r| !r.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        for r in self.relays.drain(..).filter(JoinHandle::is_finished) {
            let _ = r.join();
        }
        status
    }
}

/// Finds `name` next to this executable, else on PATH.
fn find_binary(name: &str) -> CliResult<PathBuf> {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    if let Some(candidate) = exe_dir.as_ref().map(|d| d.join(name)) {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    let on_path = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    on_path.ok_or_else(|| {
        let beside = exe_dir.map_or_else(
            || "next to shoalctl".to_owned(),
            |d| format!("next to shoalctl in {}", d.display()),
        );
        CliError::runtime(format!(
            "cannot find {name} {beside} or on PATH; build both planes with: \
             cargo build --release -p shoal-controlplane -p shoal-dataplane"
        ))
    })
}

/// Whether this process is in the terminal's foreground process group (so
/// a Ctrl-C there reached the children as well).
fn in_terminal_foreground() -> bool {
    let Ok(tty) = File::open("/dev/tty") else {
        return false;
    };
    // SAFETY: tcgetpgrp takes an open descriptor (owned by `tty`, alive
    // for the call) and getpgrp takes nothing; neither touches memory.
    let (foreground, own) = unsafe { (libc::tcgetpgrp(tty.as_raw_fd()), libc::getpgrp()) };
    foreground > 0 && foreground == own
}

/// Whether signal `sig` came from the terminal to the whole process
/// group (a Ctrl-C), so the children got it too.
fn terminal_sent(sig: usize) -> bool {
    sig == SIGINT as usize && in_terminal_foreground()
}

/// Runs both planes until a signal or until one of them stops.
pub(crate) fn run(args: &UpArgs) -> CliResult {
    let controlplane_bin = find_binary(CONTROLPLANE_BIN)?;
    let dataplane_bin = find_binary(DATAPLANE_BIN)?;
    let dir = &args.dir;
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::runtime(format!("cannot create {}: {e}", dir.display())))?;
    let control_socket = dir.join("control.sock");
    if UnixStream::connect(&control_socket).is_ok() {
        return Err(CliError::runtime(format!(
            "a control plane already answers at {}; stop it first, or use another --dir",
            control_socket.display()
        )));
    }
    let signal = Arc::new(AtomicUsize::new(0));
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register_usize(sig, Arc::clone(&signal), sig as usize)
            .map_err(|e| CliError::runtime(format!("cannot catch signals: {e}")))?;
    }

    let mut command = Command::new(&controlplane_bin);
    command
        .arg("run")
        .arg("--state-dir")
        .arg(dir.join("controlplane"))
        .arg("--socket-dir")
        .arg(dir);
    let mut controlplane = Plane::start("control plane", command, "controlplane | ", None)?;
    if let Err(e) = wait_for_control_socket(&mut controlplane, &control_socket, &signal) {
        controlplane.signaled |= terminal_sent(signal.load(Ordering::Relaxed));
        controlplane.stop();
        return Err(e);
    }

    let (ready_tx, ready_rx) = sync_channel(1);
    let mut command = Command::new(&dataplane_bin);
    command
        .arg("--control")
        .arg(dir.join("dataplane.sock"))
        .arg("--state-dir")
        .arg(dir.join("dataplane"));
    if let Some(cores) = args.cores {
        command.arg("--cores").arg(cores.to_string());
    }
    let watch = LineWatch {
        needle: DATAPLANE_READY,
        seen: ready_tx,
    };
    let mut dataplane = match Plane::start("data plane", command, "dataplane    | ", Some(watch)) {
        Ok(p) => p,
        Err(e) => {
            controlplane.stop();
            return Err(e);
        }
    };
    supervise(&mut controlplane, &mut dataplane, &signal, &ready_rx, dir)
}

/// Waits until the control plane answers a hello on `socket`.
fn wait_for_control_socket(
    controlplane: &mut Plane,
    socket: &Path,
    signal: &AtomicUsize,
) -> CliResult {
    let deadline = Instant::now() + SOCKET_WAIT;
    loop {
        if signal.load(Ordering::Relaxed) != 0 {
            return Err(CliError::runtime(
                "stopped before the control plane was ready",
            ));
        }
        if let Some(status) = controlplane.exited() {
            return Err(CliError::runtime(format!(
                "the control plane exited ({status}) before {} accepted connections; see its \
                 lines above",
                socket.display()
            )));
        }
        if let Ok(stream) = UnixStream::connect(socket) {
            return ControlClient::handshake(stream, Duration::from_secs(5))
                .map(drop)
                .map_err(|e| e.context(socket.display()));
        }
        if Instant::now() >= deadline {
            return Err(CliError::runtime(format!(
                "the control plane did not accept connections on {} within {}s; see its lines \
                 above",
                socket.display(),
                SOCKET_WAIT.as_secs()
            )));
        }
        std::thread::sleep(POLL);
    }
}

/// Watches both planes until a signal or until one exits.
fn supervise(
    controlplane: &mut Plane,
    dataplane: &mut Plane,
    signal: &AtomicUsize,
    ready: &Receiver<()>,
    dir: &Path,
) -> CliResult {
    let mut banner_shown = false;
    loop {
        let sig = signal.load(Ordering::Relaxed);
        if sig != 0 {
            return shut_down(controlplane, dataplane, sig);
        }
        if let Some(status) = controlplane.exited() {
            return stopped_on_its_own(controlplane, dataplane, status);
        }
        if let Some(status) = dataplane.exited() {
            return stopped_on_its_own(dataplane, controlplane, status);
        }
        if !banner_shown && ready.try_recv().is_ok() {
            banner_shown = true;
            print_banner(dir);
        }
        std::thread::sleep(POLL);
    }
}

/// `gone` exited by itself: stop `other` and fail.
fn stopped_on_its_own(gone: &mut Plane, other: &mut Plane, status: ExitStatus) -> CliResult {
    gone.finish(status);
    eprintln!(
        "shoalctl: the {} exited on its own ({status}); stopping the {}",
        gone.what, other.what
    );
    other.stop();
    Err(CliError::runtime(format!(
        "the {} stopped unexpectedly ({status}); see its lines above",
        gone.what
    )))
}

/// Stops the data plane, then the control plane.
fn shut_down(controlplane: &mut Plane, dataplane: &mut Plane, sig: usize) -> CliResult {
    if terminal_sent(sig) {
        // The terminal sent the same SIGINT to both children: each is
        // already draining, and another signal would make it exit at once.
        controlplane.signaled = true;
        dataplane.signaled = true;
        eprintln!("shoalctl: stopping both planes");
    }
    let dataplane_status = dataplane.stop();
    let controlplane_status = controlplane.stop();
    let failed: Vec<String> = [
        (dataplane.what, dataplane_status),
        (controlplane.what, controlplane_status),
    ]
    .into_iter()
    .filter(|(_, status)| !status.success())
    .map(|(what, status)| format!("the {what} exited with {status}"))
    .collect();
    if failed.is_empty() {
        eprintln!("shoalctl: both planes stopped");
        Ok(())
    } else {
        Err(CliError::runtime(failed.join("; ")))
    }
}

/// Where to connect and what to try.
fn print_banner(dir: &Path) {
    let socket = dir.join("control.sock");
    let is_default_dir = match (dir.canonicalize(), Path::new(".shoal").canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    let try_status = if is_default_dir {
        "shoalctl status".to_owned()
    } else {
        format!("shoalctl --socket {} status", socket.display())
    };
    // A closed standard output must not stop the planes: errors are ignored.
    let _ = writeln!(
        std::io::stdout(),
        "\nshoal is up: a control plane and a data plane, state in {dir}\n  \
         control socket   {socket}\n  \
         raw TCP devices  127.0.0.1:7000 (2-byte big-endian length frames; the first frame is the device id)\n  \
         raw UDP devices  127.0.0.1:7001 (one datagram per message; the sender's ip:port is the device id)\n  \
         try: {try_status}\n\
         Ctrl-C stops both.\n",
        dir = dir.display(),
        socket = socket.display(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_names_both_places() {
        let e = find_binary("shoal-no-such-binary").unwrap_err();
        assert!(e.message.contains("next to shoalctl"), "{}", e.message);
        assert!(e.message.contains("on PATH"), "{}", e.message);
        assert_eq!(e.failure.exit_code(), 1);
    }

    #[test]
    fn binaries_are_found_on_path() {
        assert!(find_binary("sh").is_ok());
    }
}
