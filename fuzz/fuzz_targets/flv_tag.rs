//! Reads the input as an FLV stream with an `FlvReader` (the first byte
//! picks whether a file header comes first and the tag size limit). An item
//! must take no more than it was given; a tag must respect the limit and be
//! exactly what `pack_tag` writes for its head and data. Every tag's data
//! goes through codec detection (audio and video parsers on any data, so
//! they see script bytes too) and the script-data functions, which must
//! report offsets within the data and never call a sequence header or a
//! command frame a keyframe.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_protocols::flv::{
    is_on_metadata, pack_tag, packed_tag_len, scan_metadata, strip_set_data_frame, AudioTagInfo,
    FlvItem, FlvReader, VideoTagInfo, FILE_HEADER_LEN,
};
use shoal_protocols::framing::Decoded;

fuzz_target!(|data: &[u8]| {
    let Some((&setup, stream)) = data.split_first() else {
        return;
    };
    let max_data = [0u32, 1, 5, 16, 255, 4096, 1 << 16, u32::MAX][usize::from(setup >> 1 & 7)];
    let mut reader = if setup & 1 == 0 {
        FlvReader::new(max_data)
    } else {
        FlvReader::tags_only(max_data)
    };

    let mut at = 0;
    while at < stream.len() {
        let rest = &stream[at..];
        let (item, consumed) = match reader.decode(rest) {
            Ok(Decoded::Frame { frame, consumed }) => (frame, consumed),
            Ok(Decoded::Incomplete) => break,
            Err(error) => {
                assert!(!error.to_string().is_empty());
                break;
            }
        };
        assert!(consumed <= rest.len(), "consumed past the input");
        match item {
            FlvItem::Header(_) => assert!(consumed >= FILE_HEADER_LEN),
            FlvItem::Tag(tag) => {
                assert!(tag.header.data_size <= max_data, "tag over the limit");
                assert_eq!(tag.data.len(), tag.header.data_size as usize);
                assert_eq!(consumed, packed_tag_len(tag.header.data_size));
                let mut again = Vec::new();
                pack_tag(&mut again, tag.header.kind, tag.header.timestamp, tag.data)
                    .expect("a decoded tag packs");
                assert_eq!(again[..], rest[..consumed], "re-packed tag differs");
                check_data(tag.data);
            }
        }
        at += consumed;
    }
    // The parsers on the raw input too, whatever the reader made of it.
    check_data(stream);
});

fn check_data(data: &[u8]) {
    if let Ok(info) = VideoTagInfo::parse(data) {
        assert!(info.body_offset <= data.len());
        if info.is_keyframe() {
            assert!(!info.is_sequence_header() && !info.is_command());
        }
        if info.is_sequence_header() {
            assert!(!info.is_end_of_sequence() && !info.is_command());
        }
    }
    if let Ok(info) = AudioTagInfo::parse(data) {
        assert!(info.body_offset <= data.len());
    }
    let stripped = strip_set_data_frame(data);
    assert!(data.ends_with(stripped));
    if scan_metadata(data).is_ok() {
        assert!(is_on_metadata(stripped));
    }
}
