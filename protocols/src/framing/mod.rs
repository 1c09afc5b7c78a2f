//! Sans-IO frame codecs for raw TCP/UDP device streams.
//!
//! A device that speaks its own binary or line protocol over a socket needs
//! its byte stream cut into messages. Three rules cover nearly all of them,
//! named as operators know them from Netty's frame decoders:
//!
//! - [`FramingConfig::Delimiter`]: each frame ends with a delimiter (`"\n"`,
//!   `"\r\n"`, ...), like `DelimiterBasedFrameDecoder`.
//! - [`FramingConfig::FixedLength`]: every frame has the same size, like
//!   `FixedLengthFrameDecoder`.
//! - [`FramingConfig::LengthField`]: a header carries the frame's length,
//!   like `LengthFieldBasedFrameDecoder` (`lengthFieldOffset`,
//!   `lengthFieldLength`, `lengthAdjustment`, `initialBytesToStrip`,
//!   `maxFrameLength`).
//!
//! A [`Framer`] is built once per listener from its config and validated
//! against the listener's `max_frame_bytes`. Decoding never allocates and
//! never buffers: the caller owns the bytes, [`Framer::decode`] looks at the
//! start of them and says either "incomplete" or where the frame's payload is
//! and how many bytes the frame took. Invariants of a returned frame:
//! `1 <= consumed <= buf.len()` and `payload` lies within `0..consumed`.
//! A declared length above the limit is refused as soon as the header is
//! readable, before the body has arrived.
//!
//! ```
//! use shoal_protocols::framing::{Decoded, Framer, FramingConfig};
//!
//! let framer = Framer::new(&FramingConfig::default(), 1024).unwrap();
//! let mut inbox = Vec::new();
//! framer.encode_into(b"one", &mut inbox).unwrap();
//! framer.encode_into(b"two", &mut inbox).unwrap();
//!
//! let mut start = 0;
//! let mut frames = Vec::new();
//! while let Decoded::Frame { frame, consumed } = framer.decode(&inbox[start..]).unwrap() {
//!     let payload = frame.payload.start + start..frame.payload.end + start;
//!     frames.push(inbox[payload].to_vec());
//!     start += consumed;
//! }
//! assert_eq!(frames, [b"one".to_vec(), b"two".to_vec()]);
//! assert_eq!(start, inbox.len());
//! ```

use core::ops::Range;

#[cfg(test)]
mod tests;

/// Largest accepted `offset` of a length field, in bytes.
pub const MAX_LENGTH_FIELD_OFFSET: u32 = 64;

/// Largest accepted delimiter, in bytes.
pub const MAX_DELIMITER_BYTES: usize = 64;

/// The most bytes [`Framer::encode_header`] can write: the largest offset plus
/// the widest length field.
pub const MAX_HEADER_BYTES: usize = MAX_LENGTH_FIELD_OFFSET as usize + 8;

/// Result of a decode attempt. "Need more bytes" is never an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<T> {
    /// The input does not hold a whole frame yet; call again with more bytes.
    Incomplete,
    /// A frame was found at the start of the input.
    Frame {
        /// The frame.
        frame: T,
        /// Bytes of the input the frame took, header and trailer included.
        consumed: usize,
    },
}

/// A frame found in the input: `payload` is a range into the buffer passed to decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    /// The delivered bytes of the frame, after stripping.
    pub payload: Range<usize>,
}

/// Byte order of a length field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ByteOrder {
    /// Most significant byte first (network order).
    #[default]
    BigEndian,
    /// Least significant byte first.
    LittleEndian,
}

/// How a byte stream is cut into frames. Serde: internally tagged `kind`, snake_case,
/// so TOML reads e.g. `framing = { kind = "length_field", width = 2 }`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FramingConfig {
    /// Frames end with `delimiter` (bytes of the UTF-8 string; TOML escapes like "\r\n" work).
    Delimiter {
        /// The bytes that end a frame (1 to [`MAX_DELIMITER_BYTES`] bytes).
        delimiter: String,
        /// Leave the delimiter out of the delivered frame (default true).
        #[serde(default = "yes")]
        strip_delimiter: bool,
    },
    /// Every frame is exactly `frame_bytes` long.
    FixedLength {
        /// Size of every frame, 1 to `max_frame_bytes`.
        frame_bytes: u32,
    },
    /// A length field at `offset` of `width` bytes (1, 2, 4 or 8) in `byte_order`.
    /// total frame bytes = value + adjustment + offset + width.
    /// `strip_bytes` leading bytes are removed from the delivered frame;
    /// None means strip the header (offset + width).
    LengthField {
        /// Bytes before the length field (at most [`MAX_LENGTH_FIELD_OFFSET`]).
        #[serde(default)]
        offset: u32,
        /// Size of the length field: 1, 2, 4 or 8 bytes. Read unsigned.
        width: u8,
        /// Byte order of the length field.
        #[serde(default)]
        byte_order: ByteOrder,
        /// Added to the field's value to get the bytes that follow the field
        /// (negative when the value counts the header too).
        #[serde(default)]
        adjustment: i64,
        /// Leading bytes removed from the delivered frame; none means the header.
        #[serde(default)]
        strip_bytes: Option<u32>,
    },
}

fn yes() -> bool {
    true
}

impl Default for FramingConfig {
    /// A 2-byte big-endian length prefix counting the payload only, stripped.
    fn default() -> Self {
        Self::LengthField {
            offset: 0,
            width: 2,
            byte_order: ByteOrder::BigEndian,
            adjustment: 0,
            strip_bytes: None,
        }
    }
}

/// Why a framing config was refused, a frame could not be decoded, or a
/// payload could not be encoded.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FramingError {
    /// The config was refused when the framer was built; says which setting and why.
    #[error("invalid framing config: `{field}` {reason}")]
    InvalidConfig {
        /// The offending setting.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A declared frame, or bytes accumulated without a delimiter, exceed the limit.
    #[error(
        "frame of at least {frame_bytes} bytes exceeds the limit of {max_frame_bytes} bytes \
         (max_frame_bytes)"
    )]
    FrameTooLarge {
        /// Size of the frame (for a delimiter search: a lower bound of the payload).
        frame_bytes: u64,
        /// The limit in force.
        max_frame_bytes: u32,
    },
    /// The length field plus the adjustment gives a frame shorter than its own header.
    #[error(
        "length field gives a frame of {frame_bytes} bytes, shorter than its own \
         {header_bytes}-byte header (check the length field's adjustment)"
    )]
    LengthBelowHeader {
        /// Frame size computed from the field (may be negative).
        frame_bytes: i128,
        /// Bytes up to the end of the length field.
        header_bytes: u32,
    },
    /// `strip_bytes` is larger than the frame it should be stripped from.
    #[error("cannot strip {strip_bytes} bytes (strip_bytes) from a frame of {frame_bytes} bytes")]
    StripBeyondFrame {
        /// The configured strip.
        strip_bytes: u32,
        /// Size of the frame.
        frame_bytes: u64,
    },
    /// The encoder refuses a payload that holds the delimiter: it would be cut in two.
    #[error("payload contains the frame delimiter and would arrive as more than one frame")]
    PayloadContainsDelimiter,
    /// The fixed-length encoder was given a payload of the wrong size.
    #[error("fixed-length framing needs payloads of exactly {expected} bytes, got {got}")]
    PayloadLength {
        /// The configured `frame_bytes`.
        expected: u32,
        /// The payload's size.
        got: usize,
    },
    /// The encoder's length value is negative or too large for the field.
    #[error("length value {value} does not fit an unsigned {width}-byte length field")]
    LengthFieldOverflow {
        /// The value that would have been written.
        value: i128,
        /// Width of the field in bytes.
        width: u8,
    },
    /// The encoder's output slice is too small.
    #[error("output buffer of {got} bytes is too small, {needed} bytes are needed")]
    BufferTooSmall {
        /// Bytes the encoder has to write.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
}

/// A validated, ready framer. Cheap to clone: plain data, no heap.
#[derive(Debug, Clone)]
pub struct Framer {
    rule: Rule,
    max_frame_bytes: u32,
}

#[derive(Debug, Clone)]
enum Rule {
    Delimiter {
        delimiter: Delimiter,
        strip_delimiter: bool,
    },
    FixedLength {
        frame_bytes: u32,
    },
    LengthField(LengthField),
}

/// Delimiter bytes held inline.
#[derive(Debug, Clone, Copy)]
struct Delimiter {
    bytes: [u8; MAX_DELIMITER_BYTES],
    len: usize,
}

impl Delimiter {
    fn as_slice(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&[])
    }
}

#[derive(Debug, Clone, Copy)]
struct LengthField {
    offset: u32,
    width: u8,
    byte_order: ByteOrder,
    adjustment: i64,
    strip_bytes: u32,
}

/// A header ready to be written, and the size of the whole encoded frame.
struct EncodePlan {
    header: [u8; MAX_HEADER_BYTES],
    header_len: usize,
    total: usize,
}

impl EncodePlan {
    fn without_header(total: usize) -> Self {
        Self {
            header: [0; MAX_HEADER_BYTES],
            header_len: 0,
            total,
        }
    }

    fn header(&self) -> &[u8] {
        self.header.get(..self.header_len).unwrap_or(&[])
    }
}

fn invalid(field: &'static str, reason: String) -> FramingError {
    FramingError::InvalidConfig { field, reason }
}

/// `u32` to `usize`; saturates on targets where `usize` is narrower.
fn to_usize(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// `usize` to `u64`; saturates on targets where `usize` is wider.
fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

impl Framer {
    /// Validates the config against `max_frame_bytes` (the per-listener limit, >= 1).
    ///
    /// Refused: a width other than 1, 2, 4 or 8; an offset above
    /// [`MAX_LENGTH_FIELD_OFFSET`]; a header (`offset + width`) longer than the
    /// limit; an adjustment or `strip_bytes` under which no frame within the
    /// limit could be valid; an empty delimiter or one over
    /// [`MAX_DELIMITER_BYTES`]; a fixed `frame_bytes` of 0 or over the limit.
    pub fn new(config: &FramingConfig, max_frame_bytes: u32) -> Result<Self, FramingError> {
        if max_frame_bytes == 0 {
            return Err(invalid("max_frame_bytes", "must be at least 1".into()));
        }
        let rule = match config {
            FramingConfig::Delimiter {
                delimiter,
                strip_delimiter,
            } => Rule::Delimiter {
                delimiter: validate_delimiter(delimiter)?,
                strip_delimiter: *strip_delimiter,
            },
            FramingConfig::FixedLength { frame_bytes } => {
                if *frame_bytes == 0 {
                    return Err(invalid("frame_bytes", "must be at least 1".into()));
                }
                if *frame_bytes > max_frame_bytes {
                    return Err(invalid(
                        "frame_bytes",
                        format!(
                            "is {frame_bytes}, more than the listener's max_frame_bytes \
                             ({max_frame_bytes})"
                        ),
                    ));
                }
                Rule::FixedLength {
                    frame_bytes: *frame_bytes,
                }
            }
            FramingConfig::LengthField {
                offset,
                width,
                byte_order,
                adjustment,
                strip_bytes,
            } => Rule::LengthField(LengthField::validate(
                *offset,
                *width,
                *byte_order,
                *adjustment,
                *strip_bytes,
                max_frame_bytes,
            )?),
        };
        Ok(Self {
            rule,
            max_frame_bytes,
        })
    }

    /// The per-listener limit this framer enforces.
    pub fn max_frame_bytes(&self) -> u32 {
        self.max_frame_bytes
    }

    /// Decode one frame from the start of `buf`.
    ///
    /// `Ok(Frame { .. })` has `1 <= consumed <= buf.len()` and a payload within
    /// `0..consumed`. Errors as soon as the input is known to be invalid: a
    /// length header declaring more than `max_frame_bytes` is refused before
    /// the body arrives, and a delimiter search that has seen
    /// `max_frame_bytes` plus the delimiter's length without a delimiter fails.
    /// For the delimiter framer the limit applies to the payload (without the
    /// delimiter); for the length field it applies to the whole frame, header
    /// included, like Netty's `maxFrameLength`.
    pub fn decode(&self, buf: &[u8]) -> Result<Decoded<RawFrame>, FramingError> {
        match &self.rule {
            Rule::Delimiter {
                delimiter,
                strip_delimiter,
            } => self.decode_delimited(delimiter.as_slice(), *strip_delimiter, buf),
            Rule::FixedLength { frame_bytes } => {
                let frame_bytes = to_usize(*frame_bytes);
                if buf.len() < frame_bytes {
                    return Ok(Decoded::Incomplete);
                }
                Ok(Decoded::Frame {
                    frame: RawFrame {
                        payload: 0..frame_bytes,
                    },
                    consumed: frame_bytes,
                })
            }
            Rule::LengthField(field) => {
                let Some(total) = field.frame_len(buf, self.max_frame_bytes)? else {
                    return Ok(Decoded::Incomplete);
                };
                if buf.len() < total {
                    return Ok(Decoded::Incomplete);
                }
                Ok(Decoded::Frame {
                    frame: RawFrame {
                        payload: to_usize(field.strip_bytes)..total,
                    },
                    consumed: total,
                })
            }
        }
    }

    fn decode_delimited(
        &self,
        delimiter: &[u8],
        strip_delimiter: bool,
        buf: &[u8],
    ) -> Result<Decoded<RawFrame>, FramingError> {
        // A delimiter may start at any position up to the limit, no later.
        let window_len = to_usize(self.max_frame_bytes).saturating_add(delimiter.len());
        let window = buf.get(..window_len).unwrap_or(buf);
        match find(window, delimiter) {
            Some(at) => {
                let consumed = at.saturating_add(delimiter.len());
                let end = if strip_delimiter { at } else { consumed };
                Ok(Decoded::Frame {
                    frame: RawFrame { payload: 0..end },
                    consumed,
                })
            }
            None if buf.len() >= window_len => Err(FramingError::FrameTooLarge {
                frame_bytes: u64::from(self.max_frame_bytes).saturating_add(1),
                max_frame_bytes: self.max_frame_bytes,
            }),
            None => Ok(Decoded::Incomplete),
        }
    }

    /// Total bytes of the frame at the start of `buf`, if `buf` already tells:
    /// the length header is complete (and valid), or the framing is fixed
    /// length. Never more than `max_frame_bytes`. `None` for delimiter
    /// framing, an incomplete header, or a header that `decode` refuses.
    pub fn frame_len_hint(&self, buf: &[u8]) -> Option<usize> {
        match &self.rule {
            Rule::Delimiter { .. } => None,
            Rule::FixedLength { frame_bytes } => Some(to_usize(*frame_bytes)),
            Rule::LengthField(field) => field.frame_len(buf, self.max_frame_bytes).ok().flatten(),
        }
    }

    /// Total bytes [`Framer::encode`] writes for a payload of `payload_len`
    /// bytes: header, payload and trailer. Fails when no payload of that size
    /// can be encoded.
    pub fn encoded_len(&self, payload_len: usize) -> Result<usize, FramingError> {
        Ok(self.plan(payload_len)?.total)
    }

    /// Write the header for a payload of `payload_len` into `out`, return bytes written
    /// (length field: `offset` zero bytes + the length field; delimiter & fixed: 0 bytes).
    /// At most [`MAX_HEADER_BYTES`].
    pub fn encode_header(&self, payload_len: usize, out: &mut [u8]) -> Result<usize, FramingError> {
        let plan = self.plan(payload_len)?;
        put(out, 0, plan.header())
    }

    /// Checks `payload` the way [`Framer::encode`] does (size, and for a
    /// delimiter framer that the payload would not be cut in two) and writes
    /// the header for it into `out`; the caller writes the payload and the
    /// [`Framer::trailer`] after it, e.g. as one vectored write.
    pub fn encode_header_for(&self, payload: &[u8], out: &mut [u8]) -> Result<usize, FramingError> {
        let plan = self.prepare(payload)?;
        put(out, 0, plan.header())
    }

    /// Bytes written after the payload (delimiter bytes, else empty).
    pub fn trailer(&self) -> &[u8] {
        match &self.rule {
            Rule::Delimiter { delimiter, .. } => delimiter.as_slice(),
            Rule::FixedLength { .. } | Rule::LengthField(_) => &[],
        }
    }

    /// Header, payload and trailer into `out`; returns bytes written.
    ///
    /// Refuses a payload that the peer's decoder would not give back: one
    /// holding the delimiter, one of the wrong fixed length, one whose length
    /// does not fit the field, or a frame over `max_frame_bytes`.
    pub fn encode(&self, payload: &[u8], out: &mut [u8]) -> Result<usize, FramingError> {
        let plan = self.prepare(payload)?;
        if out.len() < plan.total {
            return Err(FramingError::BufferTooSmall {
                needed: plan.total,
                got: out.len(),
            });
        }
        let at = put(out, 0, plan.header())?;
        let at = put(out, at, payload)?;
        put(out, at, self.trailer())
    }

    /// Appends the encoded frame to `out`. On error `out` is left unchanged.
    pub fn encode_into(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), FramingError> {
        let plan = self.prepare(payload)?;
        out.reserve(plan.total);
        out.extend_from_slice(plan.header());
        out.extend_from_slice(payload);
        out.extend_from_slice(self.trailer());
        Ok(())
    }

    /// Checks everything about `payload` and plans its header.
    fn prepare(&self, payload: &[u8]) -> Result<EncodePlan, FramingError> {
        let plan = self.plan(payload.len())?;
        if let Rule::Delimiter { delimiter, .. } = &self.rule {
            if splits_payload(payload, delimiter.as_slice()) {
                return Err(FramingError::PayloadContainsDelimiter);
            }
        }
        Ok(plan)
    }

    /// Checks what can be checked from the payload's size, and builds the header.
    fn plan(&self, payload_len: usize) -> Result<EncodePlan, FramingError> {
        match &self.rule {
            Rule::Delimiter { delimiter, .. } => {
                if payload_len > to_usize(self.max_frame_bytes) {
                    return Err(FramingError::FrameTooLarge {
                        frame_bytes: to_u64(payload_len),
                        max_frame_bytes: self.max_frame_bytes,
                    });
                }
                let total =
                    payload_len
                        .checked_add(delimiter.len)
                        .ok_or(FramingError::FrameTooLarge {
                            frame_bytes: u64::MAX,
                            max_frame_bytes: self.max_frame_bytes,
                        })?;
                Ok(EncodePlan::without_header(total))
            }
            Rule::FixedLength { frame_bytes } => {
                if payload_len != to_usize(*frame_bytes) {
                    return Err(FramingError::PayloadLength {
                        expected: *frame_bytes,
                        got: payload_len,
                    });
                }
                Ok(EncodePlan::without_header(payload_len))
            }
            Rule::LengthField(field) => field.plan(payload_len, self.max_frame_bytes),
        }
    }
}

fn validate_delimiter(delimiter: &str) -> Result<Delimiter, FramingError> {
    let given = delimiter.as_bytes();
    if given.is_empty() {
        return Err(invalid("delimiter", "must not be empty".into()));
    }
    let mut bytes = [0; MAX_DELIMITER_BYTES];
    let Some(slot) = bytes.get_mut(..given.len()) else {
        return Err(invalid(
            "delimiter",
            format!(
                "is {} bytes long, at most {MAX_DELIMITER_BYTES} are allowed",
                given.len()
            ),
        ));
    };
    slot.copy_from_slice(given);
    Ok(Delimiter {
        bytes,
        len: given.len(),
    })
}

impl LengthField {
    fn validate(
        offset: u32,
        width: u8,
        byte_order: ByteOrder,
        adjustment: i64,
        strip_bytes: Option<u32>,
        max_frame_bytes: u32,
    ) -> Result<Self, FramingError> {
        if !matches!(width, 1 | 2 | 4 | 8) {
            return Err(invalid(
                "width",
                format!("must be 1, 2, 4 or 8 bytes, got {width}"),
            ));
        }
        if offset > MAX_LENGTH_FIELD_OFFSET {
            return Err(invalid(
                "offset",
                format!("is {offset}, at most {MAX_LENGTH_FIELD_OFFSET} bytes are allowed"),
            ));
        }
        let header_bytes = offset.saturating_add(u32::from(width));
        if header_bytes > max_frame_bytes {
            return Err(invalid(
                "offset",
                format!(
                    "plus width is {header_bytes} bytes, more than the listener's \
                     max_frame_bytes ({max_frame_bytes})"
                ),
            ));
        }
        let field = Self {
            offset,
            width,
            byte_order,
            adjustment,
            strip_bytes: strip_bytes.unwrap_or(header_bytes),
        };
        // Frame sizes reachable by some value of the field, within the limits.
        let smallest = i128::from(adjustment) + i128::from(header_bytes);
        let largest = smallest + i128::from(field.max_value());
        let lowest_valid = smallest.max(i128::from(header_bytes));
        let highest_valid = largest.min(i128::from(max_frame_bytes));
        if lowest_valid > highest_valid {
            return Err(invalid(
                "adjustment",
                format!(
                    "of {adjustment} leaves no valid frame: with a {width}-byte field at \
                     offset {offset}, frames would be {smallest} to {largest} bytes, but must \
                     be {header_bytes} (the header) to {max_frame_bytes} (max_frame_bytes)"
                ),
            ));
        }
        if i128::from(field.strip_bytes) > highest_valid {
            return Err(invalid(
                "strip_bytes",
                format!(
                    "is {}, more than the largest valid frame ({highest_valid} bytes)",
                    field.strip_bytes
                ),
            ));
        }
        Ok(field)
    }

    fn header_bytes(&self) -> u32 {
        self.offset.saturating_add(u32::from(self.width))
    }

    /// Largest value the field can hold.
    fn max_value(&self) -> u64 {
        let unused_bits = 64u32.saturating_sub(8 * u32::from(self.width));
        u64::MAX.checked_shr(unused_bits).unwrap_or(0)
    }

    /// Total bytes of the frame starting `buf`, once the header is in; checked
    /// against the limit and the strip.
    fn frame_len(&self, buf: &[u8], max_frame_bytes: u32) -> Result<Option<usize>, FramingError> {
        let start = to_usize(self.offset);
        let end = to_usize(self.header_bytes());
        let Some(field) = buf.get(start..end) else {
            return Ok(None);
        };
        let value = match self.byte_order {
            ByteOrder::BigEndian => field.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
            ByteOrder::LittleEndian => field
                .iter()
                .rev()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
        };
        let header_bytes = self.header_bytes();
        let total = i128::from(value) + i128::from(self.adjustment) + i128::from(header_bytes);
        if total < i128::from(header_bytes) {
            return Err(FramingError::LengthBelowHeader {
                frame_bytes: total,
                header_bytes,
            });
        }
        if total > i128::from(max_frame_bytes) {
            return Err(FramingError::FrameTooLarge {
                frame_bytes: u64::try_from(total).unwrap_or(u64::MAX),
                max_frame_bytes,
            });
        }
        // Now header_bytes <= total <= max_frame_bytes, so it fits u32.
        let total = u32::try_from(total).unwrap_or(u32::MAX);
        if self.strip_bytes > total {
            return Err(FramingError::StripBeyondFrame {
                strip_bytes: self.strip_bytes,
                frame_bytes: u64::from(total),
            });
        }
        Ok(Some(to_usize(total)))
    }

    fn plan(&self, payload_len: usize, max_frame_bytes: u32) -> Result<EncodePlan, FramingError> {
        let header_len = to_usize(self.header_bytes());
        let too_large = |frame_bytes: u64| FramingError::FrameTooLarge {
            frame_bytes,
            max_frame_bytes,
        };
        let total = header_len
            .checked_add(payload_len)
            .ok_or(too_large(u64::MAX))?;
        if total > to_usize(max_frame_bytes) {
            return Err(too_large(to_u64(total)));
        }
        // value + adjustment + header = total = header + payload
        let value = i128::try_from(payload_len).unwrap_or(i128::MAX) - i128::from(self.adjustment);
        let fits = u64::try_from(value).ok().filter(|v| *v <= self.max_value());
        let Some(value) = fits else {
            return Err(FramingError::LengthFieldOverflow {
                value,
                width: self.width,
            });
        };
        if to_usize(self.strip_bytes) > total {
            return Err(FramingError::StripBeyondFrame {
                strip_bytes: self.strip_bytes,
                frame_bytes: to_u64(total),
            });
        }
        let mut header = [0; MAX_HEADER_BYTES];
        let be = value.to_be_bytes();
        let le = value.to_le_bytes();
        let width = usize::from(self.width);
        let field_bytes = match self.byte_order {
            ByteOrder::BigEndian => be.get(be.len().saturating_sub(width)..),
            ByteOrder::LittleEndian => le.get(..width),
        }
        .unwrap_or(&[]);
        // Offset bytes stay zero.
        put(&mut header, to_usize(self.offset), field_bytes)?;
        Ok(EncodePlan {
            header,
            header_len,
            total,
        })
    }
}

/// Copies `bytes` into `out` at `at`; returns the end position.
fn put(out: &mut [u8], at: usize, bytes: &[u8]) -> Result<usize, FramingError> {
    let end = at.saturating_add(bytes.len());
    let got = out.len();
    let slot = out
        .get_mut(at..end)
        .ok_or(FramingError::BufferTooSmall { needed: end, got })?;
    slot.copy_from_slice(bytes);
    Ok(end)
}

/// Position of the first occurrence of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    match needle {
        [] => Some(0),
        [only] => haystack.iter().position(|b| b == only),
        [first, rest @ ..] => {
            let mut from = 0;
            loop {
                let at = from + haystack.get(from..)?.iter().position(|b| b == first)?;
                // Past this point a whole needle no longer fits: no match.
                let tail = haystack.get(at + 1..at + needle.len())?;
                if tail == rest {
                    return Some(at);
                }
                from = at + 1;
            }
        }
    }
}

/// Whether a decoder would find the delimiter before the end of `payload`
/// in `payload ++ delimiter`: inside the payload, or straddling its end.
fn splits_payload(payload: &[u8], delimiter: &[u8]) -> bool {
    if find(payload, delimiter).is_some() {
        return true;
    }
    // The last len - 1 payload bytes followed by the delimiter: its first
    // occurrence must be the trailer itself.
    let keep = payload.len().min(delimiter.len().saturating_sub(1));
    let suffix = payload
        .get(payload.len().saturating_sub(keep)..)
        .unwrap_or(&[]);
    let mut joined = [0; 2 * MAX_DELIMITER_BYTES];
    let mut used = 0;
    for (slot, b) in joined.iter_mut().zip(suffix.iter().chain(delimiter)) {
        *slot = *b;
        used += 1;
    }
    let joined = joined.get(..used).unwrap_or(&[]);
    find(joined, delimiter).is_some_and(|at| at < keep)
}
