//! Which headers cross the proxy, each way.
//!
//! Towards the provider: the caller's own headers, minus everything that authenticates the
//! caller to us (`Authorization`, `X-API-Key`, `Cookie`), our own `X-Koryphaios-*`, the
//! hop-by-hop headers (and any `Connection` names), `Host`, the caller's address
//! (`Forwarded`, `X-Forwarded-*`, `X-Real-IP`), `Expect` (ours to answer) and `Accept-Encoding`,
//! replaced by `Accept-Encoding: identity` (a request without the header accepts any coding, and
//! an error body must come back uncompressed to be searched for the key); then the provider's key
//! in its header; our `X-Request-Id` stays here too. Back to the caller: the provider's headers
//! minus the hop-by-hop ones and any header that carries the key, with the provider's
//! `X-Request-Id` renamed `X-Upstream-Request-Id` (ours keeps the name).

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};

use super::providers::AuthStyle;

/// Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection, never the next.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Request headers that are ours or the caller's, not the provider's business.
const CALLER_ONLY: &[&str] = &[
    "authorization",
    "x-api-key",
    "cookie",
    "host",
    "forwarded",
    "x-real-ip",
    "accept-encoding",
    // Answered by our own server when the body is first read (curl sends it for large bodies);
    // the outgoing request streams its body without waiting.
    "expect",
    // Our request id (the caller's, when it sent a sane one): it names our request, not theirs.
    "x-request-id",
];

/// Where the provider's own request id goes in the answer: `X-Request-Id` is ours (the
/// envelope's `requestId`), and the provider's is what its support asks for.
pub const UPSTREAM_REQUEST_ID: &str = "x-upstream-request-id";

/// The header naming which stored credential to use.
pub const CREDENTIAL_HEADER: &str = "x-koryphaios-credential";

/// The key could not be put into a header (it holds bytes a header cannot).
#[derive(Debug, thiserror::Error)]
#[error("the stored secret is not a valid header value")]
pub struct UnusableSecret;

/// Names listed in `Connection` (also hop-by-hop for this message).
fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect()
}

fn is_hop_by_hop(name: &HeaderName, listed: &[String]) -> bool {
    HOP_BY_HOP.contains(&name.as_str()) || listed.iter().any(|l| l == name.as_str())
}

/// The headers sent to the provider: the caller's, filtered, plus the key.
pub fn upstream_request(
    incoming: &HeaderMap,
    auth: AuthStyle,
    secret: &SecretString,
) -> Result<HeaderMap, UnusableSecret> {
    let listed = connection_listed(incoming);
    let mut outgoing = HeaderMap::with_capacity(incoming.len() + 1);
    for (name, value) in incoming {
        let lower = name.as_str();
        let drop = is_hop_by_hop(name, &listed)
            || CALLER_ONLY.contains(&lower)
            || lower.starts_with("x-koryphaios-")
            || lower.starts_with("x-forwarded-");
        if !drop {
            outgoing.append(name.clone(), value.clone());
        }
    }
    // Not merely absent: no `Accept-Encoding` would let the provider pick any coding.
    outgoing.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    let (name, value) = match auth {
        AuthStyle::Bearer => (
            header::AUTHORIZATION,
            format!("Bearer {}", secret.expose_secret()),
        ),
        AuthStyle::Header(name) => (
            HeaderName::from_static(name),
            secret.expose_secret().to_owned(),
        ),
    };
    let mut value = HeaderValue::try_from(value).map_err(|_| UnusableSecret)?;
    // Sensitive values are never printed by `Debug` and never indexed by HPACK.
    value.set_sensitive(true);
    outgoing.insert(name, value);
    Ok(outgoing)
}

/// The provider's headers as returned to the caller.
pub fn downstream_response(upstream: &HeaderMap, secret: &SecretString) -> HeaderMap {
    let listed = connection_listed(upstream);
    let key = secret.expose_secret().as_bytes();
    let mut outgoing = HeaderMap::with_capacity(upstream.len());
    for (name, value) in upstream {
        let carries_key = !key.is_empty()
            && value
                .as_bytes()
                .windows(key.len())
                .any(|window| window == key);
        if is_hop_by_hop(name, &listed) || carries_key {
            continue;
        }
        if name.as_str() == "x-request-id" {
            outgoing.append(UPSTREAM_REQUEST_ID, value.clone());
        } else {
            outgoing.append(name.clone(), value.clone());
        }
    }
    outgoing
}

/// Whether an answer's body is encoded (`Content-Encoding` other than `identity`): its bytes
/// cannot be searched for the key.
pub fn is_encoded(upstream: &HeaderMap) -> bool {
    upstream
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .flat_map(|value| value.as_bytes().split(|byte| *byte == b','))
        .map(<[u8]>::trim_ascii)
        .any(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case(b"identity"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn the_callers_credentials_and_our_headers_never_reach_the_provider() {
        let incoming = map(&[
            ("authorization", "Bearer kor_callers_key"),
            ("x-api-key", "kor_other"),
            ("cookie", "session=1"),
            ("host", "koryphaios.local"),
            ("x-koryphaios-credential", "cred_1"),
            ("connection", "keep-alive, x-drop-me"),
            ("x-drop-me", "1"),
            ("transfer-encoding", "chunked"),
            ("x-forwarded-for", "10.0.0.1"),
            ("accept-encoding", "gzip"),
            ("expect", "100-continue"),
            ("x-request-id", "ours-1"),
            ("content-type", "application/json"),
            ("anthropic-version", "2023-06-01"),
        ]);
        let secret = SecretString::from("sk-stored");
        let out = upstream_request(&incoming, AuthStyle::Header("x-api-key"), &secret).unwrap();
        let names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        assert_eq!(
            names,
            [
                "content-type",
                "anthropic-version",
                "accept-encoding",
                "x-api-key"
            ]
        );
        assert_eq!(out["accept-encoding"], "identity");
        assert_eq!(out["x-api-key"], "sk-stored");
        assert!(out["x-api-key"].is_sensitive());
        let bearer = upstream_request(&incoming, AuthStyle::Bearer, &secret).unwrap();
        assert_eq!(bearer["authorization"], "Bearer sk-stored");
        assert!(bearer.get("x-api-key").is_none());
        assert!(!format!("{bearer:?}").contains("sk-stored"));
    }

    #[test]
    fn a_secret_that_is_no_header_value_is_refused_without_echo() {
        let error = upstream_request(
            &HeaderMap::new(),
            AuthStyle::Bearer,
            &SecretString::from("bad\nvalue"),
        )
        .unwrap_err();
        assert!(!error.to_string().contains("bad"));
    }

    #[test]
    fn answers_lose_hop_by_hop_headers_and_any_header_with_the_key() {
        let upstream = map(&[
            ("content-type", "text/event-stream"),
            ("connection", "close"),
            ("transfer-encoding", "chunked"),
            ("x-echo", "key=sk-stored"),
            ("x-request-id", "req_1"),
        ]);
        let out = downstream_response(&upstream, &SecretString::from("sk-stored"));
        let names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["content-type", UPSTREAM_REQUEST_ID]);
        assert_eq!(
            out[UPSTREAM_REQUEST_ID], "req_1",
            "the provider's id survives, renamed"
        );
    }

    #[test]
    fn only_identity_or_no_content_encoding_is_unencoded() {
        assert!(!is_encoded(&map(&[])));
        assert!(!is_encoded(&map(&[("content-encoding", "identity")])));
        assert!(!is_encoded(&map(&[("content-encoding", " Identity ")])));
        assert!(is_encoded(&map(&[("content-encoding", "gzip")])));
        assert!(is_encoded(&map(&[("content-encoding", "identity, br")])));
        assert!(is_encoded(&map(&[
            ("content-encoding", "identity"),
            ("content-encoding", "zstd")
        ])));
    }
}
