//! Publish and play flows, refusals, chunk size changes, extended
//! timestamps, interleaving, acknowledgements and pings, through the pair.

use crate::amf0::{self, Amf0Value};

use super::super::*;
use super::pair::{pattern, status_codes, Pair};

#[test]
fn publish_flow() {
    for step in [usize::MAX, 1, 7, 1000, 4097] {
        let mut pair = Pair::new(ServerConfig::default(), ClientConfig::default(), step);
        pair.client
            .connect("live?token=t1", "rtmp://example.com/live?token=t1");
        pair.client.create_stream();
        pair.drive();
        assert_eq!(
            pair.server.handshake_kind(),
            Some(HandshakeKind::Digest(DigestSchema::DigestFirst))
        );
        assert_eq!(
            pair.take_server_events(),
            vec![ServerEvent::Connect {
                app: "live".into(),
                app_query: "token=t1".into(),
                tc_url: "rtmp://example.com/live?token=t1".into(),
            }]
        );
        assert_eq!(
            pair.take_client_events(),
            vec![
                ClientEvent::HandshakeDone {
                    server_verified: Some(true)
                },
                ClientEvent::Connected,
                ClientEvent::StreamCreated { stream_id: 1 },
            ]
        );
        // What the server sent after connect, in order.
        let controls = pair.down.controls();
        assert_eq!(
            controls[..3],
            [
                Message::WindowAckSize(2_500_000),
                Message::SetPeerBandwidth {
                    window: 2_500_000,
                    limit: PeerBandwidthLimit::Dynamic
                },
                Message::SetChunkSize(60_000),
            ]
        );
        let result = &pair.down.commands()[0];
        assert_eq!(result.name, "_result");
        assert_eq!(result.transaction_id, 1.0);
        assert_eq!(
            result.args[0].get("code").and_then(Amf0Value::as_str),
            Some("NetConnection.Connect.Success")
        );
        assert_eq!(pair.client.in_chunk_size(), 60_000);
        assert_eq!(pair.server.in_chunk_size(), 4096);

        pair.client.announce_publish("cam");
        pair.client.publish(1, "cam?key=abc", PublishType::Live);
        pair.drive();
        assert_eq!(
            pair.take_server_events(),
            vec![ServerEvent::Publish {
                stream_id: 1,
                app: "live".into(),
                name: "cam".into(),
                query: "key=abc".into(),
                publish_type: PublishType::Live,
            }]
        );
        let names: Vec<String> = pair
            .down
            .commands()
            .iter()
            .map(|c| c.name.clone())
            .collect();
        assert_eq!(
            names,
            ["_result", "_result", "_result", "onFCPublish", "_result"]
        );

        // Media before the answer is already handed over.
        pair.client
            .send_metadata(1, &[("width", Amf0Value::from(1280.0))]);
        pair.drive();
        pair.server.accept_publish(1).unwrap();
        pair.drive();
        let events = pair.take_client_events();
        assert!(events.contains(&ClientEvent::StreamBegin { stream_id: 1 }));
        assert_eq!(
            status_codes(&events),
            [("status".into(), "NetStream.Publish.Start".into())]
        );

        let video = pattern(9000, 1);
        pair.client
            .send_media(1, MediaKind::Audio, 0, &[0xAF, 0x00, 0x12, 0x10]);
        pair.client.send_media(1, MediaKind::Video, 0, &video);
        pair.client
            .send_media(1, MediaKind::Audio, 23, &[0xAF, 0x01, 0x21]);
        pair.drive();
        let mut metadata = Vec::new();
        amf0::write_string(&mut metadata, "onMetaData");
        amf0::write_ecma_array(&mut metadata, &[("width", Amf0Value::from(1280.0))]);
        assert_eq!(
            pair.server_media,
            vec![
                (1, MediaKind::Data, 0, metadata),
                (1, MediaKind::Audio, 0, vec![0xAF, 0x00, 0x12, 0x10]),
                (1, MediaKind::Video, 0, video),
                (1, MediaKind::Audio, 23, vec![0xAF, 0x01, 0x21]),
            ],
            "step {step}"
        );

        pair.client.fc_unpublish("cam");
        pair.client.delete_stream(1);
        pair.drive();
        assert_eq!(
            pair.take_server_events(),
            vec![ServerEvent::Unpublish { stream_id: 1 }]
        );
        // Media on a deleted stream is dropped.
        pair.client.send_media(1, MediaKind::Audio, 50, &[1]);
        pair.drive();
        assert_eq!(pair.server_media.len(), 4);
    }
}

#[test]
fn play_flow() {
    let mut pair = Pair::default_pair();
    let stream_id = pair.connect_and_create("live");
    pair.client.play(stream_id, "cam?sig=9");
    pair.drive();
    assert_eq!(
        pair.take_server_events(),
        vec![ServerEvent::Play {
            stream_id,
            app: "live".into(),
            name: "cam".into(),
            query: "sig=9".into(),
        }]
    );
    pair.server.accept_play(stream_id).unwrap();
    pair.drive();
    let events = pair.take_client_events();
    assert!(events.contains(&ClientEvent::StreamBegin { stream_id }));
    assert_eq!(
        status_codes(&events),
        [
            ("status".into(), "NetStream.Play.Reset".into()),
            ("status".into(), "NetStream.Play.Start".into()),
        ]
    );
    // |RtmpSampleAccess and NetStream.Data.Start arrive as data.
    assert_eq!(pair.client_media.len(), 2);
    assert!(pair.client_media.iter().all(|m| m.1 == MediaKind::Data));
    pair.client_media.clear();

    // A media message through the session, and one sent as a head plus a
    // shared payload written after the pending output.
    let shared = pattern(5000, 2);
    pair.server
        .send_media(stream_id, MediaKind::Video, 40, &[0x17, 0, 0, 0, 0]);
    let (head, used) = pair
        .server
        .media_head(stream_id, MediaKind::Video, 80, shared.len())
        .unwrap();
    let mut out = Vec::new();
    pair.server.poll_transmit(&mut out);
    out.extend_from_slice(&head[..used]);
    out.extend_from_slice(&shared);
    pair.inject_to_client(&out);
    assert!(pair
        .server
        .media_head(stream_id, MediaKind::Video, 0, 60_001)
        .is_none());
    pair.drive();
    assert_eq!(
        pair.client_media,
        vec![
            (stream_id, MediaKind::Video, 40, vec![0x17, 0, 0, 0, 0]),
            (stream_id, MediaKind::Video, 80, shared),
        ]
    );

    pair.server.send_unpublish_notify(stream_id).unwrap();
    pair.drive();
    let events = pair.take_client_events();
    assert_eq!(
        status_codes(&events),
        [("status".into(), "NetStream.Play.UnpublishNotify".into())]
    );
    assert!(events.contains(&ClientEvent::StreamEof { stream_id }));

    pair.client.delete_stream(stream_id);
    pair.drive();
    assert_eq!(
        pair.take_server_events(),
        vec![ServerEvent::CloseStream { stream_id }]
    );
    assert_eq!(
        pair.server.accept_play(stream_id),
        Err(RtmpError::UnknownStream { stream_id })
    );
}

#[test]
fn rejections_and_wrong_states() {
    let mut pair = Pair::default_pair();
    let stream_id = pair.connect_and_create("live");
    assert_eq!(
        pair.server.accept_publish(stream_id),
        Err(RtmpError::WrongStreamState { stream_id })
    );
    assert_eq!(
        pair.server.accept_publish(99),
        Err(RtmpError::UnknownStream { stream_id: 99 })
    );
    pair.client.publish(stream_id, "cam", PublishType::Record);
    pair.drive();
    assert!(matches!(
        pair.take_server_events()[..],
        [ServerEvent::Publish {
            publish_type: PublishType::Record,
            ..
        }]
    ));
    pair.server
        .reject_publish(stream_id, status::PUBLISH_BAD_NAME, "bad key")
        .unwrap();
    pair.drive();
    assert_eq!(
        status_codes(&pair.take_client_events()),
        [("error".into(), "NetStream.Publish.BadName".into())]
    );
    // Media from a refused publisher is dropped.
    pair.client
        .send_media(stream_id, MediaKind::Video, 0, &[1, 2]);
    pair.drive();
    assert!(pair.server_media.is_empty());

    // The stream may then play; refused too.
    pair.client.play(stream_id, "other");
    pair.drive();
    assert_eq!(pair.take_server_events().len(), 1);
    pair.server
        .reject_play(stream_id, status::PLAY_STREAM_NOT_FOUND, "no such stream")
        .unwrap();
    pair.drive();
    assert_eq!(
        status_codes(&pair.take_client_events()),
        [("error".into(), "NetStream.Play.StreamNotFound".into())]
    );
    assert_eq!(
        pair.server.send_unpublish_notify(stream_id),
        Err(RtmpError::WrongStreamState { stream_id })
    );

    // A publish without a name is answered with an error, no event.
    pair.client.publish(stream_id, "", PublishType::Live);
    pair.drive();
    assert!(pair.take_server_events().is_empty());
    assert_eq!(
        status_codes(&pair.take_client_events()),
        [("error".into(), "NetStream.Publish.BadName".into())]
    );
}

/// A raw command as a client would send it.
fn command_bytes(stream_id: u32, name: &str, txn: f64, args: &[Amf0Value]) -> Vec<u8> {
    let command = Command {
        name: name.into(),
        transaction_id: txn,
        command_object: Amf0Value::Null,
        args: args.to_vec(),
    };
    let mut body = Vec::new();
    command.encode(&mut body);
    let mut wire = Vec::new();
    encode_message(
        &mut wire,
        4096,
        3,
        0,
        type_id::COMMAND_AMF0,
        stream_id,
        &body,
    );
    wire
}

#[test]
fn unknown_commands_are_harmless_and_order_is_checked() {
    let mut pair = Pair::default_pair();
    pair.connect_and_create("live");
    for name in [
        "receiveAudio",
        "receiveVideo",
        "_checkbw",
        "someVendorThing",
        "pause",
    ] {
        let wire = command_bytes(1, name, 7.0, &[Amf0Value::Boolean(true)]);
        pair.inject_to_server(&wire);
    }
    let wire = command_bytes(0, "getStreamLength", 9.0, &[Amf0Value::from("cam")]);
    pair.inject_to_server(&wire);
    pair.drive();
    let last = pair.down.commands().pop().unwrap();
    assert_eq!((last.name.as_str(), last.transaction_id), ("_result", 9.0));

    // createStream beyond the limit: _error.
    for _ in 0..8 {
        pair.client.create_stream();
    }
    pair.drive();
    let events = pair.take_client_events();
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, ClientEvent::StreamCreated { .. }))
            .count(),
        7
    );
    assert!(events.contains(&ClientEvent::CommandFailed {
        name: "createStream".into(),
        code: "NetConnection.Call.Failed".into(),
    }));

    // A stream command before connect ends the connection.
    let mut early = Pair::default_pair();
    early.client.create_stream();
    assert_eq!(early.try_drive(), Err(RtmpError::NotConnected));
}

#[test]
fn chunk_size_change_mid_stream() {
    let server_config = ServerConfig {
        chunk_size: 1000,
        ..ServerConfig::default()
    };
    let mut pair = Pair::new(server_config, ClientConfig::default(), 3000);
    let stream_id = pair.publishing("cam");
    let mut expected = Vec::new();
    for (i, size) in [4096u32, 100, 1, 70_000, 128].into_iter().enumerate() {
        pair.client.set_chunk_size(size).unwrap();
        for j in 0..3u32 {
            let payload = pattern(2500 + j as usize * 1000, i as u8);
            let ts = i as u32 * 100 + j;
            pair.client
                .send_media(stream_id, MediaKind::Video, ts, &payload);
            expected.push((stream_id, MediaKind::Video, ts, payload));
        }
        pair.drive();
        assert_eq!(pair.server.in_chunk_size(), size);
    }
    assert_eq!(pair.server_media, expected);
    assert_eq!(
        pair.client.set_chunk_size(0),
        Err(RtmpError::InvalidChunkSize(0))
    );

    // The server's chunk size (1000) applies to what it sends.
    let mut play = Pair::new(
        ServerConfig {
            chunk_size: 1000,
            ..ServerConfig::default()
        },
        ClientConfig::default(),
        usize::MAX,
    );
    let stream_id = play.playing("cam");
    assert_eq!(play.client.in_chunk_size(), 1000);
    let payload = pattern(4321, 9);
    play.server
        .send_media(stream_id, MediaKind::Video, 5, &payload);
    play.drive();
    assert_eq!(
        play.client_media,
        vec![(stream_id, MediaKind::Video, 5, payload)]
    );
}

#[test]
fn extended_timestamps_both_ways() {
    let stamps = [0x00FF_FFF0u32, 0x00FF_FFFF, 0x0100_0000, 0xFFFF_FFFF, 5];
    let mut pair = Pair::new(ServerConfig::default(), ClientConfig::default(), 999);
    let stream_id = pair.publishing("cam");
    pair.client.set_chunk_size(128).unwrap();
    let mut expected = Vec::new();
    for (i, ts) in stamps.into_iter().enumerate() {
        let payload = pattern(700, i as u8);
        pair.client
            .send_media(stream_id, MediaKind::Video, ts, &payload);
        expected.push((stream_id, MediaKind::Video, ts, payload));
    }
    pair.drive();
    assert_eq!(pair.server_media, expected);

    let mut play = Pair::new(
        ServerConfig {
            chunk_size: 128,
            ..ServerConfig::default()
        },
        ClientConfig::default(),
        999,
    );
    let stream_id = play.playing("cam");
    let mut expected = Vec::new();
    for (i, ts) in stamps.into_iter().enumerate() {
        let payload = pattern(700, i as u8);
        play.server
            .send_media(stream_id, MediaKind::Audio, ts, &payload);
        expected.push((stream_id, MediaKind::Audio, ts, payload));
    }
    play.drive();
    assert_eq!(play.client_media, expected);
}

#[test]
fn interleaved_chunk_streams_from_a_publisher() {
    let mut pair = Pair::new(ServerConfig::default(), ClientConfig::default(), 500);
    let stream_id = pair.publishing("cam");
    pair.drive();
    // The client's chunk size is 4096: cut audio and video by hand and
    // interleave them.
    let audio = pattern(5000, 3);
    let video = pattern(9000, 4);
    let mut wire = Vec::new();
    write_chunk_header(&mut wire, 0, 4, 1000, 5000, type_id::AUDIO, stream_id);
    wire.extend_from_slice(&audio[..4096]);
    write_chunk_header(&mut wire, 0, 6, 990, 9000, type_id::VIDEO, stream_id);
    wire.extend_from_slice(&video[..4096]);
    write_chunk_header(&mut wire, 3, 6, 0, 0, 0, 0);
    wire.extend_from_slice(&video[4096..8192]);
    write_chunk_header(&mut wire, 3, 4, 0, 0, 0, 0);
    wire.extend_from_slice(&audio[4096..]);
    write_chunk_header(&mut wire, 3, 6, 0, 0, 0, 0);
    wire.extend_from_slice(&video[8192..]);
    pair.inject_to_server(&wire);
    pair.drive();
    assert_eq!(
        pair.server_media,
        vec![
            (stream_id, MediaKind::Audio, 1000, audio),
            (stream_id, MediaKind::Video, 990, video),
        ]
    );
}

#[test]
fn acknowledgements_and_pings() {
    let mut pair = Pair::default_pair();
    let stream_id = pair.publishing("cam");
    // The client announced its window in answer to Set Peer Bandwidth.
    assert!(pair
        .up
        .controls()
        .contains(&Message::WindowAckSize(2_500_000)));
    let chunk = pattern(60_000, 5);
    for i in 0..50 {
        pair.client
            .send_media(stream_id, MediaKind::Video, i, &chunk);
    }
    pair.drive();
    let acks: Vec<u32> = pair
        .down
        .controls()
        .iter()
        .filter_map(|m| match m {
            Message::Acknowledgement { sequence } => Some(*sequence),
            _ => None,
        })
        .collect();
    assert_eq!(acks.len(), 1, "3 MB received, 2.5 MB window");
    assert!(acks[0] >= 2_500_000 && u64::from(acks[0]) <= pair.server.bytes_received());

    pair.server.send_ping(4242);
    pair.drive();
    assert!(pair
        .up
        .controls()
        .contains(&Message::UserControl(UserControl::PingResponse(4242))));

    // And the other way: a player acknowledges the server's window.
    let mut play = Pair::default_pair();
    let stream_id = play.playing("cam");
    for i in 0..50 {
        play.server
            .send_media(stream_id, MediaKind::Video, i, &chunk);
    }
    play.drive();
    assert!(play
        .up
        .controls()
        .iter()
        .any(|m| matches!(m, Message::Acknowledgement { sequence } if *sequence >= 2_500_000)));
    assert_eq!(play.client_media.len(), 50);
    let ping = {
        let mut body = Vec::new();
        UserControl::PingRequest(77).encode(&mut body);
        let mut wire = Vec::new();
        encode_message(&mut wire, 60_000, 2, 0, type_id::USER_CONTROL, 0, &body);
        wire
    };
    play.inject_to_client(&ping);
    play.drive();
    assert!(play
        .up
        .controls()
        .contains(&Message::UserControl(UserControl::PingResponse(77))));
}

#[test]
fn simple_handshake_client() {
    let client = ClientConfig {
        digest_handshake: false,
        ..ClientConfig::default()
    };
    let mut pair = Pair::new(ServerConfig::default(), client, 100);
    let stream_id = pair.connect_and_create("app");
    assert_eq!(stream_id, 1);
    assert_eq!(pair.server.handshake_kind(), Some(HandshakeKind::Simple));
    assert!(pair.server.handshake_done() && pair.client.handshake_done());
    assert!(pair.server.is_connected());
    assert_eq!(pair.server.app(), "app");
    assert_eq!(pair.server.tc_url(), "rtmp://localhost/live");
}

#[test]
fn output_can_be_taken_in_pieces() {
    let mut server = ServerSession::new(ServerConfig::default(), 0, 0);
    let mut client = ClientSession::new(ClientConfig::default(), 0, 0);
    client.connect("live", "rtmp://h/live");
    // Before the handshake only C0+C1 are visible.
    assert_eq!(client.pending_output().len(), 1 + HANDSHAKE_SIZE);
    let mut to_server = client.pending_output().to_vec();
    client.consume_output(10);
    assert_eq!(client.pending_output().len(), 1 + HANDSHAKE_SIZE - 10);
    client.consume_output(usize::MAX);
    assert!(client.pending_output().is_empty());
    let consumed = server.handle_input(&to_server).unwrap().consumed;
    assert_eq!(consumed, to_server.len());
    to_server.clear();
    let s0s1s2 = server.pending_output().to_vec();
    server.consume_output(s0s1s2.len());
    assert_eq!(client.handle_input(&s0s1s2).unwrap().consumed, s0s1s2.len());
    // Now C2, then the held connect.
    let out = client.pending_output().to_vec();
    assert!(out.len() > HANDSHAKE_SIZE);
    let mut at = 0;
    while at < out.len() {
        let end = (at + 333).min(out.len());
        to_server.extend_from_slice(&out[at..end]);
        client.consume_output(end - at);
        at = end;
        let n = server.handle_input(&to_server).unwrap().consumed;
        to_server.drain(..n);
    }
    assert!(client.pending_output().is_empty());
    assert!(server.is_connected());
}
