//! The audit use cases: who may read which records, chain verification, suspicious activity and
//! retention. Writing records is not here: every use case writes its own, in its own transaction.

use std::sync::Arc;

use time::Duration;

use super::chain::{AuditKey, AuditKeyError, ChainReport};
use super::checkpoint::{self, Checkpoint, CheckpointVerdict};
use super::query::{ActivityCounts, AuditQuery, StoredAuditEntry, SuspicionThresholds};
use super::{AuditEntry, RequestContext, actions};
use crate::access::{self, Attempt, Refusal};
use crate::clock::Clock;
use crate::envelope::KeyProvider;
use crate::principal::Principal;
use crate::scope::Scope;
use crate::store::{AuditPurge, Store, StoreError};

/// Why an audit use case refused.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The caller may not see this (another user's records, or an admin view).
    #[error("missing scope {0}")]
    Forbidden(Scope),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<Refusal> for AuditError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::MissingScope(scope) => Self::Forbidden(scope),
            Refusal::Store(error) => Self::Store(error),
        }
    }
}

/// One user flagged by `/audit/suspicious`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuspiciousUser {
    /// The counts in the window.
    pub counts: ActivityCounts,
    /// The signals tripped (never empty).
    pub signals: Vec<&'static str>,
}

/// The audit use cases.
#[derive(Debug)]
pub struct AuditService {
    store: Arc<dyn Store>,
    key: Arc<AuditKey>,
    clock: Arc<dyn Clock>,
    retention: Duration,
    thresholds: SuspicionThresholds,
}

impl AuditService {
    /// Loads (or creates) the chain key through `kms`, installs it in the store, and links any
    /// records written before the chain existed.
    pub async fn start(
        store: Arc<dyn Store>,
        kms: &dyn KeyProvider,
        clock: Arc<dyn Clock>,
        retention: Duration,
    ) -> Result<Self, AuditKeyError> {
        let key = Arc::new(AuditKey::load_or_create(store.as_ref(), kms).await?);
        let adopted = store.install_audit_key(Arc::clone(&key)).await?;
        if adopted > 0 {
            tracing::info!(
                records = adopted,
                "linked earlier audit records into the chain"
            );
        }
        Ok(Self {
            store,
            key,
            clock,
            retention,
            thresholds: SuspicionThresholds::default(),
        })
    }

    /// How long records are kept.
    pub fn retention(&self) -> Duration {
        self.retention
    }

    /// Refuses (and audits) a caller without `scope`: the one guard, `access::require_scope`.
    async fn require(
        &self,
        principal: &Principal,
        context: &RequestContext,
        scope: Scope,
        attempted: &str,
    ) -> Result<(), AuditError> {
        Ok(access::require_scope(
            self.store.as_ref(),
            self.clock.as_ref(),
            principal,
            context,
            &scope,
            Attempt::new(attempted),
        )
        .await?)
    }

    async fn require_admin(
        &self,
        principal: &Principal,
        context: &RequestContext,
        attempted: &str,
    ) -> Result<(), AuditError> {
        self.require(principal, context, Scope::Admin, attempted)
            .await
    }

    /// Records matching `query` (scope `read`). Admins see everyone's; anyone else only their
    /// own, and asking for another user's is refused (and audited).
    pub async fn query(
        &self,
        principal: &Principal,
        context: &RequestContext,
        mut query: AuditQuery,
    ) -> Result<Vec<StoredAuditEntry>, AuditError> {
        self.require(principal, context, Scope::Read, "audit_query")
            .await?;
        match &query.user_id {
            Some(user) if *user != principal.user_id => {
                self.require_admin(principal, context, "audit_query_other_user")
                    .await?;
            }
            Some(_) => {}
            None if principal.allows(&Scope::Admin) => {}
            None => query.user_id = Some(principal.user_id.clone()),
        }
        Ok(self.store.query_audit(&query).await?)
    }

    /// The caller's own records (scope `read`).
    pub async fn mine(
        &self,
        principal: &Principal,
        context: &RequestContext,
        mut query: AuditQuery,
    ) -> Result<Vec<StoredAuditEntry>, AuditError> {
        self.require(principal, context, Scope::Read, "audit_query")
            .await?;
        query.user_id = Some(principal.user_id.clone());
        Ok(self.store.query_audit(&query).await?)
    }

    /// Users whose activity in the last `window` trips a signal (admin only), most signals first.
    pub async fn suspicious(
        &self,
        principal: &Principal,
        context: &RequestContext,
        window: Duration,
    ) -> Result<Vec<SuspiciousUser>, AuditError> {
        self.require_admin(principal, context, "audit_suspicious")
            .await?;
        let since = self.clock.now() - window;
        let mut flagged: Vec<SuspiciousUser> = self
            .store
            .audit_activity(since)
            .await?
            .into_iter()
            .filter_map(|counts| {
                let signals = self.thresholds.signals(&counts);
                (!signals.is_empty()).then_some(SuspiciousUser { counts, signals })
            })
            .collect();
        flagged.sort_by_key(|user| std::cmp::Reverse(user.signals.len()));
        Ok(flagged)
    }

    /// Recomputes the whole chain (admin only).
    pub async fn verify(
        &self,
        principal: &Principal,
        context: &RequestContext,
    ) -> Result<ChainReport, AuditError> {
        self.require_admin(principal, context, "audit_verify")
            .await?;
        self.verify_unchecked().await
    }

    /// Recomputes the whole chain (the CLI, which runs as the operator).
    pub async fn verify_unchecked(&self) -> Result<ChainReport, AuditError> {
        Ok(super::verify::verify(self.store.as_ref(), &self.key).await?)
    }

    /// Recomputes the whole chain and checks `checkpoint` against it (admin only).
    pub async fn verify_with_checkpoint(
        &self,
        principal: &Principal,
        context: &RequestContext,
        checkpoint: &Checkpoint,
    ) -> Result<(ChainReport, CheckpointVerdict), AuditError> {
        self.require_admin(principal, context, "audit_verify")
            .await?;
        Ok((
            self.verify_unchecked().await?,
            self.check_checkpoint(checkpoint).await?,
        ))
    }

    /// Whether the chain still contains `checkpoint`'s record (the CLI, which runs as the operator).
    pub async fn check_checkpoint(
        &self,
        checkpoint: &Checkpoint,
    ) -> Result<CheckpointVerdict, AuditError> {
        Ok(checkpoint::check(self.store.as_ref(), &self.key, checkpoint).await?)
    }

    /// A checkpoint of the stored head, to keep outside the database (the CLI). Refused when the
    /// head is missing or forged: a checkpoint must only ever vouch for a genuine head.
    pub async fn checkpoint(&self) -> Result<Checkpoint, AuditError> {
        let head = self
            .store
            .audit_chain_head()
            .await?
            .filter(|head| head.is_genuine(&self.key))
            .ok_or_else(|| {
                StoreError::Internal(
                    "the audit chain head is missing or forged; run `koryphaios audit verify`"
                        .into(),
                )
            })?;
        Ok(Checkpoint::of(&self.key, &head))
    }

    /// Checks an export is allowed (admin only) and records it before any record is sent.
    pub async fn begin_export(
        &self,
        principal: &Principal,
        context: &RequestContext,
        format: &str,
    ) -> Result<(), AuditError> {
        self.require_admin(principal, context, "audit_export")
            .await?;
        let mut metadata = serde_json::Map::new();
        metadata.insert("format".into(), serde_json::Value::String(format.into()));
        let entry = AuditEntry::new(
            principal,
            context,
            actions::AUDIT_EXPORT,
            None,
            self.clock.now(),
        )
        .with_metadata(metadata);
        self.store.append_audit(&entry).await?;
        Ok(())
    }

    /// A page of records for an export (after `begin_export`).
    pub async fn export_page(
        &self,
        query: &AuditQuery,
    ) -> Result<Vec<StoredAuditEntry>, AuditError> {
        Ok(self.store.query_audit(query).await?)
    }

    /// Deletes records older than the retention period, keeping the chain verifiable; returns
    /// how many were deleted and the anchor the chain now starts from.
    pub async fn purge_expired(&self) -> Result<AuditPurge, AuditError> {
        let now = self.clock.now();
        let cutoff = now - self.retention;
        let mut total = AuditPurge {
            deleted: 0,
            anchor: None,
        };
        // In bounded batches, so no transaction holds the chain (and every audited write) long.
        loop {
            let mut metadata = serde_json::Map::new();
            metadata.insert("cutoffMs".into(), crate::clock::to_unix_ms(cutoff).into());
            let record = AuditEntry {
                success: true,
                ..AuditEntry::anonymous(
                    "system:retention".into(),
                    &RequestContext::default(),
                    actions::AUDIT_PURGE,
                    now,
                )
                .with_metadata(metadata)
            };
            let batch = self
                .store
                .purge_audit_before(cutoff, now, PURGE_BATCH, &record)
                .await?;
            total.deleted += batch.deleted;
            total.anchor = batch.anchor.or(total.anchor);
            if batch.deleted < u64::from(PURGE_BATCH) {
                return Ok(total);
            }
        }
    }
}

/// Records deleted per retention transaction.
const PURGE_BATCH: u32 = 5_000;
