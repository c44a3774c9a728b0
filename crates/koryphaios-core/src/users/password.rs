//! Password policy and Argon2id hashing.
//!
//! Hashing runs on the blocking pool (it is deliberately slow), a bounded number at once, each in
//! a pooled working-memory buffer (`hash_memory`); a hash that cannot get a slot quickly fails
//! with `Busy` (503) rather than queueing. Verifying a login for an unknown user runs against a
//! dummy hash with the same parameters, so response time does not tell an attacker which
//! usernames exist.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash as PhcHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq as _;
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};
use zeroize::Zeroize as _;

use super::hash_memory::HashMemory;
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
    /// Too many hashes are running or waiting; the caller should retry later (503).
    #[error("too many password hashes in progress")]
    Busy,
}

/// How long a hash waits for a slot before giving up with "busy": a login answers quickly (a
/// fast 503 under a flood) instead of queueing for seconds.
const SLOT_WAIT: Duration = Duration::from_millis(750);
/// Waiters per slot at most; beyond, "busy" at once.
const WAITERS_PER_SLOT: usize = 16;
/// Salt length of new hashes (the Argon2 recommendation).
const SALT_LEN: usize = 16;

/// Hashes and verifies passwords with Argon2id.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    dummy: Arc<OnceCell<PasswordHash>>,
    // Argon2id is memory-hard by design (19 MiB each by default): bound how many run at once, and
    // give each running hash a pooled buffer, so a login flood cannot grow memory.
    slots: Arc<Semaphore>,
    slot_count: usize,
    waiting: Arc<AtomicUsize>,
    memory: Arc<HashMemory>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("m_cost", &self.params.m_cost())
            .field("t_cost", &self.params.t_cost())
            .field("slots", &self.slot_count)
            .finish_non_exhaustive()
    }
}

impl Default for PasswordHasher {
    fn default() -> Self {
        Self::new(Params::default())
    }
}

/// Releases a waiter's place when dropped.
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl PasswordHasher {
    /// A hasher with explicit Argon2id parameters (tests use cheaper ones); as many hashes run at
    /// once as there are cores (hashing is CPU-bound: more would only queue on the CPU).
    pub fn new(params: Params) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        Self::with_slots(params, cores.max(2))
    }

    /// A hasher running at most `slots` hashes at once.
    pub fn with_slots(params: Params, slots: usize) -> Self {
        let slots = slots.max(1);
        Self {
            memory: Arc::new(HashMemory::new(params.block_count())),
            params,
            dummy: Arc::new(OnceCell::new()),
            slots: Arc::new(Semaphore::new(slots)),
            slot_count: slots,
            waiting: Arc::new(AtomicUsize::new(0)),
        }
    }

    async fn slot(&self) -> Result<OwnedSemaphorePermit, HashError> {
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.slot_count * WAITERS_PER_SLOT {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(HashError::Busy);
        }
        let _waiting = Waiting(Arc::clone(&self.waiting));
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

    /// Runs `work` on the blocking pool with a slot and a pooled buffer of `blocks` blocks.
    async fn run<T: Send + 'static>(
        &self,
        blocks: usize,
        work: impl FnOnce(&mut [Block]) -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let permit = self.slot().await?;
        let memory = Arc::clone(&self.memory);
        let result = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut buffer = memory.take(blocks);
            let result = work(&mut buffer);
            memory.give_back(buffer);
            result
        })
        .await?;
        self.memory.release_when_idle();
        Ok(result)
    }

    /// Hashes a password with a fresh random salt.
    pub async fn hash(&self, password: &SecretString) -> Result<PasswordHash, HashError> {
        let params = self.params.clone();
        let password = password.clone();
        let mut salt = [0u8; SALT_LEN];
        getrandom::fill(&mut salt).map_err(|e| HashError::Argon2(e.to_string()))?;
        self.run(params.block_count(), move |memory| {
            hash_into(memory, &params, password.expose_secret().as_bytes(), &salt)
        })
        .await?
    }

    /// Whether `password` matches `stored`. A malformed stored hash never matches.
    pub async fn verify(
        &self,
        password: &SecretString,
        stored: &PasswordHash,
    ) -> Result<bool, HashError> {
        let Some(parsed) = ParsedHash::parse(stored.as_str()) else {
            return Ok(false);
        };
        let password = password.clone();
        self.run(parsed.params.block_count(), move |memory| {
            parsed.matches(memory, password.expose_secret().as_bytes())
        })
        .await
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

/// Computes an Argon2id hash in `memory` and formats it as a PHC string.
fn hash_into(
    memory: &mut [Block],
    params: &Params,
    password: &[u8],
    salt: &[u8],
) -> Result<PasswordHash, HashError> {
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let output_len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let mut output = vec![0u8; output_len];
    let blocks = params.block_count();
    let memory = memory
        .get_mut(..blocks)
        .ok_or_else(|| HashError::Argon2("working memory too small".into()))?;
    argon2
        .hash_password_into_with_memory(password, salt, &mut output, memory)
        .map_err(|e| HashError::Argon2(e.to_string()))?;
    let phc = PhcHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|e| HashError::Argon2(e.to_string()))?,
        salt: Some(Salt::new(salt).map_err(|e| HashError::Argon2(e.to_string()))?),
        hash: Some(Output::new(&output).map_err(|e| HashError::Argon2(e.to_string()))?),
    };
    output.zeroize();
    Ok(PasswordHash(phc.to_string()))
}

/// A stored hash taken apart: what is needed to recompute it.
struct ParsedHash {
    algorithm: Algorithm,
    version: Version,
    params: Params,
    salt: Vec<u8>,
    expected: Vec<u8>,
}

impl ParsedHash {
    fn parse(stored: &str) -> Option<Self> {
        let phc = PhcHash::new(stored).ok()?;
        let algorithm = Algorithm::try_from(phc.algorithm.as_str()).ok()?;
        let version = match phc.version {
            Some(version) => Version::try_from(version).ok()?,
            None => Version::V0x13,
        };
        let params = Params::try_from(&phc).ok()?;
        let salt = phc.salt.as_ref()?.to_vec();
        let expected = phc.hash.as_ref()?.as_bytes().to_vec();
        Some(Self {
            algorithm,
            version,
            params,
            salt,
            expected,
        })
    }

    fn matches(&self, memory: &mut [Block], password: &[u8]) -> bool {
        let argon2 = Argon2::new(self.algorithm, self.version, self.params.clone());
        let mut output = vec![0u8; self.expected.len()];
        let Some(memory) = memory.get_mut(..self.params.block_count()) else {
            return false;
        };
        let computed = argon2
            .hash_password_into_with_memory(password, &self.salt, &mut output, memory)
            .is_ok();
        let matched = computed && bool::from(output.ct_eq(&self.expected));
        output.zeroize();
        matched
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

    #[tokio::test]
    async fn hashes_interoperate_with_the_argon2_crate() {
        use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
        let params = Params::new(64, 2, 1, None).unwrap();
        let hasher = PasswordHasher::new(params.clone());
        let ours = hasher.hash(&secret("correct horse battery")).await.unwrap();
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let parsed = PhcHash::new(ours.as_str()).unwrap();
        assert!(
            argon2
                .verify_password(b"correct horse battery", &parsed)
                .is_ok()
        );
        let theirs = PasswordHash::from_stored(
            argon2
                .hash_password(b"correct horse battery")
                .unwrap()
                .to_string(),
        );
        assert!(
            hasher
                .verify(&secret("correct horse battery"), &theirs)
                .await
                .unwrap()
        );
        assert!(!hasher.verify(&secret("wrong"), &theirs).await.unwrap());
        // A stored hash with more memory than the pool's buffers still verifies.
        let stronger = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(256, 1, 1, None).unwrap(),
        );
        let stronger = PasswordHash::from_stored(
            stronger
                .hash_password(b"correct horse battery")
                .unwrap()
                .to_string(),
        );
        assert!(
            hasher
                .verify(&secret("correct horse battery"), &stronger)
                .await
                .unwrap()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_is_refused_as_busy_instead_of_queueing_without_bound() {
        // Slow enough hashes, and every attempt released at once, so the flood arrives within
        // one hash even on a loaded machine.
        let hasher = PasswordHasher::with_slots(Params::new(16 * 1024, 4, 1, None).unwrap(), 1);
        let stored = hasher.hash(&secret("correct horse battery")).await.unwrap();
        let start = Arc::new(tokio::sync::Barrier::new(100));
        let attempts: Vec<_> = (0..100)
            .map(|_| {
                let hasher = hasher.clone();
                let stored = stored.clone();
                let start = Arc::clone(&start);
                tokio::spawn(async move {
                    start.wait().await;
                    hasher.verify(&secret("guess guess guess"), &stored).await
                })
            })
            .collect();
        let mut busy = 0;
        for attempt in attempts {
            match attempt.await.unwrap() {
                Ok(matched) => assert!(!matched),
                Err(HashError::Busy) => busy += 1,
                Err(other) => panic!("unexpected {other}"),
            }
        }
        // One runs, at most 16 wait: the rest are refused at once.
        assert!(busy >= 100 - 1 - WAITERS_PER_SLOT, "only {busy} refused");
        assert!(hasher.memory.pooled() <= 1, "one slot, one buffer");
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
