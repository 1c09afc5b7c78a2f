//! WebSocket (RFC 6455), sans-IO.
//!
//! Four pieces, each a pure function or a small state machine over the
//! caller's bytes:
//!
//! - the opening handshake ([`check_upgrade`], [`write_accept`],
//!   [`HandshakeError::write_refusal`]) on top of an
//!   [`http1::RequestHead`](crate::http1::RequestHead);
//! - frames: [`decode_frame`] finds a frame at the start of a buffer and
//!   checks its head (masking rule of the [`Role`], reserved bits and
//!   opcodes, control frame rules, the payload limit) before the payload has
//!   arrived; [`unmask`] unmasks the payload in place; [`encode_frame_head`]
//!   writes a head so a payload can be sent without copying it;
//! - messages: a [`Reassembler`] per connection turns frames into
//!   [`Event`]s (fragmentation, interleaved control frames, UTF-8 of text,
//!   close payloads), copying only fragmented messages, within a cap;
//! - closing: [`CloseCode`], [`encode_close`], and [`WsError::close_code`],
//!   the code to close with after an error.
//!
//! Decoding never allocates and never buffers: the caller owns the bytes.
//! A server decodes with [`Role::Server`] (client frames must be masked) and
//! sends unmasked frames.
//!
//! ```
//! use shoal_protocols::framing::Decoded;
//! use shoal_protocols::http1::{parse_request_head, HeadLimits};
//! use shoal_protocols::websocket::{
//!     check_upgrade, decode_frame, unmask, write_accept, Event, Reassembler, Role,
//! };
//!
//! // The handshake of RFC 6455 §1.3.
//! let request = b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
//!     Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
//!     Sec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n";
//! let Ok(Decoded::Frame { frame: head, .. }) = parse_request_head(request, &HeadLimits::default())
//! else {
//!     unreachable!()
//! };
//! let upgrade = check_upgrade(&head).unwrap();
//! let mut answer = Vec::new();
//! write_accept(&mut answer, &upgrade, Some("chat"));
//! let answer = String::from_utf8(answer).unwrap();
//! assert!(answer.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
//! assert!(answer.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
//! assert!(answer.contains("Sec-WebSocket-Protocol: chat\r\n"));
//!
//! // A masked "Hello" from the client (RFC 6455 §5.7), decoded in place.
//! let mut inbox = vec![0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
//! let mut messages = Reassembler::new(64 * 1024);
//! let Ok(Decoded::Frame { frame, consumed }) = decode_frame(&inbox, Role::Server, 64 * 1024)
//! else {
//!     unreachable!()
//! };
//! assert_eq!(consumed, inbox.len());
//! let payload = &mut inbox[frame.payload.clone()];
//! if let Some(mask) = frame.mask {
//!     unmask(payload, mask);
//! }
//! assert!(messages.is_whole_message(frame.opcode, frame.fin));
//! match messages.feed(frame.opcode, frame.fin, payload) {
//!     Ok(Some(Event::Message { text: true, data })) => assert_eq!(data, b"Hello"),
//!     other => panic!("{other:?}"),
//! }
//! ```

pub use crate::framing::Decoded;

mod close;
mod frame;
mod handshake;
mod message;
#[cfg(test)]
mod tests;

pub use close::{encode_close, parse_close, CloseCode, MAX_CLOSE_REASON_BYTES};
pub use frame::{
    decode_frame, encode_frame, encode_frame_head, unmask, unmask_at, write_frame_head, FrameHead,
    Opcode, Role, MAX_CONTROL_PAYLOAD_BYTES, MAX_FRAME_HEAD_BYTES,
};
pub use handshake::{accept_key, check_upgrade, write_accept, HandshakeError, Upgrade};
pub use message::{Event, Reassembler};

/// Why a frame or a message was refused. Close the connection with
/// [`close_code`](Self::close_code).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WsError {
    /// A client sent an unmasked frame (a server must receive masked frames).
    #[error("unmasked frame from a client")]
    UnmaskedFrame,
    /// A server sent a masked frame (a client must receive unmasked frames).
    #[error("masked frame from a server")]
    MaskedFrame,
    /// RSV1-3 set, but no extension was negotiated.
    #[error("reserved bits {bits:#04x} set without a negotiated extension")]
    ReservedBits {
        /// The reserved bits of the first byte (mask `0x70`).
        bits: u8,
    },
    /// A reserved opcode (3-7, 0xB-0xF).
    #[error("unknown opcode {0:#x}")]
    UnknownOpcode(u8),
    /// A control frame without FIN.
    #[error("fragmented control frame")]
    FragmentedControl,
    /// A control frame with more than 125 bytes of payload.
    #[error("control frame of {len} bytes (at most 125)")]
    ControlTooLong {
        /// The declared payload length.
        len: u64,
    },
    /// A 64-bit payload length with its most significant bit set.
    #[error("64-bit payload length with the most significant bit set")]
    LengthOverflow,
    /// A frame declares more payload than the limit.
    #[error("frame payload of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The declared payload length.
        len: u64,
        /// The limit in force.
        max: u64,
    },
    /// A message (reassembled or single) exceeds the limit.
    #[error("message of at least {len} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge {
        /// The message size reached.
        len: u64,
        /// The limit in force (`max_message_bytes`).
        max: u64,
    },
    /// A continuation frame while no fragmented message is open.
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is still open.
    #[error("new data frame while a fragmented message is open")]
    MessageInterrupted,
    /// A text message or a close reason is not valid UTF-8.
    #[error("invalid UTF-8 in a text message or close reason")]
    InvalidUtf8,
    /// A close frame with a 1-byte payload.
    #[error("close frame with a 1-byte payload")]
    BadClosePayload,
    /// A close frame with a code a peer may not send.
    #[error("close code {0} may not be sent")]
    InvalidCloseCode(u16),
}

impl WsError {
    /// The close code to close the connection with: 1009 for sizes over a
    /// limit, 1007 for invalid UTF-8, 1002 (protocol error) otherwise.
    pub fn close_code(&self) -> u16 {
        match self {
            Self::TooLarge { .. } | Self::MessageTooLarge { .. } => CloseCode::MESSAGE_TOO_BIG.0,
            Self::InvalidUtf8 => CloseCode::INVALID_PAYLOAD.0,
            Self::UnmaskedFrame
            | Self::MaskedFrame
            | Self::ReservedBits { .. }
            | Self::UnknownOpcode(_)
            | Self::FragmentedControl
            | Self::ControlTooLong { .. }
            | Self::LengthOverflow
            | Self::UnexpectedContinuation
            | Self::MessageInterrupted
            | Self::BadClosePayload
            | Self::InvalidCloseCode(_) => CloseCode::PROTOCOL_ERROR.0,
        }
    }
}
