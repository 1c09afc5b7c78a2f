//! What the server and client sessions share: media types, the outbound
//! buffer, acknowledgements and command writers.

use crate::amf0::{self, Amf0Value};

use super::chunk_encode::{encode_message, MAX_MESSAGE_LENGTH};
use super::message::{type_id, Message, UserControl};
use super::DEFAULT_CHUNK_SIZE;

/// Chunk stream ids the sessions send on.
pub mod csid {
    /// Protocol control and user control messages.
    pub const CONTROL: u32 = 2;
    /// Connection-level commands and their answers.
    pub const COMMAND: u32 = 3;
    /// Audio.
    pub const AUDIO: u32 = 4;
    /// Stream-level commands, status and data messages.
    pub const STREAM: u32 = 5;
    /// Video.
    pub const VIDEO: u32 = 6;
}

/// What a media message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// Type 8: an FLV audio tag body.
    Audio,
    /// Type 9: an FLV video tag body.
    Video,
    /// Type 18: AMF0 data (`onMetaData` and friends), the body of an FLV
    /// script tag.
    Data,
}

impl MediaKind {
    /// The message type id it is sent with (and the FLV tag type).
    pub fn type_id(self) -> u8 {
        match self {
            Self::Audio => type_id::AUDIO,
            Self::Video => type_id::VIDEO,
            Self::Data => type_id::DATA_AMF0,
        }
    }

    /// The chunk stream id the sessions send it on.
    pub fn csid(self) -> u32 {
        match self {
            Self::Audio => csid::AUDIO,
            Self::Video => csid::VIDEO,
            Self::Data => csid::STREAM,
        }
    }
}

/// A media message borrowed from the session's decoder (or the input).
/// Copy what you keep before the next call into the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaMessage<'a> {
    /// The message stream it belongs to.
    pub stream_id: u32,
    /// Audio, video or data.
    pub kind: MediaKind,
    /// Absolute timestamp in milliseconds (wrapping).
    pub timestamp: u32,
    /// The payload: an FLV tag body. For data from a publisher, a leading
    /// `@setDataFrame` is already removed, so it starts with `onMetaData`.
    pub payload: &'a [u8],
}

/// What one call of `handle_input` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress<'a> {
    /// Bytes of the input consumed; keep the rest for the next call.
    pub consumed: usize,
    /// A media message, if the call stopped at one. Call again with the
    /// unconsumed input to go on.
    pub media: Option<MediaMessage<'a>>,
}

/// Bytes of room an emptied output buffer keeps.
const KEEP_OUT_BYTES: usize = 1024;

/// The outbound half of a connection: encoded bytes waiting for the
/// socket, the chunk size they are cut with, and acknowledgement state.
#[derive(Debug)]
pub(crate) struct Link {
    out: Vec<u8>,
    /// Bytes of `out` already taken by the caller.
    sent: usize,
    /// Where bytes held back (until the handshake ends) begin in `out`.
    hold_at: Option<usize>,
    out_chunk_size: u32,
    /// Bytes received from the peer.
    received: u64,
    /// `received` when we last acknowledged.
    acked: u64,
    /// The peer's Window Acknowledgement Size, if it sent one.
    peer_window: Option<u32>,
    scratch: Vec<u8>,
}

impl Link {
    pub(crate) fn new() -> Self {
        Self {
            out: Vec::new(),
            sent: 0,
            hold_at: None,
            out_chunk_size: DEFAULT_CHUNK_SIZE,
            received: 0,
            acked: 0,
            peer_window: None,
            scratch: Vec::new(),
        }
    }

    pub(crate) fn out_mut(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// Holds back what is sent from now on until [`release`](Self::release).
    pub(crate) fn hold(&mut self) {
        self.hold_at = Some(self.out.len());
    }

    /// Puts `first` before the held bytes and lets them all go.
    pub(crate) fn release(&mut self, first: &[u8]) {
        match self.hold_at.take() {
            Some(at) if at <= self.out.len() => {
                self.out.splice(at..at, first.iter().copied());
            }
            _ => self.out.extend_from_slice(first),
        }
    }

    pub(crate) fn pending(&self) -> &[u8] {
        let end = self.hold_at.unwrap_or(self.out.len());
        self.out.get(self.sent..end).unwrap_or_default()
    }

    pub(crate) fn consume(&mut self, n: usize) {
        self.sent = self.sent.saturating_add(n.min(self.pending().len()));
        if self.sent == self.out.len() {
            if self.out.capacity() > KEEP_OUT_BYTES {
                // The handshake and the connect answers took more than
                // the messages of a playing or publishing connection do.
                self.out = Vec::new();
            } else {
                self.out.clear();
            }
            self.sent = 0;
            self.hold_at = self.hold_at.map(|_| 0);
        } else if self.sent >= 1 << 16 {
            self.out.drain(..self.sent);
            self.hold_at = self.hold_at.map(|at| at.saturating_sub(self.sent));
            self.sent = 0;
        }
    }

    pub(crate) fn poll_transmit(&mut self, out: &mut Vec<u8>) -> usize {
        let pending = self.pending();
        let n = pending.len();
        out.extend_from_slice(pending);
        self.consume(n);
        n
    }

    pub(crate) fn out_chunk_size(&self) -> u32 {
        self.out_chunk_size
    }

    /// Announces a new outbound chunk size (clamped to 1..=2^24-1) and cuts
    /// later messages with it.
    pub(crate) fn set_out_chunk_size(&mut self, size: u32) {
        let size = size.clamp(1, MAX_MESSAGE_LENGTH);
        self.control(&Message::SetChunkSize(size));
        self.out_chunk_size = size;
    }

    pub(crate) fn set_peer_window(&mut self, window: u32) {
        self.peer_window = (window > 0).then_some(window);
    }

    /// Counts bytes from the peer and acknowledges them once a window is
    /// full.
    pub(crate) fn count_received(&mut self, n: usize) {
        self.received = self.received.saturating_add(n as u64);
        if let Some(window) = self.peer_window {
            if self.received - self.acked >= u64::from(window) {
                self.acked = self.received;
                // The sequence number wraps at 2^32.
                let sequence = self.received as u32;
                self.control(&Message::Acknowledgement { sequence });
            }
        }
    }

    pub(crate) fn received(&self) -> u64 {
        self.received
    }

    /// Sends a message with the current chunk size.
    pub(crate) fn send(
        &mut self,
        csid: u32,
        timestamp: u32,
        type_id: u8,
        stream_id: u32,
        payload: &[u8],
    ) {
        encode_message(
            &mut self.out,
            self.out_chunk_size,
            csid,
            timestamp,
            type_id,
            stream_id,
            payload,
        );
    }

    /// Sends a protocol or user control message on the control chunk stream.
    pub(crate) fn control(&mut self, message: &Message<'_>) {
        let mut body = core::mem::take(&mut self.scratch);
        body.clear();
        message.encode(&mut body);
        self.send(csid::CONTROL, 0, message.type_id(), 0, &body);
        self.scratch = body;
    }

    pub(crate) fn user_control(&mut self, event: UserControl) {
        self.control(&Message::UserControl(event));
    }

    /// Sends an AMF0 message (command or data) whose body `write` appends.
    pub(crate) fn amf0(
        &mut self,
        csid: u32,
        type_id: u8,
        stream_id: u32,
        write: impl FnOnce(&mut Vec<u8>),
    ) {
        let mut body = core::mem::take(&mut self.scratch);
        body.clear();
        write(&mut body);
        self.send(csid, 0, type_id, stream_id, &body);
        self.scratch = body;
    }

    /// Sends a command: name, transaction id, then what `rest` appends.
    pub(crate) fn command(
        &mut self,
        csid: u32,
        stream_id: u32,
        name: &str,
        transaction_id: f64,
        rest: impl FnOnce(&mut Vec<u8>),
    ) {
        self.amf0(csid, type_id::COMMAND_AMF0, stream_id, |body| {
            amf0::write_string(body, name);
            amf0::write_number(body, transaction_id);
            rest(body);
        });
    }

    /// Sends `onStatus` on a stream: `{level, code, description}`.
    pub(crate) fn on_status(&mut self, stream_id: u32, level: &str, code: &str, description: &str) {
        self.command(csid::STREAM, stream_id, "onStatus", 0.0, |body| {
            amf0::write_null(body);
            write_info(body, level, code, description);
        });
    }
}

/// Writes an info object `{level, code, description}`.
pub(crate) fn write_info(body: &mut Vec<u8>, level: &str, code: &str, description: &str) {
    amf0::write_object_start(body);
    amf0::write_key(body, "level");
    amf0::write_string(body, level);
    amf0::write_key(body, "code");
    amf0::write_string(body, code);
    amf0::write_key(body, "description");
    amf0::write_string(body, description);
    amf0::write_object_end(body);
}

/// The string property `key` of an info or command object, or "".
pub(crate) fn string_prop(object: &Amf0Value, key: &str) -> String {
    object
        .get(key)
        .and_then(Amf0Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Splits `name?query` into its parts (the query without the `?`).
pub(crate) fn split_query(text: &str) -> (String, String) {
    match text.split_once('?') {
        Some((name, query)) => (name.to_owned(), query.to_owned()),
        None => (text.to_owned(), String::new()),
    }
}
