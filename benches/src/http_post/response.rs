//! Cutting HTTP/1.1 responses out of a kept-alive connection's byte stream:
//! status, body length (`Content-Length`, or none for 1xx, 204 and 304)
//! and `Connection: close`. Chunked bodies are refused: neither Shoal's
//! device API nor nginx's `return 204` sends them.
//!
//! ```text
//! read buffer: [HTTP/1.1 202 ...\r\n\r\n{"topic":...}][HTTP/1.1 202 ...
//!              └── head_bytes ──────────┴ body_bytes ┘ next response
//! ```

/// Largest response head accepted.
pub(crate) const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Largest response body accepted.
pub(crate) const MAX_BODY_BYTES: usize = 1 << 20;

/// What the reader needs of one response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResponseHead {
    pub(crate) status: u16,
    /// Bytes of the head, blank line included.
    pub(crate) head_bytes: usize,
    /// Bytes of the body that follows the head.
    pub(crate) body_bytes: usize,
    /// `Connection: close`: the server ends the connection after it.
    pub(crate) close: bool,
}

impl ResponseHead {
    /// The head and the body.
    pub(crate) fn total_bytes(&self) -> usize {
        self.head_bytes + self.body_bytes
    }
}

/// Parses the response head at the start of `buf`; `Ok(None)` until its
/// blank line has arrived.
pub(crate) fn parse_response(buf: &[u8]) -> Result<Option<ResponseHead>, String> {
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
    let status: u16 = match (words.next(), words.next()) {
        (Some(version), Some(code)) if version.starts_with("HTTP/1.") && code.len() == 3 => {
            code.parse().ok()
        }
        _ => None,
    }
    .filter(|status| (100..600).contains(status))
    .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut content_length = None;
    let mut close = status_line.starts_with("HTTP/1.0");
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("bad header line {line:?}"));
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            let length: usize = value
                .parse()
                .map_err(|_| format!("bad Content-Length {value:?}"))?;
            if content_length.is_some_and(|known| known != length) {
                return Err("two different Content-Length headers".to_owned());
            }
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(format!(
                "Transfer-Encoding {value:?} is not supported (status {status})"
            ));
        } else if name.eq_ignore_ascii_case("connection") {
            let value = value.to_ascii_lowercase();
            if value.split(',').any(|token| token.trim() == "close") {
                close = true;
            } else if value.split(',').any(|token| token.trim() == "keep-alive") {
                close = false;
            }
        }
    }
    let body_bytes = if status < 200 || status == 204 || status == 304 {
        0
    } else {
        content_length.ok_or_else(|| {
            format!(
                "status {status} without Content-Length (a body up to the close is not supported)"
            )
        })?
    };
    if body_bytes > MAX_BODY_BYTES {
        return Err(format!(
            "a body of {body_bytes} bytes exceeds {MAX_BODY_BYTES}"
        ));
    }
    Ok(Some(ResponseHead {
        status,
        head_bytes: end + 4,
        body_bytes,
        close,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shoal_and_nginx_answers() {
        let shoal =
            b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 26\r\n\r\n{\"topic\":\"devices/d/up\"}..HTTP/1.1";
        let head = parse_response(shoal).unwrap().unwrap();
        assert_eq!(head.status, 202);
        assert_eq!(head.body_bytes, 26);
        assert!(!head.close);
        assert_eq!(&shoal[head.total_bytes()..], b"HTTP/1.1");

        let nginx = b"HTTP/1.1 204 No Content\r\nServer: nginx/1.22.1\r\nDate: Sat, 21 Nov 2026 18:45:44 GMT\r\nConnection: keep-alive\r\n\r\n";
        let head = parse_response(nginx).unwrap().unwrap();
        assert_eq!((head.status, head.body_bytes, head.close), (204, 0, false));
        assert_eq!(head.total_bytes(), nginx.len());

        let closing =
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\nConnection: close\r\n\r\n{}";
        let head = parse_response(closing).unwrap().unwrap();
        assert_eq!((head.status, head.body_bytes, head.close), (503, 2, true));
        let old = b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert!(parse_response(old).unwrap().unwrap().close);
        let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
        assert_eq!(parse_response(interim).unwrap().unwrap().body_bytes, 0);
    }

    #[test]
    fn incomplete_and_broken_heads() {
        assert_eq!(parse_response(b"HTTP/1.1 202 Accepted\r\n").unwrap(), None);
        assert_eq!(parse_response(b"").unwrap(), None);
        for bad in [
            &b"HTTP/1.1 2000 OK\r\n\r\n"[..],
            b"SIP/2.0 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
        ] {
            assert!(
                parse_response(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let endless = vec![b'a'; MAX_HEAD_BYTES];
        assert!(parse_response(&endless).is_err());
    }
}
