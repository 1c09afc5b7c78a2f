//! The AMF0 decoder: depth-counted recursion over a borrowed buffer.

use super::{marker, Amf0Error, Amf0Limits, Amf0Value, Decoded};

/// Decodes one value at the start of `buf`.
///
/// `Ok(Frame { frame, consumed })` once the whole value is in `buf`,
/// `Ok(Incomplete)` while the buffer ends inside it. A value breaking a
/// limit or using an unsupported marker is an error as soon as it is seen.
pub fn decode(buf: &[u8], limits: &Amf0Limits) -> Result<Decoded<Amf0Value>, Amf0Error> {
    let mut reader = Reader::new(buf, limits);
    match reader.value(0) {
        Ok(frame) => Ok(Decoded::Frame {
            frame,
            consumed: reader.pos,
        }),
        Err(Amf0Error::Truncated) => Ok(Decoded::Incomplete),
        Err(error) => Err(error),
    }
}

/// Decodes every value of a message body (an RTMP command or data message,
/// an FLV script tag). The body is complete, so running out of bytes inside
/// a value is [`Amf0Error::Truncated`]. [`Amf0Limits::max_elements`] counts
/// the values of the whole body.
pub fn decode_all(buf: &[u8], limits: &Amf0Limits) -> Result<Vec<Amf0Value>, Amf0Error> {
    let mut reader = Reader::new(buf, limits);
    let mut values = Vec::new();
    while reader.pos < buf.len() {
        values.push(reader.value(0)?);
    }
    Ok(values)
}

/// A cursor over the input and the count of values built so far.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    elements: usize,
    limits: &'a Amf0Limits,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], limits: &'a Amf0Limits) -> Self {
        Self {
            buf,
            pos: 0,
            elements: 0,
            limits,
        }
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], Amf0Error> {
        let end = self.pos.checked_add(len).ok_or(Amf0Error::Truncated)?;
        let bytes = self.buf.get(self.pos..end).ok_or(Amf0Error::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Amf0Error> {
        let bytes = self.take(N)?;
        <[u8; N]>::try_from(bytes).map_err(|_| Amf0Error::Truncated)
    }

    fn u8(&mut self) -> Result<u8, Amf0Error> {
        let [byte] = self.array::<1>()?;
        Ok(byte)
    }

    fn u16(&mut self) -> Result<u16, Amf0Error> {
        self.array().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Result<u32, Amf0Error> {
        self.array().map(u32::from_be_bytes)
    }

    fn f64(&mut self) -> Result<f64, Amf0Error> {
        self.array().map(f64::from_be_bytes)
    }

    fn text(&mut self, len: usize) -> Result<String, Amf0Error> {
        let bytes = self.take(len)?;
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }

    fn short_text(&mut self) -> Result<String, Amf0Error> {
        let len = self.u16()?;
        self.text(usize::from(len))
    }

    fn long_text(&mut self) -> Result<String, Amf0Error> {
        let len = self.u32()?;
        // A length past the input is a cut value: the check is in `take`.
        let len = usize::try_from(len).map_err(|_| Amf0Error::Truncated)?;
        self.text(len)
    }

    /// Counts one more value against the limit.
    fn count(&mut self) -> Result<(), Amf0Error> {
        self.elements += 1;
        if self.elements > self.limits.max_elements {
            return Err(Amf0Error::TooManyElements {
                max: self.limits.max_elements,
            });
        }
        Ok(())
    }

    /// The depth of a container opened inside `depth` containers.
    fn enter(&self, depth: usize) -> Result<usize, Amf0Error> {
        let inner = depth + 1;
        if inner > self.limits.max_depth {
            return Err(Amf0Error::TooDeep {
                max: self.limits.max_depth,
            });
        }
        Ok(inner)
    }

    /// One value, inside `depth` containers.
    fn value(&mut self, depth: usize) -> Result<Amf0Value, Amf0Error> {
        let marker = self.u8()?;
        self.count()?;
        Ok(match marker {
            marker::NUMBER => Amf0Value::Number(self.f64()?),
            marker::BOOLEAN => Amf0Value::Boolean(self.u8()? != 0),
            marker::STRING => Amf0Value::String(self.short_text()?),
            marker::OBJECT => Amf0Value::Object(self.properties(self.enter(depth)?)?),
            marker::NULL => Amf0Value::Null,
            marker::UNDEFINED => Amf0Value::Undefined,
            marker::REFERENCE => Amf0Value::Reference(self.u16()?),
            marker::ECMA_ARRAY => {
                let inner = self.enter(depth)?;
                // The count is a hint; the end marker closes the array.
                let _hint = self.u32()?;
                Amf0Value::EcmaArray(self.properties(inner)?)
            }
            marker::OBJECT_END => return Err(Amf0Error::UnexpectedObjectEnd),
            marker::STRICT_ARRAY => {
                let inner = self.enter(depth)?;
                let count = usize::try_from(self.u32()?).unwrap_or(usize::MAX);
                let room = self.limits.max_elements.saturating_sub(self.elements);
                if count > room {
                    return Err(Amf0Error::TooManyElements {
                        max: self.limits.max_elements,
                    });
                }
                // Every value takes at least its marker byte.
                if count > self.remaining() {
                    return Err(Amf0Error::Truncated);
                }
                let mut items = Vec::with_capacity(count);
                for _ in 0..count {
                    items.push(self.value(inner)?);
                }
                Amf0Value::StrictArray(items)
            }
            marker::DATE => Amf0Value::Date {
                millis: self.f64()?,
                tz: i16::from_be_bytes(self.array()?),
            },
            marker::LONG_STRING => Amf0Value::LongString(self.long_text()?),
            marker::XML_DOCUMENT => Amf0Value::XmlDocument(self.long_text()?),
            marker::TYPED_OBJECT => {
                let inner = self.enter(depth)?;
                let class_name = self.short_text()?;
                Amf0Value::TypedObject {
                    class_name,
                    properties: self.properties(inner)?,
                }
            }
            other => return Err(Amf0Error::UnsupportedMarker(other)),
        })
    }

    /// Key/value pairs up to an empty key followed by the end marker; the
    /// values sit at `depth`.
    fn properties(&mut self, depth: usize) -> Result<Vec<(String, Amf0Value)>, Amf0Error> {
        let mut props = Vec::new();
        loop {
            let key_len = usize::from(self.u16()?);
            if key_len == 0 {
                let next = *self.buf.get(self.pos).ok_or(Amf0Error::Truncated)?;
                if next == marker::OBJECT_END {
                    self.pos += 1;
                    return Ok(props);
                }
            }
            let key = self.text(key_len)?;
            let value = self.value(depth)?;
            props.push((key, value));
        }
    }
}
