//! The API key format: `kor_` + 43 random base62 characters (≥ 256 bits) + a 6-character base62
//! CRC32 of everything before it. Agent tokens use the same format under their own prefix
//! (`kat_`), so both are recognisable, checksummed and parsed by one function.
//!
//! The checksum lets leaked-key scanners confirm a key offline, and lets the service reject
//! malformed keys before any lookup. Keys are stored as SHA-256; the plaintext is shown once.

use secrecy::{ExposeSecret, SecretString};

use crate::secret::{RandomError, TokenHash, random_bytes};

/// Every key starts with this.
pub const KEY_PREFIX: &str = "kor_";
/// Every agent token starts with this.
pub const TOKEN_PREFIX: &str = "kat_";
/// Random base62 characters after the prefix.
const BODY_CHARS: usize = 43;
/// Base62 characters of the checksum.
const CHECKSUM_CHARS: usize = 6;
/// The total length of a key.
pub const KEY_LEN: usize = KEY_PREFIX.len() + BODY_CHARS + CHECKSUM_CHARS;
/// How much of a key is kept for display (`kor_` + 8 characters).
const DISPLAY_PREFIX_LEN: usize = KEY_PREFIX.len() + 8;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a presented string is not a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MalformedKey {
    /// It does not start with `kor_`.
    #[error("the secret does not start with its prefix (kor_ for a key, kat_ for a token)")]
    Prefix,
    /// It is not exactly [`KEY_LEN`] characters.
    #[error("an API key is {KEY_LEN} characters long")]
    Length,
    /// It has characters outside base62.
    #[error("an API key is base62 after its prefix")]
    Alphabet,
    /// The checksum does not match.
    #[error("the API key's checksum does not match")]
    Checksum,
}

fn checksum(head: &str) -> [u8; CHECKSUM_CHARS] {
    let mut value = crc32fast::hash(head.as_bytes());
    let mut out = [b'0'; CHECKSUM_CHARS];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
    out
}

/// A syntactically valid key (checksum verified), not yet looked up.
#[derive(Debug)]
pub struct ParsedKey {
    secret: SecretString,
}

impl ParsedKey {
    /// The SHA-256 that is stored and looked up.
    pub fn hash(&self) -> TokenHash {
        TokenHash::of(self.secret.expose_secret())
    }

    /// The display prefix (`kor_` + 8 characters): safe to show and log.
    pub fn display_prefix(&self) -> String {
        self.secret.expose_secret()[..DISPLAY_PREFIX_LEN].to_owned()
    }
}

/// Checks prefix, length, alphabet and checksum of an API key, without touching storage.
pub fn parse(candidate: &str) -> Result<ParsedKey, MalformedKey> {
    parse_with(KEY_PREFIX, candidate)
}

/// Checks a secret of this format under `prefix` ([`KEY_PREFIX`] or [`TOKEN_PREFIX`]; both are
/// four characters long, so every length here holds for both).
pub fn parse_with(prefix: &str, candidate: &str) -> Result<ParsedKey, MalformedKey> {
    debug_assert_eq!(prefix.len(), KEY_PREFIX.len());
    if !candidate.starts_with(prefix) {
        return Err(MalformedKey::Prefix);
    }
    if candidate.len() != KEY_LEN {
        return Err(MalformedKey::Length);
    }
    let rest = &candidate.as_bytes()[KEY_PREFIX.len()..];
    if !rest.iter().all(u8::is_ascii_alphanumeric) {
        return Err(MalformedKey::Alphabet);
    }
    let (head, tail) = candidate.split_at(KEY_LEN - CHECKSUM_CHARS);
    // Not secret-dependent timing: the checksum is public information about the key.
    if checksum(head) != tail.as_bytes() {
        return Err(MalformedKey::Checksum);
    }
    Ok(ParsedKey {
        secret: SecretString::from(candidate),
    })
}

/// A new API key.
pub fn generate() -> Result<(SecretString, ParsedKey), RandomError> {
    generate_with(KEY_PREFIX)
}

/// A new secret of this format under `prefix`.
pub fn generate_with(prefix: &str) -> Result<(SecretString, ParsedKey), RandomError> {
    debug_assert_eq!(prefix.len(), KEY_PREFIX.len());
    let mut body = String::with_capacity(KEY_LEN);
    body.push_str(prefix);
    // Rejection sampling keeps every character uniform over the 62 symbols.
    while body.len() < KEY_PREFIX.len() + BODY_CHARS {
        for byte in random_bytes::<64>()? {
            if byte < 248 && body.len() < KEY_PREFIX.len() + BODY_CHARS {
                body.push(char::from(ALPHABET[usize::from(byte % 62)]));
            }
        }
    }
    let sum = checksum(&body);
    body.extend(sum.iter().map(|b| char::from(*b)));
    let secret = SecretString::from(body);
    let parsed = ParsedKey {
        secret: secret.clone(),
    };
    Ok((secret, parsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_differ() {
        let (a, _) = generate().unwrap();
        let (b, _) = generate().unwrap();
        assert_ne!(a.expose_secret(), b.expose_secret());
        for key in [&a, &b] {
            let key = key.expose_secret();
            assert_eq!(key.len(), KEY_LEN);
            let parsed = parse(key).unwrap();
            assert_eq!(parsed.display_prefix(), key[..12]);
            assert_eq!(parsed.hash(), TokenHash::of(key));
        }
    }

    #[test]
    fn malformed_keys_are_rejected_for_the_right_reason() {
        let (key, _) = generate().unwrap();
        let key = key.expose_secret();
        assert_eq!(parse("").unwrap_err(), MalformedKey::Prefix);
        assert_eq!(
            parse(&key.replacen("kor_", "kar_", 1)).unwrap_err(),
            MalformedKey::Prefix
        );
        assert_eq!(
            parse(&key[..KEY_LEN - 1]).unwrap_err(),
            MalformedKey::Length
        );
        assert_eq!(parse(&format!("{key}x")).unwrap_err(), MalformedKey::Length);
        let mut bad_char = key.to_owned();
        bad_char.replace_range(10..11, "-");
        assert_eq!(parse(&bad_char).unwrap_err(), MalformedKey::Alphabet);
        // One changed character anywhere is caught by the checksum.
        for position in KEY_PREFIX.len()..KEY_LEN {
            let mut flipped: Vec<u8> = key.as_bytes().to_vec();
            flipped[position] = if flipped[position] == b'a' {
                b'b'
            } else {
                b'a'
            };
            let flipped = String::from_utf8(flipped).unwrap();
            assert_eq!(
                parse(&flipped).unwrap_err(),
                MalformedKey::Checksum,
                "position {position}"
            );
        }
        assert_eq!(
            parse(&"x".repeat(10_000)).unwrap_err(),
            MalformedKey::Prefix
        );
    }

    #[test]
    fn tokens_and_keys_are_told_apart_by_prefix() {
        let (token, _) = generate_with(TOKEN_PREFIX).unwrap();
        let token = token.expose_secret();
        assert!(token.starts_with(TOKEN_PREFIX));
        assert!(parse_with(TOKEN_PREFIX, token).is_ok());
        assert_eq!(parse(token).unwrap_err(), MalformedKey::Prefix);
        // The checksum covers the prefix: a key relabelled as a token is not a token.
        let (key, _) = generate().unwrap();
        let relabelled = key.expose_secret().replacen(KEY_PREFIX, TOKEN_PREFIX, 1);
        assert_eq!(
            parse_with(TOKEN_PREFIX, &relabelled).unwrap_err(),
            MalformedKey::Checksum
        );
    }

    #[test]
    fn the_key_has_at_least_256_bits_of_entropy() {
        // 43 uniform base62 symbols: 43 × log2(62) ≈ 256.03 bits.
        assert!(43.0 * 62f64.log2() >= 256.0);
    }
}
