//! The HTTP API: router, middleware, extractors, error envelope, and the resource handlers.

pub mod api_doc;
pub mod bounds;
pub mod contract;
pub mod error;
pub mod extract;
pub mod json;
pub mod middleware;
pub mod routes;
pub mod server;

/// The largest request body accepted, on every method (SPEC §2.3).
pub const MAX_BODY_BYTES: usize = 10 * 1024;
