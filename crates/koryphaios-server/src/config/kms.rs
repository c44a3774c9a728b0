//! The key-provider settings: `KORYPHAIOS_KMS_PROVIDER`, each provider's own settings, and the
//! key-encryption-key rotation period.

use std::path::PathBuf;

use secrecy::{ExposeSecret as _, SecretString};

use super::{ConfigError, lookup_secret};

/// The variables read here.
pub const VARIABLES: &[&str] = &[
    "KORYPHAIOS_KMS_PROVIDER",
    "KORYPHAIOS_KMS_PASSPHRASE",
    "KORYPHAIOS_KMS_LOCAL_KEYRING",
    "KORYPHAIOS_KMS_LOCAL_KEYRING_FILE",
    "KORYPHAIOS_AGE_IDENTITY_FILE",
    "KORYPHAIOS_ENCRYPTION_KEY_ROTATION_DAYS",
    "KORYPHAIOS_VAULT_TRANSIT_MOUNT",
    "KORYPHAIOS_VAULT_TRANSIT_KEY",
    "KORYPHAIOS_GCP_KMS_KEY",
    "KORYPHAIOS_GCP_KMS_ENDPOINT",
    "KORYPHAIOS_AZURE_KEY_VAULT_URL",
    "KORYPHAIOS_AZURE_KEY_NAME",
    "KORYPHAIOS_AZURE_IMDS_ENDPOINT",
];

/// Key providers this build can use.
pub const KMS_PROVIDERS: &[&str] = &[
    "local",
    "age",
    #[cfg(feature = "aws")]
    "aws",
    #[cfg(feature = "vault")]
    "vault",
    #[cfg(feature = "gcp")]
    "gcp",
    #[cfg(feature = "azure")]
    "azure",
];
/// Key providers the product knows, each behind a cargo feature of the same name.
const KMS_PROVIDERS_KNOWN: &[&str] = &["local", "age", "aws", "vault", "gcp", "azure"];

/// Where the local key ring comes from.
#[derive(Debug, Clone)]
pub enum LocalKeyringSource {
    /// `DATA_DIR/kms/local.keyring`, created on first start.
    DataDir,
    /// `KORYPHAIOS_KMS_LOCAL_KEYRING_FILE`: an existing ring (a mounted secret), never written.
    File(PathBuf),
    /// `KORYPHAIOS_KMS_LOCAL_KEYRING`: the ring's contents, never written.
    Contents(SecretString),
}

/// Which key provider wraps the key-encryption keys.
#[derive(Debug, Clone)]
pub enum KmsConfig {
    /// The local key ring, optionally passphrase-protected.
    Local {
        /// `KORYPHAIOS_KMS_PASSPHRASE`.
        passphrase: Option<SecretString>,
        /// Where the ring is.
        keyring: LocalKeyringSource,
    },
    /// age X25519 identities.
    Age {
        /// `KORYPHAIOS_AGE_IDENTITY_FILE`; unset means `DATA_DIR/kms/age.identities`.
        identity_file: Option<PathBuf>,
    },
    /// AWS KMS (`AWS_KMS_KEY_ID`, `AWS_REGION`, the standard credential chain).
    #[cfg(feature = "aws")]
    Aws(koryphaios_kms::AwsKmsSettings),
    /// Vault / OpenBao transit (`VAULT_ADDR`, `VAULT_TOKEN`, …).
    #[cfg(feature = "vault")]
    Vault(koryphaios_kms::VaultTransitSettings),
    /// Google Cloud KMS (`KORYPHAIOS_GCP_KMS_KEY`, application default credentials).
    #[cfg(feature = "gcp")]
    Gcp(koryphaios_kms::GcpKmsSettings),
    /// Azure Key Vault (`KORYPHAIOS_AZURE_KEY_VAULT_URL`, `KORYPHAIOS_AZURE_KEY_NAME`, `AZURE_*`).
    #[cfg(feature = "azure")]
    Azure(koryphaios_kms::AzureKeyVaultSettings),
}

impl KmsConfig {
    /// Whether the provider keeps anything in the data directory.
    pub fn uses_data_dir(&self) -> bool {
        match self {
            KmsConfig::Local { keyring, .. } => matches!(keyring, LocalKeyringSource::DataDir),
            KmsConfig::Age { identity_file } => identity_file.is_none(),
            #[cfg(any(feature = "aws", feature = "vault", feature = "gcp", feature = "azure"))]
            _ => false,
        }
    }
}

/// The default rotation period of the key-encryption key.
const DEFAULT_ROTATION_DAYS: i64 = 90;

/// `KORYPHAIOS_ENCRYPTION_KEY_ROTATION_DAYS`: `None` when 0 (no automatic rotation).
pub fn parse_rotation(raw: Option<String>) -> Result<Option<time::Duration>, ConfigError> {
    let days = match raw {
        None => DEFAULT_ROTATION_DAYS,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|days| (0..=3650).contains(days))
            .ok_or_else(|| ConfigError {
                variable: "KORYPHAIOS_ENCRYPTION_KEY_ROTATION_DAYS",
                problem: format!("expected a number of days from 0 (off) to 3650, got {raw:?}"),
            })?,
    };
    Ok((days > 0).then(|| time::Duration::days(days)))
}

/// `KORYPHAIOS_KMS_PROVIDER` and the chosen provider's settings.
pub fn parse(get: &dyn Fn(&str) -> Option<String>) -> Result<KmsConfig, ConfigError> {
    let provider = get("KORYPHAIOS_KMS_PROVIDER").unwrap_or_else(|| "local".into());
    let passphrase = lookup_secret(get, "KORYPHAIOS_KMS_PASSPHRASE");
    match provider.as_str() {
        "local" => {
            if passphrase
                .as_ref()
                .is_some_and(|p| p.expose_secret().chars().count() < 12)
            {
                return Err(ConfigError {
                    variable: "KORYPHAIOS_KMS_PASSPHRASE",
                    problem: "must be at least 12 characters (its value is not shown)".into(),
                });
            }
            let keyring = match (
                lookup_secret(get, "KORYPHAIOS_KMS_LOCAL_KEYRING"),
                get("KORYPHAIOS_KMS_LOCAL_KEYRING_FILE"),
            ) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError {
                        variable: "KORYPHAIOS_KMS_LOCAL_KEYRING",
                        problem: "set it or KORYPHAIOS_KMS_LOCAL_KEYRING_FILE, not both".into(),
                    });
                }
                (Some(contents), None) => LocalKeyringSource::Contents(contents),
                (None, Some(path)) => LocalKeyringSource::File(PathBuf::from(path)),
                (None, None) => LocalKeyringSource::DataDir,
            };
            Ok(KmsConfig::Local {
                passphrase,
                keyring,
            })
        }
        "age" => {
            if passphrase.is_some() {
                return Err(ConfigError {
                    variable: "KORYPHAIOS_KMS_PASSPHRASE",
                    problem: "applies to the local provider only; protect age identities with file permissions".into(),
                });
            }
            Ok(KmsConfig::Age {
                identity_file: get("KORYPHAIOS_AGE_IDENTITY_FILE").map(PathBuf::from),
            })
        }
        #[cfg(feature = "aws")]
        "aws" => remote(koryphaios_kms::AwsKmsSettings::from_lookup(get)).map(KmsConfig::Aws),
        #[cfg(feature = "vault")]
        "vault" => {
            remote(koryphaios_kms::VaultTransitSettings::from_lookup(get)).map(KmsConfig::Vault)
        }
        #[cfg(feature = "gcp")]
        "gcp" => remote(koryphaios_kms::GcpKmsSettings::from_lookup(get)).map(KmsConfig::Gcp),
        #[cfg(feature = "azure")]
        "azure" => {
            remote(koryphaios_kms::AzureKeyVaultSettings::from_lookup(get)).map(KmsConfig::Azure)
        }
        other if KMS_PROVIDERS_KNOWN.contains(&other) => Err(ConfigError {
            variable: "KORYPHAIOS_KMS_PROVIDER",
            problem: format!(
                "{other:?} is not in this build (cargo feature `{other}`, or `remote-kms`); expected one of {}",
                KMS_PROVIDERS.join(", ")
            ),
        }),
        other => Err(ConfigError {
            variable: "KORYPHAIOS_KMS_PROVIDER",
            problem: format!(
                "expected one of {}, got {other:?}",
                KMS_PROVIDERS.join(", ")
            ),
        }),
    }
}

/// A remote provider's settings error: its message names the provider's own variable.
#[cfg(any(feature = "aws", feature = "vault", feature = "gcp", feature = "azure"))]
fn remote<T>(parsed: Result<T, koryphaios_core::envelope::KmsError>) -> Result<T, ConfigError> {
    parsed.map_err(|error| ConfigError {
        variable: "KORYPHAIOS_KMS_PROVIDER",
        problem: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with(pairs: &[(&str, &str)]) -> Result<KmsConfig, ConfigError> {
        let get = |name: &str| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        };
        parse(&get)
    }

    #[test]
    fn the_local_ring_can_come_from_a_file_or_the_environment_but_not_both() {
        assert!(matches!(
            parse_with(&[("KORYPHAIOS_KMS_LOCAL_KEYRING_FILE", "/run/secrets/ring")]),
            Ok(KmsConfig::Local { keyring: LocalKeyringSource::File(ref p), .. }) if p == &PathBuf::from("/run/secrets/ring")
        ));
        let given = parse_with(&[("KORYPHAIOS_KMS_LOCAL_KEYRING", "{\"secret\":1}")]).unwrap();
        assert!(!given.uses_data_dir());
        assert!(
            !format!("{given:?}").contains("secret\\\":1"),
            "contents are redacted"
        );
        let both = parse_with(&[
            ("KORYPHAIOS_KMS_LOCAL_KEYRING", "{\"secret\":1}"),
            ("KORYPHAIOS_KMS_LOCAL_KEYRING_FILE", "/x"),
        ])
        .unwrap_err();
        assert_eq!(both.variable, "KORYPHAIOS_KMS_LOCAL_KEYRING");
        assert!(!both.to_string().contains("secret"));
    }

    #[test]
    fn rotation_defaults_to_90_days_and_0_turns_it_off() {
        assert_eq!(
            parse_rotation(None).unwrap(),
            Some(time::Duration::days(90))
        );
        assert_eq!(parse_rotation(Some("0".into())).unwrap(), None);
        assert_eq!(
            parse_rotation(Some("7".into())).unwrap(),
            Some(time::Duration::days(7))
        );
        for bad in ["-1", "soon", "99999"] {
            let error = parse_rotation(Some(bad.into())).unwrap_err();
            assert_eq!(error.variable, "KORYPHAIOS_ENCRYPTION_KEY_ROTATION_DAYS");
        }
    }
}
