//! Seeded randomized checks of `http1::ChunkedDecoder`: random bodies cut
//! into random chunks (with extensions and trailers) and fed in random
//! pieces decode to themselves and stop exactly at the body's end; mutated
//! and random bytes never panic, never consume past the input, never give
//! more data than the limit allows, and `BodyTooLarge` names the limit.
//! Fixed seeds, so a failure names the seed that reproduces it.

mod support;

use shoal_protocols::http1::{ChunkedDecoder, HttpError};
use support::{mutate, Rng};

const SEEDS: u64 = 256;

/// `body` in chunked form, chunk sizes and decorations chosen by `rng`.
fn encode(rng: &mut Rng, body: &[u8]) -> Vec<u8> {
    let mut wire = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let n = (rng.range(1, 40) as usize).min(body.len() - at);
        let size = if rng.chance(2) {
            format!("{n:x}")
        } else {
            format!("{n:X}")
        };
        wire.extend_from_slice(size.as_bytes());
        if rng.chance(4) {
            wire.extend_from_slice(b";name=\"value\"");
        }
        wire.extend_from_slice(b"\r\n");
        wire.extend_from_slice(&body[at..at + n]);
        wire.extend_from_slice(b"\r\n");
        at += n;
    }
    wire.extend_from_slice(b"0\r\n");
    if rng.chance(3) {
        wire.extend_from_slice(b"Expires: never\r\nX-Sum: 1\r\n");
    }
    wire.extend_from_slice(b"\r\n");
    wire
}

/// Feeds `wire` in random pieces; returns the body, the bytes consumed and
/// whether the decoder said done, or the error.
fn feed(rng: &mut Rng, wire: &[u8], limit: u64) -> Result<(Vec<u8>, usize, bool), HttpError> {
    let mut decoder = ChunkedDecoder::new(limit);
    let mut out = Vec::new();
    let mut consumed = 0;
    let mut pending = 0;
    while consumed < wire.len() {
        pending = (pending + rng.range(1, 64) as usize).min(wire.len() - consumed);
        let progress = decoder.decode(&wire[consumed..consumed + pending], &mut out)?;
        assert!(progress.consumed <= pending);
        consumed += progress.consumed;
        pending -= progress.consumed;
        assert!(out.len() as u64 <= limit);
        if progress.done {
            return Ok((out, consumed, true));
        }
        if pending == wire.len() - consumed {
            break;
        }
    }
    Ok((out, consumed, decoder.is_done()))
}

#[test]
fn random_bodies_round_trip_in_random_pieces() {
    for seed in 0..SEEDS {
        let mut rng = Rng(seed);
        let len = rng.below(400);
        let body = rng.bytes(len);
        let mut wire = encode(&mut rng, &body);
        let end = wire.len();
        wire.extend_from_slice(b"GET /next HTTP/1.1\r\n");
        let (got, consumed, done) =
            feed(&mut rng, &wire, 1024).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert!(done, "seed {seed}");
        assert_eq!(got, body, "seed {seed}");
        assert_eq!(consumed, end, "seed {seed}: the next request was eaten");
    }
}

#[test]
fn bodies_over_the_limit_are_refused_with_it() {
    for seed in 0..SEEDS {
        let mut rng = Rng(seed);
        let len = rng.range(2, 400) as usize;
        let body = rng.bytes(len);
        let wire = encode(&mut rng, &body);
        let limit = rng.below(len) as u64;
        match feed(&mut rng, &wire, limit) {
            Err(HttpError::BodyTooLarge {
                limit: l,
                content_length,
            }) => {
                assert_eq!(l, limit, "seed {seed}");
                assert!(content_length > limit, "seed {seed}");
            }
            other => panic!("seed {seed}: {other:?}"),
        }
    }
}

#[test]
fn mutated_and_random_bytes_never_panic_or_overrun() {
    for seed in 0..SEEDS * 4 {
        let mut rng = Rng(seed);
        let mut wire = if rng.chance(4) {
            let len = rng.below(300);
            rng.bytes(len)
        } else {
            let len = rng.below(200);
            let body = rng.bytes(len);
            encode(&mut rng, &body)
        };
        mutate(&mut rng, &mut wire, b"0123456789abcdefABCDEF;\r\n ");
        let limit = rng.range(0, 300);
        match feed(&mut rng, &wire, limit) {
            Ok((body, consumed, _)) => {
                assert!(consumed <= wire.len(), "seed {seed}");
                assert!(body.len() as u64 <= limit, "seed {seed}");
            }
            Err(e) => assert!([400, 413].contains(&e.status()), "seed {seed}: {e}"),
        }
    }
}
