//! The frame layer of RFC 6455 §5: heads, masking, lengths.

use core::ops::Range;

use super::{Decoded, WsError};

/// The most bytes a frame head takes: 2 fixed, 8 of extended length, 4 of mask.
pub const MAX_FRAME_HEAD_BYTES: usize = 14;

/// Largest payload a control frame (close, ping, pong) may carry.
pub const MAX_CONTROL_PAYLOAD_BYTES: usize = 125;

/// A frame's opcode (RFC 6455 §5.2). The reserved values are refused by the
/// decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Opcode {
    /// `0x0`: a later fragment of a message.
    Continuation,
    /// `0x1`: the first (or only) frame of a UTF-8 text message.
    Text,
    /// `0x2`: the first (or only) frame of a binary message.
    Binary,
    /// `0x8`: close (control).
    Close,
    /// `0x9`: ping (control).
    Ping,
    /// `0xA`: pong (control).
    Pong,
}

impl Opcode {
    /// The opcode of the 4-bit value, `None` for the reserved values.
    pub fn from_u8(value: u8) -> Option<Self> {
        match value {
            0x0 => Some(Self::Continuation),
            0x1 => Some(Self::Text),
            0x2 => Some(Self::Binary),
            0x8 => Some(Self::Close),
            0x9 => Some(Self::Ping),
            0xA => Some(Self::Pong),
            _ => None,
        }
    }

    /// The 4-bit wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    /// Close, ping and pong: never fragmented, at most 125 bytes, allowed
    /// between the fragments of a message.
    pub fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// Which end of the connection is decoding, which decides the masking rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// "I am the server": frames come from a client and MUST be masked.
    Server,
    /// "I am the client": frames come from a server and must NOT be masked.
    Client,
}

/// The head of a frame found in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameHead {
    /// Last frame of its message (always set on control frames).
    pub fin: bool,
    /// The opcode.
    pub opcode: Opcode,
    /// The masking key, if the frame is masked. The payload in the buffer is
    /// still masked: [`unmask`] it in place.
    pub mask: Option<[u8; 4]>,
    /// Where the payload lies in the buffer given to [`decode_frame`].
    pub payload: Range<usize>,
}

impl FrameHead {
    /// The payload's length in bytes.
    pub fn payload_len(&self) -> usize {
        self.payload.len()
    }
}

/// Decodes the frame at the start of `buf`.
///
/// `Ok(Frame { frame, consumed })` once the whole frame (head and payload)
/// is in `buf`: `consumed` is its size and `frame.payload` lies within
/// `0..consumed`. `Ok(Incomplete)` before that. Every check is made as soon
/// as the bytes it needs are there, before the payload arrives: reserved
/// bits or opcodes, fragmented or long control frames, the masking rule of
/// `role`, a 64-bit length with its top bit set, and a declared length over
/// `max_payload_bytes` ([`WsError::TooLarge`]). Non-minimal length encodings
/// are accepted.
pub fn decode_frame(
    buf: &[u8],
    role: Role,
    max_payload_bytes: u64,
) -> Result<Decoded<FrameHead>, WsError> {
    let Some(&first) = buf.first() else {
        return Ok(Decoded::Incomplete);
    };
    let fin = first & 0x80 != 0;
    let reserved = first & 0x70;
    if reserved != 0 {
        return Err(WsError::ReservedBits { bits: reserved });
    }
    let raw_opcode = first & 0x0F;
    let opcode = Opcode::from_u8(raw_opcode).ok_or(WsError::UnknownOpcode(raw_opcode))?;
    if opcode.is_control() && !fin {
        return Err(WsError::FragmentedControl);
    }

    let Some(&second) = buf.get(1) else {
        return Ok(Decoded::Incomplete);
    };
    let masked = second & 0x80 != 0;
    match (role, masked) {
        (Role::Server, false) => return Err(WsError::UnmaskedFrame),
        (Role::Client, true) => return Err(WsError::MaskedFrame),
        _ => {}
    }
    let short_len = second & 0x7F;
    if opcode.is_control() && usize::from(short_len) > MAX_CONTROL_PAYLOAD_BYTES {
        return Err(WsError::ControlTooLong {
            len: u64::from(short_len),
        });
    }

    let (payload_len, mut at) = match short_len {
        126 => match read_be::<2>(buf, 2) {
            Some(bytes) => (u64::from(u16::from_be_bytes(bytes)), 4),
            None => return Ok(Decoded::Incomplete),
        },
        127 => match read_be::<8>(buf, 2) {
            Some(bytes) => (u64::from_be_bytes(bytes), 10),
            None => return Ok(Decoded::Incomplete),
        },
        len => (u64::from(len), 2),
    };
    if payload_len & (1 << 63) != 0 {
        return Err(WsError::LengthOverflow);
    }
    if payload_len > max_payload_bytes {
        return Err(WsError::TooLarge {
            len: payload_len,
            max: max_payload_bytes,
        });
    }
    let too_large = WsError::TooLarge {
        len: payload_len,
        max: max_payload_bytes,
    };
    let payload_bytes = usize::try_from(payload_len).map_err(|_| too_large.clone())?;

    let mask = if masked {
        match read_be::<4>(buf, at) {
            Some(key) => {
                at += 4;
                Some(key)
            }
            None => return Ok(Decoded::Incomplete),
        }
    } else {
        None
    };
    let end = at.checked_add(payload_bytes).ok_or(too_large)?;
    if buf.len() < end {
        return Ok(Decoded::Incomplete);
    }
    Ok(Decoded::Frame {
        frame: FrameHead {
            fin,
            opcode,
            mask,
            payload: at..end,
        },
        consumed: end,
    })
}

/// `N` bytes of `buf` from `at`, if they are there.
fn read_be<const N: usize>(buf: &[u8], at: usize) -> Option<[u8; N]> {
    let bytes = buf.get(at..at.checked_add(N)?)?;
    <[u8; N]>::try_from(bytes).ok()
}

/// Unmasks (or masks: the operation is its own inverse) `payload` in place;
/// `payload` starts at the first byte of the frame's payload. Works on 8-byte
/// words where it can.
pub fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let [a, b, c, d] = mask;
    let word = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let mut words = payload.chunks_exact_mut(8);
    for chunk in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ word).to_ne_bytes());
    }
    // Whole words cover a multiple of 4 bytes: the rest starts at mask byte 0.
    for (byte, key) in words.into_remainder().iter_mut().zip(mask.iter().cycle()) {
        *byte ^= key;
    }
}

/// Like [`unmask`] for a part of a payload that starts `offset` bytes into
/// it, e.g. the bytes of a large frame that arrived in a later read.
pub fn unmask_at(payload: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut rotated = mask;
    rotated.rotate_left(offset % 4);
    unmask(payload, rotated);
}

/// Writes a frame head into `head` and returns its length (2 to
/// [`MAX_FRAME_HEAD_BYTES`]), with the shortest length encoding. A server
/// sends unmasked frames (`mask: None`); a client masks every frame and must
/// then mask the payload with [`unmask`]. `payload_len` must be below 2^63.
pub fn write_frame_head(
    head: &mut [u8; MAX_FRAME_HEAD_BYTES],
    fin: bool,
    opcode: Opcode,
    payload_len: u64,
    mask: Option<[u8; 4]>,
) -> usize {
    debug_assert!(
        payload_len < 1 << 63,
        "WebSocket payloads are below 2^63 bytes"
    );
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let [first, second, rest @ ..] = head;
    *first = if fin { 0x80 } else { 0 } | opcode.as_u8();
    let wide = payload_len.to_be_bytes();
    let extended: &[u8] = if payload_len < 126 {
        *second = mask_bit | payload_len as u8;
        &[]
    } else if payload_len <= u64::from(u16::MAX) {
        *second = mask_bit | 126;
        wide.get(6..).unwrap_or(&wide)
    } else {
        *second = mask_bit | 127;
        &wide
    };
    let mask_bytes: &[u8] = match &mask {
        Some(key) => key,
        None => &[],
    };
    let mut len = 2;
    for (slot, byte) in rest.iter_mut().zip(extended.iter().chain(mask_bytes)) {
        *slot = *byte;
        len += 1;
    }
    len
}

/// Appends a frame head to `out`; see [`write_frame_head`].
pub fn encode_frame_head(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: Opcode,
    payload_len: u64,
    mask: Option<[u8; 4]>,
) {
    let mut head = [0u8; MAX_FRAME_HEAD_BYTES];
    let len = write_frame_head(&mut head, fin, opcode, payload_len, mask);
    out.extend_from_slice(head.get(..len).unwrap_or(&head));
}

/// Appends a whole frame to `out`: the head and `payload`, masked with
/// `mask` if given (clients, tests and benchmarks; a server passes `None`).
pub fn encode_frame(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: Opcode,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    encode_frame_head(out, fin, opcode, payload.len() as u64, mask);
    let start = out.len();
    out.extend_from_slice(payload);
    if let (Some(key), Some(written)) = (mask, out.get_mut(start..)) {
        unmask(written, key);
    }
}
