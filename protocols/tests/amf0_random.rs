//! Seeded randomized checks of `amf0`: random value trees round-trip
//! through encode → decode (one value, and a body of several); every cut of
//! an encoding is `Incomplete` for `decode` and `Truncated` for
//! `decode_all`; mutated and random bytes never panic, never consume past
//! the input, never break the limits, and what decodes re-encodes to bytes
//! that decode to the same value. Fixed seeds, so a failure names the seed
//! that reproduces it.

mod support;

use shoal_protocols::amf0::{self, Amf0Error, Amf0Limits, Amf0Value, Decoded};
use support::Rng;

const SEEDS: u64 = 64;

fn random_text(rng: &mut Rng) -> String {
    const PIECES: [&str; 8] = ["a", "Z", "0", " ", "é", "κ", "🦀", "onMetaData"];
    let len = match rng.below(10) {
        0 => 0,
        1 => rng.range(60, 200) as usize,
        _ => rng.below(8),
    };
    (0..len).map(|_| *rng.pick(&PIECES)).collect()
}

fn random_number(rng: &mut Rng) -> f64 {
    match rng.below(4) {
        0 => *rng.pick(&[
            0.0,
            -0.0,
            1.0,
            -1.0,
            1e300,
            f64::INFINITY,
            f64::MIN_POSITIVE,
        ]),
        1 => rng.range(0, 100_000) as f64,
        // Any bit pattern, NaNs included: compared as bytes.
        2 => f64::from_bits(rng.next()),
        _ => rng.range(0, 1 << 40) as f64 / 1000.0,
    }
}

fn random_props(rng: &mut Rng, depth: usize) -> Vec<(String, Amf0Value)> {
    (0..rng.below(5))
        .map(|_| {
            let mut key = random_text(rng);
            if key.is_empty() {
                key.push('k');
            }
            (key, random_value(rng, depth))
        })
        .collect()
}

/// A value with at most `depth` more levels of containers.
fn random_value(rng: &mut Rng, depth: usize) -> Amf0Value {
    let kinds = if depth == 0 { 8 } else { 12 };
    match rng.below(kinds) {
        0 => Amf0Value::Number(random_number(rng)),
        1 => Amf0Value::Boolean(rng.chance(2)),
        2 => Amf0Value::String(random_text(rng)),
        3 => Amf0Value::Null,
        4 => Amf0Value::Undefined,
        5 => Amf0Value::Reference(rng.next() as u16),
        6 => Amf0Value::Date {
            millis: random_number(rng),
            tz: rng.next() as i16,
        },
        7 => match rng.below(2) {
            0 => Amf0Value::LongString(random_text(rng)),
            _ => Amf0Value::XmlDocument(random_text(rng)),
        },
        8 => Amf0Value::Object(random_props(rng, depth - 1)),
        9 => Amf0Value::EcmaArray(random_props(rng, depth - 1)),
        10 => Amf0Value::StrictArray(
            (0..rng.below(5))
                .map(|_| random_value(rng, depth - 1))
                .collect(),
        ),
        _ => Amf0Value::TypedObject {
            class_name: random_text(rng),
            properties: random_props(rng, depth - 1),
        },
    }
}

fn encoded(value: &Amf0Value) -> Vec<u8> {
    let mut out = Vec::new();
    amf0::encode(value, &mut out);
    out
}

/// Containers nested in `value`, counting itself.
fn depth_of(value: &Amf0Value) -> usize {
    match value {
        Amf0Value::Object(props)
        | Amf0Value::EcmaArray(props)
        | Amf0Value::TypedObject {
            properties: props, ..
        } => 1 + props.iter().map(|(_, v)| depth_of(v)).max().unwrap_or(0),
        Amf0Value::StrictArray(items) => 1 + items.iter().map(depth_of).max().unwrap_or(0),
        _ => 0,
    }
}

/// Values in `value`, counting itself.
fn count_of(value: &Amf0Value) -> usize {
    1 + match value {
        Amf0Value::Object(props)
        | Amf0Value::EcmaArray(props)
        | Amf0Value::TypedObject {
            properties: props, ..
        } => props.iter().map(|(_, v)| count_of(v)).sum(),
        Amf0Value::StrictArray(items) => items.iter().map(count_of).sum(),
        _ => 0,
    }
}

/// Decodes one value and checks the decoder's promises.
fn checked_decode(buf: &[u8], limits: &Amf0Limits, context: &str) -> Option<(Amf0Value, usize)> {
    match amf0::decode(buf, limits) {
        Ok(Decoded::Frame { frame, consumed }) => {
            assert!(consumed >= 1 && consumed <= buf.len(), "{context}");
            assert!(depth_of(&frame) <= limits.max_depth, "{context}: too deep");
            assert!(
                count_of(&frame) <= limits.max_elements,
                "{context}: too many"
            );
            // What decodes re-encodes to bytes that decode the same.
            let again = encoded(&frame);
            match amf0::decode(&again, limits) {
                Ok(Decoded::Frame {
                    frame: back,
                    consumed,
                }) => {
                    assert_eq!(consumed, again.len(), "{context}");
                    assert_eq!(encoded(&back), again, "{context}");
                }
                other => panic!("{context}: re-encoded value does not decode: {other:?}"),
            }
            Some((frame, consumed))
        }
        Ok(Decoded::Incomplete) | Err(_) => None,
    }
}

#[test]
fn random_values_round_trip() {
    let limits = Amf0Limits::default();
    for seed in 0..SEEDS {
        let mut rng = Rng(100 + seed);
        for case in 0..50 {
            let context = format!("seed {seed} case {case}");
            let value = random_value(&mut rng, 4);
            let wire = encoded(&value);
            let (back, consumed) = checked_decode(&wire, &limits, &context).expect(&context);
            assert_eq!(consumed, wire.len(), "{context}");
            assert_eq!(encoded(&back), wire, "{context}");

            // Every cut is incomplete / truncated, never an error.
            let cut = rng.below(wire.len());
            assert_eq!(
                amf0::decode(&wire[..cut], &limits),
                Ok(Decoded::Incomplete),
                "{context}: cut {cut}"
            );
            if cut > 0 {
                assert_eq!(
                    amf0::decode_all(&wire[..cut], &limits),
                    Err(Amf0Error::Truncated),
                    "{context}: cut {cut}"
                );
            }
        }
    }
}

#[test]
fn random_bodies_round_trip() {
    let limits = Amf0Limits::default();
    for seed in 0..SEEDS {
        let mut rng = Rng(200 + seed);
        let values: Vec<Amf0Value> = (0..rng.range(1, 8))
            .map(|_| random_value(&mut rng, 3))
            .collect();
        let mut wire = Vec::new();
        for value in &values {
            amf0::encode(value, &mut wire);
        }
        let back = amf0::decode_all(&wire, &limits).unwrap();
        let mut again = Vec::new();
        for value in &back {
            amf0::encode(value, &mut again);
        }
        assert_eq!(again, wire, "seed {seed}");
        assert_eq!(back.len(), values.len(), "seed {seed}");
    }
}

#[test]
fn limits_hold_on_random_trees() {
    for seed in 0..SEEDS {
        let mut rng = Rng(300 + seed);
        for _ in 0..20 {
            let value = random_value(&mut rng, 6);
            let limits = Amf0Limits {
                max_depth: rng.below(7),
                max_elements: rng.range(1, 60) as usize,
            };
            let wire = encoded(&value);
            let result = amf0::decode(&wire, &limits);
            let fits =
                depth_of(&value) <= limits.max_depth && count_of(&value) <= limits.max_elements;
            match result {
                Ok(Decoded::Frame { consumed, .. }) => {
                    assert!(fits, "seed {seed}");
                    assert_eq!(consumed, wire.len());
                }
                Err(Amf0Error::TooDeep { .. } | Amf0Error::TooManyElements { .. }) => {
                    assert!(!fits, "seed {seed}")
                }
                other => panic!("seed {seed}: {other:?}"),
            }
        }
    }
}

fn mutate(rng: &mut Rng, wire: &mut Vec<u8>) {
    // AMF0 markers and length bytes.
    support::mutate(
        rng,
        wire,
        &[0x00, 0x03, 0x08, 0x09, 0x0A, 0x0C, 0x10, 0x11, 0xFF],
    );
}

#[test]
fn mutated_and_random_bytes_never_panic() {
    for seed in 0..SEEDS {
        let mut rng = Rng(400 + seed);
        for case in 0..30 {
            let value = random_value(&mut rng, 4);
            let mut wire = encoded(&value);
            mutate(&mut rng, &mut wire);
            let limits = Amf0Limits {
                max_depth: rng.range(0, 8) as usize,
                max_elements: rng.range(0, 100) as usize,
            };
            let context = format!("seed {seed} case {case}");
            checked_decode(&wire, &limits, &context);
            if let Ok(values) = amf0::decode_all(&wire, &limits) {
                let total: usize = values.iter().map(count_of).sum();
                assert!(total <= limits.max_elements, "{context}");
            }
        }
    }
    let mut rng = Rng(500);
    for _ in 0..20_000 {
        let len = rng.below(48);
        let bytes = rng.bytes(len);
        checked_decode(&bytes, &Amf0Limits::default(), "random bytes");
        let _ = amf0::decode_all(&bytes, &Amf0Limits::default());
    }
}
