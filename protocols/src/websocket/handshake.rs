//! The opening handshake, server side (RFC 6455 §4.2).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha1::{Digest, Sha1};

use crate::http1::{list_elements, reason_phrase, trim_ows, write_response_head, RequestHead};

/// The GUID a server appends to the client's key (RFC 6455 §1.3).
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Length of an accept value: base64 of a 20-byte SHA-1.
const ACCEPT_BYTES: usize = 28;

/// Why an upgrade request was refused. [`status`](Self::status) and
/// [`write_refusal`](Self::write_refusal) give the answer.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The method is not GET.
    #[error("a WebSocket upgrade must be a GET request")]
    NotGet,
    /// The request is not HTTP/1.1.
    #[error("a WebSocket upgrade needs HTTP/1.1")]
    NotHttp11,
    /// `Upgrade` does not name `websocket`.
    #[error("the Upgrade header does not name websocket")]
    NoUpgradeWebsocket,
    /// `Connection` does not hold the `upgrade` token.
    #[error("the Connection header does not hold the upgrade token")]
    NoConnectionUpgrade,
    /// `Sec-WebSocket-Version` is missing.
    #[error("Sec-WebSocket-Version is missing")]
    MissingVersion,
    /// `Sec-WebSocket-Version` is not 13: answered with 426 and the version
    /// this server speaks.
    #[error("unsupported WebSocket version (this server speaks 13)")]
    UnsupportedVersion,
    /// `Sec-WebSocket-Key` is missing.
    #[error("Sec-WebSocket-Key is missing")]
    MissingKey,
    /// `Sec-WebSocket-Key` appears more than once.
    #[error("Sec-WebSocket-Key appears more than once")]
    DuplicateKey,
    /// `Sec-WebSocket-Key` is not the base64 of exactly 16 bytes.
    #[error("Sec-WebSocket-Key is not the base64 of 16 bytes")]
    BadKey,
}

impl HandshakeError {
    /// The response status: 426 for an unsupported version, 400 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            Self::UnsupportedVersion => 426,
            _ => 400,
        }
    }

    /// Appends the whole refusal: the status line, `Sec-WebSocket-Version:
    /// 13` for 426, `Connection: close`, and this error's text as a plain
    /// text body.
    pub fn write_refusal(&self, out: &mut Vec<u8>) {
        let status = self.status();
        let mut body = self.to_string();
        body.push('\n');
        let mut headers = vec![
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Connection", "close"),
        ];
        if status == 426 {
            headers.push(("Sec-WebSocket-Version", "13"));
        }
        write_response_head(
            out,
            status,
            reason_phrase(status),
            &headers,
            Some(body.len() as u64),
        );
        out.extend_from_slice(body.as_bytes());
    }
}

/// A checked upgrade request, borrowing its [`RequestHead`].
#[derive(Debug, Clone, Copy)]
pub struct Upgrade<'h> {
    /// The client's `Sec-WebSocket-Key` (24 base64 bytes).
    pub key: &'h [u8],
    head: &'h RequestHead<'h>,
}

impl<'h> Upgrade<'h> {
    /// The request head the upgrade came in (path, other headers).
    pub fn head(&self) -> &'h RequestHead<'h> {
        self.head
    }

    /// The subprotocols the client offers, in its order of preference: the
    /// comma-separated elements of every `Sec-WebSocket-Protocol` line.
    pub fn protocols(&self) -> impl Iterator<Item = &'h str> + 'h {
        self.head
            .header_values("sec-websocket-protocol")
            .flat_map(list_elements)
            .filter_map(|element| core::str::from_utf8(element).ok())
    }

    /// Whether the client offers subprotocol `proto` (exact match:
    /// subprotocol names are case-sensitive).
    pub fn offers(&self, proto: &str) -> bool {
        self.protocols().any(|offered| offered == proto)
    }

    /// The `Sec-WebSocket-Accept` value answering this request's key.
    pub fn accept_key(&self) -> String {
        accept_key(self.key)
    }
}

/// `Sec-WebSocket-Accept` for a client's key: base64(SHA-1(key + GUID)).
pub fn accept_key(client_key: &[u8]) -> String {
    let bytes = accept_key_bytes(client_key);
    String::from_utf8_lossy(&bytes).into_owned()
}

fn accept_key_bytes(client_key: &[u8]) -> [u8; ACCEPT_BYTES] {
    let mut sha1 = Sha1::new();
    sha1.update(client_key);
    sha1.update(GUID);
    let digest = sha1.finalize();
    let mut out = [0u8; ACCEPT_BYTES];
    // 20 bytes always encode to exactly 28: the slice is large enough.
    let _ = STANDARD.encode_slice(digest, &mut out);
    out
}

/// Checks that `head` is a valid WebSocket upgrade request (RFC 6455
/// §4.2.1): GET, HTTP/1.1, `Upgrade: websocket`, `Connection: upgrade`
/// (tokens, case-insensitive), `Sec-WebSocket-Version: 13`, and one
/// `Sec-WebSocket-Key` that is the base64 of 16 bytes. `Host` and `Origin`
/// are left to the caller.
pub fn check_upgrade<'h>(head: &'h RequestHead<'_>) -> Result<Upgrade<'h>, HandshakeError> {
    if head.method != "GET" {
        return Err(HandshakeError::NotGet);
    }
    if head.version != 1 {
        return Err(HandshakeError::NotHttp11);
    }
    if !head.has_token("upgrade", "websocket") {
        return Err(HandshakeError::NoUpgradeWebsocket);
    }
    if !head.has_token("connection", "upgrade") {
        return Err(HandshakeError::NoConnectionUpgrade);
    }
    let version = head
        .header("sec-websocket-version")
        .ok_or(HandshakeError::MissingVersion)?;
    if trim_ows(version) != b"13" {
        return Err(HandshakeError::UnsupportedVersion);
    }
    let mut keys = head.header_values("sec-websocket-key");
    let key = trim_ows(keys.next().ok_or(HandshakeError::MissingKey)?);
    if keys.next().is_some() {
        return Err(HandshakeError::DuplicateKey);
    }
    // 16 bytes are 24 base64 characters, the last two `==`.
    let mut decoded = [0u8; 18];
    if key.len() != 24 || !matches!(STANDARD.decode_slice(key, &mut decoded), Ok(16)) {
        return Err(HandshakeError::BadKey);
    }
    Ok(Upgrade { key, head })
}

/// Appends the whole `101 Switching Protocols` answer to `upgrade`, with
/// `Sec-WebSocket-Protocol: {subprotocol}` when one is given and the client
/// offered it (a subprotocol the client did not offer is left out: the
/// client would fail the connection).
pub fn write_accept(out: &mut Vec<u8>, upgrade: &Upgrade<'_>, subprotocol: Option<&str>) {
    let accept = accept_key_bytes(upgrade.key);
    let accept = core::str::from_utf8(&accept).unwrap_or("");
    let mut headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept),
        ("", ""),
    ];
    let mut count = 3;
    if let Some(proto) = subprotocol.filter(|proto| upgrade.offers(proto)) {
        if let Some(slot) = headers.get_mut(3) {
            *slot = ("Sec-WebSocket-Protocol", proto);
            count = 4;
        }
    }
    write_response_head(
        out,
        101,
        reason_phrase(101),
        headers.get(..count).unwrap_or(&[]),
        None,
    );
}
