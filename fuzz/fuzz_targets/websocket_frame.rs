//! Decodes the input as a stream of WebSocket frames, as a server and as a
//! client (the first byte picks the role, the payload limit and the message
//! cap), unmasking each frame in place and feeding it to a `Reassembler`.
//! A frame must take no more than it was given, its payload must end where
//! the frame ends and respect the limit; a message must respect the cap and
//! text must be UTF-8. Every frame is encoded again and must decode to the
//! same head.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_protocols::framing::Decoded;
use shoal_protocols::websocket::{
    decode_frame, encode_frame_head, unmask, Event, Reassembler, Role,
};

fuzz_target!(|data: &[u8]| {
    let Some((&setup, stream)) = data.split_first() else {
        return;
    };
    let role = if setup & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let max_payload =
        [0u64, 1, 125, 126, 65535, 65536, 1 << 20, u64::MAX][usize::from(setup >> 1 & 7)];
    let max_message = [0usize, 16, 1024, 1 << 16][usize::from(setup >> 4 & 3)];

    let mut inbox = stream.to_vec();
    let mut messages = Reassembler::new(max_message);
    let mut at = 0;
    while at < inbox.len() {
        let rest = &mut inbox[at..];
        let (frame, consumed) = match decode_frame(rest, role, max_payload) {
            Ok(Decoded::Frame { frame, consumed }) => (frame, consumed),
            Ok(Decoded::Incomplete) => break,
            Err(error) => {
                assert!(matches!(error.close_code(), 1002 | 1007 | 1009));
                break;
            }
        };
        assert!(
            consumed >= 2 && consumed <= rest.len(),
            "consumed past the input"
        );
        assert!(frame.payload.start <= frame.payload.end);
        assert_eq!(
            frame.payload.end, consumed,
            "payload does not end the frame"
        );
        assert!(
            frame.payload.len() as u64 <= max_payload,
            "payload over the limit"
        );
        assert_eq!(frame.mask.is_some(), role == Role::Server);

        // The same head, encoded again (minimal length), decodes the same.
        let mut again = Vec::new();
        encode_frame_head(
            &mut again,
            frame.fin,
            frame.opcode,
            frame.payload.len() as u64,
            frame.mask,
        );
        let head_len = again.len();
        again.extend_from_slice(&rest[frame.payload.clone()]);
        match decode_frame(&again, role, max_payload) {
            Ok(Decoded::Frame {
                frame: back,
                consumed,
            }) => {
                assert_eq!(consumed, again.len());
                assert_eq!(
                    (back.fin, back.opcode, back.mask),
                    (frame.fin, frame.opcode, frame.mask)
                );
                assert_eq!(back.payload, head_len..again.len());
            }
            other => panic!("re-encoded frame does not decode: {other:?}"),
        }

        let payload = &mut rest[frame.payload.clone()];
        if let Some(mask) = frame.mask {
            unmask(payload, mask);
        }
        match messages.feed(frame.opcode, frame.fin, payload) {
            Ok(Some(Event::Message { text, data })) => {
                assert!(data.len() <= max_message, "message over the cap");
                if text {
                    assert!(core::str::from_utf8(data).is_ok(), "text is not UTF-8");
                }
            }
            Ok(Some(Event::Ping(data) | Event::Pong(data))) => assert!(data.len() <= 125),
            Ok(Some(Event::Close { code, reason })) => {
                assert!(code.is_sendable() || code.0 == 1005);
                assert!(reason.len() <= 123);
            }
            Ok(None) => {}
            Err(error) => {
                assert!(matches!(error.close_code(), 1002 | 1007 | 1009));
                break;
            }
        }
        assert!(messages.buffered_bytes() <= max_message);
        at += consumed;
    }
});
