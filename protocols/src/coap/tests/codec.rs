//! The message codec: vectors, options, errors and their answers.

use super::*;

// --- RFC 7252 vectors ------------------------------------------------------

#[test]
fn get_with_uri_path_segments_and_token() {
    let wire = [
        0x42, // version 1, CON, token length 2
        0x01, // 0.01 GET
        0x7d, 0x34, // message id
        0x71, 0xa4, // token
        0xb7, // delta 11 (Uri-Path), length 7
        b'd', b'e', b'v', b'i', b'c', b'e', b's', //
        0x02, // delta 0 (Uri-Path again), length 2
        b'd', b'1', //
        0x04, // Uri-Path, length 4
        b'd', b'o', b'w', b'n', //
    ];
    let message = decoded(&wire);
    assert_eq!(message.mtype, MessageType::Confirmable);
    assert_eq!(message.code, Code::GET);
    assert_eq!(message.message_id, 0x7d34);
    assert_eq!(message.token.as_bytes(), [0x71, 0xa4]);
    assert_eq!(message.option_count(), 3);
    assert!(message.payload.is_empty());
    let segments: Vec<&[u8]> = message.uri_path().collect();
    assert_eq!(segments, [&b"devices"[..], b"d1", b"down"]);
    assert!(message.uri_path_is(&["devices", "d1", "down"]));
    assert!(!message.uri_path_is(&["devices", "d1"]));
    assert!(!message.uri_path_is(&["devices", "d1", "down", "x"]));
    let mut path = String::from("x");
    message.write_path(&mut path).unwrap();
    assert_eq!(path, "x/devices/d1/down");
    assert!(message.is_request() && !message.is_empty() && !message.is_ping());
    assert_eq!(message.check_options(), Ok(()));

    let mut built = Vec::new();
    let mut builder = MessageBuilder::new(
        MessageType::Confirmable,
        Code::GET,
        0x7d34,
        Token::new(&[0x71, 0xa4]).unwrap(),
    );
    builder.uri_path("/devices/d1/down").unwrap();
    builder.encode(&mut built);
    assert_eq!(built, wire);
}

#[test]
fn piggybacked_content_ack() {
    // RFC 7252 Appendix A: ACK [0x7d34] 2.05 Content "22.3 C", here with
    // a token and Content-Format text/plain.
    let wire = [
        0x61, // version 1, ACK, token length 1
        0x45, // 2.05 Content
        0x7d, 0x34, // message id of the CON
        0x71, // token
        0xc0, // delta 12 (Content-Format), length 0: value 0 (text/plain)
        0xff, // payload marker
        b'2', b'2', b'.', b'3', b' ', b'C',
    ];
    let message = decoded(&wire);
    assert_eq!(message.mtype, MessageType::Acknowledgement);
    assert_eq!(message.code, Code::CONTENT);
    assert_eq!(message.code.to_string(), "2.05");
    assert_eq!(message.content_format(), Some(ContentFormat::TEXT_PLAIN));
    assert_eq!(message.payload, b"22.3 C");

    let request = Header {
        mtype: MessageType::Confirmable,
        code: Code::GET,
        message_id: 0x7d34,
        token: Token::new(&[0x71]).unwrap(),
    };
    let mut built = Vec::new();
    let mut response = MessageBuilder::response(&request, Code::CONTENT, 9);
    response
        .content_format(ContentFormat::TEXT_PLAIN)
        .unwrap()
        .payload(b"22.3 C");
    response.encode(&mut built);
    assert_eq!(built, wire);

    // The same response to a NON request is a NON with the id given.
    let non = Header {
        mtype: MessageType::NonConfirmable,
        ..request
    };
    let mut built = Vec::new();
    MessageBuilder::response(&non, Code::CONTENT, 0x0102).encode(&mut built);
    assert_eq!(built, [0x51, 0x45, 0x01, 0x02, 0x71]);
}

#[test]
fn empty_ack_rst_and_ping() {
    for (wire, mtype) in [
        ([0x60, 0x00, 0x12, 0x34], MessageType::Acknowledgement),
        ([0x70, 0x00, 0x12, 0x34], MessageType::Reset),
        ([0x40, 0x00, 0x12, 0x34], MessageType::Confirmable),
        ([0x50, 0x00, 0x12, 0x34], MessageType::NonConfirmable),
    ] {
        let message = decoded(&wire);
        assert_eq!((message.mtype, message.message_id), (mtype, 0x1234));
        assert!(message.is_empty());
        assert_eq!(message.is_ping(), mtype == MessageType::Confirmable);
        assert_eq!(message.options().count(), 0);
        let mut out = Vec::new();
        encode_empty(&mut out, mtype, 0x1234);
        assert_eq!(out, wire);
    }
    let mut out = Vec::new();
    encode_reset(&mut out, 0xabcd);
    assert_eq!(out, [0x70, 0x00, 0xab, 0xcd]);
    // A builder with code 0.00 writes just the header.
    let mut out = Vec::new();
    let mut builder =
        MessageBuilder::new(MessageType::Acknowledgement, Code::EMPTY, 7, Token::EMPTY);
    builder.payload(b"ignored");
    builder.encode(&mut out);
    assert_eq!(out, [0x60, 0x00, 0x00, 0x07]);
}

#[test]
fn extended_option_deltas() {
    let wire = [
        0x50, 0x02, 0x00, 0x01, // NON POST, no token
        0xd0, 0x00, // delta 13 + 0 = option 13, length 0
        0xd1, 0xff, 0xaa, // delta 13 + 255 = 268 → option 281, length 1
        0xe0, 0x00, 0x00, // delta 269 + 0 → option 550, length 0
        0xe0, 0xfc, 0xcc, // delta 269 + 0xfccc = 64985 → option 65535
        0xff, 0x01,
    ];
    let message = decoded(&wire);
    let numbers: Vec<u16> = message.options().map(|o| o.number.0).collect();
    assert_eq!(numbers, [13, 281, 550, 65535]);
    assert_eq!(message.option(OptionNumber(281)), Some(&[0xaa][..]));
    assert_eq!(message.payload, [0x01]);

    let mut builder = MessageBuilder::new(MessageType::NonConfirmable, Code::POST, 1, Token::EMPTY);
    // Added out of order: written sorted.
    builder
        .option(OptionNumber(65535), b"")
        .unwrap()
        .option(OptionNumber(550), b"")
        .unwrap()
        .option(OptionNumber(13), b"")
        .unwrap()
        .option(OptionNumber(281), &[0xaa])
        .unwrap()
        .payload(&[0x01]);
    let mut built = Vec::new();
    builder.encode(&mut built);
    assert_eq!(built, wire);

    // One more delta past 65535.
    let over = [0x50, 0x02, 0x00, 0x01, 0xe0, 0xfe, 0xf2, 0x10];
    assert_eq!(
        decode_err(&over),
        CoapError::Format {
            header: Header {
                mtype: MessageType::NonConfirmable,
                code: Code::POST,
                message_id: 1,
                token: Token::EMPTY,
            },
            kind: FormatError::OptionNumberTooLarge,
        }
    );
}

#[test]
fn extended_option_lengths() {
    for (len, head) in [
        (12usize, vec![0xbc]),
        (13, vec![0xbd, 0x00]),
        (268, vec![0xbd, 0xff]),
        (269, vec![0xbe, 0x00, 0x00]),
        (300, vec![0xbe, 0x00, 0x1f]),
        (1034, vec![0xbe, 0x02, 0xfd]),
    ] {
        let value = vec![b'a'; len];
        let mut wire = vec![0x40, 0x01, 0x00, 0x02];
        wire.extend_from_slice(&head);
        wire.extend_from_slice(&value);
        let message = decoded(&wire);
        assert_eq!(
            message.option(OptionNumber::URI_PATH),
            Some(&value[..]),
            "{len}"
        );
        // Uri-Path allows at most 255 bytes: a critical option with a bad length.
        let checked = message.check_options();
        if len > 255 {
            assert!(matches!(
                checked,
                Err(CoapError::BadOption {
                    reason: BadOptionReason::BadLength { .. },
                    ..
                })
            ));
        } else {
            assert_eq!(checked, Ok(()));
        }
        let mut builder = MessageBuilder::new(MessageType::Confirmable, Code::GET, 2, Token::EMPTY);
        builder.option(OptionNumber::URI_PATH, &value).unwrap();
        let mut built = Vec::new();
        builder.encode(&mut built);
        assert_eq!(built, wire, "{len}");
        // Every strict prefix that cuts the option is truncated.
        for cut in 5..wire.len() {
            assert!(
                matches!(
                    decode(&wire[..cut]),
                    Err(CoapError::Format {
                        kind: FormatError::Truncated,
                        ..
                    })
                ),
                "{len} cut at {cut}"
            );
        }
    }
    // The longest value the encoding can carry, and one more.
    let longest = vec![0u8; MAX_OPTION_VALUE_BYTES];
    let mut builder = MessageBuilder::new(MessageType::Confirmable, Code::GET, 2, Token::EMPTY);
    builder.option(OptionNumber(2), &longest).unwrap();
    let mut built = Vec::new();
    builder.encode(&mut built);
    assert_eq!(built[4..7], [0x2e, 0xff, 0xff]);
    assert_eq!(
        decoded(&built).option(OptionNumber(2)).unwrap().len(),
        MAX_OPTION_VALUE_BYTES
    );
    let too_long = vec![0u8; MAX_OPTION_VALUE_BYTES + 1];
    assert_eq!(
        builder.option(OptionNumber(2), &too_long).unwrap_err(),
        CoapError::OptionTooLong {
            number: OptionNumber(2),
            len: MAX_OPTION_VALUE_BYTES + 1
        }
    );
}

// --- Format errors and their answers ---------------------------------------

fn format_kind(wire: &[u8]) -> FormatError {
    match decode_err(wire) {
        CoapError::Format { kind, .. } => kind,
        other => panic!("{other:?}"),
    }
}

#[test]
fn reserved_nibbles_and_empty_payload() {
    // Delta 15 with a length that is not 15.
    assert_eq!(
        format_kind(&[0x40, 0x01, 0, 1, 0xf0]),
        FormatError::ReservedNibble
    );
    // Length 15.
    assert_eq!(
        format_kind(&[0x40, 0x01, 0, 1, 0x1f]),
        FormatError::ReservedNibble
    );
    // Payload marker with nothing after it.
    assert_eq!(
        format_kind(&[0x40, 0x01, 0, 1, 0xff]),
        FormatError::EmptyPayload
    );
    assert_eq!(
        format_kind(&[0x40, 0x01, 0, 1, 0xb1, b'a', 0xff]),
        FormatError::EmptyPayload
    );
}

#[test]
fn header_errors() {
    assert_eq!(decode_err(&[]), CoapError::TooShort { len: 0 });
    assert_eq!(
        decode_err(&[0x40, 0x01, 0x00]),
        CoapError::TooShort { len: 3 }
    );
    assert_eq!(
        decode_err(&[0x80, 0x01, 0, 1]),
        CoapError::UnknownVersion { version: 2 }
    );
    assert_eq!(
        decode_err(&[0x00, 0x01, 0, 1]),
        CoapError::UnknownVersion { version: 0 }
    );
    assert_eq!(
        format_kind(&[0x49, 0x01, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
        FormatError::TokenLength(9)
    );
    assert_eq!(
        format_kind(&[0x4f, 0x01, 0, 1]),
        FormatError::TokenLength(15)
    );
    assert_eq!(
        format_kind(&[0x42, 0x01, 0, 1, 0xaa]),
        FormatError::Truncated
    );
    assert_eq!(
        format_kind(&[0x41, 0x00, 0, 1, 0xaa]),
        FormatError::EmptyWithContent
    );
    assert_eq!(
        format_kind(&[0x60, 0x00, 0, 1, 0xff, 1]),
        FormatError::EmptyWithContent
    );
    assert_eq!(
        format_kind(&[0x40, 0x20, 0, 1]),
        FormatError::ReservedClass(1)
    );
    assert_eq!(
        format_kind(&[0x40, 0xc0, 0, 1]),
        FormatError::ReservedClass(6)
    );
    assert_eq!(
        format_kind(&[0x40, 0xe1, 0, 1]),
        FormatError::ReservedClass(7)
    );
    assert_eq!(format_kind(&[0x70, 0x45, 0, 1]), FormatError::ResetNotEmpty);
    assert_eq!(format_kind(&[0x60, 0x01, 0, 1]), FormatError::RequestInAck);
    // Extended delta or length bytes missing.
    assert_eq!(
        format_kind(&[0x40, 0x01, 0, 1, 0xd0]),
        FormatError::Truncated
    );
    assert_eq!(
        format_kind(&[0x40, 0x01, 0, 1, 0xe0, 0x00]),
        FormatError::Truncated
    );
    assert_eq!(
        format_kind(&[0x40, 0x01, 0, 1, 0x0d]),
        FormatError::Truncated
    );
    // The token is known once it could be read.
    match decode_err(&[0x41, 0x01, 0, 1, 0x99, 0xf0]) {
        CoapError::Format { header, .. } => assert_eq!(header.token.as_bytes(), [0x99]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn answers_follow_the_message_type() {
    // A format error in a CON is rejected with an RST; elsewhere ignored.
    let con = decode_err(&[0x41, 0x02, 0x12, 0x34, 0x99, 0xf0]);
    assert_eq!(con.reaction(), Reaction::Reset);
    assert_eq!(answer_of(&con), Some(vec![0x70, 0x00, 0x12, 0x34]));
    let non = decode_err(&[0x51, 0x02, 0x12, 0x34, 0x99, 0xf0]);
    assert_eq!(non.reaction(), Reaction::Ignore);
    assert_eq!(answer_of(&non), None);
    let ack = decode_err(&[0x61, 0x45, 0x12, 0x34, 0x99, 0xf0]);
    assert_eq!(ack.reaction(), Reaction::Ignore);
    let rst = decode_err(&[0x70, 0x45, 0x12, 0x34]);
    assert_eq!(rst.reaction(), Reaction::Ignore);
    // A CON with a reserved code class is rejected too.
    assert_eq!(decode_err(&[0x40, 0x20, 0, 1]).reaction(), Reaction::Reset);
    // Too short or another version: silence.
    assert_eq!(decode_err(&[0x40]).reaction(), Reaction::Ignore);
    assert_eq!(answer_of(&decode_err(&[0x80, 1, 0, 1])), None);

    // An unrecognized critical option (9, OSCORE) in a CON request: 4.02.
    let wire = [0x41, 0x02, 0x12, 0x34, 0x99, 0x91, 0x00];
    let error = decoded(&wire).check_options().unwrap_err();
    assert_eq!(
        error,
        CoapError::BadOption {
            header: decoded(&wire).header(),
            number: OptionNumber::OSCORE,
            reason: BadOptionReason::Unrecognized,
        }
    );
    assert_eq!(error.reaction(), Reaction::Respond(Code::BAD_OPTION));
    assert_eq!(
        answer_of(&error),
        Some(vec![0x61, 0x82, 0x12, 0x34, 0x99]) // ACK 4.02, same id and token
    );
    // In a NON request: ignored. In a CON response: RST.
    let non = [0x51, 0x02, 0x12, 0x34, 0x99, 0x91, 0x00];
    assert_eq!(
        decoded(&non).check_options().unwrap_err().reaction(),
        Reaction::Ignore
    );
    let response = [0x41, 0x45, 0x12, 0x34, 0x99, 0x91, 0x00];
    assert_eq!(
        decoded(&response).check_options().unwrap_err().reaction(),
        Reaction::Reset
    );
    // Local errors are never answered.
    assert_eq!(CoapError::NotConfirmable.reaction(), Reaction::Ignore);
    assert_eq!(answer_of(&CoapError::PeerBusy { outstanding: 1 }), None);
}

#[test]
fn too_many_options() {
    let mut wire = vec![0x41, 0x02, 0x00, 0x07, 0x55, 0x20]; // option 2, empty
    wire.extend(std::iter::repeat_n(0x00, 63)); // option 2 again, 63 times
    assert_eq!(decoded(&wire).option_count(), 64);
    wire.push(0x00);
    let error = decode_err(&wire);
    assert!(matches!(error, CoapError::TooManyOptions { limit: 64, .. }));
    assert_eq!(error.reaction(), Reaction::Respond(Code::BAD_REQUEST));
    assert_eq!(answer_of(&error), Some(vec![0x61, 0x80, 0x00, 0x07, 0x55]));
    let limits = DecodeLimits { max_options: 65 };
    assert_eq!(decode_with(&wire, &limits).unwrap().option_count(), 65);
    let limits = DecodeLimits { max_options: 0 };
    assert!(decode_with(&wire, &limits).is_err());
    assert!(decode_with(&[0x40, 0x01, 0, 1], &limits).is_ok());
}
