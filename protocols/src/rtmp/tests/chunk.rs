//! Chunk stream vectors (RTMP 1.0 §5.3), limits and the encoder.

use super::super::*;

/// A decoded message, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    csid: u32,
    timestamp: u32,
    type_id: u8,
    stream_id: u32,
    payload: Vec<u8>,
}

/// Decodes all of `wire` in one buffer; returns the messages and the bytes
/// consumed.
fn decode_all(decoder: &mut ChunkDecoder, wire: &[u8]) -> (Vec<Got>, usize) {
    let mut at = 0;
    let mut got = Vec::new();
    loop {
        let (n, message) = decoder.decode(&wire[at..]).unwrap();
        at += n;
        match message {
            Some(m) => got.push(Got {
                csid: m.csid,
                timestamp: m.timestamp,
                type_id: m.type_id,
                stream_id: m.stream_id,
                payload: m.payload.to_vec(),
            }),
            None => break,
        }
    }
    (got, at)
}

fn fresh() -> ChunkDecoder {
    ChunkDecoder::new(ChunkLimits::default())
}

/// Decodes `wire` fed one byte at a time, as a caller keeping unconsumed
/// bytes would.
fn decode_bytewise(wire: &[u8]) -> Vec<Got> {
    let mut decoder = fresh();
    let mut inbox = Vec::new();
    let mut got = Vec::new();
    for byte in wire {
        inbox.push(*byte);
        loop {
            let (n, message) = decoder.decode(&inbox).unwrap();
            let message = message.map(|m| Got {
                csid: m.csid,
                timestamp: m.timestamp,
                type_id: m.type_id,
                stream_id: m.stream_id,
                payload: m.payload.to_vec(),
            });
            inbox.drain(..n);
            match message {
                Some(m) => got.push(m),
                None => break,
            }
        }
    }
    assert!(inbox.is_empty(), "left over: {inbox:02x?}");
    got
}

/// RTMP 1.0 §5.3.2.1: four audio messages of 32 bytes, 20 ms apart.
fn spec_example_1() -> Vec<u8> {
    let mut wire = vec![
        0x03, // fmt 0, csid 3
        0x00, 0x03, 0xE8, // timestamp 1000
        0x00, 0x00, 0x20, // length 32
        0x08, // type 8: audio
        0x39, 0x30, 0x00, 0x00, // message stream id 12345, little-endian
    ];
    wire.extend_from_slice(&[0xA1; 32]);
    wire.extend_from_slice(&[
        0x83, // fmt 2, csid 3
        0x00, 0x00, 0x14, // timestamp delta 20
    ]);
    wire.extend_from_slice(&[0xA2; 32]);
    wire.push(0xC3); // fmt 3, csid 3: same delta again
    wire.extend_from_slice(&[0xA3; 32]);
    wire.push(0xC3);
    wire.extend_from_slice(&[0xA4; 32]);
    wire
}

#[test]
fn spec_example_1_same_stream_messages() {
    let wire = spec_example_1();
    let (got, consumed) = decode_all(&mut fresh(), &wire);
    assert_eq!(consumed, wire.len());
    let stamps: Vec<u32> = got.iter().map(|g| g.timestamp).collect();
    assert_eq!(stamps, [1000, 1020, 1040, 1060]);
    for (i, g) in got.iter().enumerate() {
        assert_eq!((g.csid, g.type_id, g.stream_id), (3, 8, 12345));
        assert_eq!(g.payload, vec![0xA1 + i as u8; 32]);
    }
    assert_eq!(decode_bytewise(&wire), got);
}

/// RTMP 1.0 §5.3.2.2: a 307-byte message in chunks of 128.
fn spec_example_2() -> Vec<u8> {
    let payload: Vec<u8> = (0..307u32).map(|i| i as u8).collect();
    let mut wire = vec![
        0x04, // fmt 0, csid 4
        0x00, 0x03, 0xE8, // timestamp 1000
        0x00, 0x01, 0x33, // length 307
        0x09, // type 9: video
        0x3A, 0x30, 0x00, 0x00, // message stream id 12346
    ];
    wire.extend_from_slice(&payload[..128]);
    wire.push(0xC4); // fmt 3, csid 4: continuation
    wire.extend_from_slice(&payload[128..256]);
    wire.push(0xC4);
    wire.extend_from_slice(&payload[256..]);
    wire
}

#[test]
fn spec_example_2_message_in_chunks() {
    let wire = spec_example_2();
    let (got, consumed) = decode_all(&mut fresh(), &wire);
    assert_eq!(consumed, wire.len());
    assert_eq!(got.len(), 1);
    assert_eq!(
        (
            got[0].csid,
            got[0].timestamp,
            got[0].type_id,
            got[0].stream_id
        ),
        (4, 1000, 9, 12346)
    );
    assert_eq!(
        got[0].payload,
        (0..307u32).map(|i| i as u8).collect::<Vec<_>>()
    );
    assert_eq!(decode_bytewise(&wire), got);

    // The encoder writes exactly the spec's bytes.
    let mut encoded = Vec::new();
    encode_message(&mut encoded, 128, 4, 1000, 9, 12346, &got[0].payload);
    assert_eq!(encoded, wire);
}

#[test]
fn format_1_header() {
    let mut wire = spec_example_1()[..12 + 32].to_vec();
    wire.extend_from_slice(&[
        0x43, // fmt 1, csid 3
        0x00, 0x00, 0x0A, // timestamp delta 10
        0x00, 0x00, 0x02, // length 2
        0x12, // type 18: data
        0xBE, 0xEF,
    ]);
    let (got, _) = decode_all(&mut fresh(), &wire);
    assert_eq!(got.len(), 2);
    assert_eq!(
        (got[1].timestamp, got[1].type_id, got[1].stream_id),
        (1010, 18, 12345)
    );
    assert_eq!(got[1].payload, [0xBE, 0xEF]);

    let mut head = Vec::new();
    write_chunk_header(&mut head, 1, 3, 10, 2, 18, 0);
    assert_eq!(head, wire[12 + 32..12 + 32 + 8]);
}

#[test]
fn basic_header_sizes() {
    // (csid, basic header bytes with fmt 3)
    let cases: [(u32, &[u8]); 6] = [
        (2, &[0xC2]),
        (63, &[0xFF]),
        (64, &[0xC0, 0x00]),          // 2 bytes: csid - 64
        (319, &[0xC0, 0xFF]),         // largest 2-byte id
        (320, &[0xC1, 0x00, 0x01]),   // 3 bytes: (csid - 64) little-endian
        (65599, &[0xC1, 0xFF, 0xFF]), // largest id
    ];
    for (csid, expected) in cases {
        let mut head = Vec::new();
        write_chunk_header(&mut head, 3, csid, 0, 0, 0, 0);
        assert_eq!(head, expected, "csid {csid}");

        // Round trip through the decoder with a full header.
        let mut wire = Vec::new();
        encode_message(&mut wire, 128, csid, 5, 8, 1, &[1, 2, 3]);
        let (got, consumed) = decode_all(&mut fresh(), &wire);
        assert_eq!(consumed, wire.len());
        assert_eq!(got[0].csid, csid);
        assert_eq!(got[0].payload, [1, 2, 3]);
        // Cut anywhere in the head: nothing consumed yet.
        for len in 0..wire.len() - 3 {
            assert_eq!(
                fresh().decode(&wire[..len]).unwrap().0,
                0,
                "csid {csid} len {len}"
            );
        }
    }
}

#[test]
fn extended_timestamp_on_format_3_both_ways() {
    let payload: Vec<u8> = (0..200u32).map(|i| (i * 7) as u8).collect();
    // As the spec and ffmpeg write it: the extended timestamp repeated on
    // the continuation chunk.
    let mut with = vec![
        0x06, // fmt 0, csid 6
        0xFF, 0xFF, 0xFF, // timestamp: extended
        0x00, 0x00, 0xC8, // length 200
        0x09, // video
        0x01, 0x00, 0x00, 0x00, // stream 1
        0x01, 0x00, 0x00, 0x00, // extended timestamp 0x01000000
    ];
    with.extend_from_slice(&payload[..128]);
    with.extend_from_slice(&[0xC6, 0x01, 0x00, 0x00, 0x00]); // fmt 3 + extended timestamp
    with.extend_from_slice(&payload[128..]);

    let mut encoded = Vec::new();
    encode_message(&mut encoded, 128, 6, 0x0100_0000, 9, 1, &payload);
    assert_eq!(encoded, with);

    // As some encoders write it: no extended timestamp on the continuation.
    let mut without = with[..16 + 128].to_vec();
    without.push(0xC6);
    without.extend_from_slice(&payload[128..]);

    for wire in [&with, &without] {
        let (got, consumed) = decode_all(&mut fresh(), wire);
        assert_eq!(consumed, wire.len());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].timestamp, 0x0100_0000);
        assert_eq!(got[0].payload, payload);
        assert_eq!(decode_bytewise(wire), got);
    }
}

#[test]
fn extended_delta_and_format_3_new_message() {
    // fmt 0 at ts 5, then fmt 2 with an extended delta, then a fmt 3
    // starting a new message: it repeats the extended delta.
    let mut wire = Vec::new();
    write_chunk_header(&mut wire, 0, 5, 5, 1, 8, 1);
    wire.push(0xAA);
    write_chunk_header(&mut wire, 2, 5, 0x0100_0000, 0, 0, 0);
    wire.push(0xBB);
    write_chunk_header(&mut wire, 3, 5, 0x0100_0000, 0, 0, 0);
    wire.push(0xCC);
    assert_eq!(
        wire[13..18],
        [
            0x85, // fmt 2, csid 5
            0xFF, 0xFF, 0xFF, // delta: extended
            0x01, // extended delta 0x01000000 starts
        ]
    );
    let (got, consumed) = decode_all(&mut fresh(), &wire);
    assert_eq!(consumed, wire.len());
    let stamps: Vec<u32> = got.iter().map(|g| g.timestamp).collect();
    assert_eq!(stamps, [5, 0x0100_0005, 0x0200_0005]);
    assert_eq!(decode_bytewise(&wire), got);
}

#[test]
fn format_3_after_format_0_reuses_the_timestamp_as_delta() {
    let mut wire = Vec::new();
    write_chunk_header(&mut wire, 0, 3, 40, 1, 8, 1);
    wire.push(1);
    wire.push(0xC3);
    wire.push(2);
    let (got, _) = decode_all(&mut fresh(), &wire);
    assert_eq!(got[1].timestamp, 80);
    assert_eq!(got[1].payload, [2]);
}

#[test]
fn timestamps_wrap() {
    let mut wire = Vec::new();
    encode_message(&mut wire, 128, 4, u32::MAX - 1, 8, 1, &[1]);
    write_chunk_header(&mut wire, 2, 4, 3, 0, 0, 0);
    wire.push(2);
    let (got, _) = decode_all(&mut fresh(), &wire);
    assert_eq!(got[1].timestamp, 1);
}

#[test]
fn set_chunk_size_applies_to_later_chunks() {
    let mut wire = vec![
        0x02, // fmt 0, csid 2 (protocol control)
        0x00, 0x00, 0x00, // timestamp 0
        0x00, 0x00, 0x04, // length 4
        0x01, // type 1: Set Chunk Size
        0x00, 0x00, 0x00, 0x00, // stream 0
        0x00, 0x00, 0x10, 0x00, // chunk size 4096
    ];
    let payload = vec![0x5A; 3000];
    encode_message(&mut wire, 4096, 6, 0, 9, 1, &payload);
    let mut decoder = fresh();
    let (got, consumed) = decode_all(&mut decoder, &wire);
    assert_eq!(consumed, wire.len());
    assert_eq!(decoder.chunk_size(), 4096);
    assert_eq!(got[0].type_id, type_id::SET_CHUNK_SIZE);
    assert_eq!(got[1].payload, payload);
    assert_eq!(decode_bytewise(&wire), got);
}

#[test]
fn set_chunk_size_refusals_and_clamp() {
    for (value, ok) in [
        (0u32, false),
        (0x8000_0000, false),
        (0xFFFF_FFFF, false),
        (1, true),
        (0x7FFF_FFFF, true),
    ] {
        let mut wire = Vec::new();
        encode_message(&mut wire, 128, 2, 0, 1, 0, &value.to_be_bytes());
        let mut decoder = fresh();
        let result = decoder.decode(&wire).map(|(n, _)| n);
        if ok {
            assert_eq!(result, Ok(wire.len()));
            assert_eq!(decoder.chunk_size(), value.min(MAX_MESSAGE_LENGTH));
        } else {
            assert_eq!(result, Err(RtmpError::InvalidChunkSize(value)));
        }
    }
    // A Set Chunk Size shorter than 4 bytes.
    let mut wire = Vec::new();
    encode_message(&mut wire, 128, 2, 0, 1, 0, &[0, 1]);
    assert_eq!(
        fresh().decode(&wire).map(|(n, _)| n),
        Err(RtmpError::BadControlMessage { type_id: 1 })
    );
}

#[test]
fn abort_drops_the_partial_message() {
    let mut wire = Vec::new();
    // 300 bytes declared on csid 6, only the first chunk sent.
    write_chunk_header(&mut wire, 0, 6, 0, 300, 9, 1);
    wire.extend_from_slice(&[1; 128]);
    // Abort Message for csid 6.
    encode_message(&mut wire, 128, 2, 0, type_id::ABORT, 0, &6u32.to_be_bytes());
    // A fresh message on csid 6 (format 1: the stream id is remembered).
    write_chunk_header(&mut wire, 1, 6, 10, 3, 9, 0);
    wire.extend_from_slice(&[2, 2, 2]);
    let mut decoder = fresh();
    let (got, consumed) = decode_all(&mut decoder, &wire);
    assert_eq!(consumed, wire.len());
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].type_id, type_id::ABORT);
    assert_eq!(
        (got[1].csid, got[1].timestamp, got[1].stream_id),
        (6, 10, 1)
    );
    assert_eq!(got[1].payload, [2, 2, 2]);
    assert_eq!(decoder.buffered_bytes(), 0);
}

#[test]
fn interleaved_chunk_streams() {
    let audio: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
    let video: Vec<u8> = (0..200u32).map(|i| 255 - i as u8).collect();
    let mut wire = Vec::new();
    write_chunk_header(&mut wire, 0, 4, 100, 300, 8, 1);
    wire.extend_from_slice(&audio[..128]);
    write_chunk_header(&mut wire, 0, 6, 90, 200, 9, 1);
    wire.extend_from_slice(&video[..128]);
    wire.push(0xC4);
    wire.extend_from_slice(&audio[128..256]);
    wire.push(0xC6);
    wire.extend_from_slice(&video[128..]);
    wire.push(0xC4);
    wire.extend_from_slice(&audio[256..]);
    let (got, consumed) = decode_all(&mut fresh(), &wire);
    assert_eq!(consumed, wire.len());
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].csid, got[0].timestamp), (6, 90));
    assert_eq!(got[0].payload, video);
    assert_eq!((got[1].csid, got[1].timestamp), (4, 100));
    assert_eq!(got[1].payload, audio);
    assert_eq!(decode_bytewise(&wire), got);
}

#[test]
fn whole_single_chunk_message_is_lent_from_the_input() {
    let mut wire = Vec::new();
    encode_message(&mut wire, 128, 4, 0, 8, 1, &[9; 100]);
    let mut decoder = fresh();
    let (n, message) = decoder.next_message(&wire).unwrap();
    let message = message.unwrap();
    let payload = decoder.payload(&message, &wire);
    assert_eq!(n, wire.len());
    assert_eq!(payload.as_ptr(), wire[12..].as_ptr(), "copied");
    assert_eq!(decoder.buffered_bytes(), 0);
}

#[test]
fn zero_length_message() {
    let mut wire = Vec::new();
    encode_message(&mut wire, 128, 5, 7, 18, 1, &[]);
    assert_eq!(wire.len(), 12);
    let (got, consumed) = decode_all(&mut fresh(), &wire);
    assert_eq!(consumed, 12);
    assert_eq!(got[0].payload, Vec::<u8>::new());
}

#[test]
fn limits() {
    let limits = ChunkLimits {
        max_message_bytes: 1000,
        max_chunk_streams: 2,
        max_buffered_bytes: 1500,
    };
    // A declared length over the limit fails on the header alone.
    let mut head = Vec::new();
    write_chunk_header(&mut head, 0, 3, 0, 1001, 9, 1);
    assert_eq!(
        ChunkDecoder::new(limits.clone())
            .decode(&head)
            .map(|(n, _)| n),
        Err(RtmpError::MessageTooLarge {
            length: 1001,
            max: 1000
        })
    );

    // A third chunk stream.
    let mut wire = Vec::new();
    for csid in [3, 4, 5] {
        encode_message(&mut wire, 128, csid, 0, 8, 1, &[1]);
    }
    let mut decoder = ChunkDecoder::new(limits.clone());
    let mut at = 0;
    for _ in 0..2 {
        at += decoder.decode(&wire[at..]).unwrap().0;
    }
    assert_eq!(
        decoder.decode(&wire[at..]).map(|(n, _)| n),
        Err(RtmpError::TooManyChunkStreams { max: 2 })
    );

    // Two partial messages of 1000 bytes: 128 + 128 buffered is fine; the
    // limit trips when chunks keep coming.
    let mut decoder = ChunkDecoder::new(ChunkLimits {
        max_buffered_bytes: 300,
        ..limits
    });
    let mut wire = Vec::new();
    write_chunk_header(&mut wire, 0, 3, 0, 1000, 9, 1);
    wire.extend_from_slice(&[0; 128]);
    write_chunk_header(&mut wire, 0, 4, 0, 1000, 9, 1);
    wire.extend_from_slice(&[0; 128]);
    wire.push(0xC3);
    wire.extend_from_slice(&[0; 128]);
    let (_, result) = (0, decoder.next_message(&wire));
    assert_eq!(result, Err(RtmpError::BufferLimit { max: 300 }));
}

#[test]
fn fresh_chunk_stream_needs_a_full_header() {
    for (first, fmt) in [(0x83u8, 2u8), (0xC3, 3)] {
        assert_eq!(
            fresh().decode(&[first, 0, 0, 0, 0]).map(|(n, _)| n),
            Err(RtmpError::NoPreviousHeader { csid: 3, fmt })
        );
    }
    // Format 1 is let through (stream 0, timestamp from 0).
    let mut wire = Vec::new();
    write_chunk_header(&mut wire, 1, 2, 5, 6, 4, 0);
    wire.extend_from_slice(&[0, 6, 0, 0, 0, 9]);
    let (got, _) = decode_all(&mut fresh(), &wire);
    assert_eq!(
        (got[0].timestamp, got[0].stream_id, got[0].type_id),
        (5, 0, 4)
    );
}

#[test]
fn new_header_before_the_end_drops_the_partial_message() {
    let mut wire = Vec::new();
    write_chunk_header(&mut wire, 0, 3, 0, 300, 9, 1);
    wire.extend_from_slice(&[1; 128]);
    encode_message(&mut wire, 128, 3, 50, 8, 1, &[7; 10]);
    let mut decoder = fresh();
    let (got, _) = decode_all(&mut decoder, &wire);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].timestamp, got[0].type_id), (50, 8));
    assert_eq!(decoder.buffered_bytes(), 0);
}

#[test]
fn media_chunk_head_matches_encode_message() {
    for (csid, ts) in [
        (6, 0),
        (6, 0x00FF_FFFE),
        (6, 0x00FF_FFFF),
        (300, 0x1234_5678),
        (4000, 1),
    ] {
        let payload = [3u8; 50];
        let (head, used) = media_chunk_head(csid, ts, 9, 7, 50);
        assert!(used <= MAX_CHUNK_HEAD_BYTES);
        let mut direct = head[..used].to_vec();
        direct.extend_from_slice(&payload);
        let mut encoded = Vec::new();
        encode_message(&mut encoded, 128, csid, ts, 9, 7, &payload);
        assert_eq!(direct, encoded, "csid {csid} ts {ts:#x}");
    }
    // The longest head: 3-byte basic header and an extended timestamp.
    assert_eq!(media_chunk_head(65599, u32::MAX, 9, 1, 1).1, 18);
}

#[test]
fn short_continuation_without_extended_timestamp_at_the_end_of_input() {
    // 130 bytes at chunk size 128 and timestamp 0x01000000: the last chunk
    // holds 2 bytes and the encoder left the extended timestamp out.
    let payload: Vec<u8> = (0..130u32).map(|i| 0x40 + i as u8).collect();
    let mut wire = Vec::new();
    write_chunk_header(&mut wire, 0, 4, 0x0100_0000, 130, 9, 1);
    wire.extend_from_slice(&payload[..128]);
    wire.push(0xC4);
    wire.extend_from_slice(&payload[128..]);
    let (got, consumed) = decode_all(&mut fresh(), &wire);
    assert_eq!(consumed, wire.len(), "the 2 bytes cannot start 01 00 00 00");
    assert_eq!(got[0].payload, payload);

    // Bytes that could still be the extended timestamp: wait for more.
    let mut wire = Vec::new();
    write_chunk_header(&mut wire, 0, 4, 0x0100_0000, 130, 9, 1);
    wire.extend_from_slice(&[0; 128]);
    let head_and_body = wire.len();
    wire.extend_from_slice(&[0xC4, 0x01, 0x00]);
    let mut decoder = fresh();
    assert_eq!(decoder.decode(&wire).unwrap().0, head_and_body);
}
