//! Parses the input as pipelined HTTP/1.x request heads (the first byte
//! picks the limits), skipping declared bodies, and checks every head as a
//! WebSocket upgrade. A head must take no more than it was given nor more
//! than `max_head_bytes`; its accessors and the upgrade check must not
//! panic; an accepted upgrade must produce a 101 answer with the accept
//! key, a refused one a response with the error's status. Chunked bodies
//! go through `ChunkedDecoder`, which must stay within its input and its
//! limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_protocols::framing::Decoded;
use shoal_protocols::http1::{parse_request_head, Body, ChunkedDecoder, HeadLimits};
use shoal_protocols::websocket::{accept_key, check_upgrade, write_accept};

fuzz_target!(|data: &[u8]| {
    let Some((&setup, stream)) = data.split_first() else {
        return;
    };
    let limits = HeadLimits {
        max_head_bytes: [16usize, 64, 512, 8192][usize::from(setup & 3)],
        max_headers: [0usize, 1, 8, 64, 1000][usize::from(setup >> 2) % 5],
    };
    let mut at = 0;
    while at < stream.len() {
        let rest = &stream[at..];
        let (head, consumed) = match parse_request_head(rest, &limits) {
            Ok(Decoded::Frame { frame, consumed }) => (frame, consumed),
            Ok(Decoded::Incomplete) => {
                assert!(
                    rest.len() <= limits.max_head_bytes,
                    "incomplete past the limit"
                );
                break;
            }
            Err(error) => {
                assert!(matches!(error.status(), 400 | 413 | 431 | 501));
                break;
            }
        };
        assert!(
            consumed > 0 && consumed <= rest.len(),
            "consumed past the input"
        );
        assert!(consumed <= limits.max_head_bytes, "head over the limit");
        assert!(head.headers().count() <= limits.max_headers.min(64));
        assert!(head.version <= 1);
        let _ = (
            head.path_only(),
            head.query(),
            head.keep_alive(),
            head.is_chunked(),
        );
        let body = head.body(1 << 16);
        if let Ok(Some(length)) = head.content_length() {
            assert!(!matches!(body, Ok(Body::Length(other)) if other != length));
        }

        let mut out = Vec::new();
        match check_upgrade(&head) {
            Ok(upgrade) => {
                assert_eq!(upgrade.key.len(), 24);
                let first = upgrade.protocols().next();
                write_accept(&mut out, &upgrade, first);
                assert!(out.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
                let accept = accept_key(upgrade.key);
                assert!(out.windows(accept.len()).any(|w| w == accept.as_bytes()));
            }
            Err(error) => {
                error.write_refusal(&mut out);
                let status = format!("HTTP/1.1 {} ", error.status());
                assert!(out.starts_with(status.as_bytes()));
            }
        }

        let body_len = match body {
            Ok(Body::Length(length)) => length as usize,
            Ok(Body::None) => 0,
            Ok(Body::Chunked) => {
                let limit = 1u64 << (setup % 17);
                let mut decoder = ChunkedDecoder::new(limit);
                let mut data = Vec::new();
                let Some(body) = rest.get(consumed..) else {
                    break;
                };
                match decoder.decode(body, &mut data) {
                    Ok(progress) => {
                        assert!(progress.consumed <= body.len(), "chunked past the input");
                        assert!(data.len() as u64 <= limit, "chunked past the limit");
                        if !progress.done {
                            break;
                        }
                        progress.consumed
                    }
                    Err(error) => {
                        assert!(matches!(error.status(), 400 | 413));
                        break;
                    }
                }
            }
            _ => break,
        };
        at += consumed.saturating_add(body_len);
    }
});
