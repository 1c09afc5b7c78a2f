//! Script data: `@setDataFrame` stripping and the bounded `onMetaData` scan.

use super::*;

#[test]
fn set_data_frame_is_stripped() {
    let mut rtmp = vec![
        0x02, 0x00, 0x0D, // AMF0 string, 13 bytes
        b'@', b's', b'e', b't', b'D', b'a', b't', b'a', b'F', b'r', b'a', b'm', b'e',
    ];
    rtmp.extend_from_slice(METADATA_SCRIPT);
    assert!(!is_on_metadata(&rtmp));
    let flv = strip_set_data_frame(&rtmp);
    assert_eq!(flv, METADATA_SCRIPT);
    assert!(is_on_metadata(flv));
    // Already stripped, or something else: returned whole.
    assert_eq!(strip_set_data_frame(METADATA_SCRIPT), METADATA_SCRIPT);
    assert_eq!(
        strip_set_data_frame(b"\x02\x00\x0d@setData"),
        b"\x02\x00\x0d@setData"
    );
    assert!(!is_on_metadata(b"\x02\x00\x0aonCuePoint"));

    let scanned = scan_metadata(&rtmp).unwrap();
    assert_eq!(scanned, scan_metadata(flv).unwrap());
    assert_eq!(scanned.width, Some(1280.0));
    assert_eq!(scanned.height, Some(720.0));
    assert_eq!(scanned.videocodecid, Some(MetadataCodecId::Number(7.0)));
    assert_eq!(scanned.videocodecid.unwrap().legacy_id(), Some(7));
    assert_eq!(scanned.framerate, None);
    assert_eq!(scanned.audiocodecid, None);
}

/// An AMF0 property name.
fn name(key: &str) -> Vec<u8> {
    [&(key.len() as u16).to_be_bytes()[..], key.as_bytes()].concat()
}

/// An AMF0 number value.
fn number(value: f64) -> Vec<u8> {
    [&[0x00][..], &value.to_be_bytes()].concat()
}

#[test]
fn scan_skips_nested_values_and_reads_codec_strings() {
    let mut data = ON_METADATA.to_vec();
    data.push(0x03); // object
    data.extend(name("duration"));
    data.extend(number(0.0));
    data.extend(name("encoder"));
    data.extend([0x02, 0x00, 0x03, b'o', b'b', b's']); // string
    data.extend(name("videoTrackIdInfoMap"));
    data.push(0x03); // object { "1": { width: 1024, tags: [true, null, date] } }
    data.extend(name("1"));
    data.push(0x08); // ECMA array
    data.extend([0, 0, 0, 2]);
    data.extend(name("width"));
    data.extend(number(1024.0));
    data.extend(name("tags"));
    data.extend([0x0A, 0, 0, 0, 3]); // strict array of 3
    data.extend([0x01, 0x01, 0x05]); // true, null
    data.extend([0x0B, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // date
    data.extend([0, 0, 0x09, 0, 0, 0x09]); // two object ends
    data.extend(name("width"));
    data.extend(number(1920.0));
    data.extend(name("framerate"));
    data.extend(number(29.97));
    data.extend(name("videocodecid"));
    data.extend([0x02, 0x00, 0x04, b'h', b'v', b'c', b'1']);
    data.extend(name("audiocodecid"));
    data.extend(number(1_332_770_163.0)); // "Opus" as a number
    data.extend(name("videodatarate"));
    data.extend(number(2500.0));
    data.extend(name("audiodatarate"));
    data.extend(number(128.0));
    data.extend(name("height"));
    data.extend([0x02, 0x00, 0x01, b'x']); // a string where a number belongs
    data.extend(name("xml"));
    data.extend([0x0F, 0, 0, 0, 2, b'<', b'>']);
    data.extend(name("typed"));
    data.extend([0x10, 0, 1, b'T', 0, 0, 0x09]); // typed object "T", empty
    data.extend(name("long"));
    data.extend([0x0C, 0, 0, 0, 1, b'z']); // long string
    data.extend(name("nothing"));
    data.extend([0x06]); // undefined
    data.extend([0, 0, 0x09]); // object end

    let found = scan_metadata(&data).unwrap();
    assert_eq!(found.width, Some(1920.0)); // not the nested 1024
    assert_eq!(found.height, None);
    assert_eq!(found.framerate, Some(29.97));
    assert_eq!(found.videodatarate, Some(2500.0));
    assert_eq!(found.audiodatarate, Some(128.0));
    let video = found.videocodecid.unwrap();
    assert_eq!(video, MetadataCodecId::Text(b"hvc1"));
    assert_eq!((video.fourcc(), video.legacy_id()), (Some(*b"hvc1"), None));
    let audio = found.audiocodecid.unwrap();
    assert_eq!(audio.fourcc(), Some(*b"Opus"));
    assert_eq!(MetadataCodecId::Number(10.0).fourcc(), None);
    assert_eq!(MetadataCodecId::Number(7.5).legacy_id(), None);

    // Without the end marker, the data's end ends the object.
    let unterminated = &data[..data.len() - 3];
    assert_eq!(scan_metadata(unterminated), Ok(found));
}

#[test]
fn scan_errors() {
    assert_eq!(
        scan_metadata(b"\x02\x00\x0aonCuePoint"),
        Err(FlvError::BadScriptData("no onMetaData name"))
    );
    let mut data = ON_METADATA.to_vec();
    data.push(0x05);
    assert!(matches!(
        scan_metadata(&data),
        Err(FlvError::BadScriptData(_))
    ));
    // Cut inside a value.
    let cut = &METADATA_SCRIPT[..METADATA_SCRIPT.len() - 8];
    assert!(matches!(
        scan_metadata(cut),
        Err(FlvError::BadScriptData(_))
    ));
    // An AMF3 switch, a movie clip, an object end where a value belongs.
    for marker in [0x11, 0x04, 0x0E, 0x09, 0xFF] {
        let mut data = ON_METADATA.to_vec();
        data.push(0x03);
        data.extend(name("x"));
        data.push(marker);
        assert!(
            matches!(scan_metadata(&data), Err(FlvError::BadScriptData(_))),
            "{marker:#x}"
        );
    }
    // A strict array claiming 2^32 - 1 values ends with the data.
    let mut data = ON_METADATA.to_vec();
    data.push(0x03);
    data.extend(name("a"));
    data.extend([0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0x05, 0x05]);
    assert!(matches!(
        scan_metadata(&data),
        Err(FlvError::BadScriptData(_))
    ));
}

#[test]
fn scan_nesting_is_bounded() {
    let nested = |depth: usize| {
        let mut data = ON_METADATA.to_vec();
        data.push(0x03);
        for _ in 0..depth {
            data.extend(name("o"));
            data.push(0x03);
        }
        for _ in 0..=depth {
            data.extend([0, 0, 0x09]);
        }
        data
    };
    // The metadata's properties are at depth 1: an empty object can sit at
    // depth MAX_SCRIPT_DEPTH, a property inside it would be one too deep.
    assert!(scan_metadata(&nested(MAX_SCRIPT_DEPTH)).is_ok());
    assert_eq!(
        scan_metadata(&nested(MAX_SCRIPT_DEPTH + 1)),
        Err(FlvError::ScriptTooDeep)
    );
    assert_eq!(
        scan_metadata(&nested(100_000)),
        Err(FlvError::ScriptTooDeep)
    );
}
