//! The device framing spoken by the data plane's default TCP listener (the
//! codec of `shoal_protocols::framing`, default config), and the probe
//! payload the generator puts inside each frame.
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

use shoal_protocols::framing::{Decoded, Framer, FramingConfig, FramingError};

/// Largest payload the 2-byte length prefix can describe.
pub(crate) const MAX_PAYLOAD_BYTES: usize = u16::MAX as usize;
/// Largest frame on the wire, length prefix included.
const MAX_FRAME_BYTES: u32 = 2 + u16::MAX as u32;
/// Bytes of the probe header (send time + sequence number).
pub(crate) const PROBE_HEADER_BYTES: usize = 16;

const FILLER_BYTE: u8 = 0x5a;

/// The device framing, accepting every frame its length prefix can describe.
pub(crate) fn device_framer() -> Framer {
    Framer::new(&FramingConfig::default(), MAX_FRAME_BYTES)
        .unwrap_or_else(|e| unreachable!("the default framing is valid: {e}"))
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

/// One pre-encoded probe frame; stamping a copy only rewrites the header.
#[derive(Debug, Clone)]
pub(crate) struct ProbeFrameTemplate {
    frame: Vec<u8>,
    /// Where the payload starts in `frame`.
    payload_at: usize,
}

impl ProbeFrameTemplate {
    /// `payload_bytes` must lie in `PROBE_HEADER_BYTES..=MAX_PAYLOAD_BYTES`.
    pub(crate) fn new(payload_bytes: usize) -> Option<Self> {
        if !(PROBE_HEADER_BYTES..=MAX_PAYLOAD_BYTES).contains(&payload_bytes) {
            return None;
        }
        let framer = device_framer();
        let mut frame = Vec::new();
        framer
            .encode_into(&vec![FILLER_BYTE; payload_bytes], &mut frame)
            .ok()?;
        let payload_at = frame.len() - payload_bytes - framer.trailer().len();
        Some(Self { frame, payload_at })
    }

    /// Bytes of one frame on the wire, prefix included.
    pub(crate) fn frame_bytes(&self) -> usize {
        self.frame.len()
    }

    /// Appends one frame stamped with `probe` to `out`.
    pub(crate) fn append(&self, out: &mut Vec<u8>, probe: Probe) {
        let at = out.len() + self.payload_at;
        out.extend_from_slice(&self.frame);
        out[at..at + 8].copy_from_slice(&probe.sent_ns.to_be_bytes());
        out[at + 8..at + 16].copy_from_slice(&probe.seq.to_be_bytes());
    }
}

/// Receive buffer that reassembles frames across reads.
///
/// Bytes `[start, buf.len())` are received but not yet decoded. Before each
/// read the buffer is compacted and grown so that the frame in progress fits,
/// which never takes more than one largest frame (or the initial capacity if
/// that is larger).
#[derive(Debug)]
pub(crate) struct FrameReader {
    framer: Framer,
    buf: Vec<u8>,
    start: usize,
    /// Size of the frame at `start` when known to be larger than what is buffered.
    pending_frame_bytes: usize,
}

impl FrameReader {
    pub(crate) fn with_capacity(capacity_bytes: usize) -> Self {
        Self {
            framer: device_framer(),
            buf: Vec::with_capacity(capacity_bytes.max(2)),
            start: 0,
            pending_frame_bytes: 0,
        }
    }

    /// Hands out the buffer for the next read; the caller reads into
    /// `buf[buf.len()..buf.capacity()]` and gives it back with
    /// [`Self::finish_read`]. The spare room is never empty.
    pub(crate) fn begin_read(&mut self) -> Vec<u8> {
        let buffered = self.buf.len() - self.start;
        let needed = self.pending_frame_bytes.max(1);
        // Compact when the unread tail leaves no room, or not enough for the
        // frame in progress.
        if self.start > 0 && self.buf.capacity() - self.start < needed.max(buffered + 1) {
            self.buf.copy_within(self.start.., 0);
            self.buf.truncate(buffered);
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

    /// The next whole frame's payload, if one is buffered.
    pub(crate) fn next_frame(&mut self) -> Result<Option<&[u8]>, FramingError> {
        let unread = self.buf.get(self.start..).unwrap_or_default();
        match self.framer.decode(unread)? {
            Decoded::Frame { frame, consumed } => {
                self.start += consumed;
                self.pending_frame_bytes = 0;
                Ok(Some(unread.get(frame.payload).unwrap_or_default()))
            }
            Decoded::Incomplete => {
                self.pending_frame_bytes = self.framer.frame_len_hint(unread).unwrap_or(0);
                Ok(None)
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

    /// Feeds `stream` in reads of at most `read_bytes`, returns the payloads.
    fn payloads(stream: &[u8], read_bytes: usize, capacity: usize) -> Vec<Vec<u8>> {
        let mut reader = FrameReader::with_capacity(capacity);
        let mut out = Vec::new();
        for mut chunk in stream.chunks(read_bytes) {
            while !chunk.is_empty() {
                chunk = &chunk[reader.push(chunk)..];
                while let Some(payload) = reader.next_frame().unwrap() {
                    out.push(payload.to_vec());
                }
            }
        }
        out
    }

    #[test]
    fn login_frame_bytes() {
        // 2-byte big-endian length of the payload, then the device id.
        let mut login = Vec::new();
        device_framer().encode_into(b"abc", &mut login).unwrap();
        assert_eq!(login, [0x00, 0x03, b'a', b'b', b'c']);
        assert_eq!(payloads(&login, 1, 8), [b"abc".to_vec()]);
        assert_eq!(payloads(&[0x00, 0x00], 1, 8), [Vec::<u8>::new()]);
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
        assert_eq!(&out[3..5], &[0x00, 24]);
        assert_eq!(&out[5..13], &[1, 2, 3, 4, 5, 6, 7, 8]);
        let got = payloads(&out[3..], 64, 64);
        assert_eq!(got.len(), 1);
        assert_eq!(parse_probe(&got[0]), Some(probe));
        assert!(got[0][16..].iter().all(|&b| b == FILLER_BYTE));
        assert_eq!(parse_probe(&[0; 15]), None);
        assert!(ProbeFrameTemplate::new(15).is_none());
        assert!(ProbeFrameTemplate::new(MAX_PAYLOAD_BYTES + 1).is_none());
        assert!(ProbeFrameTemplate::new(MAX_PAYLOAD_BYTES).is_some());
    }

    #[test]
    fn reader_handles_split_and_coalesced_frames() {
        let mut stream = Vec::new();
        let template = ProbeFrameTemplate::new(16).unwrap();
        for seq in 0..10 {
            template.append(&mut stream, Probe { sent_ns: 5, seq });
        }
        // Reads of awkward sizes, including one byte at a time, and a
        // buffer smaller than two frames.
        for read_bytes in [1, 3, 17, 18, 19, 64, 180] {
            let seqs: Vec<u64> = payloads(&stream, read_bytes, 32)
                .iter()
                .map(|p| parse_probe(p).unwrap().seq)
                .collect();
            assert_eq!(seqs, (0..10).collect::<Vec<_>>(), "reads of {read_bytes}");
        }
    }

    #[test]
    fn reader_grows_for_frames_larger_than_its_capacity() {
        let big: Vec<u8> = (0..MAX_PAYLOAD_BYTES).map(|i| i as u8).collect();
        let mut stream = Vec::new();
        let framer = device_framer();
        framer.encode_into(b"x", &mut stream).unwrap();
        framer.encode_into(&big, &mut stream).unwrap();
        framer.encode_into(b"y", &mut stream).unwrap();
        let got = payloads(&stream, 70_000, 8);
        assert_eq!(got, [b"x".to_vec(), big, b"y".to_vec()]);
    }
}
