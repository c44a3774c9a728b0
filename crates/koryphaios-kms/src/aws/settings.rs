//! The AWS KMS settings, as the server reads them from the environment.

use koryphaios_core::envelope::KmsError;

use crate::remote::{optional, required};

/// Where the AWS KMS key is. Credentials are not here: they come from aws-config's default chain
/// (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, `AWS_PROFILE`, web identity,
/// ECS or EC2 instance roles), so no secret passes through this struct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsKmsSettings {
    /// `AWS_KMS_KEY_ID`: the key's id, ARN, alias (`alias/name`) or alias ARN. A symmetric
    /// `ENCRYPT_DECRYPT` key. Stored as the `kek_id` of every wrap, as given (see [`super::AwsKms`]).
    pub key_id: String,
    /// `AWS_REGION`; when unset, the default chain's (`AWS_DEFAULT_REGION`, the profile).
    pub region: Option<String>,
    /// `AWS_ENDPOINT_URL_KMS`, else `AWS_ENDPOINT_URL`: an endpoint other than AWS's own
    /// (a VPC endpoint, LocalStack, moto).
    pub endpoint_url: Option<String>,
}

impl AwsKmsSettings {
    /// The settings for `key_id`, with the region and endpoint left to the defaults.
    pub fn new(key_id: impl Into<String>) -> Self {
        Self {
            key_id: key_id.into(),
            region: None,
            endpoint_url: None,
        }
    }

    /// Reads the settings through `get` (e.g. `|name| std::env::var(name).ok()`); a missing key id
    /// or a malformed endpoint is an error naming the variable.
    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, KmsError> {
        let settings = Self {
            key_id: required(get, "AWS_KMS_KEY_ID")?,
            region: optional(get, "AWS_REGION"),
            endpoint_url: optional(get, "AWS_ENDPOINT_URL_KMS")
                .or_else(|| optional(get, "AWS_ENDPOINT_URL")),
        };
        settings.validate()?;
        Ok(settings)
    }

    /// Checks the shape of each setting (no network).
    pub fn validate(&self) -> Result<(), KmsError> {
        let key = self.key_id.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(KmsError::Internal(format!(
                "AWS_KMS_KEY_ID must be a key id, key ARN, alias or alias ARN, not {:?}",
                self.key_id
            )));
        }
        if let Some(region) = &self.region
            && (region.is_empty()
                || !region
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-'))
        {
            return Err(KmsError::Internal(format!(
                "AWS_REGION must be a region name such as eu-west-1, not {region:?}"
            )));
        }
        if let Some(url) = &self.endpoint_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(KmsError::Internal(format!(
                "AWS_ENDPOINT_URL(_KMS) must be an http:// or https:// URL, not {url:?}"
            )));
        }
        Ok(())
    }
}
