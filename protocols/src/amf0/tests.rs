//! AMF0 byte vectors (AMF0 specification §2), round trips and limits.

use super::*;

fn one(buf: &[u8]) -> (Amf0Value, usize) {
    match decode(buf, &Amf0Limits::default()).unwrap() {
        Decoded::Frame { frame, consumed } => (frame, consumed),
        Decoded::Incomplete => panic!("incomplete: {buf:02x?}"),
    }
}

fn encoded(value: &Amf0Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode(value, &mut out);
    out
}

/// Every strict prefix of `wire` is incomplete for `decode`, truncated for
/// `decode_all`.
fn assert_prefixes_incomplete(wire: &[u8]) {
    for len in 0..wire.len() {
        assert_eq!(
            decode(&wire[..len], &Amf0Limits::default()),
            Ok(Decoded::Incomplete),
            "prefix {len} of {wire:02x?}"
        );
        if len > 0 {
            assert_eq!(
                decode_all(&wire[..len], &Amf0Limits::default()),
                Err(Amf0Error::Truncated),
                "prefix {len} of {wire:02x?}"
            );
        }
    }
}

#[test]
fn number() {
    let wire = [
        0x00, // number marker
        0x40, 0x09, 0x21, 0xfb, 0x54, 0x44, 0x2d, 0x18, // 3.141592653589793, f64 BE
    ];
    let (value, consumed) = one(&wire);
    assert_eq!(value, Amf0Value::Number(std::f64::consts::PI));
    assert_eq!(consumed, 9);
    assert_eq!(encoded(&value), wire);
    assert_prefixes_incomplete(&wire);
}

#[test]
fn boolean_null_undefined() {
    assert_eq!(one(&[0x01, 0x00]), (Amf0Value::Boolean(false), 2));
    // Any non-zero byte is true; it is written back as 1.
    assert_eq!(one(&[0x01, 0x07]), (Amf0Value::Boolean(true), 2));
    assert_eq!(encoded(&Amf0Value::Boolean(true)), [0x01, 0x01]);
    assert_eq!(one(&[0x05]), (Amf0Value::Null, 1));
    assert_eq!(one(&[0x06]), (Amf0Value::Undefined, 1));
    assert_eq!(encoded(&Amf0Value::Null), [0x05]);
    assert_eq!(encoded(&Amf0Value::Undefined), [0x06]);
}

#[test]
fn string() {
    let wire = [
        0x02, // string marker
        0x00, 0x07, // length 7
        b'c', b'o', b'n', b'n', b'e', b'c', b't',
    ];
    let (value, consumed) = one(&wire);
    assert_eq!(value.as_str(), Some("connect"));
    assert_eq!(consumed, wire.len());
    assert_eq!(encoded(&value), wire);
    assert_prefixes_incomplete(&wire);

    // Invalid UTF-8 is replaced, not refused.
    let (value, _) = one(&[0x02, 0x00, 0x02, 0xff, b'a']);
    assert_eq!(value.as_str(), Some("\u{fffd}a"));
}

#[test]
fn long_string_and_automatic_switch() {
    let wire = [
        0x0c, // long string marker
        0x00, 0x00, 0x00, 0x02, // length 2
        b'h', b'i',
    ];
    let (value, _) = one(&wire);
    assert_eq!(value, Amf0Value::LongString("hi".into()));
    assert_eq!(encoded(&value), wire);

    // A String over 65535 bytes goes out as a long string.
    let big = "x".repeat(70_000);
    let out = encoded(&Amf0Value::String(big.clone()));
    assert_eq!(out[0], 0x0c);
    assert_eq!(&out[1..5], &70_000u32.to_be_bytes());
    assert_eq!(one(&out).0, Amf0Value::LongString(big));
}

#[test]
fn object_with_end_marker() {
    let wire = [
        0x03, // object marker
        0x00, 0x03, b'a', b'p', b'p', // key "app"
        0x02, 0x00, 0x04, b'l', b'i', b'v', b'e', // string "live"
        0x00, 0x0e, b'o', b'b', b'j', b'e', b'c', b't', b'E', b'n', b'c', b'o', b'd', b'i', b'n',
        b'g', // key "objectEncoding"
        0x00, 0, 0, 0, 0, 0, 0, 0, 0, // number 0
        0x00, 0x00, 0x09, // empty key + object end
    ];
    let (value, consumed) = one(&wire);
    assert_eq!(consumed, wire.len());
    assert_eq!(value.get("app").and_then(Amf0Value::as_str), Some("live"));
    assert_eq!(
        value.get("objectEncoding").and_then(Amf0Value::as_f64),
        Some(0.0)
    );
    assert_eq!(value.get("missing"), None);
    assert_eq!(encoded(&value), wire);
    assert_prefixes_incomplete(&wire);

    let mut written = Vec::new();
    write_object(
        &mut written,
        &[
            ("app", Amf0Value::from("live")),
            ("objectEncoding", Amf0Value::from(0.0)),
        ],
    );
    assert_eq!(written, wire);
}

#[test]
fn empty_key_without_end_marker_is_a_property() {
    let wire = [
        0x03, // object
        0x00, 0x00, 0x05, // empty key, value null
        0x00, 0x00, 0x09, // end
    ];
    let (value, consumed) = one(&wire);
    assert_eq!(consumed, wire.len());
    assert_eq!(
        value,
        Amf0Value::Object(vec![(String::new(), Amf0Value::Null)])
    );
}

#[test]
fn ecma_array_count_is_a_hint() {
    let wire = [
        0x08, // ECMA array marker
        0x00, 0x00, 0x00, 0x05, // count hint 5 (only one property follows)
        0x00, 0x05, b'w', b'i', b'd', b't', b'h', // key "width"
        0x00, 0x40, 0x94, 0x00, 0, 0, 0, 0, 0, // 1280.0
        0x00, 0x00, 0x09, // end
    ];
    let (value, consumed) = one(&wire);
    assert_eq!(consumed, wire.len());
    assert_eq!(
        value,
        Amf0Value::EcmaArray(vec![("width".into(), Amf0Value::Number(1280.0))])
    );
    // Encoding writes the true count.
    let out = encoded(&value);
    assert_eq!(&out[1..5], &[0, 0, 0, 1]);
    assert_eq!(one(&out).0, value);
}

#[test]
fn strict_array_date_reference_xml_typed() {
    let wire = [
        0x0a, // strict array
        0x00, 0x00, 0x00, 0x02, // 2 values
        0x05, // null
        0x01, 0x01, // true
    ];
    let (value, _) = one(&wire);
    assert_eq!(
        value,
        Amf0Value::StrictArray(vec![Amf0Value::Null, Amf0Value::Boolean(true)])
    );
    assert_eq!(encoded(&value), wire);
    assert_prefixes_incomplete(&wire);

    let date = [
        0x0b, // date
        0x42, 0x77, 0x4b, 0x50, 0x90, 0x00, 0x00, 0x00, // 1.6e12 ms
        0x00, 0x00, // time zone 0
    ];
    let (value, consumed) = one(&date);
    assert_eq!(consumed, 11);
    assert!(matches!(value, Amf0Value::Date { tz: 0, .. }));
    assert_eq!(encoded(&value), date);

    assert_eq!(one(&[0x07, 0x00, 0x03]).0, Amf0Value::Reference(3));
    assert_eq!(
        one(&[0x0f, 0, 0, 0, 3, b'<', b'a', b'>']).0,
        Amf0Value::XmlDocument("<a>".into())
    );

    let typed = [
        0x10, // typed object
        0x00, 0x01, b'C', // class name "C"
        0x00, 0x01, b'x', 0x05, // x: null
        0x00, 0x00, 0x09, // end
    ];
    let (value, _) = one(&typed);
    assert_eq!(
        value,
        Amf0Value::TypedObject {
            class_name: "C".into(),
            properties: vec![("x".into(), Amf0Value::Null)],
        }
    );
    assert!(value.get("x").is_some_and(Amf0Value::is_null));
    assert_eq!(encoded(&value), typed);
}

#[test]
fn unsupported_markers_are_errors() {
    for m in [0x04, 0x0d, 0x0e, 0x11, 0x12, 0xff] {
        assert_eq!(
            decode(&[m, 0, 0, 0], &Amf0Limits::default()),
            Err(Amf0Error::UnsupportedMarker(m))
        );
    }
    assert_eq!(
        decode(&[0x09], &Amf0Limits::default()),
        Err(Amf0Error::UnexpectedObjectEnd)
    );
}

#[test]
fn depth_limit() {
    let limits = Amf0Limits {
        max_depth: 3,
        max_elements: 100,
    };
    // Objects nested `levels` deep: {a: {a: {...: null}}}.
    let nested = |levels: usize| {
        let mut value = Amf0Value::Null;
        for _ in 0..levels {
            value = Amf0Value::Object(vec![("a".into(), value)]);
        }
        encoded(&value)
    };
    assert!(matches!(
        decode(&nested(3), &limits),
        Ok(Decoded::Frame { .. })
    ));
    assert_eq!(
        decode(&nested(4), &limits),
        Err(Amf0Error::TooDeep { max: 3 })
    );
    // Strict arrays and ECMA arrays count too.
    let arrays = encoded(&Amf0Value::StrictArray(vec![Amf0Value::EcmaArray(vec![(
        "k".into(),
        Amf0Value::StrictArray(vec![Amf0Value::StrictArray(vec![])]),
    )])]));
    assert_eq!(decode(&arrays, &limits), Err(Amf0Error::TooDeep { max: 3 }));

    // Deep nesting of the default limit fails fast, without a deep stack:
    // 100 000 object markers, each opening an object with key "a".
    let mut hostile = Vec::new();
    for _ in 0..100_000 {
        hostile.extend_from_slice(&[0x03, 0x00, 0x01, b'a']);
    }
    assert_eq!(
        decode(&hostile, &Amf0Limits::default()),
        Err(Amf0Error::TooDeep { max: 32 })
    );
}

#[test]
fn element_limit_and_no_allocation_from_counts() {
    let limits = Amf0Limits {
        max_depth: 8,
        max_elements: 4,
    };
    let three = encoded(&Amf0Value::StrictArray(vec![Amf0Value::Null; 3]));
    assert!(matches!(decode(&three, &limits), Ok(Decoded::Frame { .. })));
    let four = encoded(&Amf0Value::StrictArray(vec![Amf0Value::Null; 4]));
    assert_eq!(
        decode(&four, &limits),
        Err(Amf0Error::TooManyElements { max: 4 })
    );
    // decode_all counts across values.
    assert_eq!(
        decode_all(&[0x05; 5], &limits),
        Err(Amf0Error::TooManyElements { max: 4 })
    );
    assert_eq!(decode_all(&[0x05; 4], &limits).unwrap().len(), 4);

    // A huge declared count with little input: refused, never reserved.
    assert_eq!(
        decode(
            &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x05],
            &Amf0Limits::default()
        ),
        Err(Amf0Error::TooManyElements { max: 4096 })
    );
    // Within the element limit but past the input: more bytes may come.
    assert_eq!(
        decode(
            &[0x0a, 0x00, 0x00, 0x01, 0x00, 0x05],
            &Amf0Limits::default()
        ),
        Ok(Decoded::Incomplete)
    );
    // A long string longer than the input is incomplete, not allocated.
    assert_eq!(
        decode(
            &[0x0c, 0xff, 0xff, 0xff, 0xff, b'a'],
            &Amf0Limits::default()
        ),
        Ok(Decoded::Incomplete)
    );
}

#[test]
fn decode_all_reads_a_command_body() {
    let mut body = Vec::new();
    write_string(&mut body, "_result");
    write_number(&mut body, 1.0);
    write_null(&mut body);
    write_undefined(&mut body);
    write_boolean(&mut body, true);
    write_object_start(&mut body);
    write_key(&mut body, "level");
    write_string(&mut body, "status");
    write_object_end(&mut body);
    write_ecma_array(&mut body, &[("duration", Amf0Value::from(0.0))]);
    let values = decode_all(&body, &Amf0Limits::default()).unwrap();
    assert_eq!(
        values,
        vec![
            Amf0Value::from("_result"),
            Amf0Value::Number(1.0),
            Amf0Value::Null,
            Amf0Value::Undefined,
            Amf0Value::Boolean(true),
            Amf0Value::Object(vec![("level".into(), Amf0Value::from("status"))]),
            Amf0Value::EcmaArray(vec![("duration".into(), Amf0Value::Number(0.0))]),
        ]
    );
    assert_eq!(decode_all(&[], &Amf0Limits::default()), Ok(vec![]));
}

#[test]
fn long_keys_are_cut_on_a_char_boundary() {
    // 'é' is two bytes: 32767 of them plus one more make 65536 bytes.
    let key = "é".repeat(32_768);
    let mut out = Vec::new();
    write_key(&mut out, &key);
    let len = usize::from(u16::from_be_bytes([out[0], out[1]]));
    assert_eq!(len, 65_534);
    assert!(std::str::from_utf8(&out[2..]).is_ok());
}
