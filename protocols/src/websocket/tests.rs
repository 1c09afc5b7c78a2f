//! RFC 6455 byte vectors, annotated field by field, and every error path.

use super::*;
use crate::http1::{parse_request_head, HeadLimits, RequestHead};

const MAX: u64 = 1 << 20;

/// Decodes `wire` expecting one whole frame; returns it and `consumed`.
fn frame_of(wire: &[u8], role: Role) -> (FrameHead, usize) {
    match decode_frame(wire, role, MAX).unwrap() {
        Decoded::Frame { frame, consumed } => (frame, consumed),
        Decoded::Incomplete => panic!("incomplete: {wire:02x?}"),
    }
}

/// The unmasked payload of a whole frame.
fn payload_of(wire: &[u8], role: Role) -> (FrameHead, Vec<u8>) {
    let (frame, consumed) = frame_of(wire, role);
    assert_eq!(consumed, wire.len());
    let mut payload = wire[frame.payload.clone()].to_vec();
    if let Some(mask) = frame.mask {
        unmask(&mut payload, mask);
    }
    (frame, payload)
}

fn assert_prefixes_incomplete(wire: &[u8], role: Role) {
    for len in 0..wire.len() {
        assert_eq!(
            decode_frame(&wire[..len], role, MAX),
            Ok(Decoded::Incomplete),
            "prefix of {len} bytes of {wire:02x?}"
        );
    }
}

fn decode_err(wire: &[u8], role: Role) -> WsError {
    decode_frame(wire, role, MAX).unwrap_err()
}

// --- RFC 6455 §5.7 examples ------------------------------------------------

#[test]
fn single_frame_unmasked_text() {
    let wire = [
        0x81, // FIN, opcode 1 (text)
        0x05, // unmasked, length 5
        0x48, 0x65, 0x6c, 0x6c, 0x6f, // "Hello"
    ];
    let (frame, payload) = payload_of(&wire, Role::Client);
    assert!(frame.fin);
    assert_eq!(frame.opcode, Opcode::Text);
    assert_eq!(frame.mask, None);
    assert_eq!(frame.payload, 2..7);
    assert_eq!(payload, b"Hello");
    assert_prefixes_incomplete(&wire, Role::Client);
    // A server refuses it: client frames must be masked.
    assert_eq!(decode_err(&wire, Role::Server), WsError::UnmaskedFrame);

    let mut encoded = Vec::new();
    encode_frame(&mut encoded, true, Opcode::Text, b"Hello", None);
    assert_eq!(encoded, wire);
}

#[test]
fn single_frame_masked_text() {
    let wire = [
        0x81, // FIN, text
        0x85, // masked, length 5
        0x37, 0xfa, 0x21, 0x3d, // masking key
        0x7f, 0x9f, 0x4d, 0x51, 0x58, // "Hello" masked
    ];
    let (frame, payload) = payload_of(&wire, Role::Server);
    assert_eq!(frame.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
    assert_eq!(frame.payload, 6..11);
    assert_eq!(payload, b"Hello");
    assert_prefixes_incomplete(&wire, Role::Server);
    assert_eq!(decode_err(&wire, Role::Client), WsError::MaskedFrame);

    let mut encoded = Vec::new();
    encode_frame(
        &mut encoded,
        true,
        Opcode::Text,
        b"Hello",
        Some([0x37, 0xfa, 0x21, 0x3d]),
    );
    assert_eq!(encoded, wire);
}

#[test]
fn fragmented_unmasked_text() {
    let first = [
        0x01, // no FIN, text
        0x03, // length 3
        0x48, 0x65, 0x6c, // "Hel"
    ];
    let second = [
        0x80, // FIN, continuation
        0x02, // length 2
        0x6c, 0x6f, // "lo"
    ];
    let wire = [&first[..], &second[..]].concat();
    let (frame, consumed) = frame_of(&wire, Role::Client);
    assert!(!frame.fin);
    assert_eq!(frame.opcode, Opcode::Text);
    assert_eq!(consumed, first.len());
    let (frame2, consumed2) = frame_of(&wire[consumed..], Role::Client);
    assert!(frame2.fin);
    assert_eq!(frame2.opcode, Opcode::Continuation);
    assert_eq!(consumed2, second.len());

    let mut messages = Reassembler::new(100);
    assert_eq!(messages.feed(Opcode::Text, false, b"Hel"), Ok(None));
    assert!(!messages.is_idle());
    assert_eq!(
        messages.feed(Opcode::Continuation, true, b"lo"),
        Ok(Some(Event::Message {
            text: true,
            data: b"Hello"
        }))
    );
    assert!(messages.is_idle());
}

#[test]
fn ping_and_pong() {
    let ping = [
        0x89, // FIN, ping
        0x05, // unmasked, length 5
        0x48, 0x65, 0x6c, 0x6c, 0x6f, // "Hello"
    ];
    let (frame, payload) = payload_of(&ping, Role::Client);
    assert_eq!(frame.opcode, Opcode::Ping);
    assert_eq!(payload, b"Hello");
    assert_prefixes_incomplete(&ping, Role::Client);

    let pong = [
        0x8a, // FIN, pong
        0x85, // masked, length 5
        0x37, 0xfa, 0x21, 0x3d, // masking key
        0x7f, 0x9f, 0x4d, 0x51, 0x58, // "Hello" masked
    ];
    let (frame, payload) = payload_of(&pong, Role::Server);
    assert_eq!(frame.opcode, Opcode::Pong);
    assert_eq!(payload, b"Hello");
    assert_prefixes_incomplete(&pong, Role::Server);

    let mut encoded = Vec::new();
    encode_frame(&mut encoded, true, Opcode::Ping, b"Hello", None);
    assert_eq!(encoded, ping);
}

#[test]
fn binary_256_bytes_uses_16_bit_length() {
    let payload = vec![0xAB; 256];
    let mut wire = vec![
        0x82, // FIN, binary
        0x7E, // unmasked, 16-bit length follows
        0x01, 0x00, // 256
    ];
    wire.extend_from_slice(&payload);
    let (frame, decoded) = payload_of(&wire, Role::Client);
    assert_eq!(frame.opcode, Opcode::Binary);
    assert_eq!(frame.payload, 4..260);
    assert_eq!(decoded, payload);
    assert_prefixes_incomplete(&wire, Role::Client);

    let mut head = Vec::new();
    encode_frame_head(&mut head, true, Opcode::Binary, 256, None);
    assert_eq!(head, wire[..4]);
}

#[test]
fn binary_64_kib_uses_64_bit_length() {
    let payload = vec![0x5A; 65536];
    let mut wire = vec![
        0x82, // FIN, binary
        0x7F, // unmasked, 64-bit length follows
        0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, // 65536
    ];
    wire.extend_from_slice(&payload);
    let (frame, consumed) = frame_of(&wire, Role::Client);
    assert_eq!(frame.payload, 10..65546);
    assert_eq!(consumed, wire.len());
    // Prefixes around the head and the end only: the full loop is slow.
    for len in (0..20).chain(wire.len() - 5..wire.len()) {
        assert_eq!(
            decode_frame(&wire[..len], Role::Client, MAX),
            Ok(Decoded::Incomplete)
        );
    }

    let mut head = Vec::new();
    encode_frame_head(&mut head, true, Opcode::Binary, 65536, None);
    assert_eq!(head, wire[..10]);
}

#[test]
fn length_encoding_boundaries() {
    // (payload length, head bytes unmasked)
    for (len, head_len) in [
        (0u64, 2),
        (125, 2),
        (126, 4),
        (65535, 4),
        (65536, 10),
        (1 << 40, 10),
    ] {
        let mut head = Vec::new();
        encode_frame_head(&mut head, true, Opcode::Binary, len, None);
        assert_eq!(head.len(), head_len, "length {len}");
        let mut masked = Vec::new();
        encode_frame_head(&mut masked, true, Opcode::Binary, len, Some([1, 2, 3, 4]));
        assert_eq!(masked.len(), head_len + 4);
        assert_eq!(&masked[masked.len() - 4..], [1, 2, 3, 4]);
        // The decoder reads the same length back (the payload need not be there).
        match decode_frame(&masked, Role::Server, u64::MAX >> 1) {
            Ok(Decoded::Incomplete) => assert!(len > 0),
            Ok(Decoded::Frame { frame, .. }) => assert_eq!(frame.payload.len() as u64, len),
            Err(error) => panic!("{error}"),
        }
    }
    let mut head = [0; MAX_FRAME_HEAD_BYTES];
    assert_eq!(
        write_frame_head(
            &mut head,
            false,
            Opcode::Continuation,
            u64::MAX >> 1,
            Some([9; 4])
        ),
        MAX_FRAME_HEAD_BYTES
    );
    assert_eq!(
        head[..10],
        [0x00, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]
    );
}

#[test]
fn non_minimal_lengths_are_accepted() {
    // 5 bytes in a 16-bit length, then in a 64-bit one.
    let wire16 = [0x82, 0x7E, 0x00, 0x05, 1, 2, 3, 4, 5];
    assert_eq!(frame_of(&wire16, Role::Client).0.payload, 4..9);
    let wire64 = [0x82, 0x7F, 0, 0, 0, 0, 0, 0, 0, 0x05, 1, 2, 3, 4, 5];
    assert_eq!(frame_of(&wire64, Role::Client).0.payload, 10..15);
    let empty = [0x82, 0x7F, 0, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(frame_of(&empty, Role::Client).1, 10);
}

#[test]
fn frames_back_to_back() {
    let mut wire = Vec::new();
    encode_frame(&mut wire, true, Opcode::Text, b"one", Some([1, 2, 3, 4]));
    encode_frame(&mut wire, true, Opcode::Ping, b"", Some([5, 6, 7, 8]));
    encode_frame(
        &mut wire,
        true,
        Opcode::Binary,
        &[7; 300],
        Some([9, 9, 9, 9]),
    );
    let mut at = 0;
    let mut seen = Vec::new();
    while let Decoded::Frame { frame, consumed } =
        decode_frame(&wire[at..], Role::Server, MAX).unwrap()
    {
        seen.push((frame.opcode, frame.payload.len()));
        at += consumed;
    }
    assert_eq!(at, wire.len());
    assert_eq!(
        seen,
        [(Opcode::Text, 3), (Opcode::Ping, 0), (Opcode::Binary, 300)]
    );
}

// --- decode errors ----------------------------------------------------------

#[test]
fn reserved_bits_are_refused_at_the_first_byte() {
    for (byte, bits) in [(0xC1, 0x40), (0xA1, 0x20), (0x91, 0x10), (0xF1, 0x70)] {
        let error = decode_err(&[byte], Role::Server);
        assert_eq!(error, WsError::ReservedBits { bits });
        assert_eq!(error.close_code(), 1002);
    }
}

#[test]
fn reserved_opcodes_are_refused() {
    for opcode in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
        let error = decode_err(&[0x80 | opcode, 0x80], Role::Server);
        assert_eq!(error, WsError::UnknownOpcode(opcode));
        assert_eq!(error.close_code(), 1002);
        assert_eq!(Opcode::from_u8(opcode), None);
    }
    for opcode in [
        Opcode::Continuation,
        Opcode::Text,
        Opcode::Binary,
        Opcode::Close,
        Opcode::Ping,
        Opcode::Pong,
    ] {
        assert_eq!(Opcode::from_u8(opcode.as_u8()), Some(opcode));
    }
}

#[test]
fn control_frame_rules() {
    // Ping without FIN.
    let error = decode_err(&[0x09], Role::Server);
    assert_eq!(error, WsError::FragmentedControl);
    assert_eq!(error.close_code(), 1002);
    // Close of 126 bytes (16-bit length form), refused before the length bytes.
    let error = decode_err(&[0x88, 0xFE], Role::Server);
    assert_eq!(error, WsError::ControlTooLong { len: 126 });
    assert_eq!(error.close_code(), 1002);
    assert_eq!(
        decode_err(&[0x8A, 0xFF], Role::Server),
        WsError::ControlTooLong { len: 127 }
    );
    // 125 bytes is fine.
    let mut wire = Vec::new();
    encode_frame(&mut wire, true, Opcode::Pong, &[0; 125], Some([1; 4]));
    assert_eq!(frame_of(&wire, Role::Server).0.payload.len(), 125);
}

#[test]
fn length_with_top_bit_is_refused() {
    let wire = [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0];
    let error = decode_frame(&wire, Role::Server, u64::MAX).unwrap_err();
    assert_eq!(error, WsError::LengthOverflow);
    assert_eq!(error.close_code(), 1002);
    // Not before the length is there.
    assert_eq!(
        decode_frame(&wire[..9], Role::Server, u64::MAX),
        Ok(Decoded::Incomplete)
    );
}

#[test]
fn too_large_is_refused_before_the_payload() {
    // 16-bit length of 1000 against a limit of 999: only the head is there.
    let wire = [0x82, 0xFE, 0x03, 0xE8];
    let error = decode_frame(&wire, Role::Server, 999).unwrap_err();
    assert_eq!(
        error,
        WsError::TooLarge {
            len: 1000,
            max: 999
        }
    );
    assert_eq!(error.close_code(), 1009);
    assert_eq!(
        decode_frame(&wire, Role::Server, 1000),
        Ok(Decoded::Incomplete)
    );
    // 7-bit and 64-bit forms.
    assert_eq!(
        decode_frame(&[0x82, 0x8A], Role::Server, 9),
        Err(WsError::TooLarge { len: 10, max: 9 })
    );
    let huge = [0x82, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
    assert_eq!(
        decode_frame(&huge, Role::Server, MAX),
        Err(WsError::TooLarge {
            len: u64::MAX >> 1,
            max: MAX
        })
    );
    // A limit of 0 still allows empty frames.
    assert!(matches!(
        decode_frame(&[0x82, 0x80, 1, 2, 3, 4], Role::Server, 0),
        Ok(Decoded::Frame { consumed: 6, .. })
    ));
}

#[test]
fn masking_rules_by_role() {
    assert_eq!(
        decode_err(&[0x82, 0x00], Role::Server),
        WsError::UnmaskedFrame
    );
    assert_eq!(
        decode_err(&[0x82, 0x80], Role::Client),
        WsError::MaskedFrame
    );
    assert_eq!(WsError::UnmaskedFrame.close_code(), 1002);
    assert_eq!(WsError::MaskedFrame.close_code(), 1002);
}

// --- masking ----------------------------------------------------------------

#[test]
fn unmask_matches_the_bytewise_definition() {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    for len in 0..40 {
        let original: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        let mut fast = original.clone();
        unmask(&mut fast, mask);
        let slow: Vec<u8> = original
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        assert_eq!(fast, slow, "length {len}");
        // Its own inverse.
        unmask(&mut fast, mask);
        assert_eq!(fast, original);
        // In pieces at any offset.
        for split in 0..=len {
            let mut pieces = original.clone();
            let (a, b) = pieces.split_at_mut(split);
            unmask_at(a, mask, 0);
            unmask_at(b, mask, split);
            assert_eq!(pieces, slow, "split at {split}");
        }
    }
}

// --- handshake ----------------------------------------------------------------

#[test]
fn accept_key_of_rfc_section_1_3() {
    assert_eq!(
        accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

const UPGRADE: &str = "GET /chat HTTP/1.1\r\n\
    Host: server.example.com\r\n\
    Upgrade: websocket\r\n\
    Connection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Origin: http://example.com\r\n\
    Sec-WebSocket-Protocol: chat, superchat\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

fn head_of(wire: &[u8]) -> RequestHead<'_> {
    match parse_request_head(wire, &HeadLimits::default()).unwrap() {
        Decoded::Frame { frame, .. } => frame,
        Decoded::Incomplete => panic!("incomplete"),
    }
}

#[test]
fn rfc_upgrade_is_accepted() {
    let head = head_of(UPGRADE.as_bytes());
    let upgrade = check_upgrade(&head).unwrap();
    assert_eq!(upgrade.key, b"dGhlIHNhbXBsZSBub25jZQ==");
    assert_eq!(
        upgrade.protocols().collect::<Vec<_>>(),
        ["chat", "superchat"]
    );
    assert!(upgrade.offers("superchat"));
    assert!(!upgrade.offers("Chat"));
    assert_eq!(upgrade.head().path, "/chat");
    assert_eq!(upgrade.accept_key(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");

    let mut out = Vec::new();
    write_accept(&mut out, &upgrade, Some("chat"));
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 101 Switching Protocols\r\n\
         Upgrade: websocket\r\n\
         Connection: Upgrade\r\n\
         Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
         Sec-WebSocket-Protocol: chat\r\n\r\n"
    );

    // No subprotocol, or one the client did not offer: no protocol header.
    for choice in [None, Some("mqtt")] {
        let mut out = Vec::new();
        write_accept(&mut out, &upgrade, choice);
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("Sec-WebSocket-Protocol"), "{text}");
        assert!(text.ends_with("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"));
    }
}

#[test]
fn upgrade_headers_are_case_insensitive_tokens() {
    let wire = "GET /ws HTTP/1.1\r\nhost: x\r\nupgrade: WebSocket\r\n\
        connection: keep-alive, UPGRADE\r\nsec-websocket-key:  AAAAAAAAAAAAAAAAAAAAAA== \r\n\
        sec-websocket-protocol: a\r\nSEC-WEBSOCKET-PROTOCOL: b ,c\r\nsec-websocket-version: 13\r\n\r\n";
    let head = head_of(wire.as_bytes());
    let upgrade = check_upgrade(&head).unwrap();
    assert_eq!(upgrade.key, b"AAAAAAAAAAAAAAAAAAAAAA==");
    assert_eq!(upgrade.protocols().collect::<Vec<_>>(), ["a", "b", "c"]);
}

#[test]
fn upgrade_refusals() {
    let replace = |from: &str, to: &str| UPGRADE.replace(from, to);
    let cases = [
        (
            replace("GET /chat", "POST /chat"),
            HandshakeError::NotGet,
            400,
        ),
        (
            replace("HTTP/1.1\r\nHost", "HTTP/1.0\r\nHost"),
            HandshakeError::NotHttp11,
            400,
        ),
        (
            replace("Upgrade: websocket", "Upgrade: h2c"),
            HandshakeError::NoUpgradeWebsocket,
            400,
        ),
        (
            replace("Upgrade: websocket\r\n", ""),
            HandshakeError::NoUpgradeWebsocket,
            400,
        ),
        (
            replace("Connection: Upgrade", "Connection: keep-alive"),
            HandshakeError::NoConnectionUpgrade,
            400,
        ),
        (
            replace("Sec-WebSocket-Version: 13\r\n", ""),
            HandshakeError::MissingVersion,
            400,
        ),
        (
            replace("Version: 13", "Version: 8"),
            HandshakeError::UnsupportedVersion,
            426,
        ),
        (
            replace("Version: 13", "Version: 13, 8"),
            HandshakeError::UnsupportedVersion,
            426,
        ),
        (
            replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
            HandshakeError::MissingKey,
            400,
        ),
        (
            replace(
                "Origin",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin",
            ),
            HandshakeError::DuplicateKey,
            400,
        ),
        // 15 bytes, 17 bytes, not base64, bad padding, trailing bits set.
        (
            replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25j"),
            HandshakeError::BadKey,
            400,
        ),
        (
            replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQAA"),
            HandshakeError::BadKey,
            400,
        ),
        (
            replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQ!!"),
            HandshakeError::BadKey,
            400,
        ),
        (
            replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQ="),
            HandshakeError::BadKey,
            400,
        ),
        (
            replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZR=="),
            HandshakeError::BadKey,
            400,
        ),
        (
            replace("dGhlIHNhbXBsZSBub25jZQ==", ""),
            HandshakeError::BadKey,
            400,
        ),
    ];
    for (wire, expected, status) in cases {
        let head = head_of(wire.as_bytes());
        let error = check_upgrade(&head).unwrap_err();
        assert_eq!(error, expected, "{wire}");
        assert_eq!(error.status(), status);
    }
}

#[test]
fn refusal_responses() {
    let mut out = Vec::new();
    HandshakeError::UnsupportedVersion.write_refusal(&mut out);
    let text = String::from_utf8(out).unwrap();
    let body = "unsupported WebSocket version (this server speaks 13)\n";
    assert_eq!(
        text,
        format!(
            "HTTP/1.1 426 Upgrade Required\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Connection: close\r\n\
             Sec-WebSocket-Version: 13\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    );

    let mut out = Vec::new();
    HandshakeError::BadKey.write_refusal(&mut out);
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
    assert!(!text.contains("Sec-WebSocket-Version"));
    assert!(text.ends_with("\r\n\r\nSec-WebSocket-Key is not the base64 of 16 bytes\n"));
}

// --- messages -----------------------------------------------------------------

#[test]
fn single_frames_pass_through_without_copy() {
    let mut messages = Reassembler::new(16);
    let payload = b"binary".to_vec();
    assert!(messages.is_whole_message(Opcode::Binary, true));
    assert!(!messages.is_whole_message(Opcode::Binary, false));
    assert!(!messages.is_whole_message(Opcode::Ping, true));
    match messages.feed(Opcode::Binary, true, &payload) {
        Ok(Some(Event::Message { text: false, data })) => {
            assert_eq!(data.as_ptr(), payload.as_ptr(), "copied");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(messages.buffered_bytes(), 0);
}

#[test]
fn control_frames_inside_a_fragmented_message() {
    let mut messages = Reassembler::new(100);
    assert_eq!(messages.feed(Opcode::Binary, false, b"ab"), Ok(None));
    assert!(!messages.is_whole_message(Opcode::Binary, true));
    assert_eq!(
        messages.feed(Opcode::Ping, true, b"p"),
        Ok(Some(Event::Ping(b"p")))
    );
    assert_eq!(messages.feed(Opcode::Continuation, false, b""), Ok(None));
    assert_eq!(
        messages.feed(Opcode::Pong, true, b""),
        Ok(Some(Event::Pong(b"")))
    );
    assert_eq!(messages.feed(Opcode::Continuation, false, b"cd"), Ok(None));
    assert_eq!(messages.buffered_bytes(), 4);
    assert_eq!(
        messages.feed(Opcode::Continuation, true, b"e"),
        Ok(Some(Event::Message {
            text: false,
            data: b"abcde"
        }))
    );
    // The buffer is freed on the next call.
    assert_eq!(
        messages.feed(Opcode::Ping, true, b""),
        Ok(Some(Event::Ping(b"")))
    );
    assert_eq!(messages.buffered_bytes(), 0);
    assert!(messages.is_idle());
}

#[test]
fn fragmentation_errors() {
    let mut messages = Reassembler::new(100);
    let error = messages.feed(Opcode::Continuation, true, b"x").unwrap_err();
    assert_eq!(error, WsError::UnexpectedContinuation);
    assert_eq!(error.close_code(), 1002);
    let error = messages
        .feed(Opcode::Continuation, false, b"x")
        .unwrap_err();
    assert_eq!(error, WsError::UnexpectedContinuation);

    messages.feed(Opcode::Text, false, b"a").unwrap();
    let error = messages.feed(Opcode::Binary, true, b"b").unwrap_err();
    assert_eq!(error, WsError::MessageInterrupted);
    assert_eq!(error.close_code(), 1002);
    // Reset after an error.
    assert!(messages.is_idle());
    messages.feed(Opcode::Binary, false, b"a").unwrap();
    assert_eq!(
        messages.feed(Opcode::Text, false, b"b").unwrap_err(),
        WsError::MessageInterrupted
    );

    // A continuation right after a delivered message.
    messages.feed(Opcode::Binary, false, b"a").unwrap();
    messages.feed(Opcode::Continuation, true, b"b").unwrap();
    assert_eq!(
        messages.feed(Opcode::Continuation, true, b"c").unwrap_err(),
        WsError::UnexpectedContinuation
    );

    // Control frames fed directly still follow the rules.
    assert_eq!(
        messages.feed(Opcode::Ping, false, b"").unwrap_err(),
        WsError::FragmentedControl
    );
    assert_eq!(
        messages.feed(Opcode::Pong, true, &[0; 126]).unwrap_err(),
        WsError::ControlTooLong { len: 126 }
    );
}

#[test]
fn message_size_cap() {
    let mut messages = Reassembler::new(5);
    assert_eq!(messages.max_message_bytes(), 5);
    // A single frame at and over the cap.
    assert!(messages.feed(Opcode::Binary, true, b"12345").is_ok());
    let error = messages.feed(Opcode::Binary, true, b"123456").unwrap_err();
    assert_eq!(error, WsError::MessageTooLarge { len: 6, max: 5 });
    assert_eq!(error.close_code(), 1009);
    // Fragments adding up past the cap.
    messages.feed(Opcode::Binary, false, b"123").unwrap();
    messages.feed(Opcode::Continuation, false, b"45").unwrap();
    let error = messages.feed(Opcode::Continuation, true, b"6").unwrap_err();
    assert_eq!(error, WsError::MessageTooLarge { len: 6, max: 5 });
    assert_eq!(messages.buffered_bytes(), 0);
    // A fragment alone over the cap.
    assert_eq!(
        messages.feed(Opcode::Text, false, b"123456").unwrap_err(),
        WsError::MessageTooLarge { len: 6, max: 5 }
    );
}

#[test]
fn buffer_never_grows_past_the_cap() {
    let mut messages = Reassembler::new(1000);
    messages.feed(Opcode::Binary, false, &[1; 600]).unwrap();
    messages
        .feed(Opcode::Continuation, false, &[2; 399])
        .unwrap();
    assert!(messages.buffer_capacity() <= 1000);
    messages.feed(Opcode::Continuation, true, &[3; 1]).unwrap();
    assert!(messages.buffer_capacity() <= 1000);
}

#[test]
fn text_utf8_validation() {
    let mut messages = Reassembler::new(100);
    // Single frame.
    let error = messages.feed(Opcode::Text, true, b"\xff").unwrap_err();
    assert_eq!(error, WsError::InvalidUtf8);
    assert_eq!(error.close_code(), 1007);
    // Binary is not checked.
    assert!(messages.feed(Opcode::Binary, true, b"\xff").is_ok());

    // "κόσμε" cut inside characters across fragments.
    let text = "κόσμε".as_bytes();
    for split in 0..=text.len() {
        for split2 in split..=text.len() {
            messages.feed(Opcode::Text, false, &text[..split]).unwrap();
            messages
                .feed(Opcode::Continuation, false, &text[split..split2])
                .unwrap();
            assert_eq!(
                messages.feed(Opcode::Continuation, true, &text[split2..]),
                Ok(Some(Event::Message {
                    text: true,
                    data: text
                }))
            );
        }
    }

    // A bad byte fails at its fragment, before the message ends.
    messages.feed(Opcode::Text, false, b"ok").unwrap();
    assert_eq!(
        messages
            .feed(Opcode::Continuation, false, b"\xce\x00")
            .unwrap_err(),
        WsError::InvalidUtf8
    );
    // A character cut by the end of the message.
    messages.feed(Opcode::Text, false, b"ok").unwrap();
    messages.feed(Opcode::Continuation, false, b"\xce").unwrap();
    assert_eq!(
        messages.feed(Opcode::Continuation, true, b"").unwrap_err(),
        WsError::InvalidUtf8
    );
    // Surrogates and overlong encodings are invalid.
    for bad in [&b"\xed\xa0\x80"[..], b"\xc0\xaf", b"\xf4\x90\x80\x80"] {
        messages.feed(Opcode::Text, false, b"").unwrap();
        let early = messages.feed(Opcode::Continuation, false, bad);
        assert_eq!(early, Err(WsError::InvalidUtf8), "{bad:02x?}");
    }
}

// --- close ------------------------------------------------------------------

#[test]
fn close_payloads() {
    let mut messages = Reassembler::new(100);
    assert_eq!(
        messages.feed(Opcode::Close, true, b""),
        Ok(Some(Event::Close {
            code: CloseCode::NO_STATUS,
            reason: ""
        }))
    );
    assert_eq!(
        messages.feed(Opcode::Close, true, b"\x03\xe8bye"),
        Ok(Some(Event::Close {
            code: CloseCode::NORMAL,
            reason: "bye"
        }))
    );
    let error = messages.feed(Opcode::Close, true, b"\x03").unwrap_err();
    assert_eq!(error, WsError::BadClosePayload);
    assert_eq!(error.close_code(), 1002);
    let error = messages
        .feed(Opcode::Close, true, b"\x03\xe8\xff")
        .unwrap_err();
    assert_eq!(error, WsError::InvalidUtf8);
    assert_eq!(error.close_code(), 1007);
    // A close inside a fragmented message.
    messages.feed(Opcode::Binary, false, b"x").unwrap();
    assert!(matches!(
        messages.feed(Opcode::Close, true, b"\x03\xe9"),
        Ok(Some(Event::Close {
            code: CloseCode::GOING_AWAY,
            ..
        }))
    ));
}

#[test]
fn close_code_validity() {
    let valid = [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
        4000, 4999,
    ];
    let invalid = [
        0u16, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ];
    for code in valid {
        assert!(CloseCode(code).is_sendable(), "{code}");
        let payload = code.to_be_bytes();
        assert_eq!(parse_close(&payload), Ok((CloseCode(code), "")));
    }
    for code in invalid {
        assert!(!CloseCode(code).is_sendable(), "{code}");
        let error = parse_close(&code.to_be_bytes()).unwrap_err();
        assert_eq!(error, WsError::InvalidCloseCode(code));
        assert_eq!(error.close_code(), 1002);
    }
}

#[test]
fn encoding_close_frames() {
    let mut out = Vec::new();
    encode_close(&mut out, CloseCode::NORMAL, "bye");
    assert_eq!(out, [0x88, 0x05, 0x03, 0xE8, b'b', b'y', b'e']);

    let mut out = Vec::new();
    encode_close(&mut out, CloseCode::NO_STATUS, "ignored");
    assert_eq!(out, [0x88, 0x00]);

    // A long reason is cut to 123 bytes at a character boundary.
    let reason = "é".repeat(100); // 200 bytes
    let mut out = Vec::new();
    encode_close(&mut out, CloseCode::from(4000), &reason);
    assert_eq!(out[1] as usize, 2 + 122);
    let (frame, consumed) = frame_of(&out, Role::Client);
    assert_eq!(consumed, out.len());
    let (code, cut) = parse_close(&out[frame.payload]).unwrap();
    assert_eq!(u16::from(code), 4000);
    assert_eq!(cut, "é".repeat(61));

    let ascii = "x".repeat(200);
    let mut out = Vec::new();
    encode_close(&mut out, CloseCode::GOING_AWAY, &ascii);
    assert_eq!(out[1] as usize, 125);
}

#[test]
fn error_texts() {
    assert_eq!(
        WsError::TooLarge { len: 10, max: 9 }.to_string(),
        "frame payload of 10 bytes exceeds the limit of 9 bytes"
    );
    assert_eq!(
        WsError::ReservedBits { bits: 0x40 }.to_string(),
        "reserved bits 0x40 set without a negotiated extension"
    );
    assert_eq!(
        WsError::UnknownOpcode(0xB).to_string(),
        "unknown opcode 0xb"
    );
}
