//! Writing chunks: heads, whole messages, and one-chunk media heads that
//! let a shared payload go to many players.

/// The longest chunk head: 3-byte basic header, 11-byte message header,
/// 4-byte extended timestamp.
pub const MAX_CHUNK_HEAD_BYTES: usize = 18;

/// Lowest chunk stream id (0 and 1 select the longer basic headers).
pub const MIN_CSID: u32 = 2;

/// Highest chunk stream id (3-byte basic header).
pub const MAX_CSID: u32 = 65_599;

/// Largest message length the 24-bit length field carries.
pub const MAX_MESSAGE_LENGTH: u32 = 0x00FF_FFFF;

const EXTENDED: u32 = super::chunk::EXTENDED_TIMESTAMP;

/// A chunk head in a small array: `(bytes, used)`.
pub type ChunkHead = ([u8; MAX_CHUNK_HEAD_BYTES], usize);

/// Builds a chunk head.
///
/// `fmt` is the header format (0 to 3; higher bits are ignored). `timestamp`
/// is absolute for format 0, the delta for formats 1 and 2, and for format
/// 3 the value of the message's timestamp field, written as an extended
/// timestamp when it is `0xFFFFFF` or more. `length` (formats 0 and 1) is
/// cut to 24 bits and `type_id` is written for formats 0 and 1,
/// `stream_id` (little-endian) for format 0. `csid` is clamped to
/// [`MIN_CSID`]..=[`MAX_CSID`].
pub fn chunk_head(
    fmt: u8,
    csid: u32,
    timestamp: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
) -> ChunkHead {
    debug_assert!((MIN_CSID..=MAX_CSID).contains(&csid), "csid {csid}");
    let fmt = fmt & 3;
    let csid = csid.clamp(MIN_CSID, MAX_CSID);
    let mut head = [0u8; MAX_CHUNK_HEAD_BYTES];
    let mut used = 0;
    let mut put = |bytes: &[u8]| {
        for byte in bytes {
            if let Some(slot) = head.get_mut(used) {
                *slot = *byte;
                used += 1;
            }
        }
    };
    let top = fmt << 6;
    match csid {
        2..=63 => put(&[top | csid as u8]),
        64..=319 => put(&[top, (csid - 64) as u8]),
        _ => {
            let rest = (csid - 64) as u16;
            put(&[top | 1]);
            put(&rest.to_le_bytes());
        }
    }
    let extended = timestamp >= EXTENDED;
    let field = timestamp.min(EXTENDED).to_be_bytes();
    if fmt <= 2 {
        put(field.get(1..).unwrap_or_default());
    }
    if fmt <= 1 {
        let length = length.min(MAX_MESSAGE_LENGTH).to_be_bytes();
        put(length.get(1..).unwrap_or_default());
        put(&[type_id]);
    }
    if fmt == 0 {
        put(&stream_id.to_le_bytes());
    }
    if extended {
        put(&timestamp.to_be_bytes());
    }
    (head, used)
}

/// Appends a chunk head to `out`; see [`chunk_head`] for the fields.
pub fn write_chunk_header(
    out: &mut Vec<u8>,
    fmt: u8,
    csid: u32,
    timestamp: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
) {
    let (head, used) = chunk_head(fmt, csid, timestamp, length, type_id, stream_id);
    out.extend_from_slice(head.get(..used).unwrap_or_default());
}

/// Appends a whole message cut into chunks of at most `chunk_size` bytes:
/// a format 0 head, then format 3 heads (repeating the extended timestamp,
/// as the spec says and ffmpeg reads). `payload` must be at most
/// [`MAX_MESSAGE_LENGTH`] bytes; `chunk_size` 0 is taken as 1.
pub fn encode_message(
    out: &mut Vec<u8>,
    chunk_size: u32,
    csid: u32,
    timestamp: u32,
    type_id: u8,
    stream_id: u32,
    payload: &[u8],
) {
    debug_assert!(payload.len() <= MAX_MESSAGE_LENGTH as usize);
    let chunk_size = (chunk_size.max(1)) as usize;
    let length = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let (head, used) = chunk_head(0, csid, timestamp, length, type_id, stream_id);
    let (continuation, continuation_used) = chunk_head(3, csid, timestamp, 0, 0, 0);
    let chunks = payload.len().div_ceil(chunk_size).max(1);
    out.reserve(payload.len() + used + (chunks - 1) * continuation_used);
    out.extend_from_slice(head.get(..used).unwrap_or_default());
    for (i, chunk) in payload.chunks(chunk_size).enumerate() {
        if i > 0 {
            out.extend_from_slice(continuation.get(..continuation_used).unwrap_or_default());
        }
        out.extend_from_slice(chunk);
    }
}

/// The head of a media message sent as one chunk (format 0): write it,
/// then the `length` payload bytes, when `length` is at most the chunk
/// size announced to the peer. A server keeps one payload and sends it to
/// every player behind its own head.
///
/// ```
/// use shoal_protocols::rtmp::{media_chunk_head, ChunkDecoder, ChunkLimits};
///
/// let payload = [0x17, 0x01, 0, 0, 0, 0xAA];
/// let (head, used) = media_chunk_head(6, 40, 9, 1, payload.len() as u32);
/// let mut wire = head[..used].to_vec();
/// wire.extend_from_slice(&payload);
/// let mut decoder = ChunkDecoder::new(ChunkLimits::default());
/// let message = decoder.decode(&wire).unwrap().1.unwrap();
/// assert_eq!((message.timestamp, message.type_id, message.stream_id), (40, 9, 1));
/// assert_eq!(message.payload, payload);
/// ```
pub fn media_chunk_head(
    csid: u32,
    timestamp: u32,
    type_id: u8,
    stream_id: u32,
    length: u32,
) -> ChunkHead {
    chunk_head(0, csid, timestamp, length, type_id, stream_id)
}
