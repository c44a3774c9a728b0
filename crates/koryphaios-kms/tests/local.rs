//! The local key ring against real files.
#![expect(clippy::unwrap_used, reason = "tests panic on failure")]

use std::os::unix::fs::PermissionsExt as _;

use koryphaios_core::envelope::{Dek, KeyProvider, KmsError};
use koryphaios_core::ids::UserId;
use koryphaios_kms::LocalKeyRing;
use secrecy::SecretString;

fn dek() -> Dek {
    Dek::generate().unwrap()
}

#[tokio::test]
async fn a_wrapped_dek_unwraps_for_its_owner_only_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = LocalKeyRing::default_path(dir.path());
    let ring = LocalKeyRing::open(&path, None).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (alice, bob) = (UserId::generate(), UserId::generate());
    let key = dek();
    let wrapped = ring.wrap(&key, &alice).await.unwrap();
    assert_eq!(
        (wrapped.provider.as_str(), wrapped.kek_version),
        ("local", 1)
    );
    assert_eq!(
        ring.unwrap(&wrapped, &alice).await.unwrap().expose_bytes(),
        key.expose_bytes()
    );
    assert!(matches!(
        ring.unwrap(&wrapped, &bob).await,
        Err(KmsError::Unauthentic)
    ));

    let mut tampered = wrapped.clone();
    let last = tampered.ciphertext.len() - 1;
    tampered.ciphertext[last] ^= 1;
    assert!(matches!(
        ring.unwrap(&tampered, &alice).await,
        Err(KmsError::Unauthentic)
    ));
    tampered.ciphertext.truncate(5);
    assert!(matches!(
        ring.unwrap(&tampered, &alice).await,
        Err(KmsError::Unauthentic)
    ));

    drop(ring);
    let reopened = LocalKeyRing::open(&path, None).unwrap();
    assert_eq!(
        reopened
            .unwrap(&wrapped, &alice)
            .await
            .unwrap()
            .expose_bytes(),
        key.expose_bytes()
    );
}

#[tokio::test]
async fn rotation_keeps_old_versions_until_they_are_retired() {
    let dir = tempfile::tempdir().unwrap();
    let ring = LocalKeyRing::open(&LocalKeyRing::default_path(dir.path()), None).unwrap();
    let owner = UserId::generate();
    let key = dek();
    let old = ring.wrap(&key, &owner).await.unwrap();
    assert_eq!(ring.rotate().await.unwrap(), 2);
    assert_eq!(ring.current_version(), 2);
    assert_eq!(
        ring.unwrap(&old, &owner).await.unwrap().expose_bytes(),
        key.expose_bytes()
    );
    let rewrapped = ring.rewrap(&old, &owner).await.unwrap();
    assert_eq!(rewrapped.kek_version, 2);
    assert!(matches!(ring.retire(2).await, Err(KmsError::Refused(_))));
    ring.retire(1).await.unwrap();
    assert!(matches!(
        ring.unwrap(&old, &owner).await,
        Err(KmsError::UnknownVersion(1))
    ));
    assert_eq!(
        ring.unwrap(&rewrapped, &owner)
            .await
            .unwrap()
            .expose_bytes(),
        key.expose_bytes()
    );
    let versions = ring.versions().await.unwrap();
    assert_eq!(versions.len(), 2);
    assert!(versions[0].retired && !versions[0].current && versions[1].current);
}

#[tokio::test]
async fn another_process_rotation_is_picked_up_on_unwrap() {
    let dir = tempfile::tempdir().unwrap();
    let path = LocalKeyRing::default_path(dir.path());
    let server = LocalKeyRing::open(&path, None).unwrap();
    let cli = LocalKeyRing::open(&path, None).unwrap();
    cli.rotate().await.unwrap();
    let owner = UserId::generate();
    let key = dek();
    let wrapped = cli.wrap(&key, &owner).await.unwrap();
    assert_eq!(wrapped.kek_version, 2);
    assert_eq!(
        server
            .unwrap(&wrapped, &owner)
            .await
            .unwrap()
            .expose_bytes(),
        key.expose_bytes()
    );
    assert_eq!(server.current_version(), 2);
}

#[tokio::test]
async fn a_passphrase_protects_the_ring_and_a_wrong_one_refuses_without_overwriting() {
    let dir = tempfile::tempdir().unwrap();
    let path = LocalKeyRing::default_path(dir.path());
    let passphrase = || Some(SecretString::from("a long operator passphrase"));
    let ring = LocalKeyRing::open(&path, passphrase()).unwrap();
    let owner = UserId::generate();
    let key = dek();
    let wrapped = ring.wrap(&key, &owner).await.unwrap();
    drop(ring);
    let before = std::fs::read(&path).unwrap();
    let text = String::from_utf8_lossy(&before);
    assert!(text.contains("argon2id") && text.contains("sealedKeys") && !text.contains("\"keys\""));

    let wrong =
        LocalKeyRing::open(&path, Some(SecretString::from("not the passphrase"))).unwrap_err();
    assert!(
        matches!(&wrong, KmsError::Refused(message) if message.contains("wrong KORYPHAIOS_KMS_PASSPHRASE")),
        "{wrong}"
    );
    let missing = LocalKeyRing::open(&path, None).unwrap_err();
    assert!(
        matches!(&missing, KmsError::Refused(message) if message.contains("set KORYPHAIOS_KMS_PASSPHRASE")),
        "{missing}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "a refused open must not touch the file"
    );

    let reopened = LocalKeyRing::open(&path, passphrase()).unwrap();
    assert_eq!(
        reopened
            .unwrap(&wrapped, &owner)
            .await
            .unwrap()
            .expose_bytes(),
        key.expose_bytes()
    );
    reopened.rotate().await.unwrap();
    let again = LocalKeyRing::open(&path, passphrase()).unwrap();
    assert_eq!(again.current_version(), 2);
}

#[tokio::test]
async fn a_passphrase_for_an_unprotected_ring_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = LocalKeyRing::default_path(dir.path());
    LocalKeyRing::open(&path, None).unwrap();
    let error = LocalKeyRing::open(&path, Some(SecretString::from("unexpected"))).unwrap_err();
    assert!(matches!(error, KmsError::Refused(_)));
}

#[tokio::test]
async fn the_self_check_passes_and_debug_hides_the_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let ring = LocalKeyRing::open(
        &LocalKeyRing::default_path(dir.path()),
        Some(SecretString::from("hidden-passphrase")),
    )
    .unwrap();
    ring.check().await.unwrap();
    assert!(!format!("{ring:?}").contains("hidden-passphrase"));
}

#[tokio::test]
async fn a_rotation_by_another_process_is_used_for_the_next_wrap() {
    let dir = tempfile::tempdir().unwrap();
    let path = LocalKeyRing::default_path(dir.path());
    let server = LocalKeyRing::open(&path, None).unwrap();
    let cli = LocalKeyRing::open(&path, None).unwrap();
    cli.rotate().await.unwrap();
    cli.retire(1).await.unwrap();
    let wrapped = server.wrap(&dek(), &UserId::generate()).await.unwrap();
    assert_eq!(wrapped.kek_version, 2, "never wrap under a retired version");
}

#[tokio::test]
async fn a_ring_handed_out_as_a_file_or_contents_opens_the_same_keys_and_is_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("made.keyring");
    let made = LocalKeyRing::open(&path, None).unwrap();
    let owner = UserId::generate();
    let key = dek();
    let wrapped = made.wrap(&key, &owner).await.unwrap();

    let mounted =
        LocalKeyRing::open_existing(&path, None, "KORYPHAIOS_KMS_LOCAL_KEYRING_FILE").unwrap();
    let contents = std::fs::read(&path).unwrap();
    let given =
        LocalKeyRing::from_contents(&contents, None, "KORYPHAIOS_KMS_LOCAL_KEYRING").unwrap();
    for ring in [&mounted, &given] {
        let opened = ring.unwrap(&wrapped, &owner).await.unwrap();
        assert_eq!(opened.expose_bytes(), key.expose_bytes());
        let refused = ring.rotate().await.unwrap_err().to_string();
        assert!(
            refused.contains("KORYPHAIOS_KMS_LOCAL_KEYRING"),
            "{refused}"
        );
        ring.reload().await.unwrap();
    }
    assert_eq!(std::fs::read(&path).unwrap(), contents, "never written");

    let missing = LocalKeyRing::open_existing(
        &dir.path().join("absent"),
        None,
        "KORYPHAIOS_KMS_LOCAL_KEYRING_FILE",
    )
    .unwrap_err()
    .to_string();
    assert!(
        missing.contains("KORYPHAIOS_KMS_LOCAL_KEYRING_FILE"),
        "{missing}"
    );
    let garbage = LocalKeyRing::from_contents(b"not json", None, "KORYPHAIOS_KMS_LOCAL_KEYRING")
        .unwrap_err()
        .to_string();
    assert!(
        garbage.contains("KORYPHAIOS_KMS_LOCAL_KEYRING"),
        "{garbage}"
    );
    assert!(
        !garbage.contains("not json"),
        "the contents are never echoed: {garbage}"
    );
}
