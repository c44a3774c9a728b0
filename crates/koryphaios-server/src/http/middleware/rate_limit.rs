//! The client's address and the rate limits of every request (SPEC §4).
//!
//! `client_ip` resolves the caller's address (believing `X-Forwarded-For` only from trusted
//! proxies). `rate_limit` authenticates the caller if it presents credentials (the handler's
//! extractor reuses the result), builds the checks that apply — IP, auth endpoints, tier,
//! sensitive operations — and has them decided in one call. Refusals get 429 with `Retry-After`;
//! every limited response gets `X-RateLimit-Limit`, `-Remaining` and `-Reset` for the tightest layer.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use koryphaios_core::audit::{AuditEntry, actions};
use koryphaios_core::ratelimit::{Decision, Layer, LayerResult};
use serde_json::json;

use crate::http::error::ApiError;
use crate::http::extract::{ClientIp, authenticate_headers, request_context};
use crate::rate_limits::client_ip as resolve_client_ip;
use crate::state::AppState;

/// Resolves the client's IP for this request.
pub async fn client_ip(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    if let Some(ConnectInfo(peer)) = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .copied()
    {
        let forwarded = forwarded_for(request.headers());
        let ip = resolve_client_ip(peer.ip(), forwarded.as_deref(), &state.trusted_proxies);
        request.extensions_mut().insert(ClientIp(ip));
    }
    next.run(request).await
}

/// Every `X-Forwarded-For` field in order, as one list: a proxy may add its own field instead of
/// appending to the client's (HAProxy's `option forwardfor`), and reading only the first would
/// believe the client's. A field that is not text makes the whole list unusable (the peer's
/// address is used).
fn forwarded_for(headers: &HeaderMap) -> Option<String> {
    let fields = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|value| value.to_str().ok())
        .collect::<Option<Vec<&str>>>()?;
    (!fields.is_empty()).then(|| fields.join(","))
}

/// Whether the rate limiter lets `path` through unlimited (health checks and metrics).
pub fn is_exempt(path: &str) -> bool {
    path == "/health" || path.starts_with("/health/") || path == "/metrics"
}

/// When a layer next frees capacity, in Unix seconds (rounded up).
pub fn reset_secs(result: &LayerResult) -> i64 {
    (result.reset_at_ms + 999) / 1000
}

/// Sets the `X-RateLimit-*` headers (and `Retry-After` when refused) from the tightest layer.
pub fn set_headers(headers: &mut HeaderMap, tightest: &LayerResult) {
    let mut put = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    put("x-ratelimit-limit", tightest.limit.to_string());
    put("x-ratelimit-remaining", tightest.remaining.to_string());
    put("x-ratelimit-reset", reset_secs(tightest).to_string());
    if !tightest.allowed {
        put(
            header::RETRY_AFTER.as_str(),
            retry_after_secs(tightest).to_string(),
        );
    }
}

fn retry_after_secs(result: &LayerResult) -> u64 {
    u64::try_from((result.retry_after_ms + 999) / 1000)
        .unwrap_or(1)
        .max(1)
}

/// The 429 response for a refused decision.
pub fn refusal(decision: &Decision) -> Response {
    let tightest = decision.tightest();
    let mut response = ApiError::rate_limited(tightest.map_or(1, retry_after_secs)).into_response();
    if let Some(tightest) = tightest {
        set_headers(response.headers_mut(), tightest);
    }
    response
}

/// Applies every rate-limit layer that fits the request.
pub async fn rate_limit(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(limits) = state.rate_limits.clone() else {
        return next.run(request).await;
    };
    if is_exempt(request.uri().path()) {
        return next.run(request).await;
    }
    let ip = request
        .extensions()
        .get::<ClientIp>()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0);
    // Authenticate now so the tier layer joins the same decision; failures are left to the
    // handler's extractor, which answers 401.
    let principal = authenticate_headers(request.headers(), request.extensions(), &state)
        .await
        .ok()
        .flatten();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let checks = limits.request_checks(ip, request.method(), route.as_deref(), principal.as_ref());
    let decision = limits.decide(&checks).await;
    let tier = principal.as_ref().map_or("none", |p| limits.tier_label(p));
    for result in &decision.results {
        let layer = result.layer.as_str();
        let tier = if matches!(result.layer, Layer::Tier | Layer::Sensitive) {
            tier
        } else {
            "none"
        };
        crate::metrics::rate_limit(layer, tier, result.allowed);
    }
    if !decision.allowed {
        if let Some(refused) = decision
            .results
            .iter()
            .zip(&checks)
            .find(|(r, _)| !r.allowed)
        {
            let (result, check) = refused;
            let audit_key = format!("{}:{}", check.layer.as_str(), check.key);
            if limits.should_audit_denial(&audit_key) {
                let context = request_context(request.headers(), request.extensions());
                let now = state.clock.now();
                let entry = match &principal {
                    Some(principal) => {
                        AuditEntry::new(principal, &context, actions::RATE_LIMITED, None, now)
                            .failed(check.layer.as_str())
                    }
                    None => AuditEntry::anonymous(
                        format!("ip:{ip}"),
                        &context,
                        actions::RATE_LIMITED,
                        now,
                    )
                    .failed(check.layer.as_str()),
                };
                let mut metadata = serde_json::Map::new();
                metadata.insert("layer".into(), json!(check.layer.as_str()));
                metadata.insert("limit".into(), json!(result.limit));
                metadata.insert(
                    "route".into(),
                    json!(route.as_deref().unwrap_or("unmatched")),
                );
                if let Err(error) = state
                    .store
                    .append_audit(&entry.with_metadata(metadata))
                    .await
                {
                    tracing::warn!(%error, "could not audit a rate-limit refusal");
                }
            }
        }
        return refusal(&decision);
    }
    if let Some(principal) = principal {
        request.extensions_mut().insert(principal);
    }
    let mut response = next.run(request).await;
    if let Some(tightest) = decision.tightest() {
        set_headers(response.headers_mut(), tightest);
    }
    response
}
