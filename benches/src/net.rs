//! Opening client sockets: an optional source address (bound before connect,
//! so a run can use more than one ephemeral port range), a bounded connect,
//! and the hand-over to monoio's io_uring driver.

use std::{
    fmt, io,
    net::{Ipv4Addr, SocketAddr},
    os::fd::{AsRawFd as _, BorrowedFd},
    str::FromStr,
    time::Duration,
};

use monoio::net::TcpStream;
use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// Largest source-address range accepted (a /16 of loopback is plenty).
const MAX_SOURCE_ADDRS: u32 = 65_536;

/// Source IPv4 addresses that client sockets are spread over, round-robin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SourceAddrs {
    /// Let the kernel pick (no bind before connect).
    Any,
    /// The inclusive range `first..=last`.
    Range { first: Ipv4Addr, last: Ipv4Addr },
}

impl SourceAddrs {
    /// How many distinct source addresses the sockets use (1 for `Any`).
    pub(crate) fn count(&self) -> u32 {
        match self {
            Self::Any => 1,
            Self::Range { first, last } => u32::from(*last) - u32::from(*first) + 1,
        }
    }

    /// Source address of the socket with run-wide index `socket_index`.
    pub(crate) fn pick(&self, socket_index: u64) -> Option<Ipv4Addr> {
        match self {
            Self::Any => None,
            Self::Range { first, .. } => {
                let offset = (socket_index % u64::from(self.count())) as u32;
                Some(Ipv4Addr::from(u32::from(*first) + offset))
            }
        }
    }
}

impl FromStr for SourceAddrs {
    type Err = String;

    /// `any`, one address (`127.0.0.1`), or an inclusive range
    /// (`127.0.0.1-127.0.0.8`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("any") {
            return Ok(Self::Any);
        }
        let (first, last) = text.split_once('-').unwrap_or((text, text));
        let parse = |s: &str| {
            s.trim()
                .parse::<Ipv4Addr>()
                .map_err(|e| format!("{s:?} is not an IPv4 address: {e}"))
        };
        let (first, last) = (parse(first)?, parse(last)?);
        if u32::from(last) < u32::from(first) {
            return Err(format!("range {first}-{last} ends before it starts"));
        }
        if u32::from(last) - u32::from(first) >= MAX_SOURCE_ADDRS {
            return Err(format!(
                "range {first}-{last} holds more than {MAX_SOURCE_ADDRS} addresses"
            ));
        }
        if first.is_unspecified() {
            return Err("use `any` instead of 0.0.0.0".to_owned());
        }
        Ok(Self::Range { first, last })
    }
}

impl fmt::Display for SourceAddrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::Range { first, last } if first == last => write!(f, "{first}"),
            Self::Range { first, last } => write!(f, "{first}-{last}"),
        }
    }
}

/// Connects to `target` from `source` (if any) within `timeout`.
///
/// The socket is created with socket2, bound with `IP_BIND_ADDRESS_NO_PORT`
/// (so the port is chosen at connect time per 4-tuple, not per source
/// address), connected without blocking, and once the connect completes it is
/// switched back to blocking mode: monoio's io_uring driver expects blocking
/// sockets and lets the kernel park reads and writes.
pub(crate) async fn connect_from(
    source: Option<Ipv4Addr>,
    target: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let socket = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_nodelay(true)?;
    if let Some(source) = source {
        set_bind_address_no_port(&socket)?;
        socket.bind(&SocketAddr::from((source, 0)).into())?;
    }
    socket.set_nonblocking(true)?;
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let stream = TcpStream::from_std(socket.into())?;
    match monoio::time::timeout(timeout, stream.writable(false)).await {
        Ok(ready) => ready?,
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect did not complete within {timeout:?}"),
            ))
        }
    }
    // SAFETY: the fd is owned by `stream`, which outlives `fd` (both live to
    // the end of this function and `fd` is not returned).
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    let sock = SockRef::from(&fd);
    if let Some(e) = sock.take_error()? {
        return Err(e);
    }
    sock.set_nonblocking(false)?;
    Ok(stream)
}

fn set_bind_address_no_port(socket: &Socket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: the fd is a live socket owned by `socket`; the option value
    // points to a c_int that lives across the call, with its size passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Short, stable name of an error for counting (`ConnectionRefused`, ...).
pub(crate) fn error_kind_name(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(libc::EADDRNOTAVAIL) => "AddrNotAvailable".to_owned(),
        Some(libc::EMFILE) | Some(libc::ENFILE) => "TooManyOpenFiles".to_owned(),
        _ => format!("{:?}", error.kind()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_range_single_and_any() {
        let range: SourceAddrs = "127.0.0.1-127.0.0.8".parse().unwrap();
        assert_eq!(range.count(), 8);
        assert_eq!(range.to_string(), "127.0.0.1-127.0.0.8");
        let single: SourceAddrs = " 127.0.0.5 ".parse().unwrap();
        assert_eq!(single.count(), 1);
        assert_eq!(single.to_string(), "127.0.0.5");
        assert_eq!("ANY".parse::<SourceAddrs>(), Ok(SourceAddrs::Any));
        assert_eq!(SourceAddrs::Any.pick(3), None);
    }

    #[test]
    fn parse_range_across_octets() {
        let range: SourceAddrs = "127.0.0.250-127.0.1.4".parse().unwrap();
        assert_eq!(range.count(), 11);
        assert_eq!(range.pick(10), Some(Ipv4Addr::new(127, 0, 1, 4)));
        assert_eq!(range.pick(11), Some(Ipv4Addr::new(127, 0, 0, 250)));
    }

    #[test]
    fn parse_rejects_bad_ranges() {
        for bad in [
            "",
            "127.0.0.8-127.0.0.1",
            "127.0.0.1-",
            "localhost",
            "127.0.0.1-127.0.0.2-127.0.0.3",
            "::1",
            "0.0.0.0",
            "127.0.0.0-127.1.0.0",
        ] {
            assert!(bad.parse::<SourceAddrs>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn pick_is_round_robin() {
        let range: SourceAddrs = "127.0.0.1-127.0.0.3".parse().unwrap();
        let picked: Vec<_> = (0..6).map(|i| range.pick(i).unwrap().octets()[3]).collect();
        assert_eq!(picked, [1, 2, 3, 1, 2, 3]);
    }
}
