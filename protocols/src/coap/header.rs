//! The fixed part of a message (RFC 7252 §3): type, code, message id and
//! token.

use core::fmt;

/// Longest token (RFC 7252 §3: token lengths 9-15 are reserved).
pub const MAX_TOKEN_BYTES: usize = 8;

/// The message type (RFC 7252 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// CON (0): needs an ACK (or an RST), retransmitted until then.
    Confirmable,
    /// NON (1): no ACK.
    NonConfirmable,
    /// ACK (2): acknowledges a CON, may carry a piggybacked response.
    Acknowledgement,
    /// RST (3): the recipient could not process a message; always Empty.
    Reset,
}

impl MessageType {
    /// The type of the 2-bit wire value (bits above are ignored).
    pub fn from_bits(bits: u8) -> Self {
        match bits & 3 {
            0 => Self::Confirmable,
            1 => Self::NonConfirmable,
            2 => Self::Acknowledgement,
            _ => Self::Reset,
        }
    }

    /// The 2-bit wire value.
    pub fn bits(self) -> u8 {
        match self {
            Self::Confirmable => 0,
            Self::NonConfirmable => 1,
            Self::Acknowledgement => 2,
            Self::Reset => 3,
        }
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Confirmable => "CON",
            Self::NonConfirmable => "NON",
            Self::Acknowledgement => "ACK",
            Self::Reset => "RST",
        })
    }
}

/// A method or response code, `class.detail` in one byte (RFC 7252 §3,
/// §12.1). Displays as `2.05`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Code(pub u8);

impl Code {
    /// 0.00: an Empty message (ACK, RST, or a CON "ping").
    pub const EMPTY: Self = Self::new(0, 0);
    /// 0.01 GET.
    pub const GET: Self = Self::new(0, 1);
    /// 0.02 POST.
    pub const POST: Self = Self::new(0, 2);
    /// 0.03 PUT.
    pub const PUT: Self = Self::new(0, 3);
    /// 0.04 DELETE.
    pub const DELETE: Self = Self::new(0, 4);
    /// 0.05 FETCH (RFC 8132).
    pub const FETCH: Self = Self::new(0, 5);
    /// 2.01 Created.
    pub const CREATED: Self = Self::new(2, 1);
    /// 2.02 Deleted.
    pub const DELETED: Self = Self::new(2, 2);
    /// 2.03 Valid.
    pub const VALID: Self = Self::new(2, 3);
    /// 2.04 Changed.
    pub const CHANGED: Self = Self::new(2, 4);
    /// 2.05 Content.
    pub const CONTENT: Self = Self::new(2, 5);
    /// 2.31 Continue (RFC 7959): send the next Block1 block.
    pub const CONTINUE: Self = Self::new(2, 31);
    /// 4.00 Bad Request.
    pub const BAD_REQUEST: Self = Self::new(4, 0);
    /// 4.01 Unauthorized.
    pub const UNAUTHORIZED: Self = Self::new(4, 1);
    /// 4.02 Bad Option.
    pub const BAD_OPTION: Self = Self::new(4, 2);
    /// 4.03 Forbidden.
    pub const FORBIDDEN: Self = Self::new(4, 3);
    /// 4.04 Not Found.
    pub const NOT_FOUND: Self = Self::new(4, 4);
    /// 4.05 Method Not Allowed.
    pub const METHOD_NOT_ALLOWED: Self = Self::new(4, 5);
    /// 4.06 Not Acceptable.
    pub const NOT_ACCEPTABLE: Self = Self::new(4, 6);
    /// 4.08 Request Entity Incomplete (RFC 7959).
    pub const REQUEST_ENTITY_INCOMPLETE: Self = Self::new(4, 8);
    /// 4.12 Precondition Failed.
    pub const PRECONDITION_FAILED: Self = Self::new(4, 12);
    /// 4.13 Request Entity Too Large.
    pub const REQUEST_ENTITY_TOO_LARGE: Self = Self::new(4, 13);
    /// 4.15 Unsupported Content-Format.
    pub const UNSUPPORTED_CONTENT_FORMAT: Self = Self::new(4, 15);
    /// 4.29 Too Many Requests (RFC 8516).
    pub const TOO_MANY_REQUESTS: Self = Self::new(4, 29);
    /// 5.00 Internal Server Error.
    pub const INTERNAL_SERVER_ERROR: Self = Self::new(5, 0);
    /// 5.01 Not Implemented.
    pub const NOT_IMPLEMENTED: Self = Self::new(5, 1);
    /// 5.02 Bad Gateway.
    pub const BAD_GATEWAY: Self = Self::new(5, 2);
    /// 5.03 Service Unavailable.
    pub const SERVICE_UNAVAILABLE: Self = Self::new(5, 3);
    /// 5.04 Gateway Timeout.
    pub const GATEWAY_TIMEOUT: Self = Self::new(5, 4);
    /// 5.05 Proxying Not Supported.
    pub const PROXYING_NOT_SUPPORTED: Self = Self::new(5, 5);

    /// The code `class.detail` (class 0-7, detail 0-31; higher bits dropped).
    pub const fn new(class: u8, detail: u8) -> Self {
        Self((class & 7) << 5 | (detail & 31))
    }

    /// The class: 0 request, 2 success, 4 client error, 5 server error.
    pub fn class(self) -> u8 {
        self.0 >> 5
    }

    /// The detail (0-31).
    pub fn detail(self) -> u8 {
        self.0 & 31
    }

    /// 0.00.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// A method code (class 0, not Empty).
    pub fn is_request(self) -> bool {
        self.class() == 0 && self.0 != 0
    }

    /// A response code (class 2, 4 or 5).
    pub fn is_response(self) -> bool {
        matches!(self.class(), 2 | 4 | 5)
    }

    /// Classes 1, 6 and 7 are reserved: a message using one is rejected.
    pub fn is_reserved_class(self) -> bool {
        matches!(self.class(), 1 | 6 | 7)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.class(), self.detail())
    }
}

/// A token of 0 to 8 bytes, held by value (cheap to copy and to use as a
/// map key).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Token {
    len: u8,
    bytes: [u8; MAX_TOKEN_BYTES],
}

impl Token {
    /// The zero-length token.
    pub const EMPTY: Self = Self {
        len: 0,
        bytes: [0; MAX_TOKEN_BYTES],
    };

    /// A token of these bytes, `None` if there are more than 8.
    pub fn new(bytes: &[u8]) -> Option<Self> {
        let mut token = Self::EMPTY;
        token.bytes.get_mut(..bytes.len())?.copy_from_slice(bytes);
        token.len = bytes.len() as u8;
        Some(token)
    }

    /// A token of `len` bytes (at most 8) holding the low bytes of `value`,
    /// big-endian: how a client makes tokens from a counter.
    pub fn from_u64(value: u64, len: usize) -> Self {
        let len = len.min(MAX_TOKEN_BYTES);
        let wide = value.to_be_bytes();
        Self::new(wide.get(MAX_TOKEN_BYTES - len..).unwrap_or_default()).unwrap_or_default()
    }

    /// The token's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }

    /// The token's length in bytes.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether the token is zero-length.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(")?;
        for byte in self.as_bytes() {
            write!(f, "{byte:02x}")?;
        }
        write!(f, ")")
    }
}

/// The fixed part of a message: what an answer needs (type, code, message
/// id, token). Errors carry it so that the caller can answer them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// CON, NON, ACK or RST.
    pub mtype: MessageType,
    /// Method or response code.
    pub code: Code,
    /// The message id (deduplication, ACK/RST matching).
    pub message_id: u16,
    /// The token (empty when the token length was invalid or truncated).
    pub token: Token,
}

impl fmt::Display for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} mid {:#06x} token {:?}",
            self.mtype, self.code, self.message_id, self.token
        )
    }
}
