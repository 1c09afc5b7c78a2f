//! CoAP over UDP (RFC 7252), with block-wise transfers (RFC 7959) and
//! observation (RFC 7641), sans-IO.
//!
//! The caller reads datagrams, keeps the clock (`now_ms`, milliseconds of
//! a monotonic clock) and the randomness, and sends what it is told to. One
//! datagram is one message:
//!
//! ```text
//!  datagram ─decode─▶ Message ─check_options─┬─ Empty ACK / RST ──▶ Retransmitter::on_ack / on_rst
//!  (borrowed)   │                            ├─ Empty CON (ping) ─▶ encode_reset
//!               │ Err(e)                     └─ CON / NON request ─▶ Deduplicator::check
//!               ▼                                                     │ New        │ Duplicate
//!   e.write_answer(out): RST, 4.xx or nothing                         ▼            ▼
//!                                       Block1Reassembler::feed ─▶ handler    resend the recorded answer
//!                                                                     │
//!   MessageBuilder::response(..).encode(out) ─▶ Deduplicator::record_response ─▶ socket
//!
//!   downlink ─▶ ObserverRegistry::observers ─▶ MessageBuilder (CON/NON + Observe)
//!                      ─▶ Retransmitter::send ─▶ socket;  Retransmitter::poll ─▶ resend / GaveUp
//! ```
//!
//! - [`decode`] checks the whole message format and borrows the datagram;
//!   options are iterated lazily ([`Message::options`]) with typed getters
//!   (path, query, Content-Format, Observe, Block1/2, Size1/2).
//! - [`MessageBuilder`] writes a message with its options sorted;
//!   [`encode_message`] writes a decoded one back byte for byte.
//! - Every [`CoapError`] says how RFC 7252 wants it answered
//!   ([`CoapError::reaction`], [`CoapError::write_answer`]).
//! - State machines, each bounded with a stated policy and counters:
//!   [`Deduplicator`] (§4.5), [`Retransmitter`] (§4.2, NSTART),
//!   [`Block1Reassembler`] (RFC 7959), [`ObserverRegistry`] (RFC 7641).
//!   Peers are identified by a key `P` the caller chooses.
//!
//! What `coap-client` (libcoap) sends for
//! `coap-client -m post -e hello 'coap://127.0.0.1:56831/devices/d1/up?secret=s3cr3t'`,
//! handled the way a server does it:
//!
//! ```
//! use shoal_protocols::coap::{
//!     decode, Block1Outcome, Block1Reassembler, Code, Deduplicator, MessageBuilder, Seen,
//! };
//!
//! let datagram = b"\x41\x02\x5a\x9b\x01\x72\xdd\xff\x47devices\x02d1\x02up\
//!     \x4d\x00secret=s3cr3t\xffhello";
//! let mut dedup = Deduplicator::new(Default::default());
//! let mut bodies = Block1Reassembler::new(Default::default());
//! let peer = "127.0.0.1:40000";
//! let now_ms = 1_000;
//! let mut out = Vec::new();
//!
//! let request = match decode(datagram).and_then(|m| m.check_options().map(|()| m)) {
//!     Ok(request) => request,
//!     Err(error) => {
//!         error.write_answer(&mut out, 0); // RST, 4.02 ... or nothing
//!         return;
//!     }
//! };
//! assert_eq!(request.code, Code::POST);
//! assert!(request.uri_path_is(&["devices", "d1", "up"]));
//! assert_eq!(request.query_value("secret"), Some(&b"s3cr3t"[..]));
//! if let Seen::Duplicate { response } = dedup.check(now_ms, &peer, request.mtype, request.message_id) {
//!     if let Some(answer) = response {
//!         out.extend_from_slice(answer);
//!     }
//!     return;
//! }
//! let Ok(Block1Outcome::Whole { block: None }) = bodies.feed(now_ms, &peer, &request) else {
//!     unreachable!()
//! };
//! assert_eq!(request.payload, b"hello");
//! MessageBuilder::response(&request.header(), Code::CHANGED, 0).encode(&mut out);
//! dedup.record_response(&peer, request.message_id, &out);
//! assert_eq!(out, b"\x61\x44\x5a\x9b\x01"); // ACK 2.04, same message id and token
//! ```

mod block;
mod dedup;
mod encode;
mod header;
mod link;
mod message;
mod observe;
mod option;
mod retransmit;
#[cfg(test)]
mod tests;

pub use block::{
    block2_response, Block1Config, Block1Figures, Block1Outcome, Block1Reassembler, Block2Slice,
    BlockOption, MAX_SZX,
};
pub use dedup::{DedupConfig, DedupFigures, Deduplicator, Seen};
pub use encode::{
    encode_empty, encode_message, encode_reset, MessageBuilder, OptionValue, MAX_BUILDER_OPTIONS,
};
pub use header::{Code, Header, MessageType, Token, MAX_TOKEN_BYTES};
pub use link::{encode_link_format, Link};
pub use message::{decode, decode_with, DecodeLimits, Message, QueryItem, DEFAULT_MAX_OPTIONS};
pub use observe::{
    is_fresher, next_observe_value, ObserveConfig, ObserveRequest, ObserverRegistry, Registered,
    OBSERVE_FRESHNESS_MS, OBSERVE_MASK,
};
pub use option::{
    decode_uint, encode_uint, CoapOption, ContentFormat, OptionNumber, Options, UintBytes,
    MAX_OPTION_VALUE_BYTES,
};
pub use retransmit::{
    MessageIdCounter, RetransmitConfig, RetransmitEvent, RetransmitFigures, Retransmitter,
};

/// The default CoAP port (UDP).
pub const COAP_PORT: u16 = 5683;
/// ACK_TIMEOUT (RFC 7252 §4.8): 2 s.
pub const ACK_TIMEOUT_MS: u64 = 2_000;
/// ACK_RANDOM_FACTOR: 1.5.
pub const ACK_RANDOM_FACTOR: f64 = 1.5;
/// MAX_RETRANSMIT: 4.
pub const MAX_RETRANSMIT: u8 = 4;
/// NSTART: 1 outstanding interaction per peer.
pub const NSTART: usize = 1;
/// MAX_TRANSMIT_WAIT (RFC 7252 §4.8.2): 93 s from the first transmission
/// of a CON to giving up.
pub const MAX_TRANSMIT_WAIT_MS: u64 = 93_000;
/// EXCHANGE_LIFETIME: 247 s, how long a message id of a CON stays in use.
pub const EXCHANGE_LIFETIME_MS: u64 = 247_000;
/// NON_LIFETIME: 145 s, how long a message id of a NON stays in use.
pub const NON_LIFETIME_MS: u64 = 145_000;

/// What is wrong with the format of a message (RFC 7252 §3).
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatError {
    /// Token length 9-15 (reserved).
    #[error("reserved token length {0}")]
    TokenLength(u8),
    /// The token, an option's extended bytes or its value run past the end.
    #[error("token or option runs past the end of the datagram")]
    Truncated,
    /// A delta or length nibble of 15 that is not the payload marker.
    #[error("reserved option delta or length nibble 15")]
    ReservedNibble,
    /// The payload marker 0xFF with no payload after it.
    #[error("payload marker with an empty payload")]
    EmptyPayload,
    /// The deltas add up past option number 65535.
    #[error("option number past 65535")]
    OptionNumberTooLarge,
    /// An Empty message (0.00) with a token, options or payload.
    #[error("Empty message with bytes after its header")]
    EmptyWithContent,
    /// A code in class 1, 6 or 7 (reserved).
    #[error("code in reserved class {0}")]
    ReservedClass(u8),
    /// An RST that is not Empty.
    #[error("Reset message that is not Empty")]
    ResetNotEmpty,
    /// An ACK carrying a request code.
    #[error("Acknowledgement carrying a request")]
    RequestInAck,
}

/// Why a critical option was refused ([`Message::check_options`]).
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BadOptionReason {
    /// Not an option this module knows.
    #[error("unrecognized critical option")]
    Unrecognized,
    /// A value length outside the option's range, or a Block value over 3
    /// bytes.
    #[error("value of {len} bytes is outside the option's range")]
    BadLength {
        /// The value's length.
        len: usize,
    },
    /// A second occurrence of an option that is not repeatable.
    #[error("repeated non-repeatable option")]
    Repeated,
}

/// How to answer a refused message, by the rules of RFC 7252 §4.2, §4.3 and
/// §5.4.1 (see [`CoapError::reaction`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    /// Drop it silently.
    Ignore,
    /// Reject it with an RST carrying its message id.
    Reset,
    /// Answer the request with this response code: piggybacked on an ACK
    /// for a CON, in a NON for a NON.
    Respond(Code),
}

/// Why a message was refused, or an operation could not be done.
///
/// Errors about a peer's message carry its [`Header`];
/// [`reaction`](Self::reaction) says how to answer and
/// [`write_answer`](Self::write_answer) writes the answer. Errors of the
/// caller's own operations (building, sending, registering) have no
/// header and react with [`Reaction::Ignore`].
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CoapError {
    /// A datagram shorter than the 4-byte header (ignored).
    #[error("datagram of {len} bytes is shorter than a CoAP header")]
    TooShort {
        /// The datagram's length.
        len: usize,
    },
    /// A version other than 1 (silently ignored, RFC 7252 §3).
    #[error("unknown CoAP version {version}")]
    UnknownVersion {
        /// The version bits.
        version: u8,
    },
    /// A message format error: a CON is rejected with an RST, anything else
    /// is ignored.
    #[error("message format error in {header}: {kind}")]
    Format {
        /// The header as far as it could be read.
        header: Header,
        /// What is wrong.
        kind: FormatError,
    },
    /// More options than [`DecodeLimits::max_options`]: a CON request gets
    /// 4.00 Bad Request, a CON response an RST, the rest is ignored.
    #[error("{header} has more than {limit} options")]
    TooManyOptions {
        /// The message's header.
        header: Header,
        /// The limit in force.
        limit: usize,
    },
    /// A critical option that is unrecognized, has a bad length or is
    /// repeated: a CON request gets 4.02 Bad Option, a CON response an RST,
    /// a NON is ignored (RFC 7252 §5.4.1).
    #[error("bad option {number} in {header}: {reason}")]
    BadOption {
        /// The message's header.
        header: Header,
        /// The option.
        number: OptionNumber,
        /// What is wrong with it.
        reason: BadOptionReason,
    },
    /// A Block1 or Block2 option with SZX 7: a request gets 4.00 Bad
    /// Request (RFC 7959 §2.2).
    #[error("{option} with the reserved size exponent 7 in {header}")]
    ReservedBlockSize {
        /// The message's header.
        header: Header,
        /// Block1 or Block2.
        option: OptionNumber,
    },
    /// A Block2 request past the end of the body: 4.02 Bad Option.
    #[error("Block2 number {num} is past the end of the body ({header})")]
    BlockOutOfRange {
        /// The request's header.
        header: Header,
        /// The requested block number.
        num: u32,
    },
    /// A Block1 block that does not continue an open transfer: 4.08
    /// Request Entity Incomplete (RFC 7959 §2.9.2).
    #[error("Block1 at offset {offset} does not continue a transfer ({header})")]
    RequestEntityIncomplete {
        /// The request's header.
        header: Header,
        /// Where the block starts.
        offset: u64,
        /// Where the next block should have started, if a transfer was open.
        expected: Option<u64>,
    },
    /// A request body (or its Size1) over the limit: 4.13 Request Entity
    /// Too Large, with Size1 carrying the limit.
    #[error("request body over the limit of {limit} bytes ({header})")]
    RequestEntityTooLarge {
        /// The request's header.
        header: Header,
        /// The limit in force (`max_body_bytes`).
        limit: usize,
    },
    /// A Block1 payload longer than its block size, or shorter while more
    /// blocks follow: 4.00 Bad Request.
    #[error("Block1 payload of {len} bytes for a block size of {size} ({header})")]
    BlockSizeMismatch {
        /// The request's header.
        header: Header,
        /// The block size of its Block1 option.
        size: usize,
        /// The payload's length.
        len: usize,
    },
    /// No room for another block-wise transfer: 5.03 Service Unavailable.
    #[error("no room for another block-wise transfer (limit {limit}) ({header})")]
    TransfersFull {
        /// The request's header.
        header: Header,
        /// The global limit (`max_transfers`).
        limit: usize,
    },
    /// A Uri-Path or Uri-Query that is not UTF-8: 4.00 Bad Request.
    #[error("{number} is not UTF-8 ({header})")]
    InvalidUtf8 {
        /// The request's header.
        header: Header,
        /// The option.
        number: OptionNumber,
    },
    /// An option value longer than the encoding allows (building).
    #[error("value of {len} bytes for option {number} is over {MAX_OPTION_VALUE_BYTES} bytes")]
    OptionTooLong {
        /// The option.
        number: OptionNumber,
        /// The value's length.
        len: usize,
    },
    /// More than [`MAX_BUILDER_OPTIONS`] options (building).
    #[error("more than {limit} options in a built message")]
    BuilderFull {
        /// The builder's capacity.
        limit: usize,
    },
    /// [`Retransmitter::send`] was given something that is not a CON.
    #[error("only Confirmable messages are retransmitted")]
    NotConfirmable,
    /// NSTART CONs are outstanding to the peer already.
    #[error("{outstanding} CON messages outstanding to the peer already (NSTART)")]
    PeerBusy {
        /// CONs outstanding to the peer.
        outstanding: usize,
    },
    /// The retransmission table is full.
    #[error("{limit} CON messages outstanding already")]
    RetransmitFull {
        /// The limit in force (`max_outstanding`).
        limit: usize,
    },
    /// A CON with this message id is outstanding to the peer already.
    #[error("message id {message_id:#06x} is outstanding to the peer already")]
    MessageIdInUse {
        /// The message id.
        message_id: u16,
    },
    /// The observer registry (or the peer's share of it) is full: answer
    /// the GET without Observe.
    #[error("observer limit of {limit} reached")]
    ObserversFull {
        /// The limit reached.
        limit: usize,
    },
}

/// How an error is answered, before the message type is considered.
enum Answer {
    /// A message format error: reject.
    Reject,
    /// A response code for a CON request, reject otherwise.
    ConRequest(Code),
    /// A response code for any request, reject otherwise.
    Request(Code),
    /// Not about a peer's message.
    Nothing,
}

impl CoapError {
    /// The header of the message the error is about, if any.
    pub fn header(&self) -> Option<&Header> {
        match self {
            Self::Format { header, .. }
            | Self::TooManyOptions { header, .. }
            | Self::BadOption { header, .. }
            | Self::ReservedBlockSize { header, .. }
            | Self::BlockOutOfRange { header, .. }
            | Self::RequestEntityIncomplete { header, .. }
            | Self::RequestEntityTooLarge { header, .. }
            | Self::BlockSizeMismatch { header, .. }
            | Self::TransfersFull { header, .. }
            | Self::InvalidUtf8 { header, .. } => Some(header),
            _ => None,
        }
    }

    fn answer(&self) -> Answer {
        match self {
            Self::Format { .. } => Answer::Reject,
            Self::TooManyOptions { .. } => Answer::ConRequest(Code::BAD_REQUEST),
            Self::BadOption { .. } => Answer::ConRequest(Code::BAD_OPTION),
            Self::ReservedBlockSize { .. }
            | Self::BlockSizeMismatch { .. }
            | Self::InvalidUtf8 { .. } => Answer::Request(Code::BAD_REQUEST),
            Self::BlockOutOfRange { .. } => Answer::Request(Code::BAD_OPTION),
            Self::RequestEntityIncomplete { .. } => {
                Answer::Request(Code::REQUEST_ENTITY_INCOMPLETE)
            }
            Self::RequestEntityTooLarge { .. } => Answer::Request(Code::REQUEST_ENTITY_TOO_LARGE),
            Self::TransfersFull { .. } => Answer::Request(Code::SERVICE_UNAVAILABLE),
            _ => Answer::Nothing,
        }
    }

    /// How RFC 7252 wants the message answered:
    ///
    /// | error | CON request | NON request | CON response | NON, ACK, RST |
    /// |---|---|---|---|---|
    /// | [`TooShort`](Self::TooShort), [`UnknownVersion`](Self::UnknownVersion) | ignore | ignore | ignore | ignore |
    /// | [`Format`](Self::Format) | RST | ignore | RST | ignore |
    /// | [`BadOption`](Self::BadOption) | 4.02 | ignore | RST | ignore |
    /// | [`TooManyOptions`](Self::TooManyOptions) | 4.00 | ignore | RST | ignore |
    /// | block, UTF-8 and table errors | 4.00/4.02/4.08/4.13/5.03 | same, in a NON | RST | ignore |
    ///
    /// ACKs and RSTs are never answered (§4.2); a NON is rejected by
    /// ignoring it (§4.3 allows an RST, Shoal stays silent).
    pub fn reaction(&self) -> Reaction {
        let Some(header) = self.header() else {
            return Reaction::Ignore;
        };
        let confirmable = match header.mtype {
            MessageType::Confirmable => true,
            MessageType::NonConfirmable => false,
            MessageType::Acknowledgement | MessageType::Reset => return Reaction::Ignore,
        };
        let request = header.code.is_request();
        match self.answer() {
            Answer::Nothing => Reaction::Ignore,
            Answer::ConRequest(code) if confirmable && request => Reaction::Respond(code),
            Answer::Request(code) if request => Reaction::Respond(code),
            _ if confirmable => Reaction::Reset,
            _ => Reaction::Ignore,
        }
    }

    /// Appends the answer [`reaction`](Self::reaction) calls for to `out`
    /// and returns whether there is one: an RST, or the response (an ACK
    /// for a CON; a NON with `non_message_id` for a NON) with the request's
    /// token, and Size1 in a 4.13.
    pub fn write_answer(&self, out: &mut Vec<u8>, non_message_id: u16) -> bool {
        let Some(header) = self.header() else {
            return false;
        };
        match self.reaction() {
            Reaction::Ignore => false,
            Reaction::Reset => {
                encode_reset(out, header.message_id);
                true
            }
            Reaction::Respond(code) => {
                let mut response = MessageBuilder::response(header, code, non_message_id);
                if let Self::RequestEntityTooLarge { limit, .. } = self {
                    let limit = u32::try_from(*limit).unwrap_or(u32::MAX);
                    // One option in an empty builder: cannot fail.
                    let _ = response.option_uint(OptionNumber::SIZE1, limit);
                }
                response.encode(out);
                true
            }
        }
    }
}
