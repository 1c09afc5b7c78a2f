//! A media tag as the hub keeps it: packed once as an FLV tag (head, data,
//! `PreviousTagSize`) in one buffer that every viewer on the core shares.

use std::rc::Rc;

use shoal_protocols::flv::{
    encode_tag_head, packed_tag_len, previous_tag_size, strip_set_data_frame, AudioTagInfo,
    TagKind, VideoTagInfo, PREVIOUS_TAG_SIZE_LEN, TAG_HEAD_LEN,
};

use crate::pool::{Detached, Payload, SlabPool};

/// What a tag is to the GOP cache and to a viewer that joins or skips.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TagRole {
    /// `onMetaData`.
    Metadata,
    /// Video decoder configuration (AVC/HEVC/AV1 sequence header).
    VideoHeader,
    /// Audio decoder configuration (AAC AudioSpecificConfig).
    AudioHeader,
    /// A video keyframe: a viewer may start here.
    Keyframe,
    /// Any other video tag.
    Video,
    /// Any other audio tag.
    Audio,
    /// Other script data.
    Script,
}

impl TagRole {
    /// Sent once to a viewer before anything else, and kept by the cache.
    pub(crate) fn is_header(self) -> bool {
        matches!(self, Self::Metadata | Self::VideoHeader | Self::AudioHeader)
    }

    pub(crate) fn as_u8(self) -> u8 {
        match self {
            Self::Metadata => 0,
            Self::VideoHeader => 1,
            Self::AudioHeader => 2,
            Self::Keyframe => 3,
            Self::Video => 4,
            Self::Audio => 5,
            Self::Script => 6,
        }
    }

    pub(crate) fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Metadata,
            1 => Self::VideoHeader,
            2 => Self::AudioHeader,
            3 => Self::Keyframe,
            4 => Self::Video,
            5 => Self::Audio,
            _ => Self::Script,
        }
    }

    /// The role of a media message's `data` of `kind`. Data the codec
    /// detection cannot read passes through as an ordinary tag.
    pub(crate) fn of(kind: TagKind, data: &[u8]) -> Self {
        match kind {
            TagKind::Video => match VideoTagInfo::parse(data) {
                Ok(info) if info.is_sequence_header() => Self::VideoHeader,
                Ok(info) if info.is_keyframe() => Self::Keyframe,
                _ => Self::Video,
            },
            TagKind::Audio => match AudioTagInfo::parse(data) {
                Ok(info) if info.is_sequence_header() => Self::AudioHeader,
                _ => Self::Audio,
            },
            _ => {
                if shoal_protocols::flv::is_on_metadata(data) {
                    Self::Metadata
                } else {
                    Self::Script
                }
            }
        }
    }
}

/// One packed FLV tag.
#[derive(Debug)]
pub(crate) struct MediaTag {
    pub(crate) kind: TagKind,
    /// Milliseconds, as the publisher stamped it.
    pub(crate) timestamp: u32,
    pub(crate) role: TagRole,
    /// Head, data and `PreviousTagSize`.
    pub(crate) packed: Payload,
}

impl MediaTag {
    /// Packs `data` (an RTMP media message's payload) once. Script data
    /// loses its `@setDataFrame` wrapper (FLV carries `onMetaData` alone).
    /// A tag that fits a pool buffer takes one; a larger one, or one the
    /// pool has no buffer for (a publisher waits for a free buffer before
    /// it reads, so this is rare), is copied to the heap.
    pub(crate) fn pack(pool: &SlabPool, kind: TagKind, timestamp: u32, data: &[u8]) -> Self {
        let data = if kind == TagKind::Script {
            strip_set_data_frame(data)
        } else {
            data
        };
        let role = TagRole::of(kind, data);
        // The RTMP decoder bounds a message far below FLV's 24-bit size.
        let size = u32::try_from(data.len()).unwrap_or(u32::MAX) & 0x00FF_FFFF;
        let total = packed_tag_len(size);
        let head = encode_tag_head(kind, size, timestamp);
        let trailer = previous_tag_size(size);
        let pooled = (total < pool.largest_buffer_bytes())
            .then(|| pool.try_acquire(total))
            .flatten()
            .and_then(|mut buf| {
                let ok = buf.extend_from_slice(&head)
                    && buf.extend_from_slice(data)
                    && buf.extend_from_slice(&trailer);
                ok.then(|| Payload::whole(buf))
            });
        let packed = pooled.unwrap_or_else(|| {
            let mut bytes = Vec::with_capacity(total);
            bytes.extend_from_slice(&head);
            bytes.extend_from_slice(data);
            bytes.extend_from_slice(&trailer);
            Payload::heap(&bytes)
        });
        Self {
            kind,
            timestamp,
            role,
            packed,
        }
    }

    /// Bytes on an FLV wire.
    pub(crate) fn len(&self) -> usize {
        self.packed.len()
    }

    /// The tag's data alone (an RTMP message payload).
    pub(crate) fn data(&self) -> Payload {
        let len = self.packed.len();
        self.packed
            .slice(TAG_HEAD_LEN..len.saturating_sub(PREVIOUS_TAG_SIZE_LEN))
    }

    /// Data bytes.
    pub(crate) fn data_len(&self) -> usize {
        self.len()
            .saturating_sub(TAG_HEAD_LEN + PREVIOUS_TAG_SIZE_LEN)
    }

    /// A copy to send to another core.
    pub(crate) fn detach(&self, pool: &SlabPool) -> CrossTag {
        let bytes = self.packed.as_slice();
        let bytes = match pool.detach_copy(bytes) {
            Some(d) if bytes.len() < pool.largest_buffer_bytes() => CrossBytes::Pool(d),
            _ => CrossBytes::Heap(bytes.into()),
        };
        CrossTag {
            kind: self.kind.as_u8(),
            timestamp: self.timestamp,
            role: self.role.as_u8(),
            bytes,
        }
    }
}

/// A tag on its way to another core (owned, `Send`).
#[derive(Debug)]
pub(crate) struct CrossTag {
    kind: u8,
    timestamp: u32,
    role: u8,
    bytes: CrossBytes,
}

#[derive(Debug)]
enum CrossBytes {
    /// Adopted by the receiving core's pool.
    Pool(Detached),
    /// Larger than any pool buffer.
    Heap(Box<[u8]>),
}

impl CrossTag {
    /// The tag on the receiving core; its bytes join that core's pool
    /// (`None` when the pool is full: the tag is dropped and counted).
    pub(crate) fn adopt(self, pool: &SlabPool) -> Option<Rc<MediaTag>> {
        let kind = TagKind::from_u8(self.kind).ok()?;
        let packed = match self.bytes {
            CrossBytes::Pool(d) => Payload::whole(pool.adopt(d)?),
            CrossBytes::Heap(b) => Payload::heap(&b),
        };
        Some(Rc::new(MediaTag {
            kind,
            timestamp: self.timestamp,
            role: TagRole::from_u8(self.role),
            packed,
        }))
    }
}
