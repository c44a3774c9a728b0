//! Key providers for envelope encryption: the adapters of `koryphaios_core::envelope::KeyProvider`.
//!
//! - [`local::LocalKeyRing`]: master keys in a key-ring file in the data directory (mode 0600),
//!   optionally sealed with a passphrase (Argon2id); per-user KEKs derived with HMAC-SHA256.
//! - [`age::AgeKeyProvider`]: DEKs wrapped to an X25519 recipient in the real age format, so the
//!   `age` command-line tool can unwrap them with the identity file.

pub mod age;
pub mod files;
pub mod local;

pub use self::age::AgeKeyProvider;
pub use self::local::LocalKeyRing;
