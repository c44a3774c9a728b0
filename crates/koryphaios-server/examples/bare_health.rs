//! The benchmark baseline (issue #14): a bare axum 0.8 server that only answers `GET /health`
//! with 200 and a tiny JSON body — no middleware, no state, no logging. `scripts/bench.sh` builds it
//! with the workspace's release profile and measures it interleaved with the real binary, so each
//! route's throughput can be expressed as a ratio to what this machine allows for an HTTP request.
//!
//! An example of `koryphaios-server`, so it is never part of the shipped binary.
//!
//! ```sh
//! cargo run --release -p koryphaios-server --example bare_health -- 8099   # or BARE_HEALTH_PORT=8099
//! ```

use axum::{Json, Router, routing::get};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = match std::env::args()
        .nth(1)
        .or_else(|| std::env::var("BARE_HEALTH_PORT").ok())
    {
        Some(port) => port.parse().map_err(|error| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("port {port:?}: {error}"),
            )
        })?,
        None => 8099,
    };
    let app = Router::new().route(
        "/health",
        get(|| async { Json(serde_json::json!({ "status": "ok" })) }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, app).await
}
