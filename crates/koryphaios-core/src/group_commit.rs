//! Group commit for the stores' hot write paths (reveal's audit record, credential creation,
//! standalone audit records): the jobs, and the writer task that batches them.
//!
//! Callers hand their write to one writer task and wait for its commit, so each still returns
//! only once its record is durable (fail closed), but concurrent writes share one transaction
//! instead of paying a commit (and, on PostgreSQL, the audit chain's lock) each. If any write of
//! a batch fails, the batch rolls back and every caller in it gets the error. Each store supplies
//! only [`BatchWriter::apply`]: how one batch becomes one transaction.

use async_trait::async_trait;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use crate::audit::{AuditEntry, observe_committed};
use crate::credentials::{Credential, SealedVersion};
use crate::ids::{CredentialId, UserId};
use crate::store::{StoreError, StoreResult};

/// The most writes one transaction takes.
const MAX_BATCH: usize = 256;
/// Writes waiting for the writer task before callers are slowed down.
const QUEUE: usize = 4096;

/// One write to apply inside a shared transaction.
#[derive(Debug)]
pub enum WriteJob {
    /// A standalone audit record.
    Audit(Box<AuditEntry>),
    /// A reveal: last-used time and its audit record.
    Access(Box<(UserId, CredentialId, OffsetDateTime, AuditEntry)>),
    /// A new credential with its first version and audit record.
    InsertCredential(Box<(Credential, SealedVersion, AuditEntry)>),
}

impl WriteJob {
    /// The credential row this job writes, if any (a lock order for the batch's rows).
    pub fn row_key(&self) -> &str {
        match self {
            Self::Audit(_) => "",
            Self::Access(job) => job.1.as_str(),
            Self::InsertCredential(job) => job.0.id.as_str(),
        }
    }

    /// The job's audit record.
    pub fn audit_entry(&self) -> &AuditEntry {
        match self {
            Self::Audit(entry) => entry,
            Self::Access(job) => &job.3,
            Self::InsertCredential(job) => &job.2,
        }
    }
}

/// How a store turns one batch into one transaction (rows and audit records, then commit).
#[async_trait]
pub trait BatchWriter: Send + Sync + 'static {
    /// Applies every job of `batch` in one transaction and commits it.
    async fn apply(&self, batch: &[&WriteJob]) -> StoreResult<()>;
}

type Job = (WriteJob, oneshot::Sender<StoreResult<()>>);

/// The handle callers submit writes through.
#[derive(Debug, Clone)]
pub struct GroupCommit {
    sender: mpsc::Sender<Job>,
}

impl GroupCommit {
    /// Starts the writer task (inside a tokio runtime).
    pub fn start(writer: impl BatchWriter) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(run(writer, receiver));
        Self { sender }
    }

    /// Applies `job` and returns once it is committed (or failed).
    pub async fn submit(&self, job: WriteJob) -> StoreResult<()> {
        let (ack, done) = oneshot::channel();
        self.sender
            .send((job, ack))
            .await
            .map_err(|_| StoreError::Unavailable("the database writer has stopped".into()))?;
        done.await
            .map_err(|_| StoreError::Internal("the database writer dropped a write".into()))?
    }
}

async fn run(writer: impl BatchWriter, mut receiver: mpsc::Receiver<Job>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = receiver.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let jobs: Vec<&WriteJob> = batch.iter().map(|(job, _)| job).collect();
        let result = writer.apply(&jobs).await;
        match &result {
            Ok(()) => observe_committed(jobs.iter().map(|job| job.audit_entry())),
            Err(error) => {
                tracing::error!(%error, writes = batch.len(), "group commit failed; every write of the batch is refused");
            }
        }
        for (_, ack) in batch.drain(..) {
            let _ = ack.send(result.clone());
        }
    }
}
