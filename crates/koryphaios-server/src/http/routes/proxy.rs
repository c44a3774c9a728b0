//! `/api/v1/proxy/{provider}/{path}`: credential brokering (issue #15, ADR 0016). The caller
//! authenticates with a key or session of ours; the provider's key is added on the way out and
//! the provider's answer streams back. The work is in [`crate::proxy`].

use axum::extract::{OriginalUri, Request, State};
use axum::response::Response;
use utoipa::openapi::{OpenApi, RefOr};

use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::{CurrentUser, RequestMeta};
use crate::state::AppState;

/// The route as axum matches it (a wildcard tail) and as the OpenAPI document names it.
const ROUTE: &str = "/api/v1/proxy/{provider}/{*path}";
const DOCUMENTED: &str = "/api/v1/proxy/{provider}/{path}";

/// Calls a provider with the caller's stored key, which the caller never sees.
///
/// Scope `proxy:<provider>` (which `provider:<provider>` implies). The credential is the
/// caller's newest active one for the provider, or the one named by
/// `X-Koryphaios-Credential`. The request (method, path, query, headers, body) is forwarded to
/// the provider's base URL + `path`, without the caller's `Authorization`, `X-API-Key`, `Cookie`,
/// `X-Koryphaios-*` and hop-by-hop headers, and with the provider's key in its header. Both
/// bodies stream (server-sent events arrive as the provider sends them); the request body may be
/// up to `KORYPHAIOS_PROXY_MAX_BODY_BYTES` (10 MiB by default). A call, its streamed answer
/// included, lasts at most `KORYPHAIOS_PROXY_MAX_DURATION_SECS` (600 s by default; a stream still
/// running then is cut), and at most `KORYPHAIOS_PROXY_MAX_CONCURRENT_PER_USER` calls of a user
/// (16) and `KORYPHAIOS_PROXY_MAX_CONCURRENT` in all (256) are in flight. Each call is audited as
/// `credential_use`.
#[utoipa::path(method(get, post, put, patch, delete), path = "/proxy/{provider}/{*path}", tag = "proxy",
    params(
        ("provider" = String, Path, description = "A provider the proxy can reach (`openai`, `anthropic`, `google`, OpenAI-compatible ones, or one given a base URL by configuration)", example = "openai"),
        ("path" = String, Path, description = "The provider's path under its base URL, slashes included (`chat/completions`); `.`/`..` segments (also percent-encoded), `//`, backslashes, encoded slashes and absolute URLs are refused", example = "chat/completions"),
        ("X-Koryphaios-Credential" = Option<String>, Header, description = "Use this credential (`cred_…`) instead of the newest active one for the provider"),
    ),
    responses(
        (status = 200, description = "The provider's answer, passed on unchanged: its status (any, 4xx and 5xx included), headers (minus hop-by-hop ones) and body; an error body quoting the injected key has it overwritten with `*`"),
        (status = 400, description = "The path could leave the provider's base URL (`validation_failed`, field `path`), or `X-Koryphaios-Credential` is not a credential id (`invalid_id`)", body = ErrorBody),
        (status = 403, description = "Missing scope `proxy:<provider>`", body = ErrorBody),
        (status = 404, description = "Unknown provider, or no active credential of the caller for it (another user's credential id is not found either)", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the request body exceeds the proxy's limit (`KORYPHAIOS_PROXY_MAX_BODY_BYTES`)", body = ErrorBody),
        (status = 429, description = "`too_many_concurrent_calls`: the caller's proxied calls in flight (`KORYPHAIOS_PROXY_MAX_CONCURRENT_PER_USER`) or the instance's (`KORYPHAIOS_PROXY_MAX_CONCURRENT`) are at their cap, retry after `Retry-After` seconds; or `rate_limited`: a rate limit refused the request", body = ErrorBody),
        (status = 502, description = "`upstream_unavailable`: the provider could not be reached, or answered an error with a compressed body (which could not be searched for the key)", body = ErrorBody),
        (status = 504, description = "`upstream_timeout`: the provider did not answer in time", body = ErrorBody),
    ))]
pub async fn forward(
    State(state): State<AppState>,
    CurrentUser(principal): CurrentUser,
    RequestMeta(context): RequestMeta,
    request: Request,
) -> ApiResult<Response> {
    // The path as the caller sent it (still percent-encoded), before nesting stripped it.
    let raw_path = request
        .extensions()
        .get::<OriginalUri>()
        .map_or_else(|| request.uri().path(), |original| original.path())
        .to_owned();
    Ok(state
        .proxy
        .forward(&state.credentials, principal, context, &raw_path, request)
        .await?)
}

/// Renames the wildcard path to its OpenAPI form and gives each method its own operation id.
pub fn document_wildcard(openapi: &mut OpenApi) {
    let Some(mut item) = openapi.paths.paths.remove(ROUTE) else {
        return;
    };
    for (method, operation) in [
        ("get", item.get.as_mut()),
        ("post", item.post.as_mut()),
        ("put", item.put.as_mut()),
        ("patch", item.patch.as_mut()),
        ("delete", item.delete.as_mut()),
    ] {
        if let Some(operation) = operation {
            operation.operation_id = Some(format!("proxy_forward_{method}"));
            for parameter in operation.parameters.iter_mut().flatten() {
                if let RefOr::T(parameter) = parameter
                    && parameter.name == "*path"
                {
                    parameter.name = "path".into();
                }
            }
        }
    }
    openapi.paths.paths.insert(DOCUMENTED.to_owned(), item);
}
