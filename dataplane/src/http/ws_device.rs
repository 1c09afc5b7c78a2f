//! WebSocket devices at `/v1/devices/{id}/ws`.
//!
//! After the upgrade (credentials checked first, as for the device API),
//! the connection is the device's: every text or binary message it sends
//! is published on `devices/{id}/up`, and every message on
//! `devices/{id}/down[/…]` goes back to it as one frame (text when the
//! payload is UTF-8, else binary).
//!
//! ```text
//!  socket ─read─▶ raw (bounded) ─decode_frame + unmask─▶ Reassembler ─┬─ message ─▶ publish devices/{id}/up
//!                                                                     ├─ ping ─▶ pong
//!                                                                     └─ close ─▶ close echoed, end
//!  bus devices/{id}/down/# ─deliver─▶ frame head + payload (no copy) ─▶ Writer (bounded queue)
//! ```
//!
//! Bounds: a message is at most the listener's `max_frame_bytes` (larger
//! → close 1009); undecoded input is at most one frame head plus that;
//! the write queue is the core's `outbound_queue_bytes` (a downlink message
//! that does not fit is dropped and counted). A connection silent for half
//! the listener's `idle_timeout` is pinged; silent for all of it, closed.
//! Protocol errors close with the code RFC 6455 gives them (1002, 1007,
//! 1009) and a rate-limited log line.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::{Rc, Weak};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_lite::future::FutureExt;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use shoal_protocols::websocket::{
    decode_frame, encode_close, encode_frame, unmask, write_frame_head, CloseCode, Decoded, Event,
    Opcode, Reassembler, Role, WsError, MAX_FRAME_HEAD_BYTES,
};
use tracing::{debug, info, warn};

use super::device::publish_message;
use super::{log_refusal, HttpListenerRt};
use crate::bus::{Deliver, Subscriber};
use crate::core::{CloseReason, Connection, Core, DeferredFlush};
use crate::message::Message;
use crate::outq::Segment;
use crate::writer::{weak_flush, FlushEnd, Sent, Writer};

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 4096;

/// Reads a connection may do in a row before it lets other tasks run.
const READS_PER_YIELD: u32 = 16;

/// The device's side of the connection: what the bus and the core touch.
struct WsDeviceConn {
    core: Rc<Core>,
    writer: Writer,
    close: RefCell<Option<CloseReason>>,
    draining: Cell<bool>,
    /// A close frame went out: nothing may follow it (RFC 6455 §5.5.1).
    close_sent: Cell<bool>,
    me: Weak<Self>,
}

impl DeferredFlush for WsDeviceConn {
    fn flush_deferred(&self) {
        self.writer.flush_deferred(&self.core);
    }
}

impl Deliver for WsDeviceConn {
    fn deliver(&self, msg: &Message) {
        let stats = &self.core.stats;
        if self.close.borrow().is_some() || self.draining.get() || self.close_sent.get() {
            stats.outbound_drops.inc();
            return;
        }
        let payload = msg.payload.as_slice();
        let opcode = if std::str::from_utf8(payload).is_ok() {
            Opcode::Text
        } else {
            Opcode::Binary
        };
        let mut head = [0u8; MAX_FRAME_HEAD_BYTES];
        let len = write_frame_head(&mut head, true, opcode, payload.len() as u64, None);
        let head = head.get(..len).unwrap_or_default();
        let segments = [Segment::inline(head), Segment::Payload(msg.payload.clone())];
        let sent = self.writer.send(
            &self.core,
            &weak_flush(&self.me),
            &segments,
            len + payload.len(),
            false,
        );
        match sent {
            Sent::Queued => {
                stats.messages_out.inc();
                self.core.http.ws_messages_out.inc();
            }
            Sent::NoRoom | Sent::Closed | Sent::Discarded => stats.outbound_drops.inc(),
        }
    }
}

impl Connection for WsDeviceConn {
    fn close(&self, reason: CloseReason) {
        self.close.borrow_mut().get_or_insert(reason);
        self.writer.kick.kick();
    }

    fn begin_drain(&self) {
        self.draining.set(true);
        self.writer.kick.kick();
    }
}

impl WsDeviceConn {
    /// Queues a control frame (pong, close): small, bounded by what the
    /// peer sends, so it goes past the queue limit.
    fn send_control(&self, frame: Vec<u8>) {
        let total = frame.len();
        let segments = [Segment::Shared {
            bytes: frame.into(),
            start: 0,
        }];
        let _ = self
            .writer
            .send(&self.core, &weak_flush(&self.me), &segments, total, true);
    }

    /// Sends the connection's one close frame (later calls do nothing).
    fn send_close(&self, code: CloseCode, reason: &str) {
        if self.close_sent.replace(true) {
            return;
        }
        let mut frame = Vec::with_capacity(4 + reason.len());
        encode_close(&mut frame, code, reason);
        self.send_control(frame);
    }
}

/// Why a device's connection ended.
#[derive(Debug)]
enum End {
    /// The device sent a close frame (answered), or closed the socket.
    PeerClosed,
    /// Nothing came for the idle timeout.
    Idle,
    /// A frame broke RFC 6455 or a limit.
    Protocol(WsError),
    Io(io::Error),
    /// The device stopped reading and the writes stalled.
    WriteStalled,
    /// The core closed it.
    Closed(CloseReason),
    /// The data plane or the listener drains.
    Drained,
}

/// Serves a device's WebSocket connection whose upgrade was answered;
/// `leftover` are bytes read after the request head.
pub(super) async fn serve(
    core: Rc<Core>,
    rt: Rc<HttpListenerRt>,
    mut stream: TcpStream,
    peer: SocketAddr,
    device: Rc<str>,
    leftover: Vec<u8>,
) {
    let limit = core.settings.borrow().outbound_queue_bytes as usize;
    let conn = Rc::new_cyclic(|me| WsDeviceConn {
        core: Rc::clone(&core),
        writer: Writer::new(stream.as_raw_fd(), limit),
        close: RefCell::new(None),
        draining: Cell::new(false),
        close_sent: Cell::new(false),
        me: me.clone(),
    });
    let id = core.add_conn(Rc::clone(&rt.name), Rc::clone(&conn) as Rc<dyn Connection>);
    let filter = format!("devices/{device}/down/#");
    let sub: Subscriber = Rc::clone(&conn) as Subscriber;
    core.subscribe(&filter, Rc::clone(&sub));
    core.device_online(id, Rc::clone(&device));
    core.http.ws_sessions.inc();
    info!(listener = %rt.name, %peer, device = %device, "websocket device online");
    let up_topic: Rc<str> = format!("devices/{device}/up").into();
    let end = run(&core, &rt, &conn, &mut stream, &device, &up_topic, leftover).await;
    core.unsubscribe(&filter, &sub);
    core.remove_conn(id);
    core.http.ws_sessions.dec();
    rt.spec.open.fetch_sub(1, Ordering::Relaxed);
    // A last close frame, if the socket still takes it; the queue goes.
    if conn.writer.is_open() {
        let _ = futures_lite::future::or(conn.writer.flush(&core, &mut stream, || None), async {
            glommio::timer::sleep(Duration::from_millis(200)).await;
            Ok(())
        })
        .await;
    }
    conn.writer.clear();
    let _ = stream.close().await;
    let device = &*device;
    match &end {
        End::Protocol(e) => {
            core.stats.frame_errors.inc();
            core.http.ws_protocol_errors.inc();
            log_refusal(
                &rt,
                &format!("closing websocket device {device} ({peer}): {e}"),
            );
        }
        End::Idle => {
            core.stats.idle_timeouts.inc();
            info!(listener = %rt.name, %peer, device, "closing idle websocket device");
        }
        End::WriteStalled => {
            core.stats.slow_closes.inc();
            warn!(listener = %rt.name, %peer, device, "closing websocket device: it stopped reading and its writes stalled");
        }
        End::Io(e) => debug!(listener = %rt.name, %peer, device, "websocket device error: {e}"),
        End::Closed(reason) => {
            info!(listener = %rt.name, %peer, device, ?reason, "websocket device closed")
        }
        End::Drained => debug!(listener = %rt.name, %peer, device, "websocket device drained"),
        End::PeerClosed => debug!(listener = %rt.name, %peer, device, "websocket device left"),
    }
}

enum Wake {
    Read(io::Result<usize>),
    Kicked,
    Timer,
}

/// The close code and reason a core-side close is told with.
fn close_code(reason: &CloseReason) -> (CloseCode, &'static str) {
    match reason {
        CloseReason::Shutdown => (CloseCode::GOING_AWAY, "the server is stopping"),
        CloseReason::ListenerRemoved => (CloseCode::GOING_AWAY, "the listener was removed"),
        CloseReason::TakenOver => (CloseCode::POLICY_VIOLATION, "the device connected again"),
        CloseReason::Kicked => (CloseCode::POLICY_VIOLATION, "closed by the operator"),
        CloseReason::DeviceRemoved => (CloseCode::POLICY_VIOLATION, "the device was removed"),
    }
}

async fn run(
    core: &Rc<Core>,
    rt: &Rc<HttpListenerRt>,
    conn: &Rc<WsDeviceConn>,
    stream: &mut TcpStream,
    device: &Rc<str>,
    up_topic: &Rc<str>,
    leftover: Vec<u8>,
) -> End {
    let config = &rt.spec.config;
    let max_message = config.max_frame_bytes as usize;
    let idle_timeout = config.idle_timeout;
    let mut input = Input {
        raw: leftover,
        reassembler: Reassembler::new(max_message),
        max_message,
    };
    let mut last_heard = Instant::now();
    let mut pinged = false;
    let mut closing_since: Option<Instant> = None;
    let mut reads_since_yield = 0u32;
    if !input.raw.is_empty() {
        if let Some(end) = input.frames(core, rt, conn, device, up_topic, None) {
            return end;
        }
    }
    loop {
        if let Some(reason) = conn.close.borrow_mut().take() {
            let (code, text) = close_code(&reason);
            conn.send_close(code, text);
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
                    FlushEnd::Closed(reason) => {
                        // Told while its downlink was backed up: the close
                        // frame goes behind it (serve flushes, bounded).
                        let (code, text) = close_code(&reason);
                        conn.send_close(code, text);
                        End::Closed(reason)
                    }
                };
            }
        }
        if conn.draining.get() && closing_since.is_none() {
            conn.send_close(CloseCode::GOING_AWAY, "the server is stopping");
            closing_since = Some(Instant::now());
            continue;
        }
        if let Some(since) = closing_since {
            // Our close went out; the peer answers with its own (or not).
            if since.elapsed() >= Duration::from_secs(2) {
                return End::Drained;
            }
        }
        if core.mesh_gate.is_closed() {
            core.mesh_gate.pass().await;
        }
        let ping_at = last_heard + idle_timeout / 2;
        let idle_at = last_heard + idle_timeout;
        let next_timer = match closing_since {
            Some(since) => since + Duration::from_secs(2),
            None if pinged => idle_at,
            None => ping_at,
        };
        let mut chunk = [0u8; READ_CHUNK];
        let wake = {
            let read = async { Wake::Read(stream.read(&mut chunk).await) };
            let kicked = async {
                conn.writer.kick.kicked().await;
                Wake::Kicked
            };
            let timer = async {
                glommio::timer::sleep(next_timer.saturating_duration_since(Instant::now())).await;
                Wake::Timer
            };
            read.or(kicked).or(timer).await
        };
        match wake {
            Wake::Kicked => {}
            Wake::Timer => {
                let now = Instant::now();
                if closing_since.is_none() && now >= idle_at {
                    conn.send_close(CloseCode::GOING_AWAY, "idle");
                    return End::Idle;
                }
                if closing_since.is_none() && !pinged && now >= ping_at {
                    pinged = true;
                    let mut ping = Vec::with_capacity(2);
                    encode_frame(&mut ping, true, Opcode::Ping, b"", None);
                    conn.send_control(ping);
                }
            }
            Wake::Read(Err(e)) => return End::Io(e),
            Wake::Read(Ok(0)) => return End::PeerClosed,
            Wake::Read(Ok(n)) => {
                let read_end = core.read_clock();
                last_heard = Instant::now();
                pinged = false;
                core.stats.bytes_in.add(n as u64);
                input
                    .raw
                    .extend_from_slice(chunk.get(..n).unwrap_or_default());
                if let Some(end) = input.frames(core, rt, conn, device, up_topic, read_end) {
                    return end;
                }
                if input.raw.len() > input.max_message + MAX_FRAME_HEAD_BYTES {
                    // decode_frame refuses a declared length over the
                    // limit; this only guards the bound itself.
                    let e = WsError::TooLarge {
                        len: input.raw.len() as u64,
                        max: input.max_message as u64,
                    };
                    conn.send_close(CloseCode(e.close_code()), &e.to_string());
                    return End::Protocol(e);
                }
                reads_since_yield += 1;
                if reads_since_yield >= READS_PER_YIELD {
                    reads_since_yield = 0;
                    futures_lite::future::yield_now().await;
                }
            }
        }
    }
}

/// What was read and not yet taken apart.
struct Input {
    /// Undecoded bytes: at most one frame head plus the largest message.
    raw: Vec<u8>,
    reassembler: Reassembler,
    max_message: usize,
}

impl Input {
    /// Takes every whole frame in `raw`; `Some` when the connection ends.
    fn frames(
        &mut self,
        core: &Rc<Core>,
        rt: &HttpListenerRt,
        conn: &WsDeviceConn,
        device: &Rc<str>,
        up_topic: &Rc<str>,
        read_end: Option<Instant>,
    ) -> Option<End> {
        let mut raw = std::mem::take(&mut self.raw);
        let mut pos = 0;
        let mut end = None;
        core.begin_batch();
        loop {
            let rest = raw.get_mut(pos..).unwrap_or_default();
            let frame = match decode_frame(rest, Role::Server, self.max_message as u64) {
                Ok(Decoded::Incomplete) => break,
                Ok(Decoded::Frame { frame, consumed }) => {
                    pos += consumed;
                    frame
                }
                Err(e) => {
                    conn.send_close(CloseCode(e.close_code()), &e.to_string());
                    end = Some(End::Protocol(e));
                    break;
                }
            };
            let payload = rest.get_mut(frame.payload.clone()).unwrap_or_default();
            if let Some(mask) = frame.mask {
                unmask(payload, mask);
            }
            match self.reassembler.feed(frame.opcode, frame.fin, payload) {
                Ok(None) => {}
                Ok(Some(Event::Message { data, .. })) => {
                    core.http.ws_messages_in.inc();
                    publish_message(core, rt, device, Rc::clone(up_topic), data, read_end);
                }
                Ok(Some(Event::Ping(_))) if conn.close_sent.get() => {}
                Ok(Some(Event::Ping(data))) => {
                    let mut pong = Vec::with_capacity(2 + data.len());
                    encode_frame(&mut pong, true, Opcode::Pong, data, None);
                    conn.send_control(pong);
                }
                Ok(Some(Event::Pong(_))) => {}
                Ok(Some(Event::Close { code, .. })) => {
                    let echo = if code == CloseCode::NO_STATUS {
                        CloseCode::NORMAL
                    } else {
                        code
                    };
                    conn.send_close(echo, "");
                    end = Some(End::PeerClosed);
                    break;
                }
                Err(e) => {
                    conn.send_close(CloseCode(e.close_code()), &e.to_string());
                    end = Some(End::Protocol(e));
                    break;
                }
            }
        }
        core.end_batch();
        raw.drain(..pos.min(raw.len()));
        if raw.is_empty() {
            // An idle device holds no input buffer.
            raw = Vec::new();
        }
        self.raw = raw;
        end
    }
}
