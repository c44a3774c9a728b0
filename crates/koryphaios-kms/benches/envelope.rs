//! Envelope encryption costs: sealing and opening a secret, wrapping and unwrapping its DEK with
//! the local key ring and with age, and the whole reveal path (unwrap + open).
#![expect(clippy::unwrap_used, reason = "benchmark code")]

use criterion::{Criterion, criterion_group, criterion_main};
use koryphaios_core::envelope::{Dek, KeyProvider, SecretContext, open_secret, seal_secret};
use koryphaios_core::ids::{CredentialId, UserId};
use koryphaios_kms::{AgeKeyProvider, LocalKeyRing};

fn envelope(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let local = LocalKeyRing::open(&LocalKeyRing::default_path(dir.path()), None).unwrap();
    let age = AgeKeyProvider::open(&AgeKeyProvider::default_path(dir.path())).unwrap();
    let user = UserId::generate();
    let credential = CredentialId::generate();
    let context = SecretContext {
        user_id: &user,
        credential_id: &credential,
        version: 1,
        provider: "openai",
    };
    let secret = b"sk-proj-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKL";
    let dek = Dek::generate().unwrap();
    let sealed = seal_secret(&dek, secret, &context).unwrap();
    let wrapped_local = runtime.block_on(local.wrap(&dek, &user)).unwrap();
    let wrapped_age = runtime.block_on(age.wrap(&dek, &user)).unwrap();

    c.bench_function("seal_secret (64 B, AES-256-GCM)", |b| {
        b.iter(|| seal_secret(&dek, secret, &context).unwrap())
    });
    c.bench_function("open_secret (64 B)", |b| {
        b.iter(|| open_secret(&dek, &sealed, &context).unwrap())
    });
    c.bench_function("dek generate", |b| b.iter(|| Dek::generate().unwrap()));
    c.bench_function("local wrap (HMAC KEK + AES-GCM)", |b| {
        b.iter(|| runtime.block_on(local.wrap(&dek, &user)).unwrap())
    });
    c.bench_function("local unwrap", |b| {
        b.iter(|| {
            runtime
                .block_on(local.unwrap(&wrapped_local, &user))
                .unwrap()
        })
    });
    c.bench_function("age wrap (X25519)", |b| {
        b.iter(|| runtime.block_on(age.wrap(&dek, &user)).unwrap())
    });
    c.bench_function("age unwrap (X25519)", |b| {
        b.iter(|| runtime.block_on(age.unwrap(&wrapped_age, &user)).unwrap())
    });
    c.bench_function("reveal path: local unwrap + open", |b| {
        b.iter(|| {
            let key = runtime
                .block_on(local.unwrap(&wrapped_local, &user))
                .unwrap();
            open_secret(&key, &sealed, &context).unwrap()
        })
    });
}

criterion_group!(benches, envelope);
criterion_main!(benches);
