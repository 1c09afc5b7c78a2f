//! FLV byte vectors, annotated field by field (FLV spec v10.1 annex E,
//! enhanced RTMP v2), and every error path.

use super::*;

mod media;
mod script;

const MAX: u32 = 1 << 20;

/// A whole tag from `wire`, which must hold exactly one.
fn tag_of(wire: &[u8]) -> Tag<'_> {
    match decode_tag(wire, MAX).unwrap() {
        Decoded::Frame { frame, consumed } => {
            assert_eq!(consumed, wire.len());
            frame
        }
        Decoded::Incomplete => panic!("incomplete: {wire:02x?}"),
    }
}

/// Every strict prefix of a tag is `Incomplete`.
fn assert_tag_prefixes_incomplete(wire: &[u8]) {
    for len in 0..wire.len() {
        assert_eq!(
            decode_tag(&wire[..len], MAX),
            Ok(Decoded::Incomplete),
            "prefix of {len} bytes"
        );
    }
}

/// `data` packed at `timestamp`, checked to decode back to itself.
fn packed(kind: TagKind, timestamp: u32, data: &[u8]) -> Vec<u8> {
    let mut wire = Vec::new();
    pack_tag(&mut wire, kind, timestamp, data).unwrap();
    assert_eq!(wire.len(), packed_tag_len(data.len() as u32));
    let tag = tag_of(&wire);
    assert_eq!(tag.header.kind, kind);
    assert_eq!(tag.header.timestamp, timestamp);
    assert_eq!(tag.data, data);
    wire
}

// --- File header -------------------------------------------------------------

const HEADER: [u8; 13] = [
    b'F', b'L', b'V', // signature
    0x01, // version 1
    0x05, // flags: audio (0x04) | video (0x01)
    0x00, 0x00, 0x00, 0x09, // DataOffset: 9
    0x00, 0x00, 0x00, 0x00, // PreviousTagSize0
];

#[test]
fn header_vector() {
    let mut out = Vec::new();
    write_header(&mut out, true, true);
    assert_eq!(out, HEADER);
    assert_eq!(out.len(), FILE_HEADER_LEN);
    assert_eq!(
        decode_header(&HEADER),
        Ok(Decoded::Frame {
            frame: FlvHeader {
                has_audio: true,
                has_video: true
            },
            consumed: 13
        })
    );
    for len in 0..HEADER.len() {
        assert_eq!(decode_header(&HEADER[..len]), Ok(Decoded::Incomplete));
    }
    // Trailing bytes (the first tag) are not consumed.
    let mut longer = HEADER.to_vec();
    longer.extend_from_slice(&[0x09, 0x00]);
    assert!(matches!(
        decode_header(&longer),
        Ok(Decoded::Frame { consumed: 13, .. })
    ));
}

#[test]
fn header_flags() {
    for (audio, video, flags) in [
        (false, false, 0x00),
        (true, false, 0x04),
        (false, true, 0x01),
    ] {
        let mut out = Vec::new();
        write_header(&mut out, audio, video);
        assert_eq!(out[4], flags);
        let Ok(Decoded::Frame { frame, .. }) = decode_header(&out) else {
            panic!()
        };
        assert_eq!((frame.has_audio, frame.has_video), (audio, video));
    }
    // Reserved flag bits are ignored.
    let mut wire = HEADER;
    wire[4] = 0xFC; // reserved bits set, audio set, video clear
    let Ok(Decoded::Frame { frame, .. }) = decode_header(&wire) else {
        panic!()
    };
    assert_eq!((frame.has_audio, frame.has_video), (true, false));
}

#[test]
fn header_errors() {
    // Refused at the first wrong signature byte.
    assert_eq!(
        decode_header(b"G"),
        Err(FlvError::BadSignature([b'G', 0, 0]))
    );
    assert_eq!(
        decode_header(b"FLX\x01"),
        Err(FlvError::BadSignature(*b"FLX"))
    );
    // An HTTP response where a body was expected.
    assert!(matches!(
        decode_header(b"HTTP/1.1 200 OK"),
        Err(FlvError::BadSignature(_))
    ));
    let mut wire = HEADER;
    wire[3] = 2;
    assert_eq!(decode_header(&wire), Err(FlvError::UnsupportedVersion(2)));
    let mut wire = HEADER;
    wire[8] = 8;
    assert_eq!(decode_header(&wire), Err(FlvError::BadDataOffset(8)));
    let mut wire = HEADER;
    wire[5] = 0x80;
    assert_eq!(
        decode_header(&wire[..9]),
        Err(FlvError::BadDataOffset(0x8000_0009))
    );
    let mut wire = HEADER;
    wire[12] = 11;
    assert_eq!(
        decode_header(&wire),
        Err(FlvError::BadFirstPreviousTagSize(11))
    );
}

#[test]
fn header_with_a_larger_data_offset_skips_the_extra_bytes() {
    let wire = [
        b'F', b'L', b'V', 0x01, 0x01, // signature, version, video
        0x00, 0x00, 0x00, 0x0B, // DataOffset: 11
        0xAA, 0xBB, // two header bytes of a later version
        0x00, 0x00, 0x00, 0x00, // PreviousTagSize0
    ];
    assert!(matches!(
        decode_header(&wire),
        Ok(Decoded::Frame { consumed: 15, .. })
    ));
    assert_eq!(decode_header(&wire[..14]), Ok(Decoded::Incomplete));
}

// --- Tags ----------------------------------------------------------------------

/// An AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1) with one SPS
/// and one PPS.
const AVC_CONFIG: [u8; 19] = [
    0x01, // configurationVersion
    0x42, 0xC0, 0x1E, // profile (baseline), compatibility, level 3.0
    0xFF, // 6 reserved bits, lengthSizeMinusOne = 3
    0xE1, // 3 reserved bits, one SPS
    0x00, 0x04, 0x67, 0x42, 0xC0, 0x1E, // SPS: length 4, NAL type 7
    0x01, // one PPS
    0x00, 0x04, 0x68, 0xCE, 0x3C, 0x80, // PPS: length 4, NAL type 8
];

#[test]
fn avc_sequence_header_tag() {
    let mut wire = vec![
        0x09, // TagType: video
        0x00, 0x00, 0x18, // DataSize: 24
        0x00, 0x00, 0x00, // Timestamp: 0
        0x00, // TimestampExtended
        0x00, 0x00, 0x00, // StreamID: 0
        // VideoTagHeader
        0x17, // FrameType 1 (key), CodecID 7 (AVC)
        0x00, // AVCPacketType 0: sequence header
        0x00, 0x00, 0x00, // CompositionTime 0
    ];
    wire.extend_from_slice(&AVC_CONFIG);
    wire.extend_from_slice(&[0x00, 0x00, 0x00, 0x23]); // PreviousTagSize: 11 + 24
    assert_tag_prefixes_incomplete(&wire);
    let tag = tag_of(&wire);
    assert_eq!(
        tag.header,
        TagHeader {
            kind: TagKind::Video,
            data_size: 24,
            timestamp: 0
        }
    );
    assert_eq!(packed(TagKind::Video, 0, tag.data), wire);

    let info = VideoTagInfo::parse(tag.data).unwrap();
    assert_eq!(info.codec, VideoCodec::Avc);
    assert_eq!(info.frame_type, VideoFrameType::Key);
    assert_eq!(info.packet, VideoPacket::SequenceHeader);
    assert!(info.is_sequence_header());
    // The frame type says "key", but a sequence header is not a keyframe.
    assert!(!info.is_keyframe());
    assert!(!info.enhanced);
    assert_eq!(&tag.data[info.body_offset..], AVC_CONFIG);
}

#[test]
fn avc_keyframe_and_inter_frame_tags() {
    let wire = [
        0x09, // video
        0x00, 0x00, 0x0E, // DataSize: 14
        0x00, 0x00, 0x28, // Timestamp: 40 ms
        0x00, // TimestampExtended
        0x00, 0x00, 0x00, // StreamID
        0x17, // key frame, AVC
        0x01, // AVCPacketType 1: NALU
        0x00, 0x00, 0x00, // CompositionTime 0
        0x00, 0x00, 0x00, 0x05, // NALU length 5
        0x65, 0x88, 0x84, 0x00, 0x33, // IDR slice (NAL type 5)
        0x00, 0x00, 0x00, 0x19, // PreviousTagSize: 25
    ];
    assert_tag_prefixes_incomplete(&wire);
    let tag = tag_of(&wire);
    assert_eq!(tag.header.timestamp, 40);
    let info = VideoTagInfo::parse(tag.data).unwrap();
    assert!(info.is_keyframe());
    assert!(!info.is_sequence_header() && !info.is_end_of_sequence());
    assert_eq!(info.packet, VideoPacket::CodedFrames);
    assert_eq!(info.composition_time_ms, 0);
    assert_eq!(info.body_offset, 5);

    // An inter frame with a negative composition time (-10 ms).
    let data = [0x27, 0x01, 0xFF, 0xFF, 0xF6, 0x00, 0x00, 0x00, 0x01, 0x41];
    let info = VideoTagInfo::parse(&data).unwrap();
    assert_eq!(info.frame_type, VideoFrameType::Inter);
    assert_eq!(info.composition_time_ms, -10);
    assert!(!info.is_keyframe());
    // CompositionTime 0x7FFFFF and 0x800000: the extremes of SI24.
    let info = VideoTagInfo::parse(&[0x27, 0x01, 0x7F, 0xFF, 0xFF]).unwrap();
    assert_eq!(info.composition_time_ms, 8_388_607);
    let info = VideoTagInfo::parse(&[0x27, 0x01, 0x80, 0x00, 0x00]).unwrap();
    assert_eq!(info.composition_time_ms, -8_388_608);

    // End of sequence.
    let info = VideoTagInfo::parse(&[0x17, 0x02, 0x00, 0x00, 0x00]).unwrap();
    assert!(info.is_end_of_sequence() && !info.is_keyframe());
}

#[test]
fn aac_sequence_header_tag() {
    let wire = [
        0x08, // TagType: audio
        0x00, 0x00, 0x04, // DataSize: 4
        0x00, 0x00, 0x00, 0x00, // Timestamp 0, extended 0
        0x00, 0x00, 0x00, // StreamID
        0xAF, // SoundFormat 10 (AAC), rate 3 (44 kHz), 16-bit, stereo
        0x00, // AACPacketType 0: sequence header
        0x12, 0x10, // AudioSpecificConfig: AAC LC, 44.1 kHz, 2 channels
        0x00, 0x00, 0x00, 0x0F, // PreviousTagSize: 15
    ];
    assert_tag_prefixes_incomplete(&wire);
    let tag = tag_of(&wire);
    assert_eq!(tag.header.kind, TagKind::Audio);
    let info = AudioTagInfo::parse(tag.data).unwrap();
    assert_eq!(info.codec, AudioCodec::Aac);
    assert!(info.is_sequence_header());
    assert_eq!(
        info.params,
        Some(AudioParams {
            rate_hz: 44100,
            sample_bits: 16,
            stereo: true
        })
    );
    assert_eq!(&tag.data[info.body_offset..], [0x12, 0x10]);

    // A raw AAC frame.
    let info = AudioTagInfo::parse(&[0xAF, 0x01, 0x21, 0x1B]).unwrap();
    assert_eq!(info.packet, AudioPacket::CodedFrames);
    assert!(!info.is_sequence_header());
}

#[test]
fn extended_timestamp_holds_the_upper_bits() {
    let data = [0xAF, 0x01];
    let wire = packed(TagKind::Audio, 0x1234_5678, &data);
    assert_eq!(
        wire[..TAG_HEAD_LEN],
        [
            0x08, // audio
            0x00, 0x00, 0x02, // DataSize 2
            0x34, 0x56, 0x78, // Timestamp: low 24 bits
            0x12, // TimestampExtended: upper 8 bits
            0x00, 0x00, 0x00, // StreamID
        ]
    );
    assert_eq!(
        encode_tag_head(TagKind::Audio, 2, 0x1234_5678),
        wire[..TAG_HEAD_LEN]
    );
    assert_eq!(previous_tag_size(2), [0, 0, 0, 13]);
    packed(TagKind::Script, u32::MAX, &[]);
}

#[test]
fn tag_errors_are_found_as_soon_as_their_bytes_arrive() {
    // The filter bit (encrypted tag).
    assert_eq!(decode_tag(&[0x29], MAX), Err(FlvError::FilteredTag(0x29)));
    // Unknown types and reserved bits.
    for byte in [0x00, 0x07, 0x0A, 0x12 | 0x40, 0x89, 0xFF] {
        assert!(decode_tag(&[byte], MAX).is_err(), "{byte:#x}");
    }
    assert_eq!(
        decode_tag(&[0x0F], MAX),
        Err(FlvError::UnknownTagType(0x0F))
    );
    // Too large: refused after 4 bytes, before any data.
    assert_eq!(
        decode_tag(&[0x09, 0x00, 0x10, 0x01], 0x1000),
        Err(FlvError::TagTooLarge {
            data_size: 0x1001,
            max: 0x1000
        })
    );
    assert_eq!(
        decode_tag(&[0x09, 0x00, 0x10, 0x00], 0x1000),
        Ok(Decoded::Incomplete)
    );
    // A non-zero stream id: refused once the head is in.
    let head = [0x12, 0, 0, 5, 0, 0, 0, 0, 0, 0, 1];
    assert_eq!(decode_tag(&head, MAX), Err(FlvError::NonZeroStreamId(1)));
    // A wrong PreviousTagSize.
    let mut wire = packed(TagKind::Script, 7, b"hello");
    let at = wire.len() - 1;
    wire[at] = 15;
    assert_eq!(
        decode_tag(&wire, MAX),
        Err(FlvError::PreviousTagSizeMismatch {
            expected: 16,
            found: 15
        })
    );
}

#[test]
fn pack_tag_refuses_what_the_field_cannot_hold() {
    let big = vec![0; MAX_DATA_SIZE as usize + 1];
    let mut out = vec![1, 2, 3];
    assert_eq!(
        pack_tag(&mut out, TagKind::Video, 0, &big),
        Err(FlvError::TagTooLarge {
            data_size: MAX_DATA_SIZE + 1,
            max: MAX_DATA_SIZE
        })
    );
    assert_eq!(out, [1, 2, 3]);
    // The largest tag packs and decodes with a limit that allows it.
    let largest = &big[..MAX_DATA_SIZE as usize];
    pack_tag(&mut out, TagKind::Video, 0, largest).unwrap();
    let Ok(Decoded::Frame { frame, consumed }) = decode_tag(&out[3..], MAX_DATA_SIZE) else {
        panic!()
    };
    assert_eq!(frame.header.data_size, MAX_DATA_SIZE);
    assert_eq!(consumed, out.len() - 3);
}

// --- Reader ----------------------------------------------------------------------

/// Tags as (kind, timestamp, data).
type TagList = Vec<(TagKind, u32, Vec<u8>)>;

/// A header and a few tags of every kind.
fn sample_stream() -> (Vec<u8>, TagList) {
    let tags = vec![
        (TagKind::Script, 0, METADATA_SCRIPT.to_vec()),
        (
            TagKind::Video,
            0,
            [&[0x17, 0, 0, 0, 0][..], &AVC_CONFIG].concat(),
        ),
        (TagKind::Audio, 0, vec![0xAF, 0x00, 0x12, 0x10]),
        (TagKind::Video, 0, vec![0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65]),
        (TagKind::Audio, 23, vec![0xAF, 0x01, 0x21]),
        (TagKind::Video, 0x0100_0000, vec![]),
    ];
    let mut wire = Vec::new();
    write_header(&mut wire, true, true);
    for (kind, ts, data) in &tags {
        pack_tag(&mut wire, *kind, *ts, data).unwrap();
    }
    (wire, tags)
}

/// Reads `pieces` one after another into a growing buffer, decoding all it
/// can after each; returns the tags read.
fn read_pieces(pieces: &[&[u8]]) -> TagList {
    let mut reader = FlvReader::new(MAX);
    let mut inbox = Vec::new();
    let mut tags = Vec::new();
    for piece in pieces {
        inbox.extend_from_slice(piece);
        while let Decoded::Frame { frame, consumed } = reader.decode(&inbox).unwrap() {
            assert!(consumed <= inbox.len());
            match frame {
                FlvItem::Header(header) => {
                    assert!(tags.is_empty() && header.has_audio && header.has_video);
                }
                FlvItem::Tag(tag) => {
                    assert!(reader.header().is_some());
                    tags.push((tag.header.kind, tag.header.timestamp, tag.data.to_vec()));
                }
            }
            inbox.drain(..consumed);
        }
    }
    assert!(inbox.is_empty());
    assert_eq!(reader.tags_read(), tags.len() as u64);
    tags
}

#[test]
fn reader_over_a_stream_split_at_every_byte_boundary() {
    let (wire, expected) = sample_stream();
    assert_eq!(read_pieces(&[&wire]), expected);
    for cut in 0..=wire.len() {
        let (a, b) = wire.split_at(cut);
        assert_eq!(read_pieces(&[a, b]), expected, "cut at {cut}");
    }
    // One byte at a time.
    let bytes: Vec<&[u8]> = wire.chunks(1).collect();
    assert_eq!(read_pieces(&bytes), expected);
}

#[test]
fn reader_for_tags_only_and_errors() {
    let (wire, expected) = sample_stream();
    let mut reader = FlvReader::tags_only(MAX);
    let mut at = FILE_HEADER_LEN;
    let mut count = 0;
    while let Decoded::Frame { frame, consumed } = reader.decode(&wire[at..]).unwrap() {
        let FlvItem::Tag(tag) = frame else { panic!() };
        assert_eq!(tag.data, expected[count].2);
        count += 1;
        at += consumed;
    }
    assert_eq!((at, count), (wire.len(), expected.len()));
    assert_eq!(reader.header(), None);

    // A reader expecting a header refuses a tag; one with a small limit
    // refuses a large tag.
    assert!(matches!(
        FlvReader::new(MAX).decode(&wire[FILE_HEADER_LEN..]),
        Err(FlvError::BadSignature(_))
    ));
    let mut reader = FlvReader::new(4);
    assert!(matches!(
        reader.decode(&wire),
        Ok(Decoded::Frame {
            frame: FlvItem::Header(_),
            consumed: FILE_HEADER_LEN
        })
    ));
    assert!(matches!(
        reader.decode(&wire[FILE_HEADER_LEN..]),
        Err(FlvError::TagTooLarge { max: 4, .. })
    ));
}

// --- Script data shared with the reader tests ------------------------------------

/// `onMetaData` with an ECMA array, as an FLV file carries it.
const METADATA_SCRIPT: &[u8] = &[
    0x02, 0x00, 0x0A, // AMF0 string, 10 bytes:
    b'o', b'n', b'M', b'e', b't', b'a', b'D', b'a', b't', b'a', // "onMetaData"
    0x08, 0x00, 0x00, 0x00, 0x03, // ECMA array, 3 entries
    0x00, 0x05, b'w', b'i', b'd', b't', b'h', // "width"
    0x00, 0x40, 0x94, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // number 1280
    0x00, 0x06, b'h', b'e', b'i', b'g', b'h', b't', // "height"
    0x00, 0x40, 0x86, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, // number 720
    0x00, 0x0C, // name, 12 bytes:
    b'v', b'i', b'd', b'e', b'o', b'c', b'o', b'd', b'e', b'c', b'i', b'd', // "videocodecid"
    0x00, 0x40, 0x1C, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // number 7 (AVC)
    0x00, 0x00, 0x09, // object end
];
