//! The start of every connection: who is on the other end (SO_PEERCRED),
//! whether it may talk to us, and its `Hello`.
//!
//! A peer that is not allowed, speaks another protocol version or dialed
//! the wrong socket gets `HelloReply::Refused` with the reason and the
//! connection closes.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shoal_protocols::control::{wire, ControlError, Hello, HelloReply, PeerRole, PROTOCOL_VERSION};
use tracing::warn;

/// Largest hello accepted (a hello is a few dozen bytes).
const MAX_HELLO_BYTES: u32 = 64 * 1024;
/// How long a peer has to send its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Which of our two sockets a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `control.sock`, for shoalctl.
    Control,
    /// `dataplane.sock`, for data planes.
    DataPlane,
}

impl Endpoint {
    /// The socket's file name.
    pub(crate) fn file_name(self) -> &'static str {
        match self {
            Self::Control => "control.sock",
            Self::DataPlane => "dataplane.sock",
        }
    }

    fn peer_name(self) -> &'static str {
        match self {
            Self::Control => "shoalctl",
            Self::DataPlane => "data plane",
        }
    }
}

/// The process on the other end of a Unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PeerCredentials {
    /// Its process id.
    pub(crate) pid: i32,
    /// Its user id.
    pub(crate) uid: u32,
    /// Its primary group id.
    pub(crate) gid: u32,
    /// Its supplementary groups (empty where the kernel cannot say).
    pub(crate) groups: Vec<u32>,
}

/// Reads the peer's credentials of a connected Unix socket.
pub(crate) fn peer_credentials(stream: &UnixStream) -> io::Result<PeerCredentials> {
    let fd = stream.as_raw_fd();
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a valid, writable `ucred` and `len` holds its size;
    // the kernel writes at most `len` bytes and updates `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(PeerCredentials {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
        groups: peer_groups(stream),
    })
}

/// `SO_PEERGROUPS` (Linux 4.13+), where it has the generic value.
#[cfg(all(
    target_os = "linux",
    not(any(
        target_arch = "mips",
        target_arch = "mips64",
        target_arch = "sparc",
        target_arch = "sparc64"
    ))
))]
const SO_PEERGROUPS: libc::c_int = 59;

/// The peer's supplementary groups; empty when the kernel cannot say.
#[cfg(all(
    target_os = "linux",
    not(any(
        target_arch = "mips",
        target_arch = "mips64",
        target_arch = "sparc",
        target_arch = "sparc64"
    ))
))]
fn peer_groups(stream: &UnixStream) -> Vec<u32> {
    let mut groups = vec![0 as libc::gid_t; 256];
    let mut len = (groups.len() * size_of::<libc::gid_t>()) as libc::socklen_t;
    // SAFETY: `groups` is a writable buffer of `len` bytes; the kernel
    // writes at most `len` bytes and sets `len` to what it wrote.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PEERGROUPS,
            groups.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Vec::new();
    }
    groups.truncate(len as usize / size_of::<libc::gid_t>());
    groups
}

#[cfg(not(all(
    target_os = "linux",
    not(any(
        target_arch = "mips",
        target_arch = "mips64",
        target_arch = "sparc",
        target_arch = "sparc64"
    ))
)))]
fn peer_groups(_stream: &UnixStream) -> Vec<u32> {
    Vec::new()
}

/// Who may use the sockets.
#[derive(Debug, Clone)]
pub(crate) struct AccessPolicy {
    /// This process's effective uid (always allowed, as is root).
    pub(crate) own_uid: u32,
    /// Further users allowed (`--allow-uid`).
    pub(crate) uids: Vec<u32>,
    /// Groups allowed (`--allow-gid`): a peer whose primary or
    /// supplementary group is one of them.
    pub(crate) gids: Vec<u32>,
}

impl AccessPolicy {
    /// Whether `peer` may talk to us.
    pub(crate) fn permits(&self, peer: &PeerCredentials) -> bool {
        peer.uid == 0
            || peer.uid == self.own_uid
            || self.uids.contains(&peer.uid)
            || self.gids.contains(&peer.gid)
            || peer.groups.iter().any(|g| self.gids.contains(g))
    }

    fn allowed_uids(&self) -> Vec<u32> {
        let mut uids = vec![0, self.own_uid];
        uids.extend(&self.uids);
        uids.sort_unstable();
        uids.dedup();
        uids
    }
}

/// Why a connection did not get past its hello.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    /// The socket failed or the peer left.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The peer was refused, and told why.
    #[error("refused: {0}")]
    Refused(String),
}

/// Where a connection came in, for logs and refusals.
#[derive(Debug, Clone)]
pub(crate) struct Doorway {
    /// Which socket.
    pub(crate) endpoint: Endpoint,
    /// Its path.
    pub(crate) path: PathBuf,
    /// Who may use it.
    pub(crate) access: AccessPolicy,
    /// Our node id, in the welcome.
    pub(crate) node: String,
}

impl Doorway {
    /// Checks the peer, reads its hello and answers it. On success the
    /// stream is ready for the session and the hello is returned.
    pub(crate) fn admit(&self, stream: &mut UnixStream) -> Result<Hello, HandshakeError> {
        let peer = peer_credentials(stream)?;
        stream.set_read_timeout(Some(HELLO_TIMEOUT))?;
        stream.set_write_timeout(Some(HELLO_TIMEOUT))?;
        let body = read_hello_body(stream)?;
        if !self.access.permits(&peer) {
            warn!(
                socket = %self.path.display(),
                pid = peer.pid,
                uid = peer.uid,
                gid = peer.gid,
                allowed_uids = ?self.access.allowed_uids(),
                allowed_gids = ?self.access.gids,
                "refused a connection from a peer that is not allowed"
            );
            let reason = format!(
                "uid {} (gid {}) may not use {}; allow it on the control plane with \
                 `shoal-controlplane run --allow-uid {}` or `--allow-gid <a group of that user>`",
                peer.uid,
                peer.gid,
                self.path.display(),
                peer.uid
            );
            return Err(self.refuse(stream, reason));
        }
        let theirs = Hello::peek_protocol_version(&body);
        if theirs != Some(PROTOCOL_VERSION) {
            let reason = match theirs {
                Some(theirs) => ControlError::VersionMismatch {
                    ours: PROTOCOL_VERSION,
                    ours_name: "control plane".to_owned(),
                    theirs,
                    theirs_name: self.endpoint.peer_name().to_owned(),
                }
                .to_string(),
                None => "the first frame is not a hello".to_owned(),
            };
            warn!(socket = %self.path.display(), pid = peer.pid, uid = peer.uid, "refused a connection: {reason}");
            return Err(self.refuse(stream, reason));
        }
        let hello: Hello = match wire::decode_body(&body) {
            Ok(h) => h,
            Err(e) => {
                let reason = format!("malformed hello: {e}");
                warn!(socket = %self.path.display(), pid = peer.pid, "refused a connection: {reason}");
                return Err(self.refuse(stream, reason));
            }
        };
        let role_fits = matches!(
            (&hello.role, self.endpoint),
            (PeerRole::Cli, Endpoint::Control) | (PeerRole::DataPlane { .. }, Endpoint::DataPlane)
        );
        if !role_fits {
            let reason = format!(
                "{} is the socket for {}s, and a {} dialed it; {}",
                self.path.display(),
                self.endpoint.peer_name(),
                hello.role.describe(),
                match self.endpoint {
                    Endpoint::Control => "data planes dial dataplane.sock",
                    Endpoint::DataPlane => "shoalctl dials control.sock",
                }
            );
            warn!(socket = %self.path.display(), node = %hello.node, "refused a connection: {reason}");
            return Err(self.refuse(stream, reason));
        }
        let welcome = HelloReply::Welcome {
            protocol_version: PROTOCOL_VERSION,
            node: self.node.clone(),
            software_version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let frame = wire::encode_to_vec(&welcome).map_err(io::Error::other)?;
        stream.write_all(&frame)?;
        stream.set_write_timeout(None)?;
        Ok(hello)
    }

    fn refuse(&self, stream: &mut UnixStream, reason: String) -> HandshakeError {
        let reply = HelloReply::Refused {
            protocol_version: PROTOCOL_VERSION,
            reason: reason.clone(),
        };
        if let Ok(frame) = wire::encode_to_vec(&reply) {
            let _ = stream.write_all(&frame);
        }
        let _ = stream.shutdown(std::net::Shutdown::Both);
        HandshakeError::Refused(reason)
    }
}

/// Reads the first frame's body, bounded by [`MAX_HELLO_BYTES`].
fn read_hello_body(stream: &mut UnixStream) -> io::Result<Vec<u8>> {
    let mut prefix = [0u8; wire::LENGTH_PREFIX_BYTES];
    stream.read_exact(&mut prefix)?;
    let len = wire::declared_len(&prefix, MAX_HELLO_BYTES)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    Ok(body)
}

/// The path of `endpoint`'s socket in `dir`.
pub(crate) fn socket_path(dir: &Path, endpoint: Endpoint) -> PathBuf {
    dir.join(endpoint.file_name())
}
