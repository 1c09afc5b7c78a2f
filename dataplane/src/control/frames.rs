//! Control frames over a blocking stream: a 4-byte big-endian length and a
//! postcard body. The reader hands out whole frames, prefix included, so
//! the client can keep them byte for byte in its cache.

use std::io::{self, Read, Write};

use serde::Serialize;
use shoal_protocols::control::wire::{self, LENGTH_PREFIX_BYTES};

/// Bytes asked of the stream per read.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Bytes read from a stream, cut into frames.
#[derive(Debug)]
pub(crate) struct FrameReader {
    buf: Vec<u8>,
    max_frame_bytes: u32,
}

/// A whole frame: the length prefix and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawFrame(pub(crate) Vec<u8>);

impl RawFrame {
    /// The body (after the length prefix).
    pub(crate) fn body(&self) -> &[u8] {
        self.0.get(LENGTH_PREFIX_BYTES..).unwrap_or_default()
    }
}

fn invalid(e: impl ToString) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl FrameReader {
    pub(crate) fn new(max_frame_bytes: u32) -> Self {
        Self {
            buf: Vec::new(),
            max_frame_bytes,
        }
    }

    /// The frame at the start of the buffer, if it is whole.
    fn take_frame(&mut self) -> io::Result<Option<RawFrame>> {
        let Some(len) = wire::declared_len(&self.buf, self.max_frame_bytes).map_err(invalid)?
        else {
            return Ok(None);
        };
        let end = LENGTH_PREFIX_BYTES + len;
        if self.buf.len() < end {
            if self.buf.capacity() < end {
                self.buf.reserve(end - self.buf.len());
            }
            return Ok(None);
        }
        let rest = self.buf.split_off(end);
        Ok(Some(RawFrame(std::mem::replace(&mut self.buf, rest))))
    }

    /// The next whole frame. `Ok(None)` when the stream's read timeout
    /// passed first (the bytes read so far are kept); an error at end of
    /// stream or on a frame over the limit.
    pub(crate) fn next_frame(&mut self, stream: &mut impl Read) -> io::Result<Option<RawFrame>> {
        loop {
            if let Some(frame) = self.take_frame()? {
                return Ok(Some(frame));
            }
            let mut chunk = [0u8; READ_CHUNK_BYTES];
            match stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the control plane closed the connection",
                    ))
                }
                Ok(n) => self
                    .buf
                    .extend_from_slice(chunk.get(..n).unwrap_or_default()),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Writes `msg` as one frame.
pub(crate) fn write_message<T: Serialize>(stream: &mut impl Write, msg: &T) -> io::Result<()> {
    let frame = wire::encode_to_vec(msg).map_err(invalid)?;
    stream.write_all(&frame)?;
    stream.flush()
}

/// Reads one frame from a file: `Ok(None)` at a clean end, `Err(Torn)`
/// when the file ends inside a frame.
pub(crate) fn read_file_frame(
    file: &mut impl Read,
    max_frame_bytes: u32,
) -> Result<Option<RawFrame>, FileFrameError> {
    let mut prefix = [0u8; LENGTH_PREFIX_BYTES];
    let got = read_up_to(file, &mut prefix)?;
    if got == 0 {
        return Ok(None);
    }
    if got < LENGTH_PREFIX_BYTES {
        return Err(FileFrameError::Torn);
    }
    let len = wire::declared_len(&prefix, max_frame_bytes)
        .map_err(|e| FileFrameError::Corrupt(e.to_string()))?
        .unwrap_or(0);
    let mut frame = Vec::with_capacity(LENGTH_PREFIX_BYTES + len);
    frame.extend_from_slice(&prefix);
    frame.resize(LENGTH_PREFIX_BYTES + len, 0);
    let body = frame.get_mut(LENGTH_PREFIX_BYTES..).unwrap_or_default();
    if read_up_to(file, body)? < len {
        return Err(FileFrameError::Torn);
    }
    Ok(Some(RawFrame(frame)))
}

/// Fills `buf` as far as the file goes; the bytes read.
fn read_up_to(file: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(buf.get_mut(filled..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Why a frame could not be read from a file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FileFrameError {
    /// The file ends inside a frame (a write that did not finish).
    #[error("the file ends inside a frame")]
    Torn,
    /// The frame's length is over the limit.
    #[error("{0}")]
    Corrupt(String),
    /// Reading failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream that hands out its bytes a few at a time, then times out.
    struct Trickle {
        bytes: Vec<u8>,
        pos: usize,
        step: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pos == self.bytes.len() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = self.step.min(buf.len()).min(self.bytes.len() - self.pos);
            buf[..n].copy_from_slice(&self.bytes[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    #[test]
    fn frames_come_whole_across_reads_and_timeouts() {
        let mut bytes = wire::encode_to_vec(&"first".to_owned()).unwrap();
        bytes.extend(wire::encode_to_vec(&7u64).unwrap());
        let mut stream = Trickle {
            bytes: bytes[..6].to_vec(),
            pos: 0,
            step: 3,
        };
        let mut reader = FrameReader::new(1024);
        assert_eq!(reader.next_frame(&mut stream).unwrap(), None);
        stream.bytes = bytes.clone();
        let first = reader.next_frame(&mut stream).unwrap().unwrap();
        assert_eq!(wire::decode_body::<String>(first.body()).unwrap(), "first");
        let second = reader.next_frame(&mut stream).unwrap().unwrap();
        assert_eq!(wire::decode_body::<u64>(second.body()).unwrap(), 7);
        assert_eq!(reader.next_frame(&mut stream).unwrap(), None);
    }

    #[test]
    fn an_oversized_frame_is_refused_before_it_is_read() {
        let mut stream = Trickle {
            bytes: vec![0x7f, 0, 0, 0, 1],
            pos: 0,
            step: 64,
        };
        assert!(FrameReader::new(1024).next_frame(&mut stream).is_err());
    }

    #[test]
    fn file_frames_tell_a_clean_end_from_a_torn_one() {
        let frame = wire::encode_to_vec(&"x".to_owned()).unwrap();
        let mut whole = &frame[..];
        assert!(read_file_frame(&mut whole, 1024).unwrap().is_some());
        assert!(read_file_frame(&mut whole, 1024).unwrap().is_none());
        let mut torn = &frame[..frame.len() - 1];
        assert!(matches!(
            read_file_frame(&mut torn, 1024),
            Err(FileFrameError::Torn)
        ));
        let mut torn_prefix = &frame[..2];
        assert!(matches!(
            read_file_frame(&mut torn_prefix, 1024),
            Err(FileFrameError::Torn)
        ));
    }
}
