//! The AMF0 encoder, and writers that emit values without building a tree.

use super::{marker, Amf0Value};

/// Appends `value` to `out`.
///
/// A [`Amf0Value::String`] over 65535 bytes is written as a long string; a
/// property key over 65535 bytes is cut at the last character boundary
/// within that size (AMF0 cannot carry longer keys).
pub fn encode(value: &Amf0Value, out: &mut Vec<u8>) {
    match value {
        Amf0Value::Number(n) => write_number(out, *n),
        Amf0Value::Boolean(b) => write_boolean(out, *b),
        Amf0Value::String(s) => write_string(out, s),
        Amf0Value::Object(props) => {
            write_object_start(out);
            write_properties(out, props.iter().map(|(k, v)| (k.as_str(), v)));
        }
        Amf0Value::Null => write_null(out),
        Amf0Value::Undefined => write_undefined(out),
        Amf0Value::Reference(index) => {
            out.push(marker::REFERENCE);
            out.extend_from_slice(&index.to_be_bytes());
        }
        Amf0Value::EcmaArray(props) => {
            write_ecma_array_start(out, props.len());
            write_properties(out, props.iter().map(|(k, v)| (k.as_str(), v)));
        }
        Amf0Value::StrictArray(items) => {
            out.push(marker::STRICT_ARRAY);
            out.extend_from_slice(&count_u32(items.len()).to_be_bytes());
            for item in items {
                encode(item, out);
            }
        }
        Amf0Value::Date { millis, tz } => {
            out.push(marker::DATE);
            out.extend_from_slice(&millis.to_be_bytes());
            out.extend_from_slice(&tz.to_be_bytes());
        }
        Amf0Value::LongString(s) => write_long_text(out, marker::LONG_STRING, s),
        Amf0Value::XmlDocument(s) => write_long_text(out, marker::XML_DOCUMENT, s),
        Amf0Value::TypedObject {
            class_name,
            properties,
        } => {
            out.push(marker::TYPED_OBJECT);
            write_key(out, class_name);
            write_properties(out, properties.iter().map(|(k, v)| (k.as_str(), v)));
        }
    }
}

/// Appends a number.
pub fn write_number(out: &mut Vec<u8>, value: f64) {
    out.push(marker::NUMBER);
    out.extend_from_slice(&value.to_be_bytes());
}

/// Appends a boolean.
pub fn write_boolean(out: &mut Vec<u8>, value: bool) {
    out.push(marker::BOOLEAN);
    out.push(u8::from(value));
}

/// Appends a string (a long string if it is over 65535 bytes).
pub fn write_string(out: &mut Vec<u8>, value: &str) {
    match u16::try_from(value.len()) {
        Ok(len) => {
            out.push(marker::STRING);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(value.as_bytes());
        }
        Err(_) => write_long_text(out, marker::LONG_STRING, value),
    }
}

/// Appends `null`.
pub fn write_null(out: &mut Vec<u8>) {
    out.push(marker::NULL);
}

/// Appends `undefined`.
pub fn write_undefined(out: &mut Vec<u8>) {
    out.push(marker::UNDEFINED);
}

/// Opens an anonymous object: follow with [`write_key`] and a value for each
/// property, then [`write_object_end`].
pub fn write_object_start(out: &mut Vec<u8>) {
    out.push(marker::OBJECT);
}

/// Appends a property key (a 16-bit length and UTF-8, no marker), cut at
/// 65535 bytes on a character boundary.
pub fn write_key(out: &mut Vec<u8>, key: &str) {
    let mut end = key.len().min(usize::from(u16::MAX));
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    let bytes = key.as_bytes().get(..end).unwrap_or_default();
    out.extend_from_slice(&count_u16(bytes.len()).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Closes an object, ECMA array or typed object: an empty key and the
/// object-end marker.
pub fn write_object_end(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0, 0, marker::OBJECT_END]);
}

/// Appends an anonymous object with these properties.
pub fn write_object(out: &mut Vec<u8>, properties: &[(&str, Amf0Value)]) {
    write_object_start(out);
    write_properties(out, properties.iter().map(|(k, v)| (*k, v)));
}

/// Appends an ECMA array (e.g. the body of `onMetaData`) with these
/// properties.
pub fn write_ecma_array(out: &mut Vec<u8>, properties: &[(&str, Amf0Value)]) {
    write_ecma_array_start(out, properties.len());
    write_properties(out, properties.iter().map(|(k, v)| (*k, v)));
}

fn write_ecma_array_start(out: &mut Vec<u8>, count: usize) {
    out.push(marker::ECMA_ARRAY);
    out.extend_from_slice(&count_u32(count).to_be_bytes());
}

/// The properties, then the end of the container.
fn write_properties<'v>(out: &mut Vec<u8>, props: impl Iterator<Item = (&'v str, &'v Amf0Value)>) {
    for (key, value) in props {
        write_key(out, key);
        encode(value, out);
    }
    write_object_end(out);
}

fn write_long_text(out: &mut Vec<u8>, marker: u8, value: &str) {
    // Longer than 4 GiB cannot be carried; cut rather than lie about the length.
    let bytes = value
        .as_bytes()
        .get(..value.len().min(u32::MAX as usize))
        .unwrap_or_default();
    out.push(marker);
    out.extend_from_slice(&count_u32(bytes.len()).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn count_u32(count: usize) -> u32 {
    u32::try_from(count).unwrap_or(u32::MAX)
}

fn count_u16(count: usize) -> u16 {
    u16::try_from(count).unwrap_or(u16::MAX)
}
