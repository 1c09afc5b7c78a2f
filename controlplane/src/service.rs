//! The control plane's state and what it does with requests: validate a
//! change, push it to the data planes, store it once they all ACKed (or
//! undo it on the ones that did when one refused), and answer.
//!
//! One apply at a time: the store sits behind the apply lock, and a data
//! plane that connects takes its snapshot under the same lock, so it gets
//! every change exactly once (in its snapshot or as a delta after it).
//! Readers (`status`, `get`) use the in-memory copy behind a read-write
//! lock and do not wait for an apply's ACKs.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use shoal_protocols::control::{
    wire, ApiError, ApplyReport, Change, CliRequest, CliResponse, DiffEntry, ErrorCode, Hello,
    StatusReport, ToDataPlane,
};
use tracing::{error, info, warn};

use crate::planes::{lock, Answer, PlaneAnswer, PlaneId, PlaneLink, Planes, SyncState};
use crate::state::DesiredState;
use crate::store::Store;
use crate::validate::{self, Plan};

/// How long a kick waits for the data planes' answers.
const KICK_TIMEOUT: Duration = Duration::from_secs(5);

/// The running control plane, shared by every connection thread.
#[derive(Debug)]
pub(crate) struct ControlPlane {
    node: String,
    ack_timeout: Duration,
    started: Instant,
    apply_lock: Mutex<Store>,
    state: RwLock<DesiredState>,
    planes: Planes,
    kick_requests: AtomicU64,
}

/// What was sent to a data plane that connected.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SnapshotSent {
    /// Version of the snapshot.
    pub(crate) version: u64,
    /// Parts sent.
    pub(crate) parts: u32,
    /// Resources sent.
    pub(crate) resources: usize,
}

impl ControlPlane {
    /// A control plane named `node` over an opened store and its state.
    pub(crate) fn new(
        node: String,
        ack_timeout: Duration,
        store: Store,
        state: DesiredState,
    ) -> Self {
        Self {
            node,
            ack_timeout,
            started: Instant::now(),
            apply_lock: Mutex::new(store),
            state: RwLock::new(state),
            planes: Planes::default(),
            kick_requests: AtomicU64::new(1),
        }
    }

    /// The data planes.
    pub(crate) fn planes(&self) -> &Planes {
        &self.planes
    }

    /// The desired version.
    pub(crate) fn version(&self) -> u64 {
        self.read_state().version()
    }

    /// How long an apply waits for the data planes.
    pub(crate) fn ack_timeout(&self) -> Duration {
        self.ack_timeout
    }

    fn read_state(&self) -> RwLockReadGuard<'_, DesiredState> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, DesiredState> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the store answers; an apply in flight counts as alive (it
    /// ends within the ACK timeout).
    pub(crate) fn store_alive(&self) -> bool {
        match self.apply_lock.try_lock() {
            Ok(store) => store.is_alive(),
            Err(std::sync::TryLockError::WouldBlock) => true,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner().is_alive(),
        }
    }

    /// Waits until no apply is in flight (at shutdown).
    pub(crate) fn wait_for_applies(&self) {
        drop(lock(&self.apply_lock));
    }

    /// Registers a data plane that said hello and sends it the snapshot,
    /// under the apply lock.
    pub(crate) fn attach_plane(
        &self,
        hello: &Hello,
        link: &Arc<PlaneLink>,
    ) -> (PlaneId, io::Result<SnapshotSent>) {
        let _apply = lock(&self.apply_lock);
        let state = self.read_state();
        let id = self
            .planes
            .register(hello, Arc::clone(link), state.version());
        (id, send_snapshot(link, &state))
    }

    /// Answers one CLI request.
    pub(crate) fn handle(&self, request: CliRequest) -> CliResponse {
        match request {
            CliRequest::Status => CliResponse::Status(self.status()),
            CliRequest::Get { kind, name } => match self.read_state().get(kind, name.as_deref()) {
                Ok(resources) => CliResponse::Resources(resources),
                Err(e) => CliResponse::Error(e),
            },
            CliRequest::Apply { changes, dry_run } => self.apply(&changes, dry_run),
            CliRequest::Figures => CliResponse::Figures(self.planes.figures()),
            CliRequest::KickDevice { device } => self.kick(device),
            CliRequest::KickStream { stream } => self.kick_stream(stream),
            _ => CliResponse::Error(ApiError {
                code: ErrorCode::Invalid,
                message: "this control plane does not know the request; run matching releases \
                          of shoalctl and shoal-controlplane"
                    .to_owned(),
            }),
        }
    }

    fn status(&self) -> StatusReport {
        let (desired_version, counts) = {
            let state = self.read_state();
            (state.version(), state.counts())
        };
        StatusReport {
            node: self.node.clone(),
            software_version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            desired_version,
            counts,
            data_planes: self.planes.statuses(),
        }
    }

    fn kick(&self, device: String) -> CliResponse {
        let request = self.kick_requests.fetch_add(1, Ordering::Relaxed);
        let message = ToDataPlane::KickDevice {
            request,
            device: device.clone(),
        };
        let frame = match wire::encode_to_vec(&message) {
            Ok(f) => f,
            Err(e) => return internal(format!("cannot encode the kick: {e}")),
        };
        let connections = self.planes.kick(request, &frame, KICK_TIMEOUT);
        info!(device = %device, connections, "kicked device {device:?}: {connections} connections closed");
        CliResponse::Kicked { connections }
    }

    /// Ends a live stream's publisher on whichever data plane and core it
    /// publishes to. Stream kicks share the request numbers (and the
    /// answer queue, see [`Planes::kick`]) with device kicks.
    fn kick_stream(&self, stream: String) -> CliResponse {
        let request = self.kick_requests.fetch_add(1, Ordering::Relaxed);
        let message = ToDataPlane::KickStream {
            request,
            stream: stream.clone(),
        };
        let frame = match wire::encode_to_vec(&message) {
            Ok(f) => f,
            Err(e) => return internal(format!("cannot encode the stream kick: {e}")),
        };
        let publishers = self.planes.kick(request, &frame, KICK_TIMEOUT);
        info!(stream = %stream, publishers, "kicked stream {stream:?}: {publishers} publishers ended");
        CliResponse::StreamKicked { publishers }
    }

    /// Validates, pushes, stores and answers one change.
    fn apply(&self, changes: &[Change], dry_run: bool) -> CliResponse {
        let store = lock(&self.apply_lock);
        let (plan, current) = {
            let state = self.read_state();
            (validate::plan(&state, changes), state.version())
        };
        let plan = match plan {
            Ok(plan) => plan,
            Err(e) => {
                warn!(code = ?e.code, "refused a change: {}", e.message);
                return CliResponse::Error(e);
            }
        };
        if dry_run || plan.diff.is_empty() {
            return applied(current, dry_run, plan.diff, Vec::new(), false);
        }
        let Plan {
            small,
            diff,
            forward,
            inverse,
        } = plan;
        let next = current + 1;
        let delta = ToDataPlane::Delta {
            version: next,
            changes: forward,
        };
        let frame = match encode_push(&delta) {
            Ok(frame) => frame,
            Err(e) => {
                warn!("refused a change: {}", e.message);
                return CliResponse::Error(e);
            }
        };
        let ToDataPlane::Delta {
            changes: forward, ..
        } = delta
        else {
            return internal("delta lost its changes".to_owned());
        };
        let targets = self.planes.targets();
        let push_started = Instant::now();
        let answers = if targets.is_empty() {
            Vec::new()
        } else {
            self.planes.push(&targets, next, &frame, self.ack_timeout)
        };
        let push_ms = push_started.elapsed().as_millis();
        let ackers: Vec<&PlaneAnswer> =
            answers.iter().filter(|a| a.answer == Answer::Ack).collect();
        let ack_ids: Vec<PlaneId> = ackers.iter().map(|a| a.id).collect();
        let failed: Vec<&PlaneAnswer> = answers
            .iter()
            .filter(|a| matches!(a.answer, Answer::Nack(_) | Answer::Silent(_)))
            .collect();
        if !failed.is_empty() {
            return self.refused_by_planes(&store, next, &failed, &ack_ids, &inverse);
        }
        let store_started = Instant::now();
        if let Err(e) = store.commit(next, &forward, |name| small.route(name).map(|r| r.order)) {
            error!("cannot store version {next}: {e}");
            self.undo(&store, next, &ack_ids, &inverse);
            return internal(format!("cannot store the change: {e}; nothing was changed"));
        }
        let store_ms = store_started.elapsed().as_millis();
        self.write_state().commit(next, &forward, small);
        self.planes.set_sync(&ack_ids, SyncState::InSync(next));
        let acked_by: Vec<String> = ackers.iter().map(|a| a.node.clone()).collect();
        let pending = acked_by.is_empty();
        info!(
            version = next,
            changes = diff.len(),
            pending,
            push_ms,
            store_ms,
            "applied version {next} ({} changes) acked by [{}]",
            diff.len(),
            acked_by.join(", ")
        );
        self.resync_refused_planes();
        applied(next, false, diff, acked_by, pending)
    }

    /// A data plane refused the change or did not answer: nothing is
    /// kept, the planes that took it take it back.
    fn refused_by_planes(
        &self,
        store: &Store,
        next: u64,
        failed: &[&PlaneAnswer],
        ack_ids: &[PlaneId],
        inverse: &[Change],
    ) -> CliResponse {
        let mut code = ErrorCode::Timeout;
        let mut reasons = Vec::new();
        let mut nackers = Vec::new();
        for a in failed {
            match &a.answer {
                Answer::Nack(error) => {
                    code = ErrorCode::Nacked;
                    nackers.push(a.id);
                    reasons.push(format!("{}: {error}", a.node));
                }
                Answer::Silent(why) => {
                    warn!(node = %a.node, "data plane {} did not answer version {next} ({why}); closing its connection, it gets a snapshot when it dials again", a.node);
                    self.planes.drop_plane(a.id);
                    reasons.push(format!("{}: {why}", a.node));
                }
                _ => {}
            }
        }
        self.undo(store, next, ack_ids, inverse);
        // They kept the content of the version before, which is also the
        // content of the version after the undo.
        self.planes.set_sync(&nackers, SyncState::InSync(next + 1));
        let message = format!("{}; nothing was changed", reasons.join("; "));
        warn!(code = ?code, "refused a change: {message}");
        CliResponse::Error(ApiError { code, message })
    }

    /// Brings the planes that applied version `next` back to the state
    /// before it (as version `next + 1`), and moves the stored version to
    /// `next + 1` so no version number is used twice.
    fn undo(&self, store: &Store, next: u64, ack_ids: &[PlaneId], inverse: &[Change]) {
        let undo_version = next + 1;
        if !ack_ids.is_empty() {
            let delta = ToDataPlane::Delta {
                version: undo_version,
                changes: inverse.to_vec(),
            };
            match wire::encode_to_vec(&delta) {
                Ok(frame) => {
                    let answers = self
                        .planes
                        .push(ack_ids, undo_version, &frame, self.ack_timeout);
                    for a in answers {
                        if a.answer == Answer::Ack {
                            self.planes
                                .set_sync(&[a.id], SyncState::InSync(undo_version));
                        } else {
                            error!(node = %a.node, "data plane {} did not take back version {next} ({:?}); closing its connection so it resyncs", a.node, a.answer);
                            self.planes.drop_plane(a.id);
                        }
                    }
                }
                Err(e) => {
                    error!("cannot encode the undo of version {next}: {e}; closing the connections of the data planes that applied it");
                    for id in ack_ids {
                        self.planes.drop_plane(*id);
                    }
                }
            }
        }
        if let Err(e) = store.set_version(undo_version) {
            error!("cannot store version {undo_version}: {e}");
        }
        self.write_state().set_version(undo_version);
    }

    /// Sends a fresh snapshot to every plane that refused its last one
    /// (the change may have fixed what it refused). Called under the
    /// apply lock.
    fn resync_refused_planes(&self) {
        let refused = self.planes.refused();
        if refused.is_empty() {
            return;
        }
        let state = self.read_state();
        for (id, node, link) in refused {
            self.planes
                .set_sync(&[id], SyncState::Snapshot(state.version()));
            match send_snapshot(&link, &state) {
                Ok(sent) => {
                    info!(node = %node, version = sent.version, "sent a new snapshot to data plane {node}, which refused the last one")
                }
                Err(e) => {
                    warn!(node = %node, "cannot send a snapshot to data plane {node}: {e}");
                    self.planes.drop_plane(id);
                }
            }
        }
    }
}

fn applied(
    version: u64,
    dry_run: bool,
    diff: Vec<DiffEntry>,
    acked_by: Vec<String>,
    pending: bool,
) -> CliResponse {
    CliResponse::Applied(ApplyReport {
        version,
        dry_run,
        diff,
        acked_by,
        pending,
    })
}

fn internal(message: String) -> CliResponse {
    CliResponse::Error(ApiError {
        code: ErrorCode::Internal,
        message,
    })
}

/// Encodes a push, refusing one a data plane would not read.
fn encode_push(message: &ToDataPlane) -> Result<Vec<u8>, ApiError> {
    let frame = wire::encode_to_vec(message).map_err(|e| ApiError {
        code: ErrorCode::Internal,
        message: format!("cannot encode the change: {e}"),
    })?;
    let body_bytes = frame.len().saturating_sub(wire::LENGTH_PREFIX_BYTES);
    if body_bytes > wire::DEFAULT_MAX_FRAME_BYTES as usize {
        return Err(ApiError {
            code: ErrorCode::Invalid,
            message: format!(
                "the change takes {body_bytes} bytes, more than one push may carry ({} bytes); \
                 send it in smaller batches",
                wire::DEFAULT_MAX_FRAME_BYTES
            ),
        });
    }
    Ok(frame)
}

/// Writes `state` to `link` as snapshot parts.
pub(crate) fn send_snapshot(link: &PlaneLink, state: &DesiredState) -> io::Result<SnapshotSent> {
    let mut sent = SnapshotSent {
        version: state.version(),
        parts: 0,
        resources: 0,
    };
    let mut frame = Vec::new();
    for part in state.snapshot_parts() {
        if let ToDataPlane::Snapshot { resources, .. } = &part {
            sent.resources += resources.len();
        }
        frame.clear();
        wire::encode(&part, &mut frame).map_err(io::Error::other)?;
        link.send(&frame)?;
        sent.parts += 1;
    }
    Ok(sent)
}
