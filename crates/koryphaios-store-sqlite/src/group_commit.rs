//! The SQLite [`BatchWriter`]: one `BEGIN IMMEDIATE` transaction per batch of hot writes, so
//! concurrent writers share a commit instead of queueing for the single writer one at a time.

use async_trait::async_trait;
use koryphaios_core::audit::AuditEntry;
use koryphaios_core::clock::to_unix_ms;
use koryphaios_core::group_commit::{BatchWriter, WriteJob};
use koryphaios_core::store::StoreResult;
use sqlx::{SqliteConnection, SqlitePool};

use crate::audit::{Chain, insert_audit_batch};
use crate::credentials::insert_credential_rows;
use crate::error::map_err;

/// Applies batches on the single-connection write pool.
#[derive(Debug)]
pub(crate) struct SqliteBatchWriter {
    pub(crate) writer: SqlitePool,
    pub(crate) chain: Chain,
}

#[async_trait]
impl BatchWriter for SqliteBatchWriter {
    async fn apply(&self, batch: &[&WriteJob]) -> StoreResult<()> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        for job in batch {
            apply_rows(&mut tx, job).await?;
        }
        let entries: Vec<&AuditEntry> = batch.iter().map(|job| job.audit_entry()).collect();
        insert_audit_batch(&self.chain, &mut tx, &entries).await?;
        tx.commit().await.map_err(map_err)
    }
}

async fn apply_rows(conn: &mut SqliteConnection, job: &WriteJob) -> StoreResult<()> {
    match job {
        WriteJob::Audit(_) => Ok(()),
        WriteJob::Access(job) => {
            let (owner, id, now, _) = job.as_ref();
            sqlx::query("UPDATE credentials SET last_used_at = ? WHERE id = ? AND user_id = ?")
                .bind(to_unix_ms(*now))
                .bind(id.as_str())
                .bind(owner.as_str())
                .execute(&mut *conn)
                .await
                .map_err(map_err)?;
            Ok(())
        }
        WriteJob::InsertCredential(job) => {
            let (credential, first, _) = job.as_ref();
            insert_credential_rows(conn, credential, first).await
        }
    }
}
