//! The task of one MQTT connection: CONNECT (authentication, session
//! take-over across cores), then packets until the end; the will and the
//! session's fate when it ends.

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
use shoal_protocols::config::{validate_device_id, ListenerAuth};
use shoal_protocols::control::SecretDigest;
use shoal_protocols::mqtt::{
    decode, read_fixed_header, ConnAck, Decoded, MqttError, Packet, Properties, QoS, ReasonCode,
    RetainHandling, SubAck, UnsubAck, Version,
};
use shoal_protocols::topic::{validate_topic_filter, validate_topic_name};
use shoal_protocols::websocket::{decode_frame, encode_close, unmask, CloseCode, Opcode, Role};
use tracing::{debug, info, warn};

use super::acl::DeviceAcl;
use super::broker::{
    publish_will, retain_everywhere, split_shared, subscribe_entry, unpack, unsubscribe_entry,
};
use super::conn::{close_code, keepalive_grace, AckKind, MqttConn, Transport};
use super::session::{Outgoing, Session, Will};
use super::MqttListenerRt;
use crate::auth::{authenticate, AuthFailure, Credentials};
use crate::core::{CloseReason, ConnId, Connection, Core};
use crate::message::{Message, Origin, PublishProps};
use crate::outq::recv_nonblocking;
use crate::pool::{Payload, PoolBuf};
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
struct Client {
    session: Option<Rc<Session>>,
    device: Option<Rc<str>>,
    acl: Option<DeviceAcl>,
    will: Option<Will>,
    /// Inbound Topic Alias → topic.
    aliases: Vec<Option<Rc<str>>>,
    /// Topic Alias Maximum announced to the client.
    alias_max: u16,
    /// The topic of the last PUBLISH without an alias.
    last_topic: Option<Rc<str>>,
    /// Silence allowed before the connection is dropped.
    grace: Option<Duration>,
    /// The Session Expiry the client asked for at connect, seconds.
    connect_expiry: u32,
}

/// A CONNECT, owned, waiting for the registry and the other cores.
#[derive(Debug)]
struct ConnectRequest {
    version: Version,
    clean_start: bool,
    keep_alive_secs: u16,
    client_id: String,
    username: Option<String>,
    password: Option<Vec<u8>>,
    will: Option<Will>,
    session_expiry: u32,
    receive_maximum: u16,
    max_packet_size: u32,
    auth_method: bool,
}

/// Decoding ran into something that needs the task to wait.
enum Step {
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
struct PendingSubAck {
    mark: u64,
    packet_id: u16,
    codes: Vec<ReasonCode>,
    retained: Vec<Outgoing>,
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
struct Input {
    /// MQTT bytes not decoded yet.
    rx: Option<PoolBuf>,
    ws: Option<WsInput>,
}

/// Undecoded WebSocket bytes (bounded: one frame head plus the largest
/// packet).
#[derive(Default)]
struct WsInput {
    raw: Vec<u8>,
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
        let max = conn_max_packet(conn) + 64 * 1024;
        let Some(ws) = self.ws.as_mut() else {
            return Ok(());
        };
        ws.raw.extend_from_slice(bytes);
        let mut raw = std::mem::take(&mut ws.raw);
        let mut pos = 0;
        let result = loop {
            let rest = raw.get_mut(pos..).unwrap_or_default();
            match decode_frame(rest, Role::Server, max as u64) {
                Ok(Decoded::Incomplete) => break Ok(()),
                Err(e) => {
                    break Err(End::Protocol(
                        ReasonCode::MalformedPacket,
                        format!("websocket: {e}"),
                    ))
                }
                Ok(Decoded::Frame { frame, consumed }) => {
                    let payload = rest.get_mut(frame.payload.clone()).unwrap_or_default();
                    if let Some(mask) = frame.mask {
                        unmask(payload, mask);
                    }
                    pos += consumed;
                    match frame.opcode {
                        Opcode::Binary | Opcode::Continuation => {
                            if let Err(e) = self.push_mqtt(core, payload).await {
                                break Err(e);
                            }
                        }
                        Opcode::Text => {
                            break Err(End::Protocol(
                                ReasonCode::MalformedPacket,
                                "websocket: MQTT travels in binary frames, got a text frame".into(),
                            ))
                        }
                        Opcode::Ping => {
                            let mut pong = Vec::new();
                            shoal_protocols::websocket::encode_frame(
                                &mut pong,
                                true,
                                Opcode::Pong,
                                payload,
                                None,
                            );
                            conn.send_raw(&pong);
                        }
                        Opcode::Pong => {}
                        Opcode::Close => break Err(End::PeerClosed),
                    }
                }
            }
        };
        raw.drain(..pos.min(raw.len()));
        if raw.len() > max {
            return Err(End::Protocol(
                ReasonCode::PacketTooLarge,
                "websocket frame too large".into(),
            ));
        }
        if let Some(ws) = self.ws.as_mut() {
            ws.raw = raw;
        }
        result
    }

    /// Appends MQTT bytes to the receive buffer, moving it to a larger one
    /// when the packet being read needs it.
    async fn push_mqtt(&mut self, core: &Core, mut bytes: &[u8]) -> Result<(), End> {
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

fn conn_max_packet(conn: &MqttConn) -> usize {
    conn.max_packet_in.get() as usize
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

/// A CONNECT the codec refused: the client still gets a CONNACK saying
/// why, in its own version when its protocol level is readable (the 3.1.1
/// form otherwise).
fn refuse_connect_error(conn: &MqttConn, bytes: &[u8], e: &MqttError) {
    let code = e.reason_code();
    // CONNECT: fixed header, then "MQTT" (2-byte length + 4 bytes), then
    // the protocol level.
    let level = match read_fixed_header(bytes, u32::MAX) {
        Ok(Decoded::Frame { frame, .. }) => bytes.get(frame.header_len + 6).copied(),
        _ => None,
    };
    let version = match level {
        Some(5) if !matches!(e, MqttError::UnsupportedProtocol { .. }) => Version::V5,
        _ => Version::V311,
    };
    conn.version.set(version);
    conn.send_packet(&Packet::ConnAck(ConnAck {
        session_present: false,
        code,
        properties: Properties::default(),
    }));
}

fn owned_props(p: &Properties<'_>, now: Instant) -> Option<Rc<PublishProps>> {
    let any = p.payload_format_indicator.is_some()
        || p.message_expiry_interval.is_some()
        || p.content_type.is_some()
        || p.response_topic.is_some()
        || p.correlation_data.is_some()
        || !p.user_properties.is_empty();
    any.then(|| {
        Rc::new(PublishProps {
            payload_format_indicator: p.payload_format_indicator,
            expires_at: p
                .message_expiry_interval
                .map(|s| now + Duration::from_secs(u64::from(s))),
            content_type: p.content_type.map(Into::into),
            response_topic: p.response_topic.map(Into::into),
            correlation_data: p.correlation_data.map(Into::into),
            user_properties: p
                .user_properties
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        })
    })
}

fn connect_request(c: &shoal_protocols::mqtt::Connect<'_>) -> Result<ConnectRequest, End> {
    let now = Instant::now();
    let will = match &c.will {
        Some(w) => {
            validate_topic_name(w.topic).map_err(|e| {
                End::Protocol(ReasonCode::TopicNameInvalid, format!("will topic: {e}"))
            })?;
            Some(Will {
                topic: w.topic.into(),
                payload: Payload::heap(w.payload),
                qos: w.qos as u8,
                retain: w.retain,
                props: owned_props(&w.properties, now),
                delay: Duration::from_secs(u64::from(
                    w.properties.will_delay_interval.unwrap_or(0),
                )),
            })
        }
        None => None,
    };
    Ok(ConnectRequest {
        version: c.version,
        clean_start: c.clean_start,
        keep_alive_secs: c.keep_alive_secs,
        client_id: c.client_id.to_owned(),
        username: c.username.map(str::to_owned),
        password: c.password.map(<[u8]>::to_vec),
        will,
        session_expiry: c.properties.session_expiry_interval.unwrap_or(0),
        receive_maximum: c.properties.receive_maximum.unwrap_or(u16::MAX),
        max_packet_size: c.properties.maximum_packet_size.unwrap_or(0),
        auth_method: c.properties.authentication_method.is_some(),
    })
}

/// Sends a refusing CONNACK and ends.
fn refuse(conn: &MqttConn, code: ReasonCode, why: impl Into<String>) -> End {
    conn.send_packet(&Packet::ConnAck(ConnAck {
        session_present: false,
        code,
        properties: Properties::default(),
    }));
    End::Refused(code, why.into())
}

/// Authenticates, takes the session over from wherever it is, answers
/// CONNACK.
async fn connect(
    core: &Rc<Core>,
    rt: &Rc<MqttListenerRt>,
    conn: &Rc<MqttConn>,
    id: ConnId,
    client: &mut Client,
    req: ConnectRequest,
) -> Result<(), End> {
    conn.version.set(req.version);
    conn.max_packet_out.set(req.max_packet_size);
    if req.auth_method {
        return Err(refuse(
            conn,
            ReasonCode::BadAuthenticationMethod,
            "extended authentication is not supported",
        ));
    }
    // Who is it?
    if rt.auth == ListenerAuth::DeviceSecret {
        let (Some(user), Some(password)) = (&req.username, &req.password) else {
            core.stats.auth_failures.inc();
            return Err(refuse(conn, ReasonCode::BadUserNameOrPassword, "device authentication failed: user name (device id) and password (secret) are required"));
        };
        if let Err(e) = validate_device_id(user) {
            core.stats.auth_failures.inc();
            return Err(refuse(
                conn,
                ReasonCode::BadUserNameOrPassword,
                format!("device authentication failed: {e}"),
            ));
        }
        let device: Rc<str> = user.as_str().into();
        let credentials = Credentials {
            device: Rc::clone(&device),
            digest: SecretDigest::of(user, password),
        };
        match authenticate(core, &credentials).await {
            Ok(product) => {
                client.acl = Some(core.mqtt.acl().for_device(&product, &device));
                client.device = Some(device);
            }
            Err(failure) => {
                core.stats.auth_failures.inc();
                let code = match failure {
                    AuthFailure::Busy | AuthFailure::NoAnswer => ReasonCode::ServerBusy,
                    _ => ReasonCode::BadUserNameOrPassword,
                };
                return Err(refuse(
                    conn,
                    code,
                    format!("device {device:?} authentication failed: {failure}"),
                ));
            }
        }
    }
    let mut will = req.will;
    if let (Some(w), Some(acl)) = (&will, &client.acl) {
        if !acl.may_publish(&w.topic) {
            core.stats.mqtt_acl_denials.inc();
            return Err(refuse(
                conn,
                ReasonCode::NotAuthorized,
                format!("will topic {:?} is not allowed", w.topic),
            ));
        }
    }
    // The client id: given, or assigned.
    let mut assigned = None;
    let client_id: Rc<str> = if req.client_id.is_empty() {
        if req.version == Version::V311 && !req.clean_start {
            return Err(refuse(
                conn,
                ReasonCode::ClientIdentifierNotValid,
                "an empty client id needs a clean session",
            ));
        }
        let generated = format!("shoal-{}-{}", core.index, core.mqtt.assign_id());
        assigned = Some(generated.clone());
        generated.into()
    } else {
        req.client_id.as_str().into()
    };
    let settings = core.settings.borrow().mqtt.clone();
    let max_expiry = u32::try_from(settings.max_session_expiry.as_secs()).unwrap_or(u32::MAX);
    let expiry_secs = match req.version {
        Version::V5 => req.session_expiry.min(max_expiry),
        Version::V311 if req.clean_start => 0,
        Version::V311 => max_expiry,
    };
    // Take the session from this core and from the others.
    let local = core.mqtt.take_local(core, &client_id, req.clean_start);
    let remote = core
        .mqtt
        .claim_remote(core, &client_id, req.clean_start)
        .await;
    if conn.close.borrow().is_some() {
        return Err(End::Closed(
            conn.close
                .borrow_mut()
                .take()
                .unwrap_or(CloseReason::TakenOver),
        ));
    }
    let (session, present) = match (local, remote) {
        (Some(s), _) => {
            core.mqtt.reinsert(&s);
            (s, true)
        }
        (None, Some(transfer)) => {
            let s = core
                .mqtt
                .new_session(core, Rc::clone(&client_id), req.version);
            unpack(core, &s, *transfer);
            (s, true)
        }
        (None, None) => (
            core.mqtt
                .new_session(core, Rc::clone(&client_id), req.version),
            false,
        ),
    };
    core.mqtt.mark_online(&session);
    {
        let mut st = session.state.borrow_mut();
        st.version = req.version;
        st.conn = Some(Rc::clone(conn));
        st.will_due = None;
        st.expiry = Duration::from_secs(u64::from(expiry_secs));
        st.send_window = usize::from(req.receive_maximum.min(settings.max_inflight).max(1));
    }
    client.session = Some(Rc::clone(&session));
    client.connect_expiry = expiry_secs;
    client.grace = keepalive_grace(req.keep_alive_secs);
    // The alias table is made when a client first sets an alias.
    client.alias_max = settings.max_topic_aliases;
    client.will = will.take();
    let mut properties = Properties::default();
    if req.version == Version::V5 {
        properties.receive_maximum = Some(settings.max_inflight);
        properties.maximum_packet_size = Some(conn.max_packet_in.get());
        properties.topic_alias_maximum = Some(settings.max_topic_aliases);
        properties.retain_available = Some(1);
        properties.shared_subscription_available = Some(1);
        properties.wildcard_subscription_available = Some(1);
        properties.subscription_identifier_available = Some(1);
        properties.assigned_client_identifier = assigned.as_deref();
        if req.session_expiry != expiry_secs {
            properties.session_expiry_interval = Some(expiry_secs);
        }
        properties.maximum_qos = None;
    }
    conn.send_packet(&Packet::ConnAck(ConnAck {
        session_present: present,
        code: ReasonCode::Success,
        properties,
    }));
    if let Some(device) = &client.device {
        core.device_online(id, Rc::clone(device));
    }
    debug!(listener = %rt.name, peer = %conn.peer, client_id = %client_id, session_present = present, "mqtt client connected");
    session.resend_inflight();
    Ok(())
}

/// Handles one packet of a connected client.
#[allow(clippy::too_many_arguments)]
fn handle(
    core: &Rc<Core>,
    rt: &Rc<MqttListenerRt>,
    conn: &Rc<MqttConn>,
    client: &mut Client,
    shared: &Rc<PoolBuf>,
    start: usize,
    packet: Packet<'_>,
    read_end: Option<Instant>,
) -> Result<Option<Step>, End> {
    let Some(session) = client.session.clone() else {
        return Ok(None);
    };
    let v5 = conn.version.get() == Version::V5;
    match packet {
        Packet::Publish(p) => {
            // Resolve the Topic Alias.
            let topic: Rc<str> = match p.properties.topic_alias {
                Some(alias) => {
                    if client.aliases.is_empty() && alias <= client.alias_max {
                        client.aliases = vec![None; usize::from(client.alias_max)];
                    }
                    let slot = client
                        .aliases
                        .get_mut(usize::from(alias).wrapping_sub(1))
                        .ok_or_else(|| {
                            End::Protocol(
                                ReasonCode::TopicAliasInvalid,
                                format!("topic alias {alias} is above the maximum"),
                            )
                        })?;
                    if p.topic.is_empty() {
                        slot.clone().ok_or_else(|| {
                            End::Protocol(
                                ReasonCode::ProtocolError,
                                format!("topic alias {alias} was never set"),
                            )
                        })?
                    } else {
                        let t: Rc<str> = p.topic.into();
                        *slot = Some(Rc::clone(&t));
                        t
                    }
                }
                // A device mostly publishes to the same topic: reuse it.
                None => match &client.last_topic {
                    Some(t) if **t == *p.topic => Rc::clone(t),
                    _ => {
                        let t: Rc<str> = p.topic.into();
                        client.last_topic = Some(Rc::clone(&t));
                        t
                    }
                },
            };
            validate_topic_name(&topic).map_err(|e| {
                End::Protocol(ReasonCode::TopicNameInvalid, format!("publish topic: {e}"))
            })?;
            let packet_id = p.packet_id.unwrap_or(0);
            if p.qos == QoS::ExactlyOnce {
                let mut st = session.state.borrow_mut();
                if st.incoming_qos2.contains(&packet_id) {
                    // A resend of one we have: acknowledge again only.
                    drop(st);
                    conn.send_ack(AckKind::Rec, packet_id, ReasonCode::Success);
                    return Ok(None);
                }
                let max = usize::from(core.settings.borrow().mqtt.max_inflight);
                if st.incoming_qos2.len() >= max {
                    return Err(End::Protocol(
                        ReasonCode::ReceiveMaximumExceeded,
                        format!("more than {max} QoS 2 publishes unacknowledged"),
                    ));
                }
                st.incoming_qos2.insert(packet_id);
            }
            let allowed = client.acl.as_ref().is_none_or(|a| a.may_publish(&topic));
            let mut retained_mark = 0;
            let code = if allowed {
                let range = {
                    let base = shared.filled().as_ptr() as usize;
                    let at = (p.payload.as_ptr() as usize).saturating_sub(base);
                    at..at + p.payload.len()
                };
                let _ = start;
                let msg = Message {
                    topic,
                    payload: Payload::new(Rc::clone(shared), range),
                    qos: p.qos as u8,
                    retain: p.retain,
                    origin: Origin {
                        listener: Some(Rc::clone(&rt.name)),
                        device: client.device.clone(),
                        session: session.key,
                    },
                    hops: 0,
                    props: if v5 {
                        owned_props(&p.properties, Instant::now())
                    } else {
                        None
                    },
                };
                if msg.retain {
                    retain_everywhere(core, &msg);
                    if p.qos != QoS::AtMostOnce {
                        retained_mark = core.interest_mark();
                    }
                }
                core.publish_read(msg, read_end);
                ReasonCode::Success
            } else {
                core.stats.mqtt_acl_denials.inc();
                if let Some(more) = rt.error_log.allow() {
                    warn!(listener = %rt.name, client_id = %session.client_id, topic = %topic, suppressed = more, "publish refused: not allowed for the device's product");
                }
                ReasonCode::NotAuthorized
            };
            let code = if v5 { code } else { ReasonCode::Success };
            let kind = match p.qos {
                QoS::AtMostOnce => return Ok(None),
                QoS::AtLeastOnce => AckKind::Ack,
                QoS::ExactlyOnce => {
                    if code.is_error() {
                        session.state.borrow_mut().incoming_qos2.remove(&packet_id);
                    }
                    AckKind::Rec
                }
            };
            if retained_mark != 0 {
                return Ok(Some(Step::RetainedAck {
                    mark: retained_mark,
                    kind,
                    packet_id,
                    code,
                }));
            }
            conn.send_ack(kind, packet_id, code);
        }
        Packet::PubAck(a) | Packet::PubComp(a) => {
            session.acknowledged(a.packet_id);
        }
        Packet::PubRec(a) => {
            if a.code.is_error() {
                session.acknowledged(a.packet_id);
            } else if session.received(a.packet_id) {
                conn.send_pubrel(a.packet_id);
            } else {
                conn.send_ack(
                    AckKind::Rel,
                    a.packet_id,
                    ReasonCode::PacketIdentifierNotFound,
                );
            }
        }
        Packet::PubRel(a) => {
            let known = session
                .state
                .borrow_mut()
                .incoming_qos2
                .remove(&a.packet_id);
            let code = if known || !v5 {
                ReasonCode::Success
            } else {
                ReasonCode::PacketIdentifierNotFound
            };
            conn.send_ack(AckKind::Comp, a.packet_id, code);
        }
        Packet::Subscribe(s) => {
            return Ok(Some(Step::SubAck(Box::new(subscribe(
                core, rt, conn, client, &session, &s,
            )))));
        }
        Packet::Unsubscribe(u) => {
            let mut codes = Vec::with_capacity(u.filters.len());
            for filter in &u.filters {
                let entry = session.state.borrow_mut().subs.remove(*filter);
                codes.push(match entry {
                    Some(e) => {
                        unsubscribe_entry(core, filter, &e.handle);
                        ReasonCode::Success
                    }
                    None => ReasonCode::NoSubscriptionExisted,
                });
            }
            conn.send_packet(&Packet::UnsubAck(UnsubAck {
                packet_id: u.packet_id,
                codes,
                properties: Properties::default(),
            }));
        }
        Packet::PingReq => {
            conn.send_packet(&Packet::PingResp);
        }
        Packet::Disconnect(d) => {
            if let Some(expiry) = d.properties.session_expiry_interval {
                if client.connect_expiry == 0 && expiry > 0 {
                    return Err(End::Protocol(
                        ReasonCode::ProtocolError,
                        "session expiry set on DISCONNECT after 0 at CONNECT".into(),
                    ));
                }
                let max = core.settings.borrow().mqtt.max_session_expiry;
                session.state.borrow_mut().expiry = Duration::from_secs(u64::from(expiry)).min(max);
            }
            return Err(End::Disconnected(d.code));
        }
        Packet::Connect(_) => {
            return Err(End::Protocol(
                ReasonCode::ProtocolError,
                "a second CONNECT".into(),
            ));
        }
        Packet::Auth(_) => {
            return Err(End::Protocol(
                ReasonCode::ProtocolError,
                "AUTH without extended authentication".into(),
            ));
        }
        Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
            return Err(End::Protocol(
                ReasonCode::ProtocolError,
                "a packet only a server sends".into(),
            ));
        }
    }
    Ok(None)
}

fn subscribe(
    core: &Rc<Core>,
    rt: &Rc<MqttListenerRt>,
    conn: &Rc<MqttConn>,
    client: &Client,
    session: &Rc<Session>,
    s: &shoal_protocols::mqtt::Subscribe<'_>,
) -> PendingSubAck {
    let v5 = conn.version.get() == Version::V5;
    let sub_id = s.properties.subscription_identifiers.first().copied();
    let mut codes = Vec::with_capacity(s.filters.len());
    let mut retained: Vec<Outgoing> = Vec::new();
    let now = Instant::now();
    for (filter, options) in &s.filters {
        let (inner, is_shared) = match split_shared(filter) {
            Some((group, inner)) => {
                if group.is_empty() || group.contains(['+', '#']) {
                    codes.push(ReasonCode::TopicFilterInvalid);
                    continue;
                }
                (inner, true)
            }
            None => (*filter, false),
        };
        if validate_topic_filter(inner).is_err() || (is_shared && options.no_local) {
            codes.push(ReasonCode::TopicFilterInvalid);
            continue;
        }
        if let Some(acl) = &client.acl {
            if !acl.may_subscribe(inner) {
                core.stats.mqtt_acl_denials.inc();
                if let Some(more) = rt.error_log.allow() {
                    warn!(listener = %rt.name, client_id = %session.client_id, filter = %filter, suppressed = more, "subscription refused: not allowed for the device's product");
                }
                codes.push(ReasonCode::NotAuthorized);
                continue;
            }
        }
        let max_subs = core.settings.borrow().mqtt.max_subscriptions as usize;
        let full = {
            let st = session.state.borrow();
            st.subs.len() >= max_subs && !st.subs.contains_key(*filter)
        };
        if full {
            core.stats.mqtt_subscriptions_refused.inc();
            if let Some(more) = rt.error_log.allow() {
                warn!(listener = %rt.name, client_id = %session.client_id, filter = %filter, max_subscriptions = max_subs, suppressed = more, "subscription refused: the session holds max_subscriptions filters");
            }
            codes.push(ReasonCode::QuotaExceeded);
            continue;
        }
        let existed = subscribe_entry(core, session, filter, *options, sub_id);
        codes.push(match options.qos {
            QoS::AtMostOnce => ReasonCode::Success,
            QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
            QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
        });
        let send_retained = !is_shared
            && match options.retain_handling {
                RetainHandling::OnSubscribe => true,
                RetainHandling::OnNewSubscribe => !existed,
                RetainHandling::Never => false,
            };
        if send_retained {
            core.mqtt
                .retained
                .borrow()
                .for_each_match(inner, now, |topic, r| {
                    retained.push(Outgoing {
                        topic: Rc::clone(topic),
                        payload: r.payload.clone(),
                        qos: QoS::from_bits(r.qos.min(options.qos as u8)).unwrap_or_default(),
                        retain: true,
                        props: r.props.clone(),
                        sub_id,
                    });
                });
        }
    }
    let codes = if v5 {
        codes
    } else {
        codes
            .into_iter()
            .map(|c| {
                if c.is_error() {
                    ReasonCode::UnspecifiedError
                } else {
                    c
                }
            })
            .collect()
    };
    let mark = if codes.iter().any(|c| !c.is_error()) {
        core.interest_mark()
    } else {
        0
    };
    PendingSubAck {
        mark,
        packet_id: s.packet_id,
        codes,
        retained,
    }
}
