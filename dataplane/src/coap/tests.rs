//! The socket-free parts of the CoAP listener: routing of paths and
//! methods, the notification's form, the proof cache's bounds.

use std::net::SocketAddr;

use shoal_protocols::coap::{
    decode, BlockOption, Code, MessageBuilder, MessageType, OptionNumber, Token,
};
use shoal_protocols::control::SecretDigest;

use super::auth::ProofCache;
use super::exchange::{target, Refusal, Target};
use super::notify::encode_notification;
use super::session::Latest;
use super::PROOF_TTL_MS;
use crate::pool::Payload;

fn wire(code: Code, path: &str) -> Vec<u8> {
    let mut message =
        MessageBuilder::new(MessageType::Confirmable, code, 7, Token::new(&[1]).unwrap());
    message.uri_path(path).unwrap();
    let mut bytes = Vec::new();
    message.encode(&mut bytes);
    bytes
}

#[test]
fn paths_and_methods_name_their_resource() {
    let routed = |code, path: &str| {
        let bytes = wire(code, path);
        let message = decode(&bytes).unwrap();
        match target(&message) {
            Ok(Some(Target::WellKnown)) => "well-known".to_owned(),
            Ok(Some(Target::Up { device, topic })) => format!("up {device} {topic:?}"),
            Ok(Some(Target::Down { device })) => format!("down {device}"),
            Ok(None) => "none".to_owned(),
            Err(Refusal::Code(code, _)) => format!("refused {code}"),
            Err(Refusal::Error(e)) => format!("error {e}"),
        }
    };
    assert_eq!(routed(Code::POST, "/devices/d1/up"), "up d1 None");
    assert_eq!(
        routed(Code::POST, "/devices/d1/up/temp/room"),
        "up d1 Some(\"devices/d1/up/temp/room\")"
    );
    assert_eq!(routed(Code::GET, "/devices/d1/down"), "down d1");
    assert_eq!(routed(Code::GET, "/.well-known/core"), "well-known");
    assert_eq!(routed(Code::PUT, "/devices/d1/up"), "refused 4.05");
    assert_eq!(routed(Code::POST, "/devices/d1/down"), "refused 4.05");
    assert_eq!(routed(Code::POST, "/.well-known/core"), "refused 4.05");
    assert_eq!(routed(Code::POST, "/devices/d1/up/a+b"), "refused 4.00");
    for none in [
        "/",
        "/devices",
        "/devices/d1",
        "/devices/d1/down/extra",
        "/devices/d1/sideways",
        "/.well-known",
        "/.well-known/core/x",
    ] {
        assert_eq!(routed(Code::GET, none), "none", "{none}");
    }

    // A segment that is not UTF-8 is a 4.00 of the codec's.
    let mut message = MessageBuilder::new(MessageType::Confirmable, Code::POST, 7, Token::EMPTY);
    message
        .option(OptionNumber::URI_PATH, b"devices")
        .unwrap()
        .option(OptionNumber::URI_PATH, b"\xff")
        .unwrap()
        .option(OptionNumber::URI_PATH, b"up")
        .unwrap();
    let mut bytes = Vec::new();
    message.encode(&mut bytes);
    let message = decode(&bytes).unwrap();
    assert!(matches!(target(&message), Err(Refusal::Error(_))));
}

#[test]
fn a_notification_carries_observe_and_etag_and_its_first_block_when_large() {
    let small = Latest {
        etag: 0x0102_0304,
        payload: Payload::heap(b"open valve"),
    };
    let mut out = Vec::new();
    let token = Token::new(&[0xAB, 0xCD]).unwrap();
    assert!(!encode_notification(&mut out, 0x1111, token, 42, &small, 6));
    let message = decode(&out).unwrap();
    assert_eq!(
        (message.mtype, message.code, message.message_id),
        (MessageType::Confirmable, Code::CONTENT, 0x1111)
    );
    assert_eq!(message.token, token);
    assert_eq!(message.observe(), Some(42));
    assert_eq!(message.option(OptionNumber::ETAG), Some(&[1, 2, 3, 4][..]));
    assert_eq!(message.payload, b"open valve");
    assert_eq!(message.block2().unwrap(), None);

    let body: Vec<u8> = (0..3000).map(|i| (i % 251) as u8).collect();
    let large = Latest {
        etag: 9,
        payload: Payload::heap(&body),
    };
    out.clear();
    assert!(encode_notification(&mut out, 0x1112, token, 43, &large, 6));
    let message = decode(&out).unwrap();
    assert_eq!(message.block2().unwrap(), BlockOption::new(0, true, 6));
    assert_eq!(message.size2(), Some(3000));
    assert_eq!(message.payload, &body[..1024]);
    // The client's block size is kept.
    out.clear();
    assert!(encode_notification(&mut out, 0x1113, token, 44, &large, 2));
    assert_eq!(decode(&out).unwrap().payload, &body[..64]);
}

#[test]
fn proofs_hold_for_their_ttl_per_peer_device_and_secret() {
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let other: SocketAddr = "127.0.0.1:40001".parse().unwrap();
    let right = SecretDigest::of("d1", b"right");
    let wrong = SecretDigest::of("d1", b"wrong");
    let mut cache = ProofCache::default();
    cache.insert(peer, "d1", right, 1_000);
    assert!(cache.holds(peer, "d1", &right, 1_000));
    assert!(cache.holds(peer, "d1", &right, 1_000 + PROOF_TTL_MS - 1));
    assert!(!cache.holds(peer, "d1", &right, 1_000 + PROOF_TTL_MS));
    assert!(!cache.holds(peer, "d1", &wrong, 1_001));
    assert!(!cache.holds(other, "d1", &right, 1_001));
    assert!(!cache.holds(peer, "d2", &right, 1_001));

    // A peer keeps a few devices; the oldest goes first.
    for n in 0..10 {
        let device = format!("dev{n}");
        cache.insert(peer, &device, SecretDigest::of(&device, b"s"), 2_000);
    }
    assert!(!cache.holds(peer, "d1", &right, 2_000));
    assert!(!cache.holds(peer, "dev0", &SecretDigest::of("dev0", b"s"), 2_000));
    assert!(cache.holds(peer, "dev9", &SecretDigest::of("dev9", b"s"), 2_000));
    assert_eq!(cache.len(), 8);

    cache.forget_device("dev9");
    assert!(!cache.holds(peer, "dev9", &SecretDigest::of("dev9", b"s"), 2_000));
    assert_eq!(cache.len(), 7);
    cache.expire(2_000 + PROOF_TTL_MS);
    assert_eq!(cache.len(), 0);
}
