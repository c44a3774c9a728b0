//! The HTTP pipeline's own middleware; `routes::router` puts them in order.

pub mod body_limit;
pub mod cors;
pub mod envelope;
pub mod rate_limit;
pub mod request_context;
pub mod security_headers;
pub mod timeout;
pub mod url_guard;
