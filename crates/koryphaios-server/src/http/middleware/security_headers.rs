//! Security headers on every response (SPEC §2.4).

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use tower_http::set_header::SetResponseHeaderLayer;

/// The fixed headers every response carries.
const FIXED: [(HeaderName, &str); 7] = [
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::X_XSS_PROTECTION, "1; mode=block"),
    (header::REFERRER_POLICY, "strict-origin-when-cross-origin"),
    (
        HeaderName::from_static("permissions-policy"),
        "geolocation=(), microphone=(), camera=()",
    ),
    (header::CACHE_CONTROL, "no-store"),
    // The API serves no active content: nothing may load from or frame a response.
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; frame-ancestors 'none'",
    ),
];

/// Adds the security headers (and HSTS when `hsts_max_age` is set) to every response of `router`.
pub fn apply<S: Clone + Send + Sync + 'static>(
    mut router: Router<S>,
    hsts_max_age: Option<u64>,
) -> Router<S> {
    for (name, value) in FIXED {
        router = router.layer(SetResponseHeaderLayer::overriding(
            name,
            HeaderValue::from_static(value),
        ));
    }
    if let Some(max_age) = hsts_max_age
        && let Ok(value) = HeaderValue::from_str(&format!("max-age={max_age}; includeSubDomains"))
    {
        router = router.layer(SetResponseHeaderLayer::overriding(
            header::STRICT_TRANSPORT_SECURITY,
            value,
        ));
    }
    router
}
