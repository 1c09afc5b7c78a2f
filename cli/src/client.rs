//! The connection to the control plane: hello, then one request and one
//! response at a time.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde::de::DeserializeOwned;
use shoal_protocols::control::{
    wire, CliRequest, CliResponse, ControlError, FrameBuffer, Hello, HelloReply, PeerRole,
    PROTOCOL_VERSION,
};

use crate::error::{CliError, CliResult};
use crate::socket::{host_name, unreachable_message, ResolvedSocket};

/// How long to wait for an answer: the control plane waits up to 30 s for
/// the data planes to acknowledge a change, so twice that.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// The control plane as the welcome described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerInfo {
    /// Its node id.
    pub(crate) node: String,
    /// Its release.
    pub(crate) software_version: String,
}

/// A connection to the control plane after a successful hello.
#[derive(Debug)]
pub(crate) struct ControlClient {
    stream: UnixStream,
    frames: FrameBuffer,
    read_chunk: Vec<u8>,
    read_timeout: Duration,
    /// Who answered.
    pub(crate) server: ServerInfo,
}

impl ControlClient {
    /// Dials `socket` and says hello.
    pub(crate) fn connect(socket: &ResolvedSocket) -> CliResult<Self> {
        let stream = UnixStream::connect(&socket.path)
            .map_err(|e| CliError::runtime(unreachable_message(socket, &e)))?;
        Self::handshake(stream, READ_TIMEOUT).map_err(|e| e.context(socket.path.display()))
    }

    /// Says hello on a connected stream and checks the answer.
    pub(crate) fn handshake(stream: UnixStream, read_timeout: Duration) -> CliResult<Self> {
        stream
            .set_read_timeout(Some(read_timeout))
            .and_then(|()| stream.set_write_timeout(Some(read_timeout)))
            .map_err(|e| CliError::runtime(format!("cannot set socket timeouts: {e}")))?;
        let mut client = Self {
            stream,
            frames: FrameBuffer::new(wire::DEFAULT_MAX_FRAME_BYTES),
            read_chunk: vec![0; READ_CHUNK_BYTES],
            read_timeout,
            server: ServerInfo {
                node: String::new(),
                software_version: String::new(),
            },
        };
        client.send(&Hello {
            protocol_version: PROTOCOL_VERSION,
            node: host_name(),
            software_version: env!("CARGO_PKG_VERSION").to_owned(),
            role: PeerRole::Cli,
        })?;
        match client.receive::<HelloReply>()? {
            HelloReply::Welcome {
                protocol_version,
                node,
                software_version,
            } => {
                if protocol_version != PROTOCOL_VERSION {
                    return Err(CliError::runtime(
                        ControlError::VersionMismatch {
                            ours: PROTOCOL_VERSION,
                            ours_name: "shoalctl".to_owned(),
                            theirs: protocol_version,
                            theirs_name: "control plane".to_owned(),
                        }
                        .to_string(),
                    ));
                }
                client.server = ServerInfo {
                    node,
                    software_version,
                };
                Ok(client)
            }
            HelloReply::Refused { reason, .. } => Err(CliError::runtime(format!(
                "the control plane refused this connection: {reason}"
            ))),
        }
    }

    /// Sends `request` and returns the answer; [`CliResponse::Error`] comes
    /// back as an error with the control plane's class and message.
    pub(crate) fn call(&mut self, request: &CliRequest) -> CliResult<CliResponse> {
        self.send(request)?;
        match self.receive::<CliResponse>()? {
            CliResponse::Error(e) => Err(CliError::from(e)),
            other => Ok(other),
        }
    }

    fn send<T: serde::Serialize>(&mut self, message: &T) -> CliResult {
        let frame = wire::encode_to_vec(message)
            .map_err(|e| CliError::runtime(format!("cannot encode the request: {e}")))?;
        let body_bytes = frame.len() - wire::LENGTH_PREFIX_BYTES;
        if body_bytes > wire::DEFAULT_MAX_FRAME_BYTES as usize {
            return Err(CliError::invalid(format!(
                "the request is {body_bytes} bytes, more than the control protocol's limit of {} \
                 bytes; send fewer changes at once",
                wire::DEFAULT_MAX_FRAME_BYTES
            )));
        }
        self.stream
            .write_all(&frame)
            .map_err(|e| CliError::runtime(format!("cannot send to the control plane: {e}")))
    }

    fn receive<T: DeserializeOwned>(&mut self) -> CliResult<T> {
        loop {
            match self.frames.next_message::<T>() {
                Ok(Some(message)) => return Ok(message),
                Ok(None) => {}
                Err(e) => {
                    return Err(CliError::runtime(format!(
                        "the control plane sent an answer this shoalctl cannot read ({e}); \
                         run matching releases of shoalctl and shoal-controlplane"
                    )))
                }
            }
            let read = match self.stream.read(&mut self.read_chunk) {
                Ok(0) => {
                    return Err(CliError::runtime(
                        "the control plane closed the connection without answering \
                         (see its log: journalctl -u shoal-controlplane)",
                    ))
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(CliError::runtime(format!(
                        "the control plane did not answer within {}",
                        humantime::format_duration(self.read_timeout)
                    )))
                }
                Err(e) => {
                    return Err(CliError::runtime(format!(
                        "cannot read from the control plane: {e}"
                    )))
                }
            };
            let bytes = self.read_chunk.get(..read).unwrap_or_default();
            self.frames.extend(bytes);
        }
    }
}

/// An answer of the wrong kind for the request.
pub(crate) fn unexpected(expected: &str, got: &CliResponse) -> CliError {
    let got = match got {
        CliResponse::Status(_) => "a status report",
        CliResponse::Resources(_) => "a resource list",
        CliResponse::Applied(_) => "an apply report",
        CliResponse::Figures(_) => "figures",
        CliResponse::Kicked { .. } => "a kick report",
        CliResponse::StreamKicked { .. } => "a stream kick report",
        CliResponse::Error(_) => "an error",
        _ => "an answer this shoalctl does not know",
    };
    CliError::runtime(format!(
        "the control plane answered with {got} where {expected} was expected; \
         run matching releases of shoalctl and shoal-controlplane"
    ))
}
