//! Options and their getters, the builder, codes and tokens, and what
//! libcoap sends.

use super::*;

// --- Options -----------------------------------------------------------------

#[test]
fn check_options_rules() {
    let build = |options: &[(u16, &[u8])]| {
        let mut builder = MessageBuilder::new(MessageType::Confirmable, Code::GET, 1, Token::EMPTY);
        for (number, value) in options {
            builder.option(OptionNumber(*number), value).unwrap();
        }
        let mut wire = Vec::new();
        builder.encode(&mut wire);
        wire
    };
    let reason_of = |wire: &[u8]| match decode(wire).unwrap().check_options() {
        Ok(()) => None,
        Err(CoapError::BadOption { number, reason, .. }) => Some((number.0, reason)),
        Err(other) => panic!("{other:?}"),
    };
    // Unknown elective options are ignored, unknown critical ones are not.
    assert_eq!(reason_of(&build(&[(2, b"x"), (1000, b"")])), None);
    assert_eq!(
        reason_of(&build(&[(1001, b"")])),
        Some((1001, BadOptionReason::Unrecognized))
    );
    // Uri-Port is at most 2 bytes.
    assert_eq!(
        reason_of(&build(&[(7, &[1, 2, 3])])),
        Some((7, BadOptionReason::BadLength { len: 3 }))
    );
    // Uri-Host is at least 1 byte.
    assert_eq!(
        reason_of(&build(&[(3, b"")])),
        Some((3, BadOptionReason::BadLength { len: 0 }))
    );
    // Repeatable critical options may repeat, others may not.
    assert_eq!(
        reason_of(&build(&[(11, b"a"), (11, b"b"), (15, b"q"), (15, b"r")])),
        None
    );
    assert_eq!(
        reason_of(&build(&[(17, &[0]), (17, &[50])])),
        Some((17, BadOptionReason::Repeated))
    );
    assert_eq!(
        reason_of(&build(&[(27, &[0]), (27, &[8])])),
        Some((27, BadOptionReason::Repeated))
    );
    // Electives with bad lengths or repeated are ignored by the check, and
    // the getters skip a bad value.
    let wire = build(&[(12, &[0, 0, 50]), (14, &[0, 0, 0, 0, 1])]);
    let message = decode(&wire).unwrap();
    assert_eq!(message.check_options(), Ok(()));
    assert_eq!(message.content_format(), None);
    assert_eq!(message.max_age(), None);
    let wire = build(&[(12, &[50]), (12, &[0])]);
    assert_eq!(
        decode(&wire).unwrap().content_format(),
        Some(ContentFormat::JSON)
    );
    // Leading zeros are accepted in a uint value.
    let wire = build(&[(12, &[0, 60]), (60, &[0, 0, 1, 0])]);
    let message = decode(&wire).unwrap();
    assert_eq!(message.content_format(), Some(ContentFormat::CBOR));
    assert_eq!(message.size1(), Some(256));
}

#[test]
fn option_number_properties() {
    assert!(OptionNumber::URI_PATH.is_critical() && OptionNumber::URI_PATH.is_repeatable());
    assert!(!OptionNumber::CONTENT_FORMAT.is_critical());
    assert!(OptionNumber::URI_HOST.is_unsafe() && !OptionNumber::ETAG.is_unsafe());
    assert!(OptionNumber::SIZE1.is_no_cache_key());
    assert!(!OptionNumber::URI_QUERY.is_no_cache_key());
    for number in [
        1, 3, 4, 5, 6, 7, 8, 11, 12, 14, 15, 17, 20, 23, 27, 28, 35, 39, 60,
    ] {
        assert!(OptionNumber(number).is_known(), "{number}");
        assert!(OptionNumber(number).name().is_some(), "{number}");
    }
    assert!(!OptionNumber(9).is_known());
    assert_eq!(OptionNumber::BLOCK2.to_string(), "23 (Block2)");
    assert_eq!(OptionNumber(1001).to_string(), "1001");
    assert_eq!(
        ContentFormat::LINK_FORMAT.media_type(),
        Some("application/link-format")
    );
}

#[test]
fn uint_values() {
    for (value, bytes) in [
        (0u32, &[][..]),
        (1, &[1]),
        (255, &[0xff]),
        (256, &[1, 0]),
        (65535, &[0xff, 0xff]),
        (65536, &[1, 0, 0]),
        (0x00ff_ffff, &[0xff, 0xff, 0xff]),
        (u32::MAX, &[0xff, 0xff, 0xff, 0xff]),
    ] {
        assert_eq!(encode_uint(value).as_slice(), bytes, "{value}");
        assert_eq!(decode_uint(bytes), Some(value));
    }
    assert_eq!(decode_uint(&[0, 0, 0, 7]), Some(7));
    assert_eq!(decode_uint(&[0, 0, 0, 0, 7]), None);
}

#[test]
fn builder_keeps_repeated_options_in_order() {
    let mut builder = MessageBuilder::new(
        MessageType::Confirmable,
        Code::POST,
        5,
        Token::from_u64(0x0102, 2),
    );
    builder
        .uri_query("b=2")
        .unwrap()
        .uri_path("devices/d1")
        .unwrap()
        .content_format(ContentFormat::JSON)
        .unwrap()
        .uri_query("a=1")
        .unwrap()
        .uri_path("up")
        .unwrap()
        .observe(0x0100_0005)
        .unwrap();
    let mut wire = Vec::new();
    builder.encode(&mut wire);
    let message = decoded(&wire);
    assert_eq!(message.token.as_bytes(), [1, 2]);
    let options: Vec<(u16, &[u8])> = message.options().map(|o| (o.number.0, o.value)).collect();
    assert_eq!(
        options,
        [
            (6, &[5][..]),
            (11, b"devices"),
            (11, b"d1"),
            (11, b"up"),
            (12, &[50]),
            (15, b"b=2"),
            (15, b"a=1"),
        ]
    );
    let items: Vec<QueryItem<'_>> = message.uri_query().collect();
    assert_eq!(
        items[0],
        QueryItem {
            name: b"b",
            value: Some(b"2")
        }
    );
    assert_eq!(message.query_value("a"), Some(&b"1"[..]));
    assert_eq!(message.query_value("c"), None);
    assert_eq!(message.observe(), Some(5));

    // The builder's capacity.
    let mut full = MessageBuilder::new(MessageType::NonConfirmable, Code::POST, 1, Token::EMPTY);
    for _ in 0..MAX_BUILDER_OPTIONS {
        full.option(OptionNumber(2), b"").unwrap();
    }
    assert_eq!(
        full.option(OptionNumber(2), b"").unwrap_err(),
        CoapError::BuilderFull {
            limit: MAX_BUILDER_OPTIONS
        }
    );
}

#[test]
fn query_items_and_paths() {
    assert_eq!(
        QueryItem::parse(b"secret="),
        QueryItem {
            name: b"secret",
            value: Some(b"")
        }
    );
    assert_eq!(
        QueryItem::parse(b"obs"),
        QueryItem {
            name: b"obs",
            value: None
        }
    );
    assert_eq!(
        QueryItem::parse(b"a=b=c"),
        QueryItem {
            name: b"a",
            value: Some(b"b=c")
        }
    );
    // A bare name is found with an empty value.
    let wire = [0x40, 0x01, 0, 1, 0xd3, 0x02, b'o', b'b', b's']; // Uri-Query "obs"
    let message = decoded(&wire);
    assert_eq!(message.query_value("obs"), Some(&b""[..]));
    let mut path = String::new();
    message.write_path(&mut path).unwrap();
    assert_eq!(path, "/");
    assert!(message.uri_path_is(&[]));
    // A path segment that is not UTF-8: 4.00 for a request, nothing written.
    let wire = [0x40, 0x01, 0, 1, 0xb1, b'a', 0x02, 0xc3, 0x28];
    let mut path = String::from("keep");
    let error = decoded(&wire).write_path(&mut path).unwrap_err();
    assert_eq!(path, "keep");
    assert_eq!(error.reaction(), Reaction::Respond(Code::BAD_REQUEST));
}

#[test]
fn codes_and_tokens() {
    assert_eq!(Code::CONTINUE.to_string(), "2.31");
    assert_eq!(Code::REQUEST_ENTITY_TOO_LARGE.0, 0x8d);
    assert_eq!(Code::NOT_FOUND.0, 0x84);
    assert_eq!(Code::SERVICE_UNAVAILABLE.to_string(), "5.03");
    assert!(Code::GET.is_request() && !Code::EMPTY.is_request());
    assert!(Code::CHANGED.is_response() && !Code::GET.is_response());
    assert_eq!(
        (
            Code::UNSUPPORTED_CONTENT_FORMAT.class(),
            Code::UNSUPPORTED_CONTENT_FORMAT.detail()
        ),
        (4, 15)
    );
    assert_eq!(Token::new(&[0; 9]), None);
    assert_eq!(Token::from_u64(0x0102_0304, 3).as_bytes(), [2, 3, 4]);
    assert_eq!(Token::from_u64(7, 12).len(), 8);
    assert!(Token::EMPTY.is_empty());
    assert_eq!(
        format!("{:?}", Token::new(&[0xab, 0x01]).unwrap()),
        "Token(ab01)"
    );
    for bits in 0..4 {
        assert_eq!(MessageType::from_bits(bits).bits(), bits);
    }
}

// --- What libcoap sends --------------------------------------------------------

#[test]
fn libcoap_post_with_query() {
    let wire = hex(libcoap::POST_QUERY);
    let message = decoded(&wire);
    assert_eq!(message.mtype, MessageType::Confirmable);
    assert_eq!(message.code, Code::POST);
    assert_eq!(message.message_id, 0x5a9b);
    assert_eq!(message.token.as_bytes(), [0x01]);
    assert_eq!(message.uint_option(OptionNumber::URI_PORT), Some(56831));
    assert!(message.uri_path_is(&["devices", "d1", "up"]));
    assert_eq!(message.query_value("secret"), Some(&b"s3cr3t"[..]));
    assert_eq!(message.payload, b"hello");
    assert_eq!(message.check_options(), Ok(()));
    assert_eq!(message.block1(), Ok(None));
}

#[test]
fn libcoap_blockwise_get() {
    let mut tokens = Vec::new();
    for (num, text) in libcoap::BLOCK_GET.iter().enumerate() {
        let wire = hex(text);
        let message = decoded(&wire);
        assert_eq!(message.code, Code::GET);
        assert!(message.uri_path_is(&["devices", "d1", "down"]));
        assert_eq!(message.check_options(), Ok(()));
        let block = message.block2().unwrap().unwrap();
        assert_eq!(
            (block.num(), block.more(), block.size()),
            (num as u32, false, 64)
        );
        tokens.push(message.token);
    }
    // libcoap changes the token after the first request.
    assert_eq!(tokens[0].len(), 1);
    assert_eq!(tokens[1].len(), 7);
    assert_ne!(tokens[1], tokens[2]);
}

#[test]
fn libcoap_observe_registration() {
    let wire = hex(libcoap::OBSERVE_GET);
    let message = decoded(&wire);
    assert_eq!(message.observe(), Some(0));
    assert_eq!(message.observe_request(), Some(ObserveRequest::Register));
    assert!(message.uri_path_is(&["devices", "d1", "down"]));
    assert_eq!(message.check_options(), Ok(()));
}
