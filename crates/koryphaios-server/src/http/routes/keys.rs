//! `/api/v1/keys`: issue, list, read, change, revoke and roll API keys, and verify a key for
//! another service. A key's secret appears only in the create and roll responses.

use axum::extract::State;
use axum::http::StatusCode;
use koryphaios_core::ApiKeyId;
use koryphaios_core::api_keys::{ApiKey, KeyVerification, NewApiKeyInput, UpdateApiKeyInput};
use koryphaios_core::pagination::PageRequest;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use crate::http::bounds;
use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::{ApiPath, CurrentUser, RequestMeta};
use crate::http::json::{ApiJson, ApiQuery, MaybeJson};
use crate::http::middleware::rate_limit;
use crate::state::AppState;

/// `POST /api/v1/keys` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateKeyRequest {
    /// 1–100 characters: letters, digits, `_`, `-`, space.
    #[schema(schema_with = bounds::key_name)]
    pub name: String,
    /// 1–10 of `read`, `write`, `admin`, `provider:<name>`, `provider:*`, `proxy:<name>`, `proxy:*` (default `["read"]`);
    /// never more than the caller holds.
    #[schema(schema_with = bounds::scopes)]
    pub scopes: Option<Vec<String>>,
    /// free, premium, pro or enterprise: at most the owner's tier (and, when a key creates the
    /// key, the calling key's own), else 403 `tier_not_allowed`. Default: the caller's tier.
    #[schema(schema_with = bounds::tier, example = "free")]
    pub rate_limit_tier: Option<String>,
    /// 1–365; omitted means the key does not expire. A key created by a key never outlives it.
    #[schema(schema_with = bounds::expires_in_days)]
    pub expires_in_days: Option<i64>,
    /// Descriptive data: a JSON object of at most 2 KB.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// Where the key may be used from. A key created by a key stays within the calling key's
    /// networks (inherited when omitted).
    #[schema(schema_with = bounds::cidrs)]
    pub allowed_cidrs: Option<Vec<String>>,
    /// The key's own limit, at most its tier's; its requests count against both.
    #[schema(nullable)]
    pub rate_limit: Option<KeyRateLimit>,
}

/// A key's own rate limit.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KeyRateLimit {
    /// Requests per minute (sliding window), at most the key's tier's.
    #[schema(schema_with = bounds::per_minute)]
    pub per_minute: i64,
}

/// Reads a field that may be absent (keep), `null` (clear) or a value (set).
fn absent_null_or_value<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// `PATCH /api/v1/keys/{id}` body: at least one field.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateKeyRequest {
    /// A new name (1–100 characters: letters, digits, `_`, `-`, space).
    #[schema(schema_with = bounds::optional_key_name)]
    pub name: Option<String>,
    /// New scopes (1–10; never more than the caller holds).
    #[schema(schema_with = bounds::scopes)]
    pub scopes: Option<Vec<String>>,
    /// A new tier (at most the owner's, else 403 `tier_not_allowed`).
    #[schema(schema_with = bounds::tier)]
    pub rate_limit_tier: Option<String>,
    /// New networks (`[]`: anywhere; a key's child stays within its parent's).
    #[schema(schema_with = bounds::cidrs)]
    pub allowed_cidrs: Option<Vec<String>>,
    /// A new own limit; `null` removes it (the tier's alone applies).
    #[serde(default, deserialize_with = "absent_null_or_value")]
    #[schema(nullable, value_type = Option<KeyRateLimit>)]
    pub rate_limit: Option<Option<KeyRateLimit>>,
}

/// `POST /api/v1/keys/{id}/roll` body (optional).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RollKeyRequest {
    /// How long the old secret keeps working: 0 (default) to 604800 seconds.
    #[schema(schema_with = bounds::grace_period_seconds)]
    pub grace_period_seconds: Option<i64>,
}

/// `POST /api/v1/keys/verify` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyKeyRequest {
    /// The key to check.
    #[schema(value_type = String, format = Password)]
    pub key: SecretString,
}

/// A key's metadata (never its secret).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    /// The id (`key_…`).
    pub id: String,
    /// `kor_` + the first 8 characters of the current secret.
    pub prefix: String,
    /// The name.
    pub name: String,
    /// The scopes.
    pub scopes: Vec<String>,
    /// The rate-limit tier.
    pub rate_limit_tier: &'static str,
    /// `active`, `expired` or `revoked`.
    pub status: &'static str,
    /// Descriptive data.
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// When it expires.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
    /// When it was revoked.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<OffsetDateTime>,
    /// When it was last used (counted in memory, written every few seconds).
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<OffsetDateTime>,
    /// How often it was used (counted in memory, written every few seconds).
    pub usage_count: i64,
    /// The key that created this one (it is revoked with it and never outlives it).
    pub parent_key_id: Option<String>,
    /// Where it may be used from (empty: anywhere).
    pub allowed_cidrs: Vec<String>,
    /// Its own rate limit, if it has one.
    pub rate_limit: Option<KeyRateLimit>,
}

fn own_limit(per_minute: Option<u32>) -> Option<KeyRateLimit> {
    per_minute.map(|per_minute| KeyRateLimit {
        per_minute: i64::from(per_minute),
    })
}

impl KeyView {
    fn new(key: ApiKey, now: OffsetDateTime) -> Self {
        let status = if key.revoked_at.is_some() {
            "revoked"
        } else if key.expires_at.is_some_and(|at| at <= now) {
            "expired"
        } else {
            "active"
        };
        Self {
            id: key.id.to_string(),
            prefix: key.prefix,
            name: key.name,
            scopes: key.scopes.iter().map(ToString::to_string).collect(),
            rate_limit_tier: key.tier.as_str(),
            status,
            metadata: key.metadata,
            created_at: key.created_at,
            expires_at: key.expires_at,
            revoked_at: key.revoked_at,
            last_used_at: key.last_used_at,
            usage_count: key.usage_count,
            allowed_cidrs: key.allowed_networks.to_strings(),
            rate_limit: own_limit(key.rate_limit_per_minute),
            parent_key_id: key.parent_id.map(|id| id.to_string()),
        }
    }
}

/// A new key with its secret: the only time the secret is shown (never in `Debug`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuedKey {
    /// The id (`key_…`).
    pub id: String,
    /// The secret (`kor_…`): store it now, it is never shown again.
    pub key: String,
    /// `kor_` + 8 characters, for recognising the key later.
    pub prefix: String,
    /// The name.
    pub name: String,
    /// The scopes.
    pub scopes: Vec<String>,
    /// The rate-limit tier.
    pub rate_limit_tier: &'static str,
    /// When it expires.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// Where it may be used from (empty: anywhere).
    pub allowed_cidrs: Vec<String>,
    /// Its own rate limit, if it has one.
    pub rate_limit: Option<KeyRateLimit>,
    /// After a roll: when the previous secret stops working.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub previous_key_expires_at: Option<OffsetDateTime>,
}

impl std::fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedKey")
            .field("id", &self.id)
            .field("key", &"[REDACTED]")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl IssuedKey {
    fn new(
        key: ApiKey,
        secret: &SecretString,
        previous_key_expires_at: Option<OffsetDateTime>,
    ) -> Self {
        Self {
            id: key.id.to_string(),
            key: secret.expose_secret().to_owned(),
            prefix: key.prefix,
            name: key.name,
            scopes: key.scopes.iter().map(ToString::to_string).collect(),
            rate_limit_tier: key.tier.as_str(),
            expires_at: key.expires_at,
            created_at: key.created_at,
            allowed_cidrs: key.allowed_networks.to_strings(),
            rate_limit: own_limit(key.rate_limit_per_minute),
            previous_key_expires_at,
        }
    }
}

/// Paging for `GET /api/v1/keys`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListKeysQuery {
    /// 1–1000, default 100.
    #[param(schema_with = bounds::limit)]
    pub limit: Option<i64>,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

/// `GET /api/v1/keys` response.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyList {
    /// The caller's keys, newest first.
    pub keys: Vec<KeyView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// `POST /api/v1/keys/verify` response.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifyResponse {
    /// Whether the key works now.
    pub valid: bool,
    /// `VALID`, `MALFORMED`, `NOT_FOUND`, `EXPIRED` or `REVOKED`.
    #[schema(example = "VALID")]
    pub code: &'static str,
    /// The key's id (when found).
    pub key_id: Option<String>,
    /// The owner's id (when valid).
    pub user_id: Option<String>,
    /// The effective scopes (when valid).
    pub scopes: Option<Vec<String>>,
    /// The effective rate-limit tier: the key's, or its owner's when lower (when valid).
    pub tier: Option<&'static str>,
    /// When the key expires (when valid).
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
    /// The key's rate-limit state now (this check does not count against it); `null` when the
    /// key is not valid or rate limiting is off.
    pub ratelimit: Option<RateLimitState>,
}

/// Where a key stands against its tier limit: the tightest of the counters its requests meet.
#[derive(Debug, Serialize, ToSchema)]
pub struct RateLimitState {
    /// Requests per minute allowed.
    #[schema(example = 60)]
    pub limit: u64,
    /// Requests left in the current window.
    #[schema(example = 42)]
    pub remaining: u64,
    /// When capacity is next freed, Unix seconds (as `X-RateLimit-Reset`).
    #[schema(example = 1_767_225_600)]
    pub reset: i64,
}

/// Issues an API key (scope `write`); its scopes may not exceed the caller's.
#[utoipa::path(post, path = "/keys", tag = "keys",
    responses(
        (status = 201, description = "Issued; the secret is in `key` and never shown again", body = IssuedKey),
        (status = 403, description = "Missing scope write, asking for a scope the caller lacks, or a tier above the owner's (`tier_not_allowed`)", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    CurrentUser(principal): CurrentUser,
    RequestMeta(context): RequestMeta,
    ApiJson(body): ApiJson<CreateKeyRequest>,
) -> ApiResult<(StatusCode, ApiJson<IssuedKey>)> {
    let input = NewApiKeyInput {
        name: body.name,
        scopes: body.scopes,
        tier: body.rate_limit_tier,
        expires_in_days: body.expires_in_days,
        metadata: body.metadata,
        allowed_cidrs: body.allowed_cidrs,
        rate_limit_per_minute: body.rate_limit.map(|limit| limit.per_minute),
    };
    let (key, secret) = state.api_keys.create(&principal, &context, input).await?;
    Ok((
        StatusCode::CREATED,
        ApiJson(IssuedKey::new(key, &secret, None)),
    ))
}

/// The caller's keys (scope `read`).
#[utoipa::path(get, path = "/keys", tag = "keys",
    responses(
        (status = 200, description = "A page of the caller's keys' metadata, newest first", body = KeyList),
        (status = 400, description = "Invalid limit or cursor", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    CurrentUser(principal): CurrentUser,
    RequestMeta(context): RequestMeta,
    ApiQuery(query): ApiQuery<ListKeysQuery>,
) -> ApiResult<ApiJson<KeyList>> {
    let page = PageRequest::from_params(query.limit, query.cursor.as_deref(), ApiKeyId::parse)?;
    let keys = state.api_keys.list(&principal, &context, &page).await?;
    let now = state.clock.now();
    Ok(ApiJson(KeyList {
        next_cursor: keys.next.map(|after| after.to_cursor()),
        keys: keys
            .items
            .into_iter()
            .map(|k| KeyView::new(k, now))
            .collect(),
    }))
}

/// One key's metadata (scope `read`).
#[utoipa::path(get, path = "/keys/{id}", tag = "keys",
    responses(
        (status = 200, description = "Metadata", body = KeyView),
        (status = 404, description = "No such key for this caller", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    CurrentUser(principal): CurrentUser,
    RequestMeta(context): RequestMeta,
    ApiPath(id): ApiPath<ApiKeyId>,
) -> ApiResult<ApiJson<KeyView>> {
    let key = state.api_keys.get(&principal, &context, &id).await?;
    Ok(ApiJson(KeyView::new(key, state.clock.now())))
}

/// Changes a key's name, scopes or tier (scope `write`); takes effect on the next request.
#[utoipa::path(patch, path = "/keys/{id}", tag = "keys",
    responses(
        (status = 200, description = "Updated", body = KeyView),
        (status = 403, description = "Asking for a scope the caller lacks, or a tier above the owner's (`tier_not_allowed`)", body = ErrorBody),
        (status = 404, description = "No such live key for this caller", body = ErrorBody),
    ))]
pub async fn update(
    State(state): State<AppState>,
    CurrentUser(principal): CurrentUser,
    RequestMeta(context): RequestMeta,
    ApiPath(id): ApiPath<ApiKeyId>,
    ApiJson(body): ApiJson<UpdateKeyRequest>,
) -> ApiResult<ApiJson<KeyView>> {
    let input = UpdateApiKeyInput {
        name: body.name,
        scopes: body.scopes,
        tier: body.rate_limit_tier,
        allowed_cidrs: body.allowed_cidrs,
        rate_limit_per_minute: body
            .rate_limit
            .map(|limit| limit.map(|limit| limit.per_minute)),
    };
    let key = state
        .api_keys
        .update(&principal, &context, &id, input)
        .await?;
    // Narrowed scopes narrow the key's tokens too.
    state.tokens.forget_owner(&principal.user_id);
    Ok(ApiJson(KeyView::new(key, state.clock.now())))
}

/// Revokes a key (scope `write`): refused from the next request on.
#[utoipa::path(delete, path = "/keys/{id}", tag = "keys",
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such live key for this caller", body = ErrorBody),
    ))]
pub async fn revoke(
    State(state): State<AppState>,
    CurrentUser(principal): CurrentUser,
    RequestMeta(context): RequestMeta,
    ApiPath(id): ApiPath<ApiKeyId>,
) -> ApiResult<StatusCode> {
    state.api_keys.revoke(&principal, &context, &id).await?;
    // The key's agent tokens die with it: at once here, within a second elsewhere.
    state.tokens.forget_owner(&principal.user_id);
    Ok(StatusCode::NO_CONTENT)
}

/// Gives a key a new secret (scope `write`); the old secret keeps working only for the grace period.
#[utoipa::path(post, path = "/keys/{id}/roll", tag = "keys",
    responses(
        (status = 200, description = "The new secret (shown once)", body = IssuedKey),
        (status = 404, description = "No such live key for this caller", body = ErrorBody),
    ))]
pub async fn roll(
    State(state): State<AppState>,
    CurrentUser(principal): CurrentUser,
    RequestMeta(context): RequestMeta,
    ApiPath(id): ApiPath<ApiKeyId>,
    MaybeJson(body): MaybeJson<RollKeyRequest>,
) -> ApiResult<ApiJson<IssuedKey>> {
    let grace = body.and_then(|b| b.grace_period_seconds);
    let (key, secret, old_expires_at) = state
        .api_keys
        .roll(&principal, &context, &id, grace)
        .await?;
    // Its tokens now end with the grace period.
    state.tokens.forget_owner(&principal.user_id);
    Ok(ApiJson(IssuedKey::new(key, &secret, Some(old_expires_at))))
}

/// Says whether a key is valid and who it is (caller needs scope `read`). Always 200 for a
/// well-formed request; `valid` and `code` carry the answer. Failures are audited.
#[utoipa::path(post, path = "/keys/verify", tag = "keys",
    responses(
        (status = 200, description = "The verdict", body = VerifyResponse),
        (status = 401, description = "The caller is not authenticated", body = ErrorBody),
    ))]
pub async fn verify(
    State(state): State<AppState>,
    CurrentUser(principal): CurrentUser,
    RequestMeta(context): RequestMeta,
    ApiJson(body): ApiJson<VerifyKeyRequest>,
) -> ApiResult<ApiJson<VerifyResponse>> {
    let verdict = state
        .api_keys
        .verify(&principal, &context, body.key.expose_secret())
        .await?;
    crate::metrics::api_key_validation(match &verdict {
        KeyVerification::Valid { .. } => "valid",
        KeyVerification::Invalid(reason) => crate::http::extract::validation_label(*reason),
    });
    let response = match verdict {
        KeyVerification::Valid {
            key,
            scopes,
            tier,
            owner_tier,
        } => VerifyResponse {
            ratelimit: match &state.rate_limits {
                Some(limits) => limits
                    .peek_key(&key.user_id, owner_tier, &key.id, key.tier)
                    .await
                    .tightest()
                    .map(|tightest| RateLimitState {
                        limit: tightest.limit,
                        remaining: tightest.remaining,
                        reset: rate_limit::reset_secs(tightest),
                    }),
                None => None,
            },
            valid: true,
            code: "VALID",
            key_id: Some(key.id.to_string()),
            user_id: Some(key.user_id.to_string()),
            scopes: Some(scopes.iter().map(ToString::to_string).collect()),
            tier: Some(tier.as_str()),
            expires_at: key.expires_at,
        },
        KeyVerification::Invalid(reason) => VerifyResponse {
            valid: false,
            code: reason.code(),
            key_id: None,
            user_id: None,
            scopes: None,
            tier: None,
            expires_at: None,
            ratelimit: None,
        },
    };
    Ok(ApiJson(response))
}
