//! The control client's state machine: one connection to the control
//! plane from hello to its end, and what each message does.
//!
//! ```text
//! Hello ─▶ Welcome ─▶ loop: Snapshot parts … last ─▶ apply ─▶ Ack | Nack
//!                           Delta ─────────────────▶ apply ─▶ Ack | Nack
//!                           KickDevice ────────────▶ kick  ─▶ Kicked
//!                           KickStream ────────────▶ kick  ─▶ StreamKicked
//!                           every second ──────────────────▶ Figures
//! ```

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use shoal_protocols::config::{PoolSettings, RuntimeSettings};
use shoal_protocols::control::{
    wire, Change, FromDataPlane, Hello, HelloReply, PeerRole, PlaneFigures, Resource, ToDataPlane,
    PROTOCOL_VERSION,
};
use tracing::{error, info, warn};

use super::cache::Cache;
use super::frames::{write_message, FrameReader, RawFrame};
use super::state::DesiredState;
use super::{rss_bytes, PlaneDriver};
use crate::core_task::CoreSample;
use crate::registry::DeviceOp;
use crate::supervisor::RegistryCommit;

/// How long the control plane may take to answer the hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// How often figures go to the control plane.
const FIGURES_PERIOD: Duration = Duration::from_secs(1);

/// Device changes handed to the cores per message.
const STAGE_BATCH: usize = 8192;

/// How a connection to the control plane ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SessionEnd {
    /// The control plane refused the hello.
    Refused(String),
    /// It speaks another protocol version.
    VersionMismatch(String),
    /// The connection broke or went silent.
    Lost(String),
    /// The data plane is stopping.
    Stopped,
}

/// A snapshot whose parts are arriving.
#[derive(Debug)]
struct Assembly {
    version: u64,
    next_part: u32,
    ticket: u64,
    state: DesiredState,
    /// The first problem met; the snapshot is refused with it.
    error: Option<String>,
    /// The parts are written to the cache as they come.
    caching: bool,
}

/// The control client: the applied state's small parts, and the way to
/// the cores.
#[derive(Debug)]
pub(crate) struct ControlClient<D: PlaneDriver> {
    pub(crate) node: String,
    pub(crate) cores: u16,
    runtime: RuntimeSettings,
    pools: PoolSettings,
    pub(crate) driver: D,
    /// Listeners, products, routes and streams of the applied version.
    pub(crate) state: DesiredState,
    /// The control-plane version every core runs (0: none yet).
    pub(crate) applied_version: u64,
    cache: Option<Cache>,
    samples: Option<mpsc::Receiver<CoreSample>>,
    latest: Vec<Option<CoreSample>>,
    started: Instant,
    stop: Arc<AtomicBool>,
    next_ticket: u64,
    assembly: Option<Assembly>,
}

/// Where the client starts from.
#[derive(Debug)]
pub(crate) struct ClientStart<D: PlaneDriver> {
    pub(crate) node: String,
    pub(crate) cores: u16,
    pub(crate) runtime: RuntimeSettings,
    pub(crate) pools: PoolSettings,
    pub(crate) driver: D,
    pub(crate) state: DesiredState,
    pub(crate) applied_version: u64,
    pub(crate) cache: Option<Cache>,
    pub(crate) samples: Option<mpsc::Receiver<CoreSample>>,
    pub(crate) stop: Arc<AtomicBool>,
    /// Registry staging tickets handed out before (the cache load's).
    pub(crate) first_ticket: u64,
    /// When the data plane started (for the uptime in the figures).
    pub(crate) started: Instant,
}

impl<D: PlaneDriver> ControlClient<D> {
    pub(crate) fn new(start: ClientStart<D>) -> Self {
        Self {
            node: start.node,
            cores: start.cores,
            runtime: start.runtime,
            pools: start.pools,
            driver: start.driver,
            state: start.state,
            applied_version: start.applied_version,
            cache: start.cache,
            samples: start.samples,
            latest: vec![None; usize::from(start.cores)],
            started: start.started,
            stop: start.stop,
            next_ticket: start.first_ticket,
            assembly: None,
        }
    }

    fn new_ticket(&mut self) -> u64 {
        self.next_ticket += 1;
        self.next_ticket
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Runs one connection: hello, then messages until it ends. The
    /// stream's read timeout paces the figures and the stop checks.
    pub(crate) fn session<S: Read + Write>(&mut self, stream: &mut S) -> SessionEnd {
        let mut reader = FrameReader::new(wire::DEFAULT_MAX_FRAME_BYTES);
        if let Err(end) = self.hello(stream, &mut reader) {
            return end;
        }
        let end = self.serve(stream, &mut reader);
        self.abandon_assembly("the connection ended");
        end
    }

    fn hello<S: Read + Write>(
        &mut self,
        stream: &mut S,
        reader: &mut FrameReader,
    ) -> Result<(), SessionEnd> {
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            node: self.node.clone(),
            software_version: env!("CARGO_PKG_VERSION").to_owned(),
            role: PeerRole::DataPlane {
                cores: self.cores,
                last_applied_version: self.applied_version,
            },
        };
        write_message(stream, &hello).map_err(|e| SessionEnd::Lost(e.to_string()))?;
        let deadline = Instant::now() + HELLO_TIMEOUT;
        let frame = loop {
            if self.stopping() {
                return Err(SessionEnd::Stopped);
            }
            match reader.next_frame(stream) {
                Ok(Some(frame)) => break frame,
                Ok(None) if Instant::now() < deadline => {}
                Ok(None) => {
                    return Err(SessionEnd::Lost(format!(
                        "no answer to the hello within {}s",
                        HELLO_TIMEOUT.as_secs()
                    )))
                }
                Err(e) => return Err(SessionEnd::Lost(e.to_string())),
            }
        };
        match wire::decode_body::<HelloReply>(frame.body()) {
            Ok(HelloReply::Welcome {
                protocol_version,
                node,
                software_version,
            }) if protocol_version == PROTOCOL_VERSION => {
                info!(node = %node, version = protocol_version, software_version = %software_version, "control plane connected");
                Ok(())
            }
            Ok(HelloReply::Welcome {
                protocol_version, ..
            }) => Err(SessionEnd::VersionMismatch(mismatch(protocol_version))),
            Ok(HelloReply::Refused { reason, .. }) => Err(SessionEnd::Refused(reason)),
            Err(e) => match peek_reply_version(frame.body()) {
                Some(theirs) if theirs != PROTOCOL_VERSION => {
                    Err(SessionEnd::VersionMismatch(mismatch(theirs)))
                }
                _ => Err(SessionEnd::Lost(format!("bad answer to the hello: {e}"))),
            },
        }
    }

    fn serve<S: Read + Write>(&mut self, stream: &mut S, reader: &mut FrameReader) -> SessionEnd {
        // The first figures go out at once, so the control plane has some
        // as soon as it lists this data plane.
        let mut last_figures: Option<Instant> = None;
        loop {
            if self.stopping() {
                return SessionEnd::Stopped;
            }
            if last_figures.is_none_or(|t| t.elapsed() >= FIGURES_PERIOD) {
                last_figures = Some(Instant::now());
                let figures = FromDataPlane::Figures(self.figures());
                if let Err(e) = write_message(stream, &figures) {
                    return SessionEnd::Lost(e.to_string());
                }
            }
            let frame = match reader.next_frame(stream) {
                Ok(Some(frame)) => frame,
                Ok(None) => continue,
                Err(e) => return SessionEnd::Lost(e.to_string()),
            };
            let message = match wire::decode_body::<ToDataPlane>(frame.body()) {
                Ok(m) => m,
                Err(e) => return SessionEnd::Lost(format!("bad message: {e}")),
            };
            for reply in self.on_message(&frame, message) {
                if let Err(e) = write_message(stream, &reply) {
                    return SessionEnd::Lost(e.to_string());
                }
            }
        }
    }

    /// What a message does, and the answers it gets.
    pub(crate) fn on_message(
        &mut self,
        frame: &RawFrame,
        message: ToDataPlane,
    ) -> Vec<FromDataPlane> {
        let mut replies = Vec::new();
        match message {
            ToDataPlane::Snapshot {
                version,
                part,
                last,
                resources,
            } => {
                let fits = self
                    .assembly
                    .as_ref()
                    .is_none_or(|a| a.version == version && a.next_part == part);
                if !fits {
                    replies.extend(self.abandon_assembly(&format!(
                        "part {part} of version {version} came in its place"
                    )));
                }
                replies.extend(self.on_snapshot_part(frame, version, part, last, resources));
            }
            ToDataPlane::Delta { version, changes } => {
                replies
                    .extend(self.abandon_assembly(&format!("delta {version} came in its place")));
                replies.push(self.on_delta(frame, version, changes));
            }
            ToDataPlane::KickDevice { request, device } => {
                let connections = match self.driver.kick(&device) {
                    Ok(n) => n,
                    Err(e) => {
                        warn!(device = %device, "cannot kick the device: {e}");
                        0
                    }
                };
                info!(device = %device, connections, "device kicked");
                replies.push(FromDataPlane::Kicked {
                    request,
                    connections,
                });
            }
            ToDataPlane::KickStream { request, stream } => {
                let publishers = match self.driver.kick_stream(&stream) {
                    Ok(n) => n,
                    Err(e) => {
                        warn!(stream = %stream, "cannot kick the stream's publisher: {e}");
                        0
                    }
                };
                info!(stream = %stream, publishers, "stream kicked");
                replies.push(FromDataPlane::StreamKicked {
                    request,
                    publishers,
                });
            }
            other => warn!("ignoring a control message this data plane does not know: {other:?}"),
        }
        replies
    }

    /// Drops a snapshot that will not be completed; its version is
    /// refused.
    fn abandon_assembly(&mut self, why: &str) -> Option<FromDataPlane> {
        let a = self.assembly.take()?;
        self.driver.discard_devices(a.ticket);
        if a.caching {
            if let Some(cache) = self.cache.as_mut() {
                cache.abandon_snapshot();
            }
        }
        let error = format!(
            "snapshot {} ended at part {} without its last part: {why}",
            a.version, a.next_part
        );
        warn!(version = a.version, "{error}");
        Some(FromDataPlane::Nack {
            version: a.version,
            error,
        })
    }

    fn on_snapshot_part(
        &mut self,
        frame: &RawFrame,
        version: u64,
        part: u32,
        last: bool,
        resources: Vec<Resource>,
    ) -> Option<FromDataPlane> {
        if self.assembly.is_none() {
            if part != 0 {
                return Some(FromDataPlane::Nack {
                    version,
                    error: format!("snapshot {version}: part {part} came without part 0"),
                });
            }
            let ticket = self.new_ticket();
            let error = self.driver.begin_devices(ticket, true).err();
            let caching = match self.cache.as_mut().map(Cache::begin_snapshot) {
                Some(Ok(())) => true,
                Some(Err(e)) => {
                    error!("the desired state will not be cached: {e}");
                    false
                }
                None => false,
            };
            self.assembly = Some(Assembly {
                version,
                next_part: 0,
                ticket,
                state: DesiredState::default(),
                error,
                caching,
            });
        }
        let a = self.assembly.as_mut()?;
        if a.caching {
            if let Some(Err(e)) = self.cache.as_mut().map(|c| c.write_snapshot_part(frame)) {
                error!("the desired state will not be cached: {e}");
                a.caching = false;
                if let Some(cache) = self.cache.as_mut() {
                    cache.abandon_snapshot();
                }
            }
        }
        let mut ops = Vec::new();
        for resource in resources {
            match a.state.add_from_snapshot(resource) {
                Ok(Some(op)) => ops.push(op),
                Ok(None) => {}
                Err(e) => {
                    a.error.get_or_insert(format!("snapshot {version}: {e}"));
                }
            }
        }
        let ticket = a.ticket;
        if a.error.is_none() && !ops.is_empty() {
            if let Err(e) = stage(&mut self.driver, ticket, ops) {
                if let Some(a) = self.assembly.as_mut() {
                    a.error.get_or_insert(e);
                }
            }
        }
        let a = self.assembly.as_mut()?;
        a.next_part = part + 1;
        if !last {
            return None;
        }
        let a = self.assembly.take()?;
        Some(self.finish_snapshot(a))
    }

    fn finish_snapshot(&mut self, a: Assembly) -> FromDataPlane {
        let version = a.version;
        let result = match a.error {
            Some(e) => Err(e),
            None => {
                let config = a.state.config(&self.runtime, &self.pools);
                let registry = RegistryCommit {
                    ticket: a.ticket,
                    products: a.state.product_names(),
                };
                self.driver.apply(config, registry)
            }
        };
        match result {
            Ok(summary) => {
                if a.caching {
                    if let Some(Err(e)) = self.cache.as_mut().map(Cache::commit_snapshot) {
                        error!(version, "applied, but the desired state is not cached: {e}");
                    }
                }
                info!(
                    version,
                    kind = "snapshot",
                    listeners = summary.listeners,
                    routes = summary.routes,
                    products = a.state.products.len(),
                    streams = a.state.streams.len(),
                    devices = summary.devices,
                    "applied version {version} from the control plane"
                );
                self.state = a.state;
                self.applied_version = version;
                FromDataPlane::Ack { version }
            }
            Err(error) => {
                self.driver.discard_devices(a.ticket);
                if a.caching {
                    if let Some(cache) = self.cache.as_mut() {
                        cache.abandon_snapshot();
                    }
                }
                warn!(
                    version,
                    running_version = self.applied_version,
                    "refused version {version} from the control plane: {error}"
                );
                FromDataPlane::Nack { version, error }
            }
        }
    }

    fn on_delta(&mut self, frame: &RawFrame, version: u64, changes: Vec<Change>) -> FromDataPlane {
        let count = changes.len();
        match self.apply_delta(version, changes) {
            Ok((next, summary)) => {
                if let Some(Err(e)) = self.cache.as_mut().map(|c| c.append_delta(frame)) {
                    error!(version, "applied, but the desired state is not cached: {e}");
                }
                info!(
                    version,
                    kind = "delta",
                    changes = count,
                    listeners = summary.listeners,
                    routes = summary.routes,
                    products = next.products.len(),
                    streams = next.streams.len(),
                    devices = summary.devices,
                    "applied version {version} from the control plane"
                );
                self.state = next;
                self.applied_version = version;
                FromDataPlane::Ack { version }
            }
            Err(error) => {
                warn!(
                    version,
                    running_version = self.applied_version,
                    "refused version {version} from the control plane: {error}"
                );
                FromDataPlane::Nack { version, error }
            }
        }
    }

    /// Applies a delta to a copy of the state and on every core; on error
    /// nothing changed.
    fn apply_delta(
        &mut self,
        version: u64,
        changes: Vec<Change>,
    ) -> Result<(DesiredState, super::ApplySummary), String> {
        if version <= self.applied_version {
            return Err(format!(
                "delta {version} is not newer than the applied version {}",
                self.applied_version
            ));
        }
        let mut next = self.state.clone();
        let mut ops: Vec<DeviceOp> = Vec::new();
        for (i, change) in changes.into_iter().enumerate() {
            if let Some(op) = next
                .apply_change(change)
                .map_err(|e| format!("change {i}: {e}"))?
            {
                ops.push(op);
            }
        }
        let ticket = self.new_ticket();
        let result = self.driver.begin_devices(ticket, false).and_then(|()| {
            stage(&mut self.driver, ticket, ops)?;
            let registry = RegistryCommit {
                ticket,
                products: next.product_names(),
            };
            self.driver
                .apply(next.config(&self.runtime, &self.pools), registry)
        });
        match result {
            Ok(summary) => Ok((next, summary)),
            Err(e) => {
                self.driver.discard_devices(ticket);
                Err(e)
            }
        }
    }

    /// The figures of the last second.
    pub(crate) fn figures(&mut self) -> PlaneFigures {
        if let Some(samples) = &self.samples {
            while let Ok(sample) = samples.try_recv() {
                let core = usize::from(sample.figures.core);
                if let Some(slot) = self.latest.get_mut(core) {
                    *slot = Some(sample);
                }
            }
        }
        let cores: Vec<&CoreSample> = self.latest.iter().flatten().collect();
        PlaneFigures {
            applied_version: self.applied_version,
            uptime_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            rss_bytes: rss_bytes().unwrap_or(0),
            registry_devices: cores.iter().map(|s| s.registry_devices).sum(),
            cores: cores.iter().map(|s| s.figures.clone()).collect(),
        }
    }
}

/// Hands device changes to the cores in bounded batches.
fn stage(driver: &mut impl PlaneDriver, ticket: u64, mut ops: Vec<DeviceOp>) -> Result<(), String> {
    while ops.len() > STAGE_BATCH {
        let rest = ops.split_off(STAGE_BATCH);
        driver.stage_devices(ticket, std::mem::replace(&mut ops, rest))?;
    }
    if ops.is_empty() {
        return Ok(());
    }
    driver.stage_devices(ticket, ops)
}

fn mismatch(theirs: u32) -> String {
    format!(
        "protocol version mismatch: this data plane speaks control protocol version \
         {PROTOCOL_VERSION}, the control plane speaks version {theirs}; run matching releases \
         of shoal-controlplane and shoal-dataplane"
    )
}

/// The protocol version of a hello reply this release cannot decode: the
/// variant index, then the version, both postcard varints.
pub(super) fn peek_reply_version(body: &[u8]) -> Option<u32> {
    let mut bytes = body.iter().copied();
    let variant = read_varint(&mut bytes)?;
    if variant > 1 {
        return None;
    }
    u32::try_from(read_varint(&mut bytes)?).ok()
}

fn read_varint(bytes: &mut impl Iterator<Item = u8>) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = bytes.next()?;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}
