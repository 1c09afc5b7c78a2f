//! Codec detection vectors: legacy FLV video and audio headers and the
//! enhanced RTMP (FourCC) ones, annotated field by field.

use super::*;

// --- Enhanced RTMP video -----------------------------------------------------------

#[test]
fn enhanced_hevc_sequence_start_and_coded_frames() {
    let start = [
        0x90, // IsExHeader, FrameType 1 (key), VideoPacketType 0: SequenceStart
        b'h', b'v', b'c', b'1', // FourCC
        0x01, 0x01, 0x60, 0x00, // HEVCDecoderConfigurationRecord (start)
    ];
    let info = VideoTagInfo::parse(&start).unwrap();
    assert!(info.enhanced && !info.multitrack);
    assert_eq!(info.codec, VideoCodec::Hevc);
    assert_eq!(info.packet, VideoPacket::SequenceHeader);
    assert!(info.is_sequence_header() && !info.is_keyframe());
    assert_eq!(info.body_offset, 5);
    let wire = packed(TagKind::Video, 0, &start);
    assert_eq!(wire[11], 0x90);

    let coded = [
        0x91, // IsExHeader, key frame, VideoPacketType 1: CodedFrames
        b'h', b'v', b'c', b'1', // FourCC
        0x00, 0x00, 0x21, // CompositionTimeOffset: 33 ms
        0x00, 0x00, 0x00, 0x03, 0x26, 0x01, 0xAF, // NALU: IDR_W_RADL
    ];
    let info = VideoTagInfo::parse(&coded).unwrap();
    assert_eq!(info.packet, VideoPacket::CodedFrames);
    assert!(info.is_keyframe() && !info.is_sequence_header());
    assert_eq!(info.composition_time_ms, 33);
    assert_eq!(info.body_offset, 8);

    // CodedFramesX: no composition time on the wire; an inter frame.
    let coded_x = [
        0xA3, b'h', b'v', b'c', b'1', 0x00, 0x00, 0x00, 0x02, 0x02, 0x01,
    ];
    let info = VideoTagInfo::parse(&coded_x).unwrap();
    assert_eq!(info.packet, VideoPacket::CodedFrames);
    assert_eq!(info.frame_type, VideoFrameType::Inter);
    assert_eq!((info.composition_time_ms, info.body_offset), (0, 5));
    assert!(!info.is_keyframe());

    // SequenceEnd.
    let info = VideoTagInfo::parse(&[0x92, b'h', b'v', b'c', b'1']).unwrap();
    assert!(info.is_end_of_sequence() && !info.is_keyframe());
}

#[test]
fn enhanced_av1_and_vp9() {
    let key = [
        0x91, // IsExHeader, key frame, CodedFrames
        b'a', b'v', b'0', b'1', // FourCC
        0x12, 0x00, // OBU: temporal delimiter (no composition time for AV1)
        0x0A, 0x0B, 0x00, 0x00, 0x00, // OBU: sequence header (start)
    ];
    let info = VideoTagInfo::parse(&key).unwrap();
    assert_eq!(info.codec, VideoCodec::Av1);
    assert!(info.is_keyframe());
    assert_eq!((info.composition_time_ms, info.body_offset), (0, 5));

    let start = [0x90, b'a', b'v', b'0', b'1', 0x81, 0x04, 0x0C, 0x00];
    let info = VideoTagInfo::parse(&start).unwrap();
    assert!(info.is_sequence_header() && !info.is_keyframe());
    // MPEG2TSSequenceStart is a sequence start too.
    let info = VideoTagInfo::parse(&[0x95, b'a', b'v', b'0', b'1', 0x80]).unwrap();
    assert_eq!(info.packet, VideoPacket::Mpeg2TsSequenceStart);
    assert!(info.is_sequence_header());

    let info = VideoTagInfo::parse(&[0xA1, b'v', b'p', b'0', b'9', 0x86]).unwrap();
    assert_eq!(info.codec, VideoCodec::Vp9);
    assert!(!info.is_keyframe());
    // An unknown FourCC is reported, not refused.
    let info = VideoTagInfo::parse(&[0x91, b'v', b'p', b'0', b'8', 0x10]).unwrap();
    assert_eq!(info.codec, VideoCodec::Other(CodecTag::FourCc(*b"vp08")));
    assert!(info.is_keyframe());
    // avc1 in enhanced mode carries a composition time.
    let info = VideoTagInfo::parse(&[0x91, b'a', b'v', b'c', b'1', 0, 0, 5, 0]).unwrap();
    assert_eq!(info.codec, VideoCodec::Avc);
    assert_eq!((info.composition_time_ms, info.body_offset), (5, 8));
}

#[test]
fn command_and_metadata_frames_are_neither_keyframes_nor_headers() {
    // Legacy: frame type 5, AVC, then the command byte (0: start of seek).
    let info = VideoTagInfo::parse(&[0x57, 0x00]).unwrap();
    assert_eq!(info.frame_type, VideoFrameType::Command);
    assert!(info.is_command() && !info.is_keyframe() && !info.is_sequence_header());
    // Enhanced: frame type 5 and a packet type other than Metadata: the
    // command byte follows at once, without a FourCC.
    let info = VideoTagInfo::parse(&[0xD1, 0x01]).unwrap();
    assert!(info.is_command() && !info.is_keyframe());
    assert_eq!(info.codec, VideoCodec::NotSignalled);
    assert_eq!(info.body_offset, 1);
    assert_eq!(
        VideoTagInfo::parse(&[0xD1]),
        Err(FlvError::MediaHeaderTruncated { needed: 2, got: 1 })
    );
    // Enhanced Metadata with frame type 5: the frame type is ignored.
    let info = VideoTagInfo::parse(&[0xD4, b'h', b'v', b'c', b'1', 0x02]).unwrap();
    assert_eq!(info.packet, VideoPacket::Metadata);
    assert!(!info.is_command() && !info.is_keyframe() && !info.is_sequence_header());
    // Metadata with a key frame type is no keyframe either.
    let info = VideoTagInfo::parse(&[0x94, b'h', b'v', b'c', b'1', 0x02]).unwrap();
    assert!(!info.is_keyframe());
}

#[test]
fn enhanced_multitrack_and_mod_ex() {
    let multitrack = [
        0x96, // IsExHeader, key frame, VideoPacketType 6: Multitrack
        0x00, // AvMultitrackType 0 (one track), VideoPacketType 0: SequenceStart
        b'a', b'v', b'0', b'1', // FourCC
        0x00, // trackId 0
        0x81, // AV1CodecConfigurationRecord (start)
    ];
    let info = VideoTagInfo::parse(&multitrack).unwrap();
    assert!(info.multitrack);
    assert_eq!(info.codec, VideoCodec::Av1);
    assert!(info.is_sequence_header());
    assert_eq!(info.body_offset, 6);
    // Many tracks, coded frames of hvc1: no composition time read here.
    let info = VideoTagInfo::parse(&[0x96, 0x11, b'h', b'v', b'c', b'1', 0x00]).unwrap();
    assert!(info.is_keyframe() && info.multitrack);
    assert_eq!((info.composition_time_ms, info.body_offset), (0, 6));
    assert_eq!(
        VideoTagInfo::parse(&[0x96, 0x06, b'h', b'v', b'c', b'1']),
        Err(FlvError::NestedMultitrack)
    );

    let mod_ex = [
        0x97, // IsExHeader, key frame, VideoPacketType 7: ModEx
        0x02, // modExDataSize - 1: 3 bytes
        0x00, 0x01, 0x00, // modExData: TimestampOffsetNano 256 ns
        0x01, // VideoPacketModExType 0, VideoPacketType 1: CodedFrames
        b'h', b'v', b'c', b'1', // FourCC
        0x00, 0x00, 0x00, // CompositionTimeOffset
        0x00, 0x00, 0x00, 0x01, 0x26, // NALU
    ];
    let info = VideoTagInfo::parse(&mod_ex).unwrap();
    assert!(info.is_keyframe());
    assert_eq!(info.codec, VideoCodec::Hevc);
    assert_eq!(info.body_offset, 13);
    // A 16-bit ModEx size (u8 255, then u16 + 1).
    let mut long = vec![0x97, 0xFF, 0x01, 0x00];
    long.extend_from_slice(&[0xEE; 257]);
    long.extend_from_slice(&[0x00, b'a', b'v', b'0', b'1']);
    let info = VideoTagInfo::parse(&long).unwrap();
    assert!(info.is_sequence_header());
    assert_eq!(info.body_offset, long.len());
    // Cut inside the ModEx data.
    assert_eq!(
        VideoTagInfo::parse(&long[..100]),
        Err(FlvError::MediaHeaderTruncated {
            needed: 262,
            got: 100
        })
    );
}

#[test]
fn legacy_video_codecs_and_truncation() {
    // VP6 (codec 4): no packet type; every frame is coded frames.
    let info = VideoTagInfo::parse(&[0x14, 0x00, 0x12]).unwrap();
    assert_eq!(info.codec, VideoCodec::Other(CodecTag::Id(4)));
    assert!(info.is_keyframe());
    assert_eq!(info.body_offset, 1);
    // HEVC with the non-standard codec id 12.
    let info = VideoTagInfo::parse(&[0x1C, 0x00, 0, 0, 0, 0x01]).unwrap();
    assert_eq!(info.codec, VideoCodec::Hevc);
    assert!(info.is_sequence_header());
    // Reserved frame types are never keyframes.
    let info = VideoTagInfo::parse(&[0x07, 0x01, 0, 0, 0]).unwrap();
    assert_eq!(info.frame_type, VideoFrameType::Reserved(0));
    assert!(!info.is_keyframe());
    // An unknown AVCPacketType is reported.
    let info = VideoTagInfo::parse(&[0x17, 0x03, 0, 0, 0]).unwrap();
    assert_eq!(info.packet, VideoPacket::Other(3));
    assert!(!info.is_keyframe() && !info.is_sequence_header());

    assert_eq!(
        VideoTagInfo::parse(&[]),
        Err(FlvError::MediaHeaderTruncated { needed: 1, got: 0 })
    );
    assert_eq!(
        VideoTagInfo::parse(&[0x17, 0x01, 0x00]),
        Err(FlvError::MediaHeaderTruncated { needed: 5, got: 3 })
    );
    assert_eq!(
        VideoTagInfo::parse(&[0x91, b'h', b'v']),
        Err(FlvError::MediaHeaderTruncated { needed: 5, got: 3 })
    );
    assert_eq!(
        VideoTagInfo::parse(&[0x91, b'h', b'v', b'c', b'1', 0]),
        Err(FlvError::MediaHeaderTruncated { needed: 8, got: 6 })
    );
}

// --- Audio ---------------------------------------------------------------------------

#[test]
fn legacy_audio_formats() {
    // MP3, 22 kHz, 16-bit, mono.
    let info = AudioTagInfo::parse(&[0x2A, 0xFF, 0xFB]).unwrap();
    assert_eq!(info.codec, AudioCodec::Mp3);
    assert_eq!(
        info.params,
        Some(AudioParams {
            rate_hz: 22050,
            sample_bits: 16,
            stereo: false
        })
    );
    assert_eq!(
        (info.packet, info.body_offset),
        (AudioPacket::CodedFrames, 1)
    );
    assert!(!info.is_sequence_header());
    // Speex (always 16 kHz, signalled as rate 0 here), 8-bit.
    let info = AudioTagInfo::parse(&[0xB0]).unwrap();
    assert_eq!(info.codec, AudioCodec::Speex);
    assert_eq!(info.params.unwrap().rate_hz, 5512);
    assert_eq!(info.params.unwrap().sample_bits, 8);
    // G.711 A-law: another format.
    let info = AudioTagInfo::parse(&[0x72]).unwrap();
    assert_eq!(info.codec, AudioCodec::Other(CodecTag::Id(7)));
    // The empty audio tag (silence) and AAC without its packet type.
    assert_eq!(
        AudioTagInfo::parse(&[]),
        Err(FlvError::MediaHeaderTruncated { needed: 1, got: 0 })
    );
    assert_eq!(
        AudioTagInfo::parse(&[0xAF]),
        Err(FlvError::MediaHeaderTruncated { needed: 2, got: 1 })
    );
}

#[test]
fn enhanced_audio() {
    let opus = [
        0x90, // SoundFormat 9 (ExHeader), AudioPacketType 0: SequenceStart
        b'O', b'p', b'u', b's', // FourCC
        0x4F, 0x70, 0x75, 0x73, // OpusHead (start)
    ];
    let info = AudioTagInfo::parse(&opus).unwrap();
    assert_eq!(info.codec, AudioCodec::Opus);
    assert!(info.is_sequence_header() && info.enhanced);
    assert_eq!((info.params, info.body_offset), (None, 5));

    for (fourcc, codec) in [
        (*b"mp4a", AudioCodec::Aac),
        (*b".mp3", AudioCodec::Mp3),
        (*b"fLaC", AudioCodec::Flac),
        (*b"ac-3", AudioCodec::Ac3),
        (*b"ec-3", AudioCodec::Eac3),
        (*b"xyz1", AudioCodec::Other(CodecTag::FourCc(*b"xyz1"))),
    ] {
        let data = [&[0x91][..], &fourcc, &[0x00]].concat();
        let info = AudioTagInfo::parse(&data).unwrap();
        assert_eq!(info.codec, codec);
        assert_eq!(info.packet, AudioPacket::CodedFrames);
    }
    let info = AudioTagInfo::parse(b"\x92fLaC").unwrap();
    assert_eq!(info.packet, AudioPacket::EndOfSequence);
    let info = AudioTagInfo::parse(b"\x94Opus\x01\x02").unwrap();
    assert_eq!(info.packet, AudioPacket::MultichannelConfig);
    assert!(!info.is_sequence_header());

    // Multitrack: AvMultitrackType 1 (many tracks), SequenceStart, mp4a.
    let info = AudioTagInfo::parse(b"\x95\x10mp4a\x00\x00\x00\x02\x12\x10").unwrap();
    assert!(info.multitrack && info.is_sequence_header());
    assert_eq!((info.codec, info.body_offset), (AudioCodec::Aac, 6));
    assert_eq!(
        AudioTagInfo::parse(b"\x95\x05mp4a"),
        Err(FlvError::NestedMultitrack)
    );
    // ModEx (1 byte of data), then CodedFrames.
    let info = AudioTagInfo::parse(b"\x97\x00\x10\x01Opus").unwrap();
    assert_eq!(info.packet, AudioPacket::CodedFrames);
    assert_eq!(info.body_offset, 8);
    assert_eq!(
        AudioTagInfo::parse(b"\x90Op"),
        Err(FlvError::MediaHeaderTruncated { needed: 5, got: 3 })
    );
}
