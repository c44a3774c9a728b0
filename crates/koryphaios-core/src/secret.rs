//! Secret values: redacted `Debug`, zeroized on drop, read only through `expose_secret`.
//!
//! Re-exports `secrecy` so every crate names secrets the same way, and adds the random-token
//! and hashing helpers used for refresh tokens.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
pub use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Errors from the operating system's random source.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random source failed: {0}")]
pub struct RandomError(#[from] getrandom::Error);

/// `N` bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)?;
    Ok(bytes)
}

/// A new opaque token: `prefix` followed by 32 random bytes in URL-safe base64.
pub fn random_token(prefix: &str) -> Result<SecretString, RandomError> {
    let bytes = zeroize::Zeroizing::new(random_bytes::<32>()?);
    let token = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes.as_slice()));
    Ok(SecretString::from(token))
}

/// The SHA-256 of a token, as stored instead of the token itself.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenHash(String);

impl TokenHash {
    /// Hashes a presented token.
    pub fn of(token: &str) -> Self {
        let digest = Sha256::digest(token.as_bytes());
        Self(hex(&digest))
    }

    /// Wraps a hash read back from storage.
    pub fn from_stored(hex_digest: String) -> Self {
        Self(hex_digest)
    }

    /// The lowercase hex digest.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Compares two hashes in constant time.
    pub fn matches(&self, other: &TokenHash) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A hash is not the secret, but a prefix is all a log ever needs.
        write!(f, "TokenHash({}…)", &self.0[..self.0.len().min(8)])
    }
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_tokens_differ_and_carry_their_prefix() {
        let a = random_token("krt_").unwrap();
        let b = random_token("krt_").unwrap();
        assert!(a.expose_secret().starts_with("krt_"));
        assert_eq!(a.expose_secret().len(), 4 + 43);
        assert_ne!(a.expose_secret(), b.expose_secret());
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let token = random_token("krt_").unwrap();
        let shown = format!("{token:?}");
        assert!(!shown.contains(token.expose_secret()));
    }

    #[test]
    fn token_hash_is_sha256_hex_and_compares_equal_only_for_the_same_token() {
        let hash = TokenHash::of("abc");
        assert_eq!(
            hash.as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(hash.matches(&TokenHash::of("abc")));
        assert!(!hash.matches(&TokenHash::of("abd")));
    }
}
