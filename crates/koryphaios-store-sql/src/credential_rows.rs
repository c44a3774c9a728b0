//! Credential rows as written inside other transactions (the group commit's batches) and read
//! by the credential port.

use koryphaios_core::clock::{from_unix_ms, to_unix_ms};
use koryphaios_core::credentials::{Credential, SealedVersion};
use koryphaios_core::ids::{CredentialId, UserId};
use koryphaios_core::store::{StoreError, StoreResult};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::backend::{Backend, Conn};
use crate::driver::{Columns, Query};
use crate::rows::{decode_err, instant, wrap_from_row};

pub(crate) fn credential_from_row(row: &impl Columns) -> Result<Credential, sqlx::Error> {
    let id: String = row.try_get("id")?;
    let user_id: String = row.try_get("user_id")?;
    let metadata: String = row.try_get("metadata")?;
    Ok(Credential {
        id: CredentialId::parse(&id).map_err(decode_err)?,
        user_id: UserId::parse(&user_id).map_err(decode_err)?,
        provider: row.try_get("provider")?,
        kind: row.try_get("kind")?,
        metadata: serde_json::from_str(&metadata).map_err(decode_err)?,
        current_version: row.try_get("current_version")?,
        created_at: from_unix_ms(row.try_get("created_at")?),
        updated_at: from_unix_ms(row.try_get("updated_at")?),
        expires_at: instant(row, "expires_at")?,
        last_used_at: instant(row, "last_used_at")?,
    })
}

pub(crate) fn version_from_row(row: &impl Columns) -> Result<SealedVersion, sqlx::Error> {
    Ok(SealedVersion {
        version: row.try_get("v_version")?,
        sealed: row.try_get("sealed")?,
        wrapped_dek: wrap_from_row(row, "wrapped_dek")?,
        created_at: from_unix_ms(row.try_get("v_created_at")?),
    })
}

/// Inserts a new credential and its first version on `conn` (no audit record: the caller writes it).
pub(crate) async fn insert_credential_rows<B: Backend>(
    conn: &mut Conn<B>,
    credential: &Credential,
    first: &SealedVersion,
) -> StoreResult<()> {
    Query::<B::Db>::new(
        "INSERT INTO credentials (id, user_id, provider, kind, metadata, current_version, created_at, updated_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(credential.id.as_str())
    .bind(credential.user_id.as_str())
    .bind(&credential.provider)
    .bind(&credential.kind)
    .bind(metadata_json(&credential.metadata)?)
    .bind(credential.current_version)
    .bind(to_unix_ms(credential.created_at))
    .bind(to_unix_ms(credential.updated_at))
    .bind(credential.expires_at.map(to_unix_ms))
    .execute(conn)
    .await
    .map_err(B::map_err)?;
    insert_version::<B>(conn, &credential.id, first).await
}

/// Records a reveal's last-used time on `conn`.
pub(crate) async fn touch_credential<B: Backend>(
    conn: &mut Conn<B>,
    owner: &UserId,
    id: &CredentialId,
    now: OffsetDateTime,
) -> StoreResult<()> {
    Query::<B::Db>::new("UPDATE credentials SET last_used_at = $1 WHERE id = $2 AND user_id = $3")
        .bind(to_unix_ms(now))
        .bind(id.as_str())
        .bind(owner.as_str())
        .execute(conn)
        .await
        .map_err(B::map_err)?;
    Ok(())
}

pub(crate) async fn insert_version<B: Backend>(
    conn: &mut Conn<B>,
    id: &CredentialId,
    version: &SealedVersion,
) -> StoreResult<()> {
    Query::<B::Db>::new(
        "INSERT INTO credential_versions (credential_id, version, sealed, wrapped_dek, kms_provider, kek_id, kek_version, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id.as_str())
    .bind(version.version)
    .bind(&version.sealed)
    .bind(&version.wrapped_dek.ciphertext)
    .bind(&version.wrapped_dek.provider)
    .bind(&version.wrapped_dek.kek_id)
    .bind(version.wrapped_dek.kek_version)
    .bind(to_unix_ms(version.created_at))
    .execute(conn)
    .await
    .map_err(B::map_err)?;
    Ok(())
}

pub(crate) fn metadata_json(metadata: &Map<String, Value>) -> StoreResult<String> {
    serde_json::to_string(metadata).map_err(|e| StoreError::Internal(e.to_string()))
}
