//! `shoal-controlplane run`: opens the store, listens on `control.sock`
//! and `dataplane.sock`, serves every connection on its own thread, and
//! stops cleanly on SIGTERM or SIGINT.
//!
//! ```text
//! main thread:   open store → bind sockets → "ready" → loop { watchdog } → stop
//! accept thread: per socket, accepts and starts a connection thread
//! connection:    peer check + hello → shoalctl requests | data-plane session
//! ```

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tracing::{debug, info, warn};

use crate::handshake::{socket_path, AccessPolicy, Doorway, Endpoint, HandshakeError};
use crate::planes::lock;
use crate::service::ControlPlane;
use crate::session::{serve_cli, serve_data_plane, SessionError};
use crate::store::Store;

/// Connections served at once per socket; beyond, new ones are closed.
const MAX_CONNECTIONS_PER_SOCKET: usize = 1024;
/// How often an accept loop looks for a connection or the stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(50);
/// File mode of both sockets.
const SOCKET_MODE: u32 = 0o660;

/// Everything `run` needs.
#[derive(Debug)]
pub(crate) struct RunSettings {
    /// Directory of `desired.redb`.
    pub(crate) state_dir: PathBuf,
    /// Directory of the two sockets.
    pub(crate) socket_dir: PathBuf,
    /// Node id.
    pub(crate) node: String,
    /// Further users allowed on the sockets.
    pub(crate) allow_uids: Vec<u32>,
    /// Groups allowed on the sockets.
    pub(crate) allow_gids: Vec<u32>,
    /// How long an apply waits for the data planes.
    pub(crate) ack_timeout: Duration,
}

/// Open connections, so they can be closed at shutdown.
#[derive(Debug, Default)]
struct Connections {
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, (Endpoint, UnixStream)>>,
}

impl Connections {
    /// Adds a connection unless its socket is at its limit.
    fn add(&self, endpoint: Endpoint, stream: &UnixStream) -> io::Result<Option<u64>> {
        let mut open = lock(&self.open);
        if open.values().filter(|(e, _)| *e == endpoint).count() >= MAX_CONNECTIONS_PER_SOCKET {
            return Ok(None);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        open.insert(id, (endpoint, stream.try_clone()?));
        Ok(Some(id))
    }

    fn remove(&self, id: u64) {
        lock(&self.open).remove(&id);
    }

    fn count(&self, endpoint: Endpoint) -> usize {
        lock(&self.open)
            .values()
            .filter(|(e, _)| *e == endpoint)
            .count()
    }

    fn close(&self, endpoint: Endpoint) {
        for (e, stream) in lock(&self.open).values() {
            if *e == endpoint {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

/// What the accept loops and connection threads share.
#[derive(Debug)]
struct Shared {
    cp: ControlPlane,
    stop: Arc<AtomicBool>,
    connections: Connections,
}

/// Runs the control plane until SIGTERM or SIGINT.
pub(crate) fn run(settings: RunSettings) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // A second signal while stopping ends the process at once.
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&stop))
            .context("cannot install a signal handler")?;
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("cannot install a signal handler")?;
    }
    serve(settings, &stop)
}

/// Runs the control plane until `stop` is set.
pub(crate) fn serve(settings: RunSettings, stop: &Arc<AtomicBool>) -> anyhow::Result<()> {
    let control_path = socket_path(&settings.socket_dir, Endpoint::Control);
    let dataplane_path = socket_path(&settings.socket_dir, Endpoint::DataPlane);
    // Refuse early, before touching any state, when another control plane
    // serves these sockets.
    for path in [&control_path, &dataplane_path] {
        refuse_if_served(path)?;
    }
    fs::create_dir_all(&settings.state_dir).with_context(|| {
        format!(
            "cannot create the state directory {} (choose another with --state-dir)",
            settings.state_dir.display()
        )
    })?;
    let db_path = settings.state_dir.join("desired.redb");
    let (store, state) = Store::open(&db_path)?;
    info!(path = %db_path.display(), version = state.version(), "desired state loaded");

    fs::create_dir_all(&settings.socket_dir).with_context(|| {
        format!(
            "cannot create the socket directory {} (choose another with --socket-dir)",
            settings.socket_dir.display()
        )
    })?;
    let control = bind_socket(&control_path)?;
    let dataplane = match bind_socket(&dataplane_path) {
        Ok(l) => l,
        Err(e) => {
            let _ = fs::remove_file(&control_path);
            return Err(e);
        }
    };

    let access = AccessPolicy {
        // SAFETY: geteuid has no preconditions and cannot fail.
        own_uid: unsafe { libc::geteuid() },
        uids: settings.allow_uids.clone(),
        // The sockets belong to the daemon's group (mode 0660), so its
        // members are meant to use them: the group is allowed too.
        gids: {
            let mut gids = settings.allow_gids.clone();
            // SAFETY: getegid has no preconditions and cannot fail.
            gids.push(unsafe { libc::getegid() });
            gids
        },
    };
    let shared = Arc::new(Shared {
        cp: ControlPlane::new(settings.node.clone(), settings.ack_timeout, store, state),
        stop: Arc::clone(stop),
        connections: Connections::default(),
    });
    let heartbeats = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let mut accept_threads = Vec::new();
    for (index, (listener, endpoint, path)) in [
        (control, Endpoint::Control, control_path.clone()),
        (dataplane, Endpoint::DataPlane, dataplane_path.clone()),
    ]
    .into_iter()
    .enumerate()
    {
        let doorway = Doorway {
            endpoint,
            path,
            access: access.clone(),
            node: settings.node.clone(),
        };
        let shared = Arc::clone(&shared);
        let heartbeats = Arc::clone(&heartbeats);
        let spawned = std::thread::Builder::new()
            .name(format!("shoal-accept-{}", endpoint.file_name()))
            .spawn(move || accept_loop(&listener, &doorway, &shared, &heartbeats[index]));
        match spawned {
            Ok(handle) => accept_threads.push(handle),
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                remove_sockets(&[&control_path, &dataplane_path]);
                bail!("cannot start an accept thread: {e}");
            }
        }
    }

    info!(
        control = %control_path.display(),
        dataplane = %dataplane_path.display(),
        version = shared.cp.version(),
        node = %settings.node,
        "shoal-controlplane ready"
    );
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    watch(&shared, &heartbeats, &accept_threads);

    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    shut_down(&shared, accept_threads);
    remove_sockets(&[&control_path, &dataplane_path]);
    info!("shoal-controlplane stopped");
    Ok(())
}

/// Waits for the stop flag; under systemd's watchdog, pings it at half its
/// interval while both accept loops and the store are alive.
fn watch(shared: &Shared, heartbeats: &[AtomicU64; 2], accept_threads: &[JoinHandle<()>]) {
    let watchdog = sd_notify::watchdog_enabled();
    let period = watchdog.map_or(Duration::from_millis(100), |w| {
        (w / 2).clamp(Duration::from_millis(20), Duration::from_millis(100))
    });
    let read_beats = || heartbeats.each_ref().map(|h| h.load(Ordering::Relaxed));
    let mut last_beats = read_beats();
    let mut last_ping = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        std::thread::sleep(period);
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        if accept_threads.iter().any(JoinHandle::is_finished) {
            warn!("an accept loop ended; stopping");
            shared.stop.store(true, Ordering::Relaxed);
            break;
        }
        let Some(interval) = watchdog else {
            continue;
        };
        if last_ping.elapsed() >= interval / 2 {
            let beats = read_beats();
            let accepting = beats
                .iter()
                .zip(&last_beats)
                .all(|(now, before)| now != before);
            if accepting && shared.cp.store_alive() {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
            last_beats = beats;
            last_ping = Instant::now();
        }
    }
}

/// Stops accepting, lets shoalctl sessions finish their request, then
/// closes every connection.
fn shut_down(shared: &Shared, accept_threads: Vec<JoinHandle<()>>) {
    for t in accept_threads {
        let _ = t.join();
    }
    // shoalctl sessions end after the request they are serving; an apply
    // waits at most twice the ACK timeout (push, then undo).
    let deadline = Instant::now() + shared.cp.ack_timeout() * 2 + Duration::from_secs(2);
    while shared.connections.count(Endpoint::Control) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    shared.connections.close(Endpoint::Control);
    shared.cp.wait_for_applies();
    shared.cp.planes().close_all();
    shared.connections.close(Endpoint::DataPlane);
    let deadline = Instant::now() + Duration::from_secs(2);
    while shared.connections.count(Endpoint::DataPlane) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn accept_loop(
    listener: &UnixListener,
    doorway: &Doorway,
    shared: &Arc<Shared>,
    heartbeat: &AtomicU64,
) {
    while !shared.stop.load(Ordering::Relaxed) {
        heartbeat.fetch_add(1, Ordering::Relaxed);
        match listener.accept() {
            Ok((stream, _)) => start_connection(stream, doorway, shared),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(ACCEPT_POLL),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                warn!(socket = %doorway.path.display(), "cannot accept a connection: {e}");
                std::thread::sleep(ACCEPT_POLL);
            }
        }
    }
}

fn start_connection(stream: UnixStream, doorway: &Doorway, shared: &Arc<Shared>) {
    let endpoint = doorway.endpoint;
    let id = match stream
        .set_nonblocking(false)
        .and_then(|()| shared.connections.add(endpoint, &stream))
    {
        Ok(Some(id)) => id,
        Ok(None) => {
            warn!(socket = %doorway.path.display(), "refused a connection: {MAX_CONNECTIONS_PER_SOCKET} connections are open on this socket");
            return;
        }
        Err(e) => {
            warn!(socket = %doorway.path.display(), "cannot serve a connection: {e}");
            return;
        }
    };
    let doorway = doorway.clone();
    let thread_shared = Arc::clone(shared);
    let spawned = std::thread::Builder::new()
        .name(format!("shoal-conn-{id}"))
        .spawn(move || {
            serve_connection(stream, &doorway, &thread_shared);
            thread_shared.connections.remove(id);
        });
    if let Err(e) = spawned {
        warn!(
            socket = endpoint.file_name(),
            "cannot start a connection thread: {e}"
        );
        shared.connections.remove(id);
    }
}

fn serve_connection(mut stream: UnixStream, doorway: &Doorway, shared: &Shared) {
    let hello = match doorway.admit(&mut stream) {
        Ok(hello) => hello,
        Err(HandshakeError::Refused(_)) => return,
        Err(HandshakeError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
            // A probe (is anyone listening?) or a peer that gave up.
            debug!(socket = %doorway.path.display(), "connection closed before its hello");
            return;
        }
        Err(HandshakeError::Io(e)) => {
            warn!(socket = %doorway.path.display(), "connection ended before its hello: {e}");
            return;
        }
    };
    let result = match doorway.endpoint {
        Endpoint::Control => serve_cli(&shared.cp, stream, &shared.stop),
        Endpoint::DataPlane => serve_data_plane(&shared.cp, stream, &hello),
    };
    if let (Endpoint::Control, Err(e)) = (doorway.endpoint, result) {
        if !matches!(&e, SessionError::Io(io) if io.kind() == io::ErrorKind::BrokenPipe) {
            warn!(node = %hello.node, "shoalctl session ended: {e}");
        }
    }
}

/// Binds a socket at `path` with mode 0660. A leftover socket file is
/// removed, unless something answers on it.
fn bind_socket(path: &Path) -> anyhow::Result<UnixListener> {
    if let Ok(meta) = fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            bail!(
                "{} exists and is not a socket; move it away or choose another --socket-dir",
                path.display()
            );
        }
        refuse_if_served(path)?;
        fs::remove_file(path)
            .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
        info!(path = %path.display(), "removed a stale socket file");
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(SOCKET_MODE))
        .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    listener
        .set_nonblocking(true)
        .with_context(|| format!("cannot set up {}", path.display()))?;
    Ok(listener)
}

/// Fails when something answers on the socket at `path`.
fn refuse_if_served(path: &Path) -> anyhow::Result<()> {
    if UnixStream::connect(path).is_ok() {
        bail!(
            "another control plane answers on {}; stop it first, or give this one another \
             --socket-dir",
            path.display()
        );
    }
    Ok(())
}

fn remove_sockets(paths: &[&Path]) {
    for path in paths {
        if let Err(e) = fs::remove_file(path) {
            if e.kind() != io::ErrorKind::NotFound {
                warn!(path = %path.display(), "cannot remove the socket file: {e}");
            }
        }
    }
}

/// This machine's host name.
pub(crate) fn host_name() -> String {
    if let Ok(name) = fs::read_to_string("/proc/sys/kernel/hostname") {
        let name = name.trim();
        if !name.is_empty() {
            return name.to_owned();
        }
    }
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its whole length, which is passed.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc == 0 {
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        if let Ok(name) = std::str::from_utf8(buf.get(..end).unwrap_or_default()) {
            if !name.is_empty() {
                return name.to_owned();
            }
        }
    }
    "localhost".to_owned()
}
