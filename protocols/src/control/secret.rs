//! Device secrets: only a digest is stored and sent.
//!
//! Device secrets are meant to be random tokens (at least 128 bits), so a
//! fast keyed digest protects them as well as a slow password hash would,
//! and a registry of millions of devices can be imported in seconds. The
//! digest binds the device id, so two devices with the same secret have
//! different digests.

use core::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Bytes of a [`SecretDigest`].
pub const SECRET_DIGEST_BYTES: usize = 16;
/// Most bytes of a device secret.
pub const MAX_SECRET_BYTES: usize = 256;
/// Fewest bytes of a device secret.
pub const MIN_SECRET_BYTES: usize = 8;

/// The first 128 bits of SHA-256 over a domain tag, the id's length, the
/// id and the secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SecretDigest(pub [u8; SECRET_DIGEST_BYTES]);

impl SecretDigest {
    /// The digest of `secret` for device `id`.
    pub fn of(id: &str, secret: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(b"shoal/device-secret/v1\0");
        h.update((id.len() as u64).to_be_bytes());
        h.update(id.as_bytes());
        h.update(secret);
        let full = h.finalize();
        let mut out = [0u8; SECRET_DIGEST_BYTES];
        for (o, b) in out.iter_mut().zip(full.iter()) {
            *o = *b;
        }
        Self(out)
    }

    /// Whether `secret` is device `id`'s secret. Compares every byte so
    /// the time taken does not say how many matched.
    pub fn matches(&self, id: &str, secret: &[u8]) -> bool {
        let other = Self::of(id, secret);
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    /// Parses 32 hex digits.
    pub fn from_hex(text: &str) -> Result<Self, String> {
        let bytes = text.as_bytes();
        if bytes.len() != SECRET_DIGEST_BYTES * 2 {
            return Err(format!(
                "a secret digest is {} hex digits, got {}",
                SECRET_DIGEST_BYTES * 2,
                bytes.len()
            ));
        }
        let mut out = [0u8; SECRET_DIGEST_BYTES];
        for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            let hi = hex_value(pair.first().copied());
            let lo = hex_value(pair.get(1).copied());
            match (hi, lo) {
                (Some(h), Some(l)) => *o = (h << 4) | l,
                _ => return Err(format!("{text:?} is not hex")),
            }
        }
        Ok(Self(out))
    }
}

fn hex_value(c: Option<u8>) -> Option<u8> {
    match c? {
        c @ b'0'..=b'9' => Some(c - b'0'),
        c @ b'a'..=b'f' => Some(c - b'a' + 10),
        c @ b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for SecretDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for SecretDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretDigest({self})")
    }
}

/// Checks a device secret: 8..=256 bytes of printable ASCII without space
/// or `:` (a raw TCP login frame is `{id}:{secret}`).
pub fn validate_secret(secret: &str) -> Result<(), String> {
    if secret.len() < MIN_SECRET_BYTES || secret.len() > MAX_SECRET_BYTES {
        return Err(format!(
            "a device secret has {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, got {}",
            secret.len()
        ));
    }
    if let Some(c) = secret.chars().find(|c| !c.is_ascii_graphic() || *c == ':') {
        return Err(format!(
            "a device secret is printable ASCII without spaces or ':', found {c:?}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_binds_the_id_and_round_trips_as_hex() {
        let a = SecretDigest::of("meter-1", b"s3cret-token");
        assert!(a.matches("meter-1", b"s3cret-token"));
        assert!(!a.matches("meter-1", b"s3cret-tokeN"));
        assert!(!a.matches("meter-2", b"s3cret-token"));
        assert_ne!(a, SecretDigest::of("meter-2", b"s3cret-token"));
        assert_eq!(SecretDigest::from_hex(&a.to_string()).unwrap(), a);
        assert!(SecretDigest::from_hex("zz").is_err());
        assert!(SecretDigest::from_hex(&"g".repeat(32)).is_err());
    }

    #[test]
    fn secrets() {
        assert!(validate_secret("abcdefgh").is_ok());
        assert!(validate_secret("short").is_err());
        assert!(validate_secret("has space1").is_err());
        assert!(validate_secret("has:colon").is_err());
        assert!(validate_secret(&"x".repeat(257)).is_err());
    }
}
