//! HTTP/1.1 responses as a client reads them, sans-IO: the status, whether
//! the connection may carry another request, and the body read and
//! discarded.
//!
//! ```text
//! caller's buffer ──advance(buf)──▶ ResponseReader ──▶ consumed, Some(ResponseEnd) once done
//!   Head ──head parsed──▶ Length{left} | Chunked | (no body) ──▶ Done
//!   1xx interim heads are skipped; a body delimited by the close ends at once
//!   (the caller closes), as does anything unparseable after the status.
//! ```
//!
//! The caller reads into a buffer and calls [`ResponseReader::advance`]
//! with everything it holds, then drops the `consumed` bytes from its
//! front. While the head is incomplete nothing is consumed (the head must
//! be whole to parse); the head is bounded by [`HeadLimits`], the body by
//! the `max_body_bytes` given to [`ResponseReader::new`]. A response that
//! cannot be framed after its status line (bad `Content-Length`, unknown
//! transfer coding, a body over the limit, no length at all) still gives
//! its status, with `reusable: false`: the caller closes the connection
//! instead of reading on.

use super::chunked::ChunkedDecoder;
use super::{
    head_progress, list_elements, parse_decimal, Decoded, HeadLimits, HttpError, MAX_HEADERS,
};

/// The head of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// The minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// The server keeps the connection open: HTTP/1.1 without
    /// `Connection: close`, or HTTP/1.0 with `Connection: keep-alive`.
    pub keep_alive: bool,
    /// How the body is delimited.
    pub body: ResponseBody,
}

/// How a response body is delimited (RFC 9112 §6.3, for a POST).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseBody {
    /// No body: 1xx, 204, 304, or `Content-Length: 0`.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked.
    Chunked,
    /// Until the server closes the connection.
    UntilClose,
    /// Framing the client cannot follow (both `Transfer-Encoding` and
    /// `Content-Length`, bad or conflicting lengths, a coding other than a
    /// lone `chunked`).
    Unframed,
}

/// Parses the response head at the start of `buf`.
///
/// `Ok(Frame { frame, consumed })` with the head's length; `Ok(Incomplete)`
/// while the head has not ended within `limits.max_head_bytes`; past that,
/// [`HttpError::HeadTooLarge`].
pub fn parse_response_head(
    buf: &[u8],
    limits: &HeadLimits,
) -> Result<Decoded<ResponseHead>, HttpError> {
    let max_headers = limits.max_headers.min(MAX_HEADERS);
    let window = buf.get(..limits.max_head_bytes).unwrap_or(buf);
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let slots = storage.get_mut(..max_headers).unwrap_or(&mut []);
    let mut response = httparse::Response::new(slots);
    let Some(consumed) = head_progress(response.parse(window), buf.len(), limits, max_headers)?
    else {
        return Ok(Decoded::Incomplete);
    };
    let (Some(status), Some(version)) = (response.code, response.version) else {
        return Err(HttpError::Malformed("incomplete status line"));
    };
    let headers = &*response.headers;
    let values = |name: &'static str| {
        headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let has_token = |name: &'static str, token: &[u8]| {
        values(name)
            .flat_map(list_elements)
            .any(|e| e.eq_ignore_ascii_case(token))
    };
    let keep_alive = !has_token("connection", b"close")
        && (version >= 1 || has_token("connection", b"keep-alive"));
    let body = if (100..200).contains(&status) || status == 204 || status == 304 {
        ResponseBody::None
    } else if values("transfer-encoding").next().is_some() {
        let mut codings = values("transfer-encoding").flat_map(list_elements);
        let only_chunked = codings
            .next()
            .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
            && codings.next().is_none();
        if only_chunked && values("content-length").next().is_none() {
            ResponseBody::Chunked
        } else {
            ResponseBody::Unframed
        }
    } else {
        let mut length: Option<u64> = None;
        let mut bad = false;
        for element in values("content-length").flat_map(|v| v.split(|&b| b == b',')) {
            match (parse_decimal(super::trim_ows(element)), length) {
                (Some(n), None) => length = Some(n),
                (Some(n), Some(seen)) if n == seen => {}
                _ => bad = true,
            }
        }
        match (bad, length) {
            (true, _) => ResponseBody::Unframed,
            (false, Some(0)) => ResponseBody::None,
            (false, Some(n)) => ResponseBody::Length(n),
            (false, None) => ResponseBody::UntilClose,
        }
    };
    Ok(Decoded::Frame {
        frame: ResponseHead {
            status,
            version,
            keep_alive,
            body,
        },
        consumed,
    })
}

/// How a response ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseEnd {
    /// The final status (interim 1xx heads are skipped).
    pub status: u16,
    /// The response was read whole and the server keeps the connection:
    /// it may carry the next request. Otherwise the caller closes it.
    pub reusable: bool,
}

/// What one [`ResponseReader::advance`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseProgress {
    /// Bytes used from the front of the input.
    pub consumed: usize,
    /// The response has ended.
    pub end: Option<ResponseEnd>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ReaderState {
    Head,
    Length {
        status: u16,
        keep: bool,
        left: u64,
    },
    Chunked {
        status: u16,
        keep: bool,
        decoder: ChunkedDecoder,
    },
    Done(ResponseEnd),
}

/// Reads one response to a request and discards its body; make one per
/// request.
#[derive(Debug, Clone)]
pub struct ResponseReader {
    state: ReaderState,
    limits: HeadLimits,
    max_body_bytes: u64,
    /// Where chunk data lands before it is dropped (at most one input's
    /// worth).
    scratch: Vec<u8>,
}

impl ResponseReader {
    /// A reader whose heads are bounded by `limits` and whose body may be at
    /// most `max_body_bytes`.
    pub fn new(limits: HeadLimits, max_body_bytes: u64) -> Self {
        Self {
            state: ReaderState::Head,
            limits,
            max_body_bytes,
            scratch: Vec::new(),
        }
    }

    /// The final status, once its head was read.
    pub fn status(&self) -> Option<u16> {
        match &self.state {
            ReaderState::Head => None,
            ReaderState::Length { status, .. } | ReaderState::Chunked { status, .. } => {
                Some(*status)
            }
            ReaderState::Done(end) => Some(end.status),
        }
    }

    /// Reads what it can of `input` (everything the caller holds that it
    /// has not consumed yet). Errors only for a head that cannot be parsed;
    /// once the status is known, trouble ends the response with
    /// `reusable: false` instead.
    pub fn advance(&mut self, input: &[u8]) -> Result<ResponseProgress, HttpError> {
        let mut at = 0;
        loop {
            let rest = input.get(at..).unwrap_or_default();
            match &mut self.state {
                ReaderState::Done(end) => {
                    return Ok(ResponseProgress {
                        consumed: at,
                        end: Some(*end),
                    })
                }
                ReaderState::Head => match parse_response_head(rest, &self.limits)? {
                    Decoded::Incomplete => {
                        return Ok(ResponseProgress {
                            consumed: at,
                            end: None,
                        })
                    }
                    Decoded::Frame { frame, consumed } => {
                        at += consumed;
                        self.state = self.after_head(&frame);
                    }
                },
                ReaderState::Length { status, keep, left } => {
                    if rest.is_empty() {
                        return Ok(ResponseProgress {
                            consumed: at,
                            end: None,
                        });
                    }
                    let take = usize::try_from(*left).unwrap_or(usize::MAX).min(rest.len());
                    at += take;
                    *left -= take as u64;
                    if *left == 0 {
                        self.state = ReaderState::Done(ResponseEnd {
                            status: *status,
                            reusable: *keep,
                        });
                    }
                }
                ReaderState::Chunked {
                    status,
                    keep,
                    decoder,
                } => {
                    if rest.is_empty() {
                        return Ok(ResponseProgress {
                            consumed: at,
                            end: None,
                        });
                    }
                    self.scratch.clear();
                    match decoder.decode(rest, &mut self.scratch) {
                        Ok(progress) => {
                            at += progress.consumed;
                            if progress.done {
                                self.state = ReaderState::Done(ResponseEnd {
                                    status: *status,
                                    reusable: *keep,
                                });
                            } else if progress.consumed == 0 {
                                return Ok(ResponseProgress {
                                    consumed: at,
                                    end: None,
                                });
                            }
                        }
                        Err(_) => {
                            self.state = ReaderState::Done(ResponseEnd {
                                status: *status,
                                reusable: false,
                            });
                        }
                    }
                    self.scratch.clear();
                }
            }
        }
    }

    /// The state after a head: 1xx heads are skipped (another head
    /// follows), except 101, which ends the response unusable.
    fn after_head(&self, head: &ResponseHead) -> ReaderState {
        let status = head.status;
        let keep = head.keep_alive;
        let done = |reusable| ReaderState::Done(ResponseEnd { status, reusable });
        if (100..200).contains(&status) {
            return if status == 101 {
                done(false)
            } else {
                ReaderState::Head
            };
        }
        match head.body {
            ResponseBody::None => done(keep),
            ResponseBody::Length(n) if n <= self.max_body_bytes => ReaderState::Length {
                status,
                keep,
                left: n,
            },
            ResponseBody::Chunked => ReaderState::Chunked {
                status,
                keep,
                decoder: ChunkedDecoder::new(self.max_body_bytes),
            },
            ResponseBody::Length(_) | ResponseBody::UntilClose | ResponseBody::Unframed => {
                done(false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_whole(wire: &[u8], step: usize) -> (Result<ResponseEnd, HttpError>, usize) {
        let mut reader = ResponseReader::new(HeadLimits::default(), 1024);
        let mut held: Vec<u8> = Vec::new();
        let mut used = 0;
        for piece in wire.chunks(step.max(1)) {
            held.extend_from_slice(piece);
            match reader.advance(&held) {
                Err(e) => return (Err(e), used),
                Ok(p) => {
                    assert!(p.consumed <= held.len());
                    used += p.consumed;
                    held.drain(..p.consumed);
                    if let Some(end) = p.end {
                        return (Ok(end), used);
                    }
                }
            }
        }
        (Err(HttpError::Malformed("ran out of input")), used)
    }

    fn end(status: u16, reusable: bool) -> ResponseEnd {
        ResponseEnd { status, reusable }
    }

    #[test]
    fn content_length_bodies_are_read_whole_at_any_split() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        for step in 1..=wire.len() {
            assert_eq!(read_whole(wire, step), (Ok(end(200, true)), wire.len()));
        }
        let close = b"HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno";
        assert_eq!(read_whole(close, 7).0, Ok(end(503, false)));
        let old = b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(read_whole(old, 100).0, Ok(end(200, false)));
        let old_keep = b"HTTP/1.0 204 No\r\nConnection: keep-alive\r\n\r\n";
        assert_eq!(read_whole(old_keep, 100).0, Ok(end(204, true)));
    }

    #[test]
    fn chunked_bodies_and_trailers_are_discarded_at_any_split() {
        let wire = b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n\
                     3\r\nabc\r\n10;x=y\r\n0123456789abcdef\r\n0\r\nX-T: 1\r\n\r\n";
        for step in 1..=wire.len() {
            assert_eq!(read_whole(wire, step), (Ok(end(202, true)), wire.len()));
        }
        // A chunk past the body limit ends the response unusable.
        let big = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFF\r\n";
        assert_eq!(read_whole(big, 100).0, Ok(end(200, false)));
        let bad = b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert_eq!(read_whole(bad, 100).0, Ok(end(500, false)));
    }

    #[test]
    fn interim_heads_are_skipped_and_bodiless_statuses_have_no_body() {
        let wire = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        for step in 1..=wire.len() {
            assert_eq!(read_whole(wire, step), (Ok(end(204, true)), wire.len()));
        }
        let switching = b"HTTP/1.1 101 Switching\r\nUpgrade: x\r\n\r\n";
        assert_eq!(read_whole(switching, 100).0, Ok(end(101, false)));
        let not_modified = b"HTTP/1.1 304 NM\r\nContent-Length: 10\r\n\r\n";
        assert_eq!(read_whole(not_modified, 100).0, Ok(end(304, true)));
    }

    #[test]
    fn unframed_or_oversized_bodies_end_at_once_unusable() {
        for wire in [
            &b"HTTP/1.1 200 OK\r\n\r\nbody until close"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 4096\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 4, 5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        ] {
            assert_eq!(read_whole(wire, 100).0, Ok(end(200, false)), "{wire:?}");
        }
        let same = b"HTTP/1.1 400 Bad\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nno";
        assert_eq!(read_whole(same, 100).0, Ok(end(400, true)));
    }

    #[test]
    fn heads_are_bounded_and_garbage_is_an_error() {
        let limits = HeadLimits {
            max_head_bytes: 32,
            max_headers: 4,
        };
        let mut reader = ResponseReader::new(limits, 10);
        let long = b"HTTP/1.1 200 OK\r\nX-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        assert_eq!(
            reader.advance(long),
            Err(HttpError::HeadTooLarge { limit: 32 })
        );
        let mut reader = ResponseReader::new(HeadLimits::default(), 10);
        assert!(matches!(
            reader.advance(b"SSH-2.0-OpenSSH\r\n\r\n"),
            Err(HttpError::Malformed(_))
        ));
        let mut reader = ResponseReader::new(HeadLimits::default(), 10);
        assert_eq!(reader.status(), None);
        let p = reader.advance(b"HTTP/1.1 2").unwrap();
        assert_eq!((p.consumed, p.end), (0, None));
        let p = reader
            .advance(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nab")
            .unwrap();
        assert_eq!((p.consumed, p.end, reader.status()), (40, None, Some(200)));
    }

    #[test]
    fn mutated_responses_never_panic() {
        let seeds: [&[u8]; 3] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 500 E\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            b"HTTP/1.0 204 No\r\nConnection: keep-alive, close\r\n\r\n",
        ];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..3000 {
            let mut bytes = seeds[round % seeds.len()].to_vec();
            for _ in 0..(next() % 4) {
                let at = (next() as usize) % bytes.len();
                bytes[at] = next() as u8;
            }
            bytes.truncate((next() as usize) % (bytes.len() + 1));
            let step = 1 + (next() as usize) % 9;
            let (_, used) = read_whole(&bytes, step);
            assert!(used <= bytes.len());
        }
    }
}
