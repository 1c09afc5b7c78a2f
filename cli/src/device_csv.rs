//! The CSV format of `device import`, checked line by line.
//!
//! ```text
//! id,product,secret                  # optional header: the first line starting with `id,`
//! meter-1,meter,k3XbQ9-token-1       # a secret in clear (only its digest is sent)
//! meter-2,meter,digest=0123456789abcdef0123456789abcdef
//! ```
//!
//! Blank lines and lines starting with `#` are skipped. A line has exactly
//! three fields; fields may not contain commas; spaces and tabs around a
//! field are ignored.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::io::{self, BufRead};

use shoal_protocols::config::validate_device_id;
use shoal_protocols::control::{validate_secret, Device, SecretDigest};

/// What a line of the file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CsvLine<'a> {
    /// Blank or a comment.
    Skip,
    /// The header line.
    Header,
    /// A device.
    Device(DeviceLine<'a>),
}

/// A device line, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceLine<'a> {
    /// Its id.
    pub(crate) id: &'a str,
    /// Its product.
    pub(crate) product: &'a str,
    /// Its secret or the secret's digest.
    pub(crate) secret: SecretField<'a>,
}

/// The third field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SecretField<'a> {
    /// A secret in clear.
    Clear(&'a str),
    /// `digest=<32 hex>`.
    Digest(SecretDigest),
}

impl DeviceLine<'_> {
    /// The registry entry (a clear secret is digested here).
    pub(crate) fn to_device(&self) -> Device {
        let secret = match &self.secret {
            SecretField::Clear(s) => SecretDigest::of(self.id, s.as_bytes()),
            SecretField::Digest(d) => *d,
        };
        Device {
            id: self.id.to_owned(),
            product: self.product.to_owned(),
            secret,
        }
    }
}

/// Parses one line (without its line ending). `header_allowed` is true
/// until the first line that is not blank or a comment.
pub(crate) fn parse_line(line: &str, header_allowed: bool) -> Result<CsvLine<'_>, String> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(CsvLine::Skip);
    }
    if trimmed.starts_with("id,") {
        if header_allowed {
            return Ok(CsvLine::Header);
        }
        if trimmed.starts_with("id,product,") {
            return Err("a header line may only come before the first device".to_owned());
        }
    }
    let mut fields = trimmed.split(',').map(|f| f.trim_matches([' ', '\t']));
    let (Some(id), Some(product), Some(third), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        let found = trimmed.split(',').count();
        return Err(format!(
            "expected 3 fields (id,product,secret or id,product,digest=<32 hex>), found {found}; \
             fields may not contain commas"
        ));
    };
    validate_device_id(id)?;
    if product.is_empty() {
        return Err(format!("device {id:?}: the product is empty"));
    }
    let secret = match third.strip_prefix("digest=") {
        Some(hex) => SecretField::Digest(
            SecretDigest::from_hex(hex).map_err(|e| format!("device {id:?}: {e}"))?,
        ),
        None => {
            validate_secret(third).map_err(|e| format!("device {id:?}: {e}"))?;
            SecretField::Clear(third)
        }
    };
    Ok(CsvLine::Device(DeviceLine {
        id,
        product,
        secret,
    }))
}

/// Reads the next line into `buf` (cleared first, line ending removed);
/// false at the end.
pub(crate) fn read_line(reader: &mut dyn BufRead, buf: &mut String) -> io::Result<bool> {
    buf.clear();
    if reader.read_line(buf)? == 0 {
        return Ok(false);
    }
    if buf.ends_with('\n') {
        buf.pop();
        if buf.ends_with('\r') {
            buf.pop();
        }
    }
    Ok(true)
}

/// A failed check: the 1-based line and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LineError {
    /// The line number (0: the file as a whole).
    pub(crate) line: u64,
    /// What is wrong.
    pub(crate) reason: String,
}

/// Checks every line of a file: syntax, that the product exists, and that
/// no id comes twice. Returns the number of devices. `line_of` reads line
/// `n` again (used only to confirm a suspected duplicate).
pub(crate) fn check_file(
    reader: &mut dyn BufRead,
    products: &HashSet<String>,
    line_of: &mut dyn FnMut(u64) -> io::Result<Option<String>>,
) -> Result<u64, LineError> {
    let mut buf = String::new();
    let mut line_no = 0u64;
    let mut header_allowed = true;
    let mut devices = 0u64;
    // Hash of the id → the line it was first seen on.
    let mut seen: HashMap<u64, u64> = HashMap::new();
    let io_error = |e: io::Error, line| LineError {
        line,
        reason: format!("cannot read: {e}"),
    };
    while read_line(reader, &mut buf).map_err(|e| io_error(e, line_no + 1))? {
        line_no += 1;
        let at = |reason| LineError {
            line: line_no,
            reason,
        };
        let parsed = parse_line(&buf, header_allowed).map_err(at)?;
        let device = match parsed {
            CsvLine::Skip => continue,
            CsvLine::Header => {
                header_allowed = false;
                continue;
            }
            CsvLine::Device(d) => d,
        };
        header_allowed = false;
        if !products.contains(device.product) {
            return Err(at(format!(
                "product {:?} does not exist (add it with: shoalctl product add {})",
                device.product, device.product
            )));
        }
        let hash = id_hash(device.id);
        if let Some(&first) = seen.get(&hash) {
            let earlier = line_of(first).map_err(|e| io_error(e, first))?;
            let same = earlier
                .as_deref()
                .and_then(|l| parse_line(l, false).ok())
                .is_some_and(|l| matches!(l, CsvLine::Device(d) if d.id == device.id));
            if same {
                return Err(at(format!(
                    "device {:?} is already on line {first}",
                    device.id
                )));
            }
        } else {
            seen.insert(hash, line_no);
        }
        devices += 1;
    }
    if devices == 0 {
        return Err(LineError {
            line: 0,
            reason: "no devices in the file".to_owned(),
        });
    }
    Ok(devices)
}

fn id_hash(id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn products() -> HashSet<String> {
        ["meter".to_owned()].into()
    }

    fn check(text: &str) -> Result<u64, LineError> {
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let mut line_of = |n: u64| Ok(lines.get(n as usize - 1).cloned());
        check_file(&mut text.as_bytes(), &products(), &mut line_of)
    }

    fn error_on(text: &str) -> (u64, String) {
        let e = check(text).unwrap_err();
        (e.line, e.reason)
    }

    #[test]
    fn good_lines() {
        assert_eq!(parse_line("", true), Ok(CsvLine::Skip));
        assert_eq!(parse_line("  # comment", true), Ok(CsvLine::Skip));
        assert_eq!(parse_line("id,product,secret", true), Ok(CsvLine::Header));
        let CsvLine::Device(d) = parse_line(" m-1 , meter ,\tsecret-123 ", false).unwrap() else {
            panic!("not a device");
        };
        assert_eq!((d.id, d.product), ("m-1", "meter"));
        assert_eq!(d.secret, SecretField::Clear("secret-123"));
        assert!(d.to_device().secret.matches("m-1", b"secret-123"));

        let hex = SecretDigest::of("m-2", b"whatever-1").to_string();
        let line = format!("m-2,meter,digest={hex}");
        let CsvLine::Device(d) = parse_line(&line, true).unwrap() else {
            panic!("not a device");
        };
        assert!(d.to_device().secret.matches("m-2", b"whatever-1"));
    }

    #[test]
    fn a_whole_file_with_header_comments_and_crlf() {
        let text =
            "# fleet\r\nid,product,secret\r\n\r\nm-1,meter,secret-123\r\nm-2,meter,secret-456\n";
        assert_eq!(check(text), Ok(2));
    }

    #[test]
    fn bad_lines_name_their_line() {
        let good = "m-1,meter,secret-123\n";
        let cases = [
            ("m-2,meter\n", "expected 3 fields"),
            ("m-2,meter,secret-123,extra\n", "found 4"),
            ("a/b,meter,secret-123\n", "contains '/'"),
            (",meter,secret-123\n", "device id is empty"),
            ("m-2,,secret-123\n", "product is empty"),
            ("m-2,meter,short\n", "8 to 256 bytes"),
            ("m-2,meter,has:colon1\n", "without spaces or ':'"),
            ("m-2,meter,digest=abc\n", "32 hex digits"),
            ("m-2,pump,secret-123\n", "product \"pump\" does not exist"),
            ("m-1,meter,secret-999\n", "\"m-1\" is already on line 2"),
            ("id,product,secret\n", "header line may only come before"),
        ];
        for (bad, needle) in cases {
            // Line 1 is a comment, line 2 a good device, line 3 the bad one.
            let text = format!("# header-less\n{good}{bad}");
            let (line, reason) = error_on(&text);
            assert_eq!(line, 3, "{bad}: {reason}");
            assert!(reason.contains(needle), "{bad}: {reason}");
        }
    }

    #[test]
    fn an_empty_file_is_refused() {
        let (line, reason) = error_on("# nothing\n\n");
        assert_eq!(line, 0);
        assert!(reason.contains("no devices"));
    }
}
