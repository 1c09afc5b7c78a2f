//! Random device secrets: 24 bytes from the kernel's random source, as 32
//! characters of URL-safe base64 (`A-Z a-z 0-9 - _`, never `:`).

use std::fs::File;
use std::io::{self, Read};

/// Random bytes in a generated secret (192 bits).
pub(crate) const SECRET_RANDOM_BYTES: usize = 24;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A new random secret.
pub(crate) fn generate() -> io::Result<String> {
    let mut bytes = [0u8; SECRET_RANDOM_BYTES];
    File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(encode(&bytes))
}

/// URL-safe base64 without padding of whole 3-byte groups (24 bytes are 8
/// groups).
fn encode(bytes: &[u8; SECRET_RANDOM_BYTES]) -> String {
    let mut out = String::with_capacity(SECRET_RANDOM_BYTES / 3 * 4);
    for group in bytes.chunks_exact(3) {
        let n = group.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
        for shift in [18u32, 12, 6, 0] {
            let index = ((n >> shift) & 0x3f) as usize;
            out.push(char::from(ALPHABET.get(index).copied().unwrap_or(b'A')));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_protocols::control::validate_secret;

    #[test]
    fn secrets_are_valid_and_different() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        validate_secret(&a).unwrap();
        assert!(!a.contains(':'));
    }

    #[test]
    fn encoding_is_base64url() {
        let mut bytes = [0u8; SECRET_RANDOM_BYTES];
        bytes[..3].copy_from_slice(&[0xfb, 0xff, 0xbf]);
        let s = encode(&bytes);
        assert!(s.starts_with("-_-_"), "{s}");
        assert!(s.ends_with("AAAA"), "{s}");
    }
}
