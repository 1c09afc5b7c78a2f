//! Writing messages: a builder for the messages Shoal sends, re-encoding of
//! decoded messages, Empty ACK/RST.

use super::block::BlockOption;
use super::header::{Code, Header, MessageType, Token};
use super::message::Message;
use super::option::{
    encode_uint, write_option_head, ContentFormat, OptionNumber, MAX_OPTION_VALUE_BYTES,
};
use super::CoapError;

/// Most options a [`MessageBuilder`] holds (they live in an array inside
/// it, not on the heap).
pub const MAX_BUILDER_OPTIONS: usize = 32;

/// The value of an option to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionValue<'a> {
    /// An unsigned integer, written in its shortest form.
    Uint(u32),
    /// Raw bytes (strings, opaque values, the empty value).
    Bytes(&'a [u8]),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OutOption<'a> {
    number: OptionNumber,
    value: OptionValue<'a>,
}

const NO_OPTION: OutOption<'static> = OutOption {
    number: OptionNumber(0),
    value: OptionValue::Bytes(&[]),
};

/// Builds a message to send. Options may be added in any order: they are
/// kept sorted by number, occurrences of the same number in the order they
/// were added. Values are borrowed, nothing is allocated until
/// [`encode`](Self::encode) appends to the caller's buffer.
///
/// ```
/// use shoal_protocols::coap::{decode, Code, MessageBuilder, MessageType, OptionNumber, Token};
///
/// // The first request of RFC 7252 Appendix A: CON [0x7d34] GET /temperature.
/// let mut request =
///     MessageBuilder::new(MessageType::Confirmable, Code::GET, 0x7d34, Token::EMPTY);
/// request.uri_path("/temperature")?;
/// let mut wire = Vec::new();
/// request.encode(&mut wire);
/// assert_eq!(wire, b"\x40\x01\x7d\x34\xbbtemperature");
/// let message = decode(&wire)?;
/// assert!(message.uri_path_is(&["temperature"]));
/// # Ok::<(), shoal_protocols::coap::CoapError>(())
/// ```
#[derive(Debug, Clone)]
pub struct MessageBuilder<'a> {
    mtype: MessageType,
    code: Code,
    message_id: u16,
    token: Token,
    options: [OutOption<'a>; MAX_BUILDER_OPTIONS],
    option_count: usize,
    payload: &'a [u8],
}

impl<'a> MessageBuilder<'a> {
    /// A message with no options and no payload.
    pub fn new(mtype: MessageType, code: Code, message_id: u16, token: Token) -> Self {
        Self {
            mtype,
            code,
            message_id,
            token,
            options: [NO_OPTION; MAX_BUILDER_OPTIONS],
            option_count: 0,
            payload: &[],
        }
    }

    /// The response to `request` with `code`: piggybacked on the ACK (same
    /// message id) for a CON, a NON with `non_message_id` otherwise. Same
    /// token.
    pub fn response(request: &Header, code: Code, non_message_id: u16) -> Self {
        match request.mtype {
            MessageType::Confirmable => Self::new(
                MessageType::Acknowledgement,
                code,
                request.message_id,
                request.token,
            ),
            _ => Self::new(
                MessageType::NonConfirmable,
                code,
                non_message_id,
                request.token,
            ),
        }
    }

    /// Changes the type (e.g. a separate response or a notification: CON or
    /// NON with a message id of Shoal's own).
    pub fn set_type(&mut self, mtype: MessageType, message_id: u16) -> &mut Self {
        self.mtype = mtype;
        self.message_id = message_id;
        self
    }

    /// The header of the message being built.
    pub fn header(&self) -> Header {
        Header {
            mtype: self.mtype,
            code: self.code,
            message_id: self.message_id,
            token: self.token,
        }
    }

    /// Adds an option with a raw value. Refused: more than
    /// [`MAX_BUILDER_OPTIONS`] options, a value over
    /// [`MAX_OPTION_VALUE_BYTES`].
    pub fn option(
        &mut self,
        number: OptionNumber,
        value: &'a [u8],
    ) -> Result<&mut Self, CoapError> {
        if value.len() > MAX_OPTION_VALUE_BYTES {
            return Err(CoapError::OptionTooLong {
                number,
                len: value.len(),
            });
        }
        self.insert(OutOption {
            number,
            value: OptionValue::Bytes(value),
        })
    }

    /// Adds an unsigned-integer option (written in its shortest form).
    pub fn option_uint(
        &mut self,
        number: OptionNumber,
        value: u32,
    ) -> Result<&mut Self, CoapError> {
        self.insert(OutOption {
            number,
            value: OptionValue::Uint(value),
        })
    }

    /// Adds Content-Format.
    pub fn content_format(&mut self, format: ContentFormat) -> Result<&mut Self, CoapError> {
        self.option_uint(OptionNumber::CONTENT_FORMAT, u32::from(format.0))
    }

    /// Adds Observe (a 24-bit sequence number in a notification; 0 or 1 in
    /// a request). Higher bits are dropped.
    pub fn observe(&mut self, value: u32) -> Result<&mut Self, CoapError> {
        self.option_uint(OptionNumber::OBSERVE, value & 0x00FF_FFFF)
    }

    /// Adds a Block1 or Block2 option.
    pub fn block(
        &mut self,
        number: OptionNumber,
        block: BlockOption,
    ) -> Result<&mut Self, CoapError> {
        self.option_uint(number, block.value())
    }

    /// Adds one Uri-Path option per segment of `path` (split on `/`; a
    /// leading `/` and empty segments are skipped). Not percent-decoded.
    pub fn uri_path(&mut self, path: &'a str) -> Result<&mut Self, CoapError> {
        for segment in path.split('/').filter(|segment| !segment.is_empty()) {
            self.option(OptionNumber::URI_PATH, segment.as_bytes())?;
        }
        Ok(self)
    }

    /// Adds one Uri-Query option (`name=value`).
    pub fn uri_query(&mut self, item: &'a str) -> Result<&mut Self, CoapError> {
        self.option(OptionNumber::URI_QUERY, item.as_bytes())
    }

    /// Sets the payload (written after the 0xFF marker when not empty).
    pub fn payload(&mut self, payload: &'a [u8]) -> &mut Self {
        self.payload = payload;
        self
    }

    /// Inserts after every option of the same or a lower number.
    fn insert(&mut self, option: OutOption<'a>) -> Result<&mut Self, CoapError> {
        let count = self.option_count;
        let at = self
            .options
            .get(..count)
            .unwrap_or_default()
            .iter()
            .position(|present| present.number > option.number)
            .unwrap_or(count);
        let Some(window) = self.options.get_mut(at..=count) else {
            return Err(CoapError::BuilderFull {
                limit: MAX_BUILDER_OPTIONS,
            });
        };
        if let Some(last) = window.last_mut() {
            *last = option;
        }
        window.rotate_right(1);
        self.option_count += 1;
        Ok(self)
    }

    /// Appends the message to `out`. An Empty code (0.00) writes the 4-byte
    /// header only, whatever was added.
    pub fn encode(&self, out: &mut Vec<u8>) {
        if self.code.is_empty() {
            encode_empty(out, self.mtype, self.message_id);
            return;
        }
        write_header(out, &self.header());
        let mut previous = 0u16;
        for option in self.options.get(..self.option_count).unwrap_or_default() {
            let delta = option.number.0 - previous;
            previous = option.number.0;
            match option.value {
                OptionValue::Uint(value) => {
                    let bytes = encode_uint(value);
                    write_option_head(out, delta, bytes.as_slice().len());
                    out.extend_from_slice(bytes.as_slice());
                }
                OptionValue::Bytes(value) => {
                    write_option_head(out, delta, value.len());
                    out.extend_from_slice(value);
                }
            }
        }
        write_payload(out, self.payload);
    }
}

fn write_header(out: &mut Vec<u8>, header: &Header) {
    out.push(0x40 | header.mtype.bits() << 4 | header.token.len() as u8);
    out.push(header.code.0);
    out.extend_from_slice(&header.message_id.to_be_bytes());
    out.extend_from_slice(header.token.as_bytes());
}

fn write_payload(out: &mut Vec<u8>, payload: &[u8]) {
    if !payload.is_empty() {
        out.push(0xFF);
        out.extend_from_slice(payload);
    }
}

/// Appends a decoded message again. The CoAP encoding has a single form for
/// every message, so this gives back the bytes that were decoded.
pub fn encode_message(message: &Message<'_>, out: &mut Vec<u8>) {
    if message.is_empty() {
        encode_empty(out, message.mtype, message.message_id);
        return;
    }
    write_header(out, &message.header());
    let mut previous = 0u16;
    for option in message.options() {
        write_option_head(out, option.number.0 - previous, option.value.len());
        out.extend_from_slice(option.value);
        previous = option.number.0;
    }
    write_payload(out, message.payload);
}

/// Appends an Empty message (4 bytes): an empty ACK (a CON accepted, the
/// response follows separately), an RST, or a CON ping.
pub fn encode_empty(out: &mut Vec<u8>, mtype: MessageType, message_id: u16) {
    out.push(0x40 | mtype.bits() << 4);
    out.push(Code::EMPTY.0);
    out.extend_from_slice(&message_id.to_be_bytes());
}

/// Appends an RST for `message_id` (rejects a message, RFC 7252 §4.2).
pub fn encode_reset(out: &mut Vec<u8>, message_id: u16) {
    encode_empty(out, MessageType::Reset, message_id);
}
