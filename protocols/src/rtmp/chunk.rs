//! The chunk stream (RTMP 1.0 §5.3): reassembling messages from chunks.
//!
//! A chunk is a basic header (format and chunk stream id, 1 to 3 bytes), a
//! message header (11, 7, 3 or 0 bytes by format), an optional 4-byte
//! extended timestamp, and at most one chunk size of payload. Each chunk
//! stream remembers its last header so later chunks can leave fields out,
//! and reassembles its message in its own buffer, so messages on different
//! chunk streams may interleave.

use super::chunk_encode::MAX_MESSAGE_LENGTH;
use super::{message::type_id, RtmpError};

/// The chunk size in force before a Set Chunk Size.
pub const DEFAULT_CHUNK_SIZE: u32 = 128;

/// The 24-bit timestamp value saying "the extended timestamp follows".
pub const EXTENDED_TIMESTAMP: u32 = 0x00FF_FFFF;

/// How much one peer may make the decoder hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkLimits {
    /// Largest message accepted, checked on the message header before any
    /// payload is buffered.
    pub max_message_bytes: u32,
    /// Most chunk streams (distinct chunk stream ids) a peer may use.
    pub max_chunk_streams: usize,
    /// Most payload bytes held at once across messages being reassembled
    /// (keep it at least `max_message_bytes`). Buffers kept for reuse are
    /// freed when together they hold more than this.
    pub max_buffered_bytes: usize,
}

impl Default for ChunkLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: 4 << 20,
            max_chunk_streams: 64,
            max_buffered_bytes: 8 << 20,
        }
    }
}

/// The header of a complete message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageHeader {
    /// The chunk stream it came on.
    pub csid: u32,
    /// Absolute timestamp in milliseconds (sum of deltas, wrapping at 2^32).
    pub timestamp: u32,
    /// Payload length in bytes.
    pub length: u32,
    /// Message type id (see [`type_id`](super::message::type_id)).
    pub type_id: u8,
    /// Message stream id (0 for the connection's own messages).
    pub stream_id: u32,
}

/// A complete message whose payload borrows the decoder's buffer or the
/// caller's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage<'a> {
    /// The chunk stream it came on.
    pub csid: u32,
    /// Absolute timestamp in milliseconds, wrapping.
    pub timestamp: u32,
    /// Message type id.
    pub type_id: u8,
    /// Message stream id.
    pub stream_id: u32,
    /// The payload.
    pub payload: &'a [u8],
}

/// A complete message found by [`ChunkDecoder::next_message`]: its header,
/// and where its payload is, to fetch with [`ChunkDecoder::payload`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompleteMessage {
    /// The message's header.
    pub header: MessageHeader,
    at: PayloadAt,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PayloadAt {
    /// A message in one chunk, whole in the input: no copy.
    Input { start: usize, end: usize },
    /// Reassembled in the buffer of this chunk stream.
    Buffer { stream: usize },
}

/// What a chunk stream remembers.
#[derive(Debug)]
struct ChunkStream {
    csid: u32,
    /// Absolute timestamp of the current (or last) message.
    timestamp: u32,
    /// The last timestamp field (absolute for format 0, else a delta), the
    /// 32-bit value when it was extended.
    ts_field: u32,
    /// The last format 0-2 header carried an extended timestamp.
    extended: bool,
    length: u32,
    type_id: u8,
    stream_id: u32,
    /// A message is being reassembled in `buf`.
    in_progress: bool,
    buf: Vec<u8>,
}

/// A parsed chunk head (basic header, message header, extended timestamp),
/// not yet applied.
#[derive(Debug)]
struct Head {
    fmt: u8,
    csid: u32,
    stream: Option<usize>,
    /// Bytes the head took.
    len: usize,
    /// The timestamp field (32-bit if extended) of format 0-2, or the
    /// extended timestamp read on a format 3 head starting a message.
    ts_field: Option<u32>,
    extended: bool,
    length: u32,
    type_id: u8,
    stream_id: u32,
}

/// The body of a chunk still to be read.
#[derive(Debug, Clone, Copy)]
struct Reading {
    stream: usize,
    left: usize,
}

/// Reassembles RTMP messages from a byte stream of chunks.
///
/// Feed it the unread input; it consumes whole chunk heads and as much
/// chunk payload as there is, and stops after each complete message. It
/// applies the peer's Set Chunk Size and Abort Message itself (and still
/// returns them). A message that arrives whole in one chunk is returned
/// borrowing the input, without a copy; others are copied once, into the
/// buffer of their chunk stream, which is kept for the next message.
#[derive(Debug)]
pub struct ChunkDecoder {
    limits: ChunkLimits,
    chunk_size: usize,
    streams: Vec<ChunkStream>,
    reading: Option<Reading>,
    /// The stream whose buffer holds the message returned last.
    completed: Option<usize>,
    /// Bytes in the buffers of messages in progress.
    buffered: usize,
}

fn be24(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .take(3)
        .fold(0, |acc, b| (acc << 8) | u32::from(*b))
}

fn be32_at(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    <[u8; 4]>::try_from(bytes).ok().map(u32::from_be_bytes)
}

impl ChunkDecoder {
    /// A decoder with the default chunk size (128) and these limits.
    pub fn new(limits: ChunkLimits) -> Self {
        Self {
            limits,
            chunk_size: DEFAULT_CHUNK_SIZE as usize,
            streams: Vec::new(),
            reading: None,
            completed: None,
            buffered: 0,
        }
    }

    /// The peer's chunk size in force.
    pub fn chunk_size(&self) -> u32 {
        u32::try_from(self.chunk_size).unwrap_or(u32::MAX)
    }

    /// Payload bytes held for messages in progress.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    /// Applies a Set Chunk Size value: 0 and values with the top bit set
    /// are refused; values above the largest message length (2^24 - 1) are
    /// clamped to it, which reads the same bytes since no chunk is longer
    /// than its message.
    pub fn set_chunk_size(&mut self, size: u32) -> Result<(), RtmpError> {
        if size == 0 || size & 0x8000_0000 != 0 {
            return Err(RtmpError::InvalidChunkSize(size));
        }
        self.chunk_size = size.min(MAX_MESSAGE_LENGTH) as usize;
        Ok(())
    }

    /// Decodes from `input` up to the end of the next complete message.
    ///
    /// Returns the bytes consumed and the message if one completed; fewer
    /// bytes than given are consumed only when a message completed or a
    /// chunk head is cut (keep the rest and call again with more). The
    /// message's payload is fetched with [`payload`](Self::payload) and
    /// stays valid until the next call.
    pub fn next_message(
        &mut self,
        input: &[u8],
    ) -> Result<(usize, Option<CompleteMessage>), RtmpError> {
        self.release_completed();
        let mut at = 0;
        loop {
            let rest = input.get(at..).unwrap_or_default();
            if let Some(reading) = self.reading {
                let take = reading.left.min(rest.len());
                let chunk = rest.get(..take).unwrap_or_default();
                let stream = self
                    .streams
                    .get_mut(reading.stream)
                    .ok_or(RtmpError::Internal)?;
                stream.buf.extend_from_slice(chunk);
                at += take;
                if take < reading.left {
                    self.reading = Some(Reading {
                        stream: reading.stream,
                        left: reading.left - take,
                    });
                    return Ok((at, None));
                }
                self.reading = None;
                if stream.buf.len() >= stream.length as usize {
                    stream.in_progress = false;
                    self.buffered = self.buffered.saturating_sub(stream.buf.len());
                    let header = header_of(stream);
                    self.completed = Some(reading.stream);
                    let message = CompleteMessage {
                        header,
                        at: PayloadAt::Buffer {
                            stream: reading.stream,
                        },
                    };
                    self.apply_control(&message, input)?;
                    return Ok((at, Some(message)));
                }
                continue;
            }
            let Some(head) = self.parse_head(rest)? else {
                return Ok((at, None));
            };
            at += head.len;
            let body_at = at;
            let (index, left, starts) = self.apply_head(&head)?;
            let stream = self.streams.get_mut(index).ok_or(RtmpError::Internal)?;
            let whole_in_input = starts && left == stream.length as usize;
            let available = input.len().saturating_sub(body_at);
            if whole_in_input && left <= available {
                // The message is this one chunk, all here: lend it.
                stream.in_progress = false;
                let message = CompleteMessage {
                    header: header_of(stream),
                    at: PayloadAt::Input {
                        start: body_at,
                        end: body_at + left,
                    },
                };
                at += left;
                self.apply_control(&message, input)?;
                return Ok((at, Some(message)));
            }
            let new_total = self.buffered.saturating_add(left);
            if new_total > self.limits.max_buffered_bytes {
                return Err(RtmpError::BufferLimit {
                    max: self.limits.max_buffered_bytes,
                });
            }
            self.buffered = new_total;
            if starts {
                stream.buf.clear();
                stream.buf.reserve(left.min(1 << 16));
            }
            self.reading = Some(Reading {
                stream: index,
                left,
            });
        }
    }

    /// The payload of `message`, returned by the last call of
    /// [`next_message`](Self::next_message) on this same `input`.
    pub fn payload<'a>(&'a self, message: &CompleteMessage, input: &'a [u8]) -> &'a [u8] {
        match message.at {
            PayloadAt::Input { start, end } => input.get(start..end).unwrap_or_default(),
            PayloadAt::Buffer { stream } => self
                .streams
                .get(stream)
                .map(|s| s.buf.as_slice())
                .unwrap_or_default(),
        }
    }

    /// Like [`next_message`](Self::next_message), with the payload: the
    /// message borrows the decoder and `input` until it is dropped.
    ///
    /// ```
    /// use shoal_protocols::rtmp::{encode_message, ChunkDecoder, ChunkLimits};
    ///
    /// let mut wire = Vec::new();
    /// encode_message(&mut wire, 128, 3, 1000, 20, 0, &[7; 300]);
    /// let mut decoder = ChunkDecoder::new(ChunkLimits::default());
    /// let (consumed, message) = decoder.decode(&wire).unwrap();
    /// assert_eq!(consumed, wire.len());
    /// let message = message.unwrap();
    /// assert_eq!((message.csid, message.timestamp, message.type_id), (3, 1000, 20));
    /// assert_eq!(message.payload, &[7; 300][..]);
    /// ```
    pub fn decode<'a>(
        &'a mut self,
        input: &'a [u8],
    ) -> Result<(usize, Option<RawMessage<'a>>), RtmpError> {
        let (consumed, message) = self.next_message(input)?;
        let message = message.map(|m| RawMessage {
            csid: m.header.csid,
            timestamp: m.header.timestamp,
            type_id: m.header.type_id,
            stream_id: m.header.stream_id,
            payload: self.payload(&m, input),
        });
        Ok((consumed, message))
    }

    /// Clears the buffer of the message returned last; frees it if the
    /// buffers together hold more than the buffering limit.
    fn release_completed(&mut self) {
        let Some(index) = self.completed.take() else {
            return;
        };
        let held: usize = self.streams.iter().map(|s| s.buf.capacity()).sum();
        if let Some(stream) = self.streams.get_mut(index) {
            if held > self.limits.max_buffered_bytes {
                stream.buf = Vec::new();
            } else {
                stream.buf.clear();
            }
        }
    }

    fn find(&self, csid: u32) -> Option<usize> {
        self.streams.iter().position(|s| s.csid == csid)
    }

    /// Parses the chunk head at the start of `buf`; `None` if it is cut.
    fn parse_head(&self, buf: &[u8]) -> Result<Option<Head>, RtmpError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        let fmt = first >> 6;
        let (csid, mut at) = match first & 0x3F {
            0 => match buf.get(1) {
                Some(&low) => (64 + u32::from(low), 2),
                None => return Ok(None),
            },
            1 => match buf.get(1..3) {
                Some(&[low, high]) => (64 + u32::from(low) + 256 * u32::from(high), 3),
                _ => return Ok(None),
            },
            id => (u32::from(id), 1),
        };
        let stream = self.find(csid);
        let prev = stream.and_then(|i| self.streams.get(i));
        let fields_len = match fmt {
            0 => 11,
            1 => 7,
            2 => 3,
            _ => 0,
        };
        let Some(fields) = buf.get(at..at + fields_len) else {
            return Ok(None);
        };
        at += fields_len;
        let Some(prev) = prev else {
            // A fresh chunk stream starts with a full header (format 1 is
            // let through: some clients start their control stream so).
            if fmt >= 2 {
                return Err(RtmpError::NoPreviousHeader { csid, fmt });
            }
            return Self::finish_head(buf, fmt, csid, None, at, fields, None);
        };
        Self::finish_head(buf, fmt, csid, stream, at, fields, Some(prev))
    }

    /// Reads the message header fields and the extended timestamp.
    fn finish_head(
        buf: &[u8],
        fmt: u8,
        csid: u32,
        stream: Option<usize>,
        mut at: usize,
        fields: &[u8],
        prev: Option<&ChunkStream>,
    ) -> Result<Option<Head>, RtmpError> {
        let field = |range: core::ops::Range<usize>| fields.get(range).unwrap_or_default();
        let mut head = Head {
            fmt,
            csid,
            stream,
            len: 0,
            ts_field: None,
            extended: false,
            length: prev.map_or(0, |p| p.length),
            type_id: prev.map_or(0, |p| p.type_id),
            stream_id: prev.map_or(0, |p| p.stream_id),
        };
        if fmt <= 2 {
            let ts = be24(field(0..3));
            head.extended = ts == EXTENDED_TIMESTAMP;
            head.ts_field = Some(ts);
            if fmt <= 1 {
                head.length = be24(field(3..6));
                head.type_id = field(6..7).first().copied().unwrap_or_default();
            }
            if fmt == 0 {
                let id = field(7..11);
                head.stream_id = <[u8; 4]>::try_from(id).map_or(0, u32::from_le_bytes);
            }
            if head.extended {
                let Some(ext) = be32_at(buf, at) else {
                    return Ok(None);
                };
                head.ts_field = Some(ext);
                at += 4;
            }
        } else if let Some(prev) = prev.filter(|p| p.extended) {
            head.extended = true;
            if prev.in_progress {
                // A continuation: the spec and ffmpeg repeat the extended
                // timestamp here, some encoders do not. Take the 4 bytes
                // only if they are the value the message's header gave
                // (wait while the bytes there could still be it).
                let expected = [prev.ts_field.to_be_bytes(), prev.timestamp.to_be_bytes()];
                let next = buf.get(at..).unwrap_or_default();
                match next.first_chunk::<4>() {
                    Some(ext) if expected.contains(ext) => at += 4,
                    Some(_) => {}
                    None if expected.iter().any(|e| e.starts_with(next)) => return Ok(None),
                    None => {}
                }
            } else {
                let Some(ext) = be32_at(buf, at) else {
                    return Ok(None);
                };
                head.ts_field = Some(ext);
                at += 4;
            }
        }
        head.len = at;
        Ok(Some(head))
    }

    /// Updates the chunk stream from `head`; returns its index, the chunk's
    /// body length and whether the chunk starts a message.
    fn apply_head(&mut self, head: &Head) -> Result<(usize, usize, bool), RtmpError> {
        if head.length > self.limits.max_message_bytes {
            return Err(RtmpError::MessageTooLarge {
                length: head.length,
                max: self.limits.max_message_bytes,
            });
        }
        let index = match head.stream {
            Some(index) => index,
            None => {
                if self.streams.len() >= self.limits.max_chunk_streams {
                    return Err(RtmpError::TooManyChunkStreams {
                        max: self.limits.max_chunk_streams,
                    });
                }
                self.streams.push(ChunkStream {
                    csid: head.csid,
                    timestamp: 0,
                    ts_field: 0,
                    extended: false,
                    length: 0,
                    type_id: 0,
                    stream_id: 0,
                    in_progress: false,
                    buf: Vec::new(),
                });
                self.streams.len() - 1
            }
        };
        let chunk_size = self.chunk_size;
        let stream = self.streams.get_mut(index).ok_or(RtmpError::Internal)?;
        if head.fmt == 3 && stream.in_progress {
            let left = (stream.length as usize).saturating_sub(stream.buf.len());
            return Ok((index, left.min(chunk_size), false));
        }
        if stream.in_progress {
            // A new header before the message ended: the message is lost.
            self.buffered = self.buffered.saturating_sub(stream.buf.len());
            stream.buf.clear();
            stream.in_progress = false;
        }
        match head.fmt {
            0 => {
                let ts = head.ts_field.unwrap_or_default();
                stream.timestamp = ts;
                stream.ts_field = ts;
                stream.extended = head.extended;
            }
            1 | 2 => {
                let delta = head.ts_field.unwrap_or_default();
                stream.timestamp = stream.timestamp.wrapping_add(delta);
                stream.ts_field = delta;
                stream.extended = head.extended;
            }
            _ => {
                // A new message with every field of the last one: the same
                // delta again (after format 0, its timestamp as a delta).
                let delta = head.ts_field.unwrap_or(stream.ts_field);
                stream.timestamp = stream.timestamp.wrapping_add(delta);
                stream.ts_field = delta;
            }
        }
        stream.length = head.length;
        stream.type_id = head.type_id;
        stream.stream_id = head.stream_id;
        stream.in_progress = true;
        let left = (head.length as usize).min(chunk_size);
        Ok((index, left, true))
    }

    /// Applies Set Chunk Size and Abort Message once they are complete.
    fn apply_control(&mut self, message: &CompleteMessage, input: &[u8]) -> Result<(), RtmpError> {
        let kind = message.header.type_id;
        if kind != type_id::SET_CHUNK_SIZE && kind != type_id::ABORT {
            return Ok(());
        }
        let value = be32_at(self.payload(message, input), 0)
            .ok_or(RtmpError::BadControlMessage { type_id: kind })?;
        if kind == type_id::SET_CHUNK_SIZE {
            return self.set_chunk_size(value);
        }
        if let Some(index) = self.find(value) {
            if self.reading.is_none() && Some(index) != self.completed {
                if let Some(stream) = self.streams.get_mut(index) {
                    if stream.in_progress {
                        self.buffered = self.buffered.saturating_sub(stream.buf.len());
                        stream.buf.clear();
                        stream.in_progress = false;
                    }
                }
            }
        }
        Ok(())
    }
}

fn header_of(stream: &ChunkStream) -> MessageHeader {
    MessageHeader {
        csid: stream.csid,
        timestamp: stream.timestamp,
        length: stream.length,
        type_id: stream.type_id,
        stream_id: stream.stream_id,
    }
}
