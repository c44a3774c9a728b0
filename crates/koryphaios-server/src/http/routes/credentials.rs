//! `/api/v1/credentials`: store provider credentials, read their metadata, rotate, reveal, and
//! read their audit trail. The secret never appears in a response except from `reveal`.

use axum::extract::State;
use axum::http::StatusCode;
use koryphaios_core::CredentialId;
use koryphaios_core::credentials::{Credential, CredentialFilter, NewCredentialInput, RotateInput};
use koryphaios_core::pagination::PageRequest;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use super::audit::AuditRecordView;
use crate::http::bounds;
use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::{ApiPath, CurrentUser, RequestMeta};
use crate::http::json::{ApiJson, ApiQuery, MaybeJson};
use crate::state::AppState;

/// How many audit records the trail returns at most.
const TRAIL_LIMIT: u32 = 100;

/// Counts a credential operation's outcome in `credential_operations_total` and passes it on.
fn counted<T, E>(operation: &'static str, result: Result<T, E>) -> Result<T, E> {
    crate::metrics::credential_operation(operation, result.is_ok());
    result
}

/// `POST /api/v1/credentials` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateCredentialRequest {
    /// A known provider (`openai`, `anthropic`, …).
    #[schema(schema_with = bounds::provider, example = "openai")]
    pub provider: String,
    /// The secret: 1–4096 characters. Never returned except by reveal.
    #[schema(schema_with = bounds::secret)]
    pub credential: SecretString,
    /// `api_key` (default), `oauth_token`, `service_account`, `base_url` or `other`.
    #[serde(rename = "type")]
    #[schema(schema_with = bounds::credential_kind, example = "api_key")]
    pub kind: Option<String>,
    /// Descriptive data: a JSON object of at most 2 KB.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// When the secret stops being valid (RFC 3339, in the future).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
}

/// `PATCH /api/v1/credentials/{id}` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCredentialRequest {
    /// The new metadata (replaces the old): a JSON object of at most 2 KB.
    #[schema(value_type = Object)]
    pub metadata: Value,
}

/// `DELETE /api/v1/credentials/{id}` body (optional).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteCredentialRequest {
    /// Why, for the audit log (≤ 500 characters, no control characters).
    #[schema(schema_with = bounds::reason)]
    pub reason: Option<String>,
}

/// `POST /api/v1/credentials/{id}/reveal` body (optional).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevealCredentialRequest {
    /// Why the secret is read, for the `credential_access` audit record (≤ 500 characters, no
    /// control characters).
    #[schema(schema_with = bounds::reason)]
    pub reason: Option<String>,
}

/// `POST /api/v1/credentials/{id}/rotate` body (optional).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateCredentialRequest {
    /// The new secret. Omit it to re-encrypt the current secret under a new data key.
    #[schema(schema_with = bounds::optional_secret)]
    pub credential: Option<SecretString>,
    /// Why, for the audit log (≤ 500 characters, no control characters).
    #[schema(schema_with = bounds::reason)]
    pub reason: Option<String>,
}

/// Filters and paging for `GET /api/v1/credentials`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListCredentialsQuery {
    /// Only this provider.
    #[param(schema_with = bounds::provider_filter)]
    pub provider: Option<String>,
    /// `true`: only unexpired; `false`: only expired.
    pub active: Option<bool>,
    /// 1–1000, default 100.
    #[param(schema_with = bounds::limit)]
    pub limit: Option<i64>,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

/// A credential's metadata.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialView {
    /// The id (`cred_…`).
    pub id: String,
    /// The provider.
    pub provider: String,
    /// The kind.
    #[serde(rename = "type")]
    pub kind: String,
    /// Descriptive data.
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    /// The current secret version.
    pub version: i64,
    /// Whether it has not expired.
    pub active: bool,
    /// When it was stored.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
    /// When it expires.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
    /// When it was last revealed or used through the credential proxy.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<OffsetDateTime>,
}

impl CredentialView {
    fn new(credential: Credential, now: OffsetDateTime) -> Self {
        Self {
            active: credential.is_active(now),
            id: credential.id.to_string(),
            provider: credential.provider,
            kind: credential.kind,
            metadata: credential.metadata,
            version: credential.current_version,
            created_at: credential.created_at,
            updated_at: credential.updated_at,
            expires_at: credential.expires_at,
            last_used_at: credential.last_used_at,
        }
    }
}

/// `GET /api/v1/credentials` response.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialList {
    /// The caller's credentials, newest first.
    pub credentials: Vec<CredentialView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// `POST /api/v1/credentials/{id}/reveal` response.
#[derive(Debug, Serialize, ToSchema)]
pub struct RevealedCredential {
    /// The id.
    pub id: String,
    /// The provider.
    pub provider: String,
    /// The plaintext secret.
    pub credential: String,
    /// The version revealed.
    pub version: i64,
}

/// `GET /api/v1/credentials/{id}/audit` response.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditTrail {
    /// Newest first, at most 100.
    pub records: Vec<AuditRecordView>,
}

/// Stores a credential under envelope encryption (scope `write`).
#[utoipa::path(post, path = "/credentials", tag = "credentials",
    responses(
        (status = 201, description = "Stored; metadata only", body = CredentialView),
        (status = 403, description = "Missing scope write", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    CurrentUser(principal): CurrentUser,
    RequestMeta(context): RequestMeta,
    ApiJson(body): ApiJson<CreateCredentialRequest>,
) -> ApiResult<(StatusCode, ApiJson<CredentialView>)> {
    let input = NewCredentialInput {
        provider: body.provider,
        secret: body.credential,
        kind: body.kind,
        metadata: body.metadata,
        expires_at: body.expires_at,
    };
    let credential = counted(
        "create",
        state.credentials.create(&principal, &context, input).await,
    )?;
    Ok((
        StatusCode::CREATED,
        ApiJson(CredentialView::new(credential, state.clock.now())),
    ))
}

/// The caller's credentials (scope `read`).
#[utoipa::path(get, path = "/credentials", tag = "credentials",
    responses(
        (status = 200, description = "A page of the caller's credentials' metadata, newest first", body = CredentialList),
        (status = 400, description = "Invalid filter, limit or cursor", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    CurrentUser(principal): CurrentUser,
    RequestMeta(context): RequestMeta,
    ApiQuery(query): ApiQuery<ListCredentialsQuery>,
) -> ApiResult<ApiJson<CredentialList>> {
    let page = PageRequest::from_params(query.limit, query.cursor.as_deref(), CredentialId::parse)?;
    let filter = CredentialFilter {
        provider: query.provider,
        active: query.active,
    };
    let credentials = counted(
        "list",
        state
            .credentials
            .list(&principal, &context, &filter, &page)
            .await,
    )?;
    let now = state.clock.now();
    Ok(ApiJson(CredentialList {
        next_cursor: credentials.next.map(|after| after.to_cursor()),
        credentials: credentials
            .items
            .into_iter()
            .map(|c| CredentialView::new(c, now))
            .collect(),
    }))
}

/// One credential's metadata (scope `read`).
#[utoipa::path(get, path = "/credentials/{id}", tag = "credentials",
    responses(
        (status = 200, description = "Metadata", body = CredentialView),
        (status = 404, description = "No such credential for this caller", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    CurrentUser(principal): CurrentUser,
    RequestMeta(context): RequestMeta,
    ApiPath(id): ApiPath<CredentialId>,
) -> ApiResult<ApiJson<CredentialView>> {
    let credential = counted(
        "get",
        state.credentials.get(&principal, &context, &id).await,
    )?;
    Ok(ApiJson(CredentialView::new(credential, state.clock.now())))
}

/// Replaces a credential's metadata (scope `write`).
#[utoipa::path(patch, path = "/credentials/{id}", tag = "credentials",
    responses(
        (status = 200, description = "Updated metadata", body = CredentialView),
        (status = 404, description = "No such credential for this caller", body = ErrorBody),
    ))]
pub async fn update(
    State(state): State<AppState>,
    CurrentUser(principal): CurrentUser,
    RequestMeta(context): RequestMeta,
    ApiPath(id): ApiPath<CredentialId>,
    ApiJson(body): ApiJson<UpdateCredentialRequest>,
) -> ApiResult<ApiJson<CredentialView>> {
    let credential = counted(
        "update",
        state
            .credentials
            .update_metadata(&principal, &context, &id, &body.metadata)
            .await,
    )?;
    Ok(ApiJson(CredentialView::new(credential, state.clock.now())))
}

/// Soft-deletes a credential (scope `write`); its audit trail stays.
#[utoipa::path(delete, path = "/credentials/{id}", tag = "credentials",
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such credential for this caller", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    CurrentUser(principal): CurrentUser,
    RequestMeta(context): RequestMeta,
    ApiPath(id): ApiPath<CredentialId>,
    MaybeJson(body): MaybeJson<DeleteCredentialRequest>,
) -> ApiResult<StatusCode> {
    let reason = body.and_then(|b| b.reason);
    counted(
        "delete",
        state
            .credentials
            .delete(&principal, &context, &id, reason.as_deref())
            .await,
    )?;
    Ok(StatusCode::NO_CONTENT)
}

/// Stores a new version: the given secret, or the current one re-encrypted under a new data key
/// (scope `write`).
#[utoipa::path(post, path = "/credentials/{id}/rotate", tag = "credentials",
    responses(
        (status = 200, description = "The new version's metadata", body = CredentialView),
        (status = 404, description = "No such credential for this caller", body = ErrorBody),
        (status = 409, description = "Rotated concurrently; retry", body = ErrorBody),
    ))]
pub async fn rotate(
    State(state): State<AppState>,
    CurrentUser(principal): CurrentUser,
    RequestMeta(context): RequestMeta,
    ApiPath(id): ApiPath<CredentialId>,
    MaybeJson(body): MaybeJson<RotateCredentialRequest>,
) -> ApiResult<ApiJson<CredentialView>> {
    let input = body.map_or_else(RotateInput::default, |b| RotateInput {
        secret: b.credential,
        reason: b.reason,
    });
    let credential = counted(
        "rotate",
        state
            .credentials
            .rotate(&principal, &context, &id, input)
            .await,
    )?;
    Ok(ApiJson(CredentialView::new(credential, state.clock.now())))
}

/// The plaintext secret (scope `provider:<its provider>`, or `admin`); audited as
/// `credential_access`.
#[utoipa::path(post, path = "/credentials/{id}/reveal", tag = "credentials",
    responses(
        (status = 200, description = "The secret", body = RevealedCredential),
        (status = 400, description = "Invalid input (unknown field, reason too long or with control characters)", body = ErrorBody),
        (status = 403, description = "Missing the provider scope", body = ErrorBody),
        (status = 404, description = "No such credential for this caller", body = ErrorBody),
        (status = 500, description = "The stored data failed its integrity check", body = ErrorBody),
    ))]
pub async fn reveal(
    State(state): State<AppState>,
    CurrentUser(principal): CurrentUser,
    RequestMeta(context): RequestMeta,
    ApiPath(id): ApiPath<CredentialId>,
    MaybeJson(body): MaybeJson<RevealCredentialRequest>,
) -> ApiResult<ApiJson<RevealedCredential>> {
    let reason = body.and_then(|b| b.reason);
    let (credential, secret) = counted(
        "reveal",
        state
            .credentials
            .reveal(&principal, &context, &id, reason.as_deref())
            .await,
    )?;
    Ok(ApiJson(RevealedCredential {
        id: credential.id.to_string(),
        provider: credential.provider,
        credential: secret.expose_secret().to_owned(),
        version: credential.current_version,
    }))
}

/// The credential's audit trail, newest first (scope `read`).
#[utoipa::path(get, path = "/credentials/{id}/audit", tag = "credentials",
    responses(
        (status = 200, description = "Audit records", body = AuditTrail),
        (status = 404, description = "No such credential for this caller", body = ErrorBody),
    ))]
pub async fn audit(
    State(state): State<AppState>,
    CurrentUser(principal): CurrentUser,
    RequestMeta(context): RequestMeta,
    ApiPath(id): ApiPath<CredentialId>,
) -> ApiResult<ApiJson<AuditTrail>> {
    let records = counted(
        "audit",
        state
            .credentials
            .audit_trail(&principal, &context, &id, TRAIL_LIMIT)
            .await,
    )?;
    Ok(ApiJson(AuditTrail {
        records: records.into_iter().map(AuditRecordView::from).collect(),
    }))
}
