//! `/api/v1/audit`: query the audit log (own records, or everyone's for admins), suspicious
//! activity, chain verification and streamed exports (JSONL or CSV).

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::{StreamExt as _, TryStreamExt as _, stream};
use koryphaios_core::UserId;
use koryphaios_core::audit::AuditEntry;
use koryphaios_core::audit::checkpoint::Checkpoint;
use koryphaios_core::audit::query::{AuditQuery, PageStart, StoredAuditEntry};
use koryphaios_core::clock::from_unix_ms;
use koryphaios_core::pagination;
use koryphaios_core::tokens::{MAX_RUN_ID_CHARS, check_run_id};
use koryphaios_core::validation::{FieldError, ValidationErrors};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::{IntoParams, ToSchema};

use crate::http::bounds;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{CurrentUser, RequestMeta};
use crate::http::json::{ApiJson, ApiQuery};
use crate::state::AppState;

/// Records per page an export reads at a time.
const EXPORT_PAGE: u32 = 500;

/// One audit record.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecordView {
    /// The record's id.
    pub id: String,
    /// When it happened.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub occurred_at: OffsetDateTime,
    /// The user the actor acted for (absent for unauthenticated callers).
    pub user_id: Option<String>,
    /// Who acted: `user:usr_…`, `key:key_…`, `ip:…` or `system:…`.
    pub actor: String,
    /// What happened (`credential_create`, `login`, …).
    pub action: String,
    /// The kind of resource.
    pub resource_type: Option<String>,
    /// The resource's id.
    pub resource_id: Option<String>,
    /// Whether it succeeded.
    pub success: bool,
    /// Why it failed, or the stated reason.
    pub reason: Option<String>,
    /// The client's IP.
    pub client_ip: Option<String>,
    /// The client's user agent.
    pub user_agent: Option<String>,
    /// The request id.
    pub request_id: Option<String>,
    /// Sanitised details.
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
}

impl From<AuditEntry> for AuditRecordView {
    fn from(entry: AuditEntry) -> Self {
        Self {
            id: entry.id.to_string(),
            occurred_at: entry.occurred_at,
            user_id: entry.user_id.map(|id| id.to_string()),
            actor: entry.actor,
            action: entry.action,
            resource_type: entry.resource_type,
            resource_id: entry.resource_id,
            success: entry.success,
            reason: entry.reason,
            client_ip: entry.client_ip,
            user_agent: entry.user_agent,
            request_id: entry.request_id,
            metadata: entry.metadata,
        }
    }
}

/// Query parameters of the audit routes (SPEC §2.3). Unknown parameters are refused.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Only this user's records (admins; others may name only themselves).
    #[param(schema_with = user_id_filter)]
    pub user_id: Option<String>,
    /// Only this action (≤ 50 characters).
    #[param(schema_with = short_filter)]
    pub action: Option<String>,
    /// Only this resource type (≤ 50 characters).
    #[param(schema_with = short_filter)]
    pub resource_type: Option<String>,
    /// Only this resource id (≤ 100 characters).
    #[param(schema_with = resource_id_filter)]
    pub resource_id: Option<String>,
    /// Only records caused by agent tokens of this run (≤ 128 characters).
    #[param(schema_with = run_id_filter)]
    pub run_id: Option<String>,
    /// At or after: RFC 3339 or Unix milliseconds.
    pub start_time: Option<String>,
    /// At or before: RFC 3339 or Unix milliseconds; not before `startTime`.
    pub end_time: Option<String>,
    /// Only successes (`true`) or failures (`false`).
    pub success: Option<bool>,
    /// 1–1000, default 100 (not for exports).
    #[param(schema_with = bounds::limit)]
    pub limit: Option<i64>,
    /// Records to skip (not with `cursor`; not for exports).
    pub offset: Option<u64>,
    /// The `nextCursor` of the previous page (not with `offset`; not for exports).
    pub cursor: Option<String>,
    /// Exports only: `jsonl` (default) or `csv`.
    #[param(schema_with = export_format)]
    pub format: Option<String>,
}

/// The longest `action` and `resourceType` filter.
const MAX_SHORT_FILTER: usize = 50;
/// The longest `resourceId` filter.
const MAX_RESOURCE_ID_FILTER: usize = 100;
/// The export formats.
const EXPORT_FORMATS: [&str; 2] = ["jsonl", "csv"];
/// The longest `windowHours`, 30 days.
const MAX_WINDOW_HOURS: i64 = 720;

fn bounded_string(max: usize) -> utoipa::openapi::schema::ObjectBuilder {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .min_length(Some(1))
        .max_length(Some(max))
}

fn short_filter() -> utoipa::openapi::schema::ObjectBuilder {
    bounded_string(MAX_SHORT_FILTER).description(Some(format!(
        "Only this value (an action, a resource type): 1 to {MAX_SHORT_FILTER} characters"
    )))
}

fn resource_id_filter() -> utoipa::openapi::schema::ObjectBuilder {
    bounded_string(MAX_RESOURCE_ID_FILTER).description(Some(format!(
        "Only this resource id: 1 to {MAX_RESOURCE_ID_FILTER} characters"
    )))
}

fn run_id_filter() -> utoipa::openapi::schema::ObjectBuilder {
    bounded_string(MAX_RUN_ID_CHARS)
        .pattern(Some(bounds::NO_CONTROL_CHARACTERS))
        .description(Some(format!(
            "Only records caused by agent tokens of this run: 1 to {MAX_RUN_ID_CHARS} characters"
        )))
}

fn user_id_filter() -> utoipa::openapi::schema::ObjectBuilder {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some(UserId::pattern()))
        .description(Some(
            "Only this user's records (admins; others may name only themselves)",
        ))
}

fn export_format() -> utoipa::openapi::schema::ObjectBuilder {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(EXPORT_FORMATS))
        .description(Some("Exports only: `jsonl` (default) or `csv`"))
}

fn window_hours() -> utoipa::openapi::schema::ObjectBuilder {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Integer)
        .format(Some(utoipa::openapi::schema::SchemaFormat::KnownFormat(
            utoipa::openapi::schema::KnownFormat::Int64,
        )))
        .minimum(Some(1))
        .maximum(Some(MAX_WINDOW_HOURS))
        .description(Some(format!(
            "How far back to look, in hours: 1 to {MAX_WINDOW_HOURS}, default 24"
        )))
}

fn parse_instant(field: &str, raw: &str) -> Result<OffsetDateTime, FieldError> {
    let invalid = || FieldError::new(field, "expected an RFC 3339 timestamp or Unix milliseconds");
    if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
        let ms: i64 = raw.parse().map_err(|_| invalid())?;
        // Beyond year 9999 is not a real instant.
        if ms > 253_402_300_799_999 {
            return Err(invalid());
        }
        return Ok(from_unix_ms(ms));
    }
    OffsetDateTime::parse(raw, &Rfc3339).map_err(|_| invalid())
}

fn bounded(field: &str, value: &Option<String>, max: usize) -> Result<Option<String>, FieldError> {
    match value {
        Some(text) if text.is_empty() || text.chars().count() > max => Err(FieldError::new(
            field,
            format!("must be 1 to {max} characters"),
        )),
        other => Ok(other.clone()),
    }
}

fn encode_cursor(seq: i64) -> String {
    pagination::encode_cursor(&seq.to_string())
}

fn decode_cursor(raw: &str) -> Result<i64, FieldError> {
    pagination::decode_cursor(raw)?
        .parse()
        .map_err(|_| FieldError::new("cursor", "not a cursor this service issued"))
}

/// Which route is validating: exports page by themselves and take a format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Page,
    Export,
}

impl Purpose {
    /// The parameters of [`AuditParams`] this route refuses (and so does not document).
    fn refused(self) -> &'static [&'static str] {
        match self {
            Self::Page => &["format"],
            Self::Export => &["limit", "offset", "cursor"],
        }
    }

    fn document(self, params: Vec<Parameter>) -> Vec<Parameter> {
        params
            .into_iter()
            .filter(|param| !self.refused().contains(&param.name.as_str()))
            .collect()
    }
}

/// `/audit` and `/audit/me` parameters: [`AuditParams`] without `format`.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct PageParams(AuditParams);

impl IntoParams for PageParams {
    fn into_params(parameter_in: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        Purpose::Page.document(AuditParams::into_params(parameter_in))
    }
}

/// `/audit/export` parameters: [`AuditParams`] without `limit`, `offset` and `cursor`.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct ExportParams(AuditParams);

impl IntoParams for ExportParams {
    fn into_params(parameter_in: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        Purpose::Export.document(AuditParams::into_params(parameter_in))
    }
}

impl AuditParams {
    fn validate(&self, purpose: Purpose) -> Result<AuditQuery, ValidationErrors> {
        let mut errors = Vec::new();
        let mut keep = |result: Result<Option<String>, FieldError>| {
            result.unwrap_or_else(|e| {
                errors.push(e);
                None
            })
        };
        let action = keep(bounded("action", &self.action, MAX_SHORT_FILTER));
        let resource_type = keep(bounded(
            "resourceType",
            &self.resource_type,
            MAX_SHORT_FILTER,
        ));
        let resource_id = keep(bounded(
            "resourceId",
            &self.resource_id,
            MAX_RESOURCE_ID_FILTER,
        ));
        let run_id = match &self.run_id {
            None => None,
            Some(run) => check_run_id(run)
                .map_err(|e| errors.push(e))
                .ok()
                .map(|()| run.clone()),
        };
        let user_id = match self.user_id.as_deref().map(UserId::parse).transpose() {
            Ok(id) => id,
            Err(_) => {
                errors.push(FieldError::new("userId", "expected a user id (usr_…)"));
                None
            }
        };
        let mut instant = |field: &str, raw: &Option<String>| match raw {
            None => None,
            Some(raw) => parse_instant(field, raw).map_err(|e| errors.push(e)).ok(),
        };
        let start = instant("startTime", &self.start_time);
        let end = instant("endTime", &self.end_time);
        if let (Some(start), Some(end)) = (start, end)
            && start > end
        {
            errors.push(FieldError::new("endTime", "must not be before startTime"));
        }
        let limit = pagination::check_limit(self.limit).unwrap_or_else(|e| {
            errors.push(e);
            pagination::DEFAULT_LIMIT
        });
        let page = match (self.offset, &self.cursor) {
            (Some(_), Some(_)) => {
                errors.push(FieldError::new("cursor", "give offset or cursor, not both"));
                PageStart::Offset(0)
            }
            (_, Some(cursor)) => decode_cursor(cursor)
                .map(PageStart::Before)
                .unwrap_or_else(|e| {
                    errors.push(e);
                    PageStart::Offset(0)
                }),
            (offset, None) => PageStart::Offset(offset.unwrap_or(0)),
        };
        let given = |field: &str| match field {
            "format" => self.format.is_some(),
            "limit" => self.limit.is_some(),
            "offset" => self.offset.is_some(),
            "cursor" => self.cursor.is_some(),
            _ => false,
        };
        for field in purpose.refused().iter().copied().filter(|f| given(f)) {
            errors.push(FieldError::new(
                field,
                match purpose {
                    Purpose::Page => "only /audit/export takes a format",
                    Purpose::Export => "an export streams every match",
                },
            ));
        }
        let unknown_format = self
            .format
            .as_deref()
            .is_some_and(|format| !EXPORT_FORMATS.contains(&format));
        if purpose == Purpose::Export && unknown_format {
            errors.push(FieldError::new("format", "expected jsonl or csv"));
        }
        if !errors.is_empty() {
            return Err(ValidationErrors(errors));
        }
        Ok(AuditQuery {
            user_id,
            action,
            resource_type,
            resource_id,
            run_id,
            start,
            end,
            success: self.success,
            limit,
            page,
        })
    }
}

/// A page of audit records.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    /// Newest first.
    pub records: Vec<AuditRecordView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

fn page(records: Vec<StoredAuditEntry>, limit: u32) -> AuditPage {
    let full = records.len() >= limit as usize;
    let next_cursor = records
        .last()
        .filter(|_| full)
        .map(|last| encode_cursor(last.seq));
    AuditPage {
        records: records
            .into_iter()
            .map(|r| AuditRecordView::from(r.entry))
            .collect(),
        next_cursor,
    }
}

/// Queries the audit log: admins see every record, anyone else only their own (scope `read`).
#[utoipa::path(get, path = "/audit", tag = "audit",
    responses(
        (status = 200, description = "Records, newest first", body = AuditPage),
        (status = 400, description = "Invalid filter", body = ErrorBody),
        (status = 403, description = "Asked for another user's records without admin", body = ErrorBody),
    ))]
pub async fn query(
    State(state): State<AppState>,
    CurrentUser(principal): CurrentUser,
    RequestMeta(context): RequestMeta,
    ApiQuery(PageParams(params)): ApiQuery<PageParams>,
) -> ApiResult<ApiJson<AuditPage>> {
    let query = params.validate(Purpose::Page)?;
    let limit = query.limit;
    let records = state.audit.query(&principal, &context, query).await?;
    Ok(ApiJson(page(records, limit)))
}

/// The caller's own audit records.
#[utoipa::path(get, path = "/audit/me", tag = "audit",
    responses(
        (status = 200, description = "Records, newest first", body = AuditPage),
        (status = 400, description = "Invalid filter", body = ErrorBody),
        (status = 403, description = "Asked for another user's records", body = ErrorBody),
    ))]
pub async fn mine(
    State(state): State<AppState>,
    CurrentUser(principal): CurrentUser,
    RequestMeta(context): RequestMeta,
    ApiQuery(PageParams(params)): ApiQuery<PageParams>,
) -> ApiResult<ApiJson<AuditPage>> {
    let query = params.validate(Purpose::Page)?;
    let limit = query.limit;
    let records = match &query.user_id {
        // Naming someone else here is the same request as `/audit?userId=…`: same rules.
        Some(user) if *user != principal.user_id => {
            state.audit.query(&principal, &context, query).await?
        }
        _ => state.audit.mine(&principal, &context, query).await?,
    };
    Ok(ApiJson(page(records, limit)))
}

/// `GET /api/v1/audit/suspicious` parameters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct SuspiciousParams {
    /// How far back to look, in hours: 1–720, default 24.
    #[param(schema_with = window_hours)]
    pub window_hours: Option<i64>,
}

/// One flagged user.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SuspiciousUserView {
    /// The user.
    pub user_id: String,
    /// Which signals tripped: `failed_logins`, `reveal_burst`, `denials`, `many_ips`.
    pub signals: Vec<String>,
    /// Failed logins in the window.
    pub failed_logins: u64,
    /// Credential reveals in the window.
    pub reveals: u64,
    /// Refusals (403 and 429) in the window.
    pub denials: u64,
    /// Distinct client IPs in the window.
    pub distinct_ips: u64,
}

/// `GET /api/v1/audit/suspicious` response.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SuspiciousReport {
    /// The window, in hours.
    pub window_hours: i64,
    /// Flagged users, most signals first.
    pub users: Vec<SuspiciousUserView>,
}

/// Users with unusual activity: failed logins, reveal bursts, refusals, many IPs (admin).
#[utoipa::path(get, path = "/audit/suspicious", tag = "audit",
    responses(
        (status = 200, description = "Flagged users", body = SuspiciousReport),
        (status = 400, description = "Invalid window", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
    ))]
pub async fn suspicious(
    State(state): State<AppState>,
    CurrentUser(principal): CurrentUser,
    RequestMeta(context): RequestMeta,
    ApiQuery(params): ApiQuery<SuspiciousParams>,
) -> ApiResult<ApiJson<SuspiciousReport>> {
    let window_hours = params.window_hours.unwrap_or(24);
    if !(1..=MAX_WINDOW_HOURS).contains(&window_hours) {
        return Err(ValidationErrors::single(
            "windowHours",
            format!("must be from 1 to {MAX_WINDOW_HOURS}"),
        )
        .into());
    }
    let flagged = state
        .audit
        .suspicious(&principal, &context, time::Duration::hours(window_hours))
        .await?;
    Ok(ApiJson(SuspiciousReport {
        window_hours,
        users: flagged
            .into_iter()
            .map(|user| SuspiciousUserView {
                user_id: user.counts.user_id.to_string(),
                signals: user.signals.iter().map(|s| (*s).to_owned()).collect(),
                failed_logins: user.counts.failed_logins,
                reveals: user.counts.reveals,
                denials: user.counts.denials,
                distinct_ips: user.counts.distinct_ips,
            })
            .collect(),
    }))
}

/// The first record at which the chain breaks.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrokenLinkView {
    /// The position the verifier expected next (for `truncated`: the first missing record).
    pub expected_seq: i64,
    /// The position of the record found there (for `truncated` and `forged_head`: the stored
    /// head's position).
    pub seq: i64,
    /// That record's id (`anchor` or `head` when the break is in those rows).
    pub id: String,
    /// `content_mismatch` (edited), `broken_link` (does not follow its predecessor),
    /// `sequence_gap` (rows deleted or reordered), `truncated` (the newest rows deleted: the chain
    /// ends before its stored head), `forged_anchor`, `forged_head` or `unlinked_record`.
    pub reason: String,
}

/// The outcome of checking a checkpoint.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointView {
    /// The checkpoint's position.
    pub seq: i64,
    /// Whether the chain still contains the checkpoint's record with its hash.
    pub ok: bool,
    /// `present`, `purged` (by retention, after it), `missing` (truncated or rolled back past it),
    /// `rewritten` or `invalid_mac`.
    pub status: String,
    /// The same, for people.
    pub message: String,
}

/// `GET /api/v1/audit/verify` response.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChainReportView {
    /// Whether every link verified (and the checkpoint, when one was given, is still in the chain).
    pub valid: bool,
    /// Records checked.
    pub checked: u64,
    /// Where the chain starts (0, or the last record retention purged).
    pub anchor_seq: i64,
    /// The last position checked.
    pub last_seq: i64,
    /// The stored chain head's position (absent when the head row is missing).
    pub head_seq: Option<i64>,
    /// The first broken link, when not valid.
    pub first_broken: Option<BrokenLinkView>,
    /// The checkpoint's outcome, when one was given.
    pub checkpoint: Option<CheckpointView>,
}

impl From<koryphaios_core::audit::chain::ChainReport> for ChainReportView {
    fn from(report: koryphaios_core::audit::chain::ChainReport) -> Self {
        Self {
            valid: report.is_valid(),
            checked: report.checked,
            anchor_seq: report.anchor_seq,
            last_seq: report.last_seq,
            head_seq: report.head_seq,
            first_broken: report.first_broken.map(|broken| BrokenLinkView {
                expected_seq: broken.expected_seq,
                seq: broken.seq,
                id: broken.id,
                reason: broken.kind.as_str().to_owned(),
            }),
            checkpoint: None,
        }
    }
}

/// `GET /api/v1/audit/verify` parameters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VerifyParams {
    /// A checkpoint printed by `koryphaios audit checkpoint` (`kcp1.…`) to check as well.
    pub checkpoint: Option<String>,
}

/// Recomputes the audit hash chain and reports the first broken link (admin); with
/// `checkpoint`, also whether the chain still contains that checkpoint's record.
#[utoipa::path(get, path = "/audit/verify", tag = "audit",
    responses(
        (status = 200, description = "The verification result (valid or not)", body = ChainReportView),
        (status = 400, description = "Not a checkpoint", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
    ))]
pub async fn verify(
    State(state): State<AppState>,
    CurrentUser(principal): CurrentUser,
    RequestMeta(context): RequestMeta,
    ApiQuery(params): ApiQuery<VerifyParams>,
) -> ApiResult<ApiJson<ChainReportView>> {
    let Some(raw) = params.checkpoint else {
        let report = state.audit.verify(&principal, &context).await?;
        return Ok(ApiJson(report.into()));
    };
    let checkpoint = Checkpoint::parse(&raw)
        .map_err(|e| ValidationErrors::single("checkpoint", e.to_string()))?;
    let (report, verdict) = state
        .audit
        .verify_with_checkpoint(&principal, &context, &checkpoint)
        .await?;
    let mut view = ChainReportView::from(report);
    view.valid &= verdict.is_ok();
    view.checkpoint = Some(CheckpointView {
        seq: checkpoint.seq,
        ok: verdict.is_ok(),
        status: verdict.as_str().to_owned(),
        message: verdict.describe(),
    });
    Ok(ApiJson(view))
}

/// Streams every matching record as JSON lines or CSV, oldest last (admin).
#[utoipa::path(get, path = "/audit/export", tag = "audit",
    responses(
        (status = 200, description = "Every matching record, streamed: JSON lines (`format=jsonl`, the default) or CSV (`format=csv`)", content(
            (String = "application/x-ndjson"),
            (String = "text/csv"),
        )),
        (status = 400, description = "Invalid filter", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
    ))]
pub async fn export(
    State(state): State<AppState>,
    CurrentUser(principal): CurrentUser,
    RequestMeta(context): RequestMeta,
    ApiQuery(ExportParams(params)): ApiQuery<ExportParams>,
) -> ApiResult<Response> {
    let mut query = params.validate(Purpose::Export)?;
    let csv = params.format.as_deref() == Some("csv");
    state
        .audit
        .begin_export(&principal, &context, if csv { "csv" } else { "jsonl" })
        .await?;
    query.limit = EXPORT_PAGE;
    let audit = state.audit.clone();
    let header_row = csv.then(csv_header);
    let pages = stream::try_unfold(Some(query), move |next| {
        let audit = audit.clone();
        async move {
            let Some(query) = next else {
                return Ok::<_, ApiError>(None);
            };
            let records = audit.export_page(&query).await?;
            let following = (records.len() >= EXPORT_PAGE as usize)
                .then(|| {
                    records.last().map(|last| AuditQuery {
                        page: PageStart::Before(last.seq),
                        ..query.clone()
                    })
                })
                .flatten();
            let bytes = if csv {
                csv_rows(records)
            } else {
                json_lines(records)
            };
            Ok(Some((bytes?, following)))
        }
    });
    let body = stream::iter(header_row.map(Ok))
        .chain(pages)
        .map_err(|error| {
            // Headers are sent: the client sees a cut-off body; the cause goes to the log.
            tracing::error!(code = error.code(), report = ?error, "audit export failed mid-stream");
            std::io::Error::other(format!("audit export failed ({})", error.code()))
        });
    let content_type = if csv {
        "text/csv; charset=utf-8"
    } else {
        "application/x-ndjson"
    };
    let filename = if csv { "audit.csv" } else { "audit.jsonl" };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

fn json_lines(records: Vec<StoredAuditEntry>) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::with_capacity(records.len() * 256);
    for record in records {
        serde_json::to_writer(&mut out, &AuditRecordView::from(record.entry))
            .map_err(|e| ApiError::internal(format!("export serialisation: {e}")))?;
        out.push(b'\n');
    }
    Ok(out)
}

const CSV_COLUMNS: [&str; 13] = [
    "id",
    "occurredAt",
    "userId",
    "actor",
    "action",
    "resourceType",
    "resourceId",
    "success",
    "reason",
    "clientIp",
    "userAgent",
    "requestId",
    "metadata",
];

fn csv_header() -> Vec<u8> {
    let mut line = CSV_COLUMNS.join(",");
    line.push_str("\r\n");
    line.into_bytes()
}

/// Neutralises cells a spreadsheet would run as a formula (CSV injection).
fn csv_cell(value: &str) -> String {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    }
}

fn csv_rows(records: Vec<StoredAuditEntry>) -> Result<Vec<u8>, ApiError> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::with_capacity(records.len() * 256));
    for record in records {
        let view = AuditRecordView::from(record.entry);
        let occurred_at = view
            .occurred_at
            .format(&Rfc3339)
            .map_err(|e| ApiError::internal(format!("export time format: {e}")))?;
        let metadata = serde_json::to_string(&view.metadata)
            .map_err(|e| ApiError::internal(format!("export serialisation: {e}")))?;
        let optional = |value: &Option<String>| csv_cell(value.as_deref().unwrap_or(""));
        writer
            .write_record([
                csv_cell(&view.id),
                occurred_at,
                optional(&view.user_id),
                csv_cell(&view.actor),
                csv_cell(&view.action),
                optional(&view.resource_type),
                optional(&view.resource_id),
                view.success.to_string(),
                optional(&view.reason),
                optional(&view.client_ip),
                optional(&view.user_agent),
                optional(&view.request_id),
                csv_cell(&metadata),
            ])
            .map_err(|e| ApiError::internal(format!("export csv: {e}")))?;
    }
    writer
        .into_inner()
        .map_err(|e| ApiError::internal(format!("export csv: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_parse_as_rfc3339_or_unix_ms() {
        assert_eq!(
            parse_instant("t", "1700000000000").unwrap(),
            from_unix_ms(1_700_000_000_000)
        );
        assert!(parse_instant("t", "2026-11-28T01:02:03Z").is_ok());
        assert!(parse_instant("t", "2026-11-28T01:02:03+02:00").is_ok());
        for bad in [
            "yesterday",
            "",
            "-5",
            "2026-13-01T00:00:00Z",
            "99999999999999999999",
        ] {
            assert!(parse_instant("t", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cursors_round_trip_and_reject_forgeries() {
        assert_eq!(decode_cursor(&encode_cursor(42)).unwrap(), 42);
        assert!(decode_cursor("42").is_err());
        assert!(decode_cursor("!!!").is_err());
    }

    #[test]
    fn csv_escapes_quotes_commas_newlines_and_formulas() {
        let mut entry = AuditEntry::anonymous(
            "=HYPERLINK(\"x\")".into(),
            &koryphaios_core::audit::RequestContext {
                client_ip: None,
                user_agent: Some("a, \"b\"\nc".into()),
                request_id: None,
            },
            "login",
            OffsetDateTime::UNIX_EPOCH,
        );
        entry.reason = Some("-1+1".into());
        let bytes = csv_rows(vec![StoredAuditEntry { seq: 1, entry }]).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(text.as_bytes());
        let row = reader.records().next().unwrap().unwrap();
        assert_eq!(&row[3], "'=HYPERLINK(\"x\")");
        assert_eq!(&row[8], "'-1+1");
        assert_eq!(&row[10], "a, \"b\"\nc");
    }

    #[test]
    fn validation_names_every_bad_field() {
        let params = AuditParams {
            action: Some("x".repeat(51)),
            start_time: Some("2026-01-02T00:00:00Z".into()),
            end_time: Some("2026-01-01T00:00:00Z".into()),
            limit: Some(0),
            user_id: Some("bob".into()),
            ..AuditParams::default()
        };
        let errors = params.validate(Purpose::Page).unwrap_err();
        let fields: Vec<_> = errors.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["action", "userId", "endTime", "limit"]);
    }
}
