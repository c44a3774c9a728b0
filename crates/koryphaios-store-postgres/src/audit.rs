//! [`AuditStore`] on PostgreSQL, and [`insert_audit`]: the one function every audit write goes
//! through, inside the transaction of the change it records.

use async_trait::async_trait;
use koryphaios_core::audit::AuditEntry;
use koryphaios_core::clock::{from_unix_ms, to_unix_ms};
use koryphaios_core::ids::{AuditEventId, UserId};
use koryphaios_core::store::{AuditStore, StoreError, StoreResult};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use crate::PostgresStore;
use crate::error::map_err;

/// Writes `entry` on `conn` (the caller's transaction): if this fails, the change fails with it.
pub(crate) async fn insert_audit(conn: &mut PgConnection, entry: &AuditEntry) -> StoreResult<()> {
    let metadata =
        serde_json::to_string(&entry.metadata).map_err(|e| StoreError::Internal(e.to_string()))?;
    sqlx::query(
        "INSERT INTO audit_events (id, occurred_at, user_id, actor, action, resource_type, resource_id,
                                   client_ip, user_agent, request_id, success, reason, metadata)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
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
    .bind(metadata)
    .execute(conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

fn entry_from_row(row: &PgRow) -> Result<AuditEntry, sqlx::Error> {
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
impl AuditStore for PostgresStore {
    async fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        insert_audit(&mut tx, entry).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn audit_for_resource(
        &self,
        owner: &UserId,
        resource_type: &str,
        resource_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT * FROM audit_events WHERE resource_type = $1 AND resource_id = $2 AND user_id = $3
             ORDER BY occurred_at DESC, id DESC LIMIT $4",
        )
        .bind(resource_type)
        .bind(resource_id)
        .bind(owner.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(entry_from_row)
            .collect::<Result<_, _>>()
            .map_err(map_err)
    }
}
