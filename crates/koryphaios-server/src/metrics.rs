//! Prometheus metrics (SPEC §7): the recorder, the names, and one small function per event, called
//! where the event happens.
//!
//! The `metrics` facade keeps one recorder per process; it is installed on first use and shared by
//! every application built in the process (tests build several).

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

use metrics::{Counter, Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets for `http_request_duration_seconds` (0.5 ms … 10 s).
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide recorder's handle, installing it on first use.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full("http_request_duration_seconds".into()),
                LATENCY_BUCKETS,
            )
            .and_then(|builder| {
                builder.set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(
                        "proxy_upstream_duration_seconds".into(),
                    ),
                    PROXY_BUCKETS,
                )
            })
            .map_or_else(
                |_| PrometheusBuilder::new().build_recorder(),
                PrometheusBuilder::build_recorder,
            );
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        register_known_series();
        handle
    })
}

/// Buckets for `proxy_upstream_duration_seconds` (5 ms … 10 min: streamed completions run long).
const PROXY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Rate-limit layers and the tiers they are labelled with.
const LIMIT_LAYERS: [(&str, &[&str]); 5] = [
    ("ip", &["none"]),
    ("auth", &["none"]),
    ("login_failure", &["none"]),
    ("tier", &["free", "premium", "pro", "enterprise"]),
    ("sensitive", &["free", "premium", "pro", "enterprise"]),
];
/// Credential operations counted in `credential_operations_total`.
pub const CREDENTIAL_OPERATIONS: [&str; 8] = [
    "create", "list", "get", "update", "delete", "rotate", "reveal", "audit",
];
const AUTH_METHODS: [&str; 5] = ["password", "refresh", "jwt", "api_key", "token"];
const TOKEN_VALIDATION_RESULTS: [&str; 9] = [
    "valid",
    "malformed",
    "not_found",
    "expired",
    "revoked",
    "exhausted",
    "ip_not_allowed",
    "owner_disabled",
    "error",
];
const KEY_VALIDATION_RESULTS: [&str; 8] = [
    "valid",
    "malformed",
    "not_found",
    "expired",
    "revoked",
    "owner_disabled",
    "ip_not_allowed",
    "error",
];

/// Creates every counter whose label set is known at 0, so alerts and dashboards (`rate()`,
/// `increase()`) work before the first event.
fn register_known_series() {
    for (layer, tiers) in LIMIT_LAYERS {
        for tier in tiers {
            counter!("rate_limit_hits_total", "layer" => layer, "tier" => *tier).increment(0);
            counter!("rate_limit_allowed_total", "layer" => layer, "tier" => *tier).increment(0);
        }
    }
    for result in ["success", "failure"] {
        for operation in CREDENTIAL_OPERATIONS {
            counter!("credential_operations_total", "operation" => operation, "result" => result)
                .increment(0);
        }
        for method in AUTH_METHODS {
            counter!("auth_attempts_total", "method" => method, "result" => result).increment(0);
        }
    }
    for result in KEY_VALIDATION_RESULTS {
        counter!("api_key_validations_total", "result" => result).increment(0);
    }
    for result in TOKEN_VALIDATION_RESULTS {
        counter!("agent_token_validations_total", "result" => result).increment(0);
    }
    for provider in koryphaios_core::credentials::PROVIDERS {
        gauge!("credentials_stored", "provider" => *provider).set(0.0);
    }
    for known in crate::proxy::providers::BUILT_IN {
        for status in crate::proxy::call::STATUS_LABELS {
            counter!("proxy_requests_total", "provider" => known.name, "status" => status)
                .increment(0);
        }
    }
}

/// Metric handles of the hot path, resolved once per label set: recording then costs an atomic
/// add instead of building a key and searching the registry on every request.
type HttpEntry = ((String, String, u16), Counter, Histogram);
static HTTP_HANDLES: OnceLock<(std::hash::RandomState, RwLock<HashMap<u64, HttpEntry>>)> =
    OnceLock::new();
type LimitKey = (&'static str, &'static str, bool);
static LIMIT_HANDLES: OnceLock<RwLock<HashMap<LimitKey, Counter>>> = OnceLock::new();
/// Label sets are bounded (route templates × methods × statuses); past this, stop caching.
const MAX_CACHED: usize = 4096;

/// The `method` label of a request: one of the methods the service knows, else `other`.
///
/// Clients choose the method freely (any token is valid HTTP); an open label set would let them
/// create a new series per request, without bound.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// One served request, labelled by method (closed set) and route template (never the raw path;
/// `unmatched` for requests no route took).
pub fn http_request(method: &'static str, route: &str, status: u16, seconds: f64) {
    use std::hash::BuildHasher as _;
    let (hasher, handles) =
        HTTP_HANDLES.get_or_init(|| (std::hash::RandomState::new(), RwLock::new(HashMap::new())));
    let hash = hasher.hash_one((method, route, status));
    let cached = handles.read().ok().and_then(|map| {
        map.get(&hash)
            .filter(|((m, r, s), _, _)| *s == status && m == method && r == route)
            .map(|(_, c, h)| (c.clone(), h.clone()))
    });
    let (requests, duration) = cached.unwrap_or_else(|| {
        let requests = counter!("http_requests_total", "method" => method.to_owned(), "route" => route.to_owned(), "status" => status.to_string());
        let duration = histogram!("http_request_duration_seconds", "method" => method.to_owned(), "route" => route.to_owned());
        if let Ok(mut map) = handles.write()
            && map.len() < MAX_CACHED
        {
            map.entry(hash).or_insert_with(|| ((method.to_owned(), route.to_owned(), status), requests.clone(), duration.clone()));
        }
        (requests, duration)
    });
    requests.increment(1);
    duration.record(seconds);
}

/// An authentication attempt: `method` is password, refresh, jwt or api_key.
pub fn auth_attempt(method: &'static str, success: bool) {
    counter!("auth_attempts_total", "method" => method, "result" => if success { "success" } else { "failure" }).increment(1);
}

/// An API key checked (on a request or by `/keys/verify`): `result` is valid, malformed, not_found, expired,
/// revoked, owner_disabled, ip_not_allowed or error.
pub fn api_key_validation(result: &'static str) {
    counter!("api_key_validations_total", "result" => result).increment(1);
}

/// An agent token checked on a request: `result` is valid, malformed, not_found, expired,
/// revoked, exhausted, ip_not_allowed, owner_disabled or error.
pub fn token_validation(result: &'static str) {
    counter!("agent_token_validations_total", "result" => result).increment(1);
}

/// A rate-limit layer's verdict for a request.
pub fn rate_limit(layer: &'static str, tier: &'static str, allowed: bool) {
    let handles = LIMIT_HANDLES.get_or_init(|| RwLock::new(HashMap::new()));
    let key = (layer, tier, allowed);
    if let Some(counter) = handles.read().ok().and_then(|map| map.get(&key).cloned()) {
        counter.increment(1);
        return;
    }
    let counter = if allowed {
        counter!("rate_limit_allowed_total", "layer" => layer, "tier" => tier)
    } else {
        counter!("rate_limit_hits_total", "layer" => layer, "tier" => tier)
    };
    counter.increment(1);
    if let Ok(mut map) = handles.write() {
        map.insert(key, counter);
    }
}

/// A credential operation's outcome.
pub fn credential_operation(operation: &'static str, success: bool) {
    counter!("credential_operations_total", "operation" => operation, "result" => if success { "success" } else { "failure" }).increment(1);
}

/// One call through the credential proxy: `provider` from the proxy's closed provider table,
/// `status` one of `proxy::call::STATUS_LABELS` (a class, or our own failure), `seconds` from
/// the forward to the end of the response body.
pub fn proxy_request(provider: &'static str, status: &'static str, seconds: f64) {
    counter!("proxy_requests_total", "provider" => provider, "status" => status).increment(1);
    histogram!("proxy_upstream_duration_seconds", "provider" => provider).record(seconds);
}

/// Stored credentials by provider (refreshed in the background from the store): every known
/// provider gets a value, 0 when none is stored, so a deleted provider's last count does not stay.
pub fn credentials_stored(counts: &[(String, u64)]) {
    for provider in koryphaios_core::credentials::PROVIDERS {
        let count = counts
            .iter()
            .find(|(name, _)| name == provider)
            .map_or(0, |(_, count)| *count);
        gauge!("credentials_stored", "provider" => *provider).set(count as f64);
    }
}

/// The stored audit chain head (set at scrape time from its one row): its position, which only
/// ever grows, and its record's time. Prometheus keeps their history outside the database, so a
/// head that moves backwards (the database rolled back, or the head row deleted and re-initialised
/// over a truncated chain) shows there even when the database is consistent again.
pub fn audit_chain_head(seq: i64, occurred_at_ms: i64) {
    gauge!("audit_chain_head_seq").set(seq as f64);
    gauge!("audit_chain_head_timestamp_seconds").set(occurred_at_ms as f64 / 1000.0);
}

/// Whether the root key provider answered its last check (1) or not (0). The service keeps
/// working without it (the KEKs are loaded), but cannot start another instance or rotate.
pub fn kms_root_up(provider: &'static str, up: bool) {
    gauge!("kms_root_up", "provider" => provider).set(if up { 1.0 } else { 0.0 });
}

/// Which rate-limit backend decides (1 for the one in use).
pub fn rate_limit_backend(backend: &'static str) {
    for candidate in ["redis", "memory", "off"] {
        gauge!("rate_limit_backend", "backend" => candidate).set(if candidate == backend {
            1.0
        } else {
            0.0
        });
    }
}

/// Process metrics read at scrape time.
pub fn process() {
    if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
        let pages: Option<u64> = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok());
        if let Some(pages) = pages {
            gauge!("process_resident_memory_bytes").set((pages * 4096) as f64);
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge!("process_open_fds").set(fds.count() as f64);
    }
}

/// Records the process start time once.
pub fn started() {
    gauge!("process_start_time_seconds")
        .set(time::OffsetDateTime::now_utc().unix_timestamp() as f64);
}
