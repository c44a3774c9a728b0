//! Key providers for envelope encryption: the adapters of `koryphaios_core::envelope::KeyProvider`.
//!
//! - [`local::LocalKeyRing`]: master keys in a key-ring file in the data directory (mode 0600),
//!   optionally sealed with a passphrase (Argon2id); per-user KEKs derived with HMAC-SHA256.
//! - [`age::AgeKeyProvider`]: DEKs wrapped to an X25519 recipient in the real age format, so the
//!   `age` command-line tool can unwrap them with the identity file.
//!
//! Remote key-management services, each behind its own cargo feature (see `remote` for what they
//! share: the owner binding, timeouts, error mapping):
//! - `aws` → [`aws::AwsKms`]: AWS KMS through the official SDK, the owner in the encryption context.
//! - `vault` → [`vault::VaultTransit`]: HashiCorp Vault / OpenBao transit, derived keys per owner.
//! - `gcp` → [`gcp::GcpKms`]: Google Cloud KMS, the owner as additional authenticated data.
//! - `azure` → [`azure::AzureKeyVault`]: Azure Key Vault wrapKey/unwrapKey, the owner's hash
//!   wrapped with the key.
//!
//! Their constructors (`connect`) fail only on malformed settings, never because the service is
//! unreachable: `check()` reports reachability, so the server can start and say it is not ready.

pub mod age;
pub mod files;
pub mod local;

#[cfg(any(feature = "aws", feature = "vault", feature = "gcp", feature = "azure"))]
mod remote;

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "azure")]
pub mod azure;
#[cfg(feature = "gcp")]
pub mod gcp;
#[cfg(feature = "vault")]
pub mod vault;

pub use self::age::AgeKeyProvider;
pub use self::local::LocalKeyRing;

#[cfg(feature = "aws")]
pub use self::aws::{AwsKms, AwsKmsSettings};
#[cfg(feature = "azure")]
pub use self::azure::{AzureCredential, AzureKeyVault, AzureKeyVaultSettings};
#[cfg(feature = "gcp")]
pub use self::gcp::{GcpCredential, GcpKms, GcpKmsSettings};
#[cfg(feature = "vault")]
pub use self::vault::{VaultTransit, VaultTransitSettings};
