//! Request heads: pipelining, limits, headers, keep-alive, body framing,
//! the response writer.

use super::*;

fn parse(wire: &[u8]) -> Result<Decoded<RequestHead<'_>>, HttpError> {
    parse_request_head(wire, &HeadLimits::default())
}

/// Parses a whole head; returns it and its length.
fn parse_whole(wire: &[u8]) -> (RequestHead<'_>, usize) {
    match parse(wire).unwrap() {
        Decoded::Frame { frame, consumed } => (frame, consumed),
        Decoded::Incomplete => panic!("incomplete: {:?}", String::from_utf8_lossy(wire)),
    }
}

const SIMPLE: &[u8] =
    b"GET /index.html?x=1&y=2 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n";

#[test]
fn simple_head() {
    let (head, consumed) = parse_whole(SIMPLE);
    assert_eq!(consumed, SIMPLE.len());
    assert_eq!(head.method, "GET");
    assert_eq!(head.path, "/index.html?x=1&y=2");
    assert_eq!(head.path_only(), "/index.html");
    assert_eq!(head.query(), Some("x=1&y=2"));
    assert_eq!(head.version, 1);
    assert_eq!(head.headers().count(), 2);
    assert_eq!(head.header("Host"), Some(&b"example.com"[..]));
    assert_eq!(head.content_length(), Ok(None));
    assert_eq!(head.body(1024), Ok(Body::None));
    assert!(!head.is_chunked());
}

#[test]
fn path_without_query() {
    let (head, _) = parse_whole(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(head.path_only(), "/");
    assert_eq!(head.query(), None);
    assert_eq!(head.version, 0);
    let (head, _) = parse_whole(b"GET /a? HTTP/1.1\r\n\r\n");
    assert_eq!((head.path_only(), head.query()), ("/a", Some("")));
}

#[test]
fn every_strict_prefix_is_incomplete() {
    for len in 0..SIMPLE.len() {
        assert_eq!(
            parse(&SIMPLE[..len]),
            Ok(Decoded::Incomplete),
            "prefix {len}"
        );
    }
}

#[test]
fn pipelined_heads_with_bodies() {
    let wire = b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n";
    let (first, consumed) = parse_whole(wire);
    assert_eq!(first.path, "/a");
    assert_eq!(first.body(100), Ok(Body::Length(5)));
    let rest = &wire[consumed + 5..];
    let (second, consumed) = parse_whole(rest);
    assert_eq!(second.path, "/b");
    assert_eq!(parse(&rest[consumed..]), Ok(Decoded::Incomplete));
}

#[test]
fn leading_empty_lines_are_skipped_and_consumed() {
    let wire = b"\r\n\r\nGET / HTTP/1.1\r\n\r\n";
    let (head, consumed) = parse_whole(wire);
    assert_eq!(head.path, "/");
    assert_eq!(consumed, wire.len());
}

#[test]
fn case_insensitive_headers_and_multiple_lines() {
    let wire = b"GET / HTTP/1.1\r\nX-Thing: one\r\nx-thing: two\r\nX-THING:three  \r\n\r\n";
    let (head, _) = parse_whole(wire);
    assert_eq!(head.header("x-THING"), Some(&b"one"[..]));
    let all: Vec<_> = head.header_values("X-Thing").collect();
    assert_eq!(all, [&b"one"[..], b"two", b"three"]);
    assert_eq!(head.header("missing"), None);
    // Names as sent.
    assert_eq!(head.headers().map(|(n, _)| n).nth(1), Some("x-thing"));
}

#[test]
fn token_lists() {
    let wire = b"GET / HTTP/1.1\r\nConnection: keep-alive ,\tUpgrade\r\nConnection: ,, foo\r\nUpgrade: WebSocket\r\n\r\n";
    let (head, _) = parse_whole(wire);
    assert!(head.has_token("connection", "upgrade"));
    assert!(head.has_token("CONNECTION", "Keep-Alive"));
    assert!(head.has_token("connection", "foo"));
    assert!(!head.has_token("connection", "close"));
    assert!(!head.has_token("connection", "upgrad"));
    assert!(!head.has_token("connection", ""));
    assert!(head.has_token("upgrade", "websocket"));
    assert!(!head.has_token("missing", "x"));
}

#[test]
fn keep_alive_rules() {
    let cases: &[(&[u8], bool)] = &[
        (b"GET / HTTP/1.1\r\n\r\n", true),
        (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false),
        (b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n", false),
        (
            b"GET / HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n",
            false,
        ),
        (b"GET / HTTP/1.1\r\nConnection: upgrade\r\n\r\n", true),
        (b"GET / HTTP/1.0\r\n\r\n", false),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
        (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
        (
            b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
            false,
        ),
    ];
    for (wire, keep) in cases {
        let (head, _) = parse_whole(wire);
        assert_eq!(
            head.keep_alive(),
            *keep,
            "{:?}",
            String::from_utf8_lossy(wire)
        );
    }
}

fn with_headers(lines: &str) -> Vec<u8> {
    format!("POST /up HTTP/1.1\r\n{lines}\r\n").into_bytes()
}

#[test]
fn content_length_values() {
    let cases: &[(&str, Result<Option<u64>, HttpError>)] = &[
        ("Content-Length: 0\r\n", Ok(Some(0))),
        ("Content-Length: 42\r\n", Ok(Some(42))),
        ("content-length:  007 \r\n", Ok(Some(7))),
        (
            "Content-Length: 18446744073709551615\r\n",
            Ok(Some(u64::MAX)),
        ),
        // Duplicates that agree, on one line or several.
        ("Content-Length: 5, 5\r\n", Ok(Some(5))),
        ("Content-Length: 5\r\nContent-Length: 5\r\n", Ok(Some(5))),
        // Conflicts.
        (
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            Err(HttpError::BadContentLength),
        ),
        ("Content-Length: 5, 6\r\n", Err(HttpError::BadContentLength)),
        // Not a decimal number.
        (
            "Content-Length: 18446744073709551616\r\n",
            Err(HttpError::BadContentLength),
        ),
        ("Content-Length: -1\r\n", Err(HttpError::BadContentLength)),
        ("Content-Length: +1\r\n", Err(HttpError::BadContentLength)),
        ("Content-Length: 0x10\r\n", Err(HttpError::BadContentLength)),
        ("Content-Length: 1 2\r\n", Err(HttpError::BadContentLength)),
        ("Content-Length: \r\n", Err(HttpError::BadContentLength)),
        ("Content-Length: 5,\r\n", Err(HttpError::BadContentLength)),
    ];
    for (lines, expected) in cases {
        let wire = with_headers(lines);
        let (head, _) = parse_whole(&wire);
        assert_eq!(head.content_length(), *expected, "{lines:?}");
    }
}

#[test]
fn body_framing() {
    let cases: &[(&str, Result<Body, HttpError>)] = &[
        ("", Ok(Body::None)),
        ("Content-Length: 0\r\n", Ok(Body::None)),
        ("Content-Length: 100\r\n", Ok(Body::Length(100))),
        (
            "Content-Length: 101\r\n",
            Err(HttpError::BodyTooLarge {
                content_length: 101,
                limit: 100,
            }),
        ),
        ("Content-Length: x\r\n", Err(HttpError::BadContentLength)),
        ("Transfer-Encoding: chunked\r\n", Ok(Body::Chunked)),
        ("Transfer-Encoding: Chunked\r\n", Ok(Body::Chunked)),
        (
            "Transfer-Encoding: gzip, chunked\r\n",
            Err(HttpError::UnsupportedTransferEncoding),
        ),
        (
            "Transfer-Encoding: chunked, gzip\r\n",
            Err(HttpError::UnsupportedTransferEncoding),
        ),
        (
            "Transfer-Encoding: \r\n",
            Err(HttpError::UnsupportedTransferEncoding),
        ),
        (
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
            Err(HttpError::LengthAndTransferEncoding),
        ),
    ];
    for (lines, expected) in cases {
        let wire = with_headers(lines);
        let (head, _) = parse_whole(&wire);
        assert_eq!(head.body(100), *expected, "{lines:?}");
    }
}

#[test]
fn is_chunked_uses_the_last_coding() {
    let (head, _) = parse_whole(
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    assert!(head.is_chunked());
    let (head, _) = parse_whole(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n");
    assert!(!head.is_chunked());
}

#[test]
fn head_size_limit() {
    let limits = HeadLimits {
        max_head_bytes: SIMPLE.len(),
        max_headers: 64,
    };
    // Exactly at the limit: accepted.
    assert!(matches!(
        parse_request_head(SIMPLE, &limits),
        Ok(Decoded::Frame { consumed, .. }) if consumed == SIMPLE.len()
    ));
    // One byte short of the limit the head cannot end in time.
    let tight = HeadLimits {
        max_head_bytes: SIMPLE.len() - 1,
        ..limits
    };
    let too_large = Err(HttpError::HeadTooLarge {
        limit: SIMPLE.len() - 1,
    });
    assert_eq!(parse_request_head(SIMPLE, &tight), too_large);
    // ...but a prefix up to the limit is still only incomplete.
    assert_eq!(
        parse_request_head(&SIMPLE[..SIMPLE.len() - 1], &tight),
        Ok(Decoded::Incomplete)
    );

    // A never-ending header line is refused once the buffer passes 8 KiB.
    let mut endless = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
    endless.resize(8 * 1024, b'a');
    assert_eq!(parse(&endless), Ok(Decoded::Incomplete));
    endless.push(b'a');
    assert_eq!(
        parse(&endless),
        Err(HttpError::HeadTooLarge { limit: 8 * 1024 })
    );
    assert_eq!(HttpError::HeadTooLarge { limit: 1 }.status(), 431);
}

#[test]
fn a_complete_head_followed_by_much_body_is_fine() {
    let mut wire = b"POST / HTTP/1.1\r\nContent-Length: 20000\r\n\r\n".to_vec();
    let head_len = wire.len();
    wire.resize(head_len + 20_000, b'x');
    let (head, consumed) = parse_whole(&wire);
    assert_eq!(consumed, head_len);
    assert_eq!(head.body(u64::MAX), Ok(Body::Length(20_000)));
}

#[test]
fn header_count_limit() {
    let mut lines = String::new();
    for i in 0..5 {
        lines.push_str(&format!("X-{i}: v\r\n"));
    }
    let wire = with_headers(&lines);
    let five = HeadLimits {
        max_head_bytes: 8192,
        max_headers: 5,
    };
    assert!(matches!(
        parse_request_head(&wire, &five),
        Ok(Decoded::Frame { .. })
    ));
    let four = HeadLimits {
        max_headers: 4,
        ..five
    };
    let error = parse_request_head(&wire, &four).unwrap_err();
    assert_eq!(error, HttpError::TooManyHeaders { limit: 4 });
    assert_eq!(error.status(), 431);

    // More than MAX_HEADERS lines, whatever the limit says.
    let mut lines = String::new();
    for i in 0..=MAX_HEADERS {
        lines.push_str(&format!("X-{i}: v\r\n"));
    }
    let wire = with_headers(&lines);
    let generous = HeadLimits {
        max_head_bytes: 1 << 20,
        max_headers: 1000,
    };
    assert_eq!(
        parse_request_head(&wire, &generous),
        Err(HttpError::TooManyHeaders { limit: MAX_HEADERS })
    );
    // Too many headers are refused before the head ends.
    let cut = &wire[..wire.len() - 2];
    assert_eq!(
        parse_request_head(cut, &generous),
        Err(HttpError::TooManyHeaders { limit: MAX_HEADERS })
    );
}

#[test]
fn malformed_heads() {
    let cases: &[&[u8]] = &[
        b"GET / HTTP/2.0\r\n\r\n",
        b"GET / FTP/1.1\r\n\r\n",
        b"GET  / HTTP/1.1\r\n\r\n",
        b"GE(T / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
        b"GET / HTTP/1.1\r\n: empty\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
        b"GET / HTTP/1.1\r\n folded: x\r\n\r\n",
        b"GET / HTTP/1.1\rX\r\n\r\n",
    ];
    for wire in cases {
        match parse(wire) {
            Err(error @ HttpError::Malformed(_)) => assert_eq!(error.status(), 400),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(wire)),
        }
    }
}

#[test]
fn error_statuses() {
    assert_eq!(HttpError::BadContentLength.status(), 400);
    assert_eq!(HttpError::LengthAndTransferEncoding.status(), 400);
    assert_eq!(HttpError::UnsupportedTransferEncoding.status(), 501);
    let too_large = HttpError::BodyTooLarge {
        content_length: 2,
        limit: 1,
    };
    assert_eq!(too_large.status(), 413);
    assert_eq!(
        too_large.to_string(),
        "request body of 2 bytes exceeds the limit of 1 bytes"
    );
}

#[test]
fn response_head() {
    let mut out = b"previous".to_vec();
    write_response_head(
        &mut out,
        404,
        reason_phrase(404),
        &[("Content-Type", "text/plain"), ("X-A", "b")],
        Some(0),
    );
    assert_eq!(
        out,
        b"previousHTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nX-A: b\r\nContent-Length: 0\r\n\r\n"
    );

    let mut out = Vec::new();
    write_response_head(&mut out, 101, "Switching Protocols", &[], None);
    assert_eq!(out, b"HTTP/1.1 101 Switching Protocols\r\n\r\n");

    let mut out = Vec::new();
    write_response_head(&mut out, 200, "OK", &[], Some(u64::MAX));
    assert_eq!(
        out,
        b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\n"
    );
}

#[test]
fn response_head_cannot_be_split() {
    let mut out = Vec::new();
    write_response_head(
        &mut out,
        200,
        "OK\r\nX: y",
        &[("A\r\n", "b\r\n\r\nbody")],
        None,
    );
    assert_eq!(out, b"HTTP/1.1 200 OK  X: y\r\nA  : b    body\r\n\r\n");
    // The result is one well-formed head.
    assert_eq!(out.windows(4).filter(|w| w == b"\r\n\r\n").count(), 1);
}

#[test]
fn reason_phrases() {
    assert_eq!(reason_phrase(200), "OK");
    assert_eq!(reason_phrase(426), "Upgrade Required");
    assert_eq!(reason_phrase(431), "Request Header Fields Too Large");
    assert_eq!(reason_phrase(799), "Unknown");
}

#[test]
fn garbage_never_panics() {
    // Every prefix and single-byte mutation of a head: no panic, consumed
    // within the input.
    let wire =
        b"\r\nPOST /p?q HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc";
    for len in 0..=wire.len() {
        for at in 0..len {
            for flip in [0x01u8, 0x20, 0x80, 0xff] {
                let mut bytes = wire[..len].to_vec();
                bytes[at] ^= flip;
                if let Ok(Decoded::Frame { frame, consumed }) = parse(&bytes) {
                    assert!(consumed <= bytes.len());
                    let _ = (frame.content_length(), frame.keep_alive(), frame.body(10));
                }
            }
        }
    }
}
