//! The audit chain on PostgreSQL: instances writing at once keep one verifying chain, an edited
//! row breaks it at that row, and deleting the newest records is reported as a truncation.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests panic on failure"
)]

use std::sync::Arc;

use koryphaios_core::audit::chain::BreakKind;
use koryphaios_core::audit::verify::verify;
use koryphaios_core::audit::{AuditEntry, RequestContext};
use koryphaios_core::store::{AuditStore, SchemaMigrator};
use koryphaios_core::testing::contract_audit_key;
use koryphaios_store_postgres::PostgresStore;
use koryphaios_store_postgres::testing::{fresh_database_url, test_settings};
use time::OffsetDateTime;

fn record(n: usize) -> AuditEntry {
    AuditEntry::anonymous(
        format!("ip:192.0.2.{n}"),
        &RequestContext::default(),
        "login",
        OffsetDateTime::now_utc(),
    )
}

async fn instance(url: &str) -> Arc<PostgresStore> {
    let store = koryphaios_store_postgres::connect(url, &test_settings())
        .await
        .unwrap();
    store.migrate_up().await.unwrap();
    store
        .install_audit_key(Arc::new(contract_audit_key()))
        .await
        .unwrap();
    Arc::new(store)
}

#[tokio::test]
async fn two_instances_writing_at_once_keep_one_verifying_chain() {
    let url = fresh_database_url().await;
    let (a, b) = tokio::join!(instance(&url), instance(&url));
    let mut tasks = Vec::new();
    for n in 0..60 {
        let store = if n % 2 == 0 {
            Arc::clone(&a)
        } else {
            Arc::clone(&b)
        };
        tasks.push(tokio::spawn(
            async move { store.append_audit(&record(n)).await },
        ));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let report = verify(a.as_ref(), &contract_audit_key()).await.unwrap();
    assert!(report.is_valid(), "{report:?}");
    assert_eq!(report.checked, 60);
}

#[tokio::test]
async fn an_edited_row_breaks_the_chain_at_that_row() {
    let url = fresh_database_url().await;
    let store = instance(&url).await;
    for n in 0..5 {
        store.append_audit(&record(n)).await.unwrap();
    }
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query("UPDATE audit_events SET actor = 'ip:10.0.0.1' WHERE seq = 4")
        .execute(&pool)
        .await
        .unwrap();
    let broken = verify(store.as_ref(), &contract_audit_key())
        .await
        .unwrap()
        .first_broken
        .unwrap();
    assert_eq!(
        (broken.expected_seq, broken.kind),
        (4, BreakKind::ContentMismatch)
    );
}

async fn truncation(deleted: i64) {
    let url = fresh_database_url().await;
    let store = instance(&url).await;
    koryphaios_core::testing::deleting_the_newest_records_is_reported_as_truncation(
        store,
        deleted,
        |from| async move {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            sqlx::query("DELETE FROM audit_events WHERE seq >= $1")
                .bind(from)
                .execute(&pool)
                .await
                .unwrap();
        },
    )
    .await;
}

#[tokio::test]
async fn deleting_the_newest_record_is_reported_as_truncation() {
    truncation(1).await;
}

#[tokio::test]
async fn deleting_the_newest_four_records_is_reported_as_truncation() {
    truncation(4).await;
}

#[tokio::test]
async fn a_chain_from_before_the_head_gets_its_head_from_the_newest_record() {
    let url = fresh_database_url().await;
    let store = instance(&url).await;
    for n in 0..5 {
        store.append_audit(&record(n)).await.unwrap();
    }
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    // As after migration 0005 on a chained log: no head row yet.
    sqlx::query("DELETE FROM audit_chain_head")
        .execute(&pool)
        .await
        .unwrap();
    assert!(
        store.append_audit(&record(9)).await.is_err(),
        "no head, no writes"
    );
    let restarted = instance(&url).await;
    assert_eq!(restarted.audit_chain_head().await.unwrap().unwrap().seq, 5);
    restarted.append_audit(&record(6)).await.unwrap();
    let report = verify(restarted.as_ref(), &contract_audit_key())
        .await
        .unwrap();
    assert!(report.is_valid(), "{report:?}");
    assert_eq!((report.checked, report.head_seq), (6, Some(6)));
}
