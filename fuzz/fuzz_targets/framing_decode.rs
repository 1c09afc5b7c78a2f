//! Builds a `Framer` from the first input bytes, then decodes the rest in a
//! loop. A frame must take at least one byte, no more than it was given, and
//! its payload must lie inside what it took. Whatever a frame delivers is
//! encoded again and must decode back to a frame of the encoded size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_protocols::framing::{ByteOrder, Decoded, Framer, FramingConfig, MAX_HEADER_BYTES};

/// Reads config bytes off the front of the input; missing bytes read as 0.
struct ConfigBytes<'a>(&'a [u8]);

impl ConfigBytes<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((first, rest)) => {
                self.0 = rest;
                *first
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }
}

/// Picks a config (valid or not: `Framer::new` must refuse the bad ones) and
/// a limit; returns them with the bytes left to decode.
fn config_from(data: &[u8]) -> (FramingConfig, u32, &[u8]) {
    let mut bytes = ConfigBytes(data);
    let max_frame_bytes = u32::from(bytes.u16());
    let config = match bytes.byte() % 3 {
        0 => {
            let len = usize::from(bytes.byte() % 70);
            // Latin-1 to UTF-8: bytes of 0x80 and above become two bytes.
            let delimiter = (0..len).map(|_| char::from(bytes.byte())).collect();
            FramingConfig::Delimiter {
                delimiter,
                strip_delimiter: bytes.byte() & 1 == 0,
            }
        }
        1 => FramingConfig::FixedLength {
            frame_bytes: u32::from(bytes.u16()),
        },
        _ => {
            let offset = u32::from(bytes.byte() % 80);
            let width = bytes.byte() % 10;
            let byte_order = if bytes.byte() & 1 == 0 {
                ByteOrder::BigEndian
            } else {
                ByteOrder::LittleEndian
            };
            let adjustment = i64::from(bytes.u16() as i16);
            let strip = bytes.byte();
            let strip_bytes = (strip & 0x80 != 0).then_some(u32::from(strip & 0x7F));
            FramingConfig::LengthField {
                offset,
                width,
                byte_order,
                adjustment,
                strip_bytes,
            }
        }
    };
    (config, max_frame_bytes, bytes.0)
}

fuzz_target!(|data: &[u8]| {
    let (config, max_frame_bytes, stream) = config_from(data);
    let Ok(framer) = Framer::new(&config, max_frame_bytes) else {
        return;
    };
    let limit = max_frame_bytes as usize + framer.trailer().len();

    let mut at = 0;
    while at < stream.len() {
        let rest = &stream[at..];
        let hint = framer.frame_len_hint(rest);
        match framer.decode(rest) {
            Ok(Decoded::Frame { frame, consumed }) => {
                assert!(consumed > 0, "frame consumed nothing");
                assert!(consumed <= rest.len(), "frame consumed past the input");
                assert!(consumed <= limit, "frame over max_frame_bytes");
                assert!(frame.payload.start <= frame.payload.end);
                assert!(frame.payload.end <= consumed, "payload past the frame");
                if let Some(hint) = hint {
                    assert_eq!(hint, consumed, "frame_len_hint disagrees with decode");
                }
                round_trip(&framer, &rest[frame.payload]);
                at += consumed;
            }
            Ok(Decoded::Incomplete) => {
                if let Some(hint) = hint {
                    assert!(hint > rest.len(), "incomplete though the hint fits");
                }
                break;
            }
            Err(_) => {
                assert_eq!(hint, None, "a hint for a refused frame");
                break;
            }
        }
    }
});

/// Encodes `payload`; when the encoder accepts it, the decoder must give
/// back one frame of exactly the encoded bytes.
fn round_trip(framer: &Framer, payload: &[u8]) {
    let mut encoded = Vec::new();
    if framer.encode_into(payload, &mut encoded).is_err() {
        return;
    }
    assert_eq!(framer.encoded_len(payload.len()), Ok(encoded.len()));
    let mut header = [0; MAX_HEADER_BYTES];
    let header_len = framer
        .encode_header(payload.len(), &mut header)
        .expect("header of an accepted payload");
    assert_eq!(&encoded[..header_len], &header[..header_len]);
    match framer.decode(&encoded) {
        Ok(Decoded::Frame { frame, consumed }) => {
            assert_eq!(consumed, encoded.len(), "encoded frame not decoded whole");
            assert!(frame.payload.end <= consumed);
        }
        other => panic!("encoded frame does not decode: {other:?}"),
    }
}
