//! The two kinds of sessions after the hello: shoalctl's request/response
//! loop on `control.sock`, and a data plane's snapshot, answers and
//! figures on `dataplane.sock`.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use shoal_protocols::control::{
    wire, ApiError, CliRequest, CliResponse, ControlError, ErrorCode, FrameBuffer, FromDataPlane,
    Hello, PeerRole,
};
use tracing::{debug, error, info, warn};

use crate::planes::{PlaneLink, SyncState};
use crate::service::ControlPlane;

/// How often a blocked read wakes up to look at the stop flag.
const READ_POLL: Duration = Duration::from_millis(200);
/// How long an answer to shoalctl may take to write.
const CLI_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// What one read from a connection gave.
#[derive(Debug)]
pub(crate) enum Received<T> {
    /// A whole message.
    Message(T),
    /// Nothing yet; the read timed out.
    Idle,
    /// The peer closed the connection.
    Closed,
}

/// Why a session ended early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The peer sent something that is not a message of ours.
    #[error("{0}")]
    Protocol(#[from] ControlError),
}

/// Reads control frames from a stream, waking up every [`READ_POLL`].
#[derive(Debug)]
pub(crate) struct FramedReader {
    stream: UnixStream,
    frames: FrameBuffer,
    chunk: Vec<u8>,
}

impl FramedReader {
    /// A reader over `stream`.
    pub(crate) fn new(stream: UnixStream) -> io::Result<Self> {
        stream.set_read_timeout(Some(READ_POLL))?;
        Ok(Self {
            stream,
            frames: FrameBuffer::new(wire::DEFAULT_MAX_FRAME_BYTES),
            chunk: vec![0; 64 * 1024],
        })
    }

    /// The next message, [`Received::Idle`] after a quiet poll period.
    pub(crate) fn next<T: DeserializeOwned>(&mut self) -> Result<Received<T>, SessionError> {
        loop {
            if let Some(message) = self.frames.next_message::<T>()? {
                return Ok(Received::Message(message));
            }
            match self.stream.read(&mut self.chunk) {
                Ok(0) => return Ok(Received::Closed),
                Ok(n) => self.frames.extend(self.chunk.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(Received::Idle)
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Serves shoalctl: one response per request until it hangs up or the
/// control plane stops.
pub(crate) fn serve_cli(
    cp: &ControlPlane,
    mut stream: UnixStream,
    stop: &AtomicBool,
) -> Result<(), SessionError> {
    stream.set_write_timeout(Some(CLI_WRITE_TIMEOUT))?;
    let mut reader = FramedReader::new(stream.try_clone()?)?;
    while !stop.load(Ordering::Relaxed) {
        let request = match reader.next::<CliRequest>() {
            Ok(Received::Message(request)) => request,
            Ok(Received::Idle) => continue,
            Ok(Received::Closed) => return Ok(()),
            Err(SessionError::Protocol(e)) => {
                // Answer once, then close: the stream is out of step.
                let answer = CliResponse::Error(ApiError {
                    code: ErrorCode::Invalid,
                    message: format!(
                        "{e}; run matching releases of shoalctl and shoal-controlplane"
                    ),
                });
                stream.write_all(&encode_response(&answer))?;
                return Err(e.into());
            }
            Err(e) => return Err(e),
        };
        let response = cp.handle(request);
        stream.write_all(&encode_response(&response))?;
    }
    Ok(())
}

/// One response frame; an answer too large for a frame becomes an error.
fn encode_response(response: &CliResponse) -> Vec<u8> {
    let fits = |frame: &Vec<u8>| {
        frame.len().saturating_sub(wire::LENGTH_PREFIX_BYTES)
            <= wire::DEFAULT_MAX_FRAME_BYTES as usize
    };
    match wire::encode_to_vec(response) {
        Ok(frame) if fits(&frame) => frame,
        Ok(frame) => encode_error(format!(
            "the answer takes {} bytes, more than a control frame may carry; ask for less \
             (one resource by name)",
            frame.len()
        )),
        Err(e) => encode_error(format!("cannot encode the answer: {e}")),
    }
}

fn encode_error(message: String) -> Vec<u8> {
    let answer = CliResponse::Error(ApiError {
        code: ErrorCode::Internal,
        message,
    });
    wire::encode_to_vec(&answer).unwrap_or_default()
}

/// Serves a data plane: sends its snapshot, then files its answers and
/// figures until it hangs up. Changes reach it from the apply path.
pub(crate) fn serve_data_plane(
    cp: &ControlPlane,
    stream: UnixStream,
    hello: &Hello,
) -> Result<(), SessionError> {
    let node = hello.node.as_str();
    if let PeerRole::DataPlane {
        cores,
        last_applied_version,
    } = hello.role
    {
        info!(node = %node, cores, last_applied_version, software_version = %hello.software_version, "data plane {node} connected");
    }
    let link = Arc::new(PlaneLink::new(stream.try_clone()?, cp.ack_timeout())?);
    let (id, sent) = cp.attach_plane(hello, &link);
    let result = match sent {
        Ok(sent) => {
            info!(
                node = %node,
                version = sent.version,
                parts = sent.parts,
                resources = sent.resources,
                "sent snapshot version {} to data plane {node}",
                sent.version
            );
            read_from_plane(cp, stream, node, id)
        }
        Err(e) => Err(e.into()),
    };
    link.close();
    cp.planes().disconnected(id);
    match &result {
        Ok(()) => info!(node = %node, "data plane {node} disconnected"),
        Err(e) => warn!(node = %node, "data plane {node} disconnected: {e}"),
    }
    result
}

fn read_from_plane(
    cp: &ControlPlane,
    stream: UnixStream,
    node: &str,
    id: crate::planes::PlaneId,
) -> Result<(), SessionError> {
    let mut reader = FramedReader::new(stream)?;
    loop {
        let message = match reader.next::<FromDataPlane>()? {
            Received::Message(m) => m,
            Received::Idle => continue,
            Received::Closed => return Ok(()),
        };
        match &message {
            FromDataPlane::Nack { version, error } => {
                error!(node = %node, version, "data plane {node} refused version {version}: {error}");
            }
            FromDataPlane::Ack { version } => {
                debug!(node = %node, version, "data plane {node} acked version {version}")
            }
            _ => {}
        }
        let version = match &message {
            FromDataPlane::Ack { version } => Some(*version),
            _ => None,
        };
        if let (Some((SyncState::Snapshot(_), SyncState::InSync(v))), Some(_)) =
            (cp.planes().record(id, message), version)
        {
            info!(node = %node, version = v, "data plane {node} applied snapshot version {v}");
        }
    }
}
