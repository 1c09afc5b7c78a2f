//! Raw TCP device listeners: bind + framing + identity.
//!
//! Each core accepts on its own SO_REUSEPORT socket and runs one task per
//! connection. An idle connection holds no pool buffer: the task waits for
//! readability with a one-byte peek and takes a buffer only when bytes are
//! there. Frames are decoded in place and published as `Rc` slices of the
//! read buffer. Downlink messages are written directly with a vectored,
//! non-blocking `sendmsg` when the socket takes them; what it does not take
//! waits in the connection's bounded outbound queue.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future::FutureExt;
use futures_lite::AsyncReadExt;
use glommio::net::{TcpListener, TcpStream};
use shoal_protocols::config::{validate_device_id, IdentityRule, ListenerAuth};
use shoal_protocols::framing::{Decoded, Framer, MAX_HEADER_BYTES};
use tracing::{debug, info, warn};

use crate::auth::{authenticate, parse_login, AuthFailure, Credentials};
use crate::bus::{Deliver, Subscriber};
use crate::core::{CloseReason, ConnId, Connection, Core, DeferredFlush};
use crate::listener::ListenerSpec;
use crate::message::{Message, Origin};
use crate::outq::{recv_nonblocking, Segment};
use crate::pool::{Payload, PoolBuf};
use crate::signal::LocalSignal;
use crate::stats::{BurstLimiter, LogLimiter};
use crate::writer::{weak_flush, FlushEnd, Sent, Writer};

/// Bytes asked of the pool for a fresh read.
const READ_CHUNK_BYTES: usize = 512;

/// Reads a connection may do in a row before it lets other tasks run.
const READS_PER_YIELD: u32 = 16;

/// Bytes a connection waiting for input reads into its own small buffer
/// (part of its task) before it takes a pool buffer. The wait is a
/// readiness poll: an idle connection holds no pool or kernel-side buffer.
const FIRST_READ_BYTES: usize = 256;

/// A TCP listener as one core runs it.
pub(crate) struct TcpListenerRt {
    pub(crate) name: Rc<str>,
    spec: Arc<ListenerSpec>,
    framer: Framer,
    trailer: Rc<[u8]>,
    identity: IdentityRule,
    /// What a device must show at login.
    auth: ListenerAuth,
    idle_timeout: Duration,
    /// Raised when the listener is removed: stop accepting, drain.
    pub(crate) removed: LocalSignal,
    refuse_log: LogLimiter,
    accept_log: LogLimiter,
    auth_log: BurstLimiter,
}

impl std::fmt::Debug for TcpListenerRt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpListenerRt")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Binds the listener's socket on this core (the prepare step of an apply).
pub(crate) fn bind(spec: &Arc<ListenerSpec>) -> Result<(TcpListener, Rc<TcpListenerRt>), String> {
    let c = &spec.config;
    let framing = c.framing.clone().unwrap_or_default();
    let framer = Framer::new(&framing, c.max_frame_bytes)
        .map_err(|e| format!("listener {:?}: framing: {e}", c.name))?;
    let listener = TcpListener::bind(spec.addr)
        .map_err(|e| format!("listener {:?}: cannot bind tcp {}: {e}", c.name, spec.addr))?;
    let rt = Rc::new(TcpListenerRt {
        name: c.name.as_str().into(),
        spec: Arc::clone(spec),
        trailer: Rc::from(framer.trailer()),
        framer,
        identity: c.identity.clone(),
        auth: c.auth,
        idle_timeout: c.idle_timeout,
        removed: LocalSignal::default(),
        refuse_log: LogLimiter::new(Duration::from_secs(5)),
        accept_log: LogLimiter::new(Duration::from_secs(5)),
        auth_log: BurstLimiter::new(50, Duration::from_secs(1)),
    });
    Ok((listener, rt))
}

/// Accepts until the core stops or the listener is removed.
pub(crate) async fn run_listener(core: Rc<Core>, rt: Rc<TcpListenerRt>, listener: TcpListener) {
    loop {
        let accept = async { Some(listener.accept().await) };
        let stop = async {
            core.stopping.wait().or(rt.removed.wait()).await;
            None
        };
        let Some(result) = accept.or(stop).await else {
            break;
        };
        let stream = match result {
            Ok(s) => s,
            Err(e) => {
                if let Some(more) = rt.accept_log.allow() {
                    warn!(listener = %rt.name, suppressed = more, "accept failed: {e}");
                }
                // Out of descriptors or memory: back off instead of spinning.
                glommio::timer::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let max = rt.spec.config.max_connections;
        let open = rt.spec.open.fetch_add(1, Ordering::Relaxed) + 1;
        if open > max {
            rt.spec.open.fetch_sub(1, Ordering::Relaxed);
            core.stats.refused.inc();
            if let Some(more) = rt.refuse_log.allow() {
                warn!(listener = %rt.name, max_connections = max, suppressed = more, "connection refused: listener is at max_connections");
            }
            drop(stream);
            continue;
        }
        let peer = stream
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        glommio::spawn_local(serve(Rc::clone(&core), Rc::clone(&rt), stream, peer)).detach();
    }
    debug!(listener = %rt.name, "stopped accepting");
}

/// The shared half of a connection: what the bus and the core touch.
struct TcpConn {
    core: Rc<Core>,
    rt: Rc<TcpListenerRt>,
    fd: RawFd,
    peer: SocketAddr,
    writer: Writer,
    close: RefCell<Option<CloseReason>>,
    draining: Cell<bool>,
    /// This connection, for the core's list of deferred flushes.
    me: std::rc::Weak<Self>,
}

impl DeferredFlush for TcpConn {
    fn flush_deferred(&self) {
        self.writer.flush_deferred(&self.core);
    }
}

impl Deliver for TcpConn {
    fn deliver(&self, msg: &Message) {
        let stats = &self.core.stats;
        if self.close.borrow().is_some() {
            stats.outbound_drops.inc();
            return;
        }
        let mut header = [0u8; MAX_HEADER_BYTES];
        let Ok(header_len) = self
            .rt
            .framer
            .encode_header_for(msg.payload.as_slice(), &mut header)
        else {
            stats.outbound_drops.inc();
            return;
        };
        let header = header.get(..header_len).unwrap_or_default();
        let total = header_len + msg.payload.len() + self.trailer().len();
        let segments = self.segments(header, &msg.payload);
        match self
            .writer
            .send(&self.core, &weak_flush(&self.me), &segments, total, false)
        {
            Sent::Queued => stats.messages_out.inc(),
            Sent::NoRoom | Sent::Closed | Sent::Discarded => stats.outbound_drops.inc(),
        }
    }
}

impl TcpConn {
    fn trailer(&self) -> &[u8] {
        &self.rt.trailer
    }

    fn segments(&self, header: &[u8], payload: &Payload) -> [Segment; 3] {
        [
            Segment::inline(header),
            Segment::Payload(payload.clone()),
            Segment::Shared {
                bytes: Rc::clone(&self.rt.trailer),
                start: 0,
            },
        ]
    }
}

impl Connection for TcpConn {
    fn close(&self, reason: CloseReason) {
        self.close.borrow_mut().get_or_insert(reason);
        self.writer.kick.kick();
    }

    fn begin_drain(&self) {
        self.draining.set(true);
        self.writer.kick.kick();
    }
}

/// Why a connection ended.
#[derive(Debug)]
enum End {
    PeerClosed,
    Idle,
    Frame(String),
    Io(io::Error),
    WriteStalled,
    Closed(CloseReason),
    /// The device did not prove itself (`device_secret` listeners).
    AuthFailed {
        device: Option<Rc<str>>,
        failure: AuthFailure,
    },
}

/// Runs one connection to its end and cleans up after it.
async fn serve(core: Rc<Core>, rt: Rc<TcpListenerRt>, mut stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let limit = core.settings.borrow().outbound_queue_bytes as usize;
    let conn = Rc::new_cyclic(|me| TcpConn {
        core: Rc::clone(&core),
        rt: Rc::clone(&rt),
        fd: stream.as_raw_fd(),
        peer,
        writer: Writer::new(stream.as_raw_fd(), limit),
        close: RefCell::new(None),
        draining: Cell::new(false),
        me: me.clone(),
    });
    let id = core.add_conn(Rc::clone(&rt.name), Rc::clone(&conn) as Rc<dyn Connection>);
    let mut session = Session {
        device: None,
        up_topic: None,
        subscription: None,
    };
    let end = run(&core, &conn, &mut stream, id, &mut session).await;
    if let Some((filter, sub)) = session.subscription.take() {
        core.unsubscribe(&filter, &sub);
    }
    core.remove_conn(id);
    rt.spec.open.fetch_sub(1, Ordering::Relaxed);
    conn.writer.clear();
    let device = session.device.as_deref().unwrap_or("-");
    match &end {
        End::Frame(why) => {
            core.stats.frame_errors.inc();
            warn!(listener = %rt.name, %peer, device, "closing connection: bad frame: {why}");
        }
        End::Idle => {
            core.stats.idle_timeouts.inc();
            info!(listener = %rt.name, %peer, device, "closing idle connection");
        }
        End::WriteStalled => {
            core.stats.slow_closes.inc();
            warn!(listener = %rt.name, %peer, device, "closing connection: it stopped reading and its writes stalled");
        }
        End::Io(e) => debug!(listener = %rt.name, %peer, device, "connection error: {e}"),
        End::Closed(reason) => {
            info!(listener = %rt.name, %peer, device, ?reason, "connection closed")
        }
        End::PeerClosed => debug!(listener = %rt.name, %peer, device, "peer closed"),
        End::AuthFailed { device, failure } => {
            core.stats.auth_failures.inc();
            if let Some(suppressed) = rt.auth_log.allow() {
                let device = device.as_deref().unwrap_or("-");
                warn!(listener = %rt.name, %peer, device = %device, suppressed, "closing connection: device authentication failed: {failure}");
            }
        }
    }
}

struct Session {
    device: Option<Rc<str>>,
    /// `devices/{id}/up`, made once at login.
    up_topic: Option<Rc<str>>,
    subscription: Option<(String, Subscriber)>,
}

enum Wake {
    Readable(io::Result<usize>),
    Kicked,
    Timer,
}

async fn run(
    core: &Rc<Core>,
    conn: &Rc<TcpConn>,
    stream: &mut TcpStream,
    id: ConnId,
    session: &mut Session,
) -> End {
    let rt = &conn.rt;
    if rt.identity == IdentityRule::PeerAddress {
        login(core, conn, id, session, conn.peer.to_string().into());
    }
    let mut rx: Option<PoolBuf> = None;
    let mut idle_deadline = Instant::now() + rt.idle_timeout;
    let mut reads_since_yield = 0u32;
    loop {
        if let Some(reason) = conn.close.borrow_mut().take() {
            return End::Closed(reason);
        }
        if conn.writer.write_failed.get() {
            return End::Io(io::Error::new(io::ErrorKind::BrokenPipe, "write failed"));
        }
        if !conn.writer.is_empty() {
            let closing = || conn.close.borrow_mut().take();
            if let Err(end) = conn.writer.flush(core, stream, closing).await {
                return match end {
                    FlushEnd::Io(e) => End::Io(e),
                    FlushEnd::Stalled => End::WriteStalled,
                    FlushEnd::Closed(reason) => End::Closed(reason),
                };
            }
        }
        if conn.draining.get() {
            conn.writer.shutdown_write();
        }
        if core.mesh_gate.is_closed() {
            // Other cores cannot take more yet: read nothing until they can.
            core.mesh_gate.pass().await;
        }
        let mut first = [0u8; FIRST_READ_BYTES];
        let wake = {
            let readable = async { Wake::Readable(stream.read(&mut first).await) };
            let kicked = async {
                conn.writer.kick.kicked().await;
                Wake::Kicked
            };
            let timer = async {
                glommio::timer::sleep(idle_deadline.saturating_duration_since(Instant::now()))
                    .await;
                Wake::Timer
            };
            readable.or(kicked).or(timer).await
        };
        match wake {
            Wake::Kicked => {}
            Wake::Timer => {
                if Instant::now() >= idle_deadline {
                    return End::Idle;
                }
            }
            Wake::Readable(Err(e)) => return End::Io(e),
            Wake::Readable(Ok(0)) => return End::PeerClosed,
            Wake::Readable(Ok(n)) => {
                let read_end = core.read_clock();
                idle_deadline = Instant::now() + rt.idle_timeout;
                let first = first.get(..n).unwrap_or_default();
                match read_available(core, conn, id, session, &mut rx, first, read_end).await {
                    Ok(true) => {}
                    Ok(false) => return End::PeerClosed,
                    Err(end) => return end,
                }
                // A peer that never stops sending would otherwise keep this
                // task running (reads succeed at once): after a budget of
                // reads, let the core's other tasks and its I/O poll run.
                reads_since_yield += 1;
                if reads_since_yield >= READS_PER_YIELD {
                    reads_since_yield = 0;
                    futures_lite::future::yield_now().await;
                }
            }
        }
    }
}

/// A buffer holding `buf`'s bytes (or a fresh one) with room for at least
/// `spare` more; a frame longer than the buffer moves to a larger class.
async fn with_room(
    core: &Core,
    framer: &Framer,
    buf: Option<PoolBuf>,
    spare: usize,
) -> Result<PoolBuf, End> {
    let Some(buf) = buf else {
        return Ok(core.pool.acquire(READ_CHUNK_BYTES.max(spare)).await);
    };
    if buf.capacity() - buf.len() >= spare {
        return Ok(buf);
    }
    let largest = core.pool.largest_buffer_bytes();
    let wanted = buf.len() + spare;
    // The size the header declares, else double (but at most the largest
    // class: the framer has already refused frames beyond the limit).
    let needed = framer
        .frame_len_hint(buf.filled())
        .unwrap_or(buf.capacity() * 2)
        .max(wanted)
        .min(largest);
    if needed < wanted {
        return Err(End::Frame(format!(
            "a frame needs more than {largest} bytes"
        )));
    }
    let mut bigger = core.pool.acquire(needed).await;
    bigger.extend_from_slice(buf.filled());
    Ok(bigger)
}

/// Takes the bytes `first` already read, then reads what else the socket
/// has, publishing every complete frame. `Ok(false)` at end of stream.
async fn read_available(
    core: &Rc<Core>,
    conn: &Rc<TcpConn>,
    id: ConnId,
    session: &mut Session,
    rx: &mut Option<PoolBuf>,
    first: &[u8],
    read_end: Option<Instant>,
) -> Result<bool, End> {
    let framer = &conn.rt.framer;
    let mut buf = with_room(core, framer, rx.take(), first.len()).await?;
    buf.extend_from_slice(first);
    core.stats.bytes_in.add(first.len() as u64);
    let more = first.len() == FIRST_READ_BYTES;
    *rx = frames(core, conn, id, session, buf, read_end).await?;
    if !more {
        return Ok(true);
    }
    let mut rounds = 0;
    loop {
        let mut buf = with_room(core, framer, rx.take(), 1).await?;
        let n = match recv_nonblocking(conn.fd, buf.spare_mut()) {
            Ok(Some(n)) => n,
            Ok(None) => {
                if buf.len() > 0 {
                    *rx = Some(buf);
                }
                return Ok(true);
            }
            Err(e) => return Err(End::Io(e)),
        };
        if n == 0 {
            return Ok(false);
        }
        let read_end = core.read_clock();
        buf.advance(n);
        core.stats.bytes_in.add(n as u64);
        let filled_up = buf.spare_mut().is_empty();
        *rx = frames(core, conn, id, session, buf, read_end).await?;
        rounds += 1;
        if !filled_up || rounds >= READS_PER_YIELD {
            return Ok(true);
        }
    }
}

/// Decodes and handles every complete frame in `buf`; returns the partial
/// frame at its end, if any, in a buffer of its own.
async fn frames(
    core: &Rc<Core>,
    conn: &Rc<TcpConn>,
    id: ConnId,
    session: &mut Session,
    buf: PoolBuf,
    mut read_end: Option<Instant>,
) -> Result<Option<PoolBuf>, End> {
    let framer = &conn.rt.framer;
    let filled = buf.len();
    let shared = Rc::new(buf);
    let mut pos = 0;
    loop {
        // Everything the frames of this read send to other connections is
        // written once per connection, when the batch ends.
        core.begin_batch();
        let decoded = decode_all(core, conn, id, session, &shared, pos, read_end);
        core.end_batch();
        match decoded? {
            Decodeds::Done(end) => {
                pos = end;
                break;
            }
            Decodeds::Login { next, credentials } => {
                // The frames after the login wait for the registry's
                // answer (they are this device's only if it is accepted).
                if let Err(failure) = authenticate(core, &credentials).await {
                    return Err(End::AuthFailed {
                        device: Some(credentials.device),
                        failure,
                    });
                }
                login(core, conn, id, session, credentials.device);
                read_end = None;
                pos = next;
            }
        }
    }
    if pos == filled {
        return Ok(None);
    }
    match Rc::try_unwrap(shared) {
        Ok(mut own) => {
            own.discard_front(pos);
            Ok(Some(own))
        }
        Err(shared) => {
            // Other holders still read the frames before it: copy the tail.
            let tail = shared.filled().get(pos..).unwrap_or_default();
            let want = framer
                .frame_len_hint(tail)
                .unwrap_or(READ_CHUNK_BYTES)
                .max(tail.len() + 1)
                .min(core.pool.largest_buffer_bytes());
            let mut fresh = core.pool.acquire(want).await;
            if !fresh.extend_from_slice(tail) {
                return Err(End::Frame("partial frame larger than any buffer".into()));
            }
            Ok(Some(fresh))
        }
    }
}

/// How far [`decode_all`] got.
enum Decodeds {
    /// Every complete frame is handled; the bytes consumed.
    Done(usize),
    /// A login frame that the registry must check first; the frames after
    /// it start at `next`.
    Login {
        next: usize,
        credentials: Credentials,
    },
}

/// Handles every complete frame of `shared` from `pos` on; stops after a
/// login frame that needs the registry's answer.
fn decode_all(
    core: &Rc<Core>,
    conn: &Rc<TcpConn>,
    id: ConnId,
    session: &mut Session,
    shared: &Rc<PoolBuf>,
    mut pos: usize,
    read_end: Option<Instant>,
) -> Result<Decodeds, End> {
    let framer = &conn.rt.framer;
    let filled = shared.len();
    while pos < filled {
        let rest = shared.filled().get(pos..).unwrap_or_default();
        match framer.decode(rest) {
            Ok(Decoded::Frame { frame, consumed }) => {
                let range = pos + frame.payload.start..pos + frame.payload.end;
                pos += consumed;
                let payload = Payload::new(Rc::clone(shared), range);
                if let Some(credentials) = handle_frame(core, conn, id, session, payload, read_end)?
                {
                    return Ok(Decodeds::Login {
                        next: pos,
                        credentials,
                    });
                }
            }
            Ok(Decoded::Incomplete) => break,
            Err(e) => return Err(End::Frame(e.to_string())),
        }
    }
    Ok(Decodeds::Done(pos))
}

/// Publishes a frame of a logged-in device, or takes the login frame:
/// `Some` when the registry must check it first.
fn handle_frame(
    core: &Rc<Core>,
    conn: &Rc<TcpConn>,
    id: ConnId,
    session: &mut Session,
    payload: Payload,
    read_end: Option<Instant>,
) -> Result<Option<Credentials>, End> {
    let (Some(device), Some(topic)) = (session.device.clone(), session.up_topic.clone()) else {
        let text = std::str::from_utf8(payload.as_slice())
            .map_err(|_| End::Frame("login frame is not UTF-8".into()))?;
        if conn.rt.auth == ListenerAuth::DeviceSecret {
            return parse_login(text)
                .map(Some)
                .map_err(|failure| End::AuthFailed {
                    device: None,
                    failure,
                });
        }
        validate_device_id(text).map_err(|e| End::Frame(format!("login frame: {e}")))?;
        login(core, conn, id, session, text.into());
        return Ok(None);
    };
    core.publish_read(
        Message {
            topic,
            payload,
            qos: 0,
            retain: false,
            origin: Origin {
                listener: Some(Rc::clone(&conn.rt.name)),
                device: Some(device),
                session: 0,
            },
            hops: 0,
            props: None,
        },
        read_end,
    );
    Ok(None)
}

fn login(core: &Rc<Core>, conn: &Rc<TcpConn>, id: ConnId, session: &mut Session, device: Rc<str>) {
    let filter = format!("devices/{device}/down");
    let sub: Subscriber = Rc::clone(conn) as Subscriber;
    core.subscribe(&filter, Rc::clone(&sub));
    session.subscription = Some((filter, sub));
    session.device = Some(Rc::clone(&device));
    session.up_topic = Some(format!("devices/{device}/up").into());
    core.device_online(id, Rc::clone(&device));
    info!(listener = %conn.rt.name, peer = %conn.peer, device = %device, "device online");
}
