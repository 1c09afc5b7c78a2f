//! RTMP (Adobe RTMP 1.0, 2012), sans-IO: handshake, chunk stream,
//! messages, and server and client sessions.
//!
//! Layers, each usable alone:
//!
//! - the handshake ([`ServerHandshake`], [`ClientHandshake`],
//!   [`server_response`]): simple, and the digest handshake of Flash
//!   Player and ffmpeg, detected from C1;
//! - the chunk stream: a [`ChunkDecoder`] reassembles messages from chunks
//!   of all four header formats on interleaved chunk streams, with
//!   extended timestamps, the peer's Set Chunk Size and Abort applied, and
//!   limits on message size, chunk streams and buffered bytes checked
//!   before buffering; [`encode_message`], [`write_chunk_header`] and
//!   [`media_chunk_head`] write chunks;
//! - messages ([`Message`], [`UserControl`], [`Command`]);
//! - sessions ([`ServerSession`], [`ClientSession`]): the str0m/quinn
//!   shape, `handle_input` / `poll_event` / `pending_output`.
//!
//! Invariant: the peer's bytes never panic and never make the decoder hold
//! more than [`ChunkLimits`] allow; time and random bytes come from the
//! caller. Media payloads are never copied by the sessions on the way in:
//! `handle_input` stops at each media message and lends it.
//!
//! A publisher and a server, talking through two byte buffers:
//!
//! ```
//! use shoal_protocols::rtmp::{
//!     ClientConfig, ClientEvent, ClientSession, MediaKind, PublishType, ServerConfig,
//!     ServerEvent, ServerSession,
//! };
//!
//! let mut server = ServerSession::new(ServerConfig::default(), 0, 1);
//! let mut client = ClientSession::new(ClientConfig::default(), 0, 2);
//! client.connect("live", "rtmp://localhost/live");
//! client.create_stream();
//!
//! // Moves bytes both ways until nothing moves; returns the server's media.
//! let mut pump = |server: &mut ServerSession, client: &mut ClientSession| {
//!     let mut media = Vec::new();
//!     loop {
//!         let mut to_server = Vec::new();
//!         client.poll_transmit(&mut to_server);
//!         let mut at = 0;
//!         loop {
//!             let progress = server.handle_input(&to_server[at..]).unwrap();
//!             at += progress.consumed;
//!             match progress.media {
//!                 Some(m) => media.push((m.kind, m.timestamp, m.payload.to_vec())),
//!                 None => break,
//!             }
//!         }
//!         let mut to_client = Vec::new();
//!         server.poll_transmit(&mut to_client);
//!         let mut at = 0;
//!         while at < to_client.len() {
//!             let progress = client.handle_input(&to_client[at..]).unwrap();
//!             if progress.consumed == 0 && progress.media.is_none() {
//!                 break;
//!             }
//!             at += progress.consumed;
//!         }
//!         if to_server.is_empty() && to_client.is_empty() {
//!             return media;
//!         }
//!     }
//! };
//!
//! pump(&mut server, &mut client);
//! let stream_id = std::iter::from_fn(|| client.poll_event())
//!     .find_map(|e| match e {
//!         ClientEvent::StreamCreated { stream_id } => Some(stream_id),
//!         _ => None,
//!     })
//!     .unwrap();
//! client.publish(stream_id, "cam?key=secret", PublishType::Live);
//! pump(&mut server, &mut client);
//! let publish = std::iter::from_fn(|| server.poll_event())
//!     .find(|e| matches!(e, ServerEvent::Publish { .. }))
//!     .unwrap();
//! let ServerEvent::Publish { app, name, query, .. } = publish else { unreachable!() };
//! assert_eq!((app.as_str(), name.as_str(), query.as_str()), ("live", "cam", "key=secret"));
//! server.accept_publish(stream_id).unwrap();
//!
//! client.send_media(stream_id, MediaKind::Video, 40, &[0x17, 0x01, 0, 0, 0]);
//! let media = pump(&mut server, &mut client);
//! assert_eq!(media, vec![(MediaKind::Video, 40, vec![0x17, 0x01, 0, 0, 0])]);
//! ```

use crate::amf0::Amf0Error;

mod chunk;
mod chunk_encode;
mod client;
mod handshake;
mod message;
mod server;
mod session;
#[cfg(test)]
mod tests;

pub use chunk::{
    ChunkDecoder, ChunkLimits, CompleteMessage, MessageHeader, RawMessage, DEFAULT_CHUNK_SIZE,
    EXTENDED_TIMESTAMP,
};
pub use chunk_encode::{
    chunk_head, encode_message, media_chunk_head, write_chunk_header, ChunkHead,
    MAX_CHUNK_HEAD_BYTES, MAX_CSID, MAX_MESSAGE_LENGTH, MIN_CSID,
};
pub use client::{ClientConfig, ClientEvent, ClientSession};
pub use handshake::{
    client_digest_schema, server_response, verify_server_answer, ClientHandshake, DigestSchema,
    HandshakeKind, ServerHandshake, HANDSHAKE_SIZE, RTMP_VERSION,
};
pub use message::{type_id, Command, Message, PeerBandwidthLimit, UserControl};
pub use server::{status, PublishType, ServerConfig, ServerEvent, ServerSession};
pub use session::{csid, MediaKind, MediaMessage, Progress};

/// Why an RTMP connection cannot go on. Close it.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RtmpError {
    /// C0 or S0 holds a version other than 3.
    #[error("unsupported RTMP version {0} (only 3)")]
    UnsupportedVersion(u8),
    /// [`server_response`] was given fewer than 1537 bytes.
    #[error("handshake packet shorter than C0+C1")]
    HandshakeTooShort,
    /// Set Chunk Size of 0 or with the top bit set.
    #[error("invalid chunk size {0}")]
    InvalidChunkSize(u32),
    /// A message header declares a length over the limit.
    #[error("message of {length} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge {
        /// The declared length.
        length: u32,
        /// [`ChunkLimits::max_message_bytes`].
        max: u32,
    },
    /// The peer uses more chunk streams than allowed.
    #[error("more than {max} chunk streams")]
    TooManyChunkStreams {
        /// [`ChunkLimits::max_chunk_streams`].
        max: usize,
    },
    /// Messages being reassembled would hold more bytes than allowed.
    #[error("more than {max} bytes of partial messages")]
    BufferLimit {
        /// [`ChunkLimits::max_buffered_bytes`].
        max: usize,
    },
    /// A chunk of format 2 or 3 on a chunk stream with no earlier header.
    #[error("chunk of format {fmt} on chunk stream {csid} without an earlier header")]
    NoPreviousHeader {
        /// The chunk stream.
        csid: u32,
        /// The chunk's format.
        fmt: u8,
    },
    /// A protocol or user control message too short for its fields.
    #[error("malformed control message of type {type_id}")]
    BadControlMessage {
        /// The message type.
        type_id: u8,
    },
    /// A command whose first value is not a string.
    #[error("command message without a name")]
    BadCommand,
    /// A command or data body is not valid AMF0.
    #[error("AMF0: {0}")]
    Amf0(#[from] Amf0Error),
    /// A stream command before `connect`.
    #[error("stream command before connect")]
    NotConnected,
    /// The caller named a message stream the session does not have.
    #[error("no message stream {stream_id}")]
    UnknownStream {
        /// The stream id given.
        stream_id: u32,
    },
    /// The caller answered a stream that is not waiting for that answer.
    #[error("message stream {stream_id} is not in a state for this")]
    WrongStreamState {
        /// The stream id given.
        stream_id: u32,
    },
    /// The chunk decoder lost track of its own state (a bug, not the peer).
    #[error("chunk decoder state is inconsistent")]
    Internal,
}
