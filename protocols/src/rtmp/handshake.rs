//! The RTMP handshake (C0/C1/C2 and S0/S1/S2), simple and digest.
//!
//! Simple handshake (RTMP 1.0 §5.2): C0 and S0 are the version byte 3; C1
//! and S1 are 1536 bytes (4 time, 4 zero, 1528 random); C2 echoes S1 and S2
//! echoes C1.
//!
//! Digest ("complex") handshake, as Flash Player and ffmpeg send it: the
//! 1528 bytes after time and version are two 764-byte blocks, a key block
//! and a digest block, in either order (schema 0: key first; schema 1:
//! digest first). A digest block starts with 4 bytes whose sum modulo 728
//! places a 32-byte digest after them. The digest is HMAC-SHA256 of the
//! packet without those 32 bytes, keyed with the first 30 bytes of the
//! Flash Player key for C1 and the first 36 bytes of the Flash Media Server
//! key for S1. S2 (and C2) end with an HMAC-SHA256 of their first 1504
//! bytes, keyed with HMAC-SHA256(full FMS key (C2: full FP key), peer's
//! digest).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::RtmpError;

/// Size of C1, C2, S1 and S2.
pub const HANDSHAKE_SIZE: usize = 1536;

/// The only RTMP version accepted in C0/S0 (6 would be RTMPE).
pub const RTMP_VERSION: u8 = 3;

/// `"Genuine Adobe Flash Player 001"` and 32 more bytes.
const FLASH_PLAYER_KEY: [u8; 62] = *b"Genuine Adobe Flash Player 001\
    \xF0\xEE\xC2\x4A\x80\x68\xBE\xE8\x2E\x00\xD0\xD1\x02\x9E\x7E\x57\
    \x6E\xEC\x5D\x2D\x29\x80\x6F\xAB\x93\xB8\xE6\x36\xCF\xEB\x31\xAE";

/// `"Genuine Adobe Flash Media Server 001"` and the same 32 bytes.
const FLASH_MEDIA_SERVER_KEY: [u8; 68] = *b"Genuine Adobe Flash Media Server 001\
    \xF0\xEE\xC2\x4A\x80\x68\xBE\xE8\x2E\x00\xD0\xD1\x02\x9E\x7E\x57\
    \x6E\xEC\x5D\x2D\x29\x80\x6F\xAB\x93\xB8\xE6\x36\xCF\xEB\x31\xAE";

/// Bytes of the player key that sign C1.
const PLAYER_KEY_PUBLIC: usize = 30;
/// Bytes of the server key that sign S1.
const SERVER_KEY_PUBLIC: usize = 36;

const DIGEST_SIZE: usize = 32;
/// Where the signature of S2 and C2 starts.
const SIGNATURE_AT: usize = HANDSHAKE_SIZE - DIGEST_SIZE;
/// Version field of an S1 that carries a digest (first byte >= 3 tells
/// ffmpeg to verify it).
const SERVER_VERSION: [u8; 4] = [4, 5, 0, 1];
/// Version field of a C1 that carries a digest (Flash Player 9.0.124.2).
const CLIENT_VERSION: [u8; 4] = [9, 0, 124, 2];

/// Where the digest block sits in C1/S1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestSchema {
    /// Schema 0: key block at byte 8, digest block at byte 772.
    KeyFirst,
    /// Schema 1: digest block at byte 8, key block at byte 772 (Flash
    /// Player and ffmpeg).
    DigestFirst,
}

/// Which handshake a peer used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeKind {
    /// No valid digest in C1: S2 echoes C1.
    Simple,
    /// C1 carried a valid digest: S1 and S2 are signed.
    Digest(DigestSchema),
}

/// A byte filler seeded by the caller (SplitMix64): the handshake's random
/// bytes need not be secret, only varied.
#[derive(Debug, Clone)]
struct Filler(u64);

impl Filler {
    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            for (byte, value) in chunk.iter_mut().zip(z.to_le_bytes()) {
                *byte = value;
            }
        }
    }
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; DIGEST_SIZE] {
    // HMAC takes keys of any length: this never fails.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key) else {
        return [0; DIGEST_SIZE];
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Where the 32-byte digest starts in a C1/S1 laid out with `schema`.
fn digest_offset(packet: &[u8; HANDSHAKE_SIZE], schema: DigestSchema) -> usize {
    let block = match schema {
        DigestSchema::KeyFirst => 772,
        DigestSchema::DigestFirst => 8,
    };
    let sum: usize = packet
        .get(block..block + 4)
        .unwrap_or_default()
        .iter()
        .map(|b| usize::from(*b))
        .sum();
    block + 4 + sum % 728
}

/// HMAC of `packet` without the 32 bytes at `offset`.
fn packet_digest(packet: &[u8; HANDSHAKE_SIZE], offset: usize, key: &[u8]) -> [u8; DIGEST_SIZE] {
    let (before, rest) = packet.split_at(offset.min(HANDSHAKE_SIZE));
    let after = rest.get(DIGEST_SIZE..).unwrap_or_default();
    hmac_sha256(key, &[before, after])
}

/// The schema and digest of a packet signed with `key`, if it is.
fn find_digest(
    packet: &[u8; HANDSHAKE_SIZE],
    key: &[u8],
) -> Option<(DigestSchema, [u8; DIGEST_SIZE])> {
    [DigestSchema::DigestFirst, DigestSchema::KeyFirst]
        .into_iter()
        .find_map(|schema| {
            let offset = digest_offset(packet, schema);
            let found = packet.get(offset..offset + DIGEST_SIZE)?;
            let expected = packet_digest(packet, offset, key);
            (found == expected).then_some((schema, expected))
        })
}

/// Writes the digest of `packet` into it at the place `schema` gives.
fn sign_packet(
    packet: &mut [u8; HANDSHAKE_SIZE],
    schema: DigestSchema,
    key: &[u8],
) -> [u8; DIGEST_SIZE] {
    let offset = digest_offset(packet, schema);
    let digest = packet_digest(packet, offset, key);
    if let Some(slot) = packet.get_mut(offset..offset + DIGEST_SIZE) {
        slot.copy_from_slice(&digest);
    }
    digest
}

/// Fills a C2/S2 answering a peer whose digest is `peer_digest`: random
/// bytes, then the signature keyed from `key` (the full FMS key for S2, the
/// full FP key for C2).
fn signed_answer(
    filler: &mut Filler,
    peer_digest: &[u8; DIGEST_SIZE],
    key: &[u8],
) -> [u8; HANDSHAKE_SIZE] {
    let mut packet = [0; HANDSHAKE_SIZE];
    let (body, signature) = packet.split_at_mut(SIGNATURE_AT);
    filler.fill(body);
    let answer_key = hmac_sha256(key, &[peer_digest]);
    signature.copy_from_slice(&hmac_sha256(&answer_key, &[body]));
    packet
}

/// Whether `packet` (a C2/S2) carries the signature answering `own_digest`.
fn answer_is_signed(
    packet: &[u8; HANDSHAKE_SIZE],
    own_digest: &[u8; DIGEST_SIZE],
    key: &[u8],
) -> bool {
    let (body, signature) = packet.split_at(SIGNATURE_AT);
    let answer_key = hmac_sha256(key, &[own_digest]);
    hmac_sha256(&answer_key, &[body]) == signature
}

fn check_version(version: u8) -> Result<(), RtmpError> {
    if version == RTMP_VERSION {
        Ok(())
    } else {
        Err(RtmpError::UnsupportedVersion(version))
    }
}

/// Answers C0+C1 (`c0c1`, at least 1537 bytes; more are ignored) with
/// S0+S1+S2 appended to `out`. A C1 with a valid digest gets a digest
/// answer, any other the simple one. `epoch_ms` is the time field of S1,
/// `random_seed` seeds its random bytes.
pub fn server_response(
    c0c1: &[u8],
    epoch_ms: u32,
    random_seed: u64,
    out: &mut Vec<u8>,
) -> Result<HandshakeKind, RtmpError> {
    let Some((&version, rest)) = c0c1.split_first() else {
        return Err(RtmpError::HandshakeTooShort);
    };
    check_version(version)?;
    let c1 = rest
        .first_chunk::<HANDSHAKE_SIZE>()
        .ok_or(RtmpError::HandshakeTooShort)?;
    let mut filler = Filler(random_seed);
    // Time, a zero version field, random bytes.
    let mut s1 = [0; HANDSHAKE_SIZE];
    let (head, random) = s1.split_at_mut(8);
    filler.fill(random);
    if let Some(time) = head.first_chunk_mut::<4>() {
        *time = epoch_ms.to_be_bytes();
    }

    let client = find_digest(
        c1,
        FLASH_PLAYER_KEY
            .get(..PLAYER_KEY_PUBLIC)
            .unwrap_or_default(),
    );
    out.reserve(1 + 2 * HANDSHAKE_SIZE);
    out.push(RTMP_VERSION);
    match client {
        Some((schema, client_digest)) => {
            if let Some(version) = s1.get_mut(4..8) {
                version.copy_from_slice(&SERVER_VERSION);
            }
            sign_packet(
                &mut s1,
                schema,
                FLASH_MEDIA_SERVER_KEY
                    .get(..SERVER_KEY_PUBLIC)
                    .unwrap_or_default(),
            );
            out.extend_from_slice(&s1);
            let s2 = signed_answer(&mut filler, &client_digest, &FLASH_MEDIA_SERVER_KEY);
            out.extend_from_slice(&s2);
            Ok(HandshakeKind::Digest(schema))
        }
        None => {
            // Version field zero: a client must not look for a digest.
            out.extend_from_slice(&s1);
            out.extend_from_slice(c1);
            Ok(HandshakeKind::Simple)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerState {
    AwaitC0C1,
    AwaitC2(HandshakeKind),
    Done(HandshakeKind),
}

/// The server side of the handshake as a state machine: feed it the
/// client's bytes, it appends S0+S1+S2 to the output once C0+C1 are in and
/// finishes when C2 is in. C2 is not verified (many clients send junk), only
/// consumed.
#[derive(Debug, Clone)]
pub struct ServerHandshake {
    epoch_ms: u32,
    random_seed: u64,
    state: ServerState,
}

impl ServerHandshake {
    /// A handshake whose S1 carries `epoch_ms` and random bytes seeded by
    /// `random_seed`.
    pub fn new(epoch_ms: u32, random_seed: u64) -> Self {
        Self {
            epoch_ms,
            random_seed,
            state: ServerState::AwaitC0C1,
        }
    }

    /// Consumes what it can of `input` (C0+C1, then C2) and returns how many
    /// bytes; appends S0+S1+S2 to `out` when C0+C1 are complete. A wrong
    /// version byte is an error as soon as it arrives. Bytes after C2 are
    /// not consumed: they are chunks.
    pub fn handle_input(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, RtmpError> {
        let mut consumed = 0;
        if self.state == ServerState::AwaitC0C1 {
            let Some(&version) = input.first() else {
                return Ok(0);
            };
            check_version(version)?;
            if input.len() < 1 + HANDSHAKE_SIZE {
                return Ok(0);
            }
            let kind = server_response(input, self.epoch_ms, self.random_seed, out)?;
            self.state = ServerState::AwaitC2(kind);
            consumed = 1 + HANDSHAKE_SIZE;
        }
        if let ServerState::AwaitC2(kind) = self.state {
            if input.len().saturating_sub(consumed) >= HANDSHAKE_SIZE {
                consumed += HANDSHAKE_SIZE;
                self.state = ServerState::Done(kind);
            }
        }
        Ok(consumed)
    }

    /// Whether C2 has been consumed.
    pub fn is_done(&self) -> bool {
        matches!(self.state, ServerState::Done(_))
    }

    /// The kind of handshake, once C1 has been read.
    pub fn kind(&self) -> Option<HandshakeKind> {
        match self.state {
            ServerState::AwaitC0C1 => None,
            ServerState::AwaitC2(kind) | ServerState::Done(kind) => Some(kind),
        }
    }
}

/// The client side of the handshake: C0+C1 go out at once, S0+S1+S2 are
/// read, C2 goes out and the handshake is done.
#[derive(Debug, Clone)]
pub struct ClientHandshake {
    filler: Filler,
    /// The digest of our C1, for a digest handshake.
    own_digest: Option<[u8; DIGEST_SIZE]>,
    done: bool,
    server_verified: Option<bool>,
}

impl ClientHandshake {
    /// Starts a handshake: appends C0+C1 to `out`. With `digest`, C1 is
    /// signed (schema 1, as Flash Player and ffmpeg do) and the server's
    /// answer is checked; else C1 has a zero version field.
    pub fn start(epoch_ms: u32, random_seed: u64, digest: bool, out: &mut Vec<u8>) -> Self {
        let mut filler = Filler(random_seed);
        let mut c1 = [0; HANDSHAKE_SIZE];
        let (head, random) = c1.split_at_mut(8);
        filler.fill(random);
        let mut fields = [0; 8];
        let (time, version) = fields.split_at_mut(4);
        time.copy_from_slice(&epoch_ms.to_be_bytes());
        if digest {
            version.copy_from_slice(&CLIENT_VERSION);
        }
        head.copy_from_slice(&fields);
        let own_digest = digest.then(|| {
            sign_packet(
                &mut c1,
                DigestSchema::DigestFirst,
                FLASH_PLAYER_KEY
                    .get(..PLAYER_KEY_PUBLIC)
                    .unwrap_or_default(),
            )
        });
        out.push(RTMP_VERSION);
        out.extend_from_slice(&c1);
        Self {
            filler,
            own_digest,
            done: false,
            server_verified: None,
        }
    }

    /// Consumes S0+S1+S2 once all 3073 bytes are in `input` and appends C2
    /// to `out`; returns the bytes consumed (0 or 3073, and 0 once done).
    pub fn handle_input(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, RtmpError> {
        if self.done {
            return Ok(0);
        }
        let Some((&version, rest)) = input.split_first() else {
            return Ok(0);
        };
        check_version(version)?;
        let Some((s1, rest)) = rest.split_first_chunk::<HANDSHAKE_SIZE>() else {
            return Ok(0);
        };
        let Some(s2) = rest.first_chunk::<HANDSHAKE_SIZE>() else {
            return Ok(0);
        };
        let server = find_digest(
            s1,
            FLASH_MEDIA_SERVER_KEY
                .get(..SERVER_KEY_PUBLIC)
                .unwrap_or_default(),
        );
        match (self.own_digest, server) {
            (Some(own), Some((_, server_digest))) => {
                self.server_verified = Some(answer_is_signed(s2, &own, &FLASH_MEDIA_SERVER_KEY));
                let c2 = signed_answer(&mut self.filler, &server_digest, &FLASH_PLAYER_KEY);
                out.extend_from_slice(&c2);
            }
            (Some(_), None) => {
                self.server_verified = Some(false);
                out.extend_from_slice(s1);
            }
            (None, _) => out.extend_from_slice(s1),
        }
        self.done = true;
        Ok(1 + 2 * HANDSHAKE_SIZE)
    }

    /// Whether S0+S1+S2 have been consumed (C2 is then in the output).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// For a digest handshake, once done: whether the server signed S1 and
    /// answered our digest in S2. `None` for a simple handshake.
    pub fn server_verified(&self) -> Option<bool> {
        self.server_verified
    }
}

/// The digest a C1 carries, if any: for tests and diagnostics.
pub fn client_digest_schema(c1: &[u8; HANDSHAKE_SIZE]) -> Option<DigestSchema> {
    find_digest(
        c1,
        FLASH_PLAYER_KEY
            .get(..PLAYER_KEY_PUBLIC)
            .unwrap_or_default(),
    )
    .map(|(schema, _)| schema)
}

/// Whether S1 carries a valid server digest and S2 answers `c1`'s digest:
/// what ffmpeg checks when it plays.
pub fn verify_server_answer(
    c1: &[u8; HANDSHAKE_SIZE],
    s1: &[u8; HANDSHAKE_SIZE],
    s2: &[u8; HANDSHAKE_SIZE],
) -> bool {
    let player = FLASH_PLAYER_KEY
        .get(..PLAYER_KEY_PUBLIC)
        .unwrap_or_default();
    let server = FLASH_MEDIA_SERVER_KEY
        .get(..SERVER_KEY_PUBLIC)
        .unwrap_or_default();
    match (find_digest(c1, player), find_digest(s1, server)) {
        (Some((_, client_digest)), Some(_)) => {
            answer_is_signed(s2, &client_digest, &FLASH_MEDIA_SERVER_KEY)
        }
        _ => false,
    }
}
