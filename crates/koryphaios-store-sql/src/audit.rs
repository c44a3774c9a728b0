//! [`AuditStore`]: reading, verifying input for, purging and re-keying the audit log. Writes go
//! through `audit_chain`.

use std::sync::Arc;

use async_trait::async_trait;
use koryphaios_core::audit::AuditEntry;
use koryphaios_core::audit::chain::{AuditKey, ChainAnchor, ChainRecord, purge_boundary};
use koryphaios_core::audit::head::ChainHead;
use koryphaios_core::audit::query::{ActivityCounts, AuditQuery, PageStart, StoredAuditEntry};
use koryphaios_core::clock::{from_unix_ms, to_unix_ms};
use koryphaios_core::envelope::WrappedDek;
use koryphaios_core::group_commit::WriteJob;
use koryphaios_core::ids::{AuditEventId, UserId};
use koryphaios_core::store::{AuditPurge, AuditStore, StoreError, StoreResult};
use time::OffsetDateTime;

use crate::audit_chain::{commit_with_audit, newest_link, read_head, write_head};
use crate::backend::Backend;
use crate::driver::{Columns, Query};
use crate::rows::{decode_err, wrap_from_row};
use crate::store::SqlStore;

fn chain_record_from_row(row: &impl Columns) -> Result<ChainRecord, sqlx::Error> {
    Ok(ChainRecord {
        seq: row.try_get("seq")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
        ..chain_record_from_row_unlinked(row)?
    })
}

/// A record not yet linked (`seq`, `prev_hash` and `hash` are NULL): its content only.
fn chain_record_from_row_unlinked(row: &impl Columns) -> Result<ChainRecord, sqlx::Error> {
    Ok(ChainRecord {
        seq: 0,
        prev_hash: Vec::new(),
        hash: Vec::new(),
        id: row.try_get("id")?,
        occurred_at_ms: row.try_get("occurred_at")?,
        user_id: row.try_get("user_id")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        resource_type: row.try_get("resource_type")?,
        resource_id: row.try_get("resource_id")?,
        client_ip: row.try_get("client_ip")?,
        user_agent: row.try_get("user_agent")?,
        request_id: row.try_get("request_id")?,
        success: row.try_get("success")?,
        reason: row.try_get("reason")?,
        metadata_json: row.try_get("metadata")?,
    })
}

fn count(row: &impl Columns, column: &str) -> Result<u64, sqlx::Error> {
    Ok(u64::try_from(row.try_get::<i64>(column)?).unwrap_or(0))
}

fn entry_from_row(row: &impl Columns) -> Result<AuditEntry, sqlx::Error> {
    let id: String = row.try_get("id")?;
    let user_id: Option<String> = row.try_get("user_id")?;
    let metadata: String = row.try_get("metadata")?;
    Ok(AuditEntry {
        id: AuditEventId::parse(&id).map_err(decode_err)?,
        occurred_at: from_unix_ms(row.try_get("occurred_at")?),
        user_id: user_id
            .map(|raw| UserId::parse(&raw))
            .transpose()
            .map_err(decode_err)?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        resource_type: row.try_get("resource_type")?,
        resource_id: row.try_get("resource_id")?,
        client_ip: row.try_get("client_ip")?,
        user_agent: row.try_get("user_agent")?,
        request_id: row.try_get("request_id")?,
        success: row.try_get("success")?,
        reason: row.try_get("reason")?,
        metadata: serde_json::from_str(&metadata).map_err(decode_err)?,
    })
}

#[async_trait]
impl<B: Backend> AuditStore for SqlStore<B> {
    async fn install_audit_key(&self, key: Arc<AuditKey>) -> StoreResult<u64> {
        self.chain.install(key)?;
        // Records written before the chain existed (an upgraded install) join it now, in the
        // order they were written.
        let mut tx = self.backend.write().await?;
        B::lock_audit_chain(&mut tx).await?;
        let chained: bool = Query::<B::Db>::new(
            "SELECT EXISTS (SELECT 1 FROM audit_events WHERE seq IS NOT NULL)
                 OR EXISTS (SELECT 1 FROM audit_chain_anchor)
                 OR EXISTS (SELECT 1 FROM audit_chain_head WHERE seq > 0) AS chained",
        )
        .fetch_scalar(&mut tx)
        .await
        .map_err(B::map_err)?;
        let key = self.chain.get()?;
        if chained {
            // Unlinked rows in a chained log were not written by this service: verification
            // reports them instead of this signing them.
            if read_head::<B>(&mut tx).await?.is_none() {
                let (seq, hash, occurred_at_ms) = newest_link::<B>(&mut tx).await?;
                // The first start after migration 0005, or the row was deleted: only an outside
                // witness (the head gauge, a checkpoint) can tell which.
                tracing::warn!(
                    seq,
                    "initialised the missing audit chain head from the newest record"
                );
                write_head::<B>(&mut tx, &ChainHead::sealed(key, seq, hash, occurred_at_ms))
                    .await?;
            }
            tx.commit().await.map_err(B::map_err)?;
            return Ok(0);
        }
        let rows = Query::<B::Db>::new(format!(
            "SELECT * FROM audit_events WHERE seq IS NULL ORDER BY {}",
            B::UNLINKED_ORDER
        ))
        .fetch_all(&mut tx)
        .await
        .map_err(B::map_err)?;
        for row in &rows {
            let mut record = chain_record_from_row_unlinked(row).map_err(B::map_err)?;
            let (head_seq, prev_hash, _) = newest_link::<B>(&mut tx).await?;
            record.seq = head_seq + 1;
            let hash = key.link(record.seq, &prev_hash, &record.canonical());
            Query::<B::Db>::new(
                "UPDATE audit_events SET seq = $1, prev_hash = $2, hash = $3 WHERE id = $4",
            )
            .bind(record.seq)
            .bind(prev_hash)
            .bind(hash.as_slice())
            .bind(record.id.as_str())
            .execute(&mut tx)
            .await
            .map_err(B::map_err)?;
        }
        let (seq, hash, occurred_at_ms) = newest_link::<B>(&mut tx).await?;
        write_head::<B>(&mut tx, &ChainHead::sealed(key, seq, hash, occurred_at_ms)).await?;
        tx.commit().await.map_err(B::map_err)?;
        Ok(rows.len() as u64)
    }

    async fn audit_key_wrap(&self) -> StoreResult<Option<WrappedDek>> {
        let row = Query::<B::Db>::new("SELECT * FROM audit_key WHERE id = 1")
            .fetch_optional(&mut *self.backend.read().await?)
            .await
            .map_err(B::map_err)?;
        row.as_ref()
            .map(|row| wrap_from_row(row, "wrapped_key"))
            .transpose()
            .map_err(B::map_err)
    }

    async fn store_audit_key_wrap(&self, wrapped: &WrappedDek) -> StoreResult<WrappedDek> {
        let mut tx = self.backend.write().await?;
        Query::<B::Db>::new(
            "INSERT INTO audit_key (id, wrapped_key, kms_provider, kek_id, kek_version, created_at)
             VALUES (1, $1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
        )
        .bind(wrapped.ciphertext.as_slice())
        .bind(wrapped.provider.as_str())
        .bind(wrapped.kek_id.as_str())
        .bind(wrapped.kek_version)
        .bind(to_unix_ms(OffsetDateTime::now_utc()))
        .execute(&mut tx)
        .await
        .map_err(B::map_err)?;
        tx.commit().await.map_err(B::map_err)?;
        self.audit_key_wrap()
            .await?
            .ok_or_else(|| StoreError::Internal("the audit key vanished after insert".into()))
    }

    async fn replace_audit_key_wrap(
        &self,
        old: &WrappedDek,
        new: &WrappedDek,
    ) -> StoreResult<bool> {
        let mut tx = self.backend.write().await?;
        let replaced = Query::<B::Db>::new(
            "UPDATE audit_key SET wrapped_key = $1, kms_provider = $2, kek_id = $3, kek_version = $4
             WHERE id = 1 AND wrapped_key = $5 AND kms_provider = $6 AND kek_id = $7
               AND kek_version = $8",
        )
        .bind(new.ciphertext.as_slice())
        .bind(new.provider.as_str())
        .bind(new.kek_id.as_str())
        .bind(new.kek_version)
        .bind(old.ciphertext.as_slice())
        .bind(old.provider.as_str())
        .bind(old.kek_id.as_str())
        .bind(old.kek_version)
        .execute(&mut tx)
        .await
        .map_err(B::map_err)?;
        tx.commit().await.map_err(B::map_err)?;
        Ok(replaced == 1)
    }

    async fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()> {
        self.group_commit
            .submit(WriteJob::Audit(Box::new(entry.clone())))
            .await
    }

    async fn query_audit(&self, query: &AuditQuery) -> StoreResult<Vec<StoredAuditEntry>> {
        let mut sql = Query::<B::Db>::new("SELECT * FROM audit_events WHERE seq IS NOT NULL");
        if let Some(user) = &query.user_id {
            sql.push(" AND user_id = ").push_bind(user.as_str());
        }
        if let Some(action) = &query.action {
            sql.push(" AND action = ").push_bind(action.as_str());
        }
        if let Some(kind) = &query.resource_type {
            sql.push(" AND resource_type = ").push_bind(kind.as_str());
        }
        if let Some(run) = &query.run_id {
            sql.push(" AND ")
                .push(B::RUN_ID)
                .push(" = ")
                .push_bind(run.as_str());
        }
        if let Some(id) = &query.resource_id {
            sql.push(" AND resource_id = ").push_bind(id.as_str());
        }
        if let Some(start) = query.start {
            sql.push(" AND occurred_at >= ")
                .push_bind(to_unix_ms(start));
        }
        if let Some(end) = query.end {
            sql.push(" AND occurred_at <= ").push_bind(to_unix_ms(end));
        }
        if let Some(success) = query.success {
            sql.push(" AND success = ").push_bind(success);
        }
        if let PageStart::Before(seq) = query.page {
            sql.push(" AND seq < ").push_bind(seq);
        }
        sql.push(" ORDER BY seq DESC LIMIT ")
            .push_bind(i64::from(query.limit));
        if let PageStart::Offset(offset) = query.page {
            sql.push(" OFFSET ")
                .push_bind(i64::try_from(offset).unwrap_or(i64::MAX));
        }
        let rows = sql
            .fetch_all(&mut *self.backend.read().await?)
            .await
            .map_err(B::map_err)?;
        rows.iter()
            .map(|row| {
                Ok(StoredAuditEntry {
                    seq: row.try_get("seq")?,
                    entry: entry_from_row(row)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(B::map_err)
    }

    async fn audit_activity(&self, since: OffsetDateTime) -> StoreResult<Vec<ActivityCounts>> {
        let rows = Query::<B::Db>::new(
            "SELECT user_id,
                    SUM(CASE WHEN action = 'login' AND NOT success THEN 1 ELSE 0 END) AS failed_logins,
                    SUM(CASE WHEN action = 'credential_access' AND success THEN 1 ELSE 0 END) AS reveals,
                    SUM(CASE WHEN action IN ('access_denied', 'rate_limited') THEN 1 ELSE 0 END) AS denials,
                    COUNT(DISTINCT client_ip) AS distinct_ips
             FROM audit_events WHERE occurred_at >= $1 AND user_id IS NOT NULL
             GROUP BY user_id ORDER BY user_id",
        )
        .bind(to_unix_ms(since))
        .fetch_all(&mut *self.backend.read().await?)
        .await
        .map_err(B::map_err)?;
        rows.iter()
            .map(|row| {
                let user: String = row.try_get("user_id")?;
                Ok(ActivityCounts {
                    user_id: UserId::parse(&user).map_err(decode_err)?,
                    failed_logins: count(row, "failed_logins")?,
                    reveals: count(row, "reveals")?,
                    denials: count(row, "denials")?,
                    distinct_ips: count(row, "distinct_ips")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(B::map_err)
    }

    async fn audit_chain_page(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<ChainRecord>> {
        let rows =
            Query::<B::Db>::new("SELECT * FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(after_seq)
                .bind(i64::from(limit))
                .fetch_all(&mut *self.backend.read().await?)
                .await
                .map_err(B::map_err)?;
        rows.iter()
            .map(chain_record_from_row)
            .collect::<Result<_, _>>()
            .map_err(B::map_err)
    }

    async fn audit_chain_anchor(&self) -> StoreResult<Option<ChainAnchor>> {
        let row = Query::<B::Db>::new(
            "SELECT seq, hash, purged_at, mac FROM audit_chain_anchor WHERE id = 1",
        )
        .fetch_optional(&mut *self.backend.read().await?)
        .await
        .map_err(B::map_err)?;
        row.map(|row| {
            Ok(ChainAnchor {
                seq: row.try_get("seq")?,
                hash: row.try_get("hash")?,
                purged_at_ms: row.try_get("purged_at")?,
                mac: row.try_get("mac")?,
            })
        })
        .transpose()
        .map_err(B::map_err)
    }

    async fn audit_chain_head(&self) -> StoreResult<Option<ChainHead>> {
        read_head::<B>(&mut *self.backend.read().await?).await
    }

    async fn unlinked_audit_ids(&self, limit: u32) -> StoreResult<Vec<String>> {
        let rows = Query::<B::Db>::new(
            "SELECT id FROM audit_events WHERE seq IS NULL ORDER BY id LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&mut *self.backend.read().await?)
        .await
        .map_err(B::map_err)?;
        rows.iter()
            .map(|row| row.try_get("id"))
            .collect::<Result<_, _>>()
            .map_err(B::map_err)
    }

    async fn purge_audit_before(
        &self,
        cutoff: OffsetDateTime,
        now: OffsetDateTime,
        max_records: u32,
        record: &AuditEntry,
    ) -> StoreResult<AuditPurge> {
        let key = self.chain.get()?;
        let mut tx = self.backend.write().await?;
        B::lock_audit_chain(&mut tx).await?;
        // The longest all-old prefix (everything before the oldest record still in retention),
        // at most `max_records` of it.
        let bounds = Query::<B::Db>::new(
            "SELECT (SELECT MIN(seq) FROM audit_events WHERE occurred_at >= $1 AND seq IS NOT NULL) AS first_kept,
                    (SELECT MAX(seq) FROM audit_events) AS newest,
                    (SELECT MIN(seq) FROM audit_events) AS oldest",
        )
        .bind(to_unix_ms(cutoff))
        .fetch_one(&mut tx)
        .await
        .map_err(B::map_err)?;
        let first_kept: Option<i64> = bounds.try_get("first_kept").map_err(B::map_err)?;
        let newest: Option<i64> = bounds.try_get("newest").map_err(B::map_err)?;
        let oldest: Option<i64> = bounds.try_get("oldest").map_err(B::map_err)?;
        let last_purged = purge_boundary(first_kept, newest, oldest, max_records);
        let hash: Option<Vec<u8>> =
            Query::<B::Db>::new("SELECT hash FROM audit_events WHERE seq = $1")
                .bind(last_purged)
                .fetch_optional_scalar(&mut tx)
                .await
                .map_err(B::map_err)?;
        let Some(hash) = hash else {
            tx.commit().await.map_err(B::map_err)?;
            return Ok(AuditPurge {
                deleted: 0,
                anchor: self.audit_chain_anchor().await?,
            });
        };
        let purged_at_ms = to_unix_ms(now);
        let anchor = ChainAnchor {
            seq: last_purged,
            mac: key.anchor_mac(last_purged, &hash, purged_at_ms).to_vec(),
            hash,
            purged_at_ms,
        };
        let deleted = Query::<B::Db>::new("DELETE FROM audit_events WHERE seq <= $1")
            .bind(last_purged)
            .execute(&mut tx)
            .await
            .map_err(B::map_err)?;
        Query::<B::Db>::new(
            "INSERT INTO audit_chain_anchor (id, seq, hash, purged_at, mac) VALUES (1, $1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash,
                                            purged_at = excluded.purged_at, mac = excluded.mac",
        )
        .bind(anchor.seq)
        .bind(anchor.hash.as_slice())
        .bind(anchor.purged_at_ms)
        .bind(anchor.mac.as_slice())
        .execute(&mut tx)
        .await
        .map_err(B::map_err)?;
        // The purge's own record, in the same transaction: no deletion goes unrecorded.
        let mut record = record.clone();
        record.metadata.insert("deleted".into(), deleted.into());
        commit_with_audit::<B>(&self.chain, tx, &record).await?;
        Ok(AuditPurge {
            deleted,
            anchor: Some(anchor),
        })
    }

    async fn audit_for_resource(
        &self,
        owner: &UserId,
        resource_type: &str,
        resource_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<AuditEntry>> {
        let rows = Query::<B::Db>::new(
            "SELECT * FROM audit_events WHERE resource_type = $1 AND resource_id = $2 AND user_id = $3
             ORDER BY occurred_at DESC, id DESC LIMIT $4",
        )
        .bind(resource_type)
        .bind(resource_id)
        .bind(owner.as_str())
        .bind(i64::from(limit))
        .fetch_all(&mut *self.backend.read().await?)
        .await
        .map_err(B::map_err)?;
        rows.iter()
            .map(entry_from_row)
            .collect::<Result<_, _>>()
            .map_err(B::map_err)
    }
}
