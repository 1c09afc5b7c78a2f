//! Decodes the input as AMF0, one value and as a whole body, with limits
//! picked by the first byte. A value must take no more than it was given
//! and respect the limits; every decoded value is encoded again and must
//! decode to a value that encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_protocols::amf0::{self, Amf0Error, Amf0Limits, Amf0Value, Decoded};

fn depth_of(value: &Amf0Value) -> usize {
    let inner = match value {
        Amf0Value::Object(props)
        | Amf0Value::EcmaArray(props)
        | Amf0Value::TypedObject {
            properties: props, ..
        } => props.iter().map(|(_, v)| depth_of(v)).max(),
        Amf0Value::StrictArray(items) => items.iter().map(depth_of).max(),
        _ => return 0,
    };
    1 + inner.unwrap_or(0)
}

fn check_round_trip(value: &Amf0Value, limits: &Amf0Limits) {
    let mut wire = Vec::new();
    amf0::encode(value, &mut wire);
    match amf0::decode(&wire, limits) {
        Ok(Decoded::Frame { frame, consumed }) => {
            assert_eq!(consumed, wire.len(), "re-encoded value not consumed whole");
            let mut again = Vec::new();
            amf0::encode(&frame, &mut again);
            assert_eq!(again, wire, "encode(decode(encode(v))) != encode(v)");
        }
        other => panic!("re-encoded value does not decode: {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&setup, input)) = data.split_first() else {
        return;
    };
    let limits = Amf0Limits {
        max_depth: usize::from(setup & 0x0F) * 3,
        max_elements: [1usize, 16, 256, 4096][usize::from(setup >> 4 & 3)],
    };

    let mut at = 0;
    while at < input.len() {
        match amf0::decode(&input[at..], &limits) {
            Ok(Decoded::Frame { frame, consumed }) => {
                assert!(
                    consumed >= 1 && consumed <= input.len() - at,
                    "consumed past the input"
                );
                assert!(
                    depth_of(&frame) <= limits.max_depth,
                    "nested past the limit"
                );
                check_round_trip(&frame, &limits);
                at += consumed;
            }
            Ok(Decoded::Incomplete) => {
                // The same bytes as a whole body are cut.
                assert_eq!(
                    amf0::decode_all(&input[at..], &limits),
                    Err(Amf0Error::Truncated)
                );
                break;
            }
            Err(_) => break,
        }
    }

    if let Ok(values) = amf0::decode_all(input, &limits) {
        let mut wire = Vec::new();
        for value in &values {
            assert!(depth_of(value) <= limits.max_depth);
            amf0::encode(value, &mut wire);
        }
        let back = amf0::decode_all(&wire, &limits).expect("re-encoded body decodes");
        assert_eq!(back.len(), values.len());
    }
});
