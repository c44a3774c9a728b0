//! The `aws` key provider: AWS KMS through the official SDK.
//!
//! - **wrap** = `Encrypt` under `AWS_KMS_KEY_ID` with the encryption context
//!   `{"koryphaios:owner": "koryphaios/owner/v1|<user id>"}`; **unwrap** = `Decrypt` with the same
//!   context and the stored key id, so a wrap for one owner does not unwrap for another (KMS
//!   answers `InvalidCiphertextException` → [`KmsError::Unauthentic`]). **rewrap** = `ReEncrypt`
//!   (the DEK never leaves KMS).
//! - **kek_id** is `AWS_KMS_KEY_ID` *as given* (id, ARN or alias), not the resolved ARN: it is
//!   known without a network call and stays stable, so `kms rewrap` finds exactly the wraps made
//!   under another setting. Unwrap passes the stored id as `KeyId`; with an alias that means
//!   re-pointing the alias to another key needs a rewrap *before* it (prefer a key ARN).
//! - **versions**: AWS keeps every generation of a key's material and `Decrypt` picks the right
//!   one, so the provider reports one version (1, current). `rotate()` calls `RotateKeyOnDemand`
//!   (new material for new wraps; old wraps keep unwrapping) and returns 1; `retire()` is refused
//!   (AWS never deletes a key's old material: disable or schedule deletion of the key in AWS).
//! - **check** = `DescribeKey`: the key exists, is enabled, and is a symmetric encryption key.
//! - Timeouts: connect 2 s, each attempt 3 s, the whole operation 5 s, 2 attempts, so a KMS that
//!   is down fails fast with [`KmsError::Unavailable`]. TLS: rustls with ring (no aws-lc build).

mod error;
mod settings;

pub use settings::AwsKmsSettings;

use std::time::Duration;

use async_trait::async_trait;
use aws_config::{BehaviorVersion, ConfigLoader};
use aws_sdk_kms::Client;
use aws_sdk_kms::config::Region;
use aws_sdk_kms::config::retry::RetryConfig;
use aws_sdk_kms::config::timeout::TimeoutConfig;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, KeyState, KeyUsageType};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use koryphaios_core::envelope::{Dek, KeyProvider, KeyVersionInfo, KmsError, WrappedDek};
use koryphaios_core::ids::UserId;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::remote::{CONNECT_TIMEOUT, OPERATION_TIMEOUT, owner_binding};

const PROVIDER: &str = "aws";
/// The encryption-context entry that binds a wrap to its owner.
const OWNER_CONTEXT_KEY: &str = "koryphaios:owner";
/// AWS keeps key generations internally: one version as far as the envelope is concerned.
const VERSION: i64 = 1;

/// AWS KMS as a [`KeyProvider`].
#[derive(Debug, Clone)]
pub struct AwsKms {
    client: Client,
    key_id: String,
}

impl AwsKms {
    /// Builds the client from `settings` and aws-config's default chain (credentials, region,
    /// profile). Fails only on malformed settings or a missing region; it makes no network call,
    /// so an unreachable KMS shows in [`KeyProvider::check`], not here.
    pub async fn connect(settings: AwsKmsSettings) -> Result<Self, KmsError> {
        Self::connect_with(settings, aws_config::defaults(BehaviorVersion::latest())).await
    }

    /// [`AwsKms::connect`] from a prepared aws-config loader (e.g. with explicit credentials);
    /// the settings, HTTP client, timeouts and retries are applied on top of it.
    pub async fn connect_with(
        settings: AwsKmsSettings,
        loader: ConfigLoader,
    ) -> Result<Self, KmsError> {
        settings.validate()?;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_attempt_timeout(Duration::from_secs(3))
            .operation_timeout(OPERATION_TIMEOUT)
            .build();
        let retries = RetryConfig::standard()
            .with_max_attempts(2)
            .with_initial_backoff(Duration::from_millis(100))
            .with_max_backoff(Duration::from_millis(500));
        let mut loader = loader
            .http_client(http)
            .timeout_config(timeouts)
            .retry_config(retries);
        if let Some(region) = &settings.region {
            loader = loader.region(Region::new(region.clone()));
        }
        let shared = loader.load().await;
        if shared.region().is_none() {
            return Err(KmsError::Internal(
                "AWS_REGION is not set (nor a region in the AWS profile)".into(),
            ));
        }
        let mut config = aws_sdk_kms::config::Builder::from(&shared);
        if let Some(url) = &settings.endpoint_url {
            config = config.endpoint_url(url.trim_end_matches('/'));
        }
        Ok(Self {
            client: Client::from_conf(config.build()),
            key_id: settings.key_id.trim().to_owned(),
        })
    }

    fn ensure_ours(&self, wrapped: &WrappedDek) -> Result<(), KmsError> {
        if wrapped.provider == PROVIDER {
            Ok(())
        } else {
            Err(KmsError::WrongKey {
                provider: wrapped.provider.clone(),
                kek_id: wrapped.kek_id.clone(),
            })
        }
    }

    fn wrapped(&self, ciphertext: Option<&Blob>, op: &str) -> Result<WrappedDek, KmsError> {
        let ciphertext = ciphertext
            .ok_or_else(|| KmsError::Internal(format!("AWS KMS {op}: no ciphertext returned")))?;
        Ok(WrappedDek {
            provider: PROVIDER.into(),
            kek_id: self.key_id.clone(),
            kek_version: VERSION,
            ciphertext: ciphertext.as_ref().to_vec(),
        })
    }
}

#[async_trait]
impl KeyProvider for AwsKms {
    fn provider_name(&self) -> &'static str {
        PROVIDER
    }

    fn kek_id(&self) -> String {
        self.key_id.clone()
    }

    fn current_version(&self) -> i64 {
        VERSION
    }

    async fn wrap(&self, dek: &Dek, owner: &UserId) -> Result<WrappedDek, KmsError> {
        let output = self
            .client
            .encrypt()
            .key_id(&self.key_id)
            .plaintext(Blob::new(dek.expose_bytes().to_vec()))
            .encryption_context(OWNER_CONTEXT_KEY, owner_binding(owner))
            .send()
            .await
            .map_err(|e| error::map("Encrypt", &self.key_id, e))?;
        self.wrapped(output.ciphertext_blob(), "Encrypt")
    }

    async fn unwrap(&self, wrapped: &WrappedDek, owner: &UserId) -> Result<Dek, KmsError> {
        self.ensure_ours(wrapped)?;
        let output = self
            .client
            .decrypt()
            .key_id(&wrapped.kek_id)
            .ciphertext_blob(Blob::new(wrapped.ciphertext.clone()))
            .encryption_context(OWNER_CONTEXT_KEY, owner_binding(owner))
            .send()
            .await
            .map_err(|e| error::map("Decrypt", &wrapped.kek_id, e))?;
        let plaintext = Zeroizing::new(
            output
                .plaintext()
                .map(|blob| blob.as_ref().to_vec())
                .unwrap_or_default(),
        );
        Dek::from_slice(&plaintext).map_err(|_| KmsError::Unauthentic)
    }

    async fn rewrap(&self, wrapped: &WrappedDek, owner: &UserId) -> Result<WrappedDek, KmsError> {
        self.ensure_ours(wrapped)?;
        let binding = owner_binding(owner);
        let output = self
            .client
            .re_encrypt()
            .ciphertext_blob(Blob::new(wrapped.ciphertext.clone()))
            .source_key_id(&wrapped.kek_id)
            .source_encryption_context(OWNER_CONTEXT_KEY, binding.clone())
            .destination_key_id(&self.key_id)
            .destination_encryption_context(OWNER_CONTEXT_KEY, binding)
            .send()
            .await
            .map_err(|e| error::map("ReEncrypt", &wrapped.kek_id, e))?;
        self.wrapped(output.ciphertext_blob(), "ReEncrypt")
    }

    async fn versions(&self) -> Result<Vec<KeyVersionInfo>, KmsError> {
        let output = self
            .client
            .describe_key()
            .key_id(&self.key_id)
            .send()
            .await
            .map_err(|e| error::map("DescribeKey", &self.key_id, e))?;
        let created_at = output
            .key_metadata()
            .and_then(|m| m.creation_date())
            .and_then(|d| OffsetDateTime::from_unix_timestamp(d.secs()).ok())
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        Ok(vec![KeyVersionInfo {
            version: VERSION,
            created_at,
            retired: false,
            current: true,
        }])
    }

    async fn rotate(&self) -> Result<i64, KmsError> {
        self.client
            .rotate_key_on_demand()
            .key_id(&self.key_id)
            .send()
            .await
            .map_err(|e| error::map("RotateKeyOnDemand", &self.key_id, e))?;
        tracing::info!(key_id = %self.key_id, "AWS KMS key rotated on demand");
        Ok(VERSION)
    }

    async fn retire(&self, version: i64) -> Result<(), KmsError> {
        Err(KmsError::Refused(format!(
            "AWS KMS keeps every generation of a key's material (version {version} here stands for \
             all of them); to stop using a key, rewrap under a new AWS_KMS_KEY_ID, then disable or \
             schedule deletion of the old key in AWS"
        )))
    }

    async fn reload(&self) -> Result<(), KmsError> {
        Ok(())
    }

    async fn check(&self) -> Result<(), KmsError> {
        let output = self
            .client
            .describe_key()
            .key_id(&self.key_id)
            .send()
            .await
            .map_err(|e| error::map("DescribeKey", &self.key_id, e))?;
        let metadata = output.key_metadata().ok_or_else(|| {
            KmsError::Internal("AWS KMS DescribeKey: no key metadata returned".into())
        })?;
        let state = metadata.key_state();
        if !metadata.enabled() || state.is_some_and(|s| *s != KeyState::Enabled) {
            return Err(KmsError::Internal(format!(
                "AWS KMS key {:?} (AWS_KMS_KEY_ID) is not enabled (state {})",
                self.key_id,
                state.map_or("unknown", |s| s.as_str())
            )));
        }
        let usable = metadata
            .key_usage()
            .is_none_or(|u| *u == KeyUsageType::EncryptDecrypt)
            && metadata
                .key_spec()
                .is_none_or(|s| *s == KeySpec::SymmetricDefault);
        if !usable {
            return Err(KmsError::Internal(format!(
                "AWS KMS key {:?} (AWS_KMS_KEY_ID) must be a symmetric ENCRYPT_DECRYPT key",
                self.key_id
            )));
        }
        Ok(())
    }
}
