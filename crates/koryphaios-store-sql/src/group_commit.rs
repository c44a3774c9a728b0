//! The [`BatchWriter`] of both backends: one write transaction per batch of hot writes, so the
//! commit (and the audit chain's lock and head read) is paid once per batch, not once per record.

use async_trait::async_trait;
use koryphaios_core::audit::AuditEntry;
use koryphaios_core::audit::chain::InstalledKey;
use koryphaios_core::group_commit::{BatchWriter, WriteJob};
use koryphaios_core::store::StoreResult;

use crate::audit_chain::insert_audit_batch;
use crate::backend::{Backend, Conn};
use crate::credential_rows::{insert_credential_rows, touch_credential};

/// Applies batches through the backend's write transactions.
#[derive(Debug)]
pub(crate) struct SqlBatchWriter<B: Backend> {
    pub(crate) backend: B,
    pub(crate) chain: InstalledKey,
}

#[async_trait]
impl<B: Backend> BatchWriter for SqlBatchWriter<B> {
    async fn apply(&self, batch: &[&WriteJob]) -> StoreResult<()> {
        let mut tx = self.backend.write().await?;
        // Row writes first, in credential-id order (two instances' batches lock rows in the same
        // order), then every record under one chain lock: a transaction holding the chain lock
        // never waits for a row, so no lock cycle can form with other writers.
        let mut jobs = batch.to_vec();
        jobs.sort_by(|a, b| a.row_key().cmp(b.row_key()));
        for job in &jobs {
            apply_rows::<B>(&mut tx, job).await?;
        }
        let entries: Vec<&AuditEntry> = batch.iter().map(|job| job.audit_entry()).collect();
        insert_audit_batch::<B>(&self.chain, &mut tx, &entries).await?;
        tx.commit().await.map_err(B::map_err)
    }
}

async fn apply_rows<B: Backend>(conn: &mut Conn<B>, job: &WriteJob) -> StoreResult<()> {
    match job {
        WriteJob::Audit(_) => Ok(()),
        WriteJob::Access(job) => {
            let (owner, id, now, _) = job.as_ref();
            touch_credential::<B>(conn, owner, id, *now).await
        }
        WriteJob::InsertCredential(job) => {
            let (credential, first, _) = job.as_ref();
            insert_credential_rows::<B>(conn, credential, first).await
        }
    }
}
