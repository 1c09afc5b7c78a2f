//! Close codes and close frames (RFC 6455 §5.5.1, §7.4).

use super::frame::{encode_frame_head, Opcode, MAX_CONTROL_PAYLOAD_BYTES};
use super::WsError;

/// A close status code (RFC 6455 §7.4), with the registered codes as
/// constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection is fulfilled.
    pub const NORMAL: Self = Self(1000);
    /// 1001: the endpoint is going away (shutdown, page left).
    pub const GOING_AWAY: Self = Self(1001);
    /// 1002: protocol error.
    pub const PROTOCOL_ERROR: Self = Self(1002);
    /// 1003: a kind of data the endpoint cannot accept.
    pub const UNSUPPORTED_DATA: Self = Self(1003);
    /// 1005: reported when a close frame carried no code; never sent.
    pub const NO_STATUS: Self = Self(1005);
    /// 1006: reported when the connection ended without a close frame; never sent.
    pub const ABNORMAL: Self = Self(1006);
    /// 1007: data inconsistent with the message type (e.g. invalid UTF-8 text).
    pub const INVALID_PAYLOAD: Self = Self(1007);
    /// 1008: the message violates the endpoint's policy.
    pub const POLICY_VIOLATION: Self = Self(1008);
    /// 1009: a message too big to process.
    pub const MESSAGE_TOO_BIG: Self = Self(1009);
    /// 1010: the client expected an extension the server did not negotiate.
    pub const MANDATORY_EXTENSION: Self = Self(1010);
    /// 1011: the server met an unexpected condition.
    pub const INTERNAL_ERROR: Self = Self(1011);
    /// 1012: the service is restarting (IANA registry).
    pub const SERVICE_RESTART: Self = Self(1012);
    /// 1013: try again later (IANA registry).
    pub const TRY_AGAIN_LATER: Self = Self(1013);
    /// 1014: a gateway got an invalid response upstream (IANA registry).
    pub const BAD_GATEWAY: Self = Self(1014);
    /// 1015: reported when the TLS handshake failed; never sent.
    pub const TLS_HANDSHAKE: Self = Self(1015);

    /// Whether a peer may send this code in a close frame: 1000-1003,
    /// 1007-1014 (1012-1014 are in the IANA registry) and the application
    /// ranges 3000-4999. 1004-1006, 1015, other reserved codes, anything
    /// below 1000 or from 5000 up are protocol errors.
    pub fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> Self {
        Self(code)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> Self {
        code.0
    }
}

/// Most bytes of a close reason: a control payload holds 125 bytes, 2 of
/// them the code.
pub const MAX_CLOSE_REASON_BYTES: usize = MAX_CONTROL_PAYLOAD_BYTES - 2;

/// Appends a whole, unmasked (server) close frame carrying `code` and
/// `reason`. The reason is cut to [`MAX_CLOSE_REASON_BYTES`] at a character
/// boundary. [`CloseCode::NO_STATUS`] writes a close frame without a body
/// (the code must not appear on the wire).
pub fn encode_close(out: &mut Vec<u8>, code: CloseCode, reason: &str) {
    if code == CloseCode::NO_STATUS {
        encode_frame_head(out, true, Opcode::Close, 0, None);
        return;
    }
    let mut cut = reason.len().min(MAX_CLOSE_REASON_BYTES);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let reason = reason.get(..cut).unwrap_or("");
    encode_frame_head(out, true, Opcode::Close, 2 + reason.len() as u64, None);
    out.extend_from_slice(&code.0.to_be_bytes());
    out.extend_from_slice(reason.as_bytes());
}

/// Parses an unmasked close payload: no bytes is [`CloseCode::NO_STATUS`]
/// with an empty reason; 1 byte, a code a peer may not send, or a reason
/// that is not UTF-8 are errors.
pub fn parse_close(payload: &[u8]) -> Result<(CloseCode, &str), WsError> {
    match payload {
        [] => Ok((CloseCode::NO_STATUS, "")),
        [_] => Err(WsError::BadClosePayload),
        [high, low, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*high, *low]));
            if !code.is_sendable() {
                return Err(WsError::InvalidCloseCode(code.0));
            }
            let reason = core::str::from_utf8(reason).map_err(|_| WsError::InvalidUtf8)?;
            Ok((code, reason))
        }
    }
}
