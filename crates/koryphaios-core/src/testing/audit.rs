//! The audit part of the storage contract: one verifying chain under concurrent writers,
//! retention with an anchor, queries, activity counts and the audit key's storage.

use std::sync::Arc;

use time::Duration;

use super::{credential, t0, user};
use crate::audit::chain::{AuditKey, BreakKind};
use crate::audit::checkpoint::{Checkpoint, CheckpointVerdict, check};
use crate::audit::query::{AuditQuery, PageStart};
use crate::audit::verify::verify;
use crate::audit::{AuditEntry, RequestContext};
use crate::envelope::WrappedDek;
use crate::store::Store;

/// The key the contract installs in every store it checks (fixed, so checks can verify).
pub fn contract_audit_key() -> AuditKey {
    AuditKey::from_bytes(&[42; 32]).expect("32-byte key")
}

fn record(action: &str, minutes: i64) -> AuditEntry {
    let context = RequestContext {
        client_ip: Some(format!("192.0.2.{}", minutes.rem_euclid(200))),
        user_agent: Some("contract".into()),
        request_id: Some(format!("req-{minutes}")),
    };
    AuditEntry::anonymous(
        "ip:192.0.2.1".into(),
        &context,
        action,
        t0() + Duration::minutes(minutes),
    )
}

async fn verified(store: &Arc<dyn Store>) -> crate::audit::chain::ChainReport {
    let report = verify(store.as_ref(), &contract_audit_key())
        .await
        .expect("verify");
    assert!(report.is_valid(), "chain must verify: {report:?}");
    assert_eq!(
        report.head_seq,
        Some(report.last_seq),
        "the stored head is the newest record"
    );
    report
}

async fn checkpoint_now(store: &Arc<dyn Store>) -> Checkpoint {
    let head = store
        .audit_chain_head()
        .await
        .expect("read the head")
        .expect("a head once the key is installed");
    Checkpoint::of(&contract_audit_key(), &head)
}

async fn checkpoint_verdict(store: &Arc<dyn Store>, checkpoint: &Checkpoint) -> CheckpointVerdict {
    check(store.as_ref(), &contract_audit_key(), checkpoint)
        .await
        .expect("check the checkpoint")
}

/// Shared check (not in the macro: deleting rows behind the store's back needs the backend's
/// connection): deleting the newest `deleted` of six records is reported as `truncated` at the
/// first missing position, later records do not reuse the positions, and a checkpoint taken
/// before fails. `delete_from(seq)` must delete every record at or after `seq` directly in the
/// database.
pub async fn deleting_the_newest_records_is_reported_as_truncation<F, Fut>(
    store: Arc<dyn Store>,
    deleted: i64,
    delete_from: F,
) where
    F: FnOnce(i64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for minutes in 0..6 {
        store
            .append_audit(&record("login", minutes))
            .await
            .expect("append");
    }
    assert_eq!(verified(&store).await.last_seq, 6);
    let checkpoint = checkpoint_now(&store).await;
    assert_eq!(checkpoint.seq, 6);
    assert_eq!(
        checkpoint_verdict(&store, &checkpoint).await,
        CheckpointVerdict::Present
    );
    let mut tampered = checkpoint.clone();
    tampered.mac[0] ^= 1;
    assert_eq!(
        checkpoint_verdict(&store, &tampered).await,
        CheckpointVerdict::NotIssuedWithThisKey
    );

    let first_missing = 7 - deleted;
    delete_from(first_missing).await;
    let report = verify(store.as_ref(), &contract_audit_key())
        .await
        .expect("verify");
    let broken = report
        .first_broken
        .expect("a truncated chain must not verify");
    assert_eq!(
        (broken.kind, broken.expected_seq, broken.seq),
        (BreakKind::Truncated, first_missing, 6),
        "truncated at the first missing record; the head is at 6"
    );
    assert_eq!(
        report.checked,
        u64::try_from(first_missing - 1).expect("positive")
    );
    assert_eq!(
        checkpoint_verdict(&store, &checkpoint).await,
        CheckpointVerdict::Missing {
            seq: 6,
            head_seq: Some(6)
        }
    );

    // Later records continue from the stored head: the deleted positions are not reused, and the
    // hole stays visible.
    store
        .append_audit(&record("login", 10))
        .await
        .expect("append after the truncation");
    let tail = store
        .audit_chain_page(first_missing - 1, 10)
        .await
        .expect("page");
    assert_eq!(tail.iter().map(|r| r.seq).collect::<Vec<_>>(), [7]);
    let broken = verify(store.as_ref(), &contract_audit_key())
        .await
        .expect("verify")
        .first_broken
        .expect("still broken");
    assert_eq!(
        (broken.kind, broken.expected_seq, broken.seq),
        (BreakKind::SequenceGap, first_missing, 7)
    );
}

/// Contract check.
pub async fn concurrent_audited_writes_form_one_verifying_chain(store: Arc<dyn Store>) {
    let ada = user(&store, "ada").await;
    let mut tasks = Vec::new();
    for i in 0..30 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            store.append_audit(&record("access_denied", i)).await
        }));
    }
    for _ in 0..10 {
        let store = Arc::clone(&store);
        let ada = ada.clone();
        tasks.push(tokio::spawn(async move {
            credential(&store, &ada, "openai", None).await;
            Ok(())
        }));
    }
    for task in tasks {
        task.await.expect("join").expect("write");
    }
    let report = verified(&store).await;
    assert_eq!(report.checked, 41, "register + 30 denials + 10 creates");
    assert_eq!((report.anchor_seq, report.last_seq), (0, 41));
}

async fn purge(
    store: &Arc<dyn Store>,
    cutoff_minutes: i64,
    max_records: u32,
) -> crate::store::AuditPurge {
    let mut record = record("audit_purge", 24 * 60);
    record.success = true;
    store
        .purge_audit_before(
            t0() + Duration::minutes(cutoff_minutes),
            t0() + Duration::days(1),
            max_records,
            &record,
        )
        .await
        .expect("purge")
}

/// Contract check.
pub async fn retention_purges_a_prefix_and_the_rest_still_verifies(store: Arc<dyn Store>) {
    // Minutes 0..=3, then a late-written record stamped 9, then an old-stamped one (2): the purge
    // stops at the first record inside retention, so the old one behind it stays.
    for minutes in [0, 1, 2, 3, 9, 2, 10] {
        store
            .append_audit(&record("login", minutes))
            .await
            .expect("append");
    }
    assert_eq!(verified(&store).await.checked, 7);
    let second = store.audit_chain_page(1, 1).await.expect("page")[0]
        .hash
        .clone();
    let early = Checkpoint {
        seq: 2,
        mac: Checkpoint::mac_of(&contract_audit_key(), 2, &second).to_vec(),
        hash: second,
    };

    // At most two per transaction: the anchor moves with each batch.
    let first = purge(&store, 5, 2).await;
    assert_eq!(first.deleted, 2);
    assert_eq!(first.anchor.as_ref().map(|a| a.seq), Some(2));
    let report = verified(&store).await;
    assert_eq!(
        (report.anchor_seq, report.checked, report.last_seq),
        (2, 6, 8)
    );

    // Purged up to the checkpoint's record: the anchor is that record, so it still checks.
    assert_eq!(
        checkpoint_verdict(&store, &early).await,
        CheckpointVerdict::Purged { anchor_seq: 2 }
    );
    let rest = purge(&store, 5, 1000).await;
    assert_eq!(rest.deleted, 2, "seq 3 and 4; seq 5 is inside retention");
    let anchor = rest.anchor.expect("anchor");
    assert_eq!(anchor.seq, 4);
    assert_eq!(
        store.audit_chain_anchor().await.expect("anchor"),
        Some(anchor)
    );
    let report = verified(&store).await;
    assert_eq!(
        (report.anchor_seq, report.checked, report.last_seq),
        (4, 5, 9)
    );
    // Each purge wrote its record, with the count, in its own transaction.
    let purges = store
        .query_audit(&AuditQuery {
            action: Some("audit_purge".into()),
            ..AuditQuery::default()
        })
        .await
        .expect("purge records");
    assert_eq!(purges.len(), 2);
    assert_eq!(purges[0].entry.metadata["deleted"], 2);

    // Nothing more to purge: a no-op that keeps the anchor and writes nothing.
    let again = purge(&store, 5, 1000).await;
    assert_eq!(again.deleted, 0);
    assert_eq!(again.anchor.map(|a| a.seq), Some(4));
    assert_eq!(verified(&store).await.last_seq, 9);

    // Purging everything leaves only the purge's own record, continuing from the anchor.
    let all = purge(&store, 60 * 24 * 30, 1000).await;
    assert_eq!(all.deleted, 5);
    let report = verified(&store).await;
    assert_eq!(
        (report.anchor_seq, report.checked, report.last_seq),
        (9, 1, 10)
    );
    store
        .append_audit(&record("login", 20))
        .await
        .expect("append");
    let report = verified(&store).await;
    assert_eq!(
        (report.anchor_seq, report.checked, report.last_seq),
        (9, 2, 11)
    );
}

/// Contract check.
pub async fn audit_queries_filter_and_page_newest_first(store: Arc<dyn Store>) {
    let ada = user(&store, "ada").await;
    let bob = user(&store, "bob").await;
    let ada_cred = credential(&store, &ada, "openai", None).await;
    credential(&store, &bob, "anthropic", None).await;
    for minutes in 0..5 {
        let mut failure = record("login", minutes);
        failure.user_id = Some(ada.id.clone());
        failure.success = false;
        store.append_audit(&failure).await.expect("append");
    }
    let query = |build: &dyn Fn(&mut AuditQuery)| {
        let mut query = AuditQuery::default();
        build(&mut query);
        query
    };
    let all = store
        .query_audit(&AuditQuery::default())
        .await
        .expect("all");
    assert_eq!(all.len(), 9);
    assert!(all.windows(2).all(|w| w[0].seq > w[1].seq), "newest first");

    let ada_only = store
        .query_audit(&query(&|q| q.user_id = Some(ada.id.clone())))
        .await
        .expect("ada");
    assert!(
        ada_only
            .iter()
            .all(|r| r.entry.user_id.as_ref() == Some(&ada.id))
    );
    assert_eq!(ada_only.len(), 6);

    let failures = store
        .query_audit(&query(&|q| {
            q.action = Some("login".into());
            q.success = Some(false);
        }))
        .await
        .expect("failures");
    assert_eq!(failures.len(), 5);

    let on_resource = store
        .query_audit(&query(&|q| {
            q.resource_type = Some("credential".into());
            q.resource_id = Some(ada_cred.id.to_string());
        }))
        .await
        .expect("resource");
    assert_eq!(on_resource.len(), 1);
    assert_eq!(on_resource[0].entry.action, "credential_create");

    let window = store
        .query_audit(&query(&|q| {
            q.action = Some("login".into());
            q.start = Some(t0() + Duration::minutes(1));
            q.end = Some(t0() + Duration::minutes(3));
        }))
        .await
        .expect("window");
    assert_eq!(window.len(), 3, "start and end are inclusive");

    // Offset pages and cursor pages walk the same records.
    let by_offset: Vec<_> = [0, 4, 8]
        .into_iter()
        .map(|offset| {
            query(&move |q| {
                q.limit = 4;
                q.page = PageStart::Offset(offset);
            })
        })
        .collect();
    let mut offset_ids = Vec::new();
    for page in &by_offset {
        offset_ids.extend(
            store
                .query_audit(page)
                .await
                .expect("page")
                .into_iter()
                .map(|r| r.seq),
        );
    }
    let mut cursor_ids = Vec::new();
    let mut start = PageStart::Offset(0);
    loop {
        let page = store
            .query_audit(&query(&move |q| {
                q.limit = 4;
                q.page = start;
            }))
            .await
            .expect("page");
        let Some(last) = page.last() else { break };
        start = PageStart::Before(last.seq);
        cursor_ids.extend(page.iter().map(|r| r.seq));
    }
    assert_eq!(offset_ids, cursor_ids);
    assert_eq!(offset_ids, all.iter().map(|r| r.seq).collect::<Vec<_>>());
}

/// Contract check.
pub async fn activity_counts_failed_logins_reveals_denials_and_ips(store: Arc<dyn Store>) {
    let ada = user(&store, "ada").await;
    for (action, success, minutes) in [
        ("login", false, 1),
        ("login", false, 2),
        ("login", true, 3),
        ("credential_access", true, 4),
        ("access_denied", false, 5),
        ("rate_limited", false, 6),
    ] {
        let mut entry = record(action, minutes);
        entry.user_id = Some(ada.id.clone());
        entry.success = success;
        store.append_audit(&entry).await.expect("append");
    }
    let mut old = record("login", -120);
    old.user_id = Some(ada.id.clone());
    store.append_audit(&old).await.expect("append");

    let counts = store
        .audit_activity(t0() - Duration::minutes(60))
        .await
        .expect("activity");
    let ada_counts = counts.iter().find(|c| c.user_id == ada.id).expect("ada");
    assert_eq!(ada_counts.failed_logins, 2);
    assert_eq!(ada_counts.reveals, 1);
    assert_eq!(ada_counts.denials, 2);
    // Six records from six IPs, plus the registration's (no IP).
    assert_eq!(ada_counts.distinct_ips, 6);
}

/// Contract check.
pub async fn the_audit_key_wrap_is_stored_once_and_swapped_only_if_unchanged(
    store: Arc<dyn Store>,
) {
    assert!(store.audit_key_wrap().await.expect("read").is_none());
    let wrap = |version: i64, byte: u8| WrappedDek {
        provider: "local".into(),
        kek_id: "local".into(),
        kek_version: version,
        ciphertext: vec![byte; 60],
    };
    let first = store
        .store_audit_key_wrap(&wrap(1, 1))
        .await
        .expect("store");
    assert_eq!(first.ciphertext, wrap(1, 1).ciphertext);
    let second = store
        .store_audit_key_wrap(&wrap(1, 2))
        .await
        .expect("store again");
    assert_eq!(
        second.ciphertext,
        wrap(1, 1).ciphertext,
        "the first key wins"
    );

    let inventory = store.dek_inventory().await.expect("inventory");
    assert!(
        inventory
            .iter()
            .any(|row| row.kek_version == 1 && row.count == 1)
    );

    assert!(
        !store
            .replace_audit_key_wrap(&wrap(1, 9), &wrap(2, 3))
            .await
            .expect("stale swap")
    );
    assert!(
        store
            .replace_audit_key_wrap(&wrap(1, 1), &wrap(2, 3))
            .await
            .expect("swap")
    );
    let now = store.audit_key_wrap().await.expect("read").expect("stored");
    assert_eq!((now.kek_version, now.ciphertext), (2, vec![3; 60]));
}
