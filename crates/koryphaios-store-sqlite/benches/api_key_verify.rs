//! The API-key verification hot path: parse + checksum + hash, the SQLite lookup a cache miss
//! costs, and a full `authenticate` that hits the in-process cache.
#![expect(clippy::unwrap_used, reason = "benchmark code")]

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use koryphaios_core::api_keys::{ApiKeyService, NewApiKeyInput, format};
use koryphaios_core::audit::RequestContext;
use koryphaios_core::clock::SystemClock;
use koryphaios_core::store::{AuditStore, SchemaMigrator, Store};
use koryphaios_store_sqlite::SqliteSettings;
use secrecy::ExposeSecret;

fn verification(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (store, service, key) = runtime.block_on(async {
        let sqlite =
            koryphaios_store_sqlite::open(&dir.path().join("bench.db"), &SqliteSettings::default())
                .await
                .unwrap();
        sqlite.migrate_up().await.unwrap();
        sqlite
            .install_audit_key(::std::sync::Arc::new(
                koryphaios_core::testing::contract_audit_key(),
            ))
            .await
            .unwrap();
        let store: Arc<dyn Store> = Arc::new(sqlite);
        let principal =
            koryphaios_core::testing::bench::registered_principal(&store, "bench").await;
        let service = ApiKeyService::new(Arc::clone(&store), Arc::new(SystemClock));
        // Fill the table so the lookup is not against a one-row index.
        for i in 0..1000 {
            let input = NewApiKeyInput {
                name: format!("filler {i}"),
                ..NewApiKeyInput::default()
            };
            service
                .create(&principal, &RequestContext::default(), input)
                .await
                .unwrap();
        }
        let input = NewApiKeyInput {
            name: "bench".into(),
            ..NewApiKeyInput::default()
        };
        let (_, secret) = service
            .create(&principal, &RequestContext::default(), input)
            .await
            .unwrap();
        (store, service, secret.expose_secret().to_owned())
    });
    let hash = format::parse(&key).unwrap().hash();

    c.bench_function("api key: parse + checksum + sha256", |b| {
        b.iter(|| format::parse(&key).unwrap().hash())
    });
    c.bench_function("api key: sqlite lookup by hash (cache miss cost)", |b| {
        b.iter(|| {
            runtime
                .block_on(store.lookup_api_key(&hash))
                .unwrap()
                .unwrap()
        })
    });
    c.bench_function("api key: authenticate (cache hit)", |b| {
        b.iter(|| runtime.block_on(service.authenticate(&key, None)).unwrap())
    });
}

criterion_group!(benches, verification);
criterion_main!(benches);
