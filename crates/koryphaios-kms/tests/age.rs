//! The age provider, including interoperability with the `age` command-line tool.
#![expect(clippy::unwrap_used, reason = "tests panic on failure")]

use std::process::Command;

use koryphaios_core::envelope::{Dek, KeyProvider, KmsError, WrappedDek};
use koryphaios_core::ids::UserId;
use koryphaios_kms::AgeKeyProvider;

fn age_tool() -> &'static str {
    // scripts/test.sh installs Debian's `age`; its absence is a set-up error, not a skip.
    assert!(
        Command::new("age").arg("--version").output().is_ok(),
        "the `age` tool is missing: run scripts/test.sh or apt-get install age"
    );
    "age"
}

/// What the service puts inside the age file: the owner binding, then the DEK.
fn payload(owner: &UserId, dek: &[u8]) -> Vec<u8> {
    let mut bytes = format!("koryphaios/dek/v1|{}|", owner.as_str()).into_bytes();
    bytes.extend_from_slice(dek);
    bytes
}

fn age_encrypt(dir: &std::path::Path, recipient: &str, plaintext: &[u8]) -> Vec<u8> {
    let plain = dir.join("plain.bin");
    let out = dir.join("out.age");
    std::fs::write(&plain, plaintext).unwrap();
    let status = Command::new(age_tool())
        .args(["-r", recipient, "-o"])
        .arg(&out)
        .arg(&plain)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read(&out).unwrap()
}

fn age_decrypt(identities: &std::path::Path, dir: &std::path::Path, ciphertext: &[u8]) -> Vec<u8> {
    let file = dir.join("in.age");
    std::fs::write(&file, ciphertext).unwrap();
    let output = Command::new(age_tool())
        .args(["-d", "-i"])
        .arg(identities)
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

#[tokio::test]
async fn a_dek_wrapped_by_the_service_decrypts_with_the_age_tool() {
    let dir = tempfile::tempdir().unwrap();
    let path = AgeKeyProvider::default_path(dir.path());
    let provider = AgeKeyProvider::open(&path).unwrap();
    let dek = Dek::generate().unwrap();
    let owner = UserId::generate();
    let wrapped = provider.wrap(&dek, &owner).await.unwrap();
    assert!(wrapped.kek_id.starts_with("age1"));
    assert_eq!(
        age_decrypt(&path, dir.path(), &wrapped.ciphertext),
        payload(&owner, dek.expose_bytes())
    );
    // Bound to its owner: another user's id does not unwrap it.
    assert!(matches!(
        provider.unwrap(&wrapped, &UserId::generate()).await,
        Err(KmsError::Unauthentic)
    ));
}

#[tokio::test]
async fn a_dek_wrapped_by_the_age_tool_unwraps_in_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let provider = AgeKeyProvider::open(&AgeKeyProvider::default_path(dir.path())).unwrap();
    let dek_bytes: [u8; 32] = std::array::from_fn(|i| i as u8 * 7);
    let owner = UserId::generate();
    let wrapped = WrappedDek {
        provider: "age".into(),
        kek_id: provider.current_recipient(),
        kek_version: 1,
        ciphertext: age_encrypt(
            dir.path(),
            &provider.current_recipient(),
            &payload(&owner, &dek_bytes),
        ),
    };
    let dek = provider.unwrap(&wrapped, &owner).await.unwrap();
    assert_eq!(dek.expose_bytes(), &dek_bytes);
    // A bare DEK without the owner binding is refused.
    let unbound = WrappedDek {
        ciphertext: age_encrypt(dir.path(), &provider.current_recipient(), &dek_bytes),
        ..wrapped
    };
    assert!(matches!(
        provider.unwrap(&unbound, &owner).await,
        Err(KmsError::Unauthentic)
    ));
}

#[tokio::test]
async fn rotation_and_retirement_work_and_the_file_stays_usable_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let path = AgeKeyProvider::default_path(dir.path());
    let provider = AgeKeyProvider::open(&path).unwrap();
    let owner = UserId::generate();
    let dek = Dek::generate().unwrap();
    let old = provider.wrap(&dek, &owner).await.unwrap();
    assert_eq!(provider.rotate().await.unwrap(), 2);
    let reopened = AgeKeyProvider::open(&path).unwrap();
    assert_eq!(reopened.current_version(), 2);
    assert_eq!(
        reopened.unwrap(&old, &owner).await.unwrap().expose_bytes(),
        dek.expose_bytes()
    );
    let new = reopened.rewrap(&old, &owner).await.unwrap();
    assert_eq!(new.kek_version, 2);
    assert!(matches!(
        reopened.retire(2).await,
        Err(KmsError::Refused(_))
    ));
    reopened.retire(1).await.unwrap();
    assert!(matches!(
        reopened.unwrap(&old, &owner).await,
        Err(KmsError::UnknownVersion(1))
    ));
    assert_eq!(
        age_decrypt(&path, dir.path(), &new.ciphertext),
        payload(&owner, dek.expose_bytes())
    );
    let versions = reopened.versions().await.unwrap();
    assert!(versions[0].retired && versions[1].current);
    // The first provider notices the other's changes before wrapping again.
    let wrapped_after = provider.wrap(&dek, &owner).await.unwrap();
    assert_eq!(wrapped_after.kek_version, 2);
}

#[tokio::test]
async fn garbage_is_refused_and_other_providers_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let provider = AgeKeyProvider::open(&AgeKeyProvider::default_path(dir.path())).unwrap();
    let owner = UserId::generate();
    let garbage = WrappedDek {
        provider: "age".into(),
        kek_id: String::new(),
        kek_version: 1,
        ciphertext: b"not age".to_vec(),
    };
    assert!(matches!(
        provider.unwrap(&garbage, &owner).await,
        Err(KmsError::Unauthentic)
    ));
    let foreign = WrappedDek {
        provider: "local".into(),
        ..garbage
    };
    assert!(matches!(
        provider.unwrap(&foreign, &owner).await,
        Err(KmsError::WrongKey { .. })
    ));
}
