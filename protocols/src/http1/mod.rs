//! HTTP/1.1 request heads, sans-IO (and, in [`ResponseReader`], the
//! responses a client reads).
//!
//! The base of Shoal's HTTP listener (device API, `/metrics`, HTTP-FLV,
//! WebSocket upgrades). [`parse_request_head`] looks at the start of the
//! caller's buffer and answers either [`Decoded::Incomplete`] or a
//! [`RequestHead`] borrowing the buffer plus the head's length (`consumed`,
//! the body is not included): the caller keeps reading until the head is
//! complete, then handles the body (if any, see [`RequestHead::body`]) and
//! starts over after it — pipelined requests are just the next call.
//!
//! Limits ([`HeadLimits`]) are enforced before anything is buffered past
//! them: a head that has not ended within `max_head_bytes` is refused with
//! [`HttpError::HeadTooLarge`] as soon as the buffer holds more than that,
//! and a head with more than `max_headers` header lines with
//! [`HttpError::TooManyHeaders`]. Each error names the status to answer with
//! ([`HttpError::status`]); [`write_response_head`] writes it.
//!
//! ```
//! use shoal_protocols::framing::Decoded;
//! use shoal_protocols::http1::{parse_request_head, write_response_head, HeadLimits};
//!
//! let wire = b"GET /metrics?core=1 HTTP/1.1\r\nHost: shoal\r\n\r\nGET / HTTP/1.1\r\n";
//! let Decoded::Frame { frame: head, consumed } =
//!     parse_request_head(wire, &HeadLimits::default()).unwrap()
//! else {
//!     unreachable!()
//! };
//! assert_eq!((head.method, head.path_only(), head.query()), ("GET", "/metrics", Some("core=1")));
//! assert_eq!(head.header("host"), Some(&b"shoal"[..]));
//! assert!(head.keep_alive());
//! // The second, pipelined head has not fully arrived yet.
//! let rest = &wire[consumed..];
//! assert_eq!(parse_request_head(rest, &HeadLimits::default()), Ok(Decoded::Incomplete));
//!
//! let mut out = Vec::new();
//! write_response_head(&mut out, 200, "OK", &[("Content-Type", "text/plain")], Some(2));
//! out.extend_from_slice(b"ok");
//! assert!(out.starts_with(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n"));
//! ```

pub use crate::framing::Decoded;

mod chunked;
pub use chunked::{ChunkedDecoder, ChunkedProgress, MAX_SIZE_LINE_BYTES, MAX_TRAILER_BYTES};

mod response;
pub use response::{
    parse_response_head, ResponseBody, ResponseEnd, ResponseHead, ResponseProgress, ResponseReader,
};

#[cfg(test)]
mod tests;

/// Most header lines a head may carry, whatever [`HeadLimits::max_headers`]
/// says: the parser's header array lives on the stack.
pub const MAX_HEADERS: usize = 64;

/// Limits on a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Most bytes of a head: request line, header lines and the blank line
    /// (default 8 KiB).
    pub max_head_bytes: usize,
    /// Most header lines (default and ceiling: [`MAX_HEADERS`], 64).
    pub max_headers: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        Self {
            max_head_bytes: 8 * 1024,
            max_headers: MAX_HEADERS,
        }
    }
}

/// Why a request head, or the framing of its body, was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HttpError {
    /// The head is not valid HTTP/1.x (the parser's reason).
    #[error("malformed request head: {0}")]
    Malformed(&'static str),
    /// The head did not end within `max_head_bytes`.
    #[error("request head exceeds the limit of {limit} bytes")]
    HeadTooLarge {
        /// The limit in force (`max_head_bytes`).
        limit: usize,
    },
    /// The head has more header lines than `max_headers`.
    #[error("request head has more than {limit} header lines")]
    TooManyHeaders {
        /// The limit in force (`max_headers`, at most [`MAX_HEADERS`]).
        limit: usize,
    },
    /// `Content-Length` is not a decimal number, or its values disagree.
    #[error("invalid or conflicting Content-Length")]
    BadContentLength,
    /// Both `Transfer-Encoding` and `Content-Length` are present (a request
    /// smuggling vector; refused rather than guessed).
    #[error("request carries both Transfer-Encoding and Content-Length")]
    LengthAndTransferEncoding,
    /// `Transfer-Encoding` does not end with `chunked`, or names a coding this
    /// server does not implement.
    #[error("unsupported Transfer-Encoding")]
    UnsupportedTransferEncoding,
    /// The declared body is larger than the caller's limit.
    #[error("request body of {content_length} bytes exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The declared `Content-Length`.
        content_length: u64,
        /// The caller's limit.
        limit: u64,
    },
}

impl HttpError {
    /// The response status that answers this error: 400 for malformed
    /// requests, 431 for oversized heads, 413 for oversized bodies, 501 for
    /// transfer codings this server does not implement.
    pub fn status(&self) -> u16 {
        match self {
            Self::Malformed(_) | Self::BadContentLength | Self::LengthAndTransferEncoding => 400,
            Self::HeadTooLarge { .. } | Self::TooManyHeaders { .. } => 431,
            Self::BodyTooLarge { .. } => 413,
            Self::UnsupportedTransferEncoding => 501,
        }
    }
}

/// A parsed request head, borrowing the buffer it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead<'b> {
    /// The method, e.g. `GET` (case-sensitive, as sent).
    pub method: &'b str,
    /// The request target as sent, query included (see
    /// [`path_only`](Self::path_only) and [`query`](Self::query)).
    pub path: &'b str,
    /// The minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    headers: Vec<(&'b str, &'b [u8])>,
}

/// How the body of a request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// No body (no `Content-Length`, no `Transfer-Encoding`, or a length of 0).
    None,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// A chunked body follows the head.
    Chunked,
}

/// What httparse said of a head, with the limits applied: the head's
/// length once it is complete, `None` while it may still end within
/// `limits.max_head_bytes` (of which `buf_len` bytes are there).
pub(crate) fn head_progress(
    parsed: Result<httparse::Status<usize>, httparse::Error>,
    buf_len: usize,
    limits: &HeadLimits,
    max_headers: usize,
) -> Result<Option<usize>, HttpError> {
    match parsed {
        Ok(httparse::Status::Complete(consumed)) => Ok(Some(consumed)),
        Ok(httparse::Status::Partial) if buf_len > limits.max_head_bytes => {
            Err(HttpError::HeadTooLarge {
                limit: limits.max_head_bytes,
            })
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            Err(HttpError::TooManyHeaders { limit: max_headers })
        }
        Err(error) => Err(HttpError::Malformed(describe(error))),
    }
}

/// Parses the request head at the start of `buf`.
///
/// `Ok(Frame { frame, consumed })`: `consumed` is the head's length (empty
/// lines before the request line included, the body not). `Ok(Incomplete)`
/// while the head has not ended and `buf` holds no more than
/// `limits.max_head_bytes`; past that, [`HttpError::HeadTooLarge`]. A head
/// with more than `limits.max_headers` header lines (capped at
/// [`MAX_HEADERS`]) is [`HttpError::TooManyHeaders`], even before it ends.
pub fn parse_request_head<'b>(
    buf: &'b [u8],
    limits: &HeadLimits,
) -> Result<Decoded<RequestHead<'b>>, HttpError> {
    let max_headers = limits.max_headers.min(MAX_HEADERS);
    let window = buf.get(..limits.max_head_bytes).unwrap_or(buf);
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let slots = storage.get_mut(..max_headers).unwrap_or(&mut []);
    let mut request = httparse::Request::new(slots);
    let Some(consumed) = head_progress(request.parse(window), buf.len(), limits, max_headers)?
    else {
        return Ok(Decoded::Incomplete);
    };
    let (Some(method), Some(path), Some(version)) = (request.method, request.path, request.version)
    else {
        return Err(HttpError::Malformed("incomplete request line"));
    };
    let headers = request
        .headers
        .iter()
        .map(|header| (header.name, header.value))
        .collect();
    Ok(Decoded::Frame {
        frame: RequestHead {
            method,
            path,
            version,
            headers,
        },
        consumed,
    })
}

fn describe(error: httparse::Error) -> &'static str {
    match error {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid new line",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "invalid HTTP version",
    }
}

/// Optional whitespace around list elements and values.
pub(crate) fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

/// The non-empty elements of a comma-separated header value, trimmed.
pub(crate) fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|element| !element.is_empty())
}

impl<'b> RequestHead<'b> {
    /// All header lines in order, as (name, value); names as sent.
    pub fn headers(&self) -> impl Iterator<Item = (&'b str, &'b [u8])> + '_ {
        self.headers.iter().copied()
    }

    /// The value of the first header line called `name` (ASCII
    /// case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        self.header_values(name).next()
    }

    /// The values of every header line called `name` (ASCII
    /// case-insensitive), in order.
    pub fn header_values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'b [u8]> + 's {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, value)| value)
    }

    /// Whether the comma-separated lists of the header lines called `name`
    /// hold `token` (both ASCII case-insensitive), e.g.
    /// `has_token("connection", "upgrade")` for `Connection: keep-alive, Upgrade`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.header_values(name)
            .flat_map(list_elements)
            .any(|element| element.eq_ignore_ascii_case(token.as_bytes()))
    }

    /// The path of the request target: everything before the first `?`.
    pub fn path_only(&self) -> &'b str {
        match self.path.split_once('?') {
            Some((path, _)) => path,
            None => self.path,
        }
    }

    /// The query of the request target: everything after the first `?`.
    pub fn query(&self) -> Option<&'b str> {
        self.path.split_once('?').map(|(_, query)| query)
    }

    /// The declared `Content-Length`, if any. Several lines or list elements
    /// are accepted when they all agree; anything but decimal digits, a
    /// value over `u64::MAX`, or disagreeing values are
    /// [`HttpError::BadContentLength`].
    pub fn content_length(&self) -> Result<Option<u64>, HttpError> {
        let mut length = None;
        for value in self.header_values("content-length") {
            let mut elements = value.split(|&b| b == b',').map(trim_ows).peekable();
            if elements.peek().is_none() {
                return Err(HttpError::BadContentLength);
            }
            for element in elements {
                let parsed = parse_decimal(element).ok_or(HttpError::BadContentLength)?;
                match length {
                    Some(seen) if seen != parsed => return Err(HttpError::BadContentLength),
                    _ => length = Some(parsed),
                }
            }
        }
        Ok(length)
    }

    /// Whether the body is chunked: the last transfer coding named by the
    /// `Transfer-Encoding` lines is `chunked`.
    pub fn is_chunked(&self) -> bool {
        self.header_values("transfer-encoding")
            .flat_map(list_elements)
            .last()
            .is_some_and(|coding| coding.eq_ignore_ascii_case(b"chunked"))
    }

    /// Whether the connection stays open after this request: on HTTP/1.1
    /// unless `Connection: close`, on HTTP/1.0 only with
    /// `Connection: keep-alive` (and no `close`).
    pub fn keep_alive(&self) -> bool {
        if self.has_token("connection", "close") {
            return false;
        }
        self.version >= 1 || self.has_token("connection", "keep-alive")
    }

    /// How the body is delimited (RFC 9112 §6.3), checked against the
    /// caller's `max_body_bytes`. `Transfer-Encoding` together with
    /// `Content-Length` is refused, as is any transfer coding but a lone
    /// `chunked` (this server implements no other).
    pub fn body(&self, max_body_bytes: u64) -> Result<Body, HttpError> {
        if self.header("transfer-encoding").is_some() {
            if self.header("content-length").is_some() {
                return Err(HttpError::LengthAndTransferEncoding);
            }
            let mut codings = self
                .header_values("transfer-encoding")
                .flat_map(list_elements);
            let only_chunked = codings
                .next()
                .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
                && codings.next().is_none();
            return if only_chunked {
                Ok(Body::Chunked)
            } else {
                Err(HttpError::UnsupportedTransferEncoding)
            };
        }
        match self.content_length()? {
            None | Some(0) => Ok(Body::None),
            Some(content_length) if content_length > max_body_bytes => {
                Err(HttpError::BodyTooLarge {
                    content_length,
                    limit: max_body_bytes,
                })
            }
            Some(length) => Ok(Body::Length(length)),
        }
    }
}

/// One or more ASCII digits with a value up to `u64::MAX`; `None` otherwise.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |value, &digit| {
        if !digit.is_ascii_digit() {
            return None;
        }
        value.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}

/// Appends `text` with CR and LF replaced by spaces: nothing written through
/// [`write_response_head`] can end a line or the head early.
fn push_line_safe(out: &mut Vec<u8>, text: &str) {
    out.extend(
        text.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
}

/// Appends a response head: `HTTP/1.1 {status} {reason}`, the header lines,
/// `Content-Length` when `content_length` is given, and the blank line.
/// CR and LF inside `reason` and the headers are written as spaces.
pub fn write_response_head(
    out: &mut Vec<u8>,
    status: u16,
    reason: &str,
    headers: &[(&str, &str)],
    content_length: Option<u64>,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status));
    out.push(b' ');
    push_line_safe(out, reason);
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        push_line_safe(out, name);
        out.extend_from_slice(b": ");
        push_line_safe(out, value);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(length) = content_length {
        out.extend_from_slice(b"Content-Length: ");
        push_decimal(out, length);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal without going through `fmt`.
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    for slot in digits.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        start -= 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(start..).unwrap_or(&[]));
}

/// The reason phrase of a common status code; `"Unknown"` for others.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}
