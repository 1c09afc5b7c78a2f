//! The device framing spoken by the data plane's default TCP listener, and the
//! probe payload the generator puts inside each frame.
//!
//! Frame: a 2-byte big-endian length counting the bytes after it, then that
//! many payload bytes. The first frame of a connection is its login (payload =
//! device id); every later frame is data.
//!
//! Probe payload (at least [`PROBE_HEADER_BYTES`]):
//!
//! ```text
//! offset 0  u64 BE  send time, CLOCK_MONOTONIC nanoseconds
//! offset 8  u64 BE  sequence number, 0-based, per sender
//! offset 16 ...     filler bytes up to --payload-bytes
//! ```

/// Bytes of the length prefix in front of every frame.
pub(crate) const LENGTH_PREFIX_BYTES: usize = 2;
/// Largest payload the 2-byte length prefix can describe.
pub(crate) const MAX_PAYLOAD_BYTES: usize = u16::MAX as usize;
/// Largest frame on the wire, prefix included.
pub(crate) const MAX_FRAME_BYTES: usize = LENGTH_PREFIX_BYTES + MAX_PAYLOAD_BYTES;
/// Bytes of the probe header (send time + sequence number).
pub(crate) const PROBE_HEADER_BYTES: usize = 16;

const FILLER_BYTE: u8 = 0x5a;

/// Result of looking for one frame at the start of a byte slice.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded<'a> {
    /// Not a whole frame yet; `frame_bytes` is the size of the whole frame
    /// (prefix included) once the prefix has been seen.
    Incomplete { frame_bytes: Option<usize> },
    /// One whole frame; `consumed` bytes of the input belong to it.
    Frame { payload: &'a [u8], consumed: usize },
}

/// Decodes the frame at the start of `input`. Needing more bytes is not an
/// error, and any length the prefix can state is valid.
pub(crate) fn decode_frame(input: &[u8]) -> Decoded<'_> {
    let Some((prefix, rest)) = input.split_first_chunk::<LENGTH_PREFIX_BYTES>() else {
        return Decoded::Incomplete { frame_bytes: None };
    };
    let payload_len = usize::from(u16::from_be_bytes(*prefix));
    match rest.get(..payload_len) {
        Some(payload) => Decoded::Frame {
            payload,
            consumed: LENGTH_PREFIX_BYTES + payload_len,
        },
        None => Decoded::Incomplete {
            frame_bytes: Some(LENGTH_PREFIX_BYTES + payload_len),
        },
    }
}

/// Appends one frame carrying `payload` to `out`.
///
/// Returns `None` (and leaves `out` untouched) when the payload is longer
/// than the prefix can describe.
pub(crate) fn encode_frame(out: &mut Vec<u8>, payload: &[u8]) -> Option<()> {
    let len = u16::try_from(payload.len()).ok()?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    Some(())
}

/// Send time and sequence number carried by a probe payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Probe {
    pub(crate) sent_ns: u64,
    pub(crate) seq: u64,
}

/// Reads the probe header of a payload, `None` if the payload is too short.
pub(crate) fn parse_probe(payload: &[u8]) -> Option<Probe> {
    let (sent, rest) = payload.split_first_chunk::<8>()?;
    let (seq, _) = rest.split_first_chunk::<8>()?;
    Some(Probe {
        sent_ns: u64::from_be_bytes(*sent),
        seq: u64::from_be_bytes(*seq),
    })
}

/// One pre-built probe frame; stamping a copy only rewrites the header.
#[derive(Debug, Clone)]
pub(crate) struct ProbeFrameTemplate {
    frame: Vec<u8>,
}

impl ProbeFrameTemplate {
    /// `payload_bytes` must lie in `PROBE_HEADER_BYTES..=MAX_PAYLOAD_BYTES`.
    pub(crate) fn new(payload_bytes: usize) -> Option<Self> {
        if !(PROBE_HEADER_BYTES..=MAX_PAYLOAD_BYTES).contains(&payload_bytes) {
            return None;
        }
        let mut frame = Vec::with_capacity(LENGTH_PREFIX_BYTES + payload_bytes);
        encode_frame(&mut frame, &vec![FILLER_BYTE; payload_bytes])?;
        Some(Self { frame })
    }

    /// Bytes of one frame on the wire, prefix included.
    pub(crate) fn frame_bytes(&self) -> usize {
        self.frame.len()
    }

    /// Appends one frame stamped with `probe` to `out`.
    pub(crate) fn append(&self, out: &mut Vec<u8>, probe: Probe) {
        let at = out.len() + LENGTH_PREFIX_BYTES;
        out.extend_from_slice(&self.frame);
        out[at..at + 8].copy_from_slice(&probe.sent_ns.to_be_bytes());
        out[at + 8..at + 16].copy_from_slice(&probe.seq.to_be_bytes());
    }
}

/// Receive buffer that reassembles frames across reads.
///
/// Bytes `[start, buf.len())` are received but not yet decoded. Before each
/// read the buffer is compacted and grown so that the next frame fits, never
/// beyond [`MAX_FRAME_BYTES`] (or the initial capacity if that is larger).
#[derive(Debug)]
pub(crate) struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    /// Size of the frame at `start` when known to be larger than what is buffered.
    pending_frame_bytes: usize,
}

impl FrameReader {
    pub(crate) fn with_capacity(capacity_bytes: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity_bytes.max(LENGTH_PREFIX_BYTES)),
            start: 0,
            pending_frame_bytes: 0,
        }
    }

    /// Hands out the buffer for the next read; the caller reads into
    /// `buf[buf.len()..buf.capacity()]` and gives it back with
    /// [`Self::finish_read`]. The spare room is never empty.
    pub(crate) fn begin_read(&mut self) -> Vec<u8> {
        let buffered = self.buf.len() - self.start;
        let needed = self.pending_frame_bytes.max(LENGTH_PREFIX_BYTES);
        debug_assert!(needed <= MAX_FRAME_BYTES);
        // Compact when the unread tail does not leave room for the frame in progress.
        if self.start > 0 && self.buf.capacity() - self.start < needed.max(buffered + 1) {
            self.buf.copy_within(self.start.., 0);
            self.buf.truncate(buffered);
            self.start = 0;
        } else if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        if self.buf.capacity() - self.start < needed {
            self.buf.reserve(needed - self.buf.len());
        }
        if self.buf.len() == self.buf.capacity() {
            self.buf.reserve(1);
        }
        std::mem::take(&mut self.buf)
    }

    /// Takes the buffer back after a read appended bytes to it.
    pub(crate) fn finish_read(&mut self, buf: Vec<u8>) {
        self.buf = buf;
    }

    /// Next whole frame's payload, if one is buffered.
    pub(crate) fn next_frame(&mut self) -> Option<&[u8]> {
        let unread = self.buf.get(self.start..).unwrap_or_default();
        match decode_frame(unread) {
            Decoded::Frame { payload, consumed } => {
                self.start += consumed;
                self.pending_frame_bytes = 0;
                Some(payload)
            }
            Decoded::Incomplete { frame_bytes } => {
                self.pending_frame_bytes = frame_bytes.unwrap_or(0);
                None
            }
        }
    }

    /// Stands in for one read: copies what fits, returns how many bytes.
    #[cfg(test)]
    fn push(&mut self, bytes: &[u8]) -> usize {
        let mut buf = self.begin_read();
        let room = buf.capacity() - buf.len();
        assert!(room > 0, "begin_read left no room");
        let n = room.min(bytes.len());
        buf.extend_from_slice(&bytes[..n]);
        self.finish_read(buf);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn decode_needs_prefix_then_payload() {
        let bytes = frame(b"abc");
        assert_eq!(bytes, [0x00, 0x03, b'a', b'b', b'c']);
        assert_eq!(decode_frame(&[]), Decoded::Incomplete { frame_bytes: None });
        assert_eq!(
            decode_frame(&bytes[..1]),
            Decoded::Incomplete { frame_bytes: None }
        );
        assert_eq!(
            decode_frame(&bytes[..4]),
            Decoded::Incomplete {
                frame_bytes: Some(5)
            }
        );
        assert_eq!(
            decode_frame(&bytes),
            Decoded::Frame {
                payload: b"abc",
                consumed: 5
            }
        );
    }

    #[test]
    fn decode_empty_and_largest_payload() {
        assert_eq!(
            decode_frame(&[0, 0, 9]),
            Decoded::Frame {
                payload: b"",
                consumed: 2
            }
        );
        let big = frame(&vec![7; MAX_PAYLOAD_BYTES]);
        assert_eq!(big.len(), MAX_FRAME_BYTES);
        assert!(matches!(
            decode_frame(&big),
            Decoded::Frame { consumed, .. } if consumed == MAX_FRAME_BYTES
        ));
        assert!(encode_frame(&mut Vec::new(), &vec![0; MAX_PAYLOAD_BYTES + 1]).is_none());
    }

    #[test]
    fn probe_round_trip() {
        let template = ProbeFrameTemplate::new(24).unwrap();
        assert_eq!(template.frame_bytes(), 26);
        let mut out = vec![1, 2, 3];
        let probe = Probe {
            sent_ns: 0x0102_0304_0506_0708,
            seq: 42,
        };
        template.append(&mut out, probe);
        assert_eq!(&out[..3], &[1, 2, 3]);
        match decode_frame(&out[3..]) {
            Decoded::Frame { payload, consumed } => {
                assert_eq!(consumed, 26);
                assert_eq!(parse_probe(payload), Some(probe));
                assert!(payload[16..].iter().all(|&b| b == FILLER_BYTE));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(parse_probe(&[0; 15]), None);
        assert!(ProbeFrameTemplate::new(15).is_none());
        assert!(ProbeFrameTemplate::new(MAX_PAYLOAD_BYTES + 1).is_none());
    }

    #[test]
    fn reader_handles_split_and_coalesced_frames() {
        let mut stream = Vec::new();
        let template = ProbeFrameTemplate::new(16).unwrap();
        for seq in 0..10 {
            template.append(&mut stream, Probe { sent_ns: 5, seq });
        }
        // Feed in awkward chunk sizes, including one byte at a time.
        for chunk_bytes in [1, 3, 17, 18, 19, 64, 180] {
            let mut reader = FrameReader::with_capacity(32);
            let mut seqs = Vec::new();
            for mut chunk in stream.chunks(chunk_bytes) {
                while !chunk.is_empty() {
                    chunk = &chunk[reader.push(chunk)..];
                    while let Some(payload) = reader.next_frame() {
                        seqs.push(parse_probe(payload).unwrap().seq);
                    }
                }
            }
            assert_eq!(seqs, (0..10).collect::<Vec<_>>(), "chunk {chunk_bytes}");
        }
    }

    #[test]
    fn reader_grows_for_a_frame_larger_than_its_capacity() {
        let payload: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let bytes = frame(&payload);
        let mut reader = FrameReader::with_capacity(8);
        let mut got = None;
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            rest = &rest[reader.push(rest)..];
            if let Some(p) = reader.next_frame() {
                got = Some(p.to_vec());
            }
        }
        assert_eq!(got.as_deref(), Some(&payload[..]));
    }
}
