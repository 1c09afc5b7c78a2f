//! FLV container (header, tags, codec detection), sans-IO.
//!
//! An FLV stream is a 9-byte file header, `PreviousTagSize0` (zero), then
//! tags, each followed by its own size:
//!
//! ```text
//! "FLV" 0x01 flags u32:9 | u32:0 | [11-byte tag head][data][u32: 11 + data size] ...
//! ```
//!
//! The pieces:
//!
//! - the file header: [`write_header`] and [`decode_header`];
//! - tags: [`encode_tag_head`] and [`previous_tag_size`] let a data plane pack
//!   a media message once into one buffer (`[head][payload][prev size]`, see
//!   [`pack_tag`]) and hand the same bytes to every viewer; [`decode_tag`]
//!   and the incremental [`FlvReader`] read a stream back, checking each
//!   declared size against a limit before the data is buffered;
//! - codec detection: [`VideoTagInfo::parse`] and [`AudioTagInfo::parse`]
//!   read the first bytes of a tag's data, legacy FLV and enhanced RTMP
//!   (FourCC) alike, and say what a GOP cache needs: is it a keyframe, a
//!   sequence header, an end of sequence;
//! - script data: [`strip_set_data_frame`] turns an RTMP publisher's
//!   `@setDataFrame` message into FLV `onMetaData` data, [`is_on_metadata`]
//!   recognises it, and [`scan_metadata`] picks the few fields ops look at.
//!
//! Invariant: nothing here allocates or copies except the encoders, which
//! append to a `Vec` they are handed; decoders borrow the caller's bytes and
//! never panic on them.
//!
//! ```
//! use shoal_protocols::flv::{
//!     decode_tag, pack_tag, write_header, FlvItem, FlvReader, TagKind, VideoTagInfo,
//! };
//! use shoal_protocols::framing::Decoded;
//!
//! // A publisher's AVC keyframe (NALU, composition time 0), packed once.
//! let video = [0x17, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x09, 0x10];
//! let mut wire = Vec::new();
//! write_header(&mut wire, true, true);
//! pack_tag(&mut wire, TagKind::Video, 40, &video).unwrap();
//! assert_eq!(wire.len(), 13 + 11 + video.len() + 4);
//!
//! // A viewer reads it back, header first, then tags.
//! let mut reader = FlvReader::new(1 << 20);
//! let mut at = 0;
//! let mut tags = Vec::new();
//! while let Decoded::Frame { frame, consumed } = reader.decode(&wire[at..]).unwrap() {
//!     at += consumed;
//!     if let FlvItem::Tag(tag) = frame {
//!         let info = VideoTagInfo::parse(tag.data).unwrap();
//!         assert!(info.is_keyframe() && !info.is_sequence_header());
//!         tags.push((tag.header.kind, tag.header.timestamp));
//!     }
//! }
//! assert_eq!(at, wire.len());
//! assert_eq!(tags, [(TagKind::Video, 40)]);
//!
//! // A single tag can also be decoded on its own.
//! let Ok(Decoded::Frame { frame, consumed }) = decode_tag(&wire[13..], 1 << 20) else {
//!     unreachable!()
//! };
//! assert_eq!((frame.data, consumed), (&video[..], wire.len() - 13));
//! ```

pub use crate::framing::Decoded;

mod media;
mod script;
mod tag;
#[cfg(test)]
mod tests;

pub use media::{
    AudioCodec, AudioPacket, AudioParams, AudioTagInfo, CodecTag, VideoCodec, VideoFrameType,
    VideoPacket, VideoTagInfo,
};
pub use script::{
    is_on_metadata, scan_metadata, strip_set_data_frame, MetadataCodecId, StreamMetadata,
    MAX_SCRIPT_DEPTH, ON_METADATA, SET_DATA_FRAME,
};
pub use tag::{
    decode_header, decode_tag, encode_tag_head, pack_tag, packed_tag_len, previous_tag_size,
    write_header, FlvHeader, FlvItem, FlvReader, Tag, TagHeader, TagKind, FILE_HEADER_LEN,
    MAX_DATA_OFFSET, MAX_DATA_SIZE, PREVIOUS_TAG_SIZE_LEN, TAG_HEAD_LEN,
};

/// Why FLV bytes were refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlvError {
    /// The stream does not start with the signature `FLV`.
    #[error("not an FLV stream: signature {0:02x?}")]
    BadSignature([u8; 3]),
    /// A file header version other than 1.
    #[error("FLV version {0} (only version 1 is known)")]
    UnsupportedVersion(u8),
    /// A file header `DataOffset` below 9 or above [`MAX_DATA_OFFSET`].
    #[error("FLV header data offset {0} (must be 9 to {MAX_DATA_OFFSET})")]
    BadDataOffset(u32),
    /// `PreviousTagSize0`, right after the file header, is not zero.
    #[error("first PreviousTagSize is {0}, must be 0")]
    BadFirstPreviousTagSize(u32),
    /// A tag with the filter bit (`0x20`) set: encrypted or otherwise
    /// pre-processed data, which is not supported.
    #[error("filtered (encrypted) tag, type byte {0:#04x}")]
    FilteredTag(u8),
    /// A tag type other than 8 (audio), 9 (video) or 18 (script data), or
    /// the reserved bits (`0xC0`) set.
    #[error("unknown tag type byte {0:#04x}")]
    UnknownTagType(u8),
    /// A tag declares more data than the reader's limit.
    #[error("tag data of {data_size} bytes exceeds the limit of {max} bytes")]
    TagTooLarge {
        /// The declared `DataSize`.
        data_size: u32,
        /// The limit in force.
        max: u32,
    },
    /// A tag's `StreamID` is not zero.
    #[error("tag stream id {0}, must be 0")]
    NonZeroStreamId(u32),
    /// The `PreviousTagSize` after a tag is not 11 + its data size.
    #[error("previous tag size {found}, expected {expected}")]
    PreviousTagSizeMismatch {
        /// 11 + the tag's `DataSize`.
        expected: u32,
        /// The value found after the tag.
        found: u32,
    },
    /// Audio or video data ends before its codec header does (an empty
    /// audio tag, the "silence" message, gives `needed: 1, got: 0`).
    #[error("media header needs {needed} bytes, the tag has {got}")]
    MediaHeaderTruncated {
        /// Bytes the header needs up to the field that is missing.
        needed: usize,
        /// Bytes of data in the tag.
        got: usize,
    },
    /// An enhanced multitrack packet whose inner packet type is multitrack
    /// again.
    #[error("multitrack packet nested in a multitrack packet")]
    NestedMultitrack,
    /// Script data is not AMF0 that [`scan_metadata`] can walk: an unknown or
    /// unsupported marker, a value cut short, a missing `onMetaData` name.
    #[error("malformed script data: {0}")]
    BadScriptData(&'static str),
    /// Script data nests objects or arrays deeper than [`MAX_SCRIPT_DEPTH`].
    #[error("script data nests deeper than {MAX_SCRIPT_DEPTH} levels")]
    ScriptTooDeep,
}
