//! [`AuditStore`] on SQLite, and the insert every write path calls inside its own transaction.

use std::sync::Arc;

use async_trait::async_trait;
use koryphaios_core::audit::chain::{
    AuditKey, ChainAnchor, ChainRecord, GENESIS, InstalledKey, purge_boundary,
};
use koryphaios_core::audit::head::{self, ChainHead};
use koryphaios_core::audit::query::{ActivityCounts, AuditQuery, PageStart, StoredAuditEntry};
use koryphaios_core::audit::{AuditEntry, observe_committed};
use koryphaios_core::clock::{from_unix_ms, to_unix_ms};
use koryphaios_core::envelope::WrappedDek;
use koryphaios_core::group_commit::WriteJob;
use koryphaios_core::ids::{AuditEventId, UserId};
use koryphaios_core::store::{AuditPurge, AuditStore, StoreError, StoreResult};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};
use time::OffsetDateTime;

use crate::SqliteStore;
use crate::error::map_err;

/// The chain key once installed, shared by the store and its group-commit writer.
pub(crate) type Chain = InstalledKey;

/// The newest link by the records themselves: the newest record, else the purge anchor, else
/// genesis, with its time. Only for linking pre-chain records and initialising a missing head:
/// writes link after the stored head.
async fn newest_link(conn: &mut SqliteConnection) -> StoreResult<(i64, Vec<u8>, i64)> {
    let newest = sqlx::query(
        "SELECT seq, hash, occurred_at FROM audit_events
         WHERE seq = (SELECT MAX(seq) FROM audit_events)",
    )
    .fetch_optional(&mut *conn)
    .await
    .map_err(map_err)?;
    let head = match newest {
        Some(row) => Some(row),
        None => sqlx::query(
            "SELECT seq, hash, purged_at AS occurred_at FROM audit_chain_anchor WHERE id = 1",
        )
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_err)?,
    };
    match head {
        Some(row) => Ok((
            row.try_get("seq").map_err(map_err)?,
            row.try_get("hash").map_err(map_err)?,
            row.try_get("occurred_at").map_err(map_err)?,
        )),
        None => Ok((0, GENESIS.to_vec(), 0)),
    }
}

async fn read_head<'e, E>(executor: E) -> StoreResult<Option<ChainHead>>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    let row = sqlx::query("SELECT seq, hash, occurred_at, mac FROM audit_chain_head WHERE id = 1")
        .fetch_optional(executor)
        .await
        .map_err(map_err)?;
    row.map(|row| {
        Ok(ChainHead {
            seq: row.try_get("seq")?,
            hash: row.try_get("hash")?,
            occurred_at_ms: row.try_get("occurred_at")?,
            mac: row.try_get("mac")?,
        })
    })
    .transpose()
    .map_err(map_err)
}

async fn write_head(conn: &mut SqliteConnection, head: &ChainHead) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO audit_chain_head (id, seq, hash, occurred_at, mac) VALUES (1, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash,
                                        occurred_at = excluded.occurred_at, mac = excluded.mac",
    )
    .bind(head.seq)
    .bind(&head.hash)
    .bind(head.occurred_at_ms)
    .bind(&head.mac)
    .execute(conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

/// The stored head; for a log with no record and no anchor at all (say, after `migrate down`
/// and `up` under a running service), the empty chain's head, as there is nothing to hide.
async fn head_or_genesis(
    key: &AuditKey,
    conn: &mut SqliteConnection,
) -> StoreResult<Option<ChainHead>> {
    if let Some(head) = read_head(&mut *conn).await? {
        return Ok(Some(head));
    }
    let (seq, _, _) = newest_link(conn).await?;
    Ok((seq == 0).then(|| ChainHead::genesis(key)))
}

/// Writes `entry` on `conn` (the caller's transaction) as the chain's next link: if this fails,
/// the change fails with it. The caller's write lock (`BEGIN IMMEDIATE`) keeps the chain single.
pub(crate) async fn insert_audit(
    chain: &Chain,
    conn: &mut SqliteConnection,
    entry: &AuditEntry,
) -> StoreResult<()> {
    insert_audit_batch(chain, conn, &[entry]).await
}

/// Writes `entries` as the chain's next links after the stored head, in order, and moves the head
/// (the group commit's batches read and write it once).
pub(crate) async fn insert_audit_batch(
    chain: &Chain,
    conn: &mut SqliteConnection,
    entries: &[&AuditEntry],
) -> StoreResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let key = chain.get()?;
    let (links, head) = head::extend(key, head_or_genesis(key, conn).await?, entries)?;
    for link in links {
        let entry = link.entry;
        sqlx::query(
            "INSERT INTO audit_events (id, occurred_at, user_id, actor, action, resource_type, resource_id,
                                       client_ip, user_agent, request_id, success, reason, metadata,
                                       seq, prev_hash, hash)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(entry.id.as_str())
        .bind(to_unix_ms(entry.occurred_at))
        .bind(entry.user_id.as_ref().map(UserId::as_str))
        .bind(&entry.actor)
        .bind(&entry.action)
        .bind(entry.resource_type.as_deref())
        .bind(entry.resource_id.as_deref())
        .bind(entry.client_ip.as_deref())
        .bind(entry.user_agent.as_deref())
        .bind(entry.request_id.as_deref())
        .bind(entry.success)
        .bind(entry.reason.as_deref())
        .bind(link.metadata_json)
        .bind(link.seq)
        .bind(link.prev_hash)
        .bind(link.hash)
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
    }
    write_head(conn, &head).await
}

/// Commits `tx` and then counts its audit records.
pub(crate) async fn commit_audited(
    tx: sqlx::Transaction<'_, sqlx::Sqlite>,
    entry: &AuditEntry,
) -> StoreResult<()> {
    tx.commit().await.map_err(map_err)?;
    observe_committed([entry]);
    Ok(())
}

fn chain_record_from_row(row: &SqliteRow) -> Result<ChainRecord, sqlx::Error> {
    Ok(ChainRecord {
        seq: row.try_get("seq")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
        ..chain_record_from_row_unlinked(row)?
    })
}

/// A record not yet linked (`seq`, `prev_hash` and `hash` are NULL): its content only.
fn chain_record_from_row_unlinked(row: &SqliteRow) -> Result<ChainRecord, sqlx::Error> {
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

fn wrap_from_row(row: &SqliteRow) -> Result<WrappedDek, sqlx::Error> {
    Ok(WrappedDek {
        provider: row.try_get("kms_provider")?,
        kek_id: row.try_get("kek_id")?,
        kek_version: row.try_get("kek_version")?,
        ciphertext: row.try_get("wrapped_key")?,
    })
}

fn count(row: &SqliteRow, column: &str) -> Result<u64, sqlx::Error> {
    Ok(u64::try_from(row.try_get::<i64, _>(column)?).unwrap_or(0))
}

fn entry_from_row(row: &SqliteRow) -> Result<AuditEntry, sqlx::Error> {
    let decode = |e: koryphaios_core::ids::InvalidId| sqlx::Error::Decode(Box::new(e));
    let id: String = row.try_get("id")?;
    let user_id: Option<String> = row.try_get("user_id")?;
    let metadata: String = row.try_get("metadata")?;
    Ok(AuditEntry {
        id: AuditEventId::parse(&id).map_err(decode)?,
        occurred_at: from_unix_ms(row.try_get("occurred_at")?),
        user_id: user_id
            .map(|raw| UserId::parse(&raw))
            .transpose()
            .map_err(decode)?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        resource_type: row.try_get("resource_type")?,
        resource_id: row.try_get("resource_id")?,
        client_ip: row.try_get("client_ip")?,
        user_agent: row.try_get("user_agent")?,
        request_id: row.try_get("request_id")?,
        success: row.try_get("success")?,
        reason: row.try_get("reason")?,
        metadata: serde_json::from_str(&metadata).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
    })
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn install_audit_key(&self, key: Arc<AuditKey>) -> StoreResult<u64> {
        self.chain.install(key)?;
        // Records written before the chain existed (an upgraded install) join it now, in the
        // order they were written.
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        let chained = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM audit_events WHERE seq IS NOT NULL)
                 OR EXISTS (SELECT 1 FROM audit_chain_anchor)
                 OR EXISTS (SELECT 1 FROM audit_chain_head WHERE seq > 0) AS chained",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(map_err)?
        .try_get::<bool, _>("chained")
        .map_err(map_err)?;
        let key = self.chain.get()?;
        if chained {
            // Unlinked rows in a chained log were not written by this service: verification
            // reports them instead of this signing them.
            if read_head(&mut *tx).await?.is_none() {
                let (seq, hash, occurred_at_ms) = newest_link(&mut tx).await?;
                // The first start after migration 0005, or the row was deleted: only an outside
                // witness (the head gauge, a checkpoint) can tell which.
                tracing::warn!(
                    seq,
                    "initialised the missing audit chain head from the newest record"
                );
                write_head(&mut tx, &ChainHead::sealed(key, seq, hash, occurred_at_ms)).await?;
            }
            tx.commit().await.map_err(map_err)?;
            return Ok(0);
        }
        let rows = sqlx::query("SELECT * FROM audit_events WHERE seq IS NULL ORDER BY rowid")
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?;
        for row in &rows {
            let mut record = chain_record_from_row_unlinked(row).map_err(map_err)?;
            let (head_seq, prev_hash, _) = newest_link(&mut tx).await?;
            record.seq = head_seq + 1;
            let hash = key.link(record.seq, &prev_hash, &record.canonical());
            sqlx::query("UPDATE audit_events SET seq = ?, prev_hash = ?, hash = ? WHERE id = ?")
                .bind(record.seq)
                .bind(prev_hash)
                .bind(hash.as_slice())
                .bind(&record.id)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        let (seq, hash, occurred_at_ms) = newest_link(&mut tx).await?;
        write_head(&mut tx, &ChainHead::sealed(key, seq, hash, occurred_at_ms)).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(rows.len() as u64)
    }

    async fn audit_key_wrap(&self) -> StoreResult<Option<WrappedDek>> {
        let row = sqlx::query("SELECT * FROM audit_key WHERE id = 1")
            .fetch_optional(&self.writer)
            .await
            .map_err(map_err)?;
        row.as_ref().map(wrap_from_row).transpose().map_err(map_err)
    }

    async fn store_audit_key_wrap(&self, wrapped: &WrappedDek) -> StoreResult<WrappedDek> {
        sqlx::query(
            "INSERT INTO audit_key (id, wrapped_key, kms_provider, kek_id, kek_version, created_at)
             VALUES (1, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&wrapped.ciphertext)
        .bind(&wrapped.provider)
        .bind(&wrapped.kek_id)
        .bind(wrapped.kek_version)
        .bind(to_unix_ms(time::OffsetDateTime::now_utc()))
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        self.audit_key_wrap()
            .await?
            .ok_or_else(|| StoreError::Internal("the audit key vanished after insert".into()))
    }

    async fn replace_audit_key_wrap(
        &self,
        old: &WrappedDek,
        new: &WrappedDek,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE audit_key SET wrapped_key = ?, kms_provider = ?, kek_id = ?, kek_version = ?
             WHERE id = 1 AND wrapped_key = ? AND kms_provider = ? AND kek_id = ? AND kek_version = ?",
        )
        .bind(&new.ciphertext)
        .bind(&new.provider)
        .bind(&new.kek_id)
        .bind(new.kek_version)
        .bind(&old.ciphertext)
        .bind(&old.provider)
        .bind(&old.kek_id)
        .bind(old.kek_version)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()> {
        self.group_commit
            .submit(WriteJob::Audit(Box::new(entry.clone())))
            .await
    }

    async fn query_audit(&self, query: &AuditQuery) -> StoreResult<Vec<StoredAuditEntry>> {
        let mut sql =
            QueryBuilder::<Sqlite>::new("SELECT * FROM audit_events WHERE seq IS NOT NULL");
        if let Some(user) = &query.user_id {
            sql.push(" AND user_id = ").push_bind(user.as_str());
        }
        if let Some(action) = &query.action {
            sql.push(" AND action = ").push_bind(action.as_str());
        }
        if let Some(kind) = &query.resource_type {
            sql.push(" AND resource_type = ").push_bind(kind.as_str());
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
        let rows = sql.build().fetch_all(&self.reader).await.map_err(map_err)?;
        rows.iter()
            .map(|row| {
                Ok(StoredAuditEntry {
                    seq: row.try_get("seq")?,
                    entry: entry_from_row(row)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(map_err)
    }

    async fn audit_activity(&self, since: OffsetDateTime) -> StoreResult<Vec<ActivityCounts>> {
        let rows = sqlx::query(
            "SELECT user_id,
                    SUM(CASE WHEN action = 'login' AND success = 0 THEN 1 ELSE 0 END) AS failed_logins,
                    SUM(CASE WHEN action = 'credential_access' AND success = 1 THEN 1 ELSE 0 END) AS reveals,
                    SUM(CASE WHEN action IN ('access_denied', 'rate_limited') THEN 1 ELSE 0 END) AS denials,
                    COUNT(DISTINCT client_ip) AS distinct_ips
             FROM audit_events WHERE occurred_at >= ? AND user_id IS NOT NULL
             GROUP BY user_id ORDER BY user_id",
        )
        .bind(to_unix_ms(since))
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|row| {
                let user: String = row.try_get("user_id")?;
                Ok(ActivityCounts {
                    user_id: UserId::parse(&user).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                    failed_logins: count(row, "failed_logins")?,
                    reveals: count(row, "reveals")?,
                    denials: count(row, "denials")?,
                    distinct_ips: count(row, "distinct_ips")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(map_err)
    }

    async fn audit_chain_page(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<ChainRecord>> {
        let rows = sqlx::query("SELECT * FROM audit_events WHERE seq > ? ORDER BY seq LIMIT ?")
            .bind(after_seq)
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?;
        rows.iter()
            .map(chain_record_from_row)
            .collect::<Result<_, _>>()
            .map_err(map_err)
    }

    async fn audit_chain_anchor(&self) -> StoreResult<Option<ChainAnchor>> {
        let row =
            sqlx::query("SELECT seq, hash, purged_at, mac FROM audit_chain_anchor WHERE id = 1")
                .fetch_optional(&self.reader)
                .await
                .map_err(map_err)?;
        row.map(|row| {
            Ok(ChainAnchor {
                seq: row.try_get("seq")?,
                hash: row.try_get("hash")?,
                purged_at_ms: row.try_get("purged_at")?,
                mac: row.try_get("mac")?,
            })
        })
        .transpose()
        .map_err(map_err)
    }

    async fn audit_chain_head(&self) -> StoreResult<Option<ChainHead>> {
        read_head(&self.reader).await
    }

    async fn unlinked_audit_ids(&self, limit: u32) -> StoreResult<Vec<String>> {
        let rows = sqlx::query("SELECT id FROM audit_events WHERE seq IS NULL ORDER BY id LIMIT ?")
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?;
        rows.iter()
            .map(|row| row.try_get("id"))
            .collect::<Result<_, _>>()
            .map_err(map_err)
    }

    async fn purge_audit_before(
        &self,
        cutoff: OffsetDateTime,
        now: OffsetDateTime,
        max_records: u32,
        record: &AuditEntry,
    ) -> StoreResult<AuditPurge> {
        let key = self.chain.get()?;
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        // The longest all-old prefix (everything before the oldest record still in retention),
        // at most `max_records` of it.
        let bounds = sqlx::query(
            "SELECT (SELECT MIN(seq) FROM audit_events WHERE occurred_at >= ? AND seq IS NOT NULL) AS first_kept,
                    (SELECT MAX(seq) FROM audit_events) AS newest,
                    (SELECT MIN(seq) FROM audit_events) AS oldest",
        )
        .bind(to_unix_ms(cutoff))
        .fetch_one(&mut *tx)
        .await
        .map_err(map_err)?;
        let first_kept: Option<i64> = bounds.try_get("first_kept").map_err(map_err)?;
        let newest: Option<i64> = bounds.try_get("newest").map_err(map_err)?;
        let oldest: Option<i64> = bounds.try_get("oldest").map_err(map_err)?;
        let last_purged = purge_boundary(first_kept, newest, oldest, max_records);
        let last = sqlx::query("SELECT hash FROM audit_events WHERE seq = ?")
            .bind(last_purged)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
        let Some(last) = last else {
            tx.commit().await.map_err(map_err)?;
            return Ok(AuditPurge {
                deleted: 0,
                anchor: self.audit_chain_anchor().await?,
            });
        };
        let hash: Vec<u8> = last.try_get("hash").map_err(map_err)?;
        let purged_at_ms = to_unix_ms(now);
        let anchor = ChainAnchor {
            seq: last_purged,
            mac: key.anchor_mac(last_purged, &hash, purged_at_ms).to_vec(),
            hash,
            purged_at_ms,
        };
        let deleted = sqlx::query("DELETE FROM audit_events WHERE seq <= ?")
            .bind(last_purged)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?
            .rows_affected();
        sqlx::query(
            "INSERT INTO audit_chain_anchor (id, seq, hash, purged_at, mac) VALUES (1, ?, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash,
                                            purged_at = excluded.purged_at, mac = excluded.mac",
        )
        .bind(anchor.seq)
        .bind(&anchor.hash)
        .bind(anchor.purged_at_ms)
        .bind(&anchor.mac)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        // The purge's own record, in the same transaction: no deletion goes unrecorded.
        let mut record = record.clone();
        record.metadata.insert("deleted".into(), deleted.into());
        insert_audit(&self.chain, &mut tx, &record).await?;
        commit_audited(tx, &record).await?;
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
        let rows = sqlx::query(
            "SELECT * FROM audit_events WHERE resource_type = ? AND resource_id = ? AND user_id = ?
             ORDER BY occurred_at DESC, id DESC LIMIT ?",
        )
        .bind(resource_type)
        .bind(resource_id)
        .bind(owner.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(entry_from_row)
            .collect::<Result<_, _>>()
            .map_err(map_err)
    }
}
