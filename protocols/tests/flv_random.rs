//! Seeded randomized checks of `flv`: random streams of tags (every kind,
//! timestamps past 24 bits, data sizes from empty to large, realistic media
//! headers) round-trip through `pack_tag` → `FlvReader` read in random
//! chunk sizes; truncated streams give back the tags before the cut;
//! mutated streams and random bytes never panic and never break the
//! decoders' invariants; codec detection and the metadata scan survive
//! random and mutated headers and AMF0. Fixed seeds, so a failure names the
//! seed that reproduces it.

mod support;

use shoal_protocols::flv::{
    decode_header, decode_tag, is_on_metadata, pack_tag, packed_tag_len, scan_metadata,
    strip_set_data_frame, write_header, AudioTagInfo, FlvError, FlvItem, FlvReader, TagKind,
    VideoTagInfo, FILE_HEADER_LEN, MAX_SCRIPT_DEPTH, ON_METADATA, SET_DATA_FRAME,
};
use shoal_protocols::framing::Decoded;
use support::Rng;

const SEEDS: u64 = 64;
const MAX_DATA: u32 = 1 << 17;
const KINDS: [TagKind; 3] = [TagKind::Audio, TagKind::Video, TagKind::Script];

/// A tag as written: kind, timestamp, data.
type Written = (TagKind, u32, Vec<u8>);

/// The first bytes of a media tag's data: legacy and enhanced headers of
/// every kind, followed by random bytes.
fn media_data(rng: &mut Rng, kind: TagKind) -> Vec<u8> {
    let mut data = match kind {
        TagKind::Video => match rng.below(6) {
            // Legacy AVC / HEVC: frame type, codec, packet type, composition time.
            0 => vec![
                (rng.range(1, 5) as u8) << 4 | *rng.pick(&[7u8, 12]),
                rng.range(0, 3) as u8,
                rng.next() as u8,
                rng.next() as u8,
                rng.next() as u8,
            ],
            // Another legacy codec.
            1 => vec![rng.next() as u8 & 0x7F],
            // Enhanced, FourCC.
            2 | 3 => {
                let mut head = vec![0x80 | (rng.range(1, 5) as u8) << 4 | rng.range(0, 5) as u8];
                let fourcc: [u8; 4] = *rng.pick(&[*b"avc1", *b"hvc1", *b"av01", *b"vp09"]);
                head.extend_from_slice(&fourcc);
                head
            }
            // Enhanced multitrack.
            4 => {
                let mut head = vec![0x96, (rng.range(0, 2) as u8) << 4 | rng.range(0, 3) as u8];
                head.extend_from_slice(b"hvc1");
                head
            }
            // Enhanced ModEx.
            _ => {
                let size = rng.below(300);
                let mut head = vec![0x90 | 7];
                if size >= 256 {
                    head.push(0xFF);
                    head.extend_from_slice(&(size as u16).to_be_bytes());
                } else {
                    head.push(size as u8);
                }
                head.extend(rng.bytes(size + 1));
                head.push(rng.range(0, 3) as u8);
                head.extend_from_slice(b"av01");
                head
            }
        },
        TagKind::Audio => match rng.below(3) {
            0 => vec![0xAF, rng.range(0, 1) as u8],
            1 => vec![rng.next() as u8],
            _ => {
                let mut head = vec![0x90 | rng.range(0, 5) as u8];
                let fourcc: [u8; 4] = *rng.pick(&[*b"Opus", *b"mp4a", *b"fLaC", *b"ac-3"]);
                head.extend_from_slice(&fourcc);
                head
            }
        },
        TagKind::Script => {
            let mut data = if rng.chance(2) {
                SET_DATA_FRAME.to_vec()
            } else {
                Vec::new()
            };
            data.extend_from_slice(&random_metadata(rng, 4));
            data
        }
    };
    let extra = match rng.below(10) {
        0 => 0,
        1 => rng.range(1000, 70_000) as usize,
        _ => rng.below(200),
    };
    data.extend(rng.bytes(extra));
    data
}

/// A random stream: header, then tags of random kinds and timestamps.
fn random_stream(rng: &mut Rng) -> (Vec<u8>, Vec<Written>) {
    let mut wire = Vec::new();
    write_header(&mut wire, rng.chance(2), rng.chance(2));
    let mut tags = Vec::new();
    let mut timestamp = if rng.chance(4) {
        0x00FF_FF00 // about to need TimestampExtended
    } else {
        rng.range(0, 100_000) as u32
    };
    for _ in 0..rng.range(0, 12) {
        let kind = *rng.pick(&KINDS);
        let data = media_data(rng, kind);
        timestamp = timestamp.wrapping_add(rng.range(0, 300) as u32);
        let before = wire.len();
        pack_tag(&mut wire, kind, timestamp, &data).unwrap();
        assert_eq!(wire.len() - before, packed_tag_len(data.len() as u32));
        tags.push((kind, timestamp, data));
    }
    (wire, tags)
}

/// Reads `wire` as a viewer would, in random chunks into a buffer; returns
/// the tags, and the error that stopped it if any. Checks the invariants of
/// every decode and of the codec detection on every tag.
fn read(rng: &mut Rng, wire: &[u8], max_data: u32) -> (Vec<Written>, Option<FlvError>) {
    let mut reader = FlvReader::new(max_data);
    let mut inbox: Vec<u8> = Vec::new();
    let mut tags = Vec::new();
    let mut at = 0;
    while at < wire.len() {
        let end = (at + rng.range(1, 20_000) as usize).min(wire.len());
        inbox.extend_from_slice(&wire[at..end]);
        at = end;
        loop {
            let (item, consumed) = match reader.decode(&inbox) {
                Ok(Decoded::Frame { frame, consumed }) => (frame, consumed),
                Ok(Decoded::Incomplete) => break,
                Err(error) => {
                    assert!(!error.to_string().is_empty());
                    return (tags, Some(error));
                }
            };
            assert!(consumed <= inbox.len());
            match item {
                FlvItem::Header(_) => assert!(tags.is_empty() && consumed >= FILE_HEADER_LEN),
                FlvItem::Tag(tag) => {
                    assert!(tag.header.data_size <= max_data);
                    assert_eq!(tag.data.len(), tag.header.data_size as usize);
                    assert_eq!(consumed, packed_tag_len(tag.header.data_size));
                    // A decoded tag is exactly what pack_tag writes for it.
                    let mut again = Vec::new();
                    pack_tag(&mut again, tag.header.kind, tag.header.timestamp, tag.data).unwrap();
                    assert_eq!(again[..], inbox[..consumed]);
                    check_media(tag.header.kind, tag.data);
                    tags.push((tag.header.kind, tag.header.timestamp, tag.data.to_vec()));
                }
            }
            inbox.drain(..consumed);
        }
    }
    assert_eq!(reader.tags_read(), tags.len() as u64);
    (tags, None)
}

/// Codec detection on `data` as a tag of `kind`: no panic, and what it says
/// is consistent.
fn check_media(kind: TagKind, data: &[u8]) {
    match kind {
        TagKind::Video => check_video(data),
        TagKind::Audio => check_audio(data),
        TagKind::Script => check_script(data),
    }
}

fn check_video(data: &[u8]) {
    if let Ok(info) = VideoTagInfo::parse(data) {
        assert!(info.body_offset <= data.len());
        let flags = [
            info.is_keyframe(),
            info.is_sequence_header(),
            info.is_end_of_sequence(),
            info.is_command(),
        ];
        assert!(flags.iter().filter(|f| **f).count() <= 1, "{info:?}");
    }
}

fn check_audio(data: &[u8]) {
    if let Ok(info) = AudioTagInfo::parse(data) {
        assert!(info.body_offset <= data.len());
        assert_eq!(info.params.is_none(), info.enhanced);
    }
}

fn check_script(data: &[u8]) {
    let stripped = strip_set_data_frame(data);
    assert!(data.ends_with(stripped));
    if scan_metadata(data).is_ok() {
        assert!(is_on_metadata(stripped));
    }
}

#[test]
fn random_streams_round_trip() {
    let mut total = 0;
    for seed in 0..SEEDS {
        let mut rng = Rng(seed);
        for case in 0..8 {
            let (wire, expected) = random_stream(&mut rng);
            let (tags, error) = read(&mut rng, &wire, MAX_DATA);
            assert_eq!(error, None, "seed {seed} case {case}");
            assert_eq!(tags, expected, "seed {seed} case {case}");
            total += tags.len();

            // A limit below the largest tag: the tags before it, then the error.
            let largest = expected.iter().map(|t| t.2.len()).max().unwrap_or(0) as u32;
            if largest > 0 {
                let (tags, error) = read(&mut rng, &wire, largest - 1);
                assert!(
                    matches!(error, Some(FlvError::TagTooLarge { data_size, .. }) if data_size == largest),
                    "seed {seed} case {case}"
                );
                assert_eq!(tags[..], expected[..tags.len()], "seed {seed} case {case}");
            }
        }
    }
    assert!(total > SEEDS as usize * 8 * 3);
}

fn mutate(rng: &mut Rng, wire: &mut Vec<u8>) {
    // Tag types, codec ids and frame-type bytes.
    support::mutate(
        rng,
        wire,
        &[
            0x00, 0x01, 0x02, 0x03, 0x05, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x10, 0x11, 0x12,
            0x17, 0x29, 0x7F, 0x80, 0x90, 0x96, 0x97, 0xAF, 0xFF,
        ],
    );
}

#[test]
fn truncation_and_mutation_never_panic() {
    for seed in 0..SEEDS {
        let mut rng = Rng(1000 + seed);
        for case in 0..8 {
            let (wire, expected) = random_stream(&mut rng);
            let context = format!("seed {seed} case {case}");

            // Truncated: the tags before the cut, no error.
            let cut = rng.below(wire.len() + 1);
            let (tags, error) = read(&mut rng, &wire[..cut], MAX_DATA);
            assert_eq!(error, None, "{context}: cut {cut}");
            assert_eq!(tags[..], expected[..tags.len()], "{context}: cut {cut}");

            for _ in 0..6 {
                let mut bytes = wire.clone();
                mutate(&mut rng, &mut bytes);
                let max = *rng.pick(&[0, 16, 1000, MAX_DATA, u32::MAX]);
                read(&mut rng, &bytes, max);
                // Tag by tag from any offset.
                let mut at = rng.below(bytes.len() + 1);
                while let Ok(Decoded::Frame { frame, consumed }) = decode_tag(&bytes[at..], max) {
                    assert!(consumed <= bytes.len() - at, "{context}");
                    check_media(frame.header.kind, frame.data);
                    at += consumed;
                }
            }
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(3000);
    for _ in 0..20_000 {
        let len = rng.below(48);
        let mut bytes = rng.bytes(len);
        if rng.chance(3) && !bytes.is_empty() {
            // A plausible first byte makes the decoders go further.
            bytes[0] = *rng.pick(&[0x08, 0x09, 0x12, 0x17, 0x27, 0x91, 0x96, 0x97, 0xAF, 0x95]);
        }
        if let Ok(Decoded::Frame { consumed, .. }) = decode_header(&bytes) {
            assert!(consumed <= bytes.len());
        }
        let max = rng.range(0, 64) as u32;
        if let Ok(Decoded::Frame { frame, consumed }) = decode_tag(&bytes, max) {
            assert!(consumed <= bytes.len() && frame.header.data_size <= max);
        }
        check_video(&bytes);
        check_audio(&bytes);
        let mut script = ON_METADATA.to_vec();
        script.extend_from_slice(&bytes);
        check_script(&script);
        check_script(&bytes);
    }
}

/// A random AMF0 value, `depth` levels of containers at most.
fn random_value(rng: &mut Rng, depth: usize, out: &mut Vec<u8>) {
    let choice = if depth == 0 {
        rng.below(6)
    } else {
        rng.below(10)
    };
    match choice {
        0 => {
            out.push(0x00);
            out.extend_from_slice(&(rng.next() as f64).to_be_bytes());
        }
        1 => out.extend_from_slice(&[0x01, rng.range(0, 1) as u8]),
        2 => {
            let len = rng.below(20);
            out.push(0x02);
            out.extend_from_slice(&(len as u16).to_be_bytes());
            out.extend(rng.bytes(len));
        }
        3 => out.push(*rng.pick(&[0x05, 0x06, 0x0D])),
        4 => {
            out.push(0x0B);
            out.extend(rng.bytes(10));
        }
        5 => {
            let len = rng.below(20);
            out.push(*rng.pick(&[0x0C, 0x0F]));
            out.extend_from_slice(&(len as u32).to_be_bytes());
            out.extend(rng.bytes(len));
        }
        6 | 7 => {
            match rng.below(3) {
                0 => out.push(0x03),
                1 => {
                    out.push(0x08);
                    out.extend_from_slice(&(rng.next() as u32).to_be_bytes());
                }
                _ => out.extend_from_slice(&[0x10, 0x00, 0x01, b'C']),
            }
            for _ in 0..rng.below(4) {
                random_name(rng, out);
                random_value(rng, depth - 1, out);
            }
            out.extend_from_slice(&[0, 0, 0x09]);
        }
        _ => {
            let count = rng.below(4);
            out.push(0x0A);
            out.extend_from_slice(&(count as u32).to_be_bytes());
            for _ in 0..count {
                random_value(rng, depth - 1, out);
            }
        }
    }
}

fn random_name(rng: &mut Rng, out: &mut Vec<u8>) {
    let name: &[u8] = match rng.below(3) {
        0 => {
            let known: [&[u8]; 4] = [b"width", b"height", b"framerate", b"videocodecid"];
            known[rng.below(known.len())]
        }
        1 => b"x",
        _ => b"somethingelse",
    };
    out.extend_from_slice(&(name.len() as u16).to_be_bytes());
    out.extend_from_slice(name);
}

/// `onMetaData` with random properties nested up to `depth` levels.
fn random_metadata(rng: &mut Rng, depth: usize) -> Vec<u8> {
    let mut out = ON_METADATA.to_vec();
    out.extend_from_slice(&[0x08, 0, 0, 0, 0]);
    for _ in 0..rng.below(6) {
        random_name(rng, &mut out);
        random_value(rng, depth, &mut out);
    }
    out.extend_from_slice(&[0, 0, 0x09]);
    out
}

#[test]
fn random_metadata_scans_or_refuses_cleanly() {
    let mut rng = Rng(4000);
    let mut scanned = 0;
    for _ in 0..5_000 {
        // Containers at depth 1..=depth+1: within the limit up to MAX - 1.
        let depth = rng.below(MAX_SCRIPT_DEPTH + 4);
        let data = random_metadata(&mut rng, depth);
        match scan_metadata(&data) {
            Ok(_) => scanned += 1,
            Err(FlvError::ScriptTooDeep) => assert!(depth >= MAX_SCRIPT_DEPTH),
            Err(error) => panic!("{error} at depth {depth}: {data:02x?}"),
        }
        let mut bytes = data.clone();
        mutate(&mut rng, &mut bytes);
        check_script(&bytes);
    }
    assert!(scanned > 1_000);
}
