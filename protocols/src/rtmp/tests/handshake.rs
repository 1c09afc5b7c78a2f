//! Handshake vectors: the digest is recomputed here with `hmac` directly,
//! from the published key text, not with the code under test.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::super::*;

const KEY_TAIL: [u8; 32] = [
    0xF0, 0xEE, 0xC2, 0x4A, 0x80, 0x68, 0xBE, 0xE8, 0x2E, 0x00, 0xD0, 0xD1, 0x02, 0x9E, 0x7E, 0x57,
    0x6E, 0xEC, 0x5D, 0x2D, 0x29, 0x80, 0x6F, 0xAB, 0x93, 0xB8, 0xE6, 0x36, 0xCF, 0xEB, 0x31, 0xAE,
];

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn fms_key_full() -> Vec<u8> {
    let mut key = b"Genuine Adobe Flash Media Server 001".to_vec();
    key.extend_from_slice(&KEY_TAIL);
    key
}

/// The digest offset of a block starting at `block`: 4 offset bytes whose
/// sum modulo 728 places the digest after them.
fn offset(packet: &[u8], block: usize) -> usize {
    let sum: usize = packet[block..block + 4].iter().map(|b| *b as usize).sum();
    block + 4 + sum % 728
}

/// A C1 signed by hand with the player key, digest block at `block` (8 for
/// schema 1, 772 for schema 0).
fn hand_signed_c1(block: usize, fill: u8) -> [u8; HANDSHAKE_SIZE] {
    let mut c1 = [0u8; HANDSHAKE_SIZE];
    for (i, b) in c1.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31).wrapping_add(fill);
    }
    c1[..4].copy_from_slice(&[0, 0, 0, 0]); // time
    c1[4..8].copy_from_slice(&[9, 0, 124, 2]); // Flash Player version
    let at = offset(&c1, block);
    let digest = hmac(
        b"Genuine Adobe Flash Player 001",
        &[&c1[..at], &c1[at + 32..]],
    );
    c1[at..at + 32].copy_from_slice(&digest);
    c1
}

fn c0c1(c1: &[u8; HANDSHAKE_SIZE]) -> Vec<u8> {
    let mut wire = vec![3];
    wire.extend_from_slice(c1);
    wire
}

/// Checks S1 and S2 the way ffmpeg does when it plays.
fn check_signed_answer(c1: &[u8], c1_block: usize, s1: &[u8], s2: &[u8]) {
    // S1: version field >= 3 and a digest with the server key at one schema.
    assert!(s1[4] >= 3, "ffmpeg checks S1 only when byte 4 is >= 3");
    let signed_at = [772, 8].into_iter().find(|block| {
        let at = offset(s1, *block);
        hmac(
            b"Genuine Adobe Flash Media Server 001",
            &[&s1[..at], &s1[at + 32..]],
        ) == s1[at..at + 32]
    });
    assert_eq!(signed_at, Some(c1_block), "S1 uses the client's schema");
    // S2: last 32 bytes = HMAC(HMAC(full FMS key, client digest), S2[..1504]).
    let at = offset(c1, c1_block);
    let key = hmac(&fms_key_full(), &[&c1[at..at + 32]]);
    assert_eq!(hmac(&key, &[&s2[..1504]]), s2[1504..]);
}

#[test]
fn digest_c1_schema_1_gets_a_signed_answer() {
    let c1 = hand_signed_c1(8, 1);
    assert_eq!(client_digest_schema(&c1), Some(DigestSchema::DigestFirst));
    let mut out = Vec::new();
    let kind = server_response(&c0c1(&c1), 0x0102_0304, 42, &mut out).unwrap();
    assert_eq!(kind, HandshakeKind::Digest(DigestSchema::DigestFirst));
    assert_eq!(out.len(), 1 + 2 * HANDSHAKE_SIZE);
    assert_eq!(out[0], 3);
    let (s1, s2) = out[1..].split_at(HANDSHAKE_SIZE);
    assert_eq!(s1[..4], [1, 2, 3, 4], "time");
    check_signed_answer(&c1, 8, s1, s2);
    assert!(verify_server_answer(
        &c1,
        s1.try_into().unwrap(),
        s2.try_into().unwrap()
    ));
}

#[test]
fn digest_c1_schema_0_gets_a_signed_answer() {
    let c1 = hand_signed_c1(772, 7);
    assert_eq!(client_digest_schema(&c1), Some(DigestSchema::KeyFirst));
    let mut out = Vec::new();
    let kind = server_response(&c0c1(&c1), 0, 1, &mut out).unwrap();
    assert_eq!(kind, HandshakeKind::Digest(DigestSchema::KeyFirst));
    let (s1, s2) = out[1..].split_at(HANDSHAKE_SIZE);
    check_signed_answer(&c1, 772, s1, s2);
}

#[test]
fn zero_c1_falls_back_to_simple() {
    let c1 = [0u8; HANDSHAKE_SIZE];
    assert_eq!(client_digest_schema(&c1), None);
    let mut out = Vec::new();
    let kind = server_response(&c0c1(&c1), 77, 9, &mut out).unwrap();
    assert_eq!(kind, HandshakeKind::Simple);
    let (s1, s2) = out[1..].split_at(HANDSHAKE_SIZE);
    assert_eq!(s1[..4], 77u32.to_be_bytes(), "time");
    assert_eq!(s1[4..8], [0, 0, 0, 0], "zero version: no digest to check");
    assert_eq!(s2, c1, "S2 echoes C1");

    // A signed C1 with one bit flipped is no longer signed.
    let mut c1 = hand_signed_c1(8, 3);
    c1[100] ^= 1;
    let kind = server_response(&c0c1(&c1), 0, 0, &mut Vec::new()).unwrap();
    assert_eq!(kind, HandshakeKind::Simple);
}

#[test]
fn version_must_be_3() {
    for version in [0u8, 6, 31, 255] {
        let mut server = ServerHandshake::new(0, 0);
        assert_eq!(
            server.handle_input(&[version], &mut Vec::new()),
            Err(RtmpError::UnsupportedVersion(version))
        );
    }
    let mut wire = vec![6];
    wire.extend_from_slice(&[0; HANDSHAKE_SIZE]);
    assert_eq!(
        server_response(&wire, 0, 0, &mut Vec::new()),
        Err(RtmpError::UnsupportedVersion(6))
    );
    assert_eq!(
        server_response(&[3; 100], 0, 0, &mut Vec::new()),
        Err(RtmpError::HandshakeTooShort)
    );
}

#[test]
fn server_state_machine_in_pieces() {
    let c1 = hand_signed_c1(8, 5);
    let mut wire = c0c1(&c1);
    wire.extend_from_slice(&[0xEE; HANDSHAKE_SIZE]); // junk C2: consumed, not checked
    wire.extend_from_slice(b"chunks");
    let mut server = ServerHandshake::new(0, 0);
    let mut out = Vec::new();
    let mut inbox = Vec::new();
    let mut fed = 0;
    while !server.is_done() {
        let end = (fed + 700).min(wire.len());
        inbox.extend_from_slice(&wire[fed..end]);
        fed = end;
        let n = server.handle_input(&inbox, &mut out).unwrap();
        inbox.drain(..n);
    }
    assert_eq!(out.len(), 1 + 2 * HANDSHAKE_SIZE);
    assert_eq!(
        server.kind(),
        Some(HandshakeKind::Digest(DigestSchema::DigestFirst))
    );
    // Bytes after C2 are left for the chunk decoder.
    let mut rest = inbox;
    rest.extend_from_slice(&wire[fed..]);
    assert_eq!(rest, b"chunks");
    assert_eq!(server.handle_input(&rest, &mut out), Ok(0));
}

fn run_handshake(digest: bool) -> (ClientHandshake, ServerHandshake, Vec<u8>) {
    let mut to_server = Vec::new();
    let mut client = ClientHandshake::start(1000, 5, digest, &mut to_server);
    assert_eq!(to_server.len(), 1 + HANDSHAKE_SIZE);
    let c1: [u8; HANDSHAKE_SIZE] = to_server[1..].try_into().unwrap();
    if digest {
        assert_eq!(c1[4..8], [9, 0, 124, 2]);
        assert_eq!(client_digest_schema(&c1), Some(DigestSchema::DigestFirst));
    } else {
        assert_eq!(c1[4..8], [0, 0, 0, 0]);
    }
    let mut server = ServerHandshake::new(2000, 6);
    let mut to_client = Vec::new();
    assert_eq!(
        server.handle_input(&to_server, &mut to_client),
        Ok(1 + HANDSHAKE_SIZE)
    );
    let mut c2 = Vec::new();
    assert_eq!(
        client.handle_input(&to_client, &mut c2),
        Ok(1 + 2 * HANDSHAKE_SIZE)
    );
    assert!(client.is_done());
    assert_eq!(c2.len(), HANDSHAKE_SIZE);
    assert_eq!(
        server.handle_input(&c2, &mut Vec::new()),
        Ok(HANDSHAKE_SIZE)
    );
    assert!(server.is_done());
    (client, server, c2)
}

#[test]
fn client_and_server_digest_roundtrip() {
    let (client, server, c2) = run_handshake(true);
    assert_eq!(
        server.kind(),
        Some(HandshakeKind::Digest(DigestSchema::DigestFirst))
    );
    assert_eq!(client.server_verified(), Some(true));
    assert_eq!(c2.len(), HANDSHAKE_SIZE);
}

#[test]
fn client_and_server_simple_roundtrip() {
    let (client, server, _) = run_handshake(false);
    assert_eq!(server.kind(), Some(HandshakeKind::Simple));
    assert_eq!(client.server_verified(), None);
}

#[test]
fn digest_client_against_a_simple_server() {
    // A server answering with a zero-version S1 and an echo: the client
    // goes on (C2 echoes S1) but reports the server unverified.
    let mut to_server = Vec::new();
    let mut client = ClientHandshake::start(0, 1, true, &mut to_server);
    let mut answer = vec![3];
    answer.extend_from_slice(&[0x11; HANDSHAKE_SIZE]);
    answer.extend_from_slice(&to_server[1..]);
    let mut c2 = Vec::new();
    assert_eq!(client.handle_input(&answer, &mut c2), Ok(answer.len()));
    assert_eq!(c2, [0x11; HANDSHAKE_SIZE]);
    assert_eq!(client.server_verified(), Some(false));
}
