//! Message payload vectors (RTMP 1.0 §5.4, §7.1).

use crate::amf0::{self, Amf0Limits, Amf0Value};

use super::super::*;

fn decoded(type_id: u8, payload: &[u8]) -> Message<'_> {
    Message::decode(type_id, payload, &Amf0Limits::default()).unwrap()
}

fn encoded(message: &Message<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    message.encode(&mut out);
    out
}

#[test]
fn protocol_control_messages() {
    let cases: [(u8, &[u8], Message<'static>); 5] = [
        (1, &[0x00, 0x00, 0x10, 0x00], Message::SetChunkSize(4096)),
        (2, &[0x00, 0x00, 0x00, 0x06], Message::Abort { csid: 6 }),
        (
            3,
            &[0x00, 0x26, 0x25, 0xA0], // 2 500 000 bytes received
            Message::Acknowledgement {
                sequence: 2_500_000,
            },
        ),
        (
            5,
            &[0x00, 0x26, 0x25, 0xA0],
            Message::WindowAckSize(2_500_000),
        ),
        (
            6,
            &[
                0x00, 0x26, 0x25, 0xA0, // window
                0x02, // limit type: dynamic
            ],
            Message::SetPeerBandwidth {
                window: 2_500_000,
                limit: PeerBandwidthLimit::Dynamic,
            },
        ),
    ];
    for (type_id, payload, expected) in cases {
        let message = decoded(type_id, payload);
        assert_eq!(message, expected);
        assert_eq!(message.type_id(), type_id);
        assert_eq!(encoded(&message), payload);
        // Too short.
        assert_eq!(
            Message::decode(type_id, &payload[..3], &Amf0Limits::default()),
            Err(RtmpError::BadControlMessage { type_id })
        );
    }
}

#[test]
fn user_control_events() {
    let cases: [(&[u8], UserControl); 8] = [
        (&[0, 0, 0, 0, 0, 1], UserControl::StreamBegin(1)),
        (&[0, 1, 0, 0, 0, 1], UserControl::StreamEof(1)),
        (&[0, 2, 0, 0, 0, 1], UserControl::StreamDry(1)),
        (
            &[0, 3, 0, 0, 0, 1, 0, 0, 0x0B, 0xB8], // stream 1, 3000 ms
            UserControl::SetBufferLength {
                stream_id: 1,
                buffer_ms: 3000,
            },
        ),
        (&[0, 4, 0, 0, 0, 1], UserControl::StreamIsRecorded(1)),
        (
            &[0, 6, 0x12, 0x34, 0x56, 0x78],
            UserControl::PingRequest(0x1234_5678),
        ),
        (
            &[0, 7, 0x12, 0x34, 0x56, 0x78],
            UserControl::PingResponse(0x1234_5678),
        ),
        (&[0, 31], UserControl::Other { event_type: 31 }),
    ];
    for (payload, event) in cases {
        assert_eq!(decoded(4, payload), Message::UserControl(event));
        assert_eq!(encoded(&Message::UserControl(event)), payload);
    }
    for short in [&[][..], &[0], &[0, 0, 0, 0, 1], &[0, 3, 0, 0, 0, 1, 0]] {
        assert_eq!(
            UserControl::decode(short),
            Err(RtmpError::BadControlMessage { type_id: 4 })
        );
    }
}

#[test]
fn commands() {
    let mut body = Vec::new();
    amf0::write_string(&mut body, "publish");
    amf0::write_number(&mut body, 5.0);
    amf0::write_null(&mut body);
    amf0::write_string(&mut body, "cam?key=1");
    amf0::write_string(&mut body, "live");
    let expected = Command {
        name: "publish".into(),
        transaction_id: 5.0,
        command_object: Amf0Value::Null,
        args: vec![Amf0Value::from("cam?key=1"), Amf0Value::from("live")],
    };
    assert_eq!(decoded(20, &body), Message::Command(expected.clone()));
    assert_eq!(expected.first_string_arg(), Some("cam?key=1"));
    let mut again = Vec::new();
    expected.encode(&mut again);
    assert_eq!(again, body);

    // Type 17: one zero byte, then AMF0.
    let mut amf3 = vec![0];
    amf3.extend_from_slice(&body);
    assert_eq!(decoded(17, &amf3), Message::Command(expected));

    // Short commands: missing fields default.
    let mut short = Vec::new();
    amf0::write_string(&mut short, "onBWDone");
    let Message::Command(command) = decoded(20, &short) else {
        panic!()
    };
    assert_eq!(command.transaction_id, 0.0);
    assert_eq!(command.command_object, Amf0Value::Null);
    assert!(command.args.is_empty());

    // No name, or bad AMF0.
    assert_eq!(
        Message::decode(20, &[0x05], &Amf0Limits::default()),
        Err(RtmpError::BadCommand)
    );
    assert_eq!(
        Message::decode(20, &[], &Amf0Limits::default()),
        Err(RtmpError::BadCommand)
    );
    assert_eq!(
        Message::decode(20, &[0x02, 0x00, 0x05, b'a'], &Amf0Limits::default()),
        Err(RtmpError::Amf0(Amf0Error::Truncated))
    );
}

#[test]
fn media_data_and_others_are_borrowed() {
    let payload = [0xAF, 0x01, 0x21];
    assert_eq!(decoded(8, &payload), Message::Audio(&payload));
    assert_eq!(decoded(9, &payload), Message::Video(&payload));
    assert_eq!(decoded(18, &payload), Message::Data { body: &payload });
    assert_eq!(
        decoded(15, &[0, 0x02, 0x00]),
        Message::Data {
            body: &[0x02, 0x00]
        }
    );
    assert_eq!(decoded(22, &payload), Message::Aggregate(&payload));
    assert_eq!(
        decoded(19, &payload),
        Message::Other {
            type_id: 19,
            payload: &payload
        }
    );
}
