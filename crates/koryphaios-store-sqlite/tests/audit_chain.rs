//! Tampering with `audit_events` directly in the database breaks the chain at the tampered row;
//! deleting the newest records is reported as a truncation; records written before the chain
//! existed are linked when the key is installed, and a missing head is initialised then.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests panic on failure"
)]

use std::path::Path;

use koryphaios_core::audit::chain::BreakKind;
use koryphaios_core::audit::verify::verify;
use koryphaios_core::audit::{AuditEntry, RequestContext};
use koryphaios_core::store::{AuditStore, SchemaMigrator};
use koryphaios_core::testing::contract_audit_key;
use koryphaios_store_sqlite::{SqliteSettings, SqliteStore};
use sqlx::Connection as _;
use time::OffsetDateTime;

fn record(n: i64) -> AuditEntry {
    AuditEntry::anonymous(
        format!("ip:192.0.2.{n}"),
        &RequestContext::default(),
        "login",
        OffsetDateTime::now_utc(),
    )
}

async fn chain_of_five(path: &Path) -> SqliteStore {
    let store = koryphaios_store_sqlite::open(path, &SqliteSettings::default())
        .await
        .unwrap();
    store.migrate_up().await.unwrap();
    store
        .install_audit_key(std::sync::Arc::new(contract_audit_key()))
        .await
        .unwrap();
    for n in 1..=5 {
        store.append_audit(&record(n)).await.unwrap();
    }
    store
}

async fn tamper(path: &Path, sql: &'static str) {
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
}

async fn first_break(store: &SqliteStore) -> Option<(i64, BreakKind)> {
    verify(store, &contract_audit_key())
        .await
        .unwrap()
        .first_broken
        .map(|b| (b.expected_seq, b.kind))
}

#[tokio::test]
async fn an_untouched_chain_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let store = chain_of_five(&dir.path().join("a.db")).await;
    let report = verify(&store, &contract_audit_key()).await.unwrap();
    assert!(report.is_valid());
    assert_eq!(report.checked, 5);
}

#[tokio::test]
async fn editing_any_column_breaks_the_chain_at_that_row() {
    for sql in [
        "UPDATE audit_events SET success = 1 WHERE seq = 3",
        "UPDATE audit_events SET actor = 'ip:10.0.0.1' WHERE seq = 3",
        "UPDATE audit_events SET metadata = '{\"x\":1}' WHERE seq = 3",
        "UPDATE audit_events SET occurred_at = occurred_at + 1 WHERE seq = 3",
        "UPDATE audit_events SET hash = zeroblob(32) WHERE seq = 3",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let store = chain_of_five(&path).await;
        tamper(&path, sql).await;
        assert_eq!(
            first_break(&store).await,
            Some((3, BreakKind::ContentMismatch)),
            "{sql}"
        );
    }
}

#[tokio::test]
async fn deleting_a_row_breaks_the_chain_where_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let store = chain_of_five(&path).await;
    tamper(&path, "DELETE FROM audit_events WHERE seq = 2").await;
    assert_eq!(first_break(&store).await, Some((2, BreakKind::SequenceGap)));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    let store = chain_of_five(&path).await;
    tamper(&path, "DELETE FROM audit_events WHERE seq = 1").await;
    assert_eq!(first_break(&store).await, Some((1, BreakKind::SequenceGap)));
}

#[tokio::test]
async fn reordering_rows_breaks_the_chain_at_the_first_moved_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let store = chain_of_five(&path).await;
    // Swap the positions of records 2 and 4 (links and all).
    tamper(
        &path,
        "UPDATE audit_events SET seq = -2 WHERE seq = 2;
         UPDATE audit_events SET seq = 2 WHERE seq = 4;
         UPDATE audit_events SET seq = 4 WHERE seq = -2;",
    )
    .await;
    assert_eq!(first_break(&store).await, Some((2, BreakKind::BrokenLink)));
}

#[tokio::test]
async fn a_forged_anchor_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let store = chain_of_five(&path).await;
    // Drop the first two records and pretend retention did it, with a made-up hash.
    tamper(
        &path,
        "DELETE FROM audit_events WHERE seq <= 2;
         INSERT INTO audit_chain_anchor (id, seq, hash, purged_at, mac)
             VALUES (1, 2, (SELECT prev_hash FROM audit_events WHERE seq = 3), 0, zeroblob(32));",
    )
    .await;
    assert_eq!(
        first_break(&store).await,
        Some((3, BreakKind::ForgedAnchor))
    );
}

#[tokio::test]
async fn records_from_before_the_chain_are_linked_when_the_key_is_first_installed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let store = koryphaios_store_sqlite::open(&path, &SqliteSettings::default())
        .await
        .unwrap();
    store.migrate_up().await.unwrap();
    // An upgraded install: rows written by a version without the chain have no links.
    tamper(
        &path,
        "INSERT INTO audit_events (id, occurred_at, actor, action, success, metadata)
         VALUES ('aud_0190000000007000800000000000000a', 1, 'user:x', 'login', 1, '{}'),
                ('aud_0190000000007000800000000000000b', 2, 'user:x', 'logout', 1, '{}');",
    )
    .await;
    assert_eq!(
        store
            .install_audit_key(std::sync::Arc::new(contract_audit_key()))
            .await
            .unwrap(),
        2
    );
    store.append_audit(&record(9)).await.unwrap();
    let report = verify(&store, &contract_audit_key()).await.unwrap();
    assert!(report.is_valid(), "{report:?}");
    assert_eq!(report.checked, 3);
}

#[tokio::test]
async fn rows_slipped_into_a_chained_log_are_reported_not_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let store = chain_of_five(&path).await;
    drop(store);
    // Unlinking the tail (to hide an edit in it) or inserting rows without links.
    tamper(
        &path,
        "UPDATE audit_events SET seq = NULL, prev_hash = NULL, hash = NULL WHERE seq >= 4",
    )
    .await;
    let store = koryphaios_store_sqlite::open(&path, &SqliteSettings::default())
        .await
        .unwrap();
    assert_eq!(
        store
            .install_audit_key(std::sync::Arc::new(contract_audit_key()))
            .await
            .unwrap(),
        0,
        "a chained log never adopts rows"
    );
    let broken = verify(&store, &contract_audit_key())
        .await
        .unwrap()
        .first_broken
        .unwrap();
    assert_eq!(broken.kind, BreakKind::Unlinked);
}

#[tokio::test]
async fn without_an_installed_key_audited_writes_fail_closed() {
    let dir = tempfile::tempdir().unwrap();
    let store = koryphaios_store_sqlite::open(&dir.path().join("a.db"), &SqliteSettings::default())
        .await
        .unwrap();
    store.migrate_up().await.unwrap();
    assert!(store.append_audit(&record(1)).await.is_err());
    let report = verify(&store, &contract_audit_key()).await.unwrap();
    assert_eq!(report.checked, 0);
}

async fn contract_store(path: &Path) -> std::sync::Arc<dyn koryphaios_core::store::Store> {
    let store = koryphaios_store_sqlite::open(path, &SqliteSettings::default())
        .await
        .unwrap();
    store.migrate_up().await.unwrap();
    store
        .install_audit_key(std::sync::Arc::new(contract_audit_key()))
        .await
        .unwrap();
    std::sync::Arc::new(store)
}

#[tokio::test]
async fn deleting_the_newest_record_is_reported_as_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let store = contract_store(&path).await;
    koryphaios_core::testing::deleting_the_newest_records_is_reported_as_truncation(
        store,
        1,
        |from| async move {
            delete_from(&path, from).await;
        },
    )
    .await;
}

#[tokio::test]
async fn deleting_the_newest_four_records_is_reported_as_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let store = contract_store(&path).await;
    koryphaios_core::testing::deleting_the_newest_records_is_reported_as_truncation(
        store,
        4,
        |from| async move {
            delete_from(&path, from).await;
        },
    )
    .await;
}

async fn delete_from(path: &Path, seq: i64) {
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    sqlx::query("DELETE FROM audit_events WHERE seq >= ?")
        .bind(seq)
        .execute(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_chain_from_before_the_head_gets_its_head_from_the_newest_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let store = chain_of_five(&path).await;
    drop(store);
    // As after migration 0005 on a chained log: no head row yet.
    tamper(&path, "DELETE FROM audit_chain_head").await;
    let store = koryphaios_store_sqlite::open(&path, &SqliteSettings::default())
        .await
        .unwrap();
    // Until the key is installed (which initialises the head), verify reports the missing head.
    assert_eq!(first_break(&store).await, Some((1, BreakKind::ForgedHead)));
    store
        .install_audit_key(std::sync::Arc::new(contract_audit_key()))
        .await
        .unwrap();
    let head = store.audit_chain_head().await.unwrap().unwrap();
    assert_eq!(head.seq, 5);
    store.append_audit(&record(6)).await.unwrap();
    let report = verify(&store, &contract_audit_key()).await.unwrap();
    assert!(report.is_valid(), "{report:?}");
    assert_eq!((report.checked, report.head_seq), (6, Some(6)));
}

#[tokio::test]
async fn a_rewritten_head_is_reported_and_refused_as_a_base_for_new_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let store = chain_of_five(&path).await;
    // Hide the deletion of the newest two records by moving the head back, without the key.
    tamper(
        &path,
        "DELETE FROM audit_events WHERE seq >= 4;
         UPDATE audit_chain_head SET seq = 3, hash = (SELECT hash FROM audit_events WHERE seq = 3);",
    )
    .await;
    assert_eq!(first_break(&store).await, Some((1, BreakKind::ForgedHead)));
    assert!(
        store.append_audit(&record(6)).await.is_err(),
        "a forged head must not be sealed by the next write"
    );
    // A deleted head row stops writes too, until a restart re-initialises it (with a warning).
    tamper(&path, "DELETE FROM audit_chain_head").await;
    assert!(store.append_audit(&record(7)).await.is_err());
}

#[tokio::test]
async fn an_empty_log_takes_a_new_key_and_reseals_its_genesis_head() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let store = koryphaios_store_sqlite::open(&path, &SqliteSettings::default())
        .await
        .unwrap();
    store.migrate_up().await.unwrap();
    store
        .install_audit_key(std::sync::Arc::new(
            koryphaios_core::audit::chain::AuditKey::from_bytes(&[1; 32]).unwrap(),
        ))
        .await
        .unwrap();
    drop(store);
    // Nothing was ever written: another key may start the chain.
    let store = koryphaios_store_sqlite::open(&path, &SqliteSettings::default())
        .await
        .unwrap();
    store
        .install_audit_key(std::sync::Arc::new(contract_audit_key()))
        .await
        .unwrap();
    store.append_audit(&record(1)).await.unwrap();
    let report = verify(&store, &contract_audit_key()).await.unwrap();
    assert!(report.is_valid(), "{report:?}");
}
