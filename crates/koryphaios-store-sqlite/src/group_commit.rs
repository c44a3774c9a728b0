//! Group commit for the hot write paths (reveal's audit record, credential creation, standalone
//! audit records).
//!
//! Callers hand their write to one writer task and wait for its commit, so each still returns
//! only once its record is durable (fail closed), but concurrent writes share one transaction
//! instead of queueing for the single SQLite writer one `BEGIN … COMMIT` at a time. If any write
//! of a batch fails, the batch rolls back and every caller in it gets the error.

use koryphaios_core::audit::{AuditEntry, observe_committed};
use koryphaios_core::clock::to_unix_ms;
use koryphaios_core::credentials::{Credential, SealedVersion};
use koryphaios_core::ids::{CredentialId, UserId};
use koryphaios_core::store::{StoreError, StoreResult};
use sqlx::{SqliteConnection, SqlitePool};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use crate::audit::{Chain, insert_audit_batch};
use crate::credentials::insert_credential_rows;
use crate::error::map_err;

/// The most writes one transaction takes.
const MAX_BATCH: usize = 256;
/// Writes waiting for the writer task before callers are slowed down.
const QUEUE: usize = 4096;

/// One write to apply inside a shared transaction.
#[derive(Debug)]
pub(crate) enum WriteJob {
    /// A standalone audit record.
    Audit(Box<AuditEntry>),
    /// A reveal: last-used time and its audit record.
    Access(Box<(UserId, CredentialId, OffsetDateTime, AuditEntry)>),
    /// A new credential with its first version and audit record.
    InsertCredential(Box<(Credential, SealedVersion, AuditEntry)>),
}

impl WriteJob {
    fn audit_entry(&self) -> &AuditEntry {
        match self {
            Self::Audit(entry) => entry,
            Self::Access(job) => &job.3,
            Self::InsertCredential(job) => &job.2,
        }
    }
}

type Job = (WriteJob, oneshot::Sender<StoreResult<()>>);

/// The handle callers submit writes through.
#[derive(Debug, Clone)]
pub(crate) struct GroupCommit {
    sender: mpsc::Sender<Job>,
}

impl GroupCommit {
    /// Starts the writer task on `writer` (the single-connection write pool).
    pub(crate) fn start(writer: SqlitePool, chain: Chain) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(run(writer, chain, receiver));
        Self { sender }
    }

    /// Applies `job` and returns once it is committed (or failed).
    pub(crate) async fn submit(&self, job: WriteJob) -> StoreResult<()> {
        let (ack, done) = oneshot::channel();
        self.sender
            .send((job, ack))
            .await
            .map_err(|_| StoreError::Unavailable("the database writer has stopped".into()))?;
        done.await
            .map_err(|_| StoreError::Internal("the database writer dropped a write".into()))?
    }
}

async fn run(writer: SqlitePool, chain: Chain, mut receiver: mpsc::Receiver<Job>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = receiver.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let result = apply(&writer, &chain, &batch).await;
        if let Err(error) = &result {
            tracing::error!(%error, writes = batch.len(), "group commit failed; every write of the batch is refused");
        }
        for (_, ack) in batch.drain(..) {
            let _ = ack.send(result.clone());
        }
    }
}

async fn apply(writer: &SqlitePool, chain: &Chain, batch: &[Job]) -> StoreResult<()> {
    let mut tx = writer
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(map_err)?;
    for (job, _) in batch {
        apply_rows(&mut tx, job).await?;
    }
    let entries: Vec<&AuditEntry> = batch.iter().map(|(job, _)| job.audit_entry()).collect();
    insert_audit_batch(chain, &mut tx, &entries).await?;
    tx.commit().await.map_err(map_err)?;
    observe_committed(entries);
    Ok(())
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
