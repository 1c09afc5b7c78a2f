//! Frames on the control sockets: a 4-byte big-endian length, then a
//! postcard body of that many bytes.
//!
//! [`decode`] checks the declared length against the limit before anything
//! is buffered or parsed, and answers [`Decoded::Incomplete`] while the
//! frame has not fully arrived. [`FrameBuffer`] accumulates bytes read from
//! a socket and yields whole messages; it never holds more than one frame
//! beyond what was already decoded.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::framing::Decoded;

use super::ControlError;

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// The frame limit both ends use unless told otherwise: large enough for a
/// snapshot part or an import batch, small enough to refuse garbage early.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 16 * 1024 * 1024;

/// Appends `msg` as one frame to `out`.
pub fn encode<T: Serialize>(msg: &T, out: &mut Vec<u8>) -> Result<(), ControlError> {
    let start = out.len();
    out.extend_from_slice(&[0; LENGTH_PREFIX_BYTES]);
    let mut body = postcard::to_extend(msg, core::mem::take(out))
        .map_err(|e| ControlError::Encode(e.to_string()))?;
    let body_bytes = body.len() - start - LENGTH_PREFIX_BYTES;
    let Ok(len) = u32::try_from(body_bytes) else {
        body.truncate(start);
        *out = body;
        return Err(ControlError::FrameTooLarge {
            frame_bytes: body_bytes as u64,
            max_frame_bytes: u32::MAX,
        });
    };
    if let Some(prefix) = body.get_mut(start..start + LENGTH_PREFIX_BYTES) {
        prefix.copy_from_slice(&len.to_be_bytes());
    }
    *out = body;
    Ok(())
}

/// Encodes `msg` as one frame in a new buffer.
pub fn encode_to_vec<T: Serialize>(msg: &T) -> Result<Vec<u8>, ControlError> {
    let mut out = Vec::new();
    encode(msg, &mut out)?;
    Ok(out)
}

/// The body length a frame at the start of `buf` declares, checked against
/// `max_frame_bytes`; `None` while fewer than 4 bytes are there.
pub fn declared_len(buf: &[u8], max_frame_bytes: u32) -> Result<Option<usize>, ControlError> {
    let Some(prefix) = buf.get(..LENGTH_PREFIX_BYTES) else {
        return Ok(None);
    };
    let mut be = [0u8; LENGTH_PREFIX_BYTES];
    be.copy_from_slice(prefix);
    let len = u32::from_be_bytes(be);
    if len > max_frame_bytes {
        return Err(ControlError::FrameTooLarge {
            frame_bytes: u64::from(len),
            max_frame_bytes,
        });
    }
    Ok(Some(len as usize))
}

/// Decodes one frame from the start of `buf`.
pub fn decode<T: DeserializeOwned>(
    buf: &[u8],
    max_frame_bytes: u32,
) -> Result<Decoded<T>, ControlError> {
    let Some(len) = declared_len(buf, max_frame_bytes)? else {
        return Ok(Decoded::Incomplete);
    };
    let end = LENGTH_PREFIX_BYTES + len;
    let Some(body) = buf.get(LENGTH_PREFIX_BYTES..end) else {
        return Ok(Decoded::Incomplete);
    };
    let frame = decode_body(body)?;
    Ok(Decoded::Frame {
        frame,
        consumed: end,
    })
}

/// Decodes a frame's body (without its length prefix); trailing bytes are
/// an error, so two ends that disagree on a type are caught.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ControlError> {
    match postcard::take_from_bytes::<T>(body) {
        Ok((msg, [])) => Ok(msg),
        Ok((_, rest)) => Err(ControlError::Malformed(format!(
            "{} bytes left over after the message",
            rest.len()
        ))),
        Err(e) => Err(ControlError::Malformed(e.to_string())),
    }
}

/// Bytes read from a stream, cut into messages.
///
/// ```
/// use shoal_protocols::control::{wire, FrameBuffer};
/// let mut fb = FrameBuffer::new(1024);
/// let bytes = wire::encode_to_vec(&7u64).unwrap();
/// fb.extend(&bytes[..3]);
/// assert_eq!(fb.next_message::<u64>().unwrap(), None);
/// fb.extend(&bytes[3..]);
/// assert_eq!(fb.next_message::<u64>().unwrap(), Some(7));
/// ```
#[derive(Debug)]
pub struct FrameBuffer {
    buf: Vec<u8>,
    start: usize,
    max_frame_bytes: u32,
}

impl FrameBuffer {
    /// An empty buffer that refuses frames larger than `max_frame_bytes`.
    pub fn new(max_frame_bytes: u32) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            max_frame_bytes,
        }
    }

    /// Adds bytes read from the stream.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, or `None` until more bytes arrive. After an
    /// error the stream is out of step and should be closed.
    pub fn next_message<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ControlError> {
        let pending = self.buf.get(self.start..).unwrap_or_default();
        match decode::<T>(pending, self.max_frame_bytes)? {
            Decoded::Incomplete => {
                self.compact();
                Ok(None)
            }
            Decoded::Frame { frame, consumed } => {
                self.start += consumed;
                Ok(Some(frame))
            }
        }
    }

    /// Bytes received and not yet decoded.
    pub fn pending_bytes(&self) -> usize {
        self.buf.len() - self.start
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        // Reserve the declared frame at once (it is within the limit) so a
        // large frame is not grown in many steps.
        if let Ok(Some(len)) = declared_len(&self.buf, self.max_frame_bytes) {
            let want = LENGTH_PREFIX_BYTES + len;
            if want > self.buf.capacity() {
                self.buf.reserve(want - self.buf.len());
            }
        }
    }
}
