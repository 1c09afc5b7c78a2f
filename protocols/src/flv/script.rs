//! Script data (`onMetaData`) at the byte level: turning an RTMP
//! `@setDataFrame` message into FLV script data, and a bounded scan of the
//! metadata for the fields ops look at. This is not a general AMF0 decoder:
//! it reads the top-level properties and skips everything else, refusing
//! nesting deeper than [`MAX_SCRIPT_DEPTH`].

use super::FlvError;

/// The AMF0 string `@setDataFrame` (marker 0x02, u16 length 13, the bytes)
/// that RTMP publishers put before `onMetaData`.
pub const SET_DATA_FRAME: &[u8] = b"\x02\x00\x0d@setDataFrame";

/// The AMF0 string `onMetaData` (marker 0x02, u16 length 10, the bytes)
/// that starts FLV metadata.
pub const ON_METADATA: &[u8] = b"\x02\x00\x0aonMetaData";

/// How deep [`scan_metadata`] follows nested objects and arrays while
/// skipping them. The metadata's own properties are at depth 1.
pub const MAX_SCRIPT_DEPTH: usize = 16;

/// AMF0 markers (AMF0 spec, 2.1).
const NUMBER: u8 = 0x00;
const BOOLEAN: u8 = 0x01;
const STRING: u8 = 0x02;
const OBJECT: u8 = 0x03;
const NULL: u8 = 0x05;
const UNDEFINED: u8 = 0x06;
const REFERENCE: u8 = 0x07;
const ECMA_ARRAY: u8 = 0x08;
const OBJECT_END: u8 = 0x09;
const STRICT_ARRAY: u8 = 0x0A;
const DATE: u8 = 0x0B;
const LONG_STRING: u8 = 0x0C;
const UNSUPPORTED: u8 = 0x0D;
const XML_DOCUMENT: u8 = 0x0F;
const TYPED_OBJECT: u8 = 0x10;

/// Script data as an FLV file must carry it: an RTMP data message that
/// starts with the AMF0 string `@setDataFrame` loses that string; anything
/// else is returned whole.
pub fn strip_set_data_frame(data: &[u8]) -> &[u8] {
    data.strip_prefix(SET_DATA_FRAME).unwrap_or(data)
}

/// Whether script data starts with the AMF0 string `onMetaData` (after
/// [`strip_set_data_frame`], for an RTMP data message).
pub fn is_on_metadata(data: &[u8]) -> bool {
    data.starts_with(ON_METADATA)
}

/// A codec id in metadata: legacy ids and enhanced FourCCs are numbers,
/// some encoders send a string such as `"avc1"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MetadataCodecId<'a> {
    /// An AMF0 number.
    Number(f64),
    /// An AMF0 string, borrowed from the data (not checked for UTF-8).
    Text(&'a [u8]),
}

impl MetadataCodecId<'_> {
    /// The FourCC, if the value is one: a 4-byte string, or a whole number
    /// at least 2^24 that fits 32 bits (its big-endian bytes, as the
    /// enhanced RTMP spec writes `"av01"` as 1635135537).
    pub fn fourcc(&self) -> Option<[u8; 4]> {
        match *self {
            Self::Number(n) => {
                let whole = n.fract() == 0.0 && (16_777_216.0..=4_294_967_295.0).contains(&n);
                // In range and whole: the cast is exact.
                whole.then(|| (n as u32).to_be_bytes())
            }
            Self::Text(text) => text.first_chunk::<4>().filter(|_| text.len() == 4).copied(),
        }
    }

    /// The legacy codec id (`CodecID`, `SoundFormat`), if the value is a
    /// whole number from 0 to 15.
    pub fn legacy_id(&self) -> Option<u8> {
        match *self {
            // In range and whole: the cast is exact.
            Self::Number(n) if n.fract() == 0.0 && (0.0..=15.0).contains(&n) => Some(n as u8),
            _ => None,
        }
    }
}

/// The `onMetaData` fields ops look at; `None` where a field is absent or
/// not of the expected type. Numbers are as sent (AMF0 doubles).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StreamMetadata<'a> {
    /// `width`, pixels.
    pub width: Option<f64>,
    /// `height`, pixels.
    pub height: Option<f64>,
    /// `framerate`, frames per second.
    pub framerate: Option<f64>,
    /// `videodatarate`, kbit/s.
    pub videodatarate: Option<f64>,
    /// `audiodatarate`, kbit/s.
    pub audiodatarate: Option<f64>,
    /// `videocodecid`.
    pub videocodecid: Option<MetadataCodecId<'a>>,
    /// `audiocodecid`.
    pub audiocodecid: Option<MetadataCodecId<'a>>,
}

/// Scans `onMetaData` script data (FLV tag data, or an RTMP data message
/// starting with `@setDataFrame`) for the fields of [`StreamMetadata`].
///
/// The argument must be an AMF0 object or ECMA array; its properties are
/// read in order (a later duplicate wins) until the object end marker, or
/// the end of the data. Other values are skipped without being decoded,
/// nesting at most [`MAX_SCRIPT_DEPTH`] deep; no allocation.
pub fn scan_metadata(data: &[u8]) -> Result<StreamMetadata<'_>, FlvError> {
    let data = strip_set_data_frame(data);
    let body = data
        .strip_prefix(ON_METADATA)
        .ok_or(FlvError::BadScriptData("no onMetaData name"))?;
    let mut at = match body.first() {
        Some(&ECMA_ARRAY) => 5, // marker, u32 count (a hint; the end marker rules)
        Some(&OBJECT) => 1,
        _ => {
            return Err(FlvError::BadScriptData(
                "onMetaData argument is not an object",
            ))
        }
    };
    if at > body.len() {
        return Err(CUT_SHORT);
    }
    let mut found = StreamMetadata::default();
    loop {
        if at == body.len() {
            // Some writers end the data without the end marker.
            return Ok(found);
        }
        let (key, value_at) = property_name(body, at)?;
        if key.is_empty() && body.get(value_at) == Some(&OBJECT_END) {
            return Ok(found);
        }
        let marker = body.get(value_at).copied();
        let number = match marker {
            Some(NUMBER) => Some(f64::from_be_bytes(
                *slice(body, value_at + 1, 8)?
                    .first_chunk::<8>()
                    .ok_or(CUT_SHORT)?,
            )),
            _ => None,
        };
        let text = match marker {
            Some(STRING) => Some(string_at(body, value_at + 1)?.0),
            _ => None,
        };
        let codec_id = number
            .map(MetadataCodecId::Number)
            .or(text.map(MetadataCodecId::Text));
        match key {
            b"width" => found.width = number,
            b"height" => found.height = number,
            b"framerate" => found.framerate = number,
            b"videodatarate" => found.videodatarate = number,
            b"audiodatarate" => found.audiodatarate = number,
            b"videocodecid" => found.videocodecid = codec_id,
            b"audiocodecid" => found.audiocodecid = codec_id,
            _ => {}
        }
        at = skip_value(body, value_at, 1)?;
    }
}

const CUT_SHORT: FlvError = FlvError::BadScriptData("value cut short");

/// `len` bytes of `data` from `at`.
fn slice(data: &[u8], at: usize, len: usize) -> Result<&[u8], FlvError> {
    data.get(at..at.checked_add(len).ok_or(CUT_SHORT)?)
        .ok_or(CUT_SHORT)
}

/// A u16-length string at `at`; returns its bytes and the position after.
fn string_at(data: &[u8], at: usize) -> Result<(&[u8], usize), FlvError> {
    let len = slice(data, at, 2)?.first_chunk::<2>().ok_or(CUT_SHORT)?;
    let len = usize::from(u16::from_be_bytes(*len));
    let text = slice(data, at + 2, len)?;
    Ok((text, at + 2 + len))
}

/// A u32 length at `at`.
fn u32_at(data: &[u8], at: usize) -> Result<usize, FlvError> {
    let bytes = slice(data, at, 4)?.first_chunk::<4>().ok_or(CUT_SHORT)?;
    usize::try_from(u32::from_be_bytes(*bytes)).map_err(|_| CUT_SHORT)
}

/// A property name (a u16-length string without marker); returns it and
/// where its value starts.
fn property_name(data: &[u8], at: usize) -> Result<(&[u8], usize), FlvError> {
    string_at(data, at)
}

/// Skips the value at `at`, `depth` levels deep; returns the position after
/// it. Never allocates; recursion is bounded by [`MAX_SCRIPT_DEPTH`].
fn skip_value(data: &[u8], at: usize, depth: usize) -> Result<usize, FlvError> {
    if depth > MAX_SCRIPT_DEPTH {
        return Err(FlvError::ScriptTooDeep);
    }
    let marker = *data.get(at).ok_or(CUT_SHORT)?;
    let end = match marker {
        NUMBER => at + 9,
        BOOLEAN => at + 2,
        STRING => string_at(data, at + 1)?.1,
        OBJECT => skip_properties(data, at + 1, depth)?,
        NULL | UNDEFINED | UNSUPPORTED => at + 1,
        REFERENCE => at + 3,
        ECMA_ARRAY => {
            u32_at(data, at + 1)?;
            skip_properties(data, at + 5, depth)?
        }
        STRICT_ARRAY => {
            let count = u32_at(data, at + 1)?;
            let mut next = at + 5;
            // Every value takes at least one byte: the loop ends with the data.
            for _ in 0..count {
                next = skip_value(data, next, depth + 1)?;
            }
            next
        }
        DATE => at + 11, // f64 ms, s16 time zone
        LONG_STRING | XML_DOCUMENT => {
            let len = u32_at(data, at + 1)?;
            slice(data, at + 5, len)?;
            at + 5 + len
        }
        TYPED_OBJECT => {
            let (_, props) = string_at(data, at + 1)?;
            skip_properties(data, props, depth)?
        }
        OBJECT_END => return Err(FlvError::BadScriptData("object end where a value belongs")),
        // Movie clip, record set (reserved), AMF3 switch, unknown markers.
        _ => return Err(FlvError::BadScriptData("unsupported AMF0 marker")),
    };
    if end > data.len() {
        return Err(CUT_SHORT);
    }
    Ok(end)
}

/// Skips the properties of an object whose value is `depth` deep, up to and
/// including its end marker (an empty name, then 0x09).
fn skip_properties(data: &[u8], mut at: usize, depth: usize) -> Result<usize, FlvError> {
    loop {
        let (key, value_at) = property_name(data, at)?;
        if key.is_empty() && data.get(value_at) == Some(&OBJECT_END) {
            return Ok(value_at + 1);
        }
        at = skip_value(data, value_at, depth + 1)?;
    }
}
