//! Feeds the input to a `ResponseReader` in pieces (the first byte picks
//! the limits and the piece size), as a webhook client reads an answer.
//! The reader must consume no more than it holds, never buffer a head past
//! `max_head_bytes`, and, once it has ended a response, keep giving the
//! same end; `parse_response_head` must agree with the reader on the
//! status.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_protocols::framing::Decoded;
use shoal_protocols::http1::{parse_response_head, HeadLimits, ResponseReader};

fuzz_target!(|data: &[u8]| {
    let Some((&setup, stream)) = data.split_first() else {
        return;
    };
    let limits = HeadLimits {
        max_head_bytes: [16usize, 64, 512, 8192][usize::from(setup & 3)],
        max_headers: [0usize, 1, 8, 64][usize::from(setup >> 2) & 3],
    };
    let piece = 1 + usize::from(setup >> 4);
    let head_status = match parse_response_head(stream, &limits) {
        Ok(Decoded::Frame { frame, consumed }) => {
            assert!(consumed <= stream.len().min(limits.max_head_bytes));
            Some(frame.status)
        }
        _ => None,
    };
    let mut reader = ResponseReader::new(limits, 1 << (setup % 20));
    let mut held: Vec<u8> = Vec::new();
    let mut ended = None;
    for chunk in stream.chunks(piece) {
        held.extend_from_slice(chunk);
        match reader.advance(&held) {
            Ok(progress) => {
                assert!(progress.consumed <= held.len(), "consumed past the input");
                held.drain(..progress.consumed);
                if let Some(end) = progress.end {
                    if let Some(before) = ended {
                        assert_eq!(before, end, "a second, different end");
                    }
                    ended = Some(end);
                    assert_eq!(reader.status(), Some(end.status));
                }
                if reader.status().is_none() {
                    assert!(
                        held.len() <= limits.max_head_bytes + piece,
                        "a head buffered past its limit"
                    );
                }
            }
            Err(_) => return,
        }
    }
    if let (Some(end), Some(status)) = (ended, head_status) {
        // The first head is interim (1xx) when the statuses differ.
        assert!(end.status == status || (100..200).contains(&status));
    }
});
