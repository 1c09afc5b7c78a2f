//! The synthetic live stream: its shape (tag sizes and send schedule), the
//! tag bodies the publisher sends, and the probe every media tag carries.
//!
//! ```text
//! video body  [0x17|0x27, 0x01, 0,0,0] [NALU length u32] [0x65|0x41] [probe] [0x00 ...]
//!              keyframe|inter, AVC NALU, composition time 0    IDR|non-IDR
//! audio body  [0xAF, 0x01] [probe] [0x00 ...]          AAC raw, 1024 samples at 48 kHz
//! probe       "SHLV" | u64 BE sequence (per track) | u64 BE send time (CLOCK_MONOTONIC ns)
//! ```
//!
//! Before the media: `onMetaData`, an AVC sequence header (a real
//! AVCDecoderConfigurationRecord, main profile, 1280x720) and an AAC
//! sequence header (AAC-LC, 48 kHz, stereo). Sizes count tag bodies: a
//! bitrate of B bit/s sends B/8 bytes of tag bodies per second (FLV and RTMP
//! framing come on top).

use std::time::Duration;

use shoal_protocols::amf0::Amf0Value;

/// First bytes of every probe.
pub(crate) const PROBE_MAGIC: [u8; 4] = *b"SHLV";
/// Magic, sequence number, send time.
pub(crate) const PROBE_BYTES: usize = 4 + 8 + 8;
/// Where the probe starts in a video body: AVC head (5), NALU length (4),
/// NAL header (1).
const VIDEO_PROBE_AT: usize = 10;
/// Where the probe starts in an audio body: AAC head (2).
const AUDIO_PROBE_AT: usize = 2;
/// Smallest video body that holds a probe.
pub(crate) const MIN_VIDEO_BODY_BYTES: usize = VIDEO_PROBE_AT + PROBE_BYTES;
/// Smallest audio body that holds a probe.
pub(crate) const MIN_AUDIO_BODY_BYTES: usize = AUDIO_PROBE_AT + PROBE_BYTES;
/// Bytes of a tag body a viewer needs to read its probe.
pub(crate) const BODY_PREFIX_BYTES: usize = MIN_VIDEO_BODY_BYTES;
/// Largest tag the publisher may send (the RTMP client's message limit).
pub(crate) const MAX_TAG_BYTES: usize = 4 << 20;

/// Audio is AAC-LC at 48 kHz: one tag per 1024 samples.
const AUDIO_SAMPLE_RATE: u64 = 48_000;
const AUDIO_SAMPLES_PER_TAG: u64 = 1024;
/// The share of the bitrate audio takes when it is on.
pub(crate) const AUDIO_BPS: u64 = 64_000;

/// Picture size announced in the metadata and coded in the SPS.
const WIDTH: f64 = 1280.0;
const HEIGHT: f64 = 720.0;
/// FLV codec ids: AVC and AAC.
const VIDEO_CODEC_ID: f64 = 7.0;
const AUDIO_CODEC_ID: f64 = 10.0;

/// AVCDecoderConfigurationRecord of a 1280x720 main-profile (level 3.1)
/// stream, as libx264 writes it:
///
/// ```text
/// 01          configurationVersion
/// 4d 40 1f    profile 77 (main), constraints 0x40, level 31
/// ff          6 reserved bits, lengthSizeMinusOne 3 (4-byte NALU lengths)
/// e1          3 reserved bits, 1 SPS
/// 00 19       SPS length 25, then the SPS (NAL type 7)
/// 01          1 PPS
/// 00 04       PPS length 4, then the PPS (NAL type 8)
/// ```
const AVC_DECODER_CONFIG: [u8; 40] = [
    0x01, 0x4d, 0x40, 0x1f, 0xff, 0xe1, 0x00, 0x19, //
    0x67, 0x4d, 0x40, 0x1f, 0xec, 0xa0, 0x28, 0x02, 0xdd, 0x80, 0x88, 0x00, 0x00, 0x03, 0x00, 0x08,
    0x00, 0x00, 0x03, 0x01, 0xe0, 0x78, 0xc1, 0x8c, 0xb0, //
    0x01, 0x00, 0x04, //
    0x68, 0xef, 0x8f, 0xc8,
];

/// AudioSpecificConfig: object type 2 (AAC-LC), frequency index 3
/// (48 kHz), channel configuration 2 (stereo).
const AAC_SPECIFIC_CONFIG: [u8; 2] = [0x11, 0x90];

/// Send time and sequence number of one media tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Probe {
    pub(crate) seq: u64,
    pub(crate) sent_ns: u64,
}

impl Probe {
    fn write(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&PROBE_MAGIC);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.sent_ns.to_be_bytes());
    }

    fn read(bytes: &[u8]) -> Option<Self> {
        let (magic, rest) = bytes.split_first_chunk::<4>()?;
        let (seq, rest) = rest.split_first_chunk::<8>()?;
        let (sent, _) = rest.split_first_chunk::<8>()?;
        (*magic == PROBE_MAGIC).then(|| Self {
            seq: u64::from_be_bytes(*seq),
            sent_ns: u64::from_be_bytes(*sent),
        })
    }
}

/// The two media tracks, each with its own sequence numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Track {
    Video = 0,
    Audio = 1,
}

/// What the first bytes of a tag body say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    /// AVC or AAC sequence header: no probe.
    SequenceHeader(Track),
    /// A media frame with its probe, `None` if the probe is missing or bad.
    Frame {
        track: Track,
        keyframe: bool,
        probe: Option<Probe>,
    },
    /// Script data (`onMetaData`, `|RtmpSampleAccess`).
    Script,
    /// Media this generator does not send (other codecs, end of sequence).
    Other,
}

/// FLV tag types (and RTMP message types) of media.
pub(crate) const TAG_AUDIO: u8 = 8;
pub(crate) const TAG_VIDEO: u8 = 9;
pub(crate) const TAG_SCRIPT: u8 = 18;

/// Reads a tag body's first bytes (at least [`BODY_PREFIX_BYTES`] when the
/// body is that long).
pub(crate) fn classify(tag_type: u8, prefix: &[u8]) -> BodyKind {
    match (tag_type, prefix) {
        (TAG_VIDEO, [head, packet, ..]) if head & 0x0f == 7 => {
            let keyframe = head >> 4 == 1;
            match packet {
                0 => BodyKind::SequenceHeader(Track::Video),
                1 => BodyKind::Frame {
                    track: Track::Video,
                    keyframe,
                    probe: prefix.get(VIDEO_PROBE_AT..).and_then(Probe::read),
                },
                _ => BodyKind::Other,
            }
        }
        (TAG_AUDIO, [head, packet, ..]) if head >> 4 == 10 => match packet {
            0 => BodyKind::SequenceHeader(Track::Audio),
            _ => BodyKind::Frame {
                track: Track::Audio,
                keyframe: false,
                probe: prefix.get(AUDIO_PROBE_AT..).and_then(Probe::read),
            },
        },
        (TAG_SCRIPT, _) => BodyKind::Script,
        _ => BodyKind::Other,
    }
}

/// Sizes and schedule of the synthetic stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamShape {
    pub(crate) fps: u32,
    /// A keyframe every this many video frames.
    pub(crate) gop_frames: u64,
    pub(crate) video_bps: u64,
    /// 0 without audio.
    pub(crate) audio_bps: u64,
    pub(crate) keyframe_bytes: usize,
    pub(crate) p_frame_bytes: usize,
    /// `None` without audio.
    pub(crate) audio_tag_bytes: Option<usize>,
}

impl StreamShape {
    /// The whole stream at `bitrate_bps` (audio, when on, takes
    /// [`AUDIO_BPS`] of it); a keyframe is `keyframe_ratio` P frames.
    pub(crate) fn new(
        bitrate_bps: u64,
        fps: u32,
        gop: Duration,
        keyframe_ratio: u32,
        audio: bool,
    ) -> Result<Self, String> {
        if fps == 0 || keyframe_ratio == 0 {
            return Err("--fps and --keyframe-ratio must be at least 1".to_owned());
        }
        let audio_bps = if audio { AUDIO_BPS } else { 0 };
        let video_bps = bitrate_bps.checked_sub(audio_bps).filter(|&v| v > 0).ok_or_else(|| {
            format!("--bitrate {bitrate_bps} leaves nothing for video after {audio_bps} bit/s of audio")
        })?;
        let gop_frames = ((gop.as_secs_f64() * f64::from(fps)).round() as u64).max(1);
        // Bytes of one GOP = video_bps / 8 * gop_frames / fps, shared by one
        // keyframe (ratio parts) and gop_frames - 1 P frames (one part each).
        let parts = u128::from(keyframe_ratio) + u128::from(gop_frames) - 1;
        let p_frame =
            u128::from(video_bps) * u128::from(gop_frames) / (8 * u128::from(fps) * parts);
        let p_frame_bytes = usize::try_from(p_frame).unwrap_or(usize::MAX);
        if p_frame_bytes < MIN_VIDEO_BODY_BYTES {
            return Err(format!(
                "at {video_bps} bit/s of video and {fps} fps a P frame would be {p_frame_bytes} \
                 bytes, below the {MIN_VIDEO_BODY_BYTES} a probe needs: raise --bitrate or lower --fps"
            ));
        }
        let keyframe_bytes = p_frame_bytes.saturating_mul(keyframe_ratio as usize);
        if keyframe_bytes > MAX_TAG_BYTES {
            return Err(format!(
                "a keyframe would be {keyframe_bytes} bytes, more than {MAX_TAG_BYTES}: lower \
                 --bitrate or --keyframe-ratio, or raise --fps"
            ));
        }
        let audio_tag_bytes = audio.then(|| {
            let bytes = AUDIO_BPS * AUDIO_SAMPLES_PER_TAG / (8 * AUDIO_SAMPLE_RATE);
            (bytes as usize).max(MIN_AUDIO_BODY_BYTES)
        });
        Ok(Self {
            fps,
            gop_frames,
            video_bps,
            audio_bps,
            keyframe_bytes,
            p_frame_bytes,
            audio_tag_bytes,
        })
    }

    /// Whether video frame `k` (0-based) is a keyframe.
    pub(crate) fn is_keyframe(&self, k: u64) -> bool {
        k % self.gop_frames == 0
    }

    /// Body bytes of video frame `k`.
    pub(crate) fn video_bytes(&self, k: u64) -> usize {
        if self.is_keyframe(k) {
            self.keyframe_bytes
        } else {
            self.p_frame_bytes
        }
    }

    /// When video frame `k` is due, ns after the stream's start.
    pub(crate) fn video_due_ns(&self, k: u64) -> u64 {
        let ns = u128::from(k) * 1_000_000_000 / u128::from(self.fps);
        u64::try_from(ns).unwrap_or(u64::MAX)
    }

    /// When audio frame `j` is due, ns after the stream's start.
    pub(crate) fn audio_due_ns(j: u64) -> u64 {
        let ns = u128::from(j) * u128::from(AUDIO_SAMPLES_PER_TAG) * 1_000_000_000
            / u128::from(AUDIO_SAMPLE_RATE);
        u64::try_from(ns).unwrap_or(u64::MAX)
    }

    /// One GOP, ns.
    pub(crate) fn gop_ns(&self) -> u64 {
        self.video_due_ns(self.gop_frames)
    }

    /// Media tags per second (video and audio).
    pub(crate) fn tags_per_s(&self) -> f64 {
        let audio = if self.audio_tag_bytes.is_some() {
            AUDIO_SAMPLE_RATE as f64 / AUDIO_SAMPLES_PER_TAG as f64
        } else {
            0.0
        };
        f64::from(self.fps) + audio
    }

    /// The `onMetaData` properties.
    pub(crate) fn metadata(&self) -> Vec<(&'static str, Amf0Value)> {
        let mut properties = vec![
            ("width", Amf0Value::from(WIDTH)),
            ("height", Amf0Value::from(HEIGHT)),
            ("framerate", Amf0Value::from(f64::from(self.fps))),
            ("videocodecid", Amf0Value::from(VIDEO_CODEC_ID)),
            (
                "videodatarate",
                Amf0Value::from(self.video_bps as f64 / 1000.0),
            ),
        ];
        if self.audio_tag_bytes.is_some() {
            properties.extend([
                ("audiocodecid", Amf0Value::from(AUDIO_CODEC_ID)),
                (
                    "audiodatarate",
                    Amf0Value::from(self.audio_bps as f64 / 1000.0),
                ),
                ("audiosamplerate", Amf0Value::from(AUDIO_SAMPLE_RATE as f64)),
                ("stereo", Amf0Value::from(true)),
            ]);
        }
        properties
    }
}

/// The AVC sequence header tag body.
pub(crate) fn avc_sequence_header() -> Vec<u8> {
    let mut body = vec![0x17, 0x00, 0x00, 0x00, 0x00];
    body.extend_from_slice(&AVC_DECODER_CONFIG);
    body
}

/// The AAC sequence header tag body.
pub(crate) fn aac_sequence_header() -> Vec<u8> {
    let mut body = vec![0xAF, 0x00];
    body.extend_from_slice(&AAC_SPECIFIC_CONFIG);
    body
}

/// Writes a video body of `bytes` (at least [`MIN_VIDEO_BODY_BYTES`]) into
/// `out`, replacing what it held.
pub(crate) fn write_video_body(out: &mut Vec<u8>, keyframe: bool, bytes: usize, probe: Probe) {
    let bytes = bytes.max(MIN_VIDEO_BODY_BYTES);
    out.clear();
    let (frame_type, nal_header) = if keyframe { (0x17, 0x65) } else { (0x27, 0x41) };
    out.extend_from_slice(&[frame_type, 0x01, 0x00, 0x00, 0x00]);
    let nalu_bytes = u32::try_from(bytes - 9).unwrap_or(u32::MAX);
    out.extend_from_slice(&nalu_bytes.to_be_bytes());
    out.push(nal_header);
    probe.write(out);
    out.resize(bytes, 0);
}

/// Writes an audio body of `bytes` (at least [`MIN_AUDIO_BODY_BYTES`]) into
/// `out`, replacing what it held.
pub(crate) fn write_audio_body(out: &mut Vec<u8>, bytes: usize, probe: Probe) {
    out.clear();
    out.extend_from_slice(&[0xAF, 0x01]);
    probe.write(out);
    out.resize(bytes.max(MIN_AUDIO_BODY_BYTES), 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_matches_the_bitrate() {
        let shape = StreamShape::new(2_000_000, 30, Duration::from_secs(2), 5, true).unwrap();
        assert_eq!(shape.gop_frames, 60);
        assert_eq!(shape.video_bps, 1_936_000);
        assert_eq!(shape.keyframe_bytes, 5 * shape.p_frame_bytes);
        // One GOP of video bytes, within rounding.
        let gop_bytes = shape.keyframe_bytes + 59 * shape.p_frame_bytes;
        let wanted = 1_936_000 / 8 * 2;
        assert!(
            gop_bytes <= wanted && wanted - gop_bytes < 64,
            "{gop_bytes}"
        );
        assert_eq!(shape.audio_tag_bytes, Some(170));
        assert_eq!(shape.gop_ns(), 2_000_000_000);
        assert_eq!(shape.video_bytes(0), shape.keyframe_bytes);
        assert_eq!(shape.video_bytes(61), shape.p_frame_bytes);
        assert!(shape.is_keyframe(120) && !shape.is_keyframe(119));
        assert_eq!(shape.video_due_ns(1), 33_333_333);
        assert_eq!(StreamShape::audio_due_ns(3), 64_000_000);
        assert!((shape.tags_per_s() - 76.875).abs() < 1e-9);

        let silent = StreamShape::new(500_000, 25, Duration::from_secs(1), 1, false).unwrap();
        assert_eq!((silent.gop_frames, silent.audio_tag_bytes), (25, None));
        assert_eq!(silent.p_frame_bytes, 500_000 / 8 / 25);
        assert_eq!(silent.metadata().len(), 5);
    }

    #[test]
    fn shapes_that_cannot_be_built() {
        assert!(StreamShape::new(64_000, 30, Duration::from_secs(2), 5, true).is_err());
        assert!(StreamShape::new(1_000, 30, Duration::from_secs(2), 5, false).is_err());
        assert!(StreamShape::new(2_000_000_000, 1, Duration::from_secs(2), 100, false).is_err());
        assert!(StreamShape::new(2_000_000, 0, Duration::from_secs(2), 5, true).is_err());
    }

    #[test]
    fn bodies_carry_their_probe() {
        let probe = Probe {
            seq: 7,
            sent_ns: 0x0102_0304_0506_0708,
        };
        let mut body = Vec::new();
        write_video_body(&mut body, true, 100, probe);
        assert_eq!(body.len(), 100);
        assert_eq!(&body[..10], &[0x17, 0x01, 0, 0, 0, 0, 0, 0, 91, 0x65]);
        assert_eq!(
            classify(TAG_VIDEO, &body[..BODY_PREFIX_BYTES]),
            BodyKind::Frame {
                track: Track::Video,
                keyframe: true,
                probe: Some(probe)
            }
        );
        write_video_body(&mut body, false, 10, probe);
        assert_eq!(body.len(), MIN_VIDEO_BODY_BYTES);
        assert_eq!((body[0], body[9]), (0x27, 0x41));
        assert!(matches!(
            classify(TAG_VIDEO, &body),
            BodyKind::Frame { keyframe: false, probe: Some(p), .. } if p == probe
        ));

        write_audio_body(&mut body, 170, probe);
        assert_eq!(body.len(), 170);
        assert_eq!(
            classify(TAG_AUDIO, &body[..BODY_PREFIX_BYTES]),
            BodyKind::Frame {
                track: Track::Audio,
                keyframe: false,
                probe: Some(probe)
            }
        );
        // A damaged magic, or a body cut before the probe ends.
        body[3] ^= 1;
        assert!(matches!(
            classify(TAG_AUDIO, &body),
            BodyKind::Frame { probe: None, .. }
        ));
        assert!(matches!(
            classify(TAG_AUDIO, &body[..10]),
            BodyKind::Frame { probe: None, .. }
        ));
    }

    #[test]
    fn headers_and_other_tags() {
        let avc = avc_sequence_header();
        assert_eq!(avc.len(), 45);
        assert_eq!(
            classify(TAG_VIDEO, &avc),
            BodyKind::SequenceHeader(Track::Video)
        );
        let aac = aac_sequence_header();
        assert_eq!(aac, [0xAF, 0x00, 0x11, 0x90]);
        assert_eq!(
            classify(TAG_AUDIO, &aac),
            BodyKind::SequenceHeader(Track::Audio)
        );
        assert_eq!(
            classify(TAG_SCRIPT, b"\x02\x00\x0aonMetaData"),
            BodyKind::Script
        );
        assert_eq!(classify(TAG_VIDEO, &[0x17, 0x02, 0, 0, 0]), BodyKind::Other);
        assert_eq!(classify(TAG_VIDEO, &[0x12, 0x01]), BodyKind::Other);
        assert_eq!(classify(TAG_AUDIO, &[0x2F]), BodyKind::Other);
        assert_eq!(classify(TAG_VIDEO, &[]), BodyKind::Other);
    }
}
