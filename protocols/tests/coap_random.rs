//! Seeded randomized checks of `coap`: random valid messages (written by an
//! encoder of this file's own, with option deltas and lengths around the
//! 13/269 boundaries) decode to what was generated and encode back to the
//! same bytes, also through the `MessageBuilder`; truncated, mutated and
//! random datagrams never panic, whatever decodes encodes back byte for
//! byte (the CoAP encoding has one form per message), and every error's
//! answer is a valid message; block-wise bodies survive the Block2 slicer
//! and the Block1 reassembler. Fixed seeds, so a failure names the seed
//! that reproduces it.

mod support;

use shoal_protocols::coap::{
    decode, decode_with, encode_message, Block1Config, Block1Outcome, Block1Reassembler,
    Block2Slice, BlockOption, CoapError, Code, DecodeLimits, DedupConfig, Deduplicator, Message,
    MessageBuilder, MessageType, OptionNumber, Reaction, Token, MAX_BUILDER_OPTIONS,
};
use support::Rng;

const SEEDS: u64 = 64;

const TYPES: [MessageType; 4] = [
    MessageType::Confirmable,
    MessageType::NonConfirmable,
    MessageType::Acknowledgement,
    MessageType::Reset,
];

/// What a generated message should decode to.
#[derive(Debug, Clone)]
struct Generated {
    mtype: MessageType,
    code: Code,
    message_id: u16,
    token: Vec<u8>,
    options: Vec<(u16, Vec<u8>)>,
    payload: Vec<u8>,
}

/// A delta or a length, mostly near the 13 and 269 boundaries.
fn random_extended(rng: &mut Rng, max: u64) -> u64 {
    let value = match rng.below(8) {
        0..=2 => rng.range(0, 14),
        3 => *rng.pick(&[12, 13, 14, 267, 268, 269, 270]),
        4 => rng.range(250, 300),
        5 if rng.chance(8) => rng.range(300, 70_000),
        _ => rng.range(0, 40),
    };
    value.min(max)
}

/// A valid message: the type and code go together as RFC 7252 allows.
fn random_message(rng: &mut Rng) -> Generated {
    let mtype = *rng.pick(&TYPES);
    let empty = mtype == MessageType::Reset || rng.chance(12);
    let code = if empty {
        Code::EMPTY
    } else if mtype == MessageType::Acknowledgement || rng.chance(2) {
        Code::new(*rng.pick(&[2, 4, 5]), rng.range(0, 31) as u8)
    } else {
        Code::new(0, rng.range(1, 31) as u8)
    };
    let message_id = rng.next() as u16;
    if empty {
        return Generated {
            mtype,
            code,
            message_id,
            token: Vec::new(),
            options: Vec::new(),
            payload: Vec::new(),
        };
    }
    let token_len = rng.below(9);
    let token = rng.bytes(token_len);
    let mut options = Vec::new();
    let mut number = 0u64;
    let count = if rng.chance(10) {
        rng.range(30, 64)
    } else {
        rng.range(0, 8)
    };
    for _ in 0..count {
        let delta = random_extended(rng, 0xFFFF - number);
        number += delta;
        let len = random_extended(rng, 2_000) as usize;
        options.push((number as u16, rng.bytes(len)));
    }
    let payload_len = match rng.below(4) {
        0 => 0,
        1 => rng.range(1, 3) as usize,
        _ => rng.range(0, 1500) as usize,
    };
    let payload = rng.bytes(payload_len);
    Generated {
        mtype,
        code,
        message_id,
        token,
        options,
        payload,
    }
}

fn write_extended(value: u64) -> (u8, Vec<u8>) {
    match value {
        0..=12 => (value as u8, Vec::new()),
        13..=268 => (13, vec![(value - 13) as u8]),
        _ => (14, ((value - 269) as u16).to_be_bytes().to_vec()),
    }
}

/// This file's own encoder, written from RFC 7252 §3.
fn wire_of(message: &Generated) -> Vec<u8> {
    let mtype = match message.mtype {
        MessageType::Confirmable => 0,
        MessageType::NonConfirmable => 1,
        MessageType::Acknowledgement => 2,
        MessageType::Reset => 3,
    };
    let mut wire = vec![
        0x40 | mtype << 4 | message.token.len() as u8,
        message.code.0,
    ];
    wire.extend_from_slice(&message.message_id.to_be_bytes());
    wire.extend_from_slice(&message.token);
    let mut previous = 0;
    for (number, value) in &message.options {
        let (delta_nibble, delta_ext) = write_extended(u64::from(number - previous));
        let (len_nibble, len_ext) = write_extended(value.len() as u64);
        wire.push(delta_nibble << 4 | len_nibble);
        wire.extend_from_slice(&delta_ext);
        wire.extend_from_slice(&len_ext);
        wire.extend_from_slice(value);
        previous = *number;
    }
    if !message.payload.is_empty() {
        wire.push(0xFF);
        wire.extend_from_slice(&message.payload);
    }
    wire
}

/// Exercises everything that reads a decoded message, checks it encodes
/// back to `wire`.
fn check_decoded(message: &Message<'_>, wire: &[u8], context: &str) {
    let mut again = Vec::new();
    encode_message(message, &mut again);
    assert_eq!(again, wire, "{context}: re-encoding differs");
    assert!(message.option_count() <= 64, "{context}");
    assert_eq!(
        message.options().count(),
        message.option_count(),
        "{context}"
    );
    let mut previous = 0;
    for option in message.options() {
        assert!(
            option.number.0 >= previous,
            "{context}: options out of order"
        );
        previous = option.number.0;
    }
    if let Err(error) = message.check_options() {
        check_error(&error, context);
    }
    for block in [message.block1(), message.block2()] {
        match block {
            Ok(Some(block)) => assert!(block.szx() <= 6 && block.num() <= BlockOption::MAX_NUM),
            Ok(None) => {}
            Err(error) => check_error(&error, context),
        }
    }
    let mut path = String::new();
    match message.write_path(&mut path) {
        Ok(()) => assert!(path.starts_with('/'), "{context}"),
        Err(error) => check_error(&error, context),
    }
    let _ = message.uri_query().count();
    let _ = message.query_value("secret");
    let _ = (
        message.observe_request(),
        message.content_format(),
        message.size1(),
    );
    let _ = message.block1_transfer_id();
    if message.is_empty() {
        assert_eq!(wire.len(), 4, "{context}");
    }
}

/// An error's answer, if any, is a valid message that answers the header.
fn check_error(error: &CoapError, context: &str) {
    assert!(!error.to_string().is_empty());
    let mut out = Vec::new();
    let wrote = error.write_answer(&mut out, 0x4242);
    assert_eq!(
        wrote,
        error.reaction() != Reaction::Ignore,
        "{context}: {error}"
    );
    if !wrote {
        return;
    }
    let header = error.header().expect("answers need a header");
    let answer = decode(&out).unwrap_or_else(|e| panic!("{context}: answer {out:02x?}: {e}"));
    assert_eq!(answer.check_options(), Ok(()));
    match error.reaction() {
        Reaction::Reset => {
            assert_eq!(header.mtype, MessageType::Confirmable, "{context}");
            assert!(answer.is_empty() && answer.mtype == MessageType::Reset);
            assert_eq!(answer.message_id, header.message_id);
        }
        Reaction::Respond(code) => {
            assert!(header.code.is_request(), "{context}: {error}");
            assert_eq!((answer.code, answer.token), (code, header.token));
            match header.mtype {
                MessageType::Confirmable => {
                    assert_eq!(answer.mtype, MessageType::Acknowledgement);
                    assert_eq!(answer.message_id, header.message_id);
                }
                _ => assert_eq!(
                    (answer.mtype, answer.message_id),
                    (MessageType::NonConfirmable, 0x4242)
                ),
            }
        }
        Reaction::Ignore => unreachable!(),
    }
}

fn check_bytes(wire: &[u8], context: &str) {
    match decode(wire) {
        Ok(message) => check_decoded(&message, wire, context),
        Err(error) => check_error(&error, context),
    }
}

#[test]
fn random_messages_round_trip() {
    let mut messages = 0;
    for seed in 0..SEEDS {
        let mut rng = Rng(seed);
        for case in 0..40 {
            let generated = random_message(&mut rng);
            let context = format!("seed {seed} case {case}");
            let wire = wire_of(&generated);
            let limits = DecodeLimits { max_options: 64 };
            let message = decode_with(&wire, &limits).unwrap_or_else(|e| panic!("{context}: {e}"));
            assert_eq!(message.mtype, generated.mtype, "{context}");
            assert_eq!(message.code, generated.code, "{context}");
            assert_eq!(message.message_id, generated.message_id, "{context}");
            assert_eq!(message.token.as_bytes(), &generated.token[..], "{context}");
            assert_eq!(message.payload, &generated.payload[..], "{context}");
            let options: Vec<(u16, Vec<u8>)> = message
                .options()
                .map(|o| (o.number.0, o.value.to_vec()))
                .collect();
            assert_eq!(options, generated.options, "{context}");
            check_decoded(&message, &wire, &context);

            // The builder writes the same bytes from the options in any order.
            if generated.options.len() <= MAX_BUILDER_OPTIONS {
                let token = Token::new(&generated.token).unwrap();
                let mut builder = MessageBuilder::new(
                    generated.mtype,
                    generated.code,
                    generated.message_id,
                    token,
                );
                let mut order: Vec<usize> = (0..generated.options.len()).collect();
                // Shuffle, keeping repeated numbers in their order (a stable
                // sort on a random key per distinct number).
                let keys: Vec<u64> = (0..order.len()).map(|_| rng.next()).collect();
                order.sort_by_key(|&i| {
                    let first = generated
                        .options
                        .iter()
                        .position(|(n, _)| *n == generated.options[i].0)
                        .unwrap();
                    keys[first]
                });
                for i in order {
                    let (number, value) = &generated.options[i];
                    builder.option(OptionNumber(*number), value).unwrap();
                }
                builder.payload(&generated.payload);
                let mut built = Vec::new();
                builder.encode(&mut built);
                assert_eq!(built, wire, "{context}: builder");
            }
            messages += 1;
        }
    }
    assert_eq!(messages, SEEDS * 40);
}

fn mutate(rng: &mut Rng, wire: &mut Vec<u8>) {
    // Header bytes, nibble boundaries, the payload marker.
    support::mutate(
        rng,
        wire,
        &[
            0x40, 0x41, 0x48, 0x49, 0x4F, 0x50, 0x60, 0x70, 0x00, 0x01, 0x20, 0x45, 0xC0, 0xD0,
            0xDD, 0xE0, 0xEE, 0x0D, 0x0E, 0x0F, 0xF0, 0xFF,
        ],
    );
}

#[test]
fn truncation_and_mutation_never_panic() {
    let mut decoded = 0;
    for seed in 0..SEEDS {
        let mut rng = Rng(1000 + seed);
        for case in 0..40 {
            let wire = wire_of(&random_message(&mut rng));
            let context = format!("seed {seed} case {case}");
            for _ in 0..4 {
                let cut = rng.below(wire.len() + 1);
                check_bytes(&wire[..cut], &format!("{context}: cut {cut}"));
            }
            for round in 0..12 {
                let mut bytes = wire.clone();
                mutate(&mut rng, &mut bytes);
                let context = format!("{context}: mutation {round}");
                check_bytes(&bytes, &context);
                if decode(&bytes).is_ok() {
                    decoded += 1;
                }
                let limits = DecodeLimits {
                    max_options: rng.below(10),
                };
                if let Err(error) = decode_with(&bytes, &limits) {
                    check_error(&error, &context);
                }
            }
        }
    }
    // Many mutations leave a valid message: the checks above ran on them.
    assert!(decoded > SEEDS as usize * 40);
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(3000);
    for case in 0..30_000 {
        let len = rng.below(48);
        let mut bytes = rng.bytes(len);
        if let Some(first) = bytes.first_mut() {
            // Mostly version 1, so the decoder gets past the first byte.
            if !rng.chance(8) {
                *first = (*first & 0x3F) | 0x40;
            }
        }
        check_bytes(&bytes, &format!("random {case}"));
    }
}

#[test]
fn random_bodies_through_block2_and_block1() {
    for seed in 0..SEEDS {
        let mut rng = Rng(4000 + seed);
        for case in 0..20 {
            let context = format!("seed {seed} case {case}");
            let len = rng.range(0, 5000) as usize;
            let body = rng.bytes(len);
            let client_szx = rng.range(0, 6) as u8;
            let server_szx = rng.range(0, 6) as u8;

            // Block2: the client asks block after block with the size the
            // server used, until M is clear.
            let mut received = Vec::new();
            let mut next = BlockOption::new(0, false, client_szx);
            for _ in 0..2000 {
                let slice = Block2Slice::of(&body, next, server_szx).expect(&context);
                received.extend_from_slice(slice.payload);
                let Some(block) = slice.block else { break };
                assert!(block.szx() <= client_szx.min(server_szx), "{context}");
                if !block.more() {
                    break;
                }
                next = BlockOption::new(block.num() + 1, false, block.szx());
            }
            assert_eq!(received, body, "{context}: block2");

            // Block1: the client sends blocks of its size, switching to the
            // size the server asks for, with the odd repeated block.
            let mut bodies: Block1Reassembler<u8> = Block1Reassembler::new(Block1Config {
                max_szx: server_szx,
                ..Block1Config::default()
            });
            let mut szx = client_szx;
            let mut offset = 0usize;
            let mut outcome = None;
            let mut message_id = 0u16;
            for _ in 0..2000 {
                let size = 16usize << szx;
                let end = (offset + size).min(body.len());
                let more = end < body.len();
                let block = BlockOption::new((offset / size) as u32, more, szx).unwrap();
                let token = Token::from_u64(rng.next(), rng.below(9));
                let mut request =
                    MessageBuilder::new(MessageType::Confirmable, Code::PUT, message_id, token);
                message_id = message_id.wrapping_add(1);
                request.uri_path("devices/d/up").unwrap();
                request.block(OptionNumber::BLOCK1, block).unwrap();
                request.payload(&body[offset..end]);
                let mut wire = Vec::new();
                request.encode(&mut wire);
                let request = decode(&wire).unwrap();
                let result = bodies.feed(0, &7, &request);
                if more && rng.chance(6) {
                    // A retry of the same block is answered the same way.
                    assert_eq!(bodies.feed(0, &7, &request), result, "{context}");
                }
                match result {
                    Ok(Block1Outcome::Continue { block: answer }) => {
                        assert_eq!(answer.num(), block.num(), "{context}");
                        szx = answer.szx();
                        offset = end;
                    }
                    Ok(done) => {
                        outcome = Some(done);
                        break;
                    }
                    Err(error) => panic!("{context}: {error}"),
                }
            }
            match outcome {
                Some(Block1Outcome::Complete { body: whole, .. }) => {
                    assert_eq!(whole, body, "{context}")
                }
                Some(Block1Outcome::Whole { block: Some(_) }) => {
                    assert!(body.len() <= 16 << client_szx, "{context}")
                }
                other => panic!("{context}: {other:?}"),
            }
            assert_eq!(bodies.figures().active, 0, "{context}");
            assert_eq!(bodies.figures().buffered_bytes, 0, "{context}");
        }
    }
}

#[test]
fn random_traffic_keeps_the_tables_bounded() {
    let mut rng = Rng(5000);
    let mut dedup = Deduplicator::new(DedupConfig {
        max_per_peer: 8,
        max_entries: 100,
        ..DedupConfig::default()
    });
    let config = Block1Config {
        max_body_bytes: 1024,
        max_transfers: 10,
        max_transfers_per_peer: 2,
        transfer_timeout_ms: 5_000,
        max_szx: 6,
    };
    let mut bodies: Block1Reassembler<u16> = Block1Reassembler::new(config);
    let mut now = 0u64;
    for _ in 0..20_000 {
        now += rng.range(0, 50);
        let peer = rng.range(0, 40) as u16;
        let mut request = MessageBuilder::new(
            *rng.pick(&[MessageType::Confirmable, MessageType::NonConfirmable]),
            Code::POST,
            rng.range(0, 30) as u16,
            Token::EMPTY,
        );
        let path = ["a", "b", "c"][rng.below(3)];
        request.uri_path(path).unwrap();
        let szx = rng.range(0, 2) as u8;
        let more = rng.chance(2);
        let block = BlockOption::new(rng.range(0, 4) as u32, more, szx).unwrap();
        request.block(OptionNumber::BLOCK1, block).unwrap();
        let payload = vec![0u8; if more { 16 << szx } else { rng.below(16) }];
        request.payload(&payload);
        let mut wire = Vec::new();
        request.encode(&mut wire);
        let request = decode(&wire).unwrap();
        dedup.check(now, &peer, request.mtype, request.message_id);
        if let Err(error) = bodies.feed(now, &peer, &request) {
            assert!(matches!(error.reaction(), Reaction::Respond(_)), "{error}");
        }
        assert!(dedup.figures().entries <= 100);
        let figures = bodies.figures();
        assert!(figures.active <= 10);
        assert!(figures.buffered_bytes <= 10 * 1024);
    }
    let figures = bodies.figures();
    assert!(
        figures.completed > 0 && figures.incomplete > 0,
        "{figures:?}"
    );
    assert!(dedup.figures().duplicates > 0);
}
