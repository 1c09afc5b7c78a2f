//! Feeds arbitrary bytes to the MQTT decoder as a stream, in both protocol
//! versions, with a limit taken from the first input byte. A packet must
//! take at least its two-byte fixed header and no more than it was given
//! or the limit allows, and `read_fixed_header` must agree with it;
//! whatever decodes must encode (no longer than it was) and decode back to
//! the same packet.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_protocols::mqtt::{
    decode, encode, encode_publish_head, encoded_len, read_fixed_header, Decoded, Packet, Version,
};

fuzz_target!(|data: &[u8]| {
    let Some((&limit_byte, stream)) = data.split_first() else {
        return;
    };
    // Small limits exercise PacketTooLarge; 0xFF means effectively none.
    let max_packet_bytes = match limit_byte {
        0xFF => u32::MAX,
        n => u32::from(n) * 16 + 2,
    };
    for version in [Version::V311, Version::V5] {
        let mut at = 0;
        while at < stream.len() {
            let rest = &stream[at..];
            let header = read_fixed_header(rest, max_packet_bytes);
            match decode(rest, version, max_packet_bytes) {
                Ok(Decoded::Frame { frame, consumed }) => {
                    assert!(consumed >= 2, "packet shorter than a fixed header");
                    assert!(consumed <= rest.len(), "packet consumed past the input");
                    assert!(
                        consumed as u64 <= u64::from(max_packet_bytes),
                        "packet over max_packet_bytes"
                    );
                    match header {
                        Ok(Decoded::Frame { frame: header, .. }) => {
                            assert_eq!(header.total_len(), consumed, "header disagrees");
                        }
                        other => panic!("decoded, but the header reads {other:?}"),
                    }
                    round_trip(&frame, version, consumed);
                    at += consumed;
                }
                Ok(Decoded::Incomplete) => {
                    if let Ok(Decoded::Frame { frame: header, .. }) = header {
                        assert!(header.total_len() > rest.len(), "incomplete though whole");
                    }
                    assert!(header.is_ok(), "incomplete but the header is refused");
                    break;
                }
                Err(err) => {
                    let _ = err.reason_code();
                    if let Err(header_err) = header {
                        assert_eq!(header_err, err, "header error differs");
                    }
                    break;
                }
            }
        }
    }
});

/// A decoded packet encodes, no longer than it came, and decodes back equal.
fn round_trip(packet: &Packet<'_>, version: Version, consumed: usize) {
    let mut encoded = Vec::new();
    encode(packet, version, &mut encoded).expect("a decoded packet encodes");
    assert!(encoded.len() <= consumed, "re-encoded packet grew");
    assert_eq!(encoded_len(packet, version), Ok(encoded.len()));
    if let Packet::Publish(publish) = packet {
        let mut head = Vec::new();
        encode_publish_head(publish, version, &mut head).expect("head of an encodable PUBLISH");
        assert_eq!([&head[..], publish.payload].concat(), encoded);
    }
    match decode(&encoded, version, u32::MAX) {
        Ok(Decoded::Frame { frame, consumed }) => {
            assert_eq!(
                consumed,
                encoded.len(),
                "re-encoded packet not decoded whole"
            );
            assert_eq!(&frame, packet, "re-encoded packet decodes differently");
        }
        other => panic!("re-encoded packet does not decode: {other:?}"),
    }
}
