//! Raw UDP device listeners.
//!
//! A datagram is one message, or holds frames when the listener has
//! framing. The device is the peer address, or an id prefix of the payload.
//! A session per device remembers its last address, so downlink goes there;
//! sessions expire after the idle timeout.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::{Rc, Weak};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future::FutureExt;
use glommio::net::UdpSocket;
use shoal_protocols::config::{validate_device_id, IdentityRule};
use shoal_protocols::framing::{Decoded, Framer, MAX_HEADER_BYTES};
use tracing::{debug, info, warn};

use crate::bus::{Deliver, Subscriber};
use crate::core::{CloseReason, ConnId, Connection, Core};
use crate::listener::ListenerSpec;
use crate::message::{Message, Origin};
use crate::outq::send_vectored;
use crate::pool::{Payload, PoolBuf};
use crate::signal::LocalSignal;
use crate::stats::LogLimiter;

/// A UDP listener as one core runs it.
pub(crate) struct UdpListenerRt {
    pub(crate) name: Rc<str>,
    spec: Arc<ListenerSpec>,
    framer: Option<Framer>,
    identity: IdentityRule,
    idle_timeout: Duration,
    /// The socket downlink datagrams leave from (owned by the listener
    /// task, which outlives every session).
    fd: RawFd,
    sessions: RefCell<HashMap<Rc<str>, Rc<UdpSession>>>,
    /// Reused to spell a peer address as a device id.
    peer_id: RefCell<String>,
    /// Raised when the listener is removed.
    pub(crate) removed: LocalSignal,
    bad_log: LogLimiter,
    refuse_log: LogLimiter,
}

impl std::fmt::Debug for UdpListenerRt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpListenerRt")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Kernel receive buffer of a UDP listener's socket (per core): a burst of
/// datagrams waits there while the core is busy, instead of being dropped
/// by the kernel (the default is ~208 KiB, a few thousand small datagrams).
pub(crate) const UDP_RECEIVE_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// Sets `fd`'s kernel receive buffer to `bytes`: past the system's
/// `net.core.rmem_max` when the process may (SO_RCVBUFFORCE), else up to
/// it. Best effort: a smaller buffer only means more drops under bursts.
pub(crate) fn set_receive_buffer(fd: RawFd, bytes: usize) {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    for option in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: setsockopt on the listener's own open socket with a
        // pointer to a c_int that lives for the call.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                std::ptr::addr_of!(value).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}

/// Binds the listener's socket on this core.
pub(crate) fn bind(spec: &Arc<ListenerSpec>) -> Result<(UdpSocket, Rc<UdpListenerRt>), String> {
    let c = &spec.config;
    let framer = c
        .framing
        .as_ref()
        .map(|f| Framer::new(f, c.max_frame_bytes))
        .transpose()
        .map_err(|e| format!("listener {:?}: framing: {e}", c.name))?;
    let mut socket = UdpSocket::bind(spec.addr)
        .map_err(|e| format!("listener {:?}: cannot bind udp {}: {e}", c.name, spec.addr))?;
    // One byte more than the limit, to tell an oversized datagram.
    socket.set_buffer_size(c.max_frame_bytes as usize + 1);
    set_receive_buffer(socket.as_raw_fd(), UDP_RECEIVE_BUFFER_BYTES);
    let rt = Rc::new(UdpListenerRt {
        name: c.name.as_str().into(),
        spec: Arc::clone(spec),
        framer,
        identity: c.identity.clone(),
        idle_timeout: c.idle_timeout,
        fd: socket.as_raw_fd(),
        sessions: RefCell::new(HashMap::new()),
        peer_id: RefCell::new(String::with_capacity(48)),
        removed: LocalSignal::default(),
        bad_log: LogLimiter::new(Duration::from_secs(5)),
        refuse_log: LogLimiter::new(Duration::from_secs(5)),
    });
    Ok((socket, rt))
}

/// One device seen on a UDP listener.
struct UdpSession {
    core: Rc<Core>,
    /// The listener (weak: the listener owns its sessions).
    rt: Weak<UdpListenerRt>,
    /// Its entry in the core's connection table.
    conn_id: Cell<Option<ConnId>>,
    fd: RawFd,
    framer: Option<Framer>,
    addr: Cell<SocketAddr>,
    last_seen: Cell<Instant>,
    up_topic: Rc<str>,
    device: Rc<str>,
    subscription: RefCell<Option<(String, Subscriber)>>,
}

impl Connection for UdpSession {
    /// Ends the session (the device was seen again elsewhere, or the data
    /// plane stops).
    fn close(&self, reason: CloseReason) {
        if let Some(rt) = self.rt.upgrade() {
            let mine = rt
                .sessions
                .borrow()
                .get(&self.device)
                .is_some_and(|s| std::ptr::eq(Rc::as_ptr(s), self));
            if mine {
                rt.sessions.borrow_mut().remove(&self.device);
            }
            info!(listener = %rt.name, device = %self.device, ?reason, "udp session ended");
        }
        self.end();
    }

    /// A UDP session has nothing in flight to wait for.
    fn begin_drain(&self) {
        self.close(CloseReason::Shutdown);
    }
}

impl UdpSession {
    /// Unsubscribes and leaves the connection table; runs once.
    fn end(&self) {
        let Some(id) = self.conn_id.take() else {
            return;
        };
        if let Some((filter, sub)) = self.subscription.borrow_mut().take() {
            self.core.unsubscribe(&filter, &sub);
        }
        if let Some(rt) = self.rt.upgrade() {
            rt.spec.open.fetch_sub(1, Ordering::Relaxed);
        }
        self.core.remove_conn(id);
    }
}

impl Deliver for UdpSession {
    fn deliver(&self, msg: &Message) {
        let stats = &self.core.stats;
        let mut header = [0u8; MAX_HEADER_BYTES];
        let (header_len, trailer): (usize, &[u8]) = match &self.framer {
            Some(f) => match f.encode_header_for(msg.payload.as_slice(), &mut header) {
                Ok(n) => (n, f.trailer()),
                Err(_) => {
                    stats.outbound_drops.inc();
                    return;
                }
            },
            None => (0, &[]),
        };
        let parts = [
            header.get(..header_len).unwrap_or_default(),
            msg.payload.as_slice(),
            trailer,
        ];
        match send_vectored(self.fd, parts, Some(&self.addr.get())) {
            Ok(n) => {
                stats.messages_out.inc();
                stats.bytes_out.add(n as u64);
            }
            Err(_) => stats.outbound_drops.inc(),
        }
    }
}

/// Datagrams a receive loop takes in a row before it lets the core's
/// other tasks run: a flood must not keep it running forever.
const DATAGRAMS_PER_YIELD: u32 = 32;

/// A datagram read into a pool buffer.
pub(crate) struct Datagram {
    /// Holds the datagram's bytes (`len` of them, or `max + 1` when it was
    /// larger than the limit).
    pub(crate) buf: PoolBuf,
    pub(crate) len: usize,
    pub(crate) peer: SocketAddr,
    pub(crate) read_end: Option<Instant>,
}

/// The step of every datagram listener's receive loop: lets the core's
/// other tasks run every [`DATAGRAMS_PER_YIELD`] datagrams, waits for the
/// mesh gate and a pool buffer of `max + 1` bytes (one more than the
/// limit, to tell an oversized datagram), then receives one datagram and
/// counts its bytes. Receive errors are skipped (logged at debug). `None`
/// once the core stops or `removed` is raised.
pub(crate) async fn receive(
    core: &Core,
    socket: &UdpSocket,
    removed: &LocalSignal,
    max: usize,
    since_yield: &mut u32,
    listener: &str,
) -> Option<Datagram> {
    loop {
        *since_yield += 1;
        if *since_yield >= DATAGRAMS_PER_YIELD {
            *since_yield = 0;
            futures_lite::future::yield_now().await;
        }
        core.mesh_gate.pass().await;
        let mut buf = core.pool.acquire(max + 1).await;
        let received = {
            let recv = async { Some(socket.recv_from(buf.spare_mut()).await) };
            let stop = async {
                core.stopping.wait().or(removed.wait()).await;
                None
            };
            recv.or(stop).await
        }?;
        let read_end = core.read_clock();
        match received {
            Ok((len, peer)) => {
                core.stats.bytes_in.add(len as u64);
                buf.advance(len);
                return Some(Datagram {
                    buf,
                    len,
                    peer,
                    read_end,
                });
            }
            Err(e) => debug!(listener, "datagram receive error: {e}"),
        }
    }
}

/// Receives datagrams until the core stops or the listener is removed.
pub(crate) async fn run_listener(core: Rc<Core>, rt: Rc<UdpListenerRt>, socket: UdpSocket) {
    glommio::spawn_local(expire_sessions(Rc::clone(&core), Rc::clone(&rt))).detach();
    let max = rt.spec.config.max_frame_bytes as usize;
    let mut since_yield = 0u32;
    while let Some(Datagram {
        buf,
        len: n,
        peer,
        read_end,
    }) = receive(&core, &socket, &rt.removed, max, &mut since_yield, &rt.name).await
    {
        if n > max {
            core.stats.frame_errors.inc();
            if let Some(more) = rt.bad_log.allow() {
                warn!(listener = %rt.name, %peer, max_frame_bytes = max, suppressed = more, "datagram dropped: larger than max_frame_bytes");
            }
            continue;
        }
        let shared = Rc::new(buf);
        if let Err(why) = datagram(&core, &rt, peer, &shared, read_end) {
            core.stats.frame_errors.inc();
            if let Some(more) = rt.bad_log.allow() {
                warn!(listener = %rt.name, %peer, suppressed = more, "datagram dropped: {why}");
            }
        }
    }
    let sessions: Vec<Rc<UdpSession>> = rt.sessions.borrow_mut().drain().map(|(_, s)| s).collect();
    for s in sessions {
        s.end();
    }
    debug!(listener = %rt.name, "stopped receiving");
}

fn datagram(
    core: &Rc<Core>,
    rt: &Rc<UdpListenerRt>,
    peer: SocketAddr,
    buf: &Rc<PoolBuf>,
    read_end: Option<Instant>,
) -> Result<(), String> {
    let bytes = buf.filled();
    // The id is read in place (prefix) or written into a reused string
    // (peer address): no allocation per datagram.
    let mut peer_id = rt.peer_id.borrow_mut();
    let (device, body_start): (&str, usize) = match &rt.identity {
        IdentityRule::PayloadPrefix { bytes: prefix } => {
            let prefix = *prefix as usize;
            let raw = bytes
                .get(..prefix)
                .ok_or_else(|| format!("shorter than the {prefix}-byte device id prefix"))?;
            let text =
                std::str::from_utf8(raw).map_err(|_| "device id prefix is not UTF-8".to_owned())?;
            (text.trim_end_matches(['\0', ' ']), prefix)
        }
        _ => {
            peer_id.clear();
            let _ = write!(peer_id, "{peer}");
            (peer_id.as_str(), 0)
        }
    };
    validate_device_id(device)?;
    let session = session_for(core, rt, device, peer)?;
    drop(peer_id);
    let origin = Origin {
        listener: Some(Rc::clone(&rt.name)),
        device: Some(Rc::clone(&session.device)),
        session: 0,
    };
    let publish = |range: std::ops::Range<usize>| {
        let msg = Message {
            topic: Rc::clone(&session.up_topic),
            payload: Payload::new(Rc::clone(buf), range),
            qos: 0,
            retain: false,
            origin: origin.clone(),
            hops: 0,
            props: None,
        };
        core.publish_read(msg, read_end);
    };
    let Some(framer) = &rt.framer else {
        publish(body_start..bytes.len());
        return Ok(());
    };
    let mut pos = body_start;
    while pos < bytes.len() {
        match framer.decode(bytes.get(pos..).unwrap_or_default()) {
            Ok(Decoded::Frame { frame, consumed }) => {
                publish(pos + frame.payload.start..pos + frame.payload.end);
                pos += consumed;
            }
            Ok(Decoded::Incomplete) => {
                return Err(format!(
                    "{} trailing bytes do not make a frame",
                    bytes.len() - pos
                ))
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

fn session_for(
    core: &Rc<Core>,
    rt: &Rc<UdpListenerRt>,
    device: &str,
    peer: SocketAddr,
) -> Result<Rc<UdpSession>, String> {
    let now = Instant::now();
    if let Some(s) = rt.sessions.borrow().get(device) {
        s.addr.set(peer);
        s.last_seen.set(now);
        return Ok(Rc::clone(s));
    }
    let max = rt.spec.config.max_connections;
    if rt.spec.open.fetch_add(1, Ordering::Relaxed) + 1 > max {
        rt.spec.open.fetch_sub(1, Ordering::Relaxed);
        core.stats.refused.inc();
        if let Some(more) = rt.refuse_log.allow() {
            warn!(listener = %rt.name, max_connections = max, suppressed = more, "new udp device refused: listener is at max_connections");
        }
        return Err("listener is at max_connections".into());
    }
    let device: Rc<str> = device.into();
    let session = Rc::new(UdpSession {
        core: Rc::clone(core),
        rt: Rc::downgrade(rt),
        conn_id: Cell::new(None),
        fd: rt.fd,
        framer: rt.framer.clone(),
        addr: Cell::new(peer),
        last_seen: Cell::new(now),
        up_topic: format!("devices/{device}/up").into(),
        device: Rc::clone(&device),
        subscription: RefCell::new(None),
    });
    let filter = format!("devices/{device}/down");
    let sub: Subscriber = Rc::clone(&session) as Subscriber;
    core.subscribe(&filter, Rc::clone(&sub));
    *session.subscription.borrow_mut() = Some((filter, sub));
    let id = core.add_conn(
        Rc::clone(&rt.name),
        Rc::clone(&session) as Rc<dyn Connection>,
    );
    session.conn_id.set(Some(id));
    rt.sessions
        .borrow_mut()
        .insert(Rc::clone(&device), Rc::clone(&session));
    info!(listener = %rt.name, %peer, device = %session.device, "udp device online");
    // The same device seen earlier on another core (a new address hashes
    // elsewhere) or on another listener is taken over.
    core.device_online(id, device);
    Ok(session)
}

async fn expire_sessions(core: Rc<Core>, rt: Rc<UdpListenerRt>) {
    let period = (rt.idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    loop {
        let tick = async {
            glommio::timer::sleep(period).await;
            true
        };
        let stop = async {
            core.stopping.wait().or(rt.removed.wait()).await;
            false
        };
        if !tick.or(stop).await {
            return;
        }
        let now = Instant::now();
        let expired: Vec<Rc<UdpSession>> = {
            let mut sessions = rt.sessions.borrow_mut();
            let gone: Vec<Rc<str>> = sessions
                .iter()
                .filter(|(_, s)| now.duration_since(s.last_seen.get()) >= rt.idle_timeout)
                .map(|(k, _)| Rc::clone(k))
                .collect();
            gone.iter().filter_map(|k| sessions.remove(k)).collect()
        };
        for s in expired {
            core.stats.idle_timeouts.inc();
            info!(listener = %rt.name, device = %s.device, "udp device idle; session ended");
            s.end();
        }
    }
}
