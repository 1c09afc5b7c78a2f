//! The data plane's control client: it dials the control plane's
//! `dataplane.sock`, says hello, applies the snapshot and the deltas it is
//! sent (through the same two-phase apply as the start config and a
//! SIGHUP), answers each with an Ack or a Nack, closes the connections of
//! kicked devices and the publishers of kicked streams, and sends its
//! figures every second.
//!
//! It runs on its own std thread (`shoal-control`) with blocking socket
//! I/O; it is not an executor. It keeps the small parts of the desired
//! state; devices go to their owner cores. The applied state is cached in
//! the state directory ([`cache`]) so the data plane restarts without the
//! control plane. A lost connection is dialed again with backoff while the
//! data plane goes on serving what it last applied.

mod cache;
mod client;
mod frames;
mod state;

#[cfg(test)]
mod tests;

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_protocols::config::DataPlaneConfig;
use tracing::{error, warn};

pub(crate) use cache::{load as load_cache, Cache};
pub(crate) use client::{ClientStart, ControlClient, SessionEnd};
pub(crate) use state::DesiredState;

use crate::registry::DeviceOp;
use crate::supervisor::{RegistryCommit, SupervisorLink};

/// What an apply made of the running config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ApplySummary {
    pub(crate) listeners: usize,
    pub(crate) routes: usize,
    /// Devices in the registry, over every core.
    pub(crate) devices: u64,
}

/// What the control client (and the cache loader) needs of the cores.
pub(crate) trait PlaneDriver {
    /// Starts staging the registry changes of apply `ticket`; `replace`:
    /// they make a whole new registry (a snapshot).
    fn begin_devices(&mut self, ticket: u64, replace: bool) -> Result<(), String>;
    /// Hands device changes to their owner cores.
    fn stage_devices(&mut self, ticket: u64, ops: Vec<DeviceOp>) -> Result<(), String>;
    /// Drops what apply `ticket` staged.
    fn discard_devices(&mut self, ticket: u64);
    /// Applies the config and the staged registry changes on every core,
    /// in two phases; on error nothing changed.
    fn apply(
        &mut self,
        config: DataPlaneConfig,
        registry: RegistryCommit,
    ) -> Result<ApplySummary, String>;
    /// Closes the connections of `device` on every core; how many.
    fn kick(&mut self, device: &str) -> Result<u32, String>;
    /// Ends the publisher of live stream `stream` on whichever core it
    /// publishes to; how many publishers ended (0 or 1).
    fn kick_stream(&mut self, stream: &str) -> Result<u32, String>;
}

/// First delay before dialing again.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest delay before dialing again (also after a refusal).
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// An unreachable control plane is logged at most this often.
const UNREACHABLE_LOG_EVERY: Duration = Duration::from_secs(30);
/// Read timeout of the control socket: how often the client looks at its
/// figures and at the stop flag while nothing arrives.
const READ_TICK: Duration = Duration::from_millis(200);
/// A write to the control socket that takes longer ends the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that lasted this long counts as working: the next dial
/// starts again from the shortest delay. (One that breaks sooner, say on a
/// message this release cannot read, keeps backing off.)
const STABLE_SESSION: Duration = Duration::from_secs(10);

/// Exponential backoff with jitter: 100 ms doubling to 5 s, each delay
/// drawn between half and all of the current step.
#[derive(Debug)]
pub(crate) struct Backoff {
    step: Duration,
    seed: u64,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Self {
            step: BACKOFF_MIN,
            seed: (u64::from(nanos) ^ (u64::from(std::process::id()) << 32)) | 1,
        }
    }

    fn random(&mut self) -> u64 {
        // xorshift64: plenty for spreading reconnects.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        self.seed
    }

    fn jittered(&mut self, step: Duration) -> Duration {
        let half = step.as_millis() as u64 / 2;
        Duration::from_millis(half + self.random() % (half + 1))
    }

    /// The next delay; the step doubles up to the maximum.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(BACKOFF_MAX);
        self.jittered(step)
    }

    /// The delay after a refusal: the longest step.
    pub(crate) fn max_delay(&mut self) -> Duration {
        self.step = BACKOFF_MAX;
        self.jittered(BACKOFF_MAX)
    }

    /// A connection worked: start again from the first step.
    pub(crate) fn reset(&mut self) {
        self.step = BACKOFF_MIN;
    }
}

/// Bytes of memory the process holds (resident set), from
/// `/proc/self/statm`.
pub(crate) fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page_bytes = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page_bytes).ok()?)
}

/// This machine's host name (the default node id).
pub(crate) fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".to_owned();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(buf.get(..end).unwrap_or_default()).into_owned()
}

/// Sleeps `delay`, or less when the data plane stops meanwhile.
fn sleep_unless_stopped(stop: &AtomicBool, delay: Duration) {
    let until = Instant::now() + delay;
    while !stop.load(Ordering::Relaxed) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// Starts the control client's thread.
pub(crate) fn spawn(
    socket: PathBuf,
    client: ControlClient<SupervisorLink>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("shoal-control".to_owned())
        .spawn(move || run(&socket, client, &stop))
}

/// Dials the control plane until the data plane stops; runs each
/// connection to its end.
fn run(socket: &Path, mut client: ControlClient<SupervisorLink>, stop: &AtomicBool) {
    let mut backoff = Backoff::new();
    let mut last_unreachable_log: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        let mut stream = match UnixStream::connect(socket) {
            Ok(s) => s,
            Err(e) => {
                let delay = backoff.next_delay();
                if last_unreachable_log.is_none_or(|t| t.elapsed() >= UNREACHABLE_LOG_EVERY) {
                    last_unreachable_log = Some(Instant::now());
                    warn!(
                        "control plane unreachable at {}: {e}; retrying in {}",
                        socket.display(),
                        humantime::format_duration(delay)
                    );
                }
                sleep_unless_stopped(stop, delay);
                continue;
            }
        };
        last_unreachable_log = None;
        let timeouts = stream
            .set_read_timeout(Some(READ_TICK))
            .and_then(|()| stream.set_write_timeout(Some(WRITE_TIMEOUT)));
        if let Err(e) = timeouts {
            warn!("cannot set timeouts on the control socket: {e}");
            sleep_unless_stopped(stop, backoff.next_delay());
            continue;
        }
        let session_start = Instant::now();
        match client.session(&mut stream) {
            SessionEnd::Stopped => return,
            SessionEnd::Refused(reason) => {
                error!("control plane refused: {reason}");
                sleep_unless_stopped(stop, backoff.max_delay());
            }
            SessionEnd::VersionMismatch(why) => {
                error!("{why}");
                sleep_unless_stopped(stop, backoff.max_delay());
            }
            SessionEnd::Lost(why) => {
                warn!("connection to the control plane lost: {why}; dialing again");
                if session_start.elapsed() >= STABLE_SESSION {
                    backoff.reset();
                }
                sleep_unless_stopped(stop, backoff.next_delay());
            }
        }
    }
}
