//! Reading an HTTP-FLV response without copying it: the response head, a
//! streaming de-chunker (HTTP/1.1 chunked body), and a streaming FLV scanner
//! that keeps only each tag's 11-byte head and the first
//! [`BODY_PREFIX_BYTES`] of its body and steps over the rest.
//!
//! ```text
//! socket bytes ─▶ parse_response_head (once) ─▶ Dechunker::feed ─▶ FlvScanner::feed ─▶ SeenTag
//!                                             (or the raw body)    data slices, borrowed
//! ```
//!
//! Both feeders take whatever slice they are given (one byte or a whole
//! read) and keep a few bytes of state between calls, so the caller reuses
//! one read buffer from its start every time.

use std::fmt;

use super::media::BODY_PREFIX_BYTES;

/// Largest response head accepted.
pub(crate) const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Longest chunk-size line extension or trailer line accepted.
const MAX_LINE_BYTES: usize = 1024;
/// Hex digits of a chunk size (2^60 bytes is plenty).
const MAX_SIZE_DIGITS: u32 = 15;
/// FLV file header (9) and PreviousTagSize0 (4).
const FILE_HEADER_BYTES: usize = 13;
const TAG_HEAD_BYTES: usize = 11;

/// Why a response body could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// The chunked framing is broken.
    Chunked(&'static str),
    /// The FLV stream is broken.
    Flv(String),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Chunked(what) => write!(f, "bad chunked body: {what}"),
            Self::Flv(what) => write!(f, "bad FLV stream: {what}"),
        }
    }
}

/// The parts of a response head a viewer needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResponseHead {
    pub(crate) status: u16,
    /// `Transfer-Encoding: chunked`.
    pub(crate) chunked: bool,
    /// Bytes of the head, blank line included.
    pub(crate) head_bytes: usize,
}

/// Parses the response head at the start of `buf`; `Ok(None)` until the
/// blank line has arrived.
pub(crate) fn parse_response_head(buf: &[u8]) -> Result<Option<ResponseHead>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() >= MAX_HEAD_BYTES {
            return Err(format!(
                "no end of the response head in {MAX_HEAD_BYTES} bytes"
            ));
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(buf.get(..end).unwrap_or_default())
        .map_err(|_| "the response head is not UTF-8".to_owned())?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut words = status_line.splitn(3, ' ');
    let (version, code) = (words.next(), words.next());
    let status = match (version, code) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") && code.len() == 3 => code.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let chunked = lines.any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("transfer-encoding")
                && value.to_ascii_lowercase().contains("chunked")
        })
    });
    Ok(Some(ResponseHead {
        status,
        chunked,
        head_bytes: end + 4,
    }))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Hex digits of the chunk size.
    Size,
    /// After the size, up to the end of the line.
    Extension,
    /// CR seen, LF expected, ending the size line.
    SizeLf,
    /// Chunk data still to come.
    Data(u64),
    DataCr,
    DataLf,
    /// After the last chunk: trailer lines, ended by an empty one.
    Trailer,
    /// The body is over.
    Done,
}

/// Streaming decoder of an HTTP/1.1 chunked body: hands on the data of
/// every chunk as borrowed slices of the input.
#[derive(Debug)]
pub(crate) struct Dechunker {
    state: ChunkState,
    size: u64,
    digits: u32,
    /// Bytes of the current extension or trailer line.
    line_bytes: usize,
}

impl Dechunker {
    pub(crate) fn new() -> Self {
        Self {
            state: ChunkState::Size,
            size: 0,
            digits: 0,
            line_bytes: 0,
        }
    }

    /// Whether the last chunk and the trailer have been read.
    pub(crate) fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Feeds body bytes; `on_data` gets the chunk data in order. Bytes after
    /// the end of the body are ignored.
    pub(crate) fn feed(
        &mut self,
        input: &[u8],
        mut on_data: impl FnMut(&[u8]) -> Result<(), BodyError>,
    ) -> Result<(), BodyError> {
        let mut at = 0;
        while let Some(&byte) = input.get(at) {
            match self.state {
                ChunkState::Data(left) => {
                    let rest = input.get(at..).unwrap_or_default();
                    let take = rest.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    on_data(rest.get(..take).unwrap_or_default())?;
                    at += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataCr
                    } else {
                        ChunkState::Data(left)
                    };
                    continue;
                }
                ChunkState::Size => match byte {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if self.digits == MAX_SIZE_DIGITS {
                            return Err(BodyError::Chunked("chunk size too long"));
                        }
                        let digit = char::from(byte).to_digit(16).unwrap_or(0);
                        self.size = self.size * 16 + u64::from(digit);
                        self.digits += 1;
                    }
                    _ if self.digits == 0 => {
                        return Err(BodyError::Chunked("chunk size expected"));
                    }
                    b'\r' => self.state = ChunkState::SizeLf,
                    b';' | b' ' | b'\t' => {
                        self.state = ChunkState::Extension;
                        self.line_bytes = 0;
                    }
                    _ => return Err(BodyError::Chunked("bad byte in a chunk size")),
                },
                ChunkState::Extension => {
                    if byte == b'\r' {
                        self.state = ChunkState::SizeLf;
                    } else {
                        self.line_bytes += 1;
                        if self.line_bytes > MAX_LINE_BYTES {
                            return Err(BodyError::Chunked("chunk extension too long"));
                        }
                    }
                }
                ChunkState::SizeLf => {
                    if byte != b'\n' {
                        return Err(BodyError::Chunked("CR LF expected after a chunk size"));
                    }
                    self.state = if self.size == 0 {
                        self.line_bytes = 0;
                        ChunkState::Trailer
                    } else {
                        ChunkState::Data(self.size)
                    };
                    self.size = 0;
                    self.digits = 0;
                }
                ChunkState::DataCr => {
                    if byte != b'\r' {
                        return Err(BodyError::Chunked("CR LF expected after chunk data"));
                    }
                    self.state = ChunkState::DataLf;
                }
                ChunkState::DataLf => {
                    if byte != b'\n' {
                        return Err(BodyError::Chunked("CR LF expected after chunk data"));
                    }
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailer => match byte {
                    b'\n' if self.line_bytes <= 1 => self.state = ChunkState::Done,
                    b'\n' => self.line_bytes = 0,
                    _ => {
                        self.line_bytes += 1;
                        if self.line_bytes > MAX_LINE_BYTES {
                            return Err(BodyError::Chunked("trailer line too long"));
                        }
                    }
                },
                ChunkState::Done => return Ok(()),
            }
            at += 1;
        }
        Ok(())
    }
}

/// One tag as the scanner saw it: its head and the first bytes of its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SeenTag<'a> {
    /// 8 audio, 9 video, 18 script.
    pub(crate) tag_type: u8,
    pub(crate) timestamp: u32,
    pub(crate) data_bytes: u32,
    /// The first `min(data_bytes, BODY_PREFIX_BYTES)` bytes of the body.
    pub(crate) prefix: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScanState {
    FileHeader,
    TagHead,
    /// Body bytes still to come.
    Body(u32),
    /// The 4-byte PreviousTagSize after a body.
    PreviousSize,
}

/// Streaming FLV reader that copies at most the first
/// [`BODY_PREFIX_BYTES`] of each tag body.
#[derive(Debug)]
pub(crate) struct FlvScanner {
    state: ScanState,
    /// The file header, a tag head or a PreviousTagSize being gathered.
    head: [u8; FILE_HEADER_BYTES],
    head_bytes: usize,
    tag_type: u8,
    timestamp: u32,
    data_bytes: u32,
    prefix: [u8; BODY_PREFIX_BYTES],
    prefix_bytes: usize,
}

impl FlvScanner {
    pub(crate) fn new() -> Self {
        Self {
            state: ScanState::FileHeader,
            head: [0; FILE_HEADER_BYTES],
            head_bytes: 0,
            tag_type: 0,
            timestamp: 0,
            data_bytes: 0,
            prefix: [0; BODY_PREFIX_BYTES],
            prefix_bytes: 0,
        }
    }

    /// Feeds stream bytes; `on_tag` is called once per tag when its last
    /// body byte has arrived.
    pub(crate) fn feed(
        &mut self,
        mut input: &[u8],
        mut on_tag: impl FnMut(SeenTag<'_>),
    ) -> Result<(), BodyError> {
        while !input.is_empty() {
            match self.state {
                ScanState::Body(left) => {
                    let take = input.len().min(left as usize);
                    let room = BODY_PREFIX_BYTES - self.prefix_bytes;
                    if room > 0 {
                        let keep = room.min(take);
                        if let (Some(to), Some(from)) = (
                            self.prefix
                                .get_mut(self.prefix_bytes..self.prefix_bytes + keep),
                            input.get(..keep),
                        ) {
                            to.copy_from_slice(from);
                        }
                        self.prefix_bytes += keep;
                    }
                    input = input.get(take..).unwrap_or_default();
                    let left = left - take as u32;
                    if left == 0 {
                        self.emit(&mut on_tag);
                    } else {
                        self.state = ScanState::Body(left);
                    }
                }
                ScanState::FileHeader | ScanState::TagHead | ScanState::PreviousSize => {
                    let wanted = match self.state {
                        ScanState::FileHeader => FILE_HEADER_BYTES,
                        ScanState::TagHead => TAG_HEAD_BYTES,
                        _ => 4,
                    };
                    let take = input.len().min(wanted - self.head_bytes);
                    if let (Some(to), Some(from)) = (
                        self.head.get_mut(self.head_bytes..self.head_bytes + take),
                        input.get(..take),
                    ) {
                        to.copy_from_slice(from);
                    }
                    self.head_bytes += take;
                    input = input.get(take..).unwrap_or_default();
                    if self.head_bytes == wanted {
                        self.head_bytes = 0;
                        self.head_done(&mut on_tag)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn head_done(&mut self, on_tag: &mut impl FnMut(SeenTag<'_>)) -> Result<(), BodyError> {
        let h = self.head;
        match self.state {
            ScanState::FileHeader => {
                if &h[..3] != b"FLV" {
                    return Err(BodyError::Flv("no FLV signature".to_owned()));
                }
                let offset = u32::from_be_bytes([h[5], h[6], h[7], h[8]]);
                if offset != 9 {
                    return Err(BodyError::Flv(format!("header size {offset}, 9 expected")));
                }
                self.state = ScanState::TagHead;
            }
            ScanState::TagHead => {
                let tag_type = h[0];
                if !matches!(tag_type, 8 | 9 | 18) {
                    return Err(BodyError::Flv(format!("tag type {tag_type:#04x}")));
                }
                self.tag_type = tag_type;
                self.data_bytes = u32::from_be_bytes([0, h[1], h[2], h[3]]);
                self.timestamp = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
                self.prefix_bytes = 0;
                if self.data_bytes == 0 {
                    self.emit(on_tag);
                } else {
                    self.state = ScanState::Body(self.data_bytes);
                }
            }
            ScanState::PreviousSize => {
                let size = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
                let expected = self.data_bytes + TAG_HEAD_BYTES as u32;
                if size != expected {
                    return Err(BodyError::Flv(format!(
                        "PreviousTagSize {size}, {expected} expected"
                    )));
                }
                self.state = ScanState::TagHead;
            }
            ScanState::Body(_) => {}
        }
        Ok(())
    }

    fn emit(&mut self, on_tag: &mut impl FnMut(SeenTag<'_>)) {
        on_tag(SeenTag {
            tag_type: self.tag_type,
            timestamp: self.timestamp,
            data_bytes: self.data_bytes,
            prefix: self.prefix.get(..self.prefix_bytes).unwrap_or_default(),
        });
        self.state = ScanState::PreviousSize;
    }
}

#[cfg(test)]
mod tests {
    use shoal_protocols::flv::{pack_tag, write_header, TagKind};

    use super::*;

    /// A tag as (type, timestamp, size, prefix).
    type Seen = (u8, u32, u32, Vec<u8>);

    /// The tags seen after feeding `wire` in pieces of `step` bytes.
    fn scan(wire: &[u8], step: usize) -> Result<Vec<Seen>, BodyError> {
        let mut scanner = FlvScanner::new();
        let mut tags = Vec::new();
        for piece in wire.chunks(step) {
            scanner.feed(piece, |t| {
                tags.push((t.tag_type, t.timestamp, t.data_bytes, t.prefix.to_vec()));
            })?;
        }
        Ok(tags)
    }

    fn flv_stream() -> (Vec<u8>, Vec<Vec<u8>>) {
        let bodies: Vec<Vec<u8>> = vec![
            (0..200).map(|i| i as u8).collect(),
            vec![0xAF, 0x01, 3],
            Vec::new(),
            (0..BODY_PREFIX_BYTES as u8).collect(),
        ];
        let mut wire = Vec::new();
        write_header(&mut wire, true, true);
        let kinds = [
            TagKind::Video,
            TagKind::Audio,
            TagKind::Script,
            TagKind::Video,
        ];
        for (i, (kind, body)) in kinds.iter().zip(&bodies).enumerate() {
            // The last timestamp needs the extended byte.
            let ts = if i == 3 { 0x0123_4567 } else { 40 * i as u32 };
            pack_tag(&mut wire, *kind, ts, body).unwrap();
        }
        (wire, bodies)
    }

    #[test]
    fn scanner_keeps_heads_and_prefixes_whatever_the_reads() {
        let (wire, bodies) = flv_stream();
        for step in [1, 2, 5, 11, 13, 24, 64, 4096] {
            let tags = scan(&wire, step).unwrap();
            assert_eq!(tags.len(), 4, "step {step}");
            assert_eq!((tags[0].0, tags[0].1, tags[0].2), (9, 0, 200));
            assert_eq!(tags[0].3, bodies[0][..BODY_PREFIX_BYTES]);
            assert_eq!((tags[1].0, tags[1].1, &tags[1].3), (8, 40, &bodies[1]));
            assert_eq!((tags[2].0, tags[2].2, tags[2].3.len()), (18, 0, 0));
            assert_eq!((tags[3].1, &tags[3].3), (0x0123_4567, &bodies[3]));
        }
    }

    #[test]
    fn scanner_refuses_broken_streams() {
        let (wire, _) = flv_stream();
        let mut bad = wire.clone();
        bad[0] = b'G';
        assert!(scan(&bad, 64).is_err());
        let mut bad = wire.clone();
        bad[13] = 0x07;
        assert!(scan(&bad, 64).is_err());
        // PreviousTagSize of the first tag.
        let mut bad = wire.clone();
        bad[13 + 11 + 200 + 3] ^= 1;
        assert!(scan(&bad, 7).is_err());
        // Truncated input is not an error, only unfinished.
        assert_eq!(scan(&wire[..100], 3).unwrap().len(), 0);
    }

    fn chunked(body: &[u8], sizes: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at = 0;
        for (i, &size) in sizes.iter().cycle().enumerate() {
            if at >= body.len() {
                break;
            }
            let piece = &body[at..body.len().min(at + size)];
            if i % 2 == 0 {
                out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            } else {
                out.extend_from_slice(format!("{:X};ext=1\r\n", piece.len()).as_bytes());
            }
            out.extend_from_slice(piece);
            out.extend_from_slice(b"\r\n");
            at += piece.len();
        }
        out.extend_from_slice(b"0\r\nX-Trailer: yes\r\n\r\n");
        out
    }

    #[test]
    fn dechunker_and_scanner_together() {
        let (wire, _) = flv_stream();
        let body = chunked(&wire, &[1, 300, 17, 4096]);
        for step in [1, 3, 8, 100, 10_000] {
            let mut dechunker = Dechunker::new();
            let mut scanner = FlvScanner::new();
            let mut tags = 0;
            let mut data = Vec::new();
            for piece in body.chunks(step) {
                dechunker
                    .feed(piece, |d| {
                        data.extend_from_slice(d);
                        scanner.feed(d, |_| tags += 1)
                    })
                    .unwrap();
            }
            assert!(dechunker.is_done(), "step {step}");
            assert_eq!(data, wire);
            assert_eq!(tags, 4);
        }
    }

    #[test]
    fn dechunker_refuses_bad_framing() {
        let feed = |bytes: &[u8]| Dechunker::new().feed(bytes, |_| Ok(()));
        assert!(feed(b"zz\r\n").is_err());
        assert!(feed(b"\r\n").is_err());
        assert!(feed(b"3\r\nabcX").is_err());
        assert!(feed(b"3\rX").is_err());
        assert!(feed(b"1000000000000000\r\n").is_err());
        assert!(feed(&[b'1', b';', b'x'].repeat(600)).is_err());
        assert!(feed(b"3\r\nabc\r\n").is_ok());
        // The data callback's error comes through.
        let err = Dechunker::new()
            .feed(b"1\r\na", |_| Err(BodyError::Flv("x".into())))
            .unwrap_err();
        assert_eq!(err, BodyError::Flv("x".into()));
    }

    #[test]
    fn response_heads() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Type: video/x-flv\r\nTransfer-Encoding: chunked\r\n\r\nFLV";
        assert_eq!(
            parse_response_head(ok).unwrap(),
            Some(ResponseHead {
                status: 200,
                chunked: true,
                head_bytes: ok.len() - 3
            })
        );
        let not_found = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
        let head = parse_response_head(not_found).unwrap().unwrap();
        assert_eq!((head.status, head.chunked), (404, false));
        assert_eq!(parse_response_head(b"HTTP/1.1 200 OK\r\n").unwrap(), None);
        assert!(parse_response_head(b"SIP/2.0 200 OK\r\n\r\n").is_err());
        assert!(parse_response_head(b"HTTP/1.1 2000 OK\r\n\r\n").is_err());
        assert!(parse_response_head(&[b'a'; MAX_HEAD_BYTES]).is_err());
    }
}
