//! Envelope encryption (SPEC §3).
//!
//! Every credential version gets its own random 256-bit data-encryption key (DEK). The secret is
//! sealed with AES-256-GCM under the DEK with a 96-bit random nonce and associated data binding
//! it to user, credential, version and provider, so a ciphertext copied to another row fails to
//! open. The DEK itself is wrapped by a [`KeyProvider`] under a per-user key-encryption key; the
//! wrapped DEK travels with its provider, KEK id and KEK version.

pub mod hierarchy;
mod provider;
pub mod rotation;

pub use provider::{KeyProvider, KeyVersionInfo, KmsError, WrappedDek};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use secrecy::{ExposeSecret, SecretBox};
use zeroize::Zeroizing;

use crate::ids::{CredentialId, UserId};
use crate::secret::{RandomError, random_bytes};

/// Bytes of an AES-GCM nonce.
pub const NONCE_LEN: usize = 12;
/// Bytes of an AES-GCM tag.
pub const TAG_LEN: usize = 16;
/// Bytes of a DEK.
pub const DEK_LEN: usize = 32;

/// Why sealing or opening failed. Deliberately says nothing about the plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The stored bytes are too short or malformed to be a sealed secret.
    #[error("sealed data is malformed")]
    Malformed,
    /// Authentication failed: wrong key, tampered data, or data that belongs to another row.
    #[error("sealed data does not authenticate under this key and context")]
    Unauthentic,
    /// The random source failed.
    #[error("random source failed")]
    Random,
    /// A key had the wrong length.
    #[error("a key has the wrong length")]
    KeyLength,
}

impl From<RandomError> for EnvelopeError {
    fn from(_: RandomError) -> Self {
        EnvelopeError::Random
    }
}

/// A data-encryption key: redacted in `Debug`, zeroized on drop.
pub struct Dek(SecretBox<[u8; DEK_LEN]>);

impl std::fmt::Debug for Dek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dek(<redacted>)")
    }
}

impl Dek {
    /// A fresh random key.
    pub fn generate() -> Result<Self, EnvelopeError> {
        let bytes = random_bytes::<DEK_LEN>()?;
        Ok(Self(SecretBox::new(Box::new(bytes))))
    }

    /// A key from exactly 32 bytes (as unwrapped by a KMS).
    pub fn from_slice(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let array: [u8; DEK_LEN] = bytes.try_into().map_err(|_| EnvelopeError::KeyLength)?;
        Ok(Self(SecretBox::new(Box::new(array))))
    }

    /// The key bytes, for a KMS to wrap. Never log them.
    pub fn expose_bytes(&self) -> &[u8; DEK_LEN] {
        self.0.expose_secret()
    }
}

/// What a sealed credential secret is bound to.
#[derive(Debug, Clone, Copy)]
pub struct SecretContext<'a> {
    /// The owner.
    pub user_id: &'a UserId,
    /// The credential.
    pub credential_id: &'a CredentialId,
    /// The credential version.
    pub version: i64,
    /// The provider (`openai`, …).
    pub provider: &'a str,
}

impl SecretContext<'_> {
    /// The associated data: a labelled, length-prefixed encoding (no field can bleed into the next).
    pub fn associated_data(&self) -> Vec<u8> {
        let mut aad = b"koryphaios/credential-secret/v1".to_vec();
        for field in [
            self.user_id.as_str().as_bytes(),
            self.credential_id.as_str().as_bytes(),
            &self.version.to_be_bytes(),
            self.provider.as_bytes(),
        ] {
            aad.extend_from_slice(&(field.len() as u32).to_be_bytes());
            aad.extend_from_slice(field);
        }
        aad
    }
}

/// AES-256-GCM with a random nonce: returns `nonce ‖ ciphertext ‖ tag`.
pub fn seal_with_key(
    key: &[u8; DEK_LEN],
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, EnvelopeError> {
    let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| EnvelopeError::KeyLength)?;
    let nonce_bytes = random_bytes::<NONCE_LEN>()?;
    let nonce = Nonce::from(nonce_bytes);
    let ciphertext = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| EnvelopeError::Unauthentic)?;
    let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
    out.extend_from_slice(&nonce_bytes);
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

/// The inverse of [`seal_with_key`]; checks lengths before touching the bytes.
pub fn open_with_key(
    key: &[u8; DEK_LEN],
    sealed: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(EnvelopeError::Malformed);
    }
    let (nonce_bytes, ciphertext) = sealed.split_at(NONCE_LEN);
    let nonce_array: [u8; NONCE_LEN] = nonce_bytes
        .try_into()
        .map_err(|_| EnvelopeError::Malformed)?;
    let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| EnvelopeError::KeyLength)?;
    cipher
        .decrypt(
            &Nonce::from(nonce_array),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| EnvelopeError::Unauthentic)
}

/// Seals a credential secret under `dek`, bound to `context`.
pub fn seal_secret(
    dek: &Dek,
    secret: &[u8],
    context: &SecretContext<'_>,
) -> Result<Vec<u8>, EnvelopeError> {
    seal_with_key(dek.expose_bytes(), secret, &context.associated_data())
}

/// Opens a credential secret sealed by [`seal_secret`] for exactly this `context`.
pub fn open_secret(
    dek: &Dek,
    sealed: &[u8],
    context: &SecretContext<'_>,
) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
    open_with_key(dek.expose_bytes(), sealed, &context.associated_data())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (UserId, CredentialId) {
        (UserId::generate(), CredentialId::generate())
    }

    #[test]
    fn a_sealed_secret_opens_only_in_its_own_context() {
        let (user, cred) = ids();
        let dek = Dek::generate().unwrap();
        let context = SecretContext {
            user_id: &user,
            credential_id: &cred,
            version: 1,
            provider: "openai",
        };
        let sealed = seal_secret(&dek, b"sk-live-123", &context).unwrap();
        assert_eq!(
            open_secret(&dek, &sealed, &context).unwrap().as_slice(),
            b"sk-live-123"
        );
        assert!(!sealed.windows(11).any(|w| w == b"sk-live-123"));

        let other_user = UserId::generate();
        let other_cred = CredentialId::generate();
        let moved = [
            SecretContext {
                user_id: &other_user,
                ..context
            },
            SecretContext {
                credential_id: &other_cred,
                ..context
            },
            SecretContext {
                version: 2,
                ..context
            },
            SecretContext {
                provider: "anthropic",
                ..context
            },
        ];
        for wrong in moved {
            assert_eq!(
                open_secret(&dek, &sealed, &wrong).unwrap_err(),
                EnvelopeError::Unauthentic
            );
        }
        let other_key = Dek::generate().unwrap();
        assert_eq!(
            open_secret(&other_key, &sealed, &context).unwrap_err(),
            EnvelopeError::Unauthentic
        );
    }

    #[test]
    fn tampered_or_truncated_data_is_refused_without_panicking() {
        let (user, cred) = ids();
        let dek = Dek::generate().unwrap();
        let context = SecretContext {
            user_id: &user,
            credential_id: &cred,
            version: 1,
            provider: "openai",
        };
        let sealed = seal_secret(&dek, b"secret", &context).unwrap();
        for i in 0..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[i] ^= 0x01;
            assert!(open_secret(&dek, &tampered, &context).is_err());
        }
        for len in 0..NONCE_LEN + TAG_LEN {
            assert_eq!(
                open_secret(&dek, &sealed[..len], &context).unwrap_err(),
                EnvelopeError::Malformed
            );
        }
    }

    #[test]
    fn nonces_are_fresh_for_every_seal() {
        let (user, cred) = ids();
        let dek = Dek::generate().unwrap();
        let context = SecretContext {
            user_id: &user,
            credential_id: &cred,
            version: 1,
            provider: "openai",
        };
        let a = seal_secret(&dek, b"same", &context).unwrap();
        let b = seal_secret(&dek, b"same", &context).unwrap();
        assert_ne!(a[..NONCE_LEN], b[..NONCE_LEN]);
    }

    #[test]
    fn associated_data_fields_cannot_bleed_into_each_other() {
        let user = UserId::generate();
        let cred = CredentialId::generate();
        let a = SecretContext {
            user_id: &user,
            credential_id: &cred,
            version: 1,
            provider: "ab",
        }
        .associated_data();
        let b = SecretContext {
            user_id: &user,
            credential_id: &cred,
            version: 1,
            provider: "a",
        }
        .associated_data();
        assert_ne!(a, b);
    }

    #[test]
    fn deks_are_redacted_in_debug_output() {
        let dek = Dek::from_slice(&[0x41; 32]).unwrap();
        assert_eq!(format!("{dek:?}"), "Dek(<redacted>)");
        assert_eq!(
            Dek::from_slice(&[0; 31]).unwrap_err(),
            EnvelopeError::KeyLength
        );
    }
}
