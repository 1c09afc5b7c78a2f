//! The FLV file header and tags (FLV spec v10.1, annex E.2 to E.4): encoding
//! for a data plane that packs each tag once, decoding for readers.

use super::{Decoded, FlvError};

/// Bytes [`write_header`] writes: the 9-byte file header and the 4-byte
/// `PreviousTagSize0`.
pub const FILE_HEADER_LEN: usize = 13;

/// Bytes of a tag head: type, data size, timestamp, extended timestamp,
/// stream id.
pub const TAG_HEAD_LEN: usize = 11;

/// Bytes of the `PreviousTagSize` field that follows every tag.
pub const PREVIOUS_TAG_SIZE_LEN: usize = 4;

/// The largest `DataSize` the 24-bit field can hold.
pub const MAX_DATA_SIZE: u32 = 0x00FF_FFFF;

/// The largest file header `DataOffset` [`decode_header`] accepts. Version 1
/// headers are 9 bytes; the field exists so that later versions could add
/// bytes, which are skipped.
pub const MAX_DATA_OFFSET: u32 = 1024;

/// The size of a version 1 file header.
const HEADER_SIZE: u32 = 9;

/// The flag bit of a file header announcing audio tags.
const FLAG_AUDIO: u8 = 0x04;
/// The flag bit of a file header announcing video tags.
const FLAG_VIDEO: u8 = 0x01;
/// The filter (encryption) bit of a tag's type byte.
const FILTER_BIT: u8 = 0x20;

/// What the file header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlvHeader {
    /// The `TypeFlagsAudio` bit: audio tags are present.
    pub has_audio: bool,
    /// The `TypeFlagsVideo` bit: video tags are present.
    pub has_video: bool,
}

/// A tag's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TagKind {
    /// 8: audio data.
    Audio,
    /// 9: video data.
    Video,
    /// 18: script data (AMF0), e.g. `onMetaData`.
    Script,
}

impl TagKind {
    /// The wire value of the `TagType` byte.
    pub fn as_u8(self) -> u8 {
        match self {
            Self::Audio => 8,
            Self::Video => 9,
            Self::Script => 18,
        }
    }

    /// The kind of a `TagType` byte; the filter bit and unknown types are
    /// refused.
    pub fn from_u8(byte: u8) -> Result<Self, FlvError> {
        if byte & FILTER_BIT != 0 {
            return Err(FlvError::FilteredTag(byte));
        }
        match byte {
            8 => Ok(Self::Audio),
            9 => Ok(Self::Video),
            18 => Ok(Self::Script),
            _ => Err(FlvError::UnknownTagType(byte)),
        }
    }
}

/// The head of a tag, as decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagHeader {
    /// Audio, video or script data.
    pub kind: TagKind,
    /// Bytes of data after the head (at most [`MAX_DATA_SIZE`]).
    pub data_size: u32,
    /// Milliseconds: the 24-bit `Timestamp` with `TimestampExtended` as its
    /// upper 8 bits.
    pub timestamp: u32,
}

/// A whole tag found in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag<'a> {
    /// The head.
    pub header: TagHeader,
    /// The tag's data (`header.data_size` bytes), borrowed from the input.
    pub data: &'a [u8],
}

/// Appends the file header (`FLV`, version 1, the flags, `DataOffset` 9) and
/// `PreviousTagSize0`: [`FILE_HEADER_LEN`] bytes.
pub fn write_header(out: &mut Vec<u8>, has_audio: bool, has_video: bool) {
    let mut flags = 0;
    if has_audio {
        flags |= FLAG_AUDIO;
    }
    if has_video {
        flags |= FLAG_VIDEO;
    }
    out.extend_from_slice(b"FLV");
    out.push(1);
    out.push(flags);
    out.extend_from_slice(&HEADER_SIZE.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
}

/// Decodes the file header and `PreviousTagSize0` at the start of `buf`.
///
/// `consumed` is `DataOffset + 4` (13 for every version 1 file). Checks are
/// made as soon as their bytes are in: the signature, the version, the data
/// offset, and that `PreviousTagSize0` is zero. Reserved flag bits are
/// ignored.
pub fn decode_header(buf: &[u8]) -> Result<Decoded<FlvHeader>, FlvError> {
    // The signature, byte by byte, so that a stream that is not FLV is
    // refused at its first wrong byte.
    for (at, expected) in b"FLV".iter().enumerate() {
        match buf.get(at) {
            None => return Ok(Decoded::Incomplete),
            Some(b) if b == expected => {}
            Some(_) => {
                let mut found = [0; 3];
                for (slot, b) in found.iter_mut().zip(buf) {
                    *slot = *b;
                }
                return Err(FlvError::BadSignature(found));
            }
        }
    }
    let Some(&version) = buf.get(3) else {
        return Ok(Decoded::Incomplete);
    };
    if version != 1 {
        return Err(FlvError::UnsupportedVersion(version));
    }
    let Some(&flags) = buf.get(4) else {
        return Ok(Decoded::Incomplete);
    };
    let Some(offset) = read_u32(buf, 5) else {
        return Ok(Decoded::Incomplete);
    };
    if !(HEADER_SIZE..=MAX_DATA_OFFSET).contains(&offset) {
        return Err(FlvError::BadDataOffset(offset));
    }
    // Bounded by MAX_DATA_OFFSET above.
    let offset = offset as usize;
    let Some(first_size) = read_u32(buf, offset) else {
        return Ok(Decoded::Incomplete);
    };
    if first_size != 0 {
        return Err(FlvError::BadFirstPreviousTagSize(first_size));
    }
    Ok(Decoded::Frame {
        frame: FlvHeader {
            has_audio: flags & FLAG_AUDIO != 0,
            has_video: flags & FLAG_VIDEO != 0,
        },
        consumed: offset + PREVIOUS_TAG_SIZE_LEN,
    })
}

/// The 11-byte head of a tag of `data_size` bytes at `timestamp` ms
/// (its low 24 bits in `Timestamp`, its high 8 in `TimestampExtended`),
/// stream id 0.
///
/// `data_size` must be at most [`MAX_DATA_SIZE`] (an RTMP message length
/// always is); only its low 24 bits are written. [`pack_tag`] checks it.
pub fn encode_tag_head(kind: TagKind, data_size: u32, timestamp: u32) -> [u8; TAG_HEAD_LEN] {
    debug_assert!(data_size <= MAX_DATA_SIZE, "FLV data size is 24 bits");
    let [_, s1, s2, s3] = data_size.to_be_bytes();
    let [t0, t1, t2, t3] = timestamp.to_be_bytes();
    [kind.as_u8(), s1, s2, s3, t1, t2, t3, t0, 0, 0, 0]
}

/// The `PreviousTagSize` written after a tag of `data_size` bytes:
/// 11 + `data_size`, big-endian.
pub fn previous_tag_size(data_size: u32) -> [u8; PREVIOUS_TAG_SIZE_LEN] {
    data_size.saturating_add(TAG_HEAD_LEN as u32).to_be_bytes()
}

/// Bytes a packed tag of `data_size` bytes takes: head, data and
/// `PreviousTagSize`.
pub fn packed_tag_len(data_size: u32) -> usize {
    TAG_HEAD_LEN + PREVIOUS_TAG_SIZE_LEN + data_size as usize
}

/// Appends a whole tag to `out`: head, `payload`, `PreviousTagSize`.
/// Refuses a payload over [`MAX_DATA_SIZE`] ([`FlvError::TagTooLarge`]),
/// leaving `out` unchanged.
pub fn pack_tag(
    out: &mut Vec<u8>,
    kind: TagKind,
    timestamp: u32,
    payload: &[u8],
) -> Result<(), FlvError> {
    let data_size = match u32::try_from(payload.len()) {
        Ok(size) if size <= MAX_DATA_SIZE => size,
        too_large => {
            return Err(FlvError::TagTooLarge {
                data_size: too_large.unwrap_or(u32::MAX),
                max: MAX_DATA_SIZE,
            })
        }
    };
    out.reserve(packed_tag_len(data_size));
    out.extend_from_slice(&encode_tag_head(kind, data_size, timestamp));
    out.extend_from_slice(payload);
    out.extend_from_slice(&previous_tag_size(data_size));
    Ok(())
}

/// Decodes the tag at the start of `buf`, with the `PreviousTagSize` that
/// follows it.
///
/// `Ok(Frame { frame, consumed })` once the head, the data and the 4-byte
/// size are all in `buf`; `consumed` is 11 + `data_size` + 4. Before that
/// `Ok(Incomplete)`. The type byte is checked first, then the declared size
/// against `max_data_size` (before any data is waited for), then the stream
/// id, then that `PreviousTagSize` is 11 + `data_size`.
pub fn decode_tag(buf: &[u8], max_data_size: u32) -> Result<Decoded<Tag<'_>>, FlvError> {
    let Some(&type_byte) = buf.first() else {
        return Ok(Decoded::Incomplete);
    };
    let kind = TagKind::from_u8(type_byte)?;
    let Some(data_size) = read_u24(buf, 1) else {
        return Ok(Decoded::Incomplete);
    };
    if data_size > max_data_size {
        return Err(FlvError::TagTooLarge {
            data_size,
            max: max_data_size,
        });
    }
    let Some(head) = buf.first_chunk::<TAG_HEAD_LEN>() else {
        return Ok(Decoded::Incomplete);
    };
    let [_, _, _, _, t1, t2, t3, t0, i0, i1, i2] = *head;
    let stream_id = u32::from_be_bytes([0, i0, i1, i2]);
    if stream_id != 0 {
        return Err(FlvError::NonZeroStreamId(stream_id));
    }
    let timestamp = u32::from_be_bytes([t0, t1, t2, t3]);
    // data_size < 2^24: no overflow.
    let data_end = TAG_HEAD_LEN + data_size as usize;
    let Some(found) = read_u32(buf, data_end) else {
        return Ok(Decoded::Incomplete);
    };
    let expected = data_size + TAG_HEAD_LEN as u32;
    if found != expected {
        return Err(FlvError::PreviousTagSizeMismatch { expected, found });
    }
    let Some(data) = buf.get(TAG_HEAD_LEN..data_end) else {
        return Ok(Decoded::Incomplete);
    };
    Ok(Decoded::Frame {
        frame: Tag {
            header: TagHeader {
                kind,
                data_size,
                timestamp,
            },
            data,
        },
        consumed: data_end + PREVIOUS_TAG_SIZE_LEN,
    })
}

/// What an [`FlvReader`] found next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlvItem<'a> {
    /// The file header (and `PreviousTagSize0`), always the first item.
    Header(FlvHeader),
    /// A tag.
    Tag(Tag<'a>),
}

/// Reads an FLV stream (an HTTP-FLV response body, a file) from a buffer
/// that grows as bytes arrive: the file header first, then tags.
///
/// Call [`decode`](Self::decode) on the unread bytes; on `Frame` drop
/// `consumed` bytes and call again, on `Incomplete` read more. The reader
/// only remembers whether the header has been read; the bytes stay the
/// caller's. After an error the stream cannot be resynchronised: stop.
#[derive(Debug, Clone)]
pub struct FlvReader {
    max_data_size: u32,
    header: Option<FlvHeader>,
    expect_header: bool,
    tags: u64,
}

impl FlvReader {
    /// A reader for a whole stream, file header first, refusing tags over
    /// `max_data_size` bytes of data.
    pub fn new(max_data_size: u32) -> Self {
        Self {
            max_data_size,
            header: None,
            expect_header: true,
            tags: 0,
        }
    }

    /// A reader for a stream that starts at a tag (its header read
    /// elsewhere, or none).
    pub fn tags_only(max_data_size: u32) -> Self {
        Self {
            expect_header: false,
            ..Self::new(max_data_size)
        }
    }

    /// The file header, once read.
    pub fn header(&self) -> Option<FlvHeader> {
        self.header
    }

    /// Tags decoded so far.
    pub fn tags_read(&self) -> u64 {
        self.tags
    }

    /// Decodes the next item at the start of `buf`.
    pub fn decode<'a>(&mut self, buf: &'a [u8]) -> Result<Decoded<FlvItem<'a>>, FlvError> {
        if self.expect_header {
            return Ok(match decode_header(buf)? {
                Decoded::Frame { frame, consumed } => {
                    self.expect_header = false;
                    self.header = Some(frame);
                    Decoded::Frame {
                        frame: FlvItem::Header(frame),
                        consumed,
                    }
                }
                Decoded::Incomplete => Decoded::Incomplete,
            });
        }
        Ok(match decode_tag(buf, self.max_data_size)? {
            Decoded::Frame { frame, consumed } => {
                self.tags += 1;
                Decoded::Frame {
                    frame: FlvItem::Tag(frame),
                    consumed,
                }
            }
            Decoded::Incomplete => Decoded::Incomplete,
        })
    }
}

/// A big-endian u24 at `at`, if its bytes are there.
fn read_u24(buf: &[u8], at: usize) -> Option<u32> {
    let [a, b, c] = *buf.get(at..)?.first_chunk::<3>()?;
    Some(u32::from_be_bytes([0, a, b, c]))
}

/// A big-endian u32 at `at`, if its bytes are there.
fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(*buf.get(at..)?.first_chunk::<4>()?))
}
