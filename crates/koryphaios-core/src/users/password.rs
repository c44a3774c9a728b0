//! Password policy and Argon2id hashing.
//!
//! Hashing runs on the blocking pool (it is deliberately slow), and verifying a login for an
//! unknown user runs against a dummy hash with the same parameters, so response time does not
//! tell an attacker which usernames exist.

use std::sync::Arc;

use argon2::password_hash::phc::PasswordHash as PhcHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::OnceCell;

use crate::validation::FieldError;

/// A stored Argon2id hash in PHC string form. Not secret, but never shown to clients.
#[derive(Clone)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// Wraps a PHC string read from storage.
    pub fn from_stored(phc: String) -> Self {
        Self(phc)
    }

    /// The PHC string, for storage.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash(<redacted>)")
    }
}

/// The rules a new password must meet: long rather than complicated (NIST SP 800-63B).
#[derive(Debug, Clone, Copy)]
pub struct PasswordPolicy;

impl PasswordPolicy {
    /// The shortest accepted password, in characters.
    pub const MIN_LEN: usize = 12;
    /// The longest accepted password, in characters (bounds hashing cost).
    pub const MAX_LEN: usize = 128;
    /// How many different characters a password needs at least.
    pub const MIN_DISTINCT: usize = 5;

    /// Checks `password` for the user `username`; `field` names the JSON field in errors.
    pub fn check(field: &str, password: &SecretString, username: &str) -> Result<(), FieldError> {
        let password = password.expose_secret();
        let length = password.chars().count();
        if !(Self::MIN_LEN..=Self::MAX_LEN).contains(&length) {
            return Err(FieldError::new(
                field,
                format!(
                    "must be {} to {} characters long",
                    Self::MIN_LEN,
                    Self::MAX_LEN
                ),
            ));
        }
        let mut distinct: Vec<char> = password.chars().collect();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() < Self::MIN_DISTINCT {
            return Err(FieldError::new(
                field,
                format!(
                    "must contain at least {} different characters",
                    Self::MIN_DISTINCT
                ),
            ));
        }
        if !username.is_empty() && password.to_lowercase().contains(&username.to_lowercase()) {
            return Err(FieldError::new(field, "must not contain the username"));
        }
        Ok(())
    }
}

/// Errors from hashing, which only a broken runtime or parameter set can cause.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Argon2 refused its input or parameters.
    #[error("password hashing failed: {0}")]
    Argon2(String),
    /// The blocking task panicked or was cancelled.
    #[error("password hashing task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// Too many hashes are running; the caller should retry later (503).
    #[error("too many password hashes in progress")]
    Busy,
}

/// How long a login waits for a hashing slot before giving up with "busy".
const SLOT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Hashes and verifies passwords with Argon2id.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    dummy: Arc<OnceCell<PasswordHash>>,
    // Argon2id is memory-hard by design (19 MiB each by default): bound how many run at once,
    // so a login flood cannot exhaust memory or the blocking pool.
    slots: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("m_cost", &self.params.m_cost())
            .field("t_cost", &self.params.t_cost())
            .finish_non_exhaustive()
    }
}

impl Default for PasswordHasher {
    fn default() -> Self {
        Self::new(Params::default())
    }
}

impl PasswordHasher {
    /// A hasher with explicit Argon2id parameters (tests use cheaper ones).
    pub fn new(params: Params) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        Self {
            params,
            dummy: Arc::new(OnceCell::new()),
            slots: Arc::new(tokio::sync::Semaphore::new(cores * 2)),
        }
    }

    async fn slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, HashError> {
        tokio::time::timeout(SLOT_WAIT, Arc::clone(&self.slots).acquire_owned())
            .await
            .map_err(|_| HashError::Busy)?
            .map_err(|_| HashError::Busy)
    }

    /// A hasher with the cheapest parameters Argon2 allows: for tests only, never production.
    pub fn insecure_fast_for_tests() -> Self {
        // 8 KiB, one pass: Params::new cannot fail for these documented minimums.
        let params = Params::new(8, 1, 1, None).unwrap_or_default();
        Self::new(params)
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// Hashes a password with a fresh random salt.
    pub async fn hash(&self, password: &SecretString) -> Result<PasswordHash, HashError> {
        let argon2 = self.argon2();
        let password = password.clone();
        let permit = self.slot().await?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            argon2
                .hash_password(password.expose_secret().as_bytes())
                .map(|hash: PhcHash| PasswordHash(hash.to_string()))
                .map_err(|e| HashError::Argon2(e.to_string()))
        })
        .await?
    }

    /// Whether `password` matches `stored`. A malformed stored hash never matches.
    pub async fn verify(
        &self,
        password: &SecretString,
        stored: &PasswordHash,
    ) -> Result<bool, HashError> {
        let argon2 = self.argon2();
        let password = password.clone();
        let stored = stored.clone();
        let permit = self.slot().await?;
        let matched = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            PhcHash::new(stored.as_str())
                .map(|parsed| {
                    argon2
                        .verify_password(password.expose_secret().as_bytes(), &parsed)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await?;
        Ok(matched)
    }

    /// Spends the time of one verification without a user: called for unknown usernames.
    pub async fn verify_dummy(&self, password: &SecretString) -> Result<(), HashError> {
        let dummy = self
            .dummy
            .get_or_try_init(|| async {
                self.hash(&SecretString::from("koryphaios-timing-equaliser"))
                    .await
            })
            .await?
            .clone();
        self.verify(password, &dummy).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s)
    }

    #[test]
    fn policy_rejects_short_repetitive_and_name_containing_passwords() {
        assert!(PasswordPolicy::check("password", &secret("short"), "ada").is_err());
        assert!(PasswordPolicy::check("password", &secret("aaaaaaaaaaaaaaaa"), "ada").is_err());
        assert!(PasswordPolicy::check("password", &secret("my-ADA-password-1"), "ada").is_err());
        assert!(PasswordPolicy::check("password", &secret(&"ab3$e".repeat(26)), "ada").is_err());
        assert!(PasswordPolicy::check("password", &secret("correct horse battery"), "ada").is_ok());
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_nothing_else() {
        let hasher = PasswordHasher::insecure_fast_for_tests();
        let hash = hasher.hash(&secret("correct horse battery")).await.unwrap();
        assert!(hash.as_str().starts_with("$argon2id$"));
        assert!(
            hasher
                .verify(&secret("correct horse battery"), &hash)
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify(&secret("correct horse batterY"), &hash)
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify(&secret("x"), &PasswordHash::from_stored("garbage".into()))
                .await
                .unwrap()
        );
        hasher.verify_dummy(&secret("anything")).await.unwrap();
    }

    #[test]
    fn debug_output_hides_the_hash() {
        let shown = format!(
            "{:?}",
            PasswordHash::from_stored("$argon2id$v=19$abc".into())
        );
        assert!(!shown.contains("argon2id"));
    }
}
