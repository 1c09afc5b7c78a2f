//! The task of one MQTT connection: the loop that reads the socket (TCP,
//! or WebSocket frames unwrapped on the way in) into a pool buffer,
//! decodes every whole packet in it and hands it to [`super::connect`]
//! (the first, CONNECT) or [`super::packets`] (the rest), waits where a
//! step needs the other cores, and at the end sends the last word, settles
//! the will and the session's fate, and logs why the connection ended.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_lite::future::FutureExt;
use futures_lite::AsyncReadExt;
use glommio::net::TcpStream;
use shoal_protocols::mqtt::{
    decode, read_fixed_header, Decoded, MqttError, Packet, Properties, ReasonCode, SubAck, Version,
};
use shoal_protocols::websocket::{encode_close, CloseCode};
use tracing::{debug, info, warn};

use super::acl::DeviceAcl;
use super::broker::publish_will;
use super::conn::{close_code, AckKind, MqttConn, Transport};
use super::connect::{connect, connect_request, refuse_connect_error, ConnectRequest};
use super::packets::handle;
use super::session::{Outgoing, Session, Will};
use super::ws_input::WsInput;
use super::MqttListenerRt;
use crate::core::{CloseReason, ConnId, Connection, Core};
use crate::outq::recv_nonblocking;
use crate::pool::PoolBuf;
use crate::writer::{FlushEnd, Writer};

/// Bytes asked of the pool for a fresh read.
const READ_CHUNK_BYTES: usize = 512;

/// Bytes a connection waiting for input reads into its own small buffer.
const FIRST_READ_BYTES: usize = 256;

/// Reads in a row before the task lets others run.
const READS_PER_YIELD: u32 = 16;

/// Why a connection ended.
#[derive(Debug)]
pub(crate) enum End {
    PeerClosed,
    /// The client sent DISCONNECT with this reason.
    Disconnected(ReasonCode),
    /// A protocol violation: the 5.0 reason code and what was wrong.
    Protocol(ReasonCode, String),
    /// CONNECT was refused (CONNACK sent).
    Refused(ReasonCode, String),
    KeepAlive,
    ConnectTimeout,
    Io(io::Error),
    WriteStalled,
    Closed(CloseReason),
}

impl From<MqttError> for End {
    fn from(e: MqttError) -> Self {
        Self::Protocol(e.reason_code(), e.to_string())
    }
}

impl From<FlushEnd> for End {
    fn from(e: FlushEnd) -> Self {
        match e {
            FlushEnd::Io(e) => Self::Io(e),
            FlushEnd::Stalled => Self::WriteStalled,
            FlushEnd::Closed(r) => Self::Closed(r),
        }
    }
}

/// What the connection knows once CONNECT is accepted.
#[derive(Debug, Default)]
pub(super) struct Client {
    pub(super) session: Option<Rc<Session>>,
    pub(super) device: Option<Rc<str>>,
    pub(super) acl: Option<DeviceAcl>,
    pub(super) will: Option<Will>,
    /// Inbound Topic Alias → topic.
    pub(super) aliases: Vec<Option<Rc<str>>>,
    /// Topic Alias Maximum announced to the client.
    pub(super) alias_max: u16,
    /// The topic of the last PUBLISH without an alias.
    pub(super) last_topic: Option<Rc<str>>,
    /// Silence allowed before the connection is dropped.
    pub(super) grace: Option<Duration>,
    /// The Session Expiry the client asked for at connect, seconds.
    pub(super) connect_expiry: u32,
}

/// Decoding ran into something that needs the task to wait.
pub(super) enum Step {
    Continue,
    Connect(Box<ConnectRequest>),
    /// A SUBACK that goes out once the other cores know the new
    /// subscriptions (a publish they take after it must reach them).
    SubAck(Box<PendingSubAck>),
    /// The PUBACK or PUBREC of a retained publish, once the other cores
    /// stored it (a subscriber on any core that subscribes after the
    /// acknowledgement gets it). The mark follows the copies sent to them
    /// on the same channels.
    RetainedAck {
        mark: u64,
        kind: AckKind,
        packet_id: u16,
        code: ReasonCode,
    },
}

/// A SUBACK waiting for the other cores, and the retained messages that
/// follow it.
pub(super) struct PendingSubAck {
    pub(super) mark: u64,
    pub(super) packet_id: u16,
    pub(super) codes: Vec<ReasonCode>,
    pub(super) retained: Vec<Outgoing>,
}

/// How long a SUBACK or a retained publish's acknowledgement waits for the
/// other cores at most.
const INTEREST_SYNC_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs one connection to its end and cleans up after it.
pub(crate) async fn serve(
    core: Rc<Core>,
    rt: Rc<MqttListenerRt>,
    mut stream: TcpStream,
    peer: SocketAddr,
    transport: Transport,
    leftover: Vec<u8>,
) {
    let _ = stream.set_nodelay(true);
    let limit = core.settings.borrow().outbound_queue_bytes as usize;
    let conn = Rc::new_cyclic(|me| MqttConn {
        core: Rc::clone(&core),
        peer,
        fd: stream.as_raw_fd(),
        writer: Writer::new(stream.as_raw_fd(), limit),
        transport,
        version: Cell::new(Version::V311),
        max_packet_out: Cell::new(0),
        max_packet_in: Cell::new(rt.spec.config.max_frame_bytes),
        close: RefCell::new(None),
        draining: Cell::new(false),
        me: me.clone(),
    });
    let id = core.add_conn(Rc::clone(&rt.name), Rc::clone(&conn) as Rc<dyn Connection>);
    let mut client = Client::default();
    let mut input = Input {
        rx: None,
        ws: (transport == Transport::WebSocket).then(WsInput::default),
    };
    let end = match input.take_leftover(&core, &conn, &leftover).await {
        Ok(()) => run(&core, &rt, &conn, &mut stream, id, &mut client, &mut input).await,
        Err(end) => end,
    };
    finish(&core, &rt, &conn, &mut stream, &mut client, &end).await;
    core.remove_conn(id);
    rt.spec.open.fetch_sub(1, Ordering::Relaxed);
    conn.writer.clear();
    log_end(&core, &rt, &conn, &client, &end);
}

/// The last word to the client, the will, and the session's fate.
async fn finish(
    core: &Rc<Core>,
    rt: &MqttListenerRt,
    conn: &Rc<MqttConn>,
    stream: &mut TcpStream,
    client: &mut Client,
    end: &End,
) {
    let code = match end {
        End::Protocol(code, _) => Some(*code),
        End::KeepAlive => Some(ReasonCode::KeepAliveTimeout),
        End::Closed(reason) => Some(close_code(reason)),
        _ => None,
    };
    if let (Some(code), Some(_)) = (code, &client.session) {
        conn.send_disconnect(code);
    }
    if conn.transport == Transport::WebSocket && conn.writer.is_open() {
        let mut close = Vec::new();
        let ws_code = match end {
            End::Protocol(..) => CloseCode(1002),
            _ => CloseCode(1000),
        };
        encode_close(&mut close, ws_code, "");
        conn.send_raw(&close);
    }
    if !conn.writer.is_empty() && conn.writer.is_open() {
        // A short, bounded last flush of what is queued (the DISCONNECT).
        let flush = conn.writer.flush(core, stream, || None);
        let deadline = async {
            glommio::timer::sleep(Duration::from_millis(200)).await;
            Ok(())
        };
        let _ = flush.or(deadline).await;
    }
    let Some(session) = client.session.take() else {
        return;
    };
    let mine = session
        .state
        .borrow()
        .conn
        .as_ref()
        .is_some_and(|c| Rc::ptr_eq(c, conn));
    // A normal DISCONNECT (0x00) discards the will; 0x04 asks for it.
    let will = match end {
        End::Disconnected(ReasonCode::Success) => None,
        _ => client.will.take(),
    };
    if !mine {
        // Taken over: the session lives on with the new connection.
        if let Some(will) = will.filter(|w| w.delay.is_zero()) {
            publish_will(core, will, Some(Rc::clone(&rt.name)), client.device.clone());
        }
        return;
    }
    let mut st = session.state.borrow_mut();
    st.conn = None;
    let expiry = st.expiry;
    if expiry.is_zero() {
        drop(st);
        core.mqtt.forget(core, &session);
        if let Some(will) = will {
            publish_will(core, will, Some(Rc::clone(&rt.name)), client.device.clone());
        }
        return;
    }
    drop(st);
    let now = Instant::now();
    core.mqtt.mark_offline(&session, now);
    let mut st = session.state.borrow_mut();
    // Queued messages wait now: they must not pin read buffers.
    for m in st.pending.iter_mut() {
        m.payload = m.payload.unpinned();
    }
    for f in st.inflight.iter_mut() {
        f.msg.payload = f.msg.payload.unpinned();
    }
    if let Some(will) = will {
        if will.delay.is_zero() {
            drop(st);
            publish_will(core, will, Some(Rc::clone(&rt.name)), client.device.clone());
        } else {
            let due = now + will.delay.min(expiry);
            st.will_due = Some((due, will));
        }
    }
}

fn log_end(core: &Core, rt: &MqttListenerRt, conn: &MqttConn, client: &Client, end: &End) {
    let peer = conn.peer;
    let client_id = client
        .session
        .as_ref()
        .map_or("-", |s| &*s.client_id)
        .to_owned();
    match end {
        End::Protocol(code, why) => {
            core.stats.mqtt_protocol_errors.inc();
            core.stats.frame_errors.inc();
            if let Some(more) = rt.error_log.allow() {
                warn!(listener = %rt.name, %peer, client_id, reason = ?code, suppressed = more, "closing mqtt connection: {why}");
            }
        }
        End::Refused(code, why) => {
            if let Some(more) = rt.error_log.allow() {
                warn!(listener = %rt.name, %peer, reason = ?code, suppressed = more, "mqtt connect refused: {why}");
            }
        }
        End::KeepAlive => {
            core.stats.idle_timeouts.inc();
            info!(listener = %rt.name, %peer, client_id, "closing mqtt connection: keepalive expired");
        }
        End::ConnectTimeout => {
            core.stats.idle_timeouts.inc();
            debug!(listener = %rt.name, %peer, "closing connection: no CONNECT in time");
        }
        End::WriteStalled => {
            core.stats.slow_closes.inc();
            warn!(listener = %rt.name, %peer, client_id, "closing mqtt connection: it stopped reading and its writes stalled");
        }
        End::Closed(reason) => {
            info!(listener = %rt.name, %peer, client_id, ?reason, "mqtt connection closed");
        }
        End::Io(e) => debug!(listener = %rt.name, %peer, client_id, "connection error: {e}"),
        End::PeerClosed | End::Disconnected(_) => {
            debug!(listener = %rt.name, %peer, client_id, "mqtt client left")
        }
    }
}

enum Wake {
    Readable(io::Result<usize>),
    Kicked,
    Timer,
}

#[allow(clippy::too_many_arguments)]
async fn run(
    core: &Rc<Core>,
    rt: &Rc<MqttListenerRt>,
    conn: &Rc<MqttConn>,
    stream: &mut TcpStream,
    id: ConnId,
    client: &mut Client,
    input: &mut Input,
) -> End {
    let connect_timeout = core.settings.borrow().mqtt.connect_timeout;
    let mut deadline = Instant::now() + connect_timeout;
    let mut reads_since_yield = 0u32;
    loop {
        if let Some(reason) = conn.close.borrow_mut().take() {
            return End::Closed(reason);
        }
        if conn.writer.write_failed.get() {
            return End::Io(io::Error::new(io::ErrorKind::BrokenPipe, "write failed"));
        }
        if !conn.writer.is_empty() {
            if let Err(e) = conn
                .writer
                .flush(core, stream, || conn.close.borrow_mut().take())
                .await
            {
                return e.into();
            }
            if let Some(s) = &client.session {
                s.pump();
            }
        }
        if conn.draining.get() {
            conn.send_disconnect(ReasonCode::ServerShuttingDown);
            let _ = conn.writer.flush(core, stream, || None).await;
            conn.writer.shutdown_write();
            return End::Closed(CloseReason::Shutdown);
        }
        if core.mesh_gate.is_closed() {
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
                glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
                Wake::Timer
            };
            readable.or(kicked).or(timer).await
        };
        match wake {
            Wake::Kicked => {}
            Wake::Timer => {
                if Instant::now() >= deadline {
                    return if client.session.is_some() {
                        End::KeepAlive
                    } else {
                        End::ConnectTimeout
                    };
                }
            }
            Wake::Readable(Err(e)) => return End::Io(e),
            Wake::Readable(Ok(0)) => return End::PeerClosed,
            Wake::Readable(Ok(n)) => {
                let read_end = core.read_clock();
                let first = first.get(..n).unwrap_or_default();
                if let Err(end) = input.feed(core, conn, first).await {
                    return end;
                }
                if let Err(end) = packets(core, rt, conn, id, client, input, read_end).await {
                    return end;
                }
                // Drain what else the socket has, a bounded number of reads.
                if n == FIRST_READ_BYTES {
                    let mut rounds = 0;
                    loop {
                        match input.read_more(core, conn).await {
                            Ok(Some(_)) => {}
                            Ok(None) => break,
                            Err(end) => return end,
                        }
                        let read_end = core.read_clock();
                        if let Err(end) = packets(core, rt, conn, id, client, input, read_end).await
                        {
                            return end;
                        }
                        rounds += 1;
                        if rounds >= READS_PER_YIELD {
                            break;
                        }
                    }
                }
                deadline = Instant::now()
                    + match (&client.session, client.grace) {
                        (None, _) => connect_timeout,
                        (Some(_), Some(grace)) => grace,
                        (Some(_), None) => rt.idle_timeout,
                    };
                reads_since_yield += 1;
                if reads_since_yield >= READS_PER_YIELD {
                    reads_since_yield = 0;
                    futures_lite::future::yield_now().await;
                }
            }
        }
    }
}

/// The MQTT byte stream of a connection, and (WebSocket) the frames it
/// comes in.
pub(super) struct Input {
    /// MQTT bytes not decoded yet.
    rx: Option<PoolBuf>,
    pub(super) ws: Option<WsInput>,
}

impl Input {
    async fn take_leftover(
        &mut self,
        core: &Core,
        conn: &MqttConn,
        bytes: &[u8],
    ) -> Result<(), End> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.feed(core, conn, bytes).await
    }

    /// Takes bytes read from the socket.
    async fn feed(&mut self, core: &Core, conn: &MqttConn, bytes: &[u8]) -> Result<(), End> {
        core.stats.bytes_in.add(bytes.len() as u64);
        if self.ws.is_none() {
            return self.push_mqtt(core, bytes).await;
        }
        self.feed_websocket(core, conn, bytes).await
    }

    /// Appends MQTT bytes to the receive buffer, moving it to a larger one
    /// when the packet being read needs it.
    pub(super) async fn push_mqtt(&mut self, core: &Core, mut bytes: &[u8]) -> Result<(), End> {
        while !bytes.is_empty() {
            let mut buf = self.rx_with_room(core, bytes.len()).await?;
            let room = buf.capacity() - buf.len();
            let (now, later) = bytes.split_at(room.min(bytes.len()));
            buf.extend_from_slice(now);
            bytes = later;
            self.rx = Some(buf);
        }
        Ok(())
    }

    /// The receive buffer with room for more bytes (`wanted` sizes a fresh
    /// one): a full one moves to a buffer twice its size, up to the largest
    /// class.
    async fn rx_with_room(&mut self, core: &Core, wanted: usize) -> Result<PoolBuf, End> {
        let Some(buf) = self.rx.take() else {
            let size = READ_CHUNK_BYTES.max(wanted.min(4096));
            return Ok(core.pool.acquire(size).await);
        };
        if buf.capacity() > buf.len() {
            return Ok(buf);
        }
        let largest = core.pool.largest_buffer_bytes();
        if buf.capacity() >= largest {
            return Err(End::Protocol(
                ReasonCode::PacketTooLarge,
                format!("a packet needs more than {largest} bytes"),
            ));
        }
        let mut bigger = core.pool.acquire((buf.capacity() * 2).min(largest)).await;
        bigger.extend_from_slice(buf.filled());
        Ok(bigger)
    }

    /// One more non-blocking read; `Ok(None)` when the socket has nothing.
    async fn read_more(&mut self, core: &Core, conn: &MqttConn) -> Result<Option<usize>, End> {
        if self.ws.is_none() {
            // Straight into the receive buffer: no copy.
            let mut buf = self.rx_with_room(core, 4096).await?;
            return match recv_nonblocking(conn.writer_fd(), buf.spare_mut()) {
                Ok(Some(0)) => Err(End::PeerClosed),
                Ok(Some(n)) => {
                    buf.advance(n);
                    core.stats.bytes_in.add(n as u64);
                    self.rx = Some(buf);
                    Ok(Some(n))
                }
                Ok(None) => {
                    if buf.len() > 0 {
                        self.rx = Some(buf);
                    }
                    Ok(None)
                }
                Err(e) => Err(End::Io(e)),
            };
        }
        // WebSocket bytes go through the frame decoder first. A pool
        // buffer, not a stack array: a stack array held across the await
        // below would sit in every connection's task.
        let mut chunk = core.pool.acquire(4096).await;
        match recv_nonblocking(conn.writer_fd(), chunk.spare_mut()) {
            Ok(Some(0)) => Err(End::PeerClosed),
            Ok(Some(n)) => {
                chunk.advance(n);
                self.feed(core, conn, chunk.filled()).await?;
                Ok(Some(n))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(End::Io(e)),
        }
    }
}

/// Handles every whole packet buffered; a CONNECT waits for the registry
/// and the other cores before the packets after it are read.
async fn packets(
    core: &Rc<Core>,
    rt: &Rc<MqttListenerRt>,
    conn: &Rc<MqttConn>,
    id: ConnId,
    client: &mut Client,
    input: &mut Input,
    read_end: Option<Instant>,
) -> Result<(), End> {
    loop {
        let Some(buf) = input.rx.take() else {
            return Ok(());
        };
        let filled = buf.len();
        let shared = Rc::new(buf);
        core.begin_batch();
        let result = decode_all(core, rt, conn, client, &shared, read_end);
        core.end_batch();
        let (pos, step) = result?;
        // Keep the partial packet at the end, if any.
        if pos < filled {
            let tail_buf = match Rc::try_unwrap(shared) {
                Ok(mut own) => {
                    own.discard_front(pos);
                    own
                }
                Err(shared) => {
                    let tail = shared.filled().get(pos..).unwrap_or_default();
                    let want = match read_fixed_header(tail, u32::MAX) {
                        Ok(Decoded::Frame { frame, .. }) => frame.total_len(),
                        _ => READ_CHUNK_BYTES,
                    }
                    .max(tail.len() + 1)
                    .min(core.pool.largest_buffer_bytes());
                    let mut fresh = core.pool.acquire(want).await;
                    if !fresh.extend_from_slice(tail) {
                        return Err(End::Protocol(
                            ReasonCode::PacketTooLarge,
                            "partial packet larger than any buffer".into(),
                        ));
                    }
                    fresh
                }
            };
            input.rx = Some(tail_buf);
        }
        match step {
            Step::Continue => return Ok(()),
            Step::SubAck(pending) => {
                let PendingSubAck {
                    mark,
                    packet_id,
                    codes,
                    retained,
                } = *pending;
                if !core.interest_synced(mark, INTEREST_SYNC_TIMEOUT).await {
                    warn!(listener = %rt.name, "another core did not confirm a new subscription in time");
                }
                conn.send_packet(&Packet::SubAck(SubAck {
                    packet_id,
                    codes,
                    properties: Properties::default(),
                }));
                if let Some(session) = &client.session {
                    for out in retained {
                        session.enqueue(out);
                    }
                }
            }
            Step::RetainedAck {
                mark,
                kind,
                packet_id,
                code,
            } => {
                if !core.interest_synced(mark, INTEREST_SYNC_TIMEOUT).await {
                    warn!(listener = %rt.name, "another core did not confirm a retained message in time");
                }
                conn.send_ack(kind, packet_id, code);
            }
            Step::Connect(request) => {
                connect(core, rt, conn, id, client, *request).await?;
                // Packets after CONNECT in the same read are handled now.
            }
        }
    }
}

/// Decodes and handles packets from the start of `shared`; returns how far
/// it got.
fn decode_all(
    core: &Rc<Core>,
    rt: &Rc<MqttListenerRt>,
    conn: &Rc<MqttConn>,
    client: &mut Client,
    shared: &Rc<PoolBuf>,
    read_end: Option<Instant>,
) -> Result<(usize, Step), End> {
    let mut pos = 0;
    let filled = shared.len();
    let max = conn.max_packet_in.get();
    while pos < filled {
        let rest = shared.filled().get(pos..).unwrap_or_default();
        let version = conn.version.get();
        let (packet, consumed) = match decode(rest, version, max) {
            Ok(Decoded::Frame { frame, consumed }) => (frame, consumed),
            Ok(Decoded::Incomplete) => break,
            Err(e) => {
                if client.session.is_none() {
                    refuse_connect_error(conn, rest, &e);
                }
                return Err(e.into());
            }
        };
        let start = pos;
        pos += consumed;
        if client.session.is_none() {
            let Packet::Connect(c) = packet else {
                return Err(End::Protocol(
                    ReasonCode::ProtocolError,
                    "the first packet must be CONNECT".into(),
                ));
            };
            return Ok((pos, Step::Connect(Box::new(connect_request(&c)?))));
        }
        if let Some(step) = handle(core, rt, conn, client, shared, start, packet, read_end)? {
            return Ok((pos, step));
        }
    }
    Ok((pos, Step::Continue))
}
