//! The WebSocket side of a connection's input (MQTT over WebSocket on the
//! HTTP listener's `/mqtt`): the frames read so far are unwrapped in
//! place, binary payloads go on into the MQTT receive buffer, a ping is
//! answered with a pong, a close or a text frame ends the connection; what
//! waits for the rest of a frame is bounded by one frame head plus the
//! largest packet.

use shoal_protocols::mqtt::{Decoded, ReasonCode};
use shoal_protocols::websocket::{decode_frame, unmask, Opcode, Role};

use super::conn::MqttConn;
use super::task::{End, Input};
use crate::core::Core;

/// Undecoded WebSocket bytes (bounded: one frame head plus the largest
/// packet).
#[derive(Default)]
pub(super) struct WsInput {
    raw: Vec<u8>,
}

impl Input {
    /// Unwraps the WebSocket frames in `bytes`, after what the last read
    /// left, into the MQTT receive buffer.
    pub(super) async fn feed_websocket(
        &mut self,
        core: &Core,
        conn: &MqttConn,
        bytes: &[u8],
    ) -> Result<(), End> {
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
}

fn conn_max_packet(conn: &MqttConn) -> usize {
    conn.max_packet_in.get() as usize
}
