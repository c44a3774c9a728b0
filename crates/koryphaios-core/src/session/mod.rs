//! User sessions: access tokens (JWT, short-lived) and refresh tokens (opaque, rotated), and the
//! use cases that issue, check and end them.

mod access_token;
mod service;

pub use access_token::{AccessClaims, AccessTokenCodec, JwtSecret, TokenError};
pub use service::{AuthError, AuthService, AuthSettings, SessionTokens};
