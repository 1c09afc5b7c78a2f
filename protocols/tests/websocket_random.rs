//! Seeded randomized checks of `websocket`: random frames of both roles with
//! random masks and lengths around the 7/16/64-bit boundaries round-trip
//! through encode → decode → unmask; random messages cut into random
//! fragments, with control frames between them, come back whole out of the
//! `Reassembler` (read in random chunk sizes); truncated and mutated streams
//! never panic and never break the decoder's invariants. Fixed seeds, so a
//! failure names the seed that reproduces it.

mod support;

use shoal_protocols::framing::Decoded;
use shoal_protocols::websocket::{
    decode_frame, encode_close, encode_frame, encode_frame_head, unmask, unmask_at, CloseCode,
    Event, FrameHead, Opcode, Reassembler, Role, WsError, MAX_FRAME_HEAD_BYTES,
};
use support::Rng;

const SEEDS: u64 = 64;
const MAX_PAYLOAD: u64 = 1 << 17;

/// A random masking key.
fn mask(rng: &mut Rng) -> [u8; 4] {
    (rng.next() as u32).to_ne_bytes()
}

/// A payload length, mostly near the 7/16/64-bit encoding boundaries.
fn random_len(rng: &mut Rng, control: bool) -> usize {
    if control {
        return rng.range(0, 125) as usize;
    }
    match rng.below(10) {
        0..=3 => rng.range(0, 130) as usize,
        4..=6 => *rng.pick(&[0, 1, 124, 125, 126, 127, 128, 255, 256, 65535]),
        7 => rng.range(65530, 65540) as usize,
        8 => rng.range(130, 3000) as usize,
        _ if rng.chance(4) => rng.range(65536, 70_000) as usize,
        _ => rng.range(0, 300) as usize,
    }
}

fn expected_head_len(len: usize, masked: bool) -> usize {
    let base = match len {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    };
    base + if masked { 4 } else { 0 }
}

const ROLES: [Role; 2] = [Role::Server, Role::Client];
const OPCODES: [Opcode; 6] = [
    Opcode::Continuation,
    Opcode::Text,
    Opcode::Binary,
    Opcode::Close,
    Opcode::Ping,
    Opcode::Pong,
];

/// Checks the invariants of one decode on `buf`; returns the frame.
fn checked_decode(buf: &[u8], role: Role, max: u64, context: &str) -> Option<(FrameHead, usize)> {
    match decode_frame(buf, role, max) {
        Ok(Decoded::Frame { frame, consumed }) => {
            assert!(consumed >= 2, "{context}: consumed {consumed}");
            assert!(consumed <= buf.len(), "{context}: consumed {consumed}");
            assert!(
                frame.payload.start <= frame.payload.end && frame.payload.end == consumed,
                "{context}: payload {:?} consumed {consumed}",
                frame.payload
            );
            assert!(frame.payload.start <= MAX_FRAME_HEAD_BYTES, "{context}");
            assert!(
                frame.payload.len() as u64 <= max,
                "{context}: over the limit"
            );
            assert_eq!(frame.mask.is_some(), role == Role::Server, "{context}");
            if frame.opcode.is_control() {
                assert!(frame.fin && frame.payload.len() <= 125, "{context}");
            }
            Some((frame, consumed))
        }
        Ok(Decoded::Incomplete) => None,
        Err(error) => {
            assert!(!error.to_string().is_empty());
            assert!(
                matches!(error.close_code(), 1002 | 1007 | 1009),
                "{context}"
            );
            None
        }
    }
}

#[test]
fn random_frames_round_trip() {
    let mut frames = 0;
    for seed in 0..SEEDS {
        let mut rng = Rng(seed);
        for case in 0..60 {
            let role = *rng.pick(&ROLES);
            let opcode = *rng.pick(&OPCODES);
            let fin = opcode.is_control() || !rng.chance(3);
            let len = random_len(&mut rng, opcode.is_control());
            // The server decodes client frames: masked. The client decodes unmasked.
            let mask = (role == Role::Server).then(|| mask(&mut rng));
            let payload = rng.bytes(len);
            let context = format!("seed {seed} case {case} {role:?} {opcode:?} len {len}");

            let mut wire = vec![0xEE];
            encode_frame(&mut wire, fin, opcode, &payload, mask);
            let wire = wire.split_off(1);
            // The head alone is what encode_frame_head writes.
            let mut head = Vec::new();
            encode_frame_head(&mut head, fin, opcode, len as u64, mask);
            assert_eq!(
                head.len(),
                expected_head_len(len, mask.is_some()),
                "{context}"
            );
            assert_eq!(wire[..head.len()], head[..], "{context}");

            let (frame, consumed) =
                checked_decode(&wire, role, MAX_PAYLOAD, &context).expect("whole frame");
            assert_eq!(consumed, wire.len(), "{context}");
            assert_eq!(
                (frame.fin, frame.opcode, frame.mask),
                (fin, opcode, mask),
                "{context}"
            );
            let mut decoded = wire[frame.payload.clone()].to_vec();
            if let Some(mask) = frame.mask {
                // Unmask in two pieces at a random point.
                let split = rng.below(decoded.len() + 1);
                let (a, b) = decoded.split_at_mut(split);
                unmask(a, mask);
                unmask_at(b, mask, split);
            }
            assert_eq!(decoded, payload, "{context}");

            // Prefixes: every one through the head, then random ones.
            for cut in (0..head.len().min(wire.len())).chain((0..4).map(|_| rng.below(wire.len())))
            {
                assert_eq!(
                    decode_frame(&wire[..cut], role, MAX_PAYLOAD),
                    Ok(Decoded::Incomplete),
                    "{context}: cut {cut}"
                );
            }
            // One byte under the limit: refused as soon as the head is there.
            if len > 0 {
                let result = decode_frame(&wire[..head.len()], role, len as u64 - 1);
                assert_eq!(
                    result,
                    Err(WsError::TooLarge {
                        len: len as u64,
                        max: len as u64 - 1
                    }),
                    "{context}"
                );
            }
            // The other role refuses it on the masking rule.
            let other = if role == Role::Server {
                Role::Client
            } else {
                Role::Server
            };
            let expected = if role == Role::Server {
                WsError::MaskedFrame
            } else {
                WsError::UnmaskedFrame
            };
            assert_eq!(
                decode_frame(&wire, other, MAX_PAYLOAD),
                Err(expected),
                "{context}"
            );
            frames += 1;
        }
    }
    assert_eq!(frames, SEEDS * 60);
}

/// What a conversation should produce, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expected {
    Message { text: bool, data: Vec<u8> },
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(u16, String),
}

fn random_text(rng: &mut Rng, max_chars: usize) -> Vec<u8> {
    let chars = ['a', 'z', ' ', 'é', 'κ', '€', '𝄞', '\u{7f}', '\u{10ffff}'];
    let count = rng.below(max_chars + 1);
    (0..count)
        .map(|_| *rng.pick(&chars))
        .collect::<String>()
        .into_bytes()
}

/// Cuts `data` into 1 or more fragments at random points (empty ones too).
fn random_cuts(rng: &mut Rng, len: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = (0..rng.below(5)).map(|_| rng.below(len + 1)).collect();
    cuts.push(0);
    cuts.push(len);
    cuts.sort_unstable();
    cuts
}

/// A client stream of random messages, fragmented, with pings and pongs
/// between fragments and a close at the end; and what it should produce.
fn random_conversation(rng: &mut Rng) -> (Vec<u8>, Vec<Expected>) {
    let mut wire = Vec::new();
    let mut expected = Vec::new();
    for _ in 0..rng.range(1, 6) {
        let text = rng.chance(2);
        let data = if text {
            let max_chars = if rng.chance(8) { 3000 } else { 40 };
            random_text(rng, max_chars)
        } else {
            let len = random_len(rng, false).min(20_000);
            rng.bytes(len)
        };
        let cuts = random_cuts(rng, data.len());
        let pieces = cuts.len() - 1;
        for (i, pair) in cuts.windows(2).enumerate() {
            let opcode = match (i, text) {
                (0, true) => Opcode::Text,
                (0, false) => Opcode::Binary,
                _ => Opcode::Continuation,
            };
            let fin = i + 1 == pieces;
            encode_frame(
                &mut wire,
                fin,
                opcode,
                &data[pair[0]..pair[1]],
                Some(mask(rng)),
            );
            if !fin && rng.chance(3) {
                let control_len = rng.below(126);
                let control = rng.bytes(control_len);
                if rng.chance(2) {
                    encode_frame(&mut wire, true, Opcode::Ping, &control, Some(mask(rng)));
                    expected.push(Expected::Ping(control));
                } else {
                    encode_frame(&mut wire, true, Opcode::Pong, &control, Some(mask(rng)));
                    expected.push(Expected::Pong(control));
                }
            }
        }
        expected.push(Expected::Message { text, data });
    }
    // A close from the client: encode_close writes a server frame, so mask it here.
    let mut close = Vec::new();
    let code = *rng.pick(&[1000u16, 1001, 3000, 4999]);
    encode_close(&mut close, CloseCode(code), "bye κ");
    let payload = close[2..].to_vec();
    encode_frame(&mut wire, true, Opcode::Close, &payload, Some(mask(rng)));
    expected.push(Expected::Close(code, "bye κ".into()));
    (wire, expected)
}

/// Reads `wire` as a server would: in chunks of random size into a buffer,
/// decoding every whole frame, unmasking it in place and feeding the
/// reassembler. Returns the events, and the error that stopped it if any.
fn serve(
    rng: &mut Rng,
    wire: &[u8],
    role: Role,
    max_message: usize,
) -> (Vec<Expected>, Option<WsError>) {
    let mut messages = Reassembler::new(max_message);
    let mut inbox: Vec<u8> = Vec::new();
    let mut events = Vec::new();
    let mut read = 0;
    while read < wire.len() {
        let chunk = rng.range(1, 5000) as usize;
        let end = (read + chunk).min(wire.len());
        inbox.extend_from_slice(&wire[read..end]);
        read = end;
        loop {
            let (frame, consumed) = match decode_frame(&inbox, role, MAX_PAYLOAD) {
                Ok(Decoded::Frame { frame, consumed }) => (frame, consumed),
                Ok(Decoded::Incomplete) => break,
                Err(error) => return (events, Some(error)),
            };
            assert!(consumed <= inbox.len() && frame.payload.end <= consumed);
            let payload = &mut inbox[frame.payload.clone()];
            if let Some(mask) = frame.mask {
                unmask(payload, mask);
            }
            let payload_start = payload.as_ptr();
            let whole = messages.is_whole_message(frame.opcode, frame.fin);
            let event = match messages.feed(frame.opcode, frame.fin, payload) {
                Ok(event) => event,
                Err(error) => return (events, Some(error)),
            };
            match event {
                Some(Event::Message { text, data }) => {
                    if whole {
                        assert_eq!(data.as_ptr(), payload_start, "copied");
                    }
                    if text {
                        assert!(std::str::from_utf8(data).is_ok());
                    }
                    events.push(Expected::Message {
                        text,
                        data: data.to_vec(),
                    });
                }
                Some(Event::Ping(data)) => events.push(Expected::Ping(data.to_vec())),
                Some(Event::Pong(data)) => events.push(Expected::Pong(data.to_vec())),
                Some(Event::Close { code, reason }) => {
                    events.push(Expected::Close(code.0, reason.into()))
                }
                None => assert!(!whole),
            }
            assert!(messages.buffered_bytes() <= max_message);
            inbox.drain(..consumed);
        }
    }
    (events, None)
}

#[test]
fn random_fragmentation_reassembles() {
    let mut messages = 0;
    for seed in 0..SEEDS {
        let mut rng = Rng(1000 + seed);
        for case in 0..12 {
            let (wire, expected) = random_conversation(&mut rng);
            let (events, error) = serve(&mut rng, &wire, Role::Server, 1 << 16);
            assert_eq!(error, None, "seed {seed} case {case}");
            assert_eq!(events, expected, "seed {seed} case {case}");
            messages += expected.len();

            // A cap below the largest message: everything before it arrives,
            // then the error is 1009.
            let largest = expected
                .iter()
                .filter_map(|e| match e {
                    Expected::Message { data, .. } => Some(data.len()),
                    _ => None,
                })
                .max()
                .unwrap_or(0);
            if largest > 0 {
                let (events, error) = serve(&mut rng, &wire, Role::Server, largest - 1);
                let error = error.expect("over the cap");
                assert_eq!(error.close_code(), 1009, "seed {seed} case {case}");
                assert_eq!(
                    events[..],
                    expected[..events.len()],
                    "seed {seed} case {case}"
                );
            }
        }
    }
    assert!(messages > SEEDS as usize * 12 * 2);
}

fn mutate(rng: &mut Rng, wire: &mut Vec<u8>) {
    // A frame's first byte and length values.
    support::mutate(
        rng,
        wire,
        &[
            0x00, 0x01, 0x02, 0x08, 0x09, 0x0A, 0x80, 0x81, 0x88, 0x7E, 0x7F, 0xFE, 0xFF,
        ],
    );
}

#[test]
fn truncation_and_mutation_never_panic() {
    for seed in 0..SEEDS {
        let mut rng = Rng(2000 + seed);
        for case in 0..12 {
            let (wire, expected) = random_conversation(&mut rng);
            let context = format!("seed {seed} case {case}");

            // Truncated: the events before the cut, no error.
            let cut = rng.below(wire.len() + 1);
            let (events, error) = serve(&mut rng, &wire[..cut], Role::Server, 1 << 16);
            assert_eq!(error, None, "{context}: cut {cut}");
            assert_eq!(events[..], expected[..events.len()], "{context}: cut {cut}");

            // Mutated: whatever happens, no panic; the invariants are
            // checked inside serve and checked_decode.
            for _ in 0..6 {
                let mut bytes = wire.clone();
                mutate(&mut rng, &mut bytes);
                let role = *rng.pick(&ROLES);
                let max_message = rng.range(0, 1 << 16) as usize;
                serve(&mut rng, &bytes, role, max_message);
                let mut at = 0;
                while let Some((_, consumed)) =
                    checked_decode(&bytes[at..], role, MAX_PAYLOAD, &context)
                {
                    at += consumed;
                }
                assert!(at <= bytes.len());
            }
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(3000);
    for _ in 0..20_000 {
        let len = rng.below(40);
        let bytes = rng.bytes(len);
        for role in ROLES {
            let max = rng.range(0, 300);
            checked_decode(&bytes, role, max, "random bytes");
        }
        let mut messages = Reassembler::new(rng.below(64));
        for chunk in bytes.chunks(rng.range(1, 8) as usize) {
            let opcode = *rng.pick(&OPCODES);
            let _ = messages.feed(opcode, rng.chance(2), chunk);
        }
    }
}
