//! Where the control plane's socket is, and what to tell people when it
//! cannot be reached.
//!
//! Order: `--socket PATH`, then `SHOAL_SOCKET`, then `./.shoal/control.sock`
//! when it exists (what `shoalctl up` starts), then
//! `/run/shoal/control.sock` (the systemd service).

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The environment variable that names the socket.
pub(crate) const SOCKET_ENV: &str = "SHOAL_SOCKET";
/// The socket of a local control plane started by `shoalctl up`, relative
/// to the working directory.
pub(crate) const LOCAL_SOCKET: &str = ".shoal/control.sock";
/// The socket of the systemd service.
pub(crate) const SYSTEM_SOCKET: &str = "/run/shoal/control.sock";

/// Where a socket path came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SocketSource {
    /// `--socket`.
    Flag,
    /// `SHOAL_SOCKET`.
    Env,
    /// `./.shoal/control.sock` existed.
    LocalDir,
    /// The system default.
    System,
}

impl fmt::Display for SocketSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Flag => "from --socket",
            Self::Env => "from SHOAL_SOCKET",
            Self::LocalDir => "the local ./.shoal/control.sock",
            Self::System => "the system default",
        })
    }
}

/// The socket to dial and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResolvedSocket {
    /// The path.
    pub(crate) path: PathBuf,
    /// Where it came from.
    pub(crate) source: SocketSource,
}

/// Picks the socket: `flag`, else `env` (when not empty), else
/// `cwd/.shoal/control.sock` when it exists, else the system default.
pub(crate) fn resolve(flag: Option<&Path>, env: Option<OsString>, cwd: &Path) -> ResolvedSocket {
    if let Some(path) = flag {
        return ResolvedSocket {
            path: path.to_owned(),
            source: SocketSource::Flag,
        };
    }
    if let Some(value) = env.filter(|v| !v.is_empty()) {
        return ResolvedSocket {
            path: PathBuf::from(value),
            source: SocketSource::Env,
        };
    }
    let local = cwd.join(LOCAL_SOCKET);
    if local.exists() {
        return ResolvedSocket {
            path: local,
            source: SocketSource::LocalDir,
        };
    }
    ResolvedSocket {
        path: PathBuf::from(SYSTEM_SOCKET),
        source: SocketSource::System,
    }
}

/// Resolves the socket for this process: its flag, its environment and
/// its working directory.
pub(crate) fn resolve_for_process(flag: Option<&Path>) -> ResolvedSocket {
    resolve(flag, std::env::var_os(SOCKET_ENV), Path::new("."))
}

/// The hint printed under every "cannot reach" message but a permission
/// one.
pub(crate) const NOT_RUNNING_HINT: &str = "is it running? check: systemctl status shoal-controlplane  (or start a local one: shoalctl up)";

/// The message for a socket that could not be dialed: the error, then a
/// line that says what to do.
pub(crate) fn unreachable_message(socket: &ResolvedSocket, error: &io::Error) -> String {
    let path = socket.path.display();
    let mut message = format!("cannot reach the control plane at {path}: {error}");
    match error.kind() {
        io::ErrorKind::NotFound => {
            message.push_str(&format!(
                "\n{path} does not exist ({}; --socket or {SOCKET_ENV} pick another)",
                socket.source
            ));
            message.push('\n');
            message.push_str(NOT_RUNNING_HINT);
        }
        io::ErrorKind::PermissionDenied => {
            message.push('\n');
            message.push_str(&permission_hint(&socket.path));
        }
        io::ErrorKind::ConnectionRefused => {
            message.push_str(&format!(
                "\nnothing listens on {path} (a socket file left by a control plane that stopped?)"
            ));
            message.push('\n');
            message.push_str(NOT_RUNNING_HINT);
        }
        _ => {
            message.push('\n');
            message.push_str(NOT_RUNNING_HINT);
        }
    }
    message
}

/// What to do when the socket's permissions keep this user out.
fn permission_hint(path: &Path) -> String {
    // SAFETY: getuid takes no arguments and cannot fail.
    let uid = unsafe { libc::getuid() };
    let group = match std::fs::metadata(path) {
        Ok(meta) => {
            let gid = meta.gid();
            match group_name(gid) {
                Some(name) => format!("group {name} (gid {gid})"),
                None => format!("gid {gid}"),
            }
        }
        Err(_) => "the socket's group".to_owned(),
    };
    format!(
        "permission denied for uid {uid}: join the socket's {group}, or have the control plane \
         allow you with --allow-uid {uid} or --allow-gid <one of your groups>"
    )
}

/// The name of group `gid` from `/etc/group`.
fn group_name(gid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let _password = fields.next()?;
        let id: u32 = fields.next()?.parse().ok()?;
        (id == gid).then(|| name.to_owned())
    })
}

/// This host's name (the node id in the hello).
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdir::TestDir;

    #[test]
    fn the_flag_wins_over_everything() {
        let dir = TestDir::new("flag");
        std::fs::create_dir_all(dir.path().join(".shoal")).unwrap();
        std::fs::write(dir.path().join(LOCAL_SOCKET), b"").unwrap();
        let r = resolve(
            Some(Path::new("/tmp/x.sock")),
            Some("/tmp/env.sock".into()),
            dir.path(),
        );
        assert_eq!(r.path, Path::new("/tmp/x.sock"));
        assert_eq!(r.source, SocketSource::Flag);
    }

    #[test]
    fn the_environment_comes_next_unless_empty() {
        let dir = TestDir::new("env");
        std::fs::create_dir_all(dir.path().join(".shoal")).unwrap();
        std::fs::write(dir.path().join(LOCAL_SOCKET), b"").unwrap();
        let r = resolve(None, Some("/tmp/env.sock".into()), dir.path());
        assert_eq!(r.path, Path::new("/tmp/env.sock"));
        assert_eq!(r.source, SocketSource::Env);

        let r = resolve(None, Some(OsString::new()), dir.path());
        assert_eq!(r.source, SocketSource::LocalDir);
    }

    #[test]
    fn the_local_socket_only_when_it_exists() {
        let dir = TestDir::new("local");
        let r = resolve(None, None, dir.path());
        assert_eq!(r.path, Path::new(SYSTEM_SOCKET));
        assert_eq!(r.source, SocketSource::System);

        std::fs::create_dir_all(dir.path().join(".shoal")).unwrap();
        std::fs::write(dir.path().join(LOCAL_SOCKET), b"").unwrap();
        let r = resolve(None, None, dir.path());
        assert_eq!(r.path, dir.path().join(LOCAL_SOCKET));
        assert_eq!(r.source, SocketSource::LocalDir);
    }

    #[test]
    fn unreachable_messages_say_what_to_do() {
        let socket = ResolvedSocket {
            path: PathBuf::from("/nowhere/control.sock"),
            source: SocketSource::Env,
        };
        let gone = unreachable_message(&socket, &io::Error::from(io::ErrorKind::NotFound));
        assert!(gone.starts_with("cannot reach the control plane at /nowhere/control.sock: "));
        assert!(gone.contains("/nowhere/control.sock does not exist (from SHOAL_SOCKET"));
        assert!(gone.ends_with(NOT_RUNNING_HINT), "{gone}");

        let denied =
            unreachable_message(&socket, &io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(denied.contains("--allow-uid"), "{denied}");
        assert!(denied.contains("--allow-gid"), "{denied}");
        assert!(!denied.contains(NOT_RUNNING_HINT), "{denied}");

        let refused =
            unreachable_message(&socket, &io::Error::from(io::ErrorKind::ConnectionRefused));
        assert!(refused.contains("nothing listens"), "{refused}");
        assert!(refused.ends_with(NOT_RUNNING_HINT), "{refused}");
    }

    #[test]
    fn the_host_name_is_not_empty() {
        assert!(!host_name().is_empty());
    }
}
