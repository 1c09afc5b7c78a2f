//! The control protocol: what `shoalctl`, the control plane and the data
//! planes say to each other over Unix sockets.
//!
//! Every frame is a 4-byte big-endian length and a postcard body
//! ([`wire`]). A connection opens with the client's [`Hello`]; the server
//! answers [`HelloReply`]. Both check [`PROTOCOL_VERSION`] and refuse a
//! peer that speaks another one, naming both versions. `Hello` keeps
//! `protocol_version` as its first field and `HelloReply` keeps its
//! variants' order forever, so any two versions can still tell each other
//! why they do not fit.
//!
//! On `dataplane.sock` the control plane pushes [`ToDataPlane`]: a full
//! snapshot (in parts) after the hello, then deltas, each with a version;
//! the data plane answers every one with [`FromDataPlane::Ack`] or
//! [`FromDataPlane::Nack`], and sends its figures every second.
//!
//! On `control.sock` the CLI sends one [`CliRequest`] at a time and gets one
//! [`CliResponse`].
//!
//! ```text
//! data plane                       control plane                      shoalctl
//!   Hello{DataPlane} ───────────▶                   ◀─────────── Hello{Cli}
//!              ◀─────────── Welcome                 Welcome ───────────▶
//!              ◀─────────── Snapshot{v, part 0..n, last}
//!   Ack{v} ─────────────────────▶                   ◀─────────── Apply{changes}
//!              ◀─────────── Delta{v+1, changes}
//!   Ack{v+1} ───────────────────▶                   Applied{v+1} ──────▶
//!   Figures (every second) ─────▶
//! ```
//!
//! Enums are append-only: new variants go at the end. A struct that gains
//! a field moves [`PROTOCOL_VERSION`].

mod document;
mod resources;
mod secret;
pub mod wire;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use document::{DesiredStateDocument, DeviceDoc, DocumentError, ProductDoc, StreamDoc};
pub use resources::{
    to_dataplane_config, Device, Framing, Identity, Listener, ListenerAuth, ListenerProtocol,
    Product, Resource, ResourceKey, ResourceKind, Route, RouteAction, Stream, Webhook,
};
pub use secret::{
    validate_secret, SecretDigest, MAX_SECRET_BYTES, MIN_SECRET_BYTES, SECRET_DIGEST_BYTES,
};
pub use wire::FrameBuffer;

use crate::figures::CoreFigures;

/// The version of this protocol. Both ends of a connection must speak the
/// same one.
pub const PROTOCOL_VERSION: u32 = 1;

/// Resources per snapshot part the control plane sends (a part stays well
/// under [`wire::DEFAULT_MAX_FRAME_BYTES`]).
pub const SNAPSHOT_PART_RESOURCES: usize = 8192;

/// Why a control frame could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The frame declares more bytes than the reader accepts.
    #[error("control frame of {frame_bytes} bytes exceeds the limit of {max_frame_bytes} bytes")]
    FrameTooLarge {
        /// Declared body size.
        frame_bytes: u64,
        /// The reader's limit.
        max_frame_bytes: u32,
    },
    /// The body is not a message of the expected type.
    #[error("malformed control message: {0}")]
    Malformed(String),
    /// The message could not be encoded.
    #[error("cannot encode control message: {0}")]
    Encode(String),
    /// The peer speaks another protocol version.
    #[error(
        "protocol version mismatch: this {ours_name} speaks control protocol version {ours}, \
         the {theirs_name} speaks version {theirs}; run matching releases of shoalctl, \
         shoal-controlplane and shoal-dataplane"
    )]
    VersionMismatch {
        /// Our version.
        ours: u32,
        /// What we are (`shoalctl`, `control plane`, `data plane`).
        ours_name: String,
        /// The peer's version.
        theirs: u32,
        /// What the peer is.
        theirs_name: String,
    },
}

/// Who opens a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum PeerRole {
    /// A data plane, on `dataplane.sock`.
    DataPlane {
        /// Cores it runs.
        cores: u16,
        /// Version of the config it runs now (0: none from a control plane).
        last_applied_version: u64,
    },
    /// The CLI, on `control.sock`.
    Cli,
}

impl PeerRole {
    /// How messages name this peer.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::DataPlane { .. } => "data plane",
            Self::Cli => "shoalctl",
        }
    }
}

/// The first frame of a connection, from the side that dialed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the sender. Always the first field.
    pub protocol_version: u32,
    /// The sender's node id (the host name unless configured).
    pub node: String,
    /// The sender's release (`CARGO_PKG_VERSION`).
    pub software_version: String,
    /// What the sender is.
    pub role: PeerRole,
}

impl Hello {
    /// The protocol version at the start of a `Hello` body, read even when
    /// the rest is of another version.
    pub fn peek_protocol_version(body: &[u8]) -> Option<u32> {
        postcard::take_from_bytes::<u32>(body).ok().map(|(v, _)| v)
    }
}

/// The answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    /// Accepted.
    Welcome {
        /// The server's [`PROTOCOL_VERSION`].
        protocol_version: u32,
        /// The server's node id.
        node: String,
        /// The server's release.
        software_version: String,
    },
    /// Refused; the connection closes after this frame.
    Refused {
        /// The server's [`PROTOCOL_VERSION`].
        protocol_version: u32,
        /// Why, for people.
        reason: String,
    },
}

/// One change to the desired state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Change {
    /// Create the resource, or replace the one with its kind and name.
    Upsert(Resource),
    /// Remove a resource.
    Remove(ResourceKey),
}

impl Change {
    /// The resource the change is about.
    pub fn key(&self) -> ResourceKey {
        match self {
            Self::Upsert(r) => r.key(),
            Self::Remove(k) => k.clone(),
        }
    }
}

/// From the control plane to a data plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ToDataPlane {
    /// One part of the full desired state at `version`. Parts come in order
    /// (`part` 0, 1, ...); the data plane applies the whole state when the
    /// part with `last` arrives and answers for `version` once. Resources
    /// come kind by kind in [`ResourceKind::ALL`] order; routes in their
    /// evaluation order.
    Snapshot {
        /// Version of the desired state.
        version: u64,
        /// Index of this part.
        part: u32,
        /// Whether this is the last part.
        last: bool,
        /// Resources of this part.
        resources: Vec<Resource>,
    },
    /// Changes that turn the state at `version - 1` into `version`. A new
    /// route is evaluated after the existing ones; an upserted route keeps
    /// its place.
    Delta {
        /// Version after the changes.
        version: u64,
        /// The changes, applied in order.
        changes: Vec<Change>,
    },
    /// Close the connections of a device. Answered by
    /// [`FromDataPlane::Kicked`].
    KickDevice {
        /// Matches the answer to the request.
        request: u64,
        /// The device's id.
        device: String,
    },
    /// End the publisher of a live stream, on whatever core it publishes
    /// to. Answered by [`FromDataPlane::StreamKicked`].
    KickStream {
        /// Matches the answer to the request.
        request: u64,
        /// The stream (`app/name`).
        stream: String,
    },
}

/// From a data plane to the control plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum FromDataPlane {
    /// `version` is applied on every core.
    Ack {
        /// The version.
        version: u64,
    },
    /// `version` was refused; the data plane runs what it ran before.
    Nack {
        /// The version.
        version: u64,
        /// Why, with the place (e.g. `core 1: listener "x": address in use`).
        error: String,
    },
    /// Live figures, every second.
    Figures(PlaneFigures),
    /// Answer to [`ToDataPlane::KickDevice`].
    Kicked {
        /// The request's number.
        request: u64,
        /// Connections closed.
        connections: u32,
    },
    /// Answer to [`ToDataPlane::KickStream`].
    StreamKicked {
        /// The request's number.
        request: u64,
        /// Publishers ended (0 or 1).
        publishers: u32,
    },
}

/// A data plane's live figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaneFigures {
    /// Config version running on every core.
    pub applied_version: u64,
    /// Milliseconds since the data plane started.
    pub uptime_ms: u64,
    /// Bytes of memory the process holds (resident set).
    pub rss_bytes: u64,
    /// Devices in the registry, summed over the cores.
    pub registry_devices: u64,
    /// One entry per core.
    pub cores: Vec<CoreFigures>,
}

/// A request from the CLI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CliRequest {
    /// The control plane, the data planes and what they run.
    Status,
    /// Resources of a kind, or one by name.
    Get {
        /// Kind.
        kind: ResourceKind,
        /// One resource, or all of the kind.
        name: Option<String>,
    },
    /// Validate the changes; unless `dry_run`, push them to the data planes
    /// and keep them once every connected data plane ACKed.
    Apply {
        /// The changes, applied in order.
        changes: Vec<Change>,
        /// Only validate and say what would change.
        dry_run: bool,
    },
    /// Live figures of every data plane.
    Figures,
    /// Close a device's connections on every data plane.
    KickDevice {
        /// The device's id.
        device: String,
    },
    /// End a live stream's publisher on every data plane.
    KickStream {
        /// The stream (`app/name`).
        stream: String,
    },
}

/// The answer to a [`CliRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CliResponse {
    /// For [`CliRequest::Status`].
    Status(StatusReport),
    /// For [`CliRequest::Get`], in the order a snapshot lists them.
    Resources(Vec<Resource>),
    /// For [`CliRequest::Apply`].
    Applied(ApplyReport),
    /// For [`CliRequest::Figures`].
    Figures(Vec<DataPlaneFigures>),
    /// For [`CliRequest::KickDevice`].
    Kicked {
        /// Connections closed, over every data plane.
        connections: u32,
    },
    /// The request failed.
    Error(ApiError),
    /// For [`CliRequest::KickStream`].
    StreamKicked {
        /// Publishers ended, over every data plane (0 or 1).
        publishers: u32,
    },
}

/// What an apply did, or would do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyReport {
    /// Version of the desired state now (unchanged for a dry run or a
    /// change that changed nothing).
    pub version: u64,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// One entry per changed resource.
    pub diff: Vec<DiffEntry>,
    /// Data planes that ACKed it.
    pub acked_by: Vec<String>,
    /// Set when no data plane was connected: the change is kept and goes
    /// out with the next snapshot.
    pub pending: bool,
}

/// One line of a diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffEntry {
    /// What happens to the resource.
    pub op: DiffOp,
    /// Which resource.
    pub key: ResourceKey,
    /// Field-level detail for people (may be empty).
    pub detail: String,
}

/// What happens to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum DiffOp {
    /// It is created.
    Add,
    /// It is replaced by a different one.
    Change,
    /// It is removed.
    Remove,
}

/// Why a CLI request failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// The class of failure (the CLI's exit code follows it).
    pub code: ErrorCode,
    /// What was wrong and what to do.
    pub message: String,
}

/// Classes of failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The request or the state it would make is invalid.
    Invalid,
    /// The resource does not exist.
    NotFound,
    /// A data plane refused the change; nothing was kept.
    Nacked,
    /// A data plane did not answer in time; nothing was kept.
    Timeout,
    /// The control plane failed (storage); nothing was kept.
    Internal,
}

/// The control plane, the data planes, and what they run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The control plane's node id.
    pub node: String,
    /// The control plane's release.
    pub software_version: String,
    /// Milliseconds since it started.
    pub uptime_ms: u64,
    /// Version of the desired state.
    pub desired_version: u64,
    /// Resources per kind, in [`ResourceKind::ALL`] order.
    pub counts: Vec<(ResourceKind, u64)>,
    /// Data planes that are or were connected since the control plane
    /// started.
    pub data_planes: Vec<DataPlaneStatus>,
}

/// One data plane as the control plane sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPlaneStatus {
    /// Its node id.
    pub node: String,
    /// Its release.
    pub software_version: String,
    /// Whether it is connected now.
    pub connected: bool,
    /// Cores it runs.
    pub cores: u16,
    /// Version it ACKed last.
    pub applied_version: u64,
    /// Its last NACK, if the last push was refused.
    pub last_error: Option<String>,
    /// Its latest figures.
    pub figures: PlaneFigures,
    /// Milliseconds since those figures arrived.
    pub figures_age_ms: u64,
}

/// A data plane's latest figures, for `shoalctl stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPlaneFigures {
    /// Its node id.
    pub node: String,
    /// Whether it is connected now.
    pub connected: bool,
    /// Its figures.
    pub figures: PlaneFigures,
    /// Milliseconds since they arrived.
    pub figures_age_ms: u64,
}
