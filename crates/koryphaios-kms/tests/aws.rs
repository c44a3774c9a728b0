//! The `aws` key provider against the real AWS KMS emulator, moto_server (`scripts/moto.sh`), at
//! `KORYPHAIOS_TEST_AWS_ENDPOINT` (`scripts/test.sh` sets it). Each test creates its own key.
//! The tests that need no KMS (settings, an unreachable endpoint) always run.
#![expect(clippy::unwrap_used, clippy::print_stdout)]

use std::time::Instant;

use aws_config::{BehaviorVersion, ConfigLoader};
use aws_sdk_kms::config::{Credentials, Region};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use koryphaios_core::envelope::{Dek, KeyProvider, KmsError};
use koryphaios_core::ids::UserId;
use koryphaios_kms::{AwsKms, AwsKmsSettings};

mod fakes;

const ENDPOINT_VAR: &str = "KORYPHAIOS_TEST_AWS_ENDPOINT";

/// The emulator's endpoint, or `None` (with a note) when the variable is unset.
fn endpoint() -> Option<String> {
    match std::env::var(ENDPOINT_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            println!(
                "skipped: {ENDPOINT_VAR} is not set (scripts/test.sh starts moto and sets it)"
            );
            None
        }
    }
}

/// aws-config with fake credentials, as the default chain would find in `AWS_ACCESS_KEY_ID=testing`.
fn loader() -> ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest())
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
}

fn settings(key_id: &str, endpoint: &str) -> AwsKmsSettings {
    AwsKmsSettings {
        key_id: key_id.into(),
        region: Some("us-east-1".into()),
        endpoint_url: Some(endpoint.into()),
    }
}

/// A plain SDK client on the emulator, to set keys up.
async fn admin(endpoint: &str) -> aws_sdk_kms::Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let shared = loader()
        .http_client(http)
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .load()
        .await;
    aws_sdk_kms::Client::new(&shared)
}

/// A fresh symmetric key on the emulator and a provider on it.
async fn provider(endpoint: &str) -> (AwsKms, String) {
    let created = admin(endpoint).await.create_key().send().await.unwrap();
    let key_id = created.key_metadata().unwrap().key_id().to_owned();
    let kms = AwsKms::connect_with(settings(&key_id, endpoint), loader())
        .await
        .unwrap();
    (kms, key_id)
}

#[tokio::test]
async fn aws_wrap_unwrap_round_trip() {
    let Some(endpoint) = endpoint() else { return };
    let (kms, key_id) = provider(&endpoint).await;
    kms.check().await.unwrap();
    let owner = UserId::generate();
    let dek = Dek::generate().unwrap();
    let wrapped = kms.wrap(&dek, &owner).await.unwrap();
    assert_eq!(wrapped.provider, "aws");
    assert_eq!(wrapped.kek_id, key_id);
    assert_eq!(wrapped.kek_version, 1);
    assert_eq!(kms.kek_id(), key_id);
    let back = kms.unwrap(&wrapped, &owner).await.unwrap();
    assert_eq!(back.expose_bytes(), dek.expose_bytes());
}

#[tokio::test]
async fn aws_an_alias_works_as_the_key_id() {
    let Some(endpoint) = endpoint() else { return };
    let (_, key_id) = provider(&endpoint).await;
    let alias = format!("alias/koryphaios-{}", &key_id[..8]);
    admin(&endpoint)
        .await
        .create_alias()
        .alias_name(&alias)
        .target_key_id(&key_id)
        .send()
        .await
        .unwrap();
    let kms = AwsKms::connect_with(settings(&alias, &endpoint), loader())
        .await
        .unwrap();
    kms.check().await.unwrap();
    let owner = UserId::generate();
    let dek = Dek::generate().unwrap();
    let wrapped = kms.wrap(&dek, &owner).await.unwrap();
    assert_eq!(wrapped.kek_id, alias);
    let back = kms.unwrap(&wrapped, &owner).await.unwrap();
    assert_eq!(back.expose_bytes(), dek.expose_bytes());
}

#[tokio::test]
async fn aws_another_owner_cannot_unwrap() {
    let Some(endpoint) = endpoint() else { return };
    let (kms, _) = provider(&endpoint).await;
    let dek = Dek::generate().unwrap();
    let wrapped = kms.wrap(&dek, &UserId::generate()).await.unwrap();
    let error = kms.unwrap(&wrapped, &UserId::generate()).await.unwrap_err();
    assert!(matches!(error, KmsError::Unauthentic), "{error:?}");
}

#[tokio::test]
async fn aws_tampered_ciphertext_is_unauthentic() {
    let Some(endpoint) = endpoint() else { return };
    let (kms, _) = provider(&endpoint).await;
    let owner = UserId::generate();
    let mut wrapped = kms.wrap(&Dek::generate().unwrap(), &owner).await.unwrap();
    let last = wrapped.ciphertext.len() - 1;
    wrapped.ciphertext[last] ^= 0x01;
    let error = kms.unwrap(&wrapped, &owner).await.unwrap_err();
    assert!(matches!(error, KmsError::Unauthentic), "{error:?}");
    wrapped.ciphertext = b"not a ciphertext blob".to_vec();
    let error = kms.unwrap(&wrapped, &owner).await.unwrap_err();
    assert!(matches!(error, KmsError::Unauthentic), "{error:?}");
}

#[tokio::test]
async fn aws_a_wrong_key_id_names_the_setting() {
    let Some(endpoint) = endpoint() else { return };
    let missing = "11111111-2222-3333-4444-555555555555";
    let kms = AwsKms::connect_with(settings(missing, &endpoint), loader())
        .await
        .unwrap();
    for error in [
        kms.check().await.unwrap_err(),
        kms.wrap(&Dek::generate().unwrap(), &UserId::generate())
            .await
            .unwrap_err(),
    ] {
        assert!(matches!(error, KmsError::Internal(_)), "{error:?}");
        let text = error.to_string();
        assert!(text.contains("AWS_KMS_KEY_ID"), "{text}");
        assert!(text.contains(missing), "{text}");
        assert!(!text.contains("testing"), "no credential in errors: {text}");
    }
}

#[tokio::test]
async fn aws_a_disabled_key_fails_the_check() {
    let Some(endpoint) = endpoint() else { return };
    let (kms, key_id) = provider(&endpoint).await;
    admin(&endpoint)
        .await
        .disable_key()
        .key_id(&key_id)
        .send()
        .await
        .unwrap();
    let text = kms.check().await.unwrap_err().to_string();
    assert!(
        text.contains("AWS_KMS_KEY_ID") && text.contains("not enabled"),
        "{text}"
    );
}

#[tokio::test]
async fn aws_rotation_and_rewrap_keep_old_wraps_unwrappable() {
    let Some(endpoint) = endpoint() else { return };
    let (kms, key_id) = provider(&endpoint).await;
    let owner = UserId::generate();
    let dek = Dek::generate().unwrap();
    let before = kms.wrap(&dek, &owner).await.unwrap();

    assert_eq!(kms.rotate().await.unwrap(), 1);
    let rotations = admin(&endpoint)
        .await
        .list_key_rotations()
        .key_id(&key_id)
        .send()
        .await
        .unwrap();
    assert_eq!(rotations.rotations().len(), 1);
    let versions = kms.versions().await.unwrap();
    assert_eq!(versions.len(), 1);
    assert!(versions[0].current && !versions[0].retired);

    assert_eq!(
        kms.unwrap(&before, &owner).await.unwrap().expose_bytes(),
        dek.expose_bytes()
    );
    let rewrapped = kms.rewrap(&before, &owner).await.unwrap();
    assert_ne!(rewrapped.ciphertext, before.ciphertext);
    assert_eq!(
        kms.unwrap(&rewrapped, &owner).await.unwrap().expose_bytes(),
        dek.expose_bytes()
    );
    assert_eq!(
        kms.unwrap(&before, &owner).await.unwrap().expose_bytes(),
        dek.expose_bytes()
    );
    // The rewrap keeps the owner binding.
    let error = kms.rewrap(&before, &UserId::generate()).await.unwrap_err();
    assert!(matches!(error, KmsError::Unauthentic), "{error:?}");
    let error = kms.retire(1).await.unwrap_err();
    assert!(matches!(error, KmsError::Refused(_)), "{error:?}");
}

#[tokio::test]
async fn aws_rewrap_moves_wraps_to_a_new_key() {
    let Some(endpoint) = endpoint() else { return };
    let (old, _) = provider(&endpoint).await;
    let (new, new_id) = provider(&endpoint).await;
    let owner = UserId::generate();
    let dek = Dek::generate().unwrap();
    let wrapped = old.wrap(&dek, &owner).await.unwrap();
    // The new provider still unwraps the old key's wraps (the stored key id is used) …
    assert_eq!(
        new.unwrap(&wrapped, &owner).await.unwrap().expose_bytes(),
        dek.expose_bytes()
    );
    // … and rewraps them under its own key.
    let moved = new.rewrap(&wrapped, &owner).await.unwrap();
    assert_eq!(moved.kek_id, new_id);
    assert_eq!(
        new.unwrap(&moved, &owner).await.unwrap().expose_bytes(),
        dek.expose_bytes()
    );
}

#[tokio::test]
async fn aws_a_wrap_of_another_provider_is_the_wrong_key() {
    let kms = AwsKms::connect_with(settings("alias/any", "http://127.0.0.1:1"), loader())
        .await
        .unwrap();
    let wrapped = koryphaios_core::envelope::WrappedDek {
        provider: "local".into(),
        kek_id: "ring".into(),
        kek_version: 1,
        ciphertext: vec![1, 2, 3],
    };
    let error = kms.unwrap(&wrapped, &UserId::generate()).await.unwrap_err();
    assert!(matches!(error, KmsError::WrongKey { .. }), "{error:?}");
}

#[tokio::test]
async fn aws_kms_down_at_start_is_unavailable_quickly() {
    let endpoint = format!("http://127.0.0.1:{}", fakes::closed_port());
    let started = Instant::now();
    let kms = AwsKms::connect_with(settings("alias/koryphaios", &endpoint), loader())
        .await
        .expect("connect does not need the KMS");
    fakes::unavailable_quickly(&kms, started).await;
}

#[test]
fn aws_settings_come_from_the_standard_variables() {
    let settings = AwsKmsSettings::from_lookup(&fakes::env(&[
        ("AWS_KMS_KEY_ID", "alias/koryphaios"),
        ("AWS_REGION", "eu-west-1"),
        ("AWS_ENDPOINT_URL", "http://general:1"),
        ("AWS_ENDPOINT_URL_KMS", "http://kms:2"),
    ]))
    .unwrap();
    assert_eq!(settings.key_id, "alias/koryphaios");
    assert_eq!(settings.region.as_deref(), Some("eu-west-1"));
    assert_eq!(settings.endpoint_url.as_deref(), Some("http://kms:2"));

    let missing =
        AwsKmsSettings::from_lookup(&fakes::env(&[("AWS_REGION", "eu-west-1")])).unwrap_err();
    assert!(missing.to_string().contains("AWS_KMS_KEY_ID"), "{missing}");
    let bad = AwsKmsSettings::from_lookup(&fakes::env(&[
        ("AWS_KMS_KEY_ID", "k"),
        ("AWS_ENDPOINT_URL", "kms.local"),
    ]))
    .unwrap_err();
    assert!(bad.to_string().contains("AWS_ENDPOINT_URL"), "{bad}");
}

#[tokio::test]
#[expect(deprecated)] // ProfileFiles: aws-config's own name for aws_runtime's EnvConfigFiles.
async fn aws_connect_without_a_region_names_aws_region() {
    let settings = AwsKmsSettings::new("alias/koryphaios");
    // No region in the settings; the test environment may still have one from the chain.
    if std::env::var("AWS_REGION").is_ok() || std::env::var("AWS_DEFAULT_REGION").is_ok() {
        return;
    }
    use aws_config::profile::profile_file::{ProfileFileKind, ProfileFiles};
    let no_profiles = ProfileFiles::builder()
        .include_default_config_file(false)
        .include_default_credentials_file(false)
        .with_contents(ProfileFileKind::Config, "")
        .build();
    let loader = loader().profile_files(no_profiles);
    match AwsKms::connect_with(settings, loader).await {
        Err(error) => assert!(error.to_string().contains("AWS_REGION"), "{error}"),
        Ok(_) => panic!("a missing region must be refused"),
    }
}
