//! AMF0 (Action Message Format 0), sans-IO.
//!
//! AMF0 is the value encoding of RTMP command and data messages (`connect`,
//! `publish`, `onStatus`, `@setDataFrame`/`onMetaData`) and of FLV script
//! tags. This module decodes it into an [`Amf0Value`] tree and encodes it
//! back, and offers writers that emit common values without building a tree.
//!
//! Invariant: decoding never trusts a count from the peer. Nesting is
//! limited by [`Amf0Limits::max_depth`], the number of values in one
//! decode by [`Amf0Limits::max_elements`], and nothing is reserved beyond
//! what the remaining input bytes could hold. A malformed or unsupported
//! input is an [`Amf0Error`], never a panic. [`decode`] reads one value and
//! says [`Decoded::Incomplete`] when the buffer ends inside it;
//! [`decode_all`] reads a whole message body, where a cut value is
//! [`Amf0Error::Truncated`].
//!
//! Strings are UTF-8 on the wire; invalid sequences are replaced with
//! U+FFFD rather than refused (encoders in the field are not all careful).
//!
//! ```
//! use shoal_protocols::amf0::{self, Amf0Limits, Amf0Value};
//!
//! // `connect` as a client sends it: name, transaction id, command object.
//! let mut body = Vec::new();
//! amf0::write_string(&mut body, "connect");
//! amf0::write_number(&mut body, 1.0);
//! amf0::write_object(
//!     &mut body,
//!     &[
//!         ("app", Amf0Value::from("live")),
//!         ("tcUrl", Amf0Value::from("rtmp://example.com/live")),
//!     ],
//! );
//!
//! let values = amf0::decode_all(&body, &Amf0Limits::default()).unwrap();
//! assert_eq!(values[0].as_str(), Some("connect"));
//! assert_eq!(values[1].as_f64(), Some(1.0));
//! assert_eq!(values[2].get("app").and_then(Amf0Value::as_str), Some("live"));
//!
//! // And back: encoding the decoded values gives the same bytes.
//! let mut again = Vec::new();
//! for value in &values {
//!     amf0::encode(value, &mut again);
//! }
//! assert_eq!(again, body);
//! ```

pub use crate::framing::Decoded;

mod decode;
mod encode;
#[cfg(test)]
mod tests;

pub use decode::{decode, decode_all};
pub use encode::{
    encode, write_boolean, write_ecma_array, write_key, write_null, write_number, write_object,
    write_object_end, write_object_start, write_string, write_undefined,
};

/// Type markers of AMF0 (AMF0 specification §2.1).
pub mod marker {
    /// IEEE-754 double, 8 bytes big-endian.
    pub const NUMBER: u8 = 0x00;
    /// One byte, zero is false.
    pub const BOOLEAN: u8 = 0x01;
    /// UTF-8 with a 16-bit length.
    pub const STRING: u8 = 0x02;
    /// Anonymous object: key/value pairs up to the end marker.
    pub const OBJECT: u8 = 0x03;
    /// Reserved, not supported.
    pub const MOVIECLIP: u8 = 0x04;
    /// `null`.
    pub const NULL: u8 = 0x05;
    /// `undefined`.
    pub const UNDEFINED: u8 = 0x06;
    /// A 16-bit index of an earlier complex value.
    pub const REFERENCE: u8 = 0x07;
    /// Associative array: a 32-bit count hint, then pairs up to the end marker.
    pub const ECMA_ARRAY: u8 = 0x08;
    /// Closes an object, ECMA array or typed object (after an empty key).
    pub const OBJECT_END: u8 = 0x09;
    /// Dense array: a 32-bit count, then that many values.
    pub const STRICT_ARRAY: u8 = 0x0A;
    /// Milliseconds since the epoch as a double, then a 16-bit time zone.
    pub const DATE: u8 = 0x0B;
    /// UTF-8 with a 32-bit length.
    pub const LONG_STRING: u8 = 0x0C;
    /// Not supported.
    pub const UNSUPPORTED: u8 = 0x0D;
    /// Reserved, not supported.
    pub const RECORDSET: u8 = 0x0E;
    /// XML text with a 32-bit length.
    pub const XML_DOCUMENT: u8 = 0x0F;
    /// An object with a class name.
    pub const TYPED_OBJECT: u8 = 0x10;
    /// Switch to AMF3, not supported inside AMF0.
    pub const AVMPLUS_OBJECT: u8 = 0x11;
}

/// One AMF0 value.
#[derive(Debug, Clone, PartialEq)]
pub enum Amf0Value {
    /// A number (all AMF0 numbers are doubles).
    Number(f64),
    /// A boolean.
    Boolean(bool),
    /// A string of at most 65535 bytes on the wire. Longer strings are
    /// encoded as long strings.
    String(String),
    /// An anonymous object, properties in wire order.
    Object(Vec<(String, Self)>),
    /// `null`.
    Null,
    /// `undefined`.
    Undefined,
    /// A reference to an earlier complex value, by index (not resolved).
    Reference(u16),
    /// An associative array, properties in wire order. The count on the wire
    /// is a hint only: decoding reads up to the end marker.
    EcmaArray(Vec<(String, Self)>),
    /// A dense array.
    StrictArray(Vec<Self>),
    /// A date.
    Date {
        /// Milliseconds since 1970-01-01 UTC.
        millis: f64,
        /// Time zone offset in minutes (reserved, should be 0).
        tz: i16,
    },
    /// A string with a 32-bit length.
    LongString(String),
    /// An XML document (text with a 32-bit length).
    XmlDocument(String),
    /// An object with a registered class name.
    TypedObject {
        /// The class name.
        class_name: String,
        /// Properties in wire order.
        properties: Vec<(String, Self)>,
    },
}

impl Amf0Value {
    /// The text of a string, long string or XML document.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) | Self::LongString(s) | Self::XmlDocument(s) => Some(s),
            _ => None,
        }
    }

    /// The value of a number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Self::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// The value of a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    /// The properties of an object, ECMA array or typed object.
    pub fn properties(&self) -> Option<&[(String, Self)]> {
        match self {
            Self::Object(props)
            | Self::EcmaArray(props)
            | Self::TypedObject {
                properties: props, ..
            } => Some(props),
            _ => None,
        }
    }

    /// The first property named `key` of an object, ECMA array or typed object.
    pub fn get(&self, key: &str) -> Option<&Self> {
        self.properties()?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// `null` or `undefined`.
    pub fn is_null(&self) -> bool {
        matches!(self, Self::Null | Self::Undefined)
    }
}

impl From<f64> for Amf0Value {
    fn from(value: f64) -> Self {
        Self::Number(value)
    }
}

impl From<bool> for Amf0Value {
    fn from(value: bool) -> Self {
        Self::Boolean(value)
    }
}

impl From<&str> for Amf0Value {
    fn from(value: &str) -> Self {
        Self::String(value.to_owned())
    }
}

impl From<String> for Amf0Value {
    fn from(value: String) -> Self {
        Self::String(value)
    }
}

/// Bounds on what one decode may build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amf0Limits {
    /// Most containers (objects, arrays) nested inside each other; a
    /// top-level object is at depth 1.
    pub max_depth: usize,
    /// Most values (at any depth, containers included) in one call of
    /// [`decode`] or [`decode_all`].
    pub max_elements: usize,
}

impl Default for Amf0Limits {
    fn default() -> Self {
        Self {
            max_depth: 32,
            max_elements: 4096,
        }
    }
}

/// Why AMF0 input was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Amf0Error {
    /// The input ends inside a value ([`decode`] reports this as
    /// [`Decoded::Incomplete`] instead).
    #[error("AMF0 input ends inside a value")]
    Truncated,
    /// A type marker this decoder does not support (movieclip, recordset,
    /// unsupported, AVM+ switch) or an unknown one.
    #[error("unsupported AMF0 type marker {0:#04x}")]
    UnsupportedMarker(u8),
    /// Containers nested deeper than [`Amf0Limits::max_depth`].
    #[error("AMF0 values nested deeper than {max}")]
    TooDeep {
        /// The limit in force.
        max: usize,
    },
    /// More values than [`Amf0Limits::max_elements`].
    #[error("more than {max} AMF0 values")]
    TooManyElements {
        /// The limit in force.
        max: usize,
    },
    /// An object-end marker where a value was expected.
    #[error("AMF0 object-end marker outside an object")]
    UnexpectedObjectEnd,
}
