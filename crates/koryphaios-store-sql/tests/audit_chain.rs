//! The audit chain as stored, on both backends: tampering with `audit_events` directly breaks the
//! chain at the tampered row; deleting the newest records is reported as a truncation; records
//! written before the chain existed are linked when the key is installed, and a missing head is
//! initialised then; instances writing at once keep one chain.
#![expect(clippy::unwrap_used, reason = "tests panic on failure")]

mod common;

use std::sync::Arc;

use common::{Backend, TestDb, key, record};
use koryphaios_core::audit::chain::{AuditKey, BreakKind};
use koryphaios_core::audit::verify::verify;
use koryphaios_core::store::Store;

/// A keyed store on `db` holding five records.
async fn chain_of_five(db: &TestDb) -> Arc<dyn Store> {
    let store = db.keyed().await;
    for n in 1..=5 {
        store.append_audit(&record(n)).await.unwrap();
    }
    store
}

async fn first_break(store: &dyn Store) -> Option<(i64, BreakKind)> {
    verify(store, &key())
        .await
        .unwrap()
        .first_broken
        .map(|b| (b.expected_seq, b.kind))
}

async fn an_untouched_chain_verifies(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = chain_of_five(&db).await;
    let report = verify(store.as_ref(), &key()).await.unwrap();
    assert!(report.is_valid(), "{report:?}");
    assert_eq!(report.checked, 5);
}

async fn editing_any_column_breaks_the_chain_at_that_row(backend: Backend) {
    for sql in [
        "UPDATE audit_events SET success = NOT success WHERE seq = 3",
        "UPDATE audit_events SET actor = 'ip:10.0.0.1' WHERE seq = 3",
        "UPDATE audit_events SET metadata = '{\"x\":1}' WHERE seq = 3",
        "UPDATE audit_events SET occurred_at = occurred_at + 1 WHERE seq = 3",
        "UPDATE audit_events SET hash = prev_hash WHERE seq = 3",
    ] {
        let db = TestDb::new(backend).await;
        let store = chain_of_five(&db).await;
        db.execute(sql).await;
        assert_eq!(
            first_break(store.as_ref()).await,
            Some((3, BreakKind::ContentMismatch)),
            "{sql}"
        );
    }
}

async fn deleting_a_row_breaks_the_chain_where_it_was(backend: Backend) {
    for seq in [2, 1] {
        let db = TestDb::new(backend).await;
        let store = chain_of_five(&db).await;
        db.execute(&format!("DELETE FROM audit_events WHERE seq = {seq}"))
            .await;
        assert_eq!(
            first_break(store.as_ref()).await,
            Some((seq, BreakKind::SequenceGap))
        );
    }
}

async fn reordering_rows_breaks_the_chain_at_the_first_moved_row(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = chain_of_five(&db).await;
    // Swap the positions of records 2 and 4 (links and all).
    db.execute(
        "UPDATE audit_events SET seq = -2 WHERE seq = 2;
         UPDATE audit_events SET seq = 2 WHERE seq = 4;
         UPDATE audit_events SET seq = 4 WHERE seq = -2;",
    )
    .await;
    assert_eq!(
        first_break(store.as_ref()).await,
        Some((2, BreakKind::BrokenLink))
    );
}

async fn a_forged_anchor_is_detected(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = chain_of_five(&db).await;
    // Drop the first two records and pretend retention did it, with a made-up MAC (the genesis
    // hash: 32 zero bytes).
    db.execute(
        "INSERT INTO audit_chain_anchor (id, seq, hash, purged_at, mac)
             VALUES (1, 2, (SELECT prev_hash FROM audit_events WHERE seq = 3), 0,
                     (SELECT prev_hash FROM audit_events WHERE seq = 1));
         DELETE FROM audit_events WHERE seq <= 2;",
    )
    .await;
    assert_eq!(
        first_break(store.as_ref()).await,
        Some((3, BreakKind::ForgedAnchor))
    );
}

async fn records_from_before_the_chain_are_linked_when_the_key_is_first_installed(
    backend: Backend,
) {
    let db = TestDb::new(backend).await;
    let store = db.migrated().await;
    // An upgraded install: rows written by a version without the chain have no links.
    db.execute(
        "INSERT INTO audit_events (id, occurred_at, actor, action, success, metadata)
         VALUES ('aud_0190000000007000800000000000000a', 1, 'user:x', 'login', TRUE, '{}'),
                ('aud_0190000000007000800000000000000b', 2, 'user:x', 'logout', TRUE, '{}');",
    )
    .await;
    assert_eq!(store.install_audit_key(Arc::new(key())).await.unwrap(), 2);
    store.append_audit(&record(9)).await.unwrap();
    let report = verify(store.as_ref(), &key()).await.unwrap();
    assert!(report.is_valid(), "{report:?}");
    assert_eq!(report.checked, 3);
}

async fn rows_slipped_into_a_chained_log_are_reported_not_adopted(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = chain_of_five(&db).await;
    store.close().await;
    // Unlinking the tail (to hide an edit in it) or inserting rows without links.
    db.execute("UPDATE audit_events SET seq = NULL, prev_hash = NULL, hash = NULL WHERE seq >= 4")
        .await;
    let store = db.open().await;
    assert_eq!(
        store.install_audit_key(Arc::new(key())).await.unwrap(),
        0,
        "a chained log never adopts rows"
    );
    let broken = verify(store.as_ref(), &key())
        .await
        .unwrap()
        .first_broken
        .unwrap();
    assert_eq!(broken.kind, BreakKind::Unlinked);
}

async fn without_an_installed_key_audited_writes_fail_closed(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.migrated().await;
    assert!(store.append_audit(&record(1)).await.is_err());
    let report = verify(store.as_ref(), &key()).await.unwrap();
    assert_eq!(report.checked, 0);
}

async fn truncation(backend: Backend, deleted: i64) {
    let db = TestDb::new(backend).await;
    let store = db.keyed().await;
    koryphaios_core::testing::deleting_the_newest_records_is_reported_as_truncation(
        store,
        deleted,
        |from| {
            let db = &db;
            async move {
                db.execute(&format!("DELETE FROM audit_events WHERE seq >= {from}"))
                    .await;
            }
        },
    )
    .await;
}

async fn deleting_the_newest_record_is_reported_as_truncation(backend: Backend) {
    truncation(backend, 1).await;
}

async fn deleting_the_newest_four_records_is_reported_as_truncation(backend: Backend) {
    truncation(backend, 4).await;
}

async fn a_chain_from_before_the_head_gets_its_head_from_the_newest_record(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = chain_of_five(&db).await;
    // As after migration 0005 on a chained log: no head row yet.
    db.execute("DELETE FROM audit_chain_head").await;
    assert!(
        store.append_audit(&record(9)).await.is_err(),
        "no head, no writes"
    );
    store.close().await;
    let store = db.open().await;
    // Until the key is installed (which initialises the head), verify reports the missing head.
    assert_eq!(
        first_break(store.as_ref()).await,
        Some((1, BreakKind::ForgedHead))
    );
    store.install_audit_key(Arc::new(key())).await.unwrap();
    assert_eq!(store.audit_chain_head().await.unwrap().unwrap().seq, 5);
    store.append_audit(&record(6)).await.unwrap();
    let report = verify(store.as_ref(), &key()).await.unwrap();
    assert!(report.is_valid(), "{report:?}");
    assert_eq!((report.checked, report.head_seq), (6, Some(6)));
}

async fn a_rewritten_head_is_reported_and_refused_as_a_base_for_new_records(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = chain_of_five(&db).await;
    // Hide the deletion of the newest two records by moving the head back, without the key.
    db.execute(
        "DELETE FROM audit_events WHERE seq >= 4;
         UPDATE audit_chain_head SET seq = 3,
             hash = (SELECT hash FROM audit_events WHERE seq = 3);",
    )
    .await;
    assert_eq!(
        first_break(store.as_ref()).await,
        Some((1, BreakKind::ForgedHead))
    );
    assert!(
        store.append_audit(&record(6)).await.is_err(),
        "a forged head must not be sealed by the next write"
    );
    // A deleted head row stops writes too, until a restart re-initialises it (with a warning).
    db.execute("DELETE FROM audit_chain_head").await;
    assert!(store.append_audit(&record(7)).await.is_err());
}

async fn an_empty_log_takes_a_new_key_and_reseals_its_genesis_head(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.migrated().await;
    store
        .install_audit_key(Arc::new(AuditKey::from_bytes(&[1; 32]).unwrap()))
        .await
        .unwrap();
    store.close().await;
    // Nothing was ever written: another key may start the chain.
    let store = db.keyed().await;
    store.append_audit(&record(1)).await.unwrap();
    let report = verify(store.as_ref(), &key()).await.unwrap();
    assert!(report.is_valid(), "{report:?}");
}

async fn two_instances_writing_at_once_keep_one_verifying_chain(backend: Backend) {
    let db = TestDb::new(backend).await;
    let a = db.keyed().await;
    let b = db.open().await;
    b.install_audit_key(Arc::new(key())).await.unwrap();
    let mut tasks = Vec::new();
    for n in 0..60 {
        let store = Arc::clone(if n % 2 == 0 { &a } else { &b });
        tasks.push(tokio::spawn(
            async move { store.append_audit(&record(n)).await },
        ));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let report = verify(a.as_ref(), &key()).await.unwrap();
    assert!(report.is_valid(), "{report:?}");
    assert_eq!(report.checked, 60);
}

on_both_backends!(
    an_untouched_chain_verifies,
    editing_any_column_breaks_the_chain_at_that_row,
    deleting_a_row_breaks_the_chain_where_it_was,
    reordering_rows_breaks_the_chain_at_the_first_moved_row,
    a_forged_anchor_is_detected,
    records_from_before_the_chain_are_linked_when_the_key_is_first_installed,
    rows_slipped_into_a_chained_log_are_reported_not_adopted,
    without_an_installed_key_audited_writes_fail_closed,
    deleting_the_newest_record_is_reported_as_truncation,
    deleting_the_newest_four_records_is_reported_as_truncation,
    a_chain_from_before_the_head_gets_its_head_from_the_newest_record,
    a_rewritten_head_is_reported_and_refused_as_a_base_for_new_records,
    an_empty_log_takes_a_new_key_and_reseals_its_genesis_head,
    two_instances_writing_at_once_keep_one_verifying_chain,
);
