//! The message layer of RFC 7252 §3: header, token, options, payload.

use super::block::BlockOption;
use super::header::{Code, Header, MessageType, Token, MAX_TOKEN_BYTES};
use super::option::{decode_uint, read_option, ContentFormat, OptionNumber, Options, Step};
use super::{BadOptionReason, CoapError, FormatError};

/// Default for [`DecodeLimits::max_options`].
pub const DEFAULT_MAX_OPTIONS: usize = 64;

/// Limits the decoder applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Most options in a message (default [`DEFAULT_MAX_OPTIONS`], 64).
    pub max_options: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_options: DEFAULT_MAX_OPTIONS,
        }
    }
}

/// A decoded message, borrowing the datagram.
///
/// Its options were checked for format errors by the decoder; whether the
/// critical ones are understood is [`check_options`](Self::check_options).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    /// CON, NON, ACK or RST.
    pub mtype: MessageType,
    /// Method or response code.
    pub code: Code,
    /// The message id.
    pub message_id: u16,
    /// The token.
    pub token: Token,
    /// The payload (empty when there is none).
    pub payload: &'a [u8],
    options: &'a [u8],
    option_count: usize,
}

/// Decodes one datagram with the default [`DecodeLimits`].
pub fn decode(datagram: &[u8]) -> Result<Message<'_>, CoapError> {
    decode_with(datagram, &DecodeLimits::default())
}

/// Decodes one datagram (a whole CoAP message: UDP carries one per
/// datagram).
///
/// Refused: fewer than 4 bytes ([`CoapError::TooShort`]), a version other
/// than 1 ([`CoapError::UnknownVersion`]), every message format error of
/// RFC 7252 §3 and §4 ([`CoapError::Format`]: token length 9-15, a token or
/// option past the end, a reserved 15 nibble, a payload marker with no
/// payload, an option number past 65535, an Empty message with bytes after
/// its header, a reserved code class, a non-Empty RST, a request in an ACK),
/// and more options than `limits.max_options`
/// ([`CoapError::TooManyOptions`]). [`CoapError::reaction`] says how to
/// answer each.
pub fn decode_with<'a>(
    datagram: &'a [u8],
    limits: &DecodeLimits,
) -> Result<Message<'a>, CoapError> {
    let Some([first, code, id_high, id_low]) = datagram.first_chunk::<4>().copied() else {
        return Err(CoapError::TooShort {
            len: datagram.len(),
        });
    };
    let version = first >> 6;
    if version != 1 {
        return Err(CoapError::UnknownVersion { version });
    }
    let mut header = Header {
        mtype: MessageType::from_bits(first >> 4),
        code: Code(code),
        message_id: u16::from_be_bytes([id_high, id_low]),
        token: Token::EMPTY,
    };
    let format = |header: Header, kind: FormatError| CoapError::Format { header, kind };
    let token_len = usize::from(first & 0x0F);
    if token_len > MAX_TOKEN_BYTES {
        return Err(format(header, FormatError::TokenLength(first & 0x0F)));
    }
    if header.code.is_empty() {
        if datagram.len() != 4 || token_len != 0 {
            return Err(format(header, FormatError::EmptyWithContent));
        }
        return Ok(Message {
            mtype: header.mtype,
            code: header.code,
            message_id: header.message_id,
            token: Token::EMPTY,
            payload: &[],
            options: &[],
            option_count: 0,
        });
    }
    let Some(token) = datagram.get(4..4 + token_len).and_then(Token::new) else {
        return Err(format(header, FormatError::Truncated));
    };
    header.token = token;
    if header.code.is_reserved_class() {
        return Err(format(
            header,
            FormatError::ReservedClass(header.code.class()),
        ));
    }
    match header.mtype {
        MessageType::Reset => return Err(format(header, FormatError::ResetNotEmpty)),
        MessageType::Acknowledgement if header.code.is_request() => {
            return Err(format(header, FormatError::RequestInAck))
        }
        _ => {}
    }

    let area = datagram.get(4 + token_len..).unwrap_or_default();
    let mut at = 0;
    let mut previous = OptionNumber(0);
    let mut option_count = 0;
    let (options, payload) = loop {
        match read_option(area, at, previous).map_err(|kind| format(header, kind))? {
            Step::Option { option, next } => {
                option_count += 1;
                if option_count > limits.max_options {
                    return Err(CoapError::TooManyOptions {
                        header,
                        limit: limits.max_options,
                    });
                }
                previous = option.number;
                at = next;
            }
            Step::Payload { start } => {
                break (
                    area.get(..start - 1).unwrap_or_default(),
                    area.get(start..).unwrap_or_default(),
                );
            }
            Step::End => break (area, &[][..]),
        }
    };
    Ok(Message {
        mtype: header.mtype,
        code: header.code,
        message_id: header.message_id,
        token: header.token,
        payload,
        options,
        option_count,
    })
}

/// One item of a Uri-Query: `name=value`, or a bare `name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryItem<'a> {
    /// The bytes before the first `=` (all of them for a bare name).
    pub name: &'a [u8],
    /// The bytes after the first `=`, `None` without one.
    pub value: Option<&'a [u8]>,
}

impl<'a> QueryItem<'a> {
    /// Splits one Uri-Query option value.
    pub fn parse(item: &'a [u8]) -> Self {
        match item.iter().position(|&byte| byte == b'=') {
            Some(eq) => Self {
                name: item.get(..eq).unwrap_or_default(),
                value: item.get(eq + 1..),
            },
            None => Self {
                name: item,
                value: None,
            },
        }
    }
}

impl<'a> Message<'a> {
    /// The header fields (what an answer needs).
    pub fn header(&self) -> Header {
        Header {
            mtype: self.mtype,
            code: self.code,
            message_id: self.message_id,
            token: self.token,
        }
    }

    /// Code 0.00 (then there are no token, options or payload).
    pub fn is_empty(&self) -> bool {
        self.code.is_empty()
    }

    /// An Empty CON: a "CoAP ping", answered with an RST (RFC 7252 §4.3).
    pub fn is_ping(&self) -> bool {
        self.is_empty() && self.mtype == MessageType::Confirmable
    }

    /// A request (method code in a CON or NON).
    pub fn is_request(&self) -> bool {
        self.code.is_request()
    }

    /// The number of options.
    pub fn option_count(&self) -> usize {
        self.option_count
    }

    /// The options, in wire order.
    pub fn options(&self) -> Options<'a> {
        Options::new(self.options, self.option_count)
    }

    /// The values of every occurrence of option `number`, in order.
    pub fn options_of(&self, number: OptionNumber) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.options()
            .skip_while(move |option| option.number < number)
            .take_while(move |option| option.number == number)
            .map(|option| option.value)
    }

    /// The value of the first occurrence of option `number`.
    pub fn option(&self, number: OptionNumber) -> Option<&'a [u8]> {
        self.options_of(number).next()
    }

    /// Whether option `number` is present.
    pub fn has_option(&self, number: OptionNumber) -> bool {
        self.option(number).is_some()
    }

    /// The first occurrence of an unsigned-integer option, `None` when it is
    /// absent or longer than the option allows (an elective option with a
    /// bad length is ignored, RFC 7252 §5.4.3).
    pub fn uint_option(&self, number: OptionNumber) -> Option<u32> {
        let value = self.option(number)?;
        let allowed = number.value_len().unwrap_or(0..=4);
        if !allowed.contains(&value.len()) {
            return None;
        }
        decode_uint(value)
    }

    /// Content-Format, if present and valid.
    pub fn content_format(&self) -> Option<ContentFormat> {
        self.uint_option(OptionNumber::CONTENT_FORMAT)
            .and_then(|value| u16::try_from(value).ok())
            .map(ContentFormat)
    }

    /// Accept, if present and valid.
    pub fn accept(&self) -> Option<ContentFormat> {
        self.uint_option(OptionNumber::ACCEPT)
            .and_then(|value| u16::try_from(value).ok())
            .map(ContentFormat)
    }

    /// The Observe value (RFC 7641), if present and valid: 0 registers and 1
    /// deregisters in a GET; a sequence number in a notification.
    pub fn observe(&self) -> Option<u32> {
        self.uint_option(OptionNumber::OBSERVE)
    }

    /// Max-Age in seconds, if present (the default is 60).
    pub fn max_age(&self) -> Option<u32> {
        self.uint_option(OptionNumber::MAX_AGE)
    }

    /// Size1 (the request body's size, or in a 4.13 the largest accepted).
    pub fn size1(&self) -> Option<u32> {
        self.uint_option(OptionNumber::SIZE1)
    }

    /// Size2 (the response body's size; 0 in a request asks for it).
    pub fn size2(&self) -> Option<u32> {
        self.uint_option(OptionNumber::SIZE2)
    }

    /// The Block1 option (RFC 7959), if present. A value over 3 bytes is a
    /// [`CoapError::BadOption`] (4.02), SZX 7 a
    /// [`CoapError::ReservedBlockSize`] (4.00).
    pub fn block1(&self) -> Result<Option<BlockOption>, CoapError> {
        self.block(OptionNumber::BLOCK1)
    }

    /// The Block2 option (RFC 7959), if present; errors as for
    /// [`block1`](Self::block1).
    pub fn block2(&self) -> Result<Option<BlockOption>, CoapError> {
        self.block(OptionNumber::BLOCK2)
    }

    fn block(&self, number: OptionNumber) -> Result<Option<BlockOption>, CoapError> {
        let Some(value) = self.option(number) else {
            return Ok(None);
        };
        match BlockOption::decode(value) {
            Some(block) if block.szx() == 7 => Err(CoapError::ReservedBlockSize {
                header: self.header(),
                option: number,
            }),
            Some(block) => Ok(Some(block)),
            None => Err(CoapError::BadOption {
                header: self.header(),
                number,
                reason: BadOptionReason::BadLength { len: value.len() },
            }),
        }
    }

    /// The Uri-Path segments, in order (raw bytes, not percent-decoded:
    /// CoAP sends each segment as its own option).
    pub fn uri_path(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.options_of(OptionNumber::URI_PATH)
    }

    /// Whether the Uri-Path segments are exactly `segments`.
    pub fn uri_path_is(&self, segments: &[&str]) -> bool {
        self.uri_path()
            .map(Some)
            .chain(core::iter::once(None))
            .zip(
                segments
                    .iter()
                    .map(|segment| Some(segment.as_bytes()))
                    .chain(core::iter::once(None)),
            )
            .all(|(got, want)| got == want)
    }

    /// Appends the path, `/` before every segment (`/` alone when there is
    /// none), e.g. `/devices/d1/up`. A segment that is not UTF-8 is a
    /// [`CoapError::InvalidUtf8`] (4.00). Each segment is at most 255 bytes
    /// and a datagram bounds their number, so the path is bounded too.
    pub fn write_path(&self, out: &mut String) -> Result<(), CoapError> {
        let start = out.len();
        for segment in self.uri_path() {
            let Ok(segment) = core::str::from_utf8(segment) else {
                out.truncate(start);
                return Err(CoapError::InvalidUtf8 {
                    header: self.header(),
                    number: OptionNumber::URI_PATH,
                });
            };
            out.push('/');
            out.push_str(segment);
        }
        if out.len() == start {
            out.push('/');
        }
        Ok(())
    }

    /// The Uri-Query items, in order.
    pub fn uri_query(&self) -> impl Iterator<Item = QueryItem<'a>> + 'a {
        self.options_of(OptionNumber::URI_QUERY)
            .map(QueryItem::parse)
    }

    /// The value of the first Uri-Query item named `name` (`Some(b"")` for a
    /// bare `name` or `name=`), e.g. `query_value("secret")`.
    pub fn query_value(&self, name: &str) -> Option<&'a [u8]> {
        self.uri_query()
            .find(|item| item.name == name.as_bytes())
            .map(|item| item.value.unwrap_or_default())
    }

    /// Checks the options against RFC 7252 §5.4.1, §5.4.3 and §5.4.5: a
    /// critical option that this module does not know, that has a value
    /// length outside its range, or that occurs again while not repeatable
    /// is a [`CoapError::BadOption`] (answer a CON request with 4.02, see
    /// [`CoapError::reaction`]). The same faults in elective options are
    /// ignored, as the RFC asks (the typed getters skip bad values).
    ///
    /// Proxy-Uri and Proxy-Scheme are known here; a server that does not
    /// proxy answers them with 5.05 Proxying Not Supported itself.
    pub fn check_options(&self) -> Result<(), CoapError> {
        let mut previous = None;
        for option in self.options() {
            let repeated = previous == Some(option.number);
            previous = Some(option.number);
            if !option.number.is_critical() {
                continue;
            }
            let reason = match option.number.value_len() {
                None => BadOptionReason::Unrecognized,
                Some(range) if !range.contains(&option.value.len()) => BadOptionReason::BadLength {
                    len: option.value.len(),
                },
                Some(_) if repeated && !option.number.is_repeatable() => BadOptionReason::Repeated,
                Some(_) => continue,
            };
            return Err(CoapError::BadOption {
                header: self.header(),
                number: option.number,
                reason,
            });
        }
        Ok(())
    }
}
