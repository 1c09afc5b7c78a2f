//! One MQTT connection: its write half ([`MqttConn`], what sessions and
//! the core touch) and its task (read, decode, handle, until the end).

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use shoal_protocols::mqtt::{
    encode, encode_publish_head, Ack, Disconnect, Packet, Properties, Publish, ReasonCode, Version,
};
use shoal_protocols::websocket::{write_frame_head, Opcode, MAX_FRAME_HEAD_BYTES};

use super::session::Outgoing;
use crate::core::{CloseReason, Connection, Core, DeferredFlush};
use crate::outq::{Segment, MAX_INLINE_BYTES};
use crate::pool::Payload;
use crate::writer::{weak_flush, Sent, Writer};

thread_local! {
    /// Where packet heads are encoded before they are queued.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(256));
}

/// How MQTT packets travel on this connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// Straight on TCP.
    Tcp,
    /// In WebSocket binary frames (subprotocol `mqtt`).
    WebSocket,
}

/// The shared half of an MQTT connection.
#[derive(Debug)]
pub(crate) struct MqttConn {
    pub(crate) core: Rc<Core>,
    pub(crate) peer: SocketAddr,
    pub(crate) fd: std::os::fd::RawFd,
    pub(crate) writer: Writer,
    pub(crate) transport: Transport,
    /// Protocol version, known once CONNECT is read.
    pub(crate) version: Cell<Version>,
    /// The client's Maximum Packet Size (0: none given).
    pub(crate) max_packet_out: Cell<u32>,
    /// The largest packet taken from the client (the listener's
    /// `max_frame_bytes`).
    pub(crate) max_packet_in: Cell<u32>,
    pub(crate) close: RefCell<Option<CloseReason>>,
    pub(crate) draining: Cell<bool>,
    pub(crate) me: Weak<Self>,
}

impl DeferredFlush for MqttConn {
    fn flush_deferred(&self) {
        self.writer.flush_deferred(&self.core);
    }
}

impl Connection for MqttConn {
    fn close(&self, reason: CloseReason) {
        self.close.borrow_mut().get_or_insert(reason);
        self.writer.kick.kick();
    }

    fn begin_drain(&self) {
        self.draining.set(true);
        self.writer.kick.kick();
    }
}

impl MqttConn {
    pub(crate) fn writer_fd(&self) -> std::os::fd::RawFd {
        self.fd
    }

    fn me(&self) -> Weak<dyn DeferredFlush> {
        weak_flush(&self.me)
    }

    /// Queues `head` + `payload` as one message (a WebSocket frame around
    /// both on WebSocket connections).
    fn send_parts(&self, head: &[u8], payload: Option<&Payload>, force: bool) -> Sent {
        let payload_len = payload.map_or(0, Payload::len);
        let head_segment = if head.len() <= MAX_INLINE_BYTES {
            Segment::inline(head)
        } else {
            Segment::Payload(Payload::heap(head))
        };
        let mut total = head.len() + payload_len;
        // Absent parts are empty segments: nothing is written for them.
        let frame = if self.transport == Transport::WebSocket {
            let mut frame_head = [0u8; MAX_FRAME_HEAD_BYTES];
            let len = write_frame_head(&mut frame_head, true, Opcode::Binary, total as u64, None);
            total += len;
            Segment::inline(frame_head.get(..len).unwrap_or_default())
        } else {
            Segment::inline(&[])
        };
        let body = payload.map_or_else(|| Segment::inline(&[]), |p| Segment::Payload(p.clone()));
        self.writer.send(
            &self.core,
            &self.me(),
            &[frame, head_segment, body],
            total,
            force,
        )
    }

    /// Sends bytes already framed for the transport (WebSocket control
    /// frames), whatever the queue holds.
    pub(crate) fn send_raw(&self, bytes: &[u8]) {
        let segment = Segment::Payload(Payload::heap(bytes));
        self.writer
            .send(&self.core, &self.me(), &[segment], bytes.len(), true);
    }

    /// Sends a control packet (never dropped for room: replies are bounded
    /// by what the client sends).
    pub(crate) fn send_packet(&self, packet: &Packet<'_>) -> Sent {
        let version = self.version.get();
        SCRATCH.with(|s| {
            let mut buf = s.borrow_mut();
            buf.clear();
            if encode(packet, version, &mut buf).is_err() {
                return Sent::Closed;
            }
            self.send_parts(&buf, None, true)
        })
    }

    pub(crate) fn send_ack(&self, kind: AckKind, packet_id: u16, code: ReasonCode) -> Sent {
        let ack = Ack {
            packet_id,
            code,
            properties: Properties::default(),
        };
        let packet = match kind {
            AckKind::Ack => Packet::PubAck(ack),
            AckKind::Rec => Packet::PubRec(ack),
            AckKind::Rel => Packet::PubRel(ack),
            AckKind::Comp => Packet::PubComp(ack),
        };
        self.send_packet(&packet)
    }

    pub(crate) fn send_pubrel(&self, packet_id: u16) {
        self.send_ack(AckKind::Rel, packet_id, ReasonCode::Success);
    }

    /// Sends DISCONNECT with `code` (5.0 only; 3.1.1 servers just close).
    pub(crate) fn send_disconnect(&self, code: ReasonCode) {
        if self.version.get() == Version::V5 {
            self.send_packet(&Packet::Disconnect(Disconnect {
                code,
                properties: Properties::default(),
            }));
        }
    }

    /// Sends a PUBLISH of `out` with `packet_id` (QoS 1/2); `NoRoom` when
    /// the outbound queue cannot take it whole.
    pub(crate) fn send_publish(&self, out: &Outgoing, packet_id: Option<u16>, dup: bool) -> Sent {
        self.publish_with(out, packet_id, dup, false)
    }

    /// Sends again a message already counted in the window (DUP set).
    pub(crate) fn send_publish_forced(&self, out: &Outgoing, packet_id: u16) {
        self.publish_with(out, Some(packet_id), true, true);
    }

    fn publish_with(&self, out: &Outgoing, packet_id: Option<u16>, dup: bool, force: bool) -> Sent {
        let version = self.version.get();
        let mut properties = Properties::default();
        if version == Version::V5 {
            if let Some(p) = &out.props {
                properties.payload_format_indicator = p.payload_format_indicator;
                if let Some(at) = p.expires_at {
                    let left = at.saturating_duration_since(Instant::now());
                    // Rounded up: a message is never sent as already expired.
                    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                    properties.message_expiry_interval =
                        Some(u32::try_from(secs.max(1)).unwrap_or(u32::MAX));
                }
                properties.content_type = p.content_type.as_deref();
                properties.response_topic = p.response_topic.as_deref();
                properties.correlation_data = p.correlation_data.as_deref();
                properties.user_properties = p
                    .user_properties
                    .iter()
                    .map(|(k, v)| (&**k, &**v))
                    .collect();
            }
            if let Some(id) = out.sub_id {
                properties.subscription_identifiers.push(id);
            }
        }
        let publish = Publish {
            dup,
            qos: out.qos,
            retain: out.retain,
            topic: &out.topic,
            packet_id,
            properties,
            payload: out.payload.as_slice(),
        };
        SCRATCH.with(|s| {
            let mut buf = s.borrow_mut();
            buf.clear();
            if encode_publish_head(&publish, version, &mut buf).is_err() {
                return Sent::Discarded;
            }
            let max = self.max_packet_out.get();
            if max > 0 && buf.len() + out.payload.len() > max as usize {
                // Larger than the client takes: dropped, as if delivered.
                return Sent::Discarded;
            }
            self.send_parts(&buf, Some(&out.payload), force)
        })
    }
}

/// The acknowledgement packets of the QoS flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckKind {
    /// PUBACK
    Ack,
    /// PUBREC
    Rec,
    /// PUBREL
    Rel,
    /// PUBCOMP
    Comp,
}

/// The reason code a server-side close sends (5.0).
pub(crate) fn close_code(reason: &CloseReason) -> ReasonCode {
    match reason {
        CloseReason::TakenOver => ReasonCode::SessionTakenOver,
        CloseReason::Shutdown => ReasonCode::ServerShuttingDown,
        CloseReason::ListenerRemoved => ReasonCode::ServerShuttingDown,
        CloseReason::Kicked | CloseReason::DeviceRemoved => ReasonCode::AdministrativeAction,
    }
}

/// Rounds a keepalive up by half: the time a client may stay silent.
pub(crate) fn keepalive_grace(keep_alive_secs: u16) -> Option<Duration> {
    (keep_alive_secs > 0).then(|| Duration::from_millis(u64::from(keep_alive_secs) * 1500))
}
