//! Options (RFC 7252 §3.1, §5.4, §5.10): numbers and their properties, the
//! delta/length encoding, unsigned-integer values, Content-Format values.

use core::fmt;
use core::ops::RangeInclusive;

use super::FormatError;

/// Most bytes an option value can have on the wire: a 14 length nibble
/// carries 269 + a 16-bit extension.
pub const MAX_OPTION_VALUE_BYTES: usize = 269 + 0xFFFF;

/// An option number (RFC 7252 §5.4.6: odd numbers are critical, bit 1 marks
/// unsafe-to-forward options).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OptionNumber(pub u16);

impl OptionNumber {
    /// If-Match (1), opaque 0-8 bytes, repeatable, critical.
    pub const IF_MATCH: Self = Self(1);
    /// Uri-Host (3), string 1-255 bytes, critical.
    pub const URI_HOST: Self = Self(3);
    /// ETag (4), opaque 1-8 bytes, repeatable in requests.
    pub const ETAG: Self = Self(4);
    /// If-None-Match (5), empty, critical.
    pub const IF_NONE_MATCH: Self = Self(5);
    /// Observe (6), uint 0-3 bytes (RFC 7641).
    pub const OBSERVE: Self = Self(6);
    /// Uri-Port (7), uint 0-2 bytes, critical.
    pub const URI_PORT: Self = Self(7);
    /// Location-Path (8), string 0-255 bytes, repeatable.
    pub const LOCATION_PATH: Self = Self(8);
    /// OSCORE (9, RFC 8613), critical; not implemented here.
    pub const OSCORE: Self = Self(9);
    /// Uri-Path (11), string 0-255 bytes, repeatable, critical.
    pub const URI_PATH: Self = Self(11);
    /// Content-Format (12), uint 0-2 bytes.
    pub const CONTENT_FORMAT: Self = Self(12);
    /// Max-Age (14), uint 0-4 bytes, seconds (default 60).
    pub const MAX_AGE: Self = Self(14);
    /// Uri-Query (15), string 0-255 bytes, repeatable, critical.
    pub const URI_QUERY: Self = Self(15);
    /// Hop-Limit (16, RFC 8768), uint 1 byte.
    pub const HOP_LIMIT: Self = Self(16);
    /// Accept (17), uint 0-2 bytes, critical.
    pub const ACCEPT: Self = Self(17);
    /// Location-Query (20), string 0-255 bytes, repeatable.
    pub const LOCATION_QUERY: Self = Self(20);
    /// Block2 (23, RFC 7959), uint 0-3 bytes, critical.
    pub const BLOCK2: Self = Self(23);
    /// Block1 (27, RFC 7959), uint 0-3 bytes, critical.
    pub const BLOCK1: Self = Self(27);
    /// Size2 (28, RFC 7959), uint 0-4 bytes.
    pub const SIZE2: Self = Self(28);
    /// Proxy-Uri (35), string 1-1034 bytes, critical.
    pub const PROXY_URI: Self = Self(35);
    /// Proxy-Scheme (39), string 1-255 bytes, critical.
    pub const PROXY_SCHEME: Self = Self(39);
    /// Size1 (60), uint 0-4 bytes.
    pub const SIZE1: Self = Self(60);
    /// Echo (252, RFC 9175), opaque 1-40 bytes.
    pub const ECHO: Self = Self(252);
    /// No-Response (258, RFC 7967), uint 0-1 byte.
    pub const NO_RESPONSE: Self = Self(258);
    /// Request-Tag (292, RFC 9175), opaque 0-8 bytes, repeatable.
    pub const REQUEST_TAG: Self = Self(292);

    /// Critical options (odd numbers) must be understood by the recipient.
    pub fn is_critical(self) -> bool {
        self.0 & 1 == 1
    }

    /// Unsafe-to-forward options (bit 1 set): a proxy that does not know the
    /// option must not forward the message.
    pub fn is_unsafe(self) -> bool {
        self.0 & 2 == 2
    }

    /// NoCacheKey options (bits 2-4 all set, RFC 7252 §5.4.6).
    pub fn is_no_cache_key(self) -> bool {
        self.0 & 0x1E == 0x1C
    }

    /// Whether the option may occur more than once in a message.
    pub fn is_repeatable(self) -> bool {
        matches!(
            self,
            Self::IF_MATCH
                | Self::ETAG
                | Self::LOCATION_PATH
                | Self::URI_PATH
                | Self::URI_QUERY
                | Self::LOCATION_QUERY
                | Self::REQUEST_TAG
        )
    }

    /// The allowed value lengths of an option this module knows, `None` for
    /// the others (which are then "unrecognized", RFC 7252 §5.4.1).
    pub fn value_len(self) -> Option<RangeInclusive<usize>> {
        Some(match self {
            Self::IF_MATCH => 0..=8,
            Self::URI_HOST => 1..=255,
            Self::ETAG => 1..=8,
            Self::IF_NONE_MATCH => 0..=0,
            Self::OBSERVE => 0..=3,
            Self::URI_PORT => 0..=2,
            Self::LOCATION_PATH | Self::URI_PATH | Self::URI_QUERY | Self::LOCATION_QUERY => {
                0..=255
            }
            Self::CONTENT_FORMAT | Self::ACCEPT => 0..=2,
            Self::MAX_AGE | Self::SIZE1 | Self::SIZE2 => 0..=4,
            Self::HOP_LIMIT => 1..=1,
            Self::BLOCK1 | Self::BLOCK2 => 0..=3,
            Self::PROXY_URI => 1..=1034,
            Self::PROXY_SCHEME => 1..=255,
            Self::ECHO => 1..=40,
            Self::NO_RESPONSE => 0..=1,
            Self::REQUEST_TAG => 0..=8,
            _ => return None,
        })
    }

    /// Whether this module knows the option (see [`value_len`](Self::value_len)).
    pub fn is_known(self) -> bool {
        self.value_len().is_some()
    }

    /// The option's name, `None` for options this module does not know.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::IF_MATCH => "If-Match",
            Self::URI_HOST => "Uri-Host",
            Self::ETAG => "ETag",
            Self::IF_NONE_MATCH => "If-None-Match",
            Self::OBSERVE => "Observe",
            Self::URI_PORT => "Uri-Port",
            Self::LOCATION_PATH => "Location-Path",
            Self::OSCORE => "OSCORE",
            Self::URI_PATH => "Uri-Path",
            Self::CONTENT_FORMAT => "Content-Format",
            Self::MAX_AGE => "Max-Age",
            Self::URI_QUERY => "Uri-Query",
            Self::HOP_LIMIT => "Hop-Limit",
            Self::ACCEPT => "Accept",
            Self::LOCATION_QUERY => "Location-Query",
            Self::BLOCK2 => "Block2",
            Self::BLOCK1 => "Block1",
            Self::SIZE2 => "Size2",
            Self::PROXY_URI => "Proxy-Uri",
            Self::PROXY_SCHEME => "Proxy-Scheme",
            Self::SIZE1 => "Size1",
            Self::ECHO => "Echo",
            Self::NO_RESPONSE => "No-Response",
            Self::REQUEST_TAG => "Request-Tag",
            _ => return None,
        })
    }
}

impl fmt::Display for OptionNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{} ({name})", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

/// One option of a decoded message: its number and its value, borrowed from
/// the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoapOption<'a> {
    /// The option number.
    pub number: OptionNumber,
    /// The raw value.
    pub value: &'a [u8],
}

/// A Content-Format (and Accept) value (RFC 7252 §12.3 and the IANA
/// registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentFormat(pub u16);

impl ContentFormat {
    /// `text/plain; charset=utf-8`.
    pub const TEXT_PLAIN: Self = Self(0);
    /// `application/link-format` (RFC 6690).
    pub const LINK_FORMAT: Self = Self(40);
    /// `application/xml`.
    pub const XML: Self = Self(41);
    /// `application/octet-stream`.
    pub const OCTET_STREAM: Self = Self(42);
    /// `application/exi`.
    pub const EXI: Self = Self(47);
    /// `application/json`.
    pub const JSON: Self = Self(50);
    /// `application/cbor`.
    pub const CBOR: Self = Self(60);
    /// `application/senml+json`.
    pub const SENML_JSON: Self = Self(110);
    /// `application/senml+cbor`.
    pub const SENML_CBOR: Self = Self(112);

    /// The media type of the formats above, `None` for others.
    pub fn media_type(self) -> Option<&'static str> {
        Some(match self {
            Self::TEXT_PLAIN => "text/plain; charset=utf-8",
            Self::LINK_FORMAT => "application/link-format",
            Self::XML => "application/xml",
            Self::OCTET_STREAM => "application/octet-stream",
            Self::EXI => "application/exi",
            Self::JSON => "application/json",
            Self::CBOR => "application/cbor",
            Self::SENML_JSON => "application/senml+json",
            Self::SENML_CBOR => "application/senml+cbor",
            _ => return None,
        })
    }
}

/// An unsigned integer option value in its shortest form (RFC 7252 §3.2:
/// zero is the empty value, no leading zero bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UintBytes {
    bytes: [u8; 4],
    len: u8,
}

impl UintBytes {
    /// The value's bytes (0 to 4).
    pub fn as_slice(&self) -> &[u8] {
        let start = 4 - usize::from(self.len);
        self.bytes.get(start..).unwrap_or_default()
    }
}

/// Encodes `value` as an option value in its shortest form.
pub fn encode_uint(value: u32) -> UintBytes {
    let len = 4 - (value.leading_zeros() / 8) as u8;
    UintBytes {
        bytes: value.to_be_bytes(),
        len,
    }
}

/// Decodes an unsigned integer option value; leading zero bytes are
/// accepted (a recipient must be prepared for them). `None` for more than
/// 4 bytes.
pub fn decode_uint(value: &[u8]) -> Option<u32> {
    if value.len() > 4 {
        return None;
    }
    Some(
        value
            .iter()
            .fold(0u32, |acc, &byte| (acc << 8) | u32::from(byte)),
    )
}

/// What one step over the option area of a message found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step<'a> {
    /// An option; the next one starts at `next`.
    Option { option: CoapOption<'a>, next: usize },
    /// The payload marker; the (non-empty) payload starts at `start`.
    Payload { start: usize },
    /// The end of the datagram: no payload.
    End,
}

/// Reads the option (or payload marker) at `at` in `area` (the bytes after
/// the token); `previous` is the number of the option before it.
pub(super) fn read_option(
    area: &[u8],
    at: usize,
    previous: OptionNumber,
) -> Result<Step<'_>, FormatError> {
    let Some(&first) = area.get(at) else {
        return Ok(Step::End);
    };
    if first == 0xFF {
        let start = at + 1;
        if start >= area.len() {
            return Err(FormatError::EmptyPayload);
        }
        return Ok(Step::Payload { start });
    }
    let mut pos = at + 1;
    let delta = read_extended(area, &mut pos, first >> 4)?;
    let len = read_extended(area, &mut pos, first & 0x0F)?;
    let number = u32::from(previous.0) + delta;
    let number = u16::try_from(number).map_err(|_| FormatError::OptionNumberTooLarge)?;
    let end = pos
        .checked_add(len as usize)
        .ok_or(FormatError::Truncated)?;
    let value = area.get(pos..end).ok_or(FormatError::Truncated)?;
    Ok(Step::Option {
        option: CoapOption {
            number: OptionNumber(number),
            value,
        },
        next: end,
    })
}

/// A delta or length nibble with its extended bytes (RFC 7252 §3.1).
fn read_extended(area: &[u8], pos: &mut usize, nibble: u8) -> Result<u32, FormatError> {
    match nibble {
        0..=12 => Ok(u32::from(nibble)),
        13 => {
            let byte = *area.get(*pos).ok_or(FormatError::Truncated)?;
            *pos += 1;
            Ok(13 + u32::from(byte))
        }
        14 => {
            let bytes = area.get(*pos..*pos + 2).ok_or(FormatError::Truncated)?;
            let value = bytes
                .iter()
                .fold(0u32, |acc, &byte| (acc << 8) | u32::from(byte));
            *pos += 2;
            Ok(269 + value)
        }
        _ => Err(FormatError::ReservedNibble),
    }
}

/// Appends an option head: the delta/length byte and its extensions, in the
/// only form the encoding allows. `len` must be at most
/// [`MAX_OPTION_VALUE_BYTES`] (checked by the callers).
pub(super) fn write_option_head(out: &mut Vec<u8>, delta: u16, len: usize) {
    let (delta_nibble, delta_ext) = extended(usize::from(delta));
    let (len_nibble, len_ext) = extended(len);
    out.push(delta_nibble << 4 | len_nibble);
    out.extend_from_slice(delta_ext.as_slice());
    out.extend_from_slice(len_ext.as_slice());
}

/// The extension bytes of a delta or a length.
#[derive(Clone, Copy)]
struct Extension {
    bytes: [u8; 2],
    len: usize,
}

impl Extension {
    fn as_slice(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }
}

fn extended(value: usize) -> (u8, Extension) {
    if value < 13 {
        (
            value as u8,
            Extension {
                bytes: [0; 2],
                len: 0,
            },
        )
    } else if value < 269 {
        (
            13,
            Extension {
                bytes: [(value - 13) as u8, 0],
                len: 1,
            },
        )
    } else {
        let wide = (value - 269).min(0xFFFF) as u16;
        (
            14,
            Extension {
                bytes: wide.to_be_bytes(),
                len: 2,
            },
        )
    }
}

/// Iterates over the options of a decoded message, in wire order (sorted by
/// number; repeated options in the order they were sent).
#[derive(Debug, Clone)]
pub struct Options<'a> {
    area: &'a [u8],
    at: usize,
    previous: OptionNumber,
    remaining: usize,
}

impl<'a> Options<'a> {
    /// Options over an area already checked by the decoder.
    pub(super) fn new(area: &'a [u8], count: usize) -> Self {
        Self {
            area,
            at: 0,
            previous: OptionNumber(0),
            remaining: count,
        }
    }
}

impl<'a> Iterator for Options<'a> {
    type Item = CoapOption<'a>;

    fn next(&mut self) -> Option<CoapOption<'a>> {
        if self.remaining == 0 {
            return None;
        }
        // The decoder checked the area: an error cannot happen here, and
        // would only end the iteration.
        match read_option(self.area, self.at, self.previous) {
            Ok(Step::Option { option, next }) => {
                self.at = next;
                self.previous = option.number;
                self.remaining -= 1;
                Some(option)
            }
            _ => {
                self.remaining = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining))
    }
}
