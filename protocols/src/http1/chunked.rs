//! Chunked request bodies (RFC 9112 §7.1), decoded as they arrive.
//!
//! ```text
//! size [; ext] CRLF  data CRLF  ...  0 [; ext] CRLF  [trailer-field CRLF]*  CRLF
//! ```
//!
//! [`ChunkedDecoder::decode`] takes whatever bytes have arrived, appends
//! the chunk data to the caller's buffer, and says how many input bytes it
//! used and whether the body has ended. Bytes after the end (a pipelined
//! request) are left alone. Everything is bounded: the decoded body by the
//! caller's limit, a size line (with its extensions) by
//! [`MAX_SIZE_LINE_BYTES`], the trailer section by [`MAX_TRAILER_BYTES`].
//! Trailer fields are read and dropped.

use super::HttpError;

/// Longest chunk-size line, extensions included, before the CRLF.
pub const MAX_SIZE_LINE_BYTES: usize = 1024;
/// Longest trailer section (every trailer line together).
pub const MAX_TRAILER_BYTES: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In a chunk-size line: `digits` hex digits read so far, then
    /// possibly extensions; `cr` once the CR was seen.
    Size {
        value: u64,
        digits: u8,
        in_extension: bool,
        line: usize,
        cr: bool,
    },
    /// `left` bytes of chunk data to go.
    Data { left: u64 },
    /// The CRLF after chunk data; `cr` once the CR was seen.
    DataEnd { cr: bool },
    /// In the trailer section: `line` bytes of the current line, `cr` once
    /// its CR was seen; `total` bytes of trailer so far.
    Trailer { line: usize, cr: bool, total: usize },
    /// The body has ended.
    Done,
}

/// Decodes one chunked body; make a new one per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkedDecoder {
    state: State,
    max_body_bytes: u64,
    body_bytes: u64,
}

/// What one [`ChunkedDecoder::decode`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkedProgress {
    /// Input bytes used; the rest belongs to the next call (or, once
    /// `done`, to the next request).
    pub consumed: usize,
    /// The body has ended (last chunk and trailer read).
    pub done: bool,
}

fn malformed(why: &'static str) -> HttpError {
    HttpError::Malformed(why)
}

const SIZE_START: State = State::Size {
    value: 0,
    digits: 0,
    in_extension: false,
    line: 0,
    cr: false,
};

impl ChunkedDecoder {
    /// A decoder that refuses bodies over `max_body_bytes` of data.
    pub fn new(max_body_bytes: u64) -> Self {
        Self {
            state: SIZE_START,
            max_body_bytes,
            body_bytes: 0,
        }
    }

    /// Whether the body has ended.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Data bytes decoded so far.
    pub fn body_bytes(&self) -> u64 {
        self.body_bytes
    }

    /// Decodes what it can of `input`, appending chunk data to `out`.
    ///
    /// Errors: [`HttpError::Malformed`] for bad framing and
    /// [`HttpError::BodyTooLarge`] as soon as a chunk would take the body
    /// past the limit (before its data is copied). After an error the
    /// connection cannot be resynchronised.
    pub fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<ChunkedProgress, HttpError> {
        let mut at = 0;
        while at < input.len() {
            match self.state {
                State::Done => break,
                State::Data { left } => {
                    let available = input.len() - at;
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(available);
                    out.extend_from_slice(input.get(at..at + take).unwrap_or_default());
                    at += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataEnd { cr: false }
                    } else {
                        State::Data { left }
                    };
                }
                State::DataEnd { cr } => {
                    let byte = input.get(at).copied().unwrap_or_default();
                    at += 1;
                    self.state = match (cr, byte) {
                        (false, b'\r') => State::DataEnd { cr: true },
                        (true, b'\n') => SIZE_START,
                        _ => return Err(malformed("chunk data not followed by CRLF")),
                    };
                }
                State::Size { .. } => {
                    let byte = input.get(at).copied().unwrap_or_default();
                    at += 1;
                    self.size_byte(byte)?;
                }
                State::Trailer { line, cr, total } => {
                    let byte = input.get(at).copied().unwrap_or_default();
                    at += 1;
                    let total = total + 1;
                    if total > MAX_TRAILER_BYTES {
                        return Err(malformed("chunked trailer section too long"));
                    }
                    self.state = match (cr, byte) {
                        (false, b'\r') => State::Trailer {
                            line,
                            cr: true,
                            total,
                        },
                        (true, b'\n') if line == 0 => State::Done,
                        (true, b'\n') => State::Trailer {
                            line: 0,
                            cr: false,
                            total,
                        },
                        (true, _) => return Err(malformed("bare CR in chunked trailer")),
                        (false, b'\n') => return Err(malformed("bare LF in chunked trailer")),
                        (false, _) => State::Trailer {
                            line: line + 1,
                            cr: false,
                            total,
                        },
                    };
                }
            }
        }
        Ok(ChunkedProgress {
            consumed: at,
            done: self.state == State::Done,
        })
    }

    /// One byte of a chunk-size line.
    fn size_byte(&mut self, byte: u8) -> Result<(), HttpError> {
        let State::Size {
            value,
            digits,
            in_extension,
            line,
            cr,
        } = self.state
        else {
            return Ok(());
        };
        if cr {
            if byte != b'\n' {
                return Err(malformed("bare CR in chunk-size line"));
            }
            if digits == 0 {
                return Err(malformed("chunk-size line without a size"));
            }
            if value == 0 {
                self.state = State::Trailer {
                    line: 0,
                    cr: false,
                    total: 0,
                };
                return Ok(());
            }
            let body = self.body_bytes.saturating_add(value);
            if body > self.max_body_bytes {
                return Err(HttpError::BodyTooLarge {
                    content_length: body,
                    limit: self.max_body_bytes,
                });
            }
            self.body_bytes = body;
            self.state = State::Data { left: value };
            return Ok(());
        }
        let line = line + 1;
        if line > MAX_SIZE_LINE_BYTES {
            return Err(malformed("chunk-size line too long"));
        }
        let next = |value, digits, in_extension, cr| State::Size {
            value,
            digits,
            in_extension,
            line,
            cr,
        };
        self.state = match byte {
            b'\r' => next(value, digits, in_extension, true),
            b'\n' => return Err(malformed("bare LF in chunk-size line")),
            _ if in_extension => next(value, digits, true, false),
            b';' | b' ' | b'\t' if digits > 0 => next(value, digits, true, false),
            _ => {
                let digit = (byte as char)
                    .to_digit(16)
                    .ok_or_else(|| malformed("invalid chunk size"))?;
                // 16 hex digits fill a u64; more is not a size anyone sends.
                if digits >= 16 {
                    return Err(malformed("chunk size too large"));
                }
                next((value << 4) | u64::from(digit), digits + 1, false, false)
            }
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(wire: &[u8], limit: u64) -> Result<(Vec<u8>, usize), HttpError> {
        let mut decoder = ChunkedDecoder::new(limit);
        let mut out = Vec::new();
        let progress = decoder.decode(wire, &mut out)?;
        assert!(progress.done, "not done: {:?}", decoder.state);
        Ok((out, progress.consumed))
    }

    #[test]
    fn a_body_with_extensions_and_a_trailer() {
        let wire = b"4;name=value\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nExpires: never\r\n\r\nGET /next";
        let (body, consumed) = decode_all(wire, 1024).unwrap();
        assert_eq!(body, b"Wikipedia in\r\n\r\nchunks.");
        assert_eq!(&wire[consumed..], b"GET /next");
    }

    #[test]
    fn every_split_of_the_input_gives_the_same_body() {
        let wire = b"3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n";
        for split in 0..=wire.len() {
            let mut decoder = ChunkedDecoder::new(100);
            let mut out = Vec::new();
            let first = decoder.decode(&wire[..split], &mut out).unwrap();
            assert_eq!(first.consumed, split);
            let second = decoder.decode(&wire[split..], &mut out).unwrap();
            assert!(second.done);
            assert_eq!(out, b"abc0123456789abcdef");
            assert_eq!(decoder.body_bytes(), 19);
        }
    }

    #[test]
    fn the_limit_is_checked_before_the_data_is_copied() {
        let mut decoder = ChunkedDecoder::new(10);
        let mut out = Vec::new();
        let err = decoder
            .decode(b"8\r\n12345678\r\n8\r\n", &mut out)
            .unwrap_err();
        assert_eq!(
            err,
            HttpError::BodyTooLarge {
                content_length: 16,
                limit: 10
            }
        );
        assert_eq!(err.status(), 413);
        assert_eq!(out, b"12345678");
    }

    #[test]
    fn bad_framing_is_refused() {
        for wire in [
            &b"x\r\n"[..],
            b"\r\n",
            b"3\nabc",
            b"3\r\nabcX",
            b"3\r\nabc\rX",
            b"11111111111111111\r\n",
            b"0\r\nbad\rtrailer\r\n\r\n",
            b"0\r\nbad\ntrailer\r\n\r\n",
        ] {
            let mut out = Vec::new();
            let result = ChunkedDecoder::new(u64::MAX).decode(wire, &mut out);
            assert!(
                matches!(result, Err(HttpError::Malformed(_))),
                "{:?}: {result:?}",
                String::from_utf8_lossy(wire)
            );
        }
        let long_line = [b'1'; 1]
            .iter()
            .chain([b';'; MAX_SIZE_LINE_BYTES].iter())
            .copied()
            .collect::<Vec<_>>();
        let mut out = Vec::new();
        assert!(ChunkedDecoder::new(10)
            .decode(&long_line, &mut out)
            .is_err());
        let mut trailer = b"0\r\n".to_vec();
        trailer.extend(std::iter::repeat_n(b'a', MAX_TRAILER_BYTES + 1));
        assert!(ChunkedDecoder::new(10).decode(&trailer, &mut out).is_err());
    }

    #[test]
    fn an_empty_body_and_nothing_after_done() {
        let mut decoder = ChunkedDecoder::new(0);
        let mut out = Vec::new();
        let progress = decoder.decode(b"0\r\n\r\n0\r\n\r\n", &mut out).unwrap();
        assert_eq!(
            progress,
            ChunkedProgress {
                consumed: 5,
                done: true
            }
        );
        assert!(decoder.is_done());
        assert!(out.is_empty());
        assert_eq!(decoder.decode(b"more", &mut out).unwrap().consumed, 0);
    }
}
