//! The short text forms of framings and identity rules that `listener add`
//! and `route add` take and `get` prints, so what `get` shows can be typed
//! back.
//!
//! Framing:
//!
//! | spec | framing |
//! |---|---|
//! | `length:2` | 2-byte big-endian length of the payload, header stripped |
//! | `length:4:le` | 4-byte little-endian length (`:be` is the default) |
//! | `length:2:offset=1:adjust=-2:strip=0` | offset, adjustment and stripped bytes too |
//! | `line` | frames end with `\n`, stripped |
//! | `delimiter:TEXT` | frames end with TEXT (escapes `\n \r \t \0 \\ \xHH`), stripped |
//! | `line-keep`, `delimiter-keep:TEXT` | the same, the delimiter kept in the frame |
//! | `fixed:N` | every frame is N bytes |
//! | `none` | no framing (UDP: one datagram is one message) |
//!
//! Identity: `login-frame`, `peer-address`, `payload-prefix:N`.

use std::fmt::Write as _;

use shoal_protocols::control::{Framing, Identity, ListenerAuth, ListenerProtocol};

/// A parsed `--framing`: `None` for `none`.
pub(crate) type FramingSpec = Option<Framing>;

/// Parses a framing spec (see the module doc).
pub(crate) fn parse_framing(text: &str) -> Result<FramingSpec, String> {
    let (word, rest) = match text.split_once(':') {
        Some((w, r)) => (w, Some(r)),
        None => (text, None),
    };
    let framing = match (word, rest) {
        ("none", None) => return Ok(None),
        ("line", None) => delimiter("\n", true),
        ("line-keep", None) => delimiter("\n", false),
        ("delimiter", Some(t)) => delimiter(&unescape(t)?, true),
        ("delimiter-keep", Some(t)) => delimiter(&unescape(t)?, false),
        ("fixed", Some(n)) => {
            let frame_bytes: u32 =
                n.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    format!("fixed:N needs a frame size of at least 1, got {n:?}")
                })?;
            Framing::FixedLength { frame_bytes }
        }
        ("length", Some(rest)) => parse_length(rest)?,
        _ => {
            return Err(format!(
                "unknown framing {text:?}; use length:2, length:4:le, line, delimiter:TEXT, \
                 fixed:N or none"
            ))
        }
    };
    Ok(Some(framing))
}

fn delimiter(text: &str, strip: bool) -> Framing {
    Framing::Delimiter {
        delimiter: text.to_owned(),
        strip_delimiter: strip,
    }
}

/// `W[:be|:le][:offset=N][:adjust=N][:strip=N]`.
fn parse_length(text: &str) -> Result<Framing, String> {
    let mut parts = text.split(':');
    let width_text = parts.next().unwrap_or_default();
    let width: u8 = match width_text.parse() {
        Ok(w @ (1 | 2 | 4 | 8)) => w,
        _ => {
            return Err(format!(
                "length:W needs a field width of 1, 2, 4 or 8 bytes, got {width_text:?}"
            ))
        }
    };
    let mut big_endian = true;
    let mut offset = 0u32;
    let mut adjustment = 0i64;
    let mut strip_bytes = None;
    for part in parts {
        match part.split_once('=') {
            None if part == "be" => big_endian = true,
            None if part == "le" => big_endian = false,
            Some(("offset", n)) => offset = number(part, n)?,
            Some(("adjust", n)) => adjustment = number(part, n)?,
            Some(("strip", n)) => strip_bytes = Some(number(part, n)?),
            _ => {
                return Err(format!(
                    "unknown length framing option {part:?}; use be, le, offset=N, adjust=N or \
                     strip=N (e.g. length:4:le:adjust=-4)"
                ))
            }
        }
    }
    Ok(Framing::LengthField {
        offset,
        width,
        big_endian,
        adjustment,
        strip_bytes,
    })
}

fn number<T: std::str::FromStr>(part: &str, text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{part:?}: {text:?} is not a number that fits here"))
}

/// Resolves `\n \r \t \0 \\ \xHH` in a delimiter.
fn unescape(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('0') => out.push('\0'),
            Some('\\') => out.push('\\'),
            Some('x') => {
                let hex: String = chars.by_ref().take(2).collect();
                let byte = u8::from_str_radix(&hex, 16)
                    .ok()
                    .filter(|b| b.is_ascii() && hex.len() == 2)
                    .ok_or_else(|| {
                        format!("\\x{hex} is not an ASCII byte (\\x00 to \\x7f) in {text:?}")
                    })?;
                out.push(char::from(byte));
            }
            other => {
                return Err(format!(
                    "unknown escape \\{} in {text:?}; use \\n \\r \\t \\0 \\\\ or \\xHH",
                    other.map(String::from).unwrap_or_default()
                ))
            }
        }
    }
    if out.is_empty() {
        return Err("the delimiter is empty".to_owned());
    }
    Ok(out)
}

/// Escapes a delimiter so the spec stays one word: the inverse of
/// [`unescape`].
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            '\\' => out.push_str("\\\\"),
            c if c.is_ascii_control() || c == ' ' => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// The spec of a framing (`none` for none).
pub(crate) fn framing_summary(framing: Option<&Framing>) -> String {
    let Some(framing) = framing else {
        return "none".to_owned();
    };
    match framing {
        Framing::LengthField {
            offset,
            width,
            big_endian,
            adjustment,
            strip_bytes,
        } => {
            let mut s = format!("length:{width}");
            if !big_endian {
                s.push_str(":le");
            }
            if *offset != 0 {
                let _ = write!(s, ":offset={offset}");
            }
            if *adjustment != 0 {
                let _ = write!(s, ":adjust={adjustment}");
            }
            if let Some(strip) = strip_bytes {
                let _ = write!(s, ":strip={strip}");
            }
            s
        }
        Framing::Delimiter {
            delimiter,
            strip_delimiter,
        } => match (delimiter.as_str(), strip_delimiter) {
            ("\n", true) => "line".to_owned(),
            ("\n", false) => "line-keep".to_owned(),
            (d, true) => format!("delimiter:{}", escape(d)),
            (d, false) => format!("delimiter-keep:{}", escape(d)),
        },
        Framing::FixedLength { frame_bytes } => format!("fixed:{frame_bytes}"),
        _ => "other".to_owned(),
    }
}

/// Parses an identity rule: `login-frame`, `peer-address`,
/// `payload-prefix:N`.
pub(crate) fn parse_identity(text: &str) -> Result<Identity, String> {
    match text.split_once(':') {
        None if text == "login-frame" => Ok(Identity::LoginFrame),
        None if text == "peer-address" => Ok(Identity::PeerAddress),
        Some(("payload-prefix", n)) => n
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .map(|bytes| Identity::PayloadPrefix { bytes })
            .ok_or_else(|| format!("payload-prefix:N needs N bytes, at least 1, got {n:?}")),
        _ => Err(format!(
            "unknown identity {text:?}; use login-frame, peer-address or payload-prefix:N"
        )),
    }
}

/// The text form of an identity rule.
pub(crate) fn identity_summary(identity: &Identity) -> String {
    match identity {
        Identity::LoginFrame => "login-frame".to_owned(),
        Identity::PeerAddress => "peer-address".to_owned(),
        Identity::PayloadPrefix { bytes } => format!("payload-prefix:{bytes}"),
        _ => "other".to_owned(),
    }
}

/// The text form of a listener's auth.
pub(crate) fn auth_summary(auth: ListenerAuth) -> &'static str {
    match auth {
        ListenerAuth::None => "none",
        ListenerAuth::DeviceSecret => "device-secret",
        _ => "other",
    }
}

/// The text form of a listener's transport.
pub(crate) fn protocol_summary(protocol: ListenerProtocol) -> &'static str {
    match protocol {
        ListenerProtocol::Tcp => "tcp",
        ListenerProtocol::Udp => "udp",
        ListenerProtocol::Mqtt => "mqtt",
        ListenerProtocol::Http => "http",
        ListenerProtocol::Rtmp => "rtmp",
        ListenerProtocol::Coap => "coap",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn length(width: u8, big_endian: bool) -> Framing {
        Framing::LengthField {
            offset: 0,
            width,
            big_endian,
            adjustment: 0,
            strip_bytes: None,
        }
    }

    #[test]
    fn framing_specs_parse() {
        assert_eq!(parse_framing("length:2"), Ok(Some(length(2, true))));
        assert_eq!(parse_framing("length:4:le"), Ok(Some(length(4, false))));
        assert_eq!(parse_framing("length:8:be"), Ok(Some(length(8, true))));
        assert_eq!(
            parse_framing("length:2:offset=1:adjust=-2:strip=0"),
            Ok(Some(Framing::LengthField {
                offset: 1,
                width: 2,
                big_endian: true,
                adjustment: -2,
                strip_bytes: Some(0),
            }))
        );
        assert_eq!(parse_framing("line"), Ok(Some(delimiter("\n", true))));
        assert_eq!(parse_framing("line-keep"), Ok(Some(delimiter("\n", false))));
        assert_eq!(
            parse_framing("delimiter:\\r\\n"),
            Ok(Some(delimiter("\r\n", true)))
        );
        assert_eq!(
            parse_framing("delimiter:a:b"),
            Ok(Some(delimiter("a:b", true)))
        );
        assert_eq!(
            parse_framing("delimiter:\\0\\t\\\\\\x7f"),
            Ok(Some(delimiter("\0\t\\\x7f", true)))
        );
        assert_eq!(
            parse_framing("delimiter-keep:;"),
            Ok(Some(delimiter(";", false)))
        );
        assert_eq!(
            parse_framing("fixed:16"),
            Ok(Some(Framing::FixedLength { frame_bytes: 16 }))
        );
        assert_eq!(parse_framing("none"), Ok(None));
    }

    #[test]
    fn bad_framing_specs_say_what_is_accepted() {
        for (bad, needle) in [
            ("length:3", "1, 2, 4 or 8"),
            ("length", "unknown framing"),
            ("length:2:middle", "unknown length framing option"),
            ("length:2:offset=x", "not a number"),
            ("fixed:0", "at least 1"),
            ("fixed:", "at least 1"),
            ("delimiter:", "empty"),
            ("delimiter:\\q", "unknown escape"),
            ("delimiter:\\xzz", "not an ASCII byte"),
            ("delimiter:\\xff", "not an ASCII byte"),
            ("json", "unknown framing"),
            ("line:x", "unknown framing"),
        ] {
            let e = parse_framing(bad).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn summaries_parse_back_to_the_same_framing() {
        for spec in [
            "length:2",
            "length:4:le",
            "length:1:offset=3:adjust=-1:strip=4",
            "line",
            "line-keep",
            "delimiter:\\r\\n",
            "delimiter-keep:\\x20end",
            "fixed:9",
            "none",
        ] {
            let framing = parse_framing(spec).unwrap();
            assert_eq!(framing_summary(framing.as_ref()), spec);
        }
    }

    #[test]
    fn identities_parse_and_print() {
        for spec in ["login-frame", "peer-address", "payload-prefix:12"] {
            let identity = parse_identity(spec).unwrap();
            assert_eq!(identity_summary(&identity), spec);
        }
        assert!(parse_identity("payload-prefix:0").is_err());
        assert!(parse_identity("token").unwrap_err().contains("login-frame"));
    }
}
