//! Messages in JSON, written straight into a byte buffer: the downlink
//! poll answer of the device API and the batches of webhook routes share
//! this form.
//!
//! ```text
//! {"topic":"devices/d1/up","payload":"21.5"}              UTF-8 payload
//! {"topic":"devices/d1/up","payload_base64":"/wCA"}       any other payload
//! ```

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};

/// Appends `text` as a JSON string: quoted, with `"`, `\` and control
/// characters escaped.
pub(crate) fn push_str(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(bytes.get(start..i).unwrap_or_default());
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(bytes.get(start..).unwrap_or_default());
    out.push(b'"');
}

/// Appends the payload member of a message object: `"payload":"…"` when
/// the payload is UTF-8, `"payload_base64":"…"` otherwise.
pub(crate) fn push_payload(out: &mut Vec<u8>, payload: &[u8]) {
    match std::str::from_utf8(payload) {
        Ok(text) => {
            out.extend_from_slice(b"\"payload\":");
            push_str(out, text);
        }
        Err(_) => {
            out.extend_from_slice(b"\"payload_base64\":\"");
            let at = out.len();
            out.resize(
                at + base64::encoded_len(payload.len(), true).unwrap_or(0),
                0,
            );
            let written = out
                .get_mut(at..)
                .and_then(|room| BASE64.encode_slice(payload, room).ok())
                .unwrap_or(0);
            out.truncate(at + written);
            out.push(b'"');
        }
    }
}

/// Appends `{"topic":…,"payload":…}`.
pub(crate) fn push_message(out: &mut Vec<u8>, topic: &str, payload: &[u8]) {
    out.extend_from_slice(b"{\"topic\":");
    push_str(out, topic);
    out.push(b',');
    push_payload(out, payload);
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(topic: &str, payload: &[u8]) -> serde_json::Value {
        let mut out = Vec::new();
        push_message(&mut out, topic, payload);
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn strings_round_trip_through_a_json_parser() {
        for text in [
            "",
            "plain",
            "q\"b\\s/",
            "nl\nc\r\tt",
            "\u{0}\u{1f}\u{7f}",
            "é→🦀",
        ] {
            let mut out = Vec::new();
            push_str(&mut out, text);
            let back: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, text);
        }
    }

    #[test]
    fn payloads_are_text_or_base64() {
        let m = message("devices/d1/up", b"21.5");
        assert_eq!(m["topic"], "devices/d1/up");
        assert_eq!(m["payload"], "21.5");
        assert!(m.get("payload_base64").is_none());
        let m = message("t", &[0xff, 0x00, 0x80]);
        assert_eq!(m["payload_base64"], "/wCA");
        assert!(m.get("payload").is_none());
        assert_eq!(message("t", b"")["payload"], "");
    }
}
