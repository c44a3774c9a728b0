//! Access tokens: HS256 JWTs with a pinned algorithm, issuer and audience, and a key id (`kid`)
//! naming the signing key, so keys can rotate while tokens signed by the previous one verify.
//!
//! Expiry is checked against the injected clock rather than the system time so that tests (and
//! every instance) agree on what "expired" means.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretBox};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Who issues the tokens, and for whom.
const ISSUER: &str = "koryphaios";
const AUDIENCE: &str = "koryphaios-api";

/// The HMAC key for access tokens: at least 32 bytes.
pub struct JwtSecret(SecretBox<[u8]>);

impl std::fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtSecret(<redacted>)")
    }
}

impl JwtSecret {
    /// The shortest accepted key.
    pub const MIN_LEN: usize = 32;

    /// Wraps key bytes; refuses keys shorter than [`Self::MIN_LEN`].
    pub fn new(bytes: Vec<u8>) -> Result<Self, TokenError> {
        if bytes.len() < Self::MIN_LEN {
            return Err(TokenError::WeakSecret);
        }
        Ok(Self(SecretBox::new(bytes.into_boxed_slice())))
    }
}

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The user id.
    pub sub: String,
    /// The token's unique id (revoked by logout).
    pub jti: String,
    /// The session (refresh-token family) id.
    pub fam: String,
    /// The user's session epoch when issued (bumped by logout-all and password change).
    pub sv: i64,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expires at, Unix seconds.
    pub exp: i64,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
}

/// Why a token was not accepted. Deliberately coarse: clients learn "invalid" or "expired".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Bad signature, algorithm, issuer, audience, shape or claims.
    #[error("invalid token")]
    Invalid,
    /// Well-formed and signed, but past its expiry.
    #[error("token expired")]
    Expired,
    /// The configured signing key is too short.
    #[error("the JWT secret must be at least {} bytes", JwtSecret::MIN_LEN)]
    WeakSecret,
    /// Signing failed (cannot happen with HS256 and a valid key).
    #[error("token signing failed")]
    Signing,
}

/// The keys tokens are checked with, by key id, and the one new tokens are signed with.
struct KeySet {
    signing_kid: String,
    encoding: EncodingKey,
    decoding: HashMap<String, DecodingKey>,
}

/// Signs and checks access tokens. Clones share one key set, so installing new keys (after a
/// rotation) reaches every holder.
#[derive(Clone)]
pub struct AccessTokenCodec {
    keys: Arc<RwLock<Arc<KeySet>>>,
    validation: Arc<Validation>,
}

impl std::fmt::Debug for AccessTokenCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessTokenCodec { algorithm: HS256, keys: <redacted> }")
    }
}

/// The key id of a single configured secret (`KORYPHAIOS_JWT_SECRET`).
pub const STATIC_KID: &str = "static";

fn key_set(keys: &[(String, JwtSecret)], signing_kid: &str) -> Option<KeySet> {
    let signing = keys.iter().find(|(kid, _)| kid == signing_kid)?;
    Some(KeySet {
        signing_kid: signing_kid.to_owned(),
        encoding: EncodingKey::from_secret(signing.1.0.expose_secret()),
        decoding: keys
            .iter()
            .map(|(kid, secret)| {
                (
                    kid.clone(),
                    DecodingKey::from_secret(secret.0.expose_secret()),
                )
            })
            .collect(),
    })
}

impl AccessTokenCodec {
    /// A codec for HS256 with one `secret`.
    pub fn new(secret: &JwtSecret) -> Self {
        let key = secret.0.expose_secret();
        let set = KeySet {
            signing_kid: STATIC_KID.to_owned(),
            encoding: EncodingKey::from_secret(key),
            decoding: HashMap::from([(STATIC_KID.to_owned(), DecodingKey::from_secret(key))]),
        };
        Self::with_set(set)
    }

    /// A codec that verifies with every key of `keys` and signs with `signing_kid`'s
    /// (`None` when `signing_kid` is not among them).
    pub fn with_keys(keys: &[(String, JwtSecret)], signing_kid: &str) -> Option<Self> {
        key_set(keys, signing_kid).map(Self::with_set)
    }

    fn with_set(set: KeySet) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss", "aud"]);
        // Expiry is judged against the injected clock in `decode`.
        validation.validate_exp = false;
        Self {
            keys: Arc::new(RwLock::new(Arc::new(set))),
            validation: Arc::new(validation),
        }
    }

    /// Replaces the key set for every clone; `false` (nothing changed) when `signing_kid` is not
    /// among `keys`.
    pub fn install(&self, keys: &[(String, JwtSecret)], signing_kid: &str) -> bool {
        let Some(set) = key_set(keys, signing_kid) else {
            return false;
        };
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
        true
    }

    /// The key id new tokens are signed with.
    pub fn signing_kid(&self) -> String {
        self.current().signing_kid.clone()
    }

    fn current(&self) -> Arc<KeySet> {
        Arc::clone(&self.keys.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Fills in issuer and audience and signs.
    pub fn encode(&self, mut claims: AccessClaims) -> Result<String, TokenError> {
        claims.iss = ISSUER.to_owned();
        claims.aud = AUDIENCE.to_owned();
        let keys = self.current();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(keys.signing_kid.clone());
        jsonwebtoken::encode(&header, &claims, &keys.encoding).map_err(|_| TokenError::Signing)
    }

    /// Verifies signature, algorithm, issuer, audience and expiry at `now`.
    pub fn decode(&self, token: &str, now: OffsetDateTime) -> Result<AccessClaims, TokenError> {
        // A JWT this service issues is a few hundred bytes; refuse to parse anything huge.
        if token.len() > 4096 {
            return Err(TokenError::Invalid);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        let keys = self.current();
        // A token without a key id predates key ids: only the signing key can have made it.
        let kid = header.kid.as_deref().unwrap_or(keys.signing_kid.as_str());
        let key = keys.decoding.get(kid).ok_or(TokenError::Invalid)?;
        let data = jsonwebtoken::decode::<AccessClaims>(token, key, &self.validation)
            .map_err(|_| TokenError::Invalid)?;
        if data.claims.exp <= now.unix_timestamp() {
            return Err(TokenError::Expired);
        }
        Ok(data.claims)
    }

    /// Base claims (issuer and audience are set by `encode`).
    pub fn claims(
        sub: String,
        jti: String,
        fam: String,
        sv: i64,
        iat: i64,
        exp: i64,
    ) -> AccessClaims {
        AccessClaims {
            sub,
            jti,
            fam,
            sv,
            iat,
            exp,
            iss: String::new(),
            aud: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    fn codec() -> AccessTokenCodec {
        AccessTokenCodec::new(&JwtSecret::new(vec![7u8; 32]).unwrap())
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    fn token(exp_offset: i64) -> String {
        let iat = now().unix_timestamp();
        codec()
            .encode(AccessTokenCodec::claims(
                "usr_x".into(),
                "j".into(),
                "fam_x".into(),
                0,
                iat,
                iat + exp_offset,
            ))
            .unwrap()
    }

    #[test]
    fn a_fresh_token_decodes_with_its_claims() {
        let claims = codec().decode(&token(900), now()).unwrap();
        assert_eq!(
            (claims.sub.as_str(), claims.iss.as_str()),
            ("usr_x", "koryphaios")
        );
    }

    #[test]
    fn an_expired_token_is_reported_as_expired() {
        assert_eq!(
            codec()
                .decode(&token(900), now() + time::Duration::seconds(900))
                .unwrap_err(),
            TokenError::Expired
        );
    }

    #[test]
    fn a_token_signed_with_another_key_is_invalid() {
        let other = AccessTokenCodec::new(&JwtSecret::new(vec![8u8; 32]).unwrap());
        assert_eq!(
            other.decode(&token(900), now()).unwrap_err(),
            TokenError::Invalid
        );
    }

    #[test]
    fn tokens_name_their_key_and_verify_only_with_a_key_the_set_holds() {
        let secret = |byte: u8| JwtSecret::new(vec![byte; 32]).unwrap();
        let one = AccessTokenCodec::with_keys(&[("v1".into(), secret(1))], "v1").unwrap();
        let signed = one
            .encode(AccessTokenCodec::claims(
                "usr_x".into(),
                "j".into(),
                "fam_x".into(),
                0,
                now().unix_timestamp(),
                now().unix_timestamp() + 900,
            ))
            .unwrap();
        let header = jsonwebtoken::decode_header(&signed).unwrap();
        assert_eq!(header.kid.as_deref(), Some("v1"));
        assert!(AccessTokenCodec::with_keys(&[("v1".into(), secret(1))], "v9").is_none());

        let both = AccessTokenCodec::with_keys(
            &[("v1".into(), secret(1)), ("v2".into(), secret(2))],
            "v2",
        )
        .unwrap();
        assert!(both.decode(&signed, now()).is_ok(), "the old key verifies");
        let only_new = AccessTokenCodec::with_keys(&[("v2".into(), secret(2))], "v2").unwrap();
        assert_eq!(
            only_new.decode(&signed, now()).unwrap_err(),
            TokenError::Invalid,
            "an unknown key id"
        );
        // The same key under another id: the kid must match, not just the signature.
        let renamed = AccessTokenCodec::with_keys(&[("v7".into(), secret(1))], "v7").unwrap();
        assert_eq!(
            renamed.decode(&signed, now()).unwrap_err(),
            TokenError::Invalid
        );
        // Installing a new set reaches every clone.
        let clone = one.clone();
        assert!(one.install(&[("v2".into(), secret(2))], "v2"));
        assert_eq!(clone.signing_kid(), "v2");
        assert!(
            !one.install(&[("v2".into(), secret(2))], "v3"),
            "no such signing key"
        );
    }

    #[test]
    fn tampered_and_alg_none_tokens_are_invalid() {
        let good = token(900);
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        let header_none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let forged_none = format!("{header_none}.{}.", parts[1]);
        assert_eq!(
            codec().decode(&forged_none, now()).unwrap_err(),
            TokenError::Invalid
        );
        let header_hs512 = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS512","typ":"JWT"}"#);
        let forged_alg = format!("{header_hs512}.{}.{}", parts[1], parts[2]);
        assert_eq!(
            codec().decode(&forged_alg, now()).unwrap_err(),
            TokenError::Invalid
        );
        parts[1] = URL_SAFE_NO_PAD.encode(br#"{"sub":"usr_admin"}"#);
        assert_eq!(
            codec().decode(&parts.join("."), now()).unwrap_err(),
            TokenError::Invalid
        );
        assert_eq!(
            codec().decode("not-a-jwt", now()).unwrap_err(),
            TokenError::Invalid
        );
        assert_eq!(
            codec().decode(&"a".repeat(5000), now()).unwrap_err(),
            TokenError::Invalid
        );
    }

    #[test]
    fn short_secrets_are_refused_and_never_printed() {
        assert_eq!(
            JwtSecret::new(vec![1u8; 31]).unwrap_err(),
            TokenError::WeakSecret
        );
        let shown = format!(
            "{:?}",
            JwtSecret::new(b"super-secret-value-that-is-long-enough".to_vec()).unwrap()
        );
        assert!(!shown.contains("super-secret"));
    }
}
