//! Byte vectors for every packet type in both versions, annotated field by
//! field (the CONNECT variable header is the example of MQTT 3.1.1
//! §3.1.2.10), round trips, and one vector per error.

use super::*;

const MAX: u32 = 1 << 20;

fn props() -> Properties<'static> {
    Properties::default()
}

/// Decodes `wire` expecting one packet that takes all of it.
fn decoded(wire: &[u8], version: Version) -> Packet<'_> {
    match decode(wire, version, MAX) {
        Ok(Decoded::Frame { frame, consumed }) => {
            assert_eq!(consumed, wire.len(), "{wire:02x?}");
            frame
        }
        other => panic!("{wire:02x?}: {other:?}"),
    }
}

/// Encodes `packet`, checking `encoded_len` agrees.
fn encoded(packet: &Packet<'_>, version: Version) -> Vec<u8> {
    let mut out = vec![0xEE];
    encode(packet, version, &mut out).unwrap();
    let out = out.split_off(1);
    assert_eq!(encoded_len(packet, version), Ok(out.len()), "{packet:?}");
    out
}

fn decode_err(wire: &[u8], version: Version) -> MqttError {
    match decode(wire, version, MAX) {
        Err(err) => {
            assert!(!err.to_string().is_empty());
            err
        }
        other => panic!("{wire:02x?}: expected an error, got {other:?}"),
    }
}

fn encode_err(packet: &Packet<'_>, version: Version) -> MqttError {
    let mut out = vec![0xEE];
    let err = encode(packet, version, &mut out).unwrap_err();
    assert_eq!(out, [0xEE], "nothing is appended on error");
    assert_eq!(encoded_len(packet, version), Err(err.clone()));
    err
}

/// Every strict prefix of a whole packet is `Incomplete`.
fn assert_prefixes_incomplete(wire: &[u8], version: Version) {
    for len in 0..wire.len() {
        assert_eq!(
            decode(&wire[..len], version, MAX),
            Ok(Decoded::Incomplete),
            "prefix of {len} bytes of {wire:02x?}"
        );
    }
}

/// `wire` decodes to `packet`, each prefix is incomplete, and `packet`
/// encodes back to exactly `wire`.
fn check_vector(wire: &[u8], version: Version, packet: &Packet<'_>) {
    assert_eq!(&decoded(wire, version), packet);
    assert_prefixes_incomplete(wire, version);
    assert_eq!(encoded(packet, version), wire, "{packet:?}");
}

fn round_trip(packet: &Packet<'_>, version: Version) {
    let wire = encoded(packet, version);
    assert_eq!(&decoded(&wire, version), packet, "{wire:02x?}");
    assert_prefixes_incomplete(&wire, version);
}

fn ack(packet_id: u16, code: ReasonCode) -> Ack<'static> {
    Ack {
        packet_id,
        code,
        properties: props(),
    }
}

// --- CONNECT ----------------------------------------------------------------

#[test]
fn connect_v311_spec_example() {
    #[rustfmt::skip]
    let wire = [
        0x10, 34,                       // CONNECT, remaining length 34
        0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name "MQTT"
        0x04,                           // protocol level 4 (3.1.1)
        0xCE,                           // flags: user name, password, will QoS 1, will, clean session
        0x00, 0x0A,                     // keep alive 10 s
        0x00, 0x03, b'c', b'i', b'd',   // client identifier "cid"
        0x00, 0x03, b'w', b'/', b't',   // will topic "w/t"
        0x00, 0x02, b'b', b'y',         // will message "by"
        0x00, 0x04, b'u', b's', b'e', b'r', // user name "user"
        0x00, 0x02, b'p', b'w',         // password "pw"
    ];
    let packet = Packet::Connect(Connect {
        version: Version::V311,
        clean_start: true,
        keep_alive_secs: 10,
        client_id: "cid",
        will: Some(Will {
            topic: "w/t",
            payload: b"by",
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: props(),
        }),
        username: Some("user"),
        password: Some(b"pw"),
        properties: props(),
    });
    check_vector(&wire, Version::V311, &packet);
    // The packet's own level decides; the connection's version is ignored.
    assert_eq!(decoded(&wire, Version::V5), packet);
}

#[test]
fn connect_v5_with_properties_and_will_properties() {
    #[rustfmt::skip]
    let wire = [
        0x10, 61,                       // CONNECT, remaining length 61
        0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name "MQTT"
        0x05,                           // protocol level 5
        0x76,                           // flags: password, will retain, will QoS 2, will, clean start
        0x00, 0x3C,                     // keep alive 60 s
        20,                             // property length
        0x11, 0x00, 0x00, 0x0E, 0x10,   //   session expiry interval 3600
        0x21, 0x00, 0x14,               //   receive maximum 20
        0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'b', // user property ("a", "b")
        0x27, 0x00, 0x10, 0x00, 0x00,   //   maximum packet size 1 MiB
        0x00, 0x00,                     // client identifier "" (server assigns one)
        13,                             // will property length
        0x01, 0x01,                     //   payload format indicator 1 (UTF-8)
        0x03, 0x00, 0x03, b't', b'x', b't', // content type "txt"
        0x18, 0x00, 0x00, 0x00, 0x05,   //   will delay interval 5 s
        0x00, 0x03, b'w', b'/', b't',   // will topic "w/t"
        0x00, 0x02, b'h', b'i',         // will payload "hi"
        0x00, 0x03, b'p', b'w', b'd',   // password "pwd" (no user name: allowed in 5.0)
    ];
    let packet = Packet::Connect(Connect {
        version: Version::V5,
        clean_start: true,
        keep_alive_secs: 60,
        client_id: "",
        will: Some(Will {
            topic: "w/t",
            payload: b"hi",
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: Properties {
                payload_format_indicator: Some(1),
                content_type: Some("txt"),
                will_delay_interval: Some(5),
                ..props()
            },
        }),
        username: None,
        password: Some(b"pwd"),
        properties: Properties {
            session_expiry_interval: Some(3600),
            receive_maximum: Some(20),
            user_properties: vec![("a", "b")],
            maximum_packet_size: Some(1 << 20),
            ..props()
        },
    });
    check_vector(&wire, Version::V5, &packet);
    assert_eq!(decoded(&wire, Version::V311), packet);
}

#[test]
fn connect_minimal_both_versions() {
    // 3.1.1: name, level 4, flags 0x02 (clean session), keep alive 0, client id "a".
    let v311 = [
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 0, 0, 1, b'a',
    ];
    // 5.0: the same plus a property length of 0.
    let v5 = [
        0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x00, 0, 0, 0, 0, 1, b'a',
    ];
    let connect = |version, clean_start| Connect {
        version,
        clean_start,
        keep_alive_secs: 0,
        client_id: "a",
        will: None,
        username: None,
        password: None,
        properties: props(),
    };
    check_vector(
        &v311,
        Version::V311,
        &Packet::Connect(connect(Version::V311, true)),
    );
    check_vector(
        &v5,
        Version::V5,
        &Packet::Connect(connect(Version::V5, false)),
    );
}

#[test]
fn connect_unsupported_protocols() {
    // MQTT 3.1: "MQIsdp", level 3; the rest does not matter.
    let mqtt31 = [
        0x10, 12, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 0xFF, 0xFF, 0xFF,
    ];
    let err = decode_err(&mqtt31, Version::V311);
    assert_eq!(err, MqttError::UnsupportedProtocol { level: 3 });
    assert_eq!(err.reason_code(), ReasonCode::UnsupportedProtocolVersion);
    assert_prefixes_incomplete(&mqtt31, Version::V311);
    // "MQTT" with level 3, and with level 6.
    for level in [3, 6] {
        let wire = [0x10, 7, 0, 4, b'M', b'Q', b'T', b'T', level];
        assert_eq!(
            decode_err(&wire, Version::V5),
            MqttError::UnsupportedProtocol { level }
        );
    }
    // A wrong protocol name reports the level that follows it.
    let wire = [0x10, 7, 0, 4, b'M', b'Q', b'T', b'X', 4];
    assert_eq!(
        decode_err(&wire, Version::V311),
        MqttError::UnsupportedProtocol { level: 4 }
    );
    // A packet too short to hold the level is malformed, not unsupported.
    let wire = [0x10, 6, 0, 4, b'M', b'Q', b'T', b'X'];
    assert!(matches!(
        decode_err(&wire, Version::V311),
        MqttError::Malformed(_)
    ));
}

#[test]
fn connect_flag_rules() {
    // Build a 3.1.1 or 5.0 CONNECT with the given flags and payload fields.
    fn connect(level: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', level, flags, 0, 60];
        if level == 5 {
            body.push(0); // property length
        }
        body.extend_from_slice(&[0, 1, b'c']); // client id "c"
        body.extend_from_slice(payload);
        let mut wire = vec![0x10, body.len() as u8];
        wire.extend_from_slice(&body);
        wire
    }
    for level in [4, 5] {
        // Reserved flag bit 0.
        let err = decode_err(&connect(level, 0x03, &[]), Version::V5);
        assert!(matches!(err, MqttError::Malformed(_)), "{err}");
        assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
        // Will QoS 3 with the will flag.
        let will: &[u8] = if level == 5 {
            &[0, 0, 1, b't', 0, 0]
        } else {
            &[0, 1, b't', 0, 0]
        };
        assert_eq!(
            decode_err(&connect(level, 0x04 | 0x18, will), Version::V5),
            MqttError::InvalidQoS
        );
        // Will QoS or Will Retain without the will flag.
        for flags in [0x08, 0x10, 0x18, 0x20] {
            assert!(matches!(
                decode_err(&connect(level, flags, &[]), Version::V5),
                MqttError::Malformed(_)
            ));
        }
        // Bytes after the last field the flags announce.
        assert!(matches!(
            decode_err(&connect(level, 0x02, &[0]), Version::V5),
            MqttError::Malformed(_)
        ));
        // A user name flag without the user name.
        assert!(matches!(
            decode_err(&connect(level, 0x80, &[]), Version::V5),
            MqttError::Malformed(_)
        ));
        // U+0000 in the user name.
        assert_eq!(
            decode_err(&connect(level, 0x80, &[0, 2, b'a', 0]), Version::V5),
            MqttError::InvalidString
        );
    }
    // A password without a user name: malformed in 3.1.1, fine in 5.0.
    let err = decode_err(&connect(4, 0x40, &[0, 1, b'p']), Version::V311);
    assert!(matches!(err, MqttError::Malformed(_)), "{err}");
    let wire = connect(5, 0x40, &[0, 1, b'p']);
    let Packet::Connect(c) = decoded(&wire, Version::V5) else {
        panic!()
    };
    assert_eq!((c.username, c.password), (None, Some(&b"p"[..])));
    let mut v311 = c.clone();
    v311.version = Version::V311;
    assert!(matches!(
        encode_err(&Packet::Connect(v311), Version::V311),
        MqttError::Malformed(_)
    ));
}

// --- CONNACK ----------------------------------------------------------------

#[test]
fn connack_v311() {
    // Session present, return code 0 (accepted).
    let wire = [0x20, 0x02, 0x01, 0x00];
    let accepted = Packet::ConnAck(ConnAck {
        session_present: true,
        code: ReasonCode::Success,
        properties: props(),
    });
    check_vector(&wire, Version::V311, &accepted);
    // Return codes 1 to 5 map onto reason codes and back.
    for (byte, code) in [
        (1, ReasonCode::UnsupportedProtocolVersion),
        (2, ReasonCode::ClientIdentifierNotValid),
        (3, ReasonCode::ServerUnavailable),
        (4, ReasonCode::BadUserNameOrPassword),
        (5, ReasonCode::NotAuthorized),
    ] {
        let packet = Packet::ConnAck(ConnAck {
            session_present: false,
            code,
            properties: props(),
        });
        check_vector(&[0x20, 0x02, 0x00, byte], Version::V311, &packet);
    }
    // Other failures are written as 3 (Server unavailable).
    let banned = Packet::ConnAck(ConnAck {
        code: ReasonCode::Banned,
        ..ConnAck::default()
    });
    assert_eq!(encoded(&banned, Version::V311), [0x20, 0x02, 0x00, 0x03]);
    // A return code above 5, reserved acknowledge flags, a 5.0-style body.
    assert_eq!(
        decode_err(&[0x20, 0x02, 0x00, 0x06], Version::V311),
        MqttError::InvalidReasonCode {
            packet_type: PacketType::ConnAck,
            code: 6
        }
    );
    assert!(matches!(
        decode_err(&[0x20, 0x02, 0x02, 0x00], Version::V311),
        MqttError::Malformed(_)
    ));
    assert!(matches!(
        decode_err(&[0x20, 0x03, 0x00, 0x00, 0x00], Version::V311),
        MqttError::Malformed(_)
    ));
    // Non-error codes that are no CONNACK code are refused by the encoder.
    let odd = Packet::ConnAck(ConnAck {
        code: ReasonCode::GrantedQoS1,
        ..ConnAck::default()
    });
    assert_eq!(
        encode_err(&odd, Version::V311),
        MqttError::InvalidReasonCode {
            packet_type: PacketType::ConnAck,
            code: 1
        }
    );
}

#[test]
fn connack_v5() {
    #[rustfmt::skip]
    let wire = [
        0x20, 16,                       // CONNACK, remaining length 16
        0x00,                           // acknowledge flags: no session present
        0x00,                           // reason code Success
        13,                             // property length
        0x12, 0x00, 0x03, b'a', b'b', b'c', // assigned client identifier "abc"
        0x22, 0x00, 0x0A,               //   topic alias maximum 10
        0x24, 0x01,                     //   maximum QoS 1
        0x25, 0x00,                     //   retain available 0
    ];
    let packet = Packet::ConnAck(ConnAck {
        session_present: false,
        code: ReasonCode::Success,
        properties: Properties {
            assigned_client_identifier: Some("abc"),
            topic_alias_maximum: Some(10),
            maximum_qos: Some(1),
            retain_available: Some(0),
            ..props()
        },
    });
    check_vector(&wire, Version::V5, &packet);
    // Not authorized, no properties.
    let refused = Packet::ConnAck(ConnAck {
        code: ReasonCode::NotAuthorized,
        ..ConnAck::default()
    });
    check_vector(&[0x20, 0x03, 0x00, 0x87, 0x00], Version::V5, &refused);
    // 5.0 CONNACK always has a property length.
    assert!(matches!(
        decode_err(&[0x20, 0x02, 0x00, 0x00], Version::V5),
        MqttError::Malformed(_)
    ));
    // 0x10 is no CONNACK reason code.
    let err = decode_err(&[0x20, 0x03, 0x00, 0x10, 0x00], Version::V5);
    assert_eq!(
        err,
        MqttError::InvalidReasonCode {
            packet_type: PacketType::ConnAck,
            code: 0x10
        }
    );
    assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
}

// --- PUBLISH ----------------------------------------------------------------

#[test]
fn publish_qos0_v311() {
    #[rustfmt::skip]
    let wire = [
        0x30, 10,                       // PUBLISH, QoS 0, remaining length 10
        0x00, 0x03, b'a', b'/', b'b',   // topic "a/b"
        b'h', b'e', b'l', b'l', b'o',   // payload (the rest)
    ];
    let packet = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "a/b",
        packet_id: None,
        properties: props(),
        payload: b"hello",
    });
    check_vector(&wire, Version::V311, &packet);
    // Decoding borrows from the buffer.
    let Packet::Publish(p) = decoded(&wire, Version::V311) else {
        panic!()
    };
    assert_eq!(p.topic.as_ptr(), wire[4..].as_ptr());
    assert_eq!(p.payload.as_ptr(), wire[7..].as_ptr());
}

#[test]
fn publish_qos1_retain_v311() {
    #[rustfmt::skip]
    let wire = [
        0x33, 8,                        // PUBLISH, QoS 1, RETAIN, remaining length 8
        0x00, 0x03, b'a', b'/', b'b',   // topic "a/b"
        0x00, 0x0A,                     // packet identifier 10
        b'x',                           // payload
    ];
    let packet = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: true,
        topic: "a/b",
        packet_id: Some(10),
        properties: props(),
        payload: b"x",
    });
    check_vector(&wire, Version::V311, &packet);
}

#[test]
fn publish_qos0_v5_without_properties() {
    #[rustfmt::skip]
    let wire = [
        0x30, 8,                        // PUBLISH, QoS 0, remaining length 8
        0x00, 0x03, b'a', b'/', b'b',   // topic "a/b"
        0x00,                           // property length 0
        b'h', b'i',                     // payload
    ];
    let packet = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "a/b",
        packet_id: None,
        properties: props(),
        payload: b"hi",
    });
    check_vector(&wire, Version::V5, &packet);
    // An empty payload: the packet ends with the properties.
    let Packet::Publish(mut empty) = packet else {
        unreachable!()
    };
    empty.payload = b"";
    check_vector(
        &[0x30, 6, 0, 3, b'a', b'/', b'b', 0],
        Version::V5,
        &Packet::Publish(empty),
    );
}

#[test]
fn publish_qos2_dup_v5_with_properties() {
    #[rustfmt::skip]
    let wire = [
        0x3C, 39,                       // PUBLISH, DUP, QoS 2, remaining length 39
        0x00, 0x01, b't',               // topic "t"
        0x00, 0x01,                     // packet identifier 1
        31,                             // property length
        0x01, 0x01,                     //   payload format indicator 1
        0x02, 0x00, 0x00, 0x00, 0x3C,   //   message expiry interval 60 s
        0x08, 0x00, 0x01, b'r',         //   response topic "r"
        0x09, 0x00, 0x02, 0xC0, 0xFF,   //   correlation data C0 FF
        0x0B, 0x80, 0x01,               //   subscription identifier 128 (two-byte varint)
        0x0B, 0x05,                     //   subscription identifier 5 (repeats in PUBLISH)
        0x23, 0x00, 0x01,               //   topic alias 1
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // user property ("k", "v")
        b'{', b'}',                     // payload
    ];
    let packet = Packet::Publish(Publish {
        dup: true,
        qos: QoS::ExactlyOnce,
        retain: false,
        topic: "t",
        packet_id: Some(1),
        properties: Properties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(60),
            response_topic: Some("r"),
            correlation_data: Some(&[0xC0, 0xFF]),
            subscription_identifiers: vec![128, 5],
            topic_alias: Some(1),
            user_properties: vec![("k", "v")],
            ..props()
        },
        payload: b"{}",
    });
    check_vector(&wire, Version::V5, &packet);
    // The same packet on a 3.1.1 connection drops the properties.
    let Packet::Publish(mut p) = packet.clone() else {
        panic!()
    };
    let v311 = encoded(&packet, Version::V311);
    p.properties = props();
    assert_eq!(decoded(&v311, Version::V311), Packet::Publish(p));
}

#[test]
fn publish_properties_in_any_order() {
    // Topic alias before payload format indicator: order has no significance.
    let wire = [0x30, 11, 0, 1, b't', 5, 0x23, 0, 7, 0x01, 0, b'x', b'y'];
    let Packet::Publish(p) = decoded(&wire, Version::V5) else {
        panic!()
    };
    assert_eq!(p.properties.topic_alias, Some(7));
    assert_eq!(p.properties.payload_format_indicator, Some(0));
    assert_eq!(p.payload, b"xy");
}

#[test]
fn publish_head_then_payload_is_the_whole_packet() {
    for version in [Version::V311, Version::V5] {
        let publish = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: "video/cam1",
            packet_id: Some(0xBEEF),
            properties: match version {
                Version::V5 => Properties {
                    user_properties: vec![("codec", "h264")],
                    ..props()
                },
                Version::V311 => props(),
            },
            payload: &[7; 300],
        };
        let whole = encoded(&Packet::Publish(publish.clone()), version);
        let mut head = Vec::new();
        encode_publish_head(&publish, version, &mut head).unwrap();
        assert_eq!([&head[..], publish.payload].concat(), whole);
        // The head's fixed header counts the payload.
        let Ok(Decoded::Frame { frame, .. }) = read_fixed_header(&head, MAX) else {
            panic!()
        };
        assert_eq!(frame.total_len(), whole.len());
    }
}

#[test]
fn publish_errors() {
    // QoS 3.
    let err = decode_err(&[0x36, 5, 0, 1, b't', 0, 1], Version::V311);
    assert_eq!(err, MqttError::InvalidQoS);
    assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
    // DUP at QoS 0.
    assert!(matches!(
        decode_err(&[0x38, 3, 0, 1, b't'], Version::V311),
        MqttError::Malformed(_)
    ));
    // Packet identifier 0.
    let err = decode_err(&[0x32, 5, 0, 1, b't', 0, 0], Version::V311);
    assert_eq!(err, MqttError::ZeroPacketId);
    assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
    // Too short for its packet identifier.
    assert!(matches!(
        decode_err(&[0x32, 3, 0, 1, b't'], Version::V311),
        MqttError::Malformed(_)
    ));
    // Ill-formed UTF-8, a surrogate, U+0000 in the topic.
    for topic in [&[0xC3, 0x28][..], &[0xED, 0xA0, 0x80], &[b'a', 0]] {
        let mut wire = vec![0x30, topic.len() as u8 + 2, 0, topic.len() as u8];
        wire.extend_from_slice(topic);
        let err = decode_err(&wire, Version::V311);
        assert_eq!(err, MqttError::InvalidString);
        assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
    }
    // Topic length past the end of the packet.
    assert!(matches!(
        decode_err(&[0x30, 3, 0, 5, b't'], Version::V311),
        MqttError::Malformed(_)
    ));
    // Encoder refusals.
    let base = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "t",
        packet_id: None,
        properties: props(),
        payload: b"",
    };
    assert_eq!(
        encode_err(&Packet::Publish(base.clone()), Version::V5),
        MqttError::PacketIdQoSMismatch {
            qos: QoS::AtLeastOnce
        }
    );
    let qos0_with_id = Publish {
        qos: QoS::AtMostOnce,
        packet_id: Some(1),
        ..base.clone()
    };
    assert_eq!(
        encode_err(&Packet::Publish(qos0_with_id), Version::V5),
        MqttError::PacketIdQoSMismatch {
            qos: QoS::AtMostOnce
        }
    );
    let zero = Publish {
        packet_id: Some(0),
        ..base.clone()
    };
    assert_eq!(
        encode_err(&Packet::Publish(zero), Version::V311),
        MqttError::ZeroPacketId
    );
    let dup0 = Publish {
        dup: true,
        qos: QoS::AtMostOnce,
        ..base.clone()
    };
    assert!(matches!(
        encode_err(&Packet::Publish(dup0), Version::V311),
        MqttError::Malformed(_)
    ));
    let nul = Publish {
        topic: "a\0b",
        packet_id: Some(1),
        ..base.clone()
    };
    assert_eq!(
        encode_err(&Packet::Publish(nul), Version::V311),
        MqttError::InvalidString
    );
    let long_topic = "t".repeat(65_536);
    let long = Publish {
        topic: &long_topic,
        packet_id: Some(1),
        ..base.clone()
    };
    let err = encode_err(&Packet::Publish(long), Version::V311);
    assert_eq!(
        err,
        MqttError::FieldTooLong {
            field: "topic name",
            len: 65_536
        }
    );
    assert_eq!(err.reason_code(), ReasonCode::ImplementationSpecificError);
    // A topic of exactly 65,535 bytes is fine.
    let max_topic = "t".repeat(65_535);
    round_trip(
        &Packet::Publish(Publish {
            topic: &max_topic,
            packet_id: Some(1),
            ..base.clone()
        }),
        Version::V311,
    );
    // A payload one byte over the largest Remaining Length. The zeroed
    // allocation is never touched: the size check comes first.
    let huge = vec![0u8; MAX_REMAINING_LENGTH as usize - 2];
    let too_large = Publish {
        qos: QoS::AtMostOnce,
        payload: &huge,
        ..base.clone()
    };
    let err = encode_err(&Packet::Publish(too_large.clone()), Version::V311);
    assert_eq!(
        err,
        MqttError::TooLarge {
            remaining_len: MAX_REMAINING_LENGTH as usize + 1
        }
    );
    assert_eq!(err.reason_code(), ReasonCode::PacketTooLarge);
    let mut head = Vec::new();
    assert_eq!(
        encode_publish_head(&too_large, Version::V311, &mut head),
        Err(err)
    );
    assert!(head.is_empty());
    let fits = Publish {
        payload: &huge[1..],
        ..too_large
    };
    assert_eq!(
        encoded_len(&Packet::Publish(fits), Version::V311),
        Ok(5 + MAX_REMAINING_LENGTH as usize)
    );
}

// --- PUBACK, PUBREC, PUBREL, PUBCOMP ------------------------------------------

#[test]
fn acks_v311() {
    // PUBACK, PUBREC, PUBREL (flags 0010), PUBCOMP: packet identifier 7.
    check_vector(
        &[0x40, 2, 0, 7],
        Version::V311,
        &Packet::PubAck(ack(7, ReasonCode::Success)),
    );
    check_vector(
        &[0x50, 2, 0, 7],
        Version::V311,
        &Packet::PubRec(ack(7, ReasonCode::Success)),
    );
    check_vector(
        &[0x62, 2, 0, 7],
        Version::V311,
        &Packet::PubRel(ack(7, ReasonCode::Success)),
    );
    check_vector(
        &[0x70, 2, 0, 7],
        Version::V311,
        &Packet::PubComp(ack(7, ReasonCode::Success)),
    );
    // 3.1.1 has no reason code: a byte after the identifier is left over.
    assert!(matches!(
        decode_err(&[0x40, 3, 0, 7, 0], Version::V311),
        MqttError::Malformed(_)
    ));
    // The reason code is dropped on a 3.1.1 connection.
    let refused = Packet::PubRec(ack(7, ReasonCode::QuotaExceeded));
    assert_eq!(encoded(&refused, Version::V311), [0x50, 2, 0, 7]);
    // PUBREL with flags 0000.
    assert_eq!(
        decode_err(&[0x60, 2, 0, 7], Version::V311),
        MqttError::InvalidFlags {
            packet_type: PacketType::PubRel,
            flags: 0
        }
    );
    // Packet identifier 0; no packet identifier.
    assert_eq!(
        decode_err(&[0x40, 2, 0, 0], Version::V311),
        MqttError::ZeroPacketId
    );
    assert!(matches!(
        decode_err(&[0x40, 1, 0], Version::V311),
        MqttError::Malformed(_)
    ));
    assert_eq!(
        encode_err(&Packet::PubComp(ack(0, ReasonCode::Success)), Version::V311),
        MqttError::ZeroPacketId
    );
}

#[test]
fn acks_v5_short_and_long_forms() {
    // Remaining length 2: Success, no properties.
    check_vector(
        &[0x40, 2, 0, 7],
        Version::V5,
        &Packet::PubAck(ack(7, ReasonCode::Success)),
    );
    // Remaining length 3: a reason code, no properties.
    check_vector(
        &[0x50, 3, 0, 7, 0x10],
        Version::V5,
        &Packet::PubRec(ack(7, ReasonCode::NoMatchingSubscribers)),
    );
    check_vector(
        &[0x62, 3, 0, 7, 0x92],
        Version::V5,
        &Packet::PubRel(ack(7, ReasonCode::PacketIdentifierNotFound)),
    );
    #[rustfmt::skip]
    let pubcomp = [
        0x70, 11,                       // PUBCOMP, remaining length 11
        0x00, 0x07,                     // packet identifier 7
        0x92,                           // Packet Identifier not found
        7,                              // property length
        0x1F, 0x00, 0x04, b'g', b'o', b'n', b'e', // reason string "gone"
    ];
    check_vector(
        &pubcomp,
        Version::V5,
        &Packet::PubComp(Ack {
            packet_id: 7,
            code: ReasonCode::PacketIdentifierNotFound,
            properties: Properties {
                reason_string: Some("gone"),
                ..props()
            },
        }),
    );
    // The long form of Success without properties decodes; it is written short.
    let long = [0x40, 4, 0, 7, 0x00, 0x00];
    assert_eq!(
        decoded(&long, Version::V5),
        Packet::PubAck(ack(7, ReasonCode::Success))
    );
    // A code not allowed for the type.
    for (wire, packet_type, code) in [
        ([0x40, 3, 0, 7, 0x92], PacketType::PubAck, 0x92),
        ([0x62, 3, 0, 7, 0x10], PacketType::PubRel, 0x10),
        ([0x70, 3, 0, 7, 0x03], PacketType::PubComp, 0x03),
    ] {
        assert_eq!(
            decode_err(&wire, Version::V5),
            MqttError::InvalidReasonCode { packet_type, code }
        );
    }
    assert_eq!(
        encode_err(
            &Packet::PubAck(ack(7, ReasonCode::PacketIdentifierNotFound)),
            Version::V5
        ),
        MqttError::InvalidReasonCode {
            packet_type: PacketType::PubAck,
            code: 0x92
        }
    );
    // A property not valid in a PUBACK (Server Keep Alive); a byte after the properties.
    let err = decode_err(&[0x40, 7, 0, 7, 0x80, 3, 0x13, 0, 5], Version::V5);
    assert_eq!(
        err,
        MqttError::PropertyNotAllowed {
            property: 0x13,
            packet_type: PacketType::PubAck,
            will: false
        }
    );
    assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
    assert!(matches!(
        decode_err(&[0x40, 5, 0, 7, 0, 0, 0], Version::V5),
        MqttError::Malformed(_)
    ));
}

// --- SUBSCRIBE, SUBACK --------------------------------------------------------

#[test]
fn subscribe_v311() {
    #[rustfmt::skip]
    let wire = [
        0x82, 14,                       // SUBSCRIBE (flags 0010), remaining length 14
        0x00, 0x01,                     // packet identifier 1
        0x00, 0x03, b'a', b'/', b'b',   // topic filter "a/b"
        0x01,                           //   requested QoS 1
        0x00, 0x03, b'c', b'/', b'#',   // topic filter "c/#"
        0x02,                           //   requested QoS 2
    ];
    let packet = Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![
            (
                "a/b",
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..SubscriptionOptions::default()
                },
            ),
            (
                "c/#",
                SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    ..SubscriptionOptions::default()
                },
            ),
        ],
        properties: props(),
    });
    check_vector(&wire, Version::V311, &packet);
    // Bits 2-7 are reserved in 3.1.1.
    let err = decode_err(&[0x82, 6, 0, 1, 0, 1, b'a', 0x04], Version::V311);
    assert_eq!(err, MqttError::InvalidSubscriptionOptions(0x04));
}

#[test]
fn subscribe_v5_with_options() {
    #[rustfmt::skip]
    let wire = [
        0x82, 17,                       // SUBSCRIBE (flags 0010), remaining length 17
        0x00, 0x0A,                     // packet identifier 10
        2,                              // property length
        0x0B, 0x01,                     //   subscription identifier 1
        0x00, 0x03, b'a', b'/', b'+',   // topic filter "a/+"
        0x2D,                           //   QoS 1, no local, retain as published, retain handling 2
        0x00, 0x03, b'b', b'/', b'#',   // topic filter "b/#"
        0x12,                           //   QoS 2, retain handling 1
    ];
    let packet = Packet::Subscribe(Subscribe {
        packet_id: 10,
        filters: vec![
            (
                "a/+",
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: RetainHandling::Never,
                },
            ),
            (
                "b/#",
                SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: RetainHandling::OnNewSubscribe,
                },
            ),
        ],
        properties: Properties {
            subscription_identifiers: vec![1],
            ..props()
        },
    });
    check_vector(&wire, Version::V5, &packet);
    // Written on a 3.1.1 connection, only the QoS survives.
    let v311 = encoded(&packet, Version::V311);
    assert_eq!(
        v311,
        [0x82, 14, 0, 10, 0, 3, b'a', b'/', b'+', 1, 0, 3, b'b', b'/', b'#', 2]
    );
}

#[test]
fn subscribe_errors() {
    let sub = |props: &[u8], tail: &[u8]| {
        let mut body = vec![0, 1, props.len() as u8];
        body.extend_from_slice(props);
        body.extend_from_slice(tail);
        let mut wire = vec![0x82, body.len() as u8];
        wire.extend_from_slice(&body);
        wire
    };
    // Options: reserved bits 6-7 (malformed), QoS 3 and retain handling 3
    // (protocol errors).
    for (options, reason) in [
        (0x40, ReasonCode::MalformedPacket),
        (0x80, ReasonCode::MalformedPacket),
        (0x03, ReasonCode::ProtocolError),
        (0x30, ReasonCode::ProtocolError),
    ] {
        let err = decode_err(&sub(&[], &[0, 1, b'a', options]), Version::V5);
        assert_eq!(err, MqttError::InvalidSubscriptionOptions(options));
        assert_eq!(err.reason_code(), reason);
    }
    // No filter.
    let err = decode_err(&sub(&[], &[]), Version::V5);
    assert_eq!(err, MqttError::NoTopicFilters);
    assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
    assert_eq!(
        decode_err(&[0x82, 2, 0, 1], Version::V311),
        MqttError::NoTopicFilters
    );
    // An empty filter; a filter without its options byte.
    assert!(matches!(
        decode_err(&sub(&[], &[0, 0, 1]), Version::V5),
        MqttError::Malformed(_)
    ));
    assert!(matches!(
        decode_err(&sub(&[], &[0, 1, b'a']), Version::V5),
        MqttError::Malformed(_)
    ));
    // Subscription identifier 0, twice, and one that is allowed.
    assert_eq!(
        decode_err(&sub(&[0x0B, 0], &[0, 1, b'a', 0]), Version::V5),
        MqttError::InvalidPropertyValue(0x0B)
    );
    let err = decode_err(&sub(&[0x0B, 1, 0x0B, 2], &[0, 1, b'a', 0]), Version::V5);
    assert_eq!(err, MqttError::DuplicateProperty(0x0B));
    assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
    decoded(&sub(&[0x0B, 1], &[0, 1, b'a', 0]), Version::V5);
    // Flags 0000; packet identifier 0.
    assert_eq!(
        decode_err(&[0x80, 6, 0, 1, 0, 1, b'a', 0], Version::V311),
        MqttError::InvalidFlags {
            packet_type: PacketType::Subscribe,
            flags: 0
        }
    );
    assert_eq!(
        decode_err(&[0x82, 6, 0, 0, 0, 1, b'a', 0], Version::V311),
        MqttError::ZeroPacketId
    );
    // Encoder: no filters, an empty filter, two subscription identifiers.
    let base = Subscribe {
        packet_id: 1,
        filters: vec![("a", SubscriptionOptions::default())],
        properties: props(),
    };
    let none = Subscribe {
        filters: Vec::new(),
        ..base.clone()
    };
    assert_eq!(
        encode_err(&Packet::Subscribe(none), Version::V311),
        MqttError::NoTopicFilters
    );
    let empty = Subscribe {
        filters: vec![("", SubscriptionOptions::default())],
        ..base.clone()
    };
    assert!(matches!(
        encode_err(&Packet::Subscribe(empty), Version::V311),
        MqttError::Malformed(_)
    ));
    let two_ids = Subscribe {
        properties: Properties {
            subscription_identifiers: vec![1, 2],
            ..props()
        },
        ..base.clone()
    };
    assert_eq!(
        encode_err(&Packet::Subscribe(two_ids), Version::V5),
        MqttError::DuplicateProperty(0x0B)
    );
    let id_too_big = Subscribe {
        properties: Properties {
            subscription_identifiers: vec![MAX_REMAINING_LENGTH + 1],
            ..props()
        },
        ..base
    };
    assert_eq!(
        encode_err(&Packet::Subscribe(id_too_big), Version::V5),
        MqttError::InvalidPropertyValue(0x0B)
    );
}

#[test]
fn suback_both_versions() {
    #[rustfmt::skip]
    let v311 = [
        0x90, 5,                        // SUBACK, remaining length 5
        0x00, 0x01,                     // packet identifier 1
        0x00, 0x01, 0x80,               // granted QoS 0, granted QoS 1, failure
    ];
    let packet = Packet::SubAck(SubAck {
        packet_id: 1,
        codes: vec![
            ReasonCode::Success,
            ReasonCode::GrantedQoS1,
            ReasonCode::UnspecifiedError,
        ],
        properties: props(),
    });
    check_vector(&v311, Version::V311, &packet);
    #[rustfmt::skip]
    let v5 = [
        0x90, 11,                       // SUBACK, remaining length 11
        0x00, 0x01,                     // packet identifier 1
        5,                              // property length
        0x1F, 0x00, 0x02, b'n', b'o',   //   reason string "no"
        0x02, 0x87, 0xA2,               // granted QoS 2, not authorized, wildcards not supported
    ];
    let packet = Packet::SubAck(SubAck {
        packet_id: 1,
        codes: vec![
            ReasonCode::GrantedQoS2,
            ReasonCode::NotAuthorized,
            ReasonCode::WildcardSubscriptionsNotSupported,
        ],
        properties: Properties {
            reason_string: Some("no"),
            ..props()
        },
    });
    check_vector(&v5, Version::V5, &packet);
    // On a 3.1.1 connection every failure is written as 0x80.
    assert_eq!(
        encoded(&packet, Version::V311),
        [0x90, 5, 0, 1, 0x02, 0x80, 0x80]
    );
    // 3.1.1 knows only 0, 1, 2 and 0x80.
    assert_eq!(
        decode_err(&[0x90, 3, 0, 1, 0x87], Version::V311),
        MqttError::InvalidReasonCode {
            packet_type: PacketType::SubAck,
            code: 0x87
        }
    );
    // No codes.
    let err = decode_err(&[0x90, 2, 0, 1], Version::V311);
    assert_eq!(err, MqttError::NoReasonCodes);
    assert_eq!(
        decode_err(&[0x90, 3, 0, 1, 0], Version::V5),
        MqttError::NoReasonCodes
    );
    let none = Packet::SubAck(SubAck {
        packet_id: 1,
        codes: Vec::new(),
        properties: props(),
    });
    assert_eq!(encode_err(&none, Version::V5), MqttError::NoReasonCodes);
}

// --- UNSUBSCRIBE, UNSUBACK ----------------------------------------------------

#[test]
fn unsubscribe_both_versions() {
    #[rustfmt::skip]
    let v311 = [
        0xA2, 7,                        // UNSUBSCRIBE (flags 0010), remaining length 7
        0x00, 0x02,                     // packet identifier 2
        0x00, 0x03, b'a', b'/', b'b',   // topic filter "a/b"
    ];
    let packet = Packet::Unsubscribe(Unsubscribe {
        packet_id: 2,
        filters: vec!["a/b"],
        properties: props(),
    });
    check_vector(&v311, Version::V311, &packet);
    #[rustfmt::skip]
    let v5 = [
        0xA2, 13,                       // UNSUBSCRIBE, remaining length 13
        0x00, 0x02,                     // packet identifier 2
        7,                              // property length
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // user property ("k", "v")
        0x00, 0x01, b'#',               // topic filter "#"
    ];
    let packet = Packet::Unsubscribe(Unsubscribe {
        packet_id: 2,
        filters: vec!["#"],
        properties: Properties {
            user_properties: vec![("k", "v")],
            ..props()
        },
    });
    check_vector(&v5, Version::V5, &packet);
    assert_eq!(
        decode_err(&[0xA2, 3, 0, 2, 0], Version::V5),
        MqttError::NoTopicFilters
    );
    assert!(matches!(
        decode_err(&[0xA2, 4, 0, 2, 0, 0], Version::V311),
        MqttError::Malformed(_)
    ));
    assert_eq!(
        decode_err(&[0xA0, 5, 0, 2, 0, 1, b'a'], Version::V311),
        MqttError::InvalidFlags {
            packet_type: PacketType::Unsubscribe,
            flags: 0
        }
    );
    // A subscription identifier is not allowed here.
    assert_eq!(
        decode_err(&[0xA2, 8, 0, 2, 2, 0x0B, 1, 0, 1, b'a'], Version::V5),
        MqttError::PropertyNotAllowed {
            property: 0x0B,
            packet_type: PacketType::Unsubscribe,
            will: false
        }
    );
    let none = Packet::Unsubscribe(Unsubscribe {
        packet_id: 2,
        filters: Vec::new(),
        properties: props(),
    });
    assert_eq!(encode_err(&none, Version::V5), MqttError::NoTopicFilters);
}

#[test]
fn unsuback_both_versions() {
    // 3.1.1: the packet identifier only.
    let v311 = Packet::UnsubAck(UnsubAck {
        packet_id: 2,
        codes: Vec::new(),
        properties: props(),
    });
    check_vector(&[0xB0, 2, 0, 2], Version::V311, &v311);
    #[rustfmt::skip]
    let v5 = [
        0xB0, 5,                        // UNSUBACK, remaining length 5
        0x00, 0x02,                     // packet identifier 2
        0,                              // property length 0
        0x00, 0x11,                     // Success, No subscription existed
    ];
    let packet = Packet::UnsubAck(UnsubAck {
        packet_id: 2,
        codes: vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted],
        properties: props(),
    });
    check_vector(&v5, Version::V5, &packet);
    // The codes are dropped on a 3.1.1 connection.
    assert_eq!(encoded(&packet, Version::V311), [0xB0, 2, 0, 2]);
    assert!(matches!(
        decode_err(&[0xB0, 3, 0, 2, 0], Version::V311),
        MqttError::Malformed(_)
    ));
    assert_eq!(
        decode_err(&[0xB0, 3, 0, 2, 0], Version::V5),
        MqttError::NoReasonCodes
    );
    assert_eq!(
        decode_err(&[0xB0, 4, 0, 2, 0, 0x01], Version::V5),
        MqttError::InvalidReasonCode {
            packet_type: PacketType::UnsubAck,
            code: 0x01
        }
    );
    assert_eq!(encode_err(&v311, Version::V5), MqttError::NoReasonCodes);
}

// --- PINGREQ, PINGRESP, DISCONNECT, AUTH --------------------------------------

#[test]
fn ping() {
    for version in [Version::V311, Version::V5] {
        check_vector(&[0xC0, 0], version, &Packet::PingReq);
        check_vector(&[0xD0, 0], version, &Packet::PingResp);
        assert!(matches!(
            decode_err(&[0xC0, 1, 0], version),
            MqttError::Malformed(_)
        ));
        assert_eq!(
            decode_err(&[0xC1, 0], version),
            MqttError::InvalidFlags {
                packet_type: PacketType::PingReq,
                flags: 1
            }
        );
    }
}

#[test]
fn disconnect_both_forms() {
    let normal = Packet::Disconnect(Disconnect::default());
    check_vector(&[0xE0, 0], Version::V311, &normal);
    check_vector(&[0xE0, 0], Version::V5, &normal);
    // 3.1.1 has no body.
    assert!(matches!(
        decode_err(&[0xE0, 1, 0], Version::V311),
        MqttError::Malformed(_)
    ));
    // 5.0: the reason code alone.
    check_vector(
        &[0xE0, 1, 0x04],
        Version::V5,
        &Packet::Disconnect(Disconnect {
            code: ReasonCode::DisconnectWithWill,
            properties: props(),
        }),
    );
    #[rustfmt::skip]
    let wire = [
        0xE0, 8,                        // DISCONNECT, remaining length 8
        0x9C,                           // Use another server
        6,                              // property length
        0x1C, 0x00, 0x03, b's', b'r', b'v', // server reference "srv"
    ];
    let packet = Packet::Disconnect(Disconnect {
        code: ReasonCode::UseAnotherServer,
        properties: Properties {
            server_reference: Some("srv"),
            ..props()
        },
    });
    check_vector(&wire, Version::V5, &packet);
    // 3.1.1 drops the code and the properties.
    assert_eq!(encoded(&packet, Version::V311), [0xE0, 0]);
    assert_eq!(
        decode_err(&[0xE0, 1, 0x18], Version::V5),
        MqttError::InvalidReasonCode {
            packet_type: PacketType::Disconnect,
            code: 0x18
        }
    );
    // Session expiry interval twice.
    let err = decode_err(
        &[0xE0, 12, 0, 10, 0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2],
        Version::V5,
    );
    assert_eq!(err, MqttError::DuplicateProperty(0x11));
}

#[test]
fn auth() {
    check_vector(&[0xF0, 0], Version::V5, &Packet::Auth(Auth::default()));
    #[rustfmt::skip]
    let wire = [
        0xF0, 15,                       // AUTH, remaining length 15
        0x18,                           // Continue authentication
        13,                             // property length
        0x15, 0x00, 0x05, b'S', b'C', b'R', b'A', b'M', // authentication method "SCRAM"
        0x16, 0x00, 0x02, 0x01, 0x02,   //   authentication data 01 02
    ];
    let packet = Packet::Auth(Auth {
        code: ReasonCode::ContinueAuthentication,
        properties: Properties {
            authentication_method: Some("SCRAM"),
            authentication_data: Some(&[1, 2]),
            ..props()
        },
    });
    check_vector(&wire, Version::V5, &packet);
    // A code without properties is written with a property length of 0.
    let reauth = Packet::Auth(Auth {
        code: ReasonCode::ReAuthenticate,
        properties: props(),
    });
    check_vector(&[0xF0, 2, 0x19, 0], Version::V5, &reauth);
    // The code and the property length are left out together or not at all.
    assert!(matches!(
        decode_err(&[0xF0, 1, 0x19], Version::V5),
        MqttError::Malformed(_)
    ));
    // AUTH does not exist in 3.1.1; 0x10 is no AUTH code; flags must be 0.
    let err = decode_err(&[0xF0, 0], Version::V311);
    assert_eq!(err, MqttError::InvalidPacketType(15));
    assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
    assert_eq!(
        encode_err(&packet, Version::V311),
        MqttError::InvalidPacketType(15)
    );
    assert_eq!(
        decode_err(&[0xF0, 2, 0x10, 0], Version::V5),
        MqttError::InvalidReasonCode {
            packet_type: PacketType::Auth,
            code: 0x10
        }
    );
    assert_eq!(
        decode_err(&[0xF1, 0], Version::V5),
        MqttError::InvalidFlags {
            packet_type: PacketType::Auth,
            flags: 1
        }
    );
}

// --- fixed header ---------------------------------------------------------------

#[test]
fn fixed_header_sizes_and_limits() {
    let header = |bytes: &[u8], max| read_fixed_header(bytes, max);
    // Remaining length 98 + 2 header bytes = exactly the limit of 100.
    assert_eq!(
        header(&[0x30, 98], 100),
        Ok(Decoded::Frame {
            frame: FixedHeader {
                packet_type: PacketType::Publish,
                flags: 0,
                remaining_len: 98,
                header_len: 2
            },
            consumed: 2
        })
    );
    // Oversize declared lengths are refused with only the header present:
    // 2, 3, 4 and 5 header bytes.
    for (bytes, size) in [
        (&[0x30, 99][..], 101u64),
        (&[0x30, 0xFF, 0x7F], 16_383 + 3),
        (&[0x30, 0xFF, 0xFF, 0x7F], 2_097_151 + 4),
        (&[0x30, 0xFF, 0xFF, 0xFF, 0x7F], 268_435_455 + 5),
    ] {
        let err = header(bytes, 100).unwrap_err();
        assert_eq!(err, MqttError::PacketTooLarge { size, limit: 100 });
        assert_eq!(err.reason_code(), ReasonCode::PacketTooLarge);
        assert_eq!(decode(bytes, Version::V5, 100), Err(err));
    }
    // The varint boundaries of MQTT §1.5.5 (Table 1-1).
    for (bytes, value) in [
        (&[0x00][..], 0u32),
        (&[0x7F], 127),
        (&[0x80, 0x01], 128),
        (&[0xFF, 0x7F], 16_383),
        (&[0x80, 0x80, 0x01], 16_384),
        (&[0xFF, 0xFF, 0x7F], 2_097_151),
        (&[0x80, 0x80, 0x80, 0x01], 2_097_152),
        (&[0xFF, 0xFF, 0xFF, 0x7F], 268_435_455),
    ] {
        let wire = [&[0x30][..], bytes].concat();
        let Ok(Decoded::Frame { frame, consumed }) = header(&wire, u32::MAX) else {
            panic!("{wire:02x?}")
        };
        assert_eq!(frame.remaining_len, value);
        assert_eq!(consumed, wire.len());
        assert_eq!(frame.total_len(), wire.len() + value as usize);
    }
    // Incomplete while the varint continues; malformed past four bytes.
    for bytes in [&[][..], &[0x30], &[0x30, 0x80], &[0x30, 0xFF, 0xFF, 0xFF]] {
        assert_eq!(header(bytes, MAX), Ok(Decoded::Incomplete));
    }
    let err = header(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF], MAX).unwrap_err();
    assert_eq!(err, MqttError::MalformedRemainingLength);
    assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
    // A non-minimal encoding is accepted: 0x80 0x00 is 0.
    assert_eq!(
        decode(&[0xC0, 0x80, 0x00], Version::V311, MAX),
        Ok(Decoded::Frame {
            frame: Packet::PingReq,
            consumed: 3
        })
    );
    // Packet type 0 is refused from the first byte on.
    assert_eq!(header(&[0x00], MAX), Err(MqttError::InvalidPacketType(0)));
    // The fixed header is refused before the body arrives.
    assert_eq!(
        decode(&[0x62, 2], Version::V5, MAX),
        Ok(Decoded::Incomplete)
    );
    assert_eq!(
        decode(&[0x63, 2], Version::V5, MAX),
        Err(MqttError::InvalidFlags {
            packet_type: PacketType::PubRel,
            flags: 3
        })
    );
}

// --- properties -----------------------------------------------------------------

#[test]
fn property_rules() {
    // A QoS 0 PUBLISH to "t" with the given properties.
    let publish = |props: &[u8]| {
        let mut wire = vec![0x30, 4 + props.len() as u8, 0, 1, b't', props.len() as u8];
        wire.extend_from_slice(props);
        wire
    };
    let err = decode_err(&publish(&[0x7F, 0]), Version::V5);
    assert_eq!(err, MqttError::UnknownProperty(0x7F));
    assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
    for id in [0x00, 0x04, 0x2B, 0x80, 0xFF] {
        assert_eq!(
            decode_err(&publish(&[id, 0]), Version::V5),
            MqttError::UnknownProperty(id)
        );
    }
    // Topic alias 0 is 0x94 Topic Alias invalid; twice is a protocol error.
    let err = decode_err(&publish(&[0x23, 0, 0]), Version::V5);
    assert_eq!(err, MqttError::InvalidPropertyValue(0x23));
    assert_eq!(err.reason_code(), ReasonCode::TopicAliasInvalid);
    assert_eq!(
        decode_err(&publish(&[0x23, 0, 1, 0x23, 0, 2]), Version::V5),
        MqttError::DuplicateProperty(0x23)
    );
    // Payload format indicator 2; subscription identifier 0.
    let err = decode_err(&publish(&[0x01, 2]), Version::V5);
    assert_eq!(err, MqttError::InvalidPropertyValue(0x01));
    assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
    assert_eq!(
        decode_err(&publish(&[0x0B, 0]), Version::V5),
        MqttError::InvalidPropertyValue(0x0B)
    );
    // A subscription identifier varint past four bytes.
    assert!(matches!(
        decode_err(&publish(&[0x0B, 0x80, 0x80, 0x80, 0x80, 0x01]), Version::V5),
        MqttError::Malformed(_)
    ));
    // A property running past the property length, and a property length
    // running past the packet.
    assert!(matches!(
        decode_err(&[0x30, 9, 0, 1, b't', 1, 0x02, 0, 0, 0, 5], Version::V5),
        MqttError::Malformed(_)
    ));
    assert!(matches!(
        decode_err(&[0x30, 6, 0, 1, b't', 9, 0x01, 0], Version::V5),
        MqttError::Malformed(_)
    ));
    // Invalid UTF-8 in a user property value.
    assert_eq!(
        decode_err(&publish(&[0x26, 0, 1, b'k', 0, 1, 0xFF]), Version::V5),
        MqttError::InvalidString
    );
    // User properties repeat, in order.
    let wire = publish(&[0x26, 0, 1, b'k', 0, 1, b'1', 0x26, 0, 1, b'k', 0, 1, b'2']);
    let Packet::Publish(p) = decoded(&wire, Version::V5) else {
        panic!()
    };
    assert_eq!(p.properties.user_properties, [("k", "1"), ("k", "2")]);
    // CONNECT: receive maximum 0, maximum packet size 0, booleans of 2.
    let connect = |props: &[u8]| {
        let mut body = vec![
            0,
            4,
            b'M',
            b'Q',
            b'T',
            b'T',
            5,
            0x02,
            0,
            60,
            props.len() as u8,
        ];
        body.extend_from_slice(props);
        body.extend_from_slice(&[0, 1, b'c']);
        let mut wire = vec![0x10, body.len() as u8];
        wire.extend_from_slice(&body);
        wire
    };
    for (props, id) in [
        (&[0x21, 0, 0][..], 0x21),
        (&[0x27, 0, 0, 0, 0], 0x27),
        (&[0x17, 2], 0x17),
        (&[0x19, 2], 0x19),
    ] {
        let err = decode_err(&connect(props), Version::V5);
        assert_eq!(err, MqttError::InvalidPropertyValue(id));
        assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
    }
    // Will properties are their own set: Session Expiry Interval is not in it.
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0x06, 0, 60, 0, 0, 1, b'c'];
    body.extend_from_slice(&[5, 0x11, 0, 0, 0, 1, 0, 1, b'w', 0, 0]);
    let wire = [&[0x10, body.len() as u8][..], &body].concat();
    let err = decode_err(&wire, Version::V5);
    assert_eq!(
        err,
        MqttError::PropertyNotAllowed {
            property: 0x11,
            packet_type: PacketType::Connect,
            will: true
        }
    );
    assert!(err.to_string().contains("will"), "{err}");
    // CONNACK booleans.
    for id in [0x24, 0x25, 0x28, 0x29, 0x2A] {
        assert_eq!(
            decode_err(&[0x20, 5, 0, 0, 2, id, 2], Version::V5),
            MqttError::InvalidPropertyValue(id)
        );
    }
}

#[test]
fn encoder_checks_properties_as_the_decoder_does() {
    let publish = |properties| {
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "t",
            packet_id: None,
            properties,
            payload: b"",
        })
    };
    let cases = [
        (
            Properties {
                server_keep_alive: Some(5),
                ..props()
            },
            MqttError::PropertyNotAllowed {
                property: 0x13,
                packet_type: PacketType::Publish,
                will: false,
            },
        ),
        (
            Properties {
                topic_alias: Some(0),
                ..props()
            },
            MqttError::InvalidPropertyValue(0x23),
        ),
        (
            Properties {
                payload_format_indicator: Some(2),
                ..props()
            },
            MqttError::InvalidPropertyValue(0x01),
        ),
        (
            Properties {
                subscription_identifiers: vec![0],
                ..props()
            },
            MqttError::InvalidPropertyValue(0x0B),
        ),
        (
            Properties {
                content_type: Some("a\0"),
                ..props()
            },
            MqttError::InvalidString,
        ),
    ];
    for (properties, expected) in cases {
        let packet = publish(properties);
        assert_eq!(encode_err(&packet, Version::V5), expected);
        // 3.1.1 never writes properties, so never checks them.
        encoded(&packet, Version::V311);
    }
    let long = vec![0u8; 70_000];
    let err = encode_err(
        &publish(Properties {
            correlation_data: Some(&long),
            ..props()
        }),
        Version::V5,
    );
    assert_eq!(
        err,
        MqttError::FieldTooLong {
            field: "Correlation Data",
            len: 70_000
        }
    );
    // Connect properties in a will.
    let connect = Packet::Connect(Connect {
        version: Version::V5,
        clean_start: true,
        keep_alive_secs: 0,
        client_id: "c",
        will: Some(Will {
            topic: "w",
            payload: b"",
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Properties {
                receive_maximum: Some(1),
                ..props()
            },
        }),
        username: None,
        password: None,
        properties: props(),
    });
    assert_eq!(
        encode_err(&connect, Version::V5),
        MqttError::PropertyNotAllowed {
            property: 0x21,
            packet_type: PacketType::Connect,
            will: true
        }
    );
}

#[test]
fn every_property_round_trips_where_allowed() {
    let all = Properties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(u32::MAX),
        content_type: Some("application/json"),
        response_topic: Some("reply/here"),
        correlation_data: Some(b"\x00\x01"),
        subscription_identifiers: vec![1, MAX_REMAINING_LENGTH],
        session_expiry_interval: Some(7),
        assigned_client_identifier: Some("auto-1"),
        server_keep_alive: Some(30),
        authentication_method: Some("PLAIN"),
        authentication_data: Some(b"secret"),
        request_problem_information: Some(0),
        will_delay_interval: Some(9),
        request_response_information: Some(1),
        response_information: Some("resp"),
        server_reference: Some("other:1883"),
        reason_string: Some("because"),
        receive_maximum: Some(u16::MAX),
        topic_alias_maximum: Some(0),
        topic_alias: Some(3),
        maximum_qos: Some(0),
        retain_available: Some(1),
        user_properties: vec![("a", "1"), ("", ""), ("a", "2")],
        maximum_packet_size: Some(1),
        wildcard_subscription_available: Some(0),
        subscription_identifier_available: Some(1),
        shared_subscription_available: Some(0),
    };
    // Keep what the place allows, as the encoder demands.
    let only = |ids: &[u8]| {
        let keep = |id: u8| ids.contains(&id);
        let p = &all;
        Properties {
            payload_format_indicator: p.payload_format_indicator.filter(|_| keep(0x01)),
            message_expiry_interval: p.message_expiry_interval.filter(|_| keep(0x02)),
            content_type: p.content_type.filter(|_| keep(0x03)),
            response_topic: p.response_topic.filter(|_| keep(0x08)),
            correlation_data: p.correlation_data.filter(|_| keep(0x09)),
            subscription_identifiers: if keep(0x0B) {
                p.subscription_identifiers.clone()
            } else {
                Vec::new()
            },
            session_expiry_interval: p.session_expiry_interval.filter(|_| keep(0x11)),
            assigned_client_identifier: p.assigned_client_identifier.filter(|_| keep(0x12)),
            server_keep_alive: p.server_keep_alive.filter(|_| keep(0x13)),
            authentication_method: p.authentication_method.filter(|_| keep(0x15)),
            authentication_data: p.authentication_data.filter(|_| keep(0x16)),
            request_problem_information: p.request_problem_information.filter(|_| keep(0x17)),
            will_delay_interval: p.will_delay_interval.filter(|_| keep(0x18)),
            request_response_information: p.request_response_information.filter(|_| keep(0x19)),
            response_information: p.response_information.filter(|_| keep(0x1A)),
            server_reference: p.server_reference.filter(|_| keep(0x1C)),
            reason_string: p.reason_string.filter(|_| keep(0x1F)),
            receive_maximum: p.receive_maximum.filter(|_| keep(0x21)),
            topic_alias_maximum: p.topic_alias_maximum.filter(|_| keep(0x22)),
            topic_alias: p.topic_alias.filter(|_| keep(0x23)),
            maximum_qos: p.maximum_qos.filter(|_| keep(0x24)),
            retain_available: p.retain_available.filter(|_| keep(0x25)),
            user_properties: if keep(0x26) {
                p.user_properties.clone()
            } else {
                Vec::new()
            },
            maximum_packet_size: p.maximum_packet_size.filter(|_| keep(0x27)),
            wildcard_subscription_available: p
                .wildcard_subscription_available
                .filter(|_| keep(0x28)),
            subscription_identifier_available: p
                .subscription_identifier_available
                .filter(|_| keep(0x29)),
            shared_subscription_available: p.shared_subscription_available.filter(|_| keep(0x2A)),
        }
    };
    let connect = only(&[0x11, 0x15, 0x16, 0x17, 0x19, 0x21, 0x22, 0x26, 0x27]);
    let will = only(&[0x01, 0x02, 0x03, 0x08, 0x09, 0x18, 0x26]);
    let connack = only(&[
        0x11, 0x12, 0x13, 0x15, 0x16, 0x1A, 0x1C, 0x1F, 0x21, 0x22, 0x24, 0x25, 0x26, 0x27, 0x28,
        0x29, 0x2A,
    ]);
    let publish = only(&[0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x23, 0x26]);
    let reason = only(&[0x1F, 0x26]);
    let subscribe = Properties {
        subscription_identifiers: vec![42],
        user_properties: all.user_properties.clone(),
        ..props()
    };
    let disconnect = only(&[0x11, 0x1C, 0x1F, 0x26]);
    let auth = only(&[0x15, 0x16, 0x1F, 0x26]);
    let packets = [
        Packet::Connect(Connect {
            version: Version::V5,
            clean_start: false,
            keep_alive_secs: u16::MAX,
            client_id: "client",
            will: Some(Will {
                topic: "will",
                payload: b"gone",
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: will,
            }),
            username: Some("u"),
            password: Some(b""),
            properties: connect,
        }),
        Packet::ConnAck(ConnAck {
            session_present: true,
            code: ReasonCode::Success,
            properties: connack,
        }),
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::ExactlyOnce,
            retain: true,
            topic: "",
            packet_id: Some(u16::MAX),
            properties: publish,
            payload: &[0; 200],
        }),
        Packet::PubAck(Ack {
            packet_id: 1,
            code: ReasonCode::Success,
            properties: reason.clone(),
        }),
        Packet::PubRec(Ack {
            packet_id: 1,
            code: ReasonCode::QuotaExceeded,
            properties: reason.clone(),
        }),
        Packet::PubRel(Ack {
            packet_id: 1,
            code: ReasonCode::Success,
            properties: reason.clone(),
        }),
        Packet::PubComp(Ack {
            packet_id: 1,
            code: ReasonCode::PacketIdentifierNotFound,
            properties: reason.clone(),
        }),
        Packet::Subscribe(Subscribe {
            packet_id: 9,
            filters: vec![("$share/g/a/#", SubscriptionOptions::default())],
            properties: subscribe,
        }),
        Packet::SubAck(SubAck {
            packet_id: 9,
            codes: vec![ReasonCode::GrantedQoS2],
            properties: reason.clone(),
        }),
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 9,
            filters: vec!["a", "b"],
            properties: only(&[0x26]),
        }),
        Packet::UnsubAck(UnsubAck {
            packet_id: 9,
            codes: vec![ReasonCode::Success, ReasonCode::NotAuthorized],
            properties: reason.clone(),
        }),
        Packet::Disconnect(Disconnect {
            code: ReasonCode::Success,
            properties: disconnect,
        }),
        Packet::Auth(Auth {
            code: ReasonCode::Success,
            properties: auth,
        }),
    ];
    for packet in &packets {
        round_trip(packet, Version::V5);
    }
}

#[test]
fn every_packet_type_round_trips_in_both_versions() {
    for version in [Version::V311, Version::V5] {
        let v5 = version == Version::V5;
        let reason = |code| if v5 { code } else { ReasonCode::Success };
        let packets = [
            Packet::Connect(Connect {
                version,
                clean_start: true,
                keep_alive_secs: 30,
                client_id: "dev-1",
                will: Some(Will {
                    topic: "dev/1/status",
                    payload: b"offline",
                    qos: QoS::ExactlyOnce,
                    retain: true,
                    properties: props(),
                }),
                username: Some("dev-1"),
                password: Some(b"\x00\xFF"),
                properties: props(),
            }),
            Packet::ConnAck(ConnAck {
                session_present: false,
                code: ReasonCode::BadUserNameOrPassword,
                properties: props(),
            }),
            Packet::Publish(Publish {
                dup: true,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: "dev/1/temp",
                packet_id: Some(1),
                properties: props(),
                payload: b"21",
            }),
            Packet::PubAck(ack(2, reason(ReasonCode::NotAuthorized))),
            Packet::PubRec(ack(3, ReasonCode::Success)),
            Packet::PubRel(ack(4, reason(ReasonCode::PacketIdentifierNotFound))),
            Packet::PubComp(ack(5, ReasonCode::Success)),
            Packet::Subscribe(Subscribe {
                packet_id: 6,
                filters: vec![
                    ("a/+/c", SubscriptionOptions::default()),
                    (
                        "#",
                        SubscriptionOptions {
                            qos: QoS::ExactlyOnce,
                            no_local: v5,
                            retain_as_published: v5,
                            retain_handling: if v5 {
                                RetainHandling::OnNewSubscribe
                            } else {
                                RetainHandling::OnSubscribe
                            },
                        },
                    ),
                ],
                properties: props(),
            }),
            Packet::SubAck(SubAck {
                packet_id: 6,
                codes: vec![ReasonCode::GrantedQoS2, ReasonCode::UnspecifiedError],
                properties: props(),
            }),
            Packet::Unsubscribe(Unsubscribe {
                packet_id: 7,
                filters: vec!["a/+/c", "#"],
                properties: props(),
            }),
            Packet::UnsubAck(UnsubAck {
                packet_id: 7,
                codes: if v5 {
                    vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted]
                } else {
                    Vec::new()
                },
                properties: props(),
            }),
            Packet::PingReq,
            Packet::PingResp,
            Packet::Disconnect(Disconnect {
                code: reason(ReasonCode::ServerShuttingDown),
                properties: props(),
            }),
        ];
        for packet in &packets {
            round_trip(packet, version);
        }
        if v5 {
            round_trip(
                &Packet::Auth(Auth {
                    code: ReasonCode::ReAuthenticate,
                    properties: props(),
                }),
                version,
            );
        }
    }
}

#[test]
fn packets_in_a_stream() {
    let packets = [
        Packet::PingReq,
        Packet::PubAck(ack(1, ReasonCode::Success)),
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "t",
            packet_id: None,
            properties: props(),
            payload: &[0x30; 200],
        }),
        Packet::Disconnect(Disconnect::default()),
    ];
    let mut stream = Vec::new();
    for packet in &packets {
        encode(packet, Version::V5, &mut stream).unwrap();
    }
    let mut at = 0;
    let mut seen = Vec::new();
    while let Decoded::Frame { frame, consumed } = decode(&stream[at..], Version::V5, MAX).unwrap()
    {
        seen.push(frame);
        at += consumed;
    }
    assert_eq!(seen, packets);
    assert_eq!(at, stream.len());
}

#[test]
fn error_reason_codes_and_messages() {
    let errors = [
        (
            MqttError::PacketTooLarge { size: 9, limit: 8 },
            ReasonCode::PacketTooLarge,
        ),
        (
            MqttError::MalformedRemainingLength,
            ReasonCode::MalformedPacket,
        ),
        (MqttError::InvalidPacketType(0), ReasonCode::MalformedPacket),
        (
            MqttError::InvalidFlags {
                packet_type: PacketType::PubRel,
                flags: 0,
            },
            ReasonCode::MalformedPacket,
        ),
        (
            MqttError::UnsupportedProtocol { level: 3 },
            ReasonCode::UnsupportedProtocolVersion,
        ),
        (MqttError::Malformed("x"), ReasonCode::MalformedPacket),
        (MqttError::InvalidString, ReasonCode::MalformedPacket),
        (MqttError::InvalidQoS, ReasonCode::MalformedPacket),
        (
            MqttError::InvalidSubscriptionOptions(0x40),
            ReasonCode::MalformedPacket,
        ),
        (
            MqttError::InvalidSubscriptionOptions(0x30),
            ReasonCode::ProtocolError,
        ),
        (
            MqttError::InvalidReasonCode {
                packet_type: PacketType::Auth,
                code: 1,
            },
            ReasonCode::ProtocolError,
        ),
        (
            MqttError::UnknownProperty(0x7F),
            ReasonCode::MalformedPacket,
        ),
        (
            MqttError::PropertyNotAllowed {
                property: 0x13,
                packet_type: PacketType::Publish,
                will: false,
            },
            ReasonCode::MalformedPacket,
        ),
        (
            MqttError::DuplicateProperty(0x26),
            ReasonCode::ProtocolError,
        ),
        (
            MqttError::InvalidPropertyValue(0x21),
            ReasonCode::ProtocolError,
        ),
        (
            MqttError::InvalidPropertyValue(0x23),
            ReasonCode::TopicAliasInvalid,
        ),
        (MqttError::ZeroPacketId, ReasonCode::ProtocolError),
        (MqttError::NoTopicFilters, ReasonCode::ProtocolError),
        (MqttError::NoReasonCodes, ReasonCode::ProtocolError),
        (
            MqttError::PacketIdQoSMismatch {
                qos: QoS::AtMostOnce,
            },
            ReasonCode::ProtocolError,
        ),
        (
            MqttError::FieldTooLong {
                field: "topic name",
                len: 70_000,
            },
            ReasonCode::ImplementationSpecificError,
        ),
        (
            MqttError::TooLarge {
                remaining_len: 1 << 30,
            },
            ReasonCode::PacketTooLarge,
        ),
    ];
    for (err, code) in errors {
        assert_eq!(err.reason_code(), code, "{err:?}");
        assert!(!err.to_string().is_empty());
    }
    assert_eq!(
        MqttError::DuplicateProperty(0x23).to_string(),
        "property 0x23 (Topic Alias) appears more than once"
    );
}

#[test]
fn code_tables() {
    for byte in 0..=u8::MAX {
        if let Some(code) = ReasonCode::from_u8(byte) {
            assert_eq!(u8::from(code), byte);
            assert_eq!(ReasonCode::try_from(byte), Ok(code));
        } else {
            assert_eq!(ReasonCode::try_from(byte), Err(byte));
        }
        match PacketType::from_u8(byte) {
            Some(packet_type) => assert_eq!(packet_type as u8, byte),
            None => assert!(byte == 0 || byte > 15),
        }
    }
    assert_eq!(
        ReasonCode::from_u8(0xA2),
        Some(ReasonCode::WildcardSubscriptionsNotSupported)
    );
    assert_eq!(ReasonCode::from_u8(0x03), None);
    assert_eq!(PacketType::try_from(15), Ok(PacketType::Auth));
    assert!(props().is_empty());
    assert!(!Properties {
        shared_subscription_available: Some(0),
        ..props()
    }
    .is_empty());
}
