//! The PostgreSQL [`BatchWriter`]: the audit chain's lock, its head read and the commit are paid
//! once per batch of hot writes instead of once per record.

use async_trait::async_trait;
use koryphaios_core::audit::AuditEntry;
use koryphaios_core::group_commit::{BatchWriter, WriteJob};
use koryphaios_core::store::StoreResult;
use sqlx::{PgConnection, PgPool};

use crate::audit::{Chain, insert_audit_batch};
use crate::credentials::{insert_credential_rows, touch_credential};
use crate::error::map_err;

/// Applies batches on the pool, one transaction each.
#[derive(Debug)]
pub(crate) struct PgBatchWriter {
    pub(crate) pool: PgPool,
    pub(crate) chain: Chain,
}

#[async_trait]
impl BatchWriter for PgBatchWriter {
    async fn apply(&self, batch: &[&WriteJob]) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        // Row writes first, in credential-id order (two instances' batches lock rows in the same
        // order), then every record under one chain lock: a transaction holding the chain lock
        // never waits for a row, so no lock cycle can form with other writers.
        let mut jobs = batch.to_vec();
        jobs.sort_by(|a, b| a.row_key().cmp(b.row_key()));
        for job in &jobs {
            apply_rows(&mut tx, job).await?;
        }
        let entries: Vec<&AuditEntry> = batch.iter().map(|job| job.audit_entry()).collect();
        insert_audit_batch(&self.chain, &mut tx, &entries).await?;
        tx.commit().await.map_err(map_err)
    }
}

async fn apply_rows(conn: &mut PgConnection, job: &WriteJob) -> StoreResult<()> {
    match job {
        WriteJob::Audit(_) => Ok(()),
        WriteJob::Access(job) => {
            let (owner, id, now, _) = job.as_ref();
            touch_credential(conn, owner, id, *now).await
        }
        WriteJob::InsertCredential(job) => {
            let (credential, first, _) = job.as_ref();
            insert_credential_rows(conn, credential, first).await
        }
    }
}
