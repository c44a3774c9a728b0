//! User sessions: access tokens (JWT, short-lived) and refresh tokens (opaque, rotated), and the
//! use cases that issue, check and end them.

mod access_token;
mod service;
pub mod signing_keys;

pub use access_token::{AccessClaims, AccessTokenCodec, JwtSecret, STATIC_KID, TokenError};
pub use service::{AuthError, AuthService, AuthSettings, SessionTokens};
pub use signing_keys::{SigningKeyError, SigningKeys};
