//! Seeded randomized checks of `framing`: random valid configs of every kind,
//! random payloads, then round trips, concatenated streams, truncations and
//! mutations. Fixed seeds, so a failure names the seed that reproduces it.

mod support;

use shoal_protocols::framing::{ByteOrder, Decoded, Framer, FramingConfig, FramingError};
use support::Rng;

const SEEDS: u64 = 64;
const CONFIGS_PER_SEED: usize = 150;

/// Bytes drawn from a small alphabet so delimiters show up inside payloads.
const ALPHABET: &[u8] = b"ab\r\n\0\xff";

fn random_bytes(rng: &mut Rng, len: usize, narrow: bool) -> Vec<u8> {
    (0..len)
        .map(|_| {
            if narrow {
                *rng.pick(ALPHABET)
            } else {
                rng.next() as u8
            }
        })
        .collect()
}

fn random_config(rng: &mut Rng) -> (FramingConfig, u32) {
    match rng.below(3) {
        0 => {
            let max = rng.range(1, 300) as u32;
            let len = if rng.chance(10) {
                rng.range(1, 64)
            } else {
                rng.range(1, 4)
            } as usize;
            let mut delimiter: String = (0..len)
                .map(|_| char::from(*rng.pick(b"ab\r\n\0")))
                .collect();
            if rng.chance(8) {
                // A multi-byte UTF-8 delimiter.
                delimiter = "\u{e9}\u{2029}".into();
            }
            let config = FramingConfig::Delimiter {
                delimiter,
                strip_delimiter: !rng.chance(3),
            };
            (config, max)
        }
        1 => {
            let max = rng.range(1, 300) as u32;
            let frame_bytes = rng.range(1, u64::from(max)) as u32;
            (FramingConfig::FixedLength { frame_bytes }, max)
        }
        _ => {
            let width = *rng.pick(&[1u8, 2, 4, 8]);
            let offset = if rng.chance(10) {
                rng.range(0, 64)
            } else {
                rng.range(0, 6)
            } as u32;
            let header = offset + u32::from(width);
            let max = header + rng.range(0, 400) as u32;
            let adjustment = rng.range(0, u64::from(header) + 30) as i64 - i64::from(header) - 10;
            let strip_bytes = if rng.chance(2) {
                None
            } else {
                Some(rng.range(0, u64::from(header) + 6) as u32)
            };
            let byte_order = if rng.chance(2) {
                ByteOrder::BigEndian
            } else {
                ByteOrder::LittleEndian
            };
            let config = FramingConfig::LengthField {
                offset,
                width,
                byte_order,
                adjustment,
                strip_bytes,
            };
            (config, max)
        }
    }
}

/// A payload the config will probably accept (but not always).
fn random_payload(rng: &mut Rng, config: &FramingConfig, max: u32) -> Vec<u8> {
    let len = match config {
        FramingConfig::FixedLength { frame_bytes } if !rng.chance(10) => *frame_bytes as usize,
        _ if rng.chance(4) => rng.range(0, 8) as usize,
        _ => rng.range(0, u64::from(max) + 2) as usize,
    };
    let narrow = matches!(config, FramingConfig::Delimiter { .. }) && rng.chance(2);
    random_bytes(rng, len, narrow)
}

/// What the decoder should deliver for `payload` encoded as `encoded`.
fn expected_delivery(config: &FramingConfig, payload: &[u8], encoded: &[u8]) -> Vec<u8> {
    match config {
        FramingConfig::Delimiter {
            strip_delimiter: true,
            ..
        }
        | FramingConfig::FixedLength { .. } => payload.to_vec(),
        FramingConfig::Delimiter { .. } => encoded.to_vec(),
        FramingConfig::LengthField {
            offset,
            width,
            strip_bytes,
            ..
        } => {
            let strip = strip_bytes.unwrap_or(offset + u32::from(*width)) as usize;
            encoded[strip..].to_vec()
        }
    }
}

/// Checks the invariants of one decode result on `buf`.
fn checked_decode(framer: &Framer, buf: &[u8], context: &str) -> Option<(Vec<u8>, usize)> {
    let result = framer.decode(buf);
    let hint = framer.frame_len_hint(buf);
    if let Some(hint) = hint {
        assert!(hint >= 1, "{context}: hint {hint}");
        assert!(
            hint <= framer.max_frame_bytes() as usize,
            "{context}: hint {hint}"
        );
    }
    match result {
        Ok(Decoded::Frame { frame, consumed }) => {
            assert!(consumed >= 1, "{context}: consumed 0");
            assert!(consumed <= buf.len(), "{context}: consumed {consumed}");
            let limit = framer.max_frame_bytes() as usize + framer.trailer().len();
            assert!(
                consumed <= limit,
                "{context}: consumed {consumed} over the limit"
            );
            assert!(
                frame.payload.start <= frame.payload.end && frame.payload.end <= consumed,
                "{context}: payload {:?} consumed {consumed}",
                frame.payload
            );
            if let Some(hint) = hint {
                assert_eq!(hint, consumed, "{context}: hint disagrees");
            }
            Some((buf[frame.payload].to_vec(), consumed))
        }
        Ok(Decoded::Incomplete) => {
            if let Some(hint) = hint {
                assert!(hint > buf.len(), "{context}: incomplete but hint {hint}");
            }
            None
        }
        Err(err) => {
            assert!(!err.to_string().is_empty());
            assert_eq!(hint, None, "{context}: error {err} but hint");
            None
        }
    }
}

/// Decodes frames from the start of `buf` until none is left; returns the
/// payloads and the total consumed.
fn decode_all(framer: &Framer, buf: &[u8], context: &str) -> (Vec<Vec<u8>>, usize) {
    let mut at = 0;
    let mut payloads = Vec::new();
    while let Some((payload, consumed)) = checked_decode(framer, &buf[at..], context) {
        payloads.push(payload);
        at += consumed;
    }
    (payloads, at)
}

fn mutate(rng: &mut Rng, wire: &mut Vec<u8>) {
    for _ in 0..rng.range(1, 4) {
        match rng.below(5) {
            0 if !wire.is_empty() => {
                let at = rng.below(wire.len());
                wire[at] ^= 1 << rng.below(8);
            }
            1 => {
                let at = rng.below(wire.len() + 1);
                wire.insert(at, rng.next() as u8);
            }
            2 if !wire.is_empty() => {
                let at = rng.below(wire.len());
                wire.remove(at);
            }
            3 if !wire.is_empty() => {
                let at = rng.below(wire.len());
                let end = (at + rng.below(16)).min(wire.len());
                for b in &mut wire[at..end] {
                    *b = rng.next() as u8;
                }
            }
            _ => {
                let len = rng.below(64);
                let narrow = rng.chance(2);
                *wire = random_bytes(rng, len, narrow);
            }
        }
    }
}

#[test]
fn random_configs_and_payloads() {
    let mut built = 0usize;
    let mut round_trips = 0usize;
    for seed in 0..SEEDS {
        let mut rng = Rng(seed);
        for case in 0..CONFIGS_PER_SEED {
            let (config, max) = random_config(&mut rng);
            let context = format!("seed {seed} case {case} max {max} {config:?}");
            let Ok(framer) = Framer::new(&config, max) else {
                continue;
            };
            built += 1;
            let framer = framer.clone();

            let mut stream = Vec::new();
            let mut expected = Vec::new();
            let mut boundaries = vec![0];
            for _ in 0..rng.range(1, 5) {
                let payload = random_payload(&mut rng, &config, max);
                let Some(encoded) = encode_checked(&framer, &config, &payload, &context) else {
                    continue;
                };
                round_trips += 1;
                // (a) a lone frame round-trips, and each prefix is incomplete.
                let delivered = expected_delivery(&config, &payload, &encoded);
                assert_eq!(
                    checked_decode(&framer, &encoded, &context),
                    Some((delivered.clone(), encoded.len())),
                    "{context}: payload {payload:02x?}"
                );
                check_prefixes(&mut rng, &framer, &encoded, &context);
                stream.extend_from_slice(&encoded);
                boundaries.push(stream.len());
                expected.push(delivered);
            }

            // (b) concatenated frames decode in sequence.
            let (payloads, consumed) = decode_all(&framer, &stream, &context);
            assert_eq!(payloads, expected, "{context}");
            assert_eq!(consumed, stream.len(), "{context}");

            // (c) a truncated stream gives the whole frames before the cut, then stops.
            for _ in 0..4 {
                let cut = rng.below(stream.len() + 1);
                let whole = boundaries.iter().filter(|b| **b <= cut).count() - 1;
                let (payloads, consumed) = decode_all(&framer, &stream[..cut], &context);
                assert_eq!(payloads, expected[..whole], "{context}: cut {cut}");
                assert_eq!(consumed, boundaries[whole], "{context}: cut {cut}");
                assert_eq!(
                    framer.decode(&stream[consumed..cut]),
                    Ok(Decoded::Incomplete),
                    "{context}: cut {cut}"
                );
            }

            // (d) mutations never panic nor break the invariants.
            for _ in 0..8 {
                let mut wire = stream.clone();
                mutate(&mut rng, &mut wire);
                decode_all(&framer, &wire, &context);
            }
        }
    }
    // The generator must mostly produce usable configs and payloads.
    let total = (SEEDS as usize) * CONFIGS_PER_SEED;
    assert!(
        built * 10 >= total * 7,
        "only {built} of {total} configs built"
    );
    assert!(round_trips >= built, "only {round_trips} round trips");
}

/// Encodes `payload` all three ways; they must agree. `None` when refused,
/// after checking the refusal is justified.
fn encode_checked(
    framer: &Framer,
    config: &FramingConfig,
    payload: &[u8],
    context: &str,
) -> Option<Vec<u8>> {
    let mut appended = vec![0xEE];
    let result = framer.encode_into(payload, &mut appended);
    let mut slice = vec![0; payload.len() + 80];
    let written = framer.encode(payload, &mut slice);
    let len = framer.encoded_len(payload.len());
    if let Err(err) = result {
        assert_eq!(appended, [0xEE], "{context}");
        assert_eq!(written, Err(err.clone()), "{context}");
        check_refusal(framer, config, payload, &err, context);
        return None;
    }
    let encoded = appended.split_off(1);
    assert_eq!(len, Ok(encoded.len()), "{context}");
    assert_eq!(written, Ok(encoded.len()), "{context}");
    assert_eq!(slice[..encoded.len()], encoded[..], "{context}");
    let mut header = [0; shoal_protocols::framing::MAX_HEADER_BYTES];
    let header_len = framer.encode_header(payload.len(), &mut header).unwrap();
    let pieces = [&header[..header_len], payload, framer.trailer()].concat();
    assert_eq!(pieces, encoded, "{context}");
    assert!(!encoded.is_empty(), "{context}");
    if let Some(short) = encoded.len().checked_sub(1) {
        assert_eq!(
            framer.encode(payload, &mut vec![0; short]),
            Err(FramingError::BufferTooSmall {
                needed: encoded.len(),
                got: short
            }),
            "{context}"
        );
    }
    Some(encoded)
}

fn check_refusal(
    framer: &Framer,
    config: &FramingConfig,
    payload: &[u8],
    err: &FramingError,
    context: &str,
) {
    let max = framer.max_frame_bytes() as usize;
    match (config, err) {
        (FramingConfig::Delimiter { delimiter, .. }, FramingError::PayloadContainsDelimiter) => {
            // The decoder would indeed stop early.
            let wire = [payload, delimiter.as_bytes()].concat();
            let first = checked_decode(framer, &wire, context);
            assert!(
                matches!(first, Some((_, consumed)) if consumed < wire.len()),
                "{context}: refused {payload:02x?}"
            );
        }
        (FramingConfig::Delimiter { .. }, FramingError::FrameTooLarge { .. }) => {
            assert!(payload.len() > max, "{context}");
        }
        (FramingConfig::FixedLength { frame_bytes }, FramingError::PayloadLength { .. }) => {
            assert_ne!(payload.len(), *frame_bytes as usize, "{context}");
        }
        (
            FramingConfig::LengthField { .. },
            FramingError::FrameTooLarge { .. }
            | FramingError::LengthFieldOverflow { .. }
            | FramingError::StripBeyondFrame { .. },
        ) => {}
        _ => panic!("{context}: unexpected refusal {err:?}"),
    }
}

/// Every strict prefix of one whole frame is incomplete (all prefixes for
/// small frames, a sample for large ones).
fn check_prefixes(rng: &mut Rng, framer: &Framer, encoded: &[u8], context: &str) {
    let lens: Vec<usize> = if encoded.len() <= 48 {
        (0..encoded.len()).collect()
    } else {
        (0..16).map(|_| rng.below(encoded.len())).collect()
    };
    for len in lens {
        assert_eq!(
            checked_decode(framer, &encoded[..len], context),
            None,
            "{context}: prefix {len}"
        );
        assert_eq!(
            framer.decode(&encoded[..len]),
            Ok(Decoded::Incomplete),
            "{context}: prefix {len}"
        );
    }
}

#[test]
fn random_garbage_on_fixed_configs() {
    // Pure noise through each rule with tight limits: no panic, invariants hold.
    let configs = [
        FramingConfig::default(),
        FramingConfig::LengthField {
            offset: 3,
            width: 8,
            byte_order: ByteOrder::LittleEndian,
            adjustment: -11,
            strip_bytes: Some(0),
        },
        FramingConfig::LengthField {
            offset: 0,
            width: 1,
            byte_order: ByteOrder::BigEndian,
            adjustment: 3,
            strip_bytes: Some(6),
        },
        FramingConfig::Delimiter {
            delimiter: "\r\n".into(),
            strip_delimiter: true,
        },
        FramingConfig::Delimiter {
            delimiter: "\u{ff}".into(),
            strip_delimiter: false,
        },
        FramingConfig::FixedLength { frame_bytes: 3 },
    ];
    let mut rng = Rng(0x5EED);
    for config in &configs {
        for max in [1u32, 7, 64, 4096] {
            let Ok(framer) = Framer::new(config, max) else {
                continue;
            };
            for _ in 0..300 {
                let len = rng.below(200);
                let narrow = rng.chance(2);
                let wire = random_bytes(&mut rng, len, narrow);
                decode_all(&framer, &wire, &format!("{config:?} max {max}"));
            }
        }
    }
}
