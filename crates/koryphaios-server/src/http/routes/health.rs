//! `GET /health` (liveness) and `GET /health/ready` (dependencies).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use koryphaios_core::envelope::KeyProvider as _;
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::json::ApiJson;
use crate::state::AppState;

/// How long a dependency may take to answer a readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `{ok, data}` wrapper used by the health routes.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthResponse<T> {
    /// Whether the service is healthy (liveness) or ready (readiness).
    pub ok: bool,
    /// The details.
    pub data: T,
}

/// Liveness details.
#[derive(Debug, Serialize, ToSchema)]
pub struct Liveness {
    /// The running version.
    #[schema(example = "0.1.0")]
    pub version: String,
    /// Server time, Unix milliseconds.
    pub timestamp: i64,
}

/// One dependency's state.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentState {
    /// `up` or `down`.
    pub status: &'static str,
    /// Which implementation is in use (e.g. `sqlite`).
    pub backend: &'static str,
    /// How long the probe took.
    pub latency_ms: f64,
    /// Why it is down (no internal detail).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Readiness details.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: &'static str,
    /// Each dependency by name.
    pub components: BTreeMap<&'static str, ComponentState>,
}

/// Liveness: answers whenever the process serves HTTP.
#[utoipa::path(get, path = "/health", tag = "health",
    responses((status = 200, description = "The service is alive", body = HealthResponse<Liveness>)))]
pub async fn live() -> ApiJson<HealthResponse<Liveness>> {
    let now = time::OffsetDateTime::now_utc();
    ApiJson(HealthResponse {
        ok: true,
        data: Liveness {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            timestamp: koryphaios_core::clock::to_unix_ms(now),
        },
    })
}

/// Readiness: 200 when every dependency answers, 503 otherwise.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses(
        (status = 200, description = "Every dependency is up", body = HealthResponse<Readiness>),
        (status = 503, description = "A dependency is down", body = HealthResponse<Readiness>),
    ))]
pub async fn ready(
    State(state): State<AppState>,
) -> (StatusCode, ApiJson<HealthResponse<Readiness>>) {
    let started = Instant::now();
    let probe = tokio::time::timeout(PROBE_TIMEOUT, state.store.ping()).await;
    let error = match probe {
        Ok(Ok(())) => None,
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness: database probe failed");
            Some("database probe failed".to_owned())
        }
        Err(_) => Some("database probe timed out".to_owned()),
    };
    let database = ComponentState {
        status: if error.is_none() { "up" } else { "down" },
        backend: state.store.backend(),
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        error,
    };
    let kms_started = Instant::now();
    let kms_error = match tokio::time::timeout(PROBE_TIMEOUT, state.kms.check()).await {
        Ok(Ok(())) => None,
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness: key provider check failed");
            Some("key provider check failed".to_owned())
        }
        Err(_) => Some("key provider check timed out".to_owned()),
    };
    let kms = ComponentState {
        status: if kms_error.is_none() { "up" } else { "down" },
        backend: state.kms.root().provider_name(),
        latency_ms: kms_started.elapsed().as_secs_f64() * 1000.0,
        error: kms_error,
    };
    let limiter = match &state.rate_limits {
        None => ComponentState {
            status: "off",
            backend: "none",
            latency_ms: 0.0,
            error: None,
        },
        Some(limits) => {
            let falling_back = limits.redis_configured() && limits.backend() == "memory";
            ComponentState {
                // Degraded still serves: limits hold per instance until Redis returns.
                status: if falling_back { "degraded" } else { "up" },
                backend: limits.backend(),
                latency_ms: 0.0,
                error: falling_back
                    .then(|| "Redis unreachable: limiting in memory per instance".to_owned()),
            }
        }
    };
    let ok = database.error.is_none() && kms.error.is_none();
    let components = BTreeMap::from([
        ("database", database),
        ("kms", kms),
        ("rateLimiter", limiter),
    ]);
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = HealthResponse {
        ok,
        data: Readiness {
            status: if ok { "ready" } else { "not_ready" },
            components,
        },
    };
    (status, ApiJson(body))
}
