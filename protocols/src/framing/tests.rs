//! Byte vectors for each framing rule, annotated field by field. The
//! length-field cases follow the examples of Netty's
//! `LengthFieldBasedFrameDecoder` documentation.

use super::*;

const MAX: u32 = 1024;

fn length_field(offset: u32, width: u8, adjustment: i64, strip: Option<u32>) -> FramingConfig {
    FramingConfig::LengthField {
        offset,
        width,
        byte_order: ByteOrder::BigEndian,
        adjustment,
        strip_bytes: strip,
    }
}

fn framer(config: FramingConfig) -> Framer {
    Framer::new(&config, MAX).unwrap()
}

fn delimiter(delimiter: &str, strip_delimiter: bool) -> FramingConfig {
    FramingConfig::Delimiter {
        delimiter: delimiter.into(),
        strip_delimiter,
    }
}

/// Decodes `wire` expecting one frame; returns its payload and consumed.
fn frame_of<'a>(framer: &Framer, wire: &'a [u8]) -> (&'a [u8], usize) {
    match framer.decode(wire).unwrap() {
        Decoded::Frame { frame, consumed } => (&wire[frame.payload], consumed),
        Decoded::Incomplete => panic!("incomplete: {wire:02x?}"),
    }
}

/// Every strict prefix of a whole frame is `Incomplete`.
fn assert_prefixes_incomplete(framer: &Framer, wire: &[u8]) {
    for len in 0..wire.len() {
        assert_eq!(
            framer.decode(&wire[..len]),
            Ok(Decoded::Incomplete),
            "prefix of {len} bytes"
        );
    }
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

const HELLO: &[u8] = b"HELLO, WORLD"; // 12 bytes

// --- length field -----------------------------------------------------------

#[test]
fn two_byte_length_no_strip() {
    // offset 0, width 2, adjustment 0, strip 0
    // BEFORE (14 bytes)         AFTER (14 bytes)
    // | Length | Content        |  | Length | Content        |
    // | 0x000C | "HELLO, WORLD" |  | 0x000C | "HELLO, WORLD" |
    let f = framer(length_field(0, 2, 0, Some(0)));
    let wire = cat(&[&[0x00, 0x0C], HELLO]);
    assert_eq!(frame_of(&f, &wire), (&wire[..], 14));
    assert_eq!(f.frame_len_hint(&wire[..2]), Some(14));
    assert_prefixes_incomplete(&f, &wire);
    // The encoder writes the same header; the delivered frame is all of it.
    let mut out = Vec::new();
    f.encode_into(HELLO, &mut out).unwrap();
    assert_eq!(out, wire);
}

#[test]
fn two_byte_length_strip_header() {
    // offset 0, width 2, adjustment 0, strip 2 (also the default: None)
    // | Length | Content        |  ->  | Content        |
    // | 0x000C | "HELLO, WORLD" |      | "HELLO, WORLD" |
    let wire = cat(&[&[0x00, 0x0C], HELLO]);
    for strip in [Some(2), None] {
        let f = framer(length_field(0, 2, 0, strip));
        assert_eq!(frame_of(&f, &wire), (HELLO, 14));
        assert_prefixes_incomplete(&f, &wire);
    }
    assert_eq!(
        frame_of(&framer(FramingConfig::default()), &wire),
        (HELLO, 14)
    );
}

#[test]
fn length_counts_whole_frame() {
    // offset 0, width 2, adjustment -2, strip 0: the value includes the header
    // | Length | Content        |
    // | 0x000E | "HELLO, WORLD" |  (14 = 2 + 12)
    let f = framer(length_field(0, 2, -2, Some(0)));
    let wire = cat(&[&[0x00, 0x0E], HELLO]);
    assert_eq!(frame_of(&f, &wire), (&wire[..], 14));
    assert_prefixes_incomplete(&f, &wire);
    let mut out = vec![0; 14];
    assert_eq!(f.encode(HELLO, &mut out), Ok(14));
    assert_eq!(out, wire);
}

#[test]
fn header_prefix_before_length() {
    // offset 2, width 2, adjustment 0, strip 0
    // | Header 1 | Length | Content        |
    // |  0xCAFE  | 0x000C | "HELLO, WORLD" |  (16 bytes)
    let f = framer(length_field(2, 2, 0, Some(0)));
    let wire = cat(&[&[0xCA, 0xFE, 0x00, 0x0C], HELLO]);
    assert_eq!(frame_of(&f, &wire), (&wire[..], 16));
    assert_eq!(f.frame_len_hint(&wire[..3]), None);
    assert_eq!(f.frame_len_hint(&wire[..4]), Some(16));
    assert_prefixes_incomplete(&f, &wire);
    // The encoder writes the prefix as zeros.
    let mut header = [0xFF; MAX_HEADER_BYTES];
    assert_eq!(f.encode_header(12, &mut header), Ok(4));
    assert_eq!(header[..4], [0x00, 0x00, 0x00, 0x0C]);
}

#[test]
fn three_byte_length_refused() {
    // Netty's 3-byte example (| 0xCAFE | 0x00000C | ...) has no equivalent:
    // only 1, 2, 4 and 8-byte fields are read.
    let err = Framer::new(&length_field(2, 3, 0, Some(0)), MAX).unwrap_err();
    assert!(matches!(
        err,
        FramingError::InvalidConfig { field: "width", .. }
    ));
    assert_eq!(
        err.to_string(),
        "invalid framing config: `width` must be 1, 2, 4 or 8 bytes, got 3"
    );
}

#[test]
fn extra_header_after_length() {
    // offset 0, width 2, adjustment 2, strip 0: a 2-byte header follows the field
    // | Length | Header 1 | Content        |
    // | 0x000C |  0xCAFE  | "HELLO, WORLD" |  (16 bytes)
    let f = framer(length_field(0, 2, 2, Some(0)));
    let wire = cat(&[&[0x00, 0x0C, 0xCA, 0xFE], HELLO]);
    assert_eq!(frame_of(&f, &wire), (&wire[..], 16));
    assert_prefixes_incomplete(&f, &wire);
}

#[test]
fn strip_into_header_after_length() {
    // offset 1, width 2, adjustment 1, strip 3
    // | HDR1 | Length | HDR2 | Content        |  ->  | HDR2 | Content        |
    // | 0xCA | 0x000C | 0xFE | "HELLO, WORLD" |      | 0xFE | "HELLO, WORLD" |
    let f = framer(length_field(1, 2, 1, Some(3)));
    let wire = cat(&[&[0xCA, 0x00, 0x0C, 0xFE], HELLO]);
    assert_eq!(frame_of(&f, &wire), (&wire[3..], 16));
    assert_prefixes_incomplete(&f, &wire);
}

#[test]
fn length_counts_whole_frame_with_strip() {
    // offset 1, width 2, adjustment -3, strip 3: value 0x10 = whole frame
    // | HDR1 | Length | HDR2 | Content        |  ->  | HDR2 | Content        |
    // | 0xCA | 0x0010 | 0xFE | "HELLO, WORLD" |      | 0xFE | "HELLO, WORLD" |
    let f = framer(length_field(1, 2, -3, Some(3)));
    let wire = cat(&[&[0xCA, 0x00, 0x10, 0xFE], HELLO]);
    assert_eq!(frame_of(&f, &wire), (&wire[3..], 16));
    assert_prefixes_incomplete(&f, &wire);
}

#[test]
fn little_endian_four_bytes() {
    // offset 0, width 4 little endian, strip header
    // | Length (LE)         | Content        |
    // | 0x0C 0x00 0x00 0x00 | "HELLO, WORLD" |
    let config = FramingConfig::LengthField {
        offset: 0,
        width: 4,
        byte_order: ByteOrder::LittleEndian,
        adjustment: 0,
        strip_bytes: None,
    };
    let f = framer(config);
    let wire = cat(&[&[0x0C, 0x00, 0x00, 0x00], HELLO]);
    assert_eq!(frame_of(&f, &wire), (HELLO, 16));
    assert_prefixes_incomplete(&f, &wire);
    let mut out = Vec::new();
    f.encode_into(HELLO, &mut out).unwrap();
    assert_eq!(out, wire);
}

#[test]
fn one_byte_length() {
    // | Length | Content |
    // |  0x03  |  "abc"  |
    let f = framer(length_field(0, 1, 0, None));
    assert_eq!(frame_of(&f, b"\x03abcXYZ"), (&b"abc"[..], 4));
    // An empty frame is a frame: 1 byte consumed.
    assert_eq!(frame_of(&f, b"\x00"), (&b""[..], 1));
}

#[test]
fn eight_byte_length() {
    // offset 0, width 8 big endian, strip header
    // | Length                                  | Content        |
    // | 0x00 0x00 0x00 0x00 0x00 0x00 0x00 0x0C | "HELLO, WORLD" |
    let f = framer(length_field(0, 8, 0, None));
    let wire = cat(&[&[0, 0, 0, 0, 0, 0, 0, 0x0C], HELLO]);
    assert_eq!(frame_of(&f, &wire), (HELLO, 20));
    assert_prefixes_incomplete(&f, &wire);
    // A value above i64::MAX is simply too large.
    let huge = [0xFF; 8];
    assert_eq!(
        f.decode(&huge),
        Err(FramingError::FrameTooLarge {
            frame_bytes: u64::MAX,
            max_frame_bytes: MAX
        })
    );
    // Little endian, value 0x0C in the first byte.
    let le = FramingConfig::LengthField {
        offset: 0,
        width: 8,
        byte_order: ByteOrder::LittleEndian,
        adjustment: 0,
        strip_bytes: None,
    };
    let wire = cat(&[&[0x0C, 0, 0, 0, 0, 0, 0, 0], HELLO]);
    assert_eq!(frame_of(&framer(le), &wire), (HELLO, 20));
}

#[test]
fn oversize_refused_from_header_alone() {
    // | Length | (body never sent)
    // | 0x0401 |  1025 + 2 header > 1024
    let f = framer(length_field(0, 2, 0, None));
    let too_large = FramingError::FrameTooLarge {
        frame_bytes: 1027,
        max_frame_bytes: MAX,
    };
    assert_eq!(f.decode(&[0x04, 0x01]), Err(too_large.clone()));
    assert_eq!(f.frame_len_hint(&[0x04, 0x01]), None);
    // Exactly at the limit: 1022 + 2 = 1024 is fine.
    assert_eq!(f.frame_len_hint(&[0x03, 0xFE]), Some(1024));
    assert_eq!(f.decode(&[0x03, 0xFE]), Ok(Decoded::Incomplete));
    assert_eq!(
        too_large.to_string(),
        "frame of at least 1027 bytes exceeds the limit of 1024 bytes (max_frame_bytes)"
    );
}

#[test]
fn length_below_header() {
    // offset 0, width 2, adjustment -2: a value of 1 gives a 1-byte frame,
    // shorter than its 2-byte header.
    let f = framer(length_field(0, 2, -2, Some(0)));
    let err = f.decode(&[0x00, 0x01, 0xAA]).unwrap_err();
    assert_eq!(
        err,
        FramingError::LengthBelowHeader {
            frame_bytes: 1,
            header_bytes: 2
        }
    );
    assert!(err
        .to_string()
        .contains("shorter than its own 2-byte header"));
    // Value 2 is the header alone: an empty frame.
    assert_eq!(frame_of(&f, &[0x00, 0x02]), (&[0x00, 0x02][..], 2));
}

#[test]
fn strip_beyond_frame() {
    // width 1, strip 4: a frame of 1 + 2 = 3 bytes cannot lose 4.
    let f = framer(length_field(0, 1, 0, Some(4)));
    assert_eq!(
        f.decode(&[0x02, 0xAA, 0xBB]),
        Err(FramingError::StripBeyondFrame {
            strip_bytes: 4,
            frame_bytes: 3
        })
    );
    assert_eq!(frame_of(&f, &[0x03, 0xAA, 0xBB, 0xCC]), (&[][..], 4));
    assert_eq!(
        frame_of(&f, &[0x04, 0xAA, 0xBB, 0xCC, 0xDD]),
        (&[0xDD][..], 5)
    );
    // The encoder refuses what its own decoder would refuse.
    assert_eq!(
        f.encoded_len(2),
        Err(FramingError::StripBeyondFrame {
            strip_bytes: 4,
            frame_bytes: 3
        })
    );
}

#[test]
fn length_field_encoder_overflow() {
    let f = framer(length_field(0, 1, 0, None));
    // 256 does not fit one byte.
    let max = 1024;
    let f_big = Framer::new(&length_field(0, 1, 0, None), max).unwrap();
    assert_eq!(
        f_big.encoded_len(256),
        Err(FramingError::LengthFieldOverflow {
            value: 256,
            width: 1
        })
    );
    assert_eq!(f.encoded_len(255), Ok(256));
    // adjustment 5: the value is payload - 5, negative for a 3-byte payload.
    let f = framer(length_field(0, 1, 5, None));
    let err = f.encode(b"abc", &mut [0; 8]).unwrap_err();
    assert_eq!(
        err,
        FramingError::LengthFieldOverflow {
            value: -2,
            width: 1
        }
    );
    assert_eq!(
        err.to_string(),
        "length value -2 does not fit an unsigned 1-byte length field"
    );
}

#[test]
fn length_field_encoder_limits() {
    let f = Framer::new(&length_field(0, 2, 0, None), 10).unwrap();
    assert_eq!(f.encoded_len(8), Ok(10));
    assert_eq!(
        f.encoded_len(9),
        Err(FramingError::FrameTooLarge {
            frame_bytes: 11,
            max_frame_bytes: 10
        })
    );
    assert_eq!(
        f.encode(b"abc", &mut [0; 4]),
        Err(FramingError::BufferTooSmall { needed: 5, got: 4 })
    );
    assert_eq!(
        f.encode_header(3, &mut [0; 1]),
        Err(FramingError::BufferTooSmall { needed: 2, got: 1 })
    );
    let mut out = vec![7];
    assert!(f.encode_into(&[0; 9], &mut out).is_err());
    assert_eq!(out, [7], "failed encode_into leaves the buffer as it was");
}

#[test]
fn length_field_config_checks() {
    let field = |config: FramingConfig, max: u32| match Framer::new(&config, max) {
        Err(FramingError::InvalidConfig { field, .. }) => field,
        other => panic!("expected InvalidConfig, got {other:?}"),
    };
    assert_eq!(field(length_field(0, 0, 0, None), MAX), "width");
    assert_eq!(field(length_field(0, 16, 0, None), MAX), "width");
    assert_eq!(field(length_field(65, 2, 0, None), MAX), "offset");
    assert!(Framer::new(&length_field(64, 8, 0, None), 72).is_ok());
    // header of 4 bytes with a 3-byte limit
    assert_eq!(field(length_field(2, 2, 0, None), 3), "offset");
    // adjustment so negative no value reaches the header
    assert_eq!(field(length_field(0, 1, -256, None), MAX), "adjustment");
    assert!(Framer::new(&length_field(0, 1, -255, Some(0)), MAX).is_ok());
    // adjustment so large every frame is over the limit
    assert_eq!(field(length_field(0, 2, 1023, None), MAX), "adjustment");
    assert!(Framer::new(&length_field(0, 2, 1022, None), MAX).is_ok());
    // strip beyond the largest valid frame: width 1 gives at most 256 bytes
    assert_eq!(field(length_field(0, 1, 0, Some(257)), MAX), "strip_bytes");
    assert!(Framer::new(&length_field(0, 1, 0, Some(256)), MAX).is_ok());
    assert_eq!(field(length_field(0, 4, 0, Some(1025)), MAX), "strip_bytes");
    // stripping into the payload is allowed, as in Netty
    assert!(Framer::new(&length_field(0, 2, 0, Some(5)), MAX).is_ok());
    assert_eq!(field(FramingConfig::default(), 0), "max_frame_bytes");
    let err = Framer::new(&length_field(0, 2, 1023, None), MAX).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid framing config: `adjustment` of 1023 leaves no valid frame: with a 2-byte \
         field at offset 0, frames would be 1025 to 66560 bytes, but must be 2 (the header) \
         to 1024 (max_frame_bytes)"
    );
}

// --- delimiter --------------------------------------------------------------

#[test]
fn newline_stripped() {
    // | "temp=21" | "\n" | "temp=22" | "\n" |
    let f = framer(delimiter("\n", true));
    let wire = b"temp=21\ntemp=22\n";
    assert_eq!(frame_of(&f, wire), (&b"temp=21"[..], 8));
    assert_eq!(frame_of(&f, &wire[8..]), (&b"temp=22"[..], 8));
    assert_prefixes_incomplete(&f, &wire[..8]);
    assert_eq!(f.frame_len_hint(wire), None);
    // An empty line is an empty frame.
    assert_eq!(frame_of(&f, b"\nx"), (&b""[..], 1));
}

#[test]
fn newline_kept() {
    let f = framer(delimiter("\n", false));
    assert_eq!(frame_of(&f, b"temp=21\nrest"), (&b"temp=21\n"[..], 8));
}

#[test]
fn crlf_stripped_and_kept() {
    // | "OK" | "\r\n" |   a lone "\r" or "\n" does not end a frame
    let wire = b"a\rb\nc\r\nnext";
    let f = framer(delimiter("\r\n", true));
    assert_eq!(frame_of(&f, wire), (&b"a\rb\nc"[..], 7));
    assert_prefixes_incomplete(&f, &wire[..7]);
    let f = framer(delimiter("\r\n", false));
    assert_eq!(frame_of(&f, wire), (&b"a\rb\nc\r\n"[..], 7));
    // "\r\r\n": the first occurrence starts at the second "\r".
    assert_eq!(frame_of(&f, b"\r\r\n"), (&b"\r\r\n"[..], 3));
}

#[test]
fn delimiter_first_occurrence_overlapping() {
    // delimiter "aab" in "aaab": the first match starts at 1
    let f = framer(delimiter("aab", true));
    assert_eq!(frame_of(&f, b"aaab"), (&b"a"[..], 4));
    assert_eq!(f.decode(b"aaa"), Ok(Decoded::Incomplete));
}

#[test]
fn delimiter_limit_applies_to_payload() {
    let max = 4;
    let f = Framer::new(&delimiter("\r\n", true), max).unwrap();
    // 4 payload bytes + delimiter: fine.
    assert_eq!(frame_of(&f, b"abcd\r\n"), (&b"abcd"[..], 6));
    // 5 bytes seen with no delimiter, but "abcd\r" may still become a frame.
    assert_eq!(f.decode(b"abcd\r"), Ok(Decoded::Incomplete));
    // 6 bytes with no delimiter starting at or before 4: refused.
    let too_large = Err(FramingError::FrameTooLarge {
        frame_bytes: 5,
        max_frame_bytes: 4,
    });
    assert_eq!(f.decode(b"abcde\r"), too_large);
    assert_eq!(f.decode(b"abcde\r\n"), too_large);
    // Encoder: the same limit on the payload.
    assert_eq!(f.encoded_len(4), Ok(6));
    assert_eq!(
        f.encoded_len(5),
        Err(FramingError::FrameTooLarge {
            frame_bytes: 5,
            max_frame_bytes: 4
        })
    );
}

#[test]
fn delimiter_encoder() {
    let f = framer(delimiter("\r\n", true));
    assert_eq!(f.trailer(), b"\r\n");
    let mut out = [0; 8];
    assert_eq!(f.encode(b"hi", &mut out), Ok(4));
    assert_eq!(&out[..4], b"hi\r\n");
    assert_eq!(f.encode_header(2, &mut []), Ok(0));
    assert_eq!(
        f.encode(b"a\r\nb", &mut out),
        Err(FramingError::PayloadContainsDelimiter)
    );
    // Payload ending with "\r" is fine: "x\r\r\n" decodes back to "x\r".
    assert_eq!(f.encode(b"x\r", &mut out), Ok(4));
    assert_eq!(frame_of(&f, &out[..4]), (&b"x\r"[..], 4));
    // Delimiter "aba": payload "ab" + "aba" = "ababa" would match at 0.
    let f = framer(delimiter("aba", true));
    assert_eq!(
        f.encode(b"ab", &mut out),
        Err(FramingError::PayloadContainsDelimiter)
    );
    assert_eq!(f.encode(b"b", &mut out), Ok(4));
    assert_eq!(frame_of(&f, &out[..4]), (&b"b"[..], 4));
    assert_eq!(
        FramingError::PayloadContainsDelimiter.to_string(),
        "payload contains the frame delimiter and would arrive as more than one frame"
    );
    assert_eq!(
        f.encode(b"b", &mut [0; 3]),
        Err(FramingError::BufferTooSmall { needed: 4, got: 3 })
    );
}

#[test]
fn delimiter_config_checks() {
    let err = Framer::new(&delimiter("", true), MAX).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid framing config: `delimiter` must not be empty"
    );
    let long = "x".repeat(65);
    assert!(matches!(
        Framer::new(&delimiter(&long, true), MAX),
        Err(FramingError::InvalidConfig {
            field: "delimiter",
            ..
        })
    ));
    assert!(Framer::new(&delimiter(&long[..64], true), MAX).is_ok());
}

// --- fixed length -----------------------------------------------------------

#[test]
fn fixed_length() {
    // | frame 1 (4) | frame 2 (4) |
    // | 01 02 03 04 | 05 06 07 08 |
    let f = framer(FramingConfig::FixedLength { frame_bytes: 4 });
    let wire = [1, 2, 3, 4, 5, 6, 7, 8];
    assert_eq!(frame_of(&f, &wire), (&wire[..4], 4));
    assert_eq!(frame_of(&f, &wire[4..]), (&wire[4..], 4));
    assert_prefixes_incomplete(&f, &wire[..4]);
    assert_eq!(f.frame_len_hint(&[]), Some(4));
    assert_eq!(f.encoded_len(4), Ok(4));
    assert_eq!(f.trailer(), b"");
    let mut out = [0; 4];
    assert_eq!(f.encode(&wire[..4], &mut out), Ok(4));
    assert_eq!(out, [1, 2, 3, 4]);
    let err = f.encode(&wire[..3], &mut out).unwrap_err();
    assert_eq!(
        err,
        FramingError::PayloadLength {
            expected: 4,
            got: 3
        }
    );
    assert_eq!(
        err.to_string(),
        "fixed-length framing needs payloads of exactly 4 bytes, got 3"
    );
}

#[test]
fn fixed_length_config_checks() {
    let fixed = |frame_bytes| FramingConfig::FixedLength { frame_bytes };
    assert!(Framer::new(&fixed(0), MAX).is_err());
    assert!(Framer::new(&fixed(MAX + 1), MAX).is_err());
    let f = Framer::new(&fixed(MAX), MAX).unwrap();
    assert_eq!(f.max_frame_bytes(), MAX);
    assert_eq!(
        Framer::new(&fixed(2000), MAX).unwrap_err().to_string(),
        "invalid framing config: `frame_bytes` is 2000, more than the listener's \
         max_frame_bytes (1024)"
    );
}

// --- messages and config ----------------------------------------------------

#[test]
fn remaining_messages() {
    assert_eq!(
        FramingError::StripBeyondFrame {
            strip_bytes: 4,
            frame_bytes: 3
        }
        .to_string(),
        "cannot strip 4 bytes (strip_bytes) from a frame of 3 bytes"
    );
    assert_eq!(
        FramingError::BufferTooSmall { needed: 5, got: 4 }.to_string(),
        "output buffer of 4 bytes is too small, 5 bytes are needed"
    );
}

#[derive(Debug, serde::Deserialize)]
struct Listener {
    framing: FramingConfig,
}

fn parse(toml_text: &str) -> Result<FramingConfig, toml::de::Error> {
    toml::from_str::<Listener>(toml_text).map(|l| l.framing)
}

#[test]
fn toml_config() {
    assert_eq!(
        parse(r#"framing = { kind = "length_field", width = 2 }"#).unwrap(),
        FramingConfig::default()
    );
    assert_eq!(
        parse(
            "framing = { kind = \"length_field\", offset = 1, width = 4, \
             byte_order = \"little_endian\", adjustment = -3, strip_bytes = 0 }"
        )
        .unwrap(),
        FramingConfig::LengthField {
            offset: 1,
            width: 4,
            byte_order: ByteOrder::LittleEndian,
            adjustment: -3,
            strip_bytes: Some(0),
        }
    );
    assert_eq!(
        parse(r#"framing = { kind = "delimiter", delimiter = "\r\n" }"#).unwrap(),
        delimiter("\r\n", true)
    );
    assert_eq!(
        parse("[framing]\nkind = \"delimiter\"\ndelimiter = \"\\n\"\nstrip_delimiter = false")
            .unwrap(),
        delimiter("\n", false)
    );
    assert_eq!(
        parse(r#"framing = { kind = "fixed_length", frame_bytes = 16 }"#).unwrap(),
        FramingConfig::FixedLength { frame_bytes: 16 }
    );
    assert!(parse(r#"framing = { kind = "fixed_length", frame_bytes = 16, width = 2 }"#).is_err());
    assert!(parse(r#"framing = { kind = "length_field" }"#).is_err());
    assert!(
        parse(r#"framing = { kind = "length_field", width = 2, byte_order = "middle" }"#).is_err()
    );
}

#[test]
fn encode_header_for_refuses_a_payload_that_would_split() {
    let framer = Framer::new(
        &FramingConfig::Delimiter {
            delimiter: "\n".into(),
            strip_delimiter: true,
        },
        64,
    )
    .unwrap();
    let mut header = [0u8; MAX_HEADER_BYTES];
    assert_eq!(framer.encode_header_for(b"one line", &mut header), Ok(0));
    assert_eq!(
        framer.encode_header_for(b"two\nlines", &mut header),
        Err(FramingError::PayloadContainsDelimiter)
    );
    let lf = Framer::new(&FramingConfig::default(), 64).unwrap();
    assert_eq!(lf.encode_header_for(b"abc", &mut header), Ok(2));
    assert_eq!(&header[..2], &[0, 3]);
}
