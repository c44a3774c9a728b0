//! What the remote providers' tests share: a fake server on a random loopback port, AES-256-GCM,
//! a variable lookup for settings, and the checks every provider must pass.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};

/// Serves `router` on 127.0.0.1 (a random port) in the background; returns its base URL.
pub async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    format!("http://{address}")
}

/// A port nothing listens on.
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Random bytes.
pub fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    getrandom_fill(&mut out);
    out
}

fn getrandom_fill(out: &mut [u8]) {
    use rsa::rand_core::RngCore as _;
    rsa::rand_core::OsRng.fill_bytes(out);
}

/// AES-256-GCM: `nonce ‖ ciphertext ‖ tag`.
pub fn seal(key: &[u8; 32], plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let nonce: [u8; 12] = random();
    let cipher = Aes256Gcm::new_from_slice(key).unwrap();
    let mut out = nonce.to_vec();
    out.extend(
        cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .unwrap(),
    );
    out
}

/// The inverse of [`seal`]; `None` when it does not authenticate.
pub fn open(key: &[u8; 32], sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < 28 {
        return None;
    }
    let (nonce, rest) = sealed.split_at(12);
    let nonce: [u8; 12] = nonce.try_into().ok()?;
    let cipher = Aes256Gcm::new_from_slice(key).unwrap();
    cipher
        .decrypt(&Nonce::from(nonce), Payload { msg: rest, aad })
        .ok()
}

/// The rotation contract of a provider whose versions retire one by one (GCP, Azure): a wrap
/// under version 1 opens after a rotation, re-wraps to version 2, the current version cannot be
/// retired, and once version 1 is retired only the re-wrapped copy opens.
pub async fn rotation_rewrap_and_retirement(kms: &dyn koryphaios_core::envelope::KeyProvider) {
    use koryphaios_core::envelope::{Dek, KmsError};
    use koryphaios_core::ids::UserId;

    let owner = UserId::generate();
    let dek = Dek::generate().unwrap();
    let v1 = kms.wrap(&dek, &owner).await.unwrap();
    assert_eq!(kms.rotate().await.unwrap(), 2);
    assert_eq!(kms.current_version(), 2);
    let versions = kms.versions().await.unwrap();
    assert_eq!(
        versions
            .iter()
            .map(|v| (v.version, v.current, v.retired))
            .collect::<Vec<_>>(),
        vec![(1, false, false), (2, true, false)]
    );
    assert_eq!(
        kms.unwrap(&v1, &owner).await.unwrap().expose_bytes(),
        dek.expose_bytes()
    );
    let v2 = kms.rewrap(&v1, &owner).await.unwrap();
    assert_eq!(v2.kek_version, 2);
    assert!(matches!(kms.retire(2).await, Err(KmsError::Refused(_))));
    kms.retire(1).await.unwrap();
    assert!(kms.versions().await.unwrap()[0].retired);
    let error = kms.unwrap(&v1, &owner).await.unwrap_err();
    assert!(matches!(error, KmsError::UnknownVersion(1)), "{error:?}");
    assert_eq!(
        kms.unwrap(&v2, &owner).await.unwrap().expose_bytes(),
        dek.expose_bytes()
    );
}

/// A variable lookup over fixed `(name, value)` pairs, as the settings' `from_lookup` takes.
pub fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |name: &str| {
        pairs
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| (*value).to_owned())
    }
}

/// A provider whose service cannot be reached (connected at `started`): the check and a wrap are
/// `Unavailable`, and both fail within 5 s of the start.
pub async fn unavailable_quickly(
    kms: &dyn koryphaios_core::envelope::KeyProvider,
    started: std::time::Instant,
) {
    use koryphaios_core::envelope::{Dek, KmsError};
    use koryphaios_core::ids::UserId;

    let error = kms.check().await.unwrap_err();
    assert!(matches!(error, KmsError::Unavailable(_)), "{error:?}");
    let error = kms
        .wrap(&Dek::generate().unwrap(), &UserId::generate())
        .await
        .unwrap_err();
    assert!(matches!(error, KmsError::Unavailable(_)), "{error:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}
