//! Where a proxied request goes: the provider's base URL plus the caller's path, which can never
//! leave that base URL.
//!
//! The path is judged as sent (still percent-encoded) and refused when any segment is, or decodes
//! to, `.` or `..`; when it has an empty segment (`//`, also how an absolute URL starts), a
//! backslash or an encoded slash or backslash; or when it starts with a scheme (`https:`). The
//! URL is then built and checked again: same scheme, host and port as the base URL, and a path
//! under the base path. Either check alone would do; both together make a parser difference
//! between us and the URL library harmless.

use reqwest::Url;

/// Where the proxy's routes start.
pub const PREFIX: &str = "/api/v1/proxy/";

/// The longest path (with its query's names) kept in an audit record.
const MAX_AUDIT_PATH: usize = 512;

/// Whether `path` is one of the proxy's routes (they have their own body limit and timeouts).
pub fn owns(path: &str) -> bool {
    path.starts_with(PREFIX)
}

/// The provider name and the rest of a proxy route's raw path.
pub fn split(path: &str) -> Option<(&str, &str)> {
    path.strip_prefix(PREFIX)?.split_once('/')
}

/// How many times a segment is percent-decoded while it still changes: an upstream (or a server
/// behind it) that decodes once more than we do must not find `..` or a slash either.
const MAX_DECODINGS: usize = 4;

/// Whether a segment means "this directory" or "the parent" to some server: it is, or decodes
/// (repeatedly: `%252e` is `%2e` after one decoding) to, `.` or `..`, also with a `;parameters`
/// suffix (`..;x`, which Tomcat-style servers read as `..`), or decodes to something holding a
/// slash or backslash.
fn is_dot_segment(segment: &str) -> bool {
    let mut decoded = segment.to_owned();
    for _ in 0..MAX_DECODINGS {
        let next = percent_encoding::percent_decode_str(&decoded)
            .decode_utf8_lossy()
            .into_owned();
        if next == decoded {
            break;
        }
        decoded = next;
    }
    let name = decoded.split(';').next().unwrap_or_default();
    name == "." || name == ".." || decoded.contains('/') || decoded.contains('\\')
}

fn starts_with_scheme(path: &str) -> bool {
    path.split_once(':').is_some_and(|(head, _)| {
        !head.is_empty()
            && !head.contains('/')
            && head
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    })
}

/// Checks the raw path after the provider name; the message says what is wrong.
pub fn check_path(rest: &str) -> Result<(), &'static str> {
    if rest.is_empty() {
        return Err("a path after the provider is required");
    }
    let lower = rest.to_ascii_lowercase();
    if rest.contains('\\') || lower.contains("%5c") || lower.contains("%2f") {
        return Err("backslashes and encoded slashes are not allowed");
    }
    if starts_with_scheme(rest) {
        return Err("an absolute URL is not allowed");
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len() - 1;
    for (index, segment) in segments.iter().enumerate() {
        // A trailing slash is a path; an empty segment anywhere else is `//`.
        if segment.is_empty() && index != last {
            return Err("empty path segments (//) are not allowed");
        }
        if is_dot_segment(segment) {
            return Err("'.' and '..' segments are not allowed");
        }
    }
    Ok(())
}

/// The upstream URL for `rest` (checked by [`check_path`]) and the raw `query`, or `None` when
/// the result would leave `base`.
pub fn upstream_url(base: &Url, rest: &str, query: Option<&str>) -> Option<Url> {
    let base_path = base.path().trim_end_matches('/');
    let origin = base.origin().ascii_serialization();
    let mut url = Url::parse(&format!("{origin}{base_path}/{rest}")).ok()?;
    let same_place = url.scheme() == base.scheme()
        && url.host_str() == base.host_str()
        && url.port_or_known_default() == base.port_or_known_default()
        && url.path().starts_with(&format!("{base_path}/"))
        && url.username().is_empty()
        && url.password().is_none();
    if !same_place {
        return None;
    }
    url.set_query(query);
    Some(url)
}

/// The path for the audit record: the upstream path and the query's parameter names, never
/// their values (they may hold ids or keys), bounded.
pub fn audit_path(rest: &str, query: Option<&str>) -> String {
    let mut path = format!("/{rest}");
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        let names: Vec<&str> = query
            .split('&')
            .map(|pair| pair.split_once('=').map_or(pair, |(name, _)| name))
            .collect();
        path.push('?');
        path.push_str(&names.join("&"));
    }
    if path.len() > MAX_AUDIT_PATH {
        let mut end = MAX_AUDIT_PATH;
        while !path.is_char_boundary(end) {
            end -= 1;
        }
        path.truncate(end);
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("https://api.example.com/v1").unwrap()
    }

    #[test]
    fn ordinary_paths_are_forwarded_under_the_base() {
        for (rest, query, expected) in [
            (
                "chat/completions",
                None,
                "https://api.example.com/v1/chat/completions",
            ),
            (
                "models/gemini-pro:generateContent",
                Some("alt=sse"),
                "https://api.example.com/v1/models/gemini-pro:generateContent?alt=sse",
            ),
            ("files/", None, "https://api.example.com/v1/files/"),
            ("a%20b", None, "https://api.example.com/v1/a%20b"),
        ] {
            assert_eq!(check_path(rest), Ok(()), "{rest}");
            let url = upstream_url(&base(), rest, query).unwrap();
            assert_eq!(url.as_str(), expected);
        }
    }

    #[test]
    fn paths_that_could_leave_the_base_are_refused() {
        for rest in [
            "",
            "..",
            "../admin",
            "a/../../admin",
            "a/./b",
            "%2e%2e/admin",
            "%2E%2e/admin",
            ".%2e/admin",
            "a/%2e",
            "https://evil.example/x",
            "http:evil.example",
            "//evil.example/x",
            "a//b",
            "a\\..\\b",
            "a%5c..%5cb",
            "a%2f..%2fb",
            "%2F%2Fevil.example",
            "..;/admin",
            "a/..;jsessionid=1/admin",
            "%252e%252e/admin",
            "%25252e%25252e/admin",
            "a/%252f..%252fadmin",
            "a/%255c",
            ".;/x",
        ] {
            assert!(check_path(rest).is_err(), "{rest} should be refused");
        }
    }

    #[test]
    fn the_built_url_keeps_the_host_even_for_odd_input() {
        // Characters that change the authority in other positions stay in the path here.
        for rest in ["@evil.example/x", "a@evil.example", "a:b@evil.example/c"] {
            if check_path(rest).is_ok() {
                let url = upstream_url(&base(), rest, None).unwrap();
                assert_eq!(url.host_str(), Some("api.example.com"), "{rest}");
                assert!(url.path().starts_with("/v1/"), "{rest}");
            }
        }
        let root = Url::parse("http://127.0.0.1:9").unwrap();
        assert_eq!(
            upstream_url(&root, "v1/x", None).unwrap().as_str(),
            "http://127.0.0.1:9/v1/x"
        );
    }

    #[test]
    fn audit_paths_keep_query_names_not_values() {
        assert_eq!(
            audit_path("models/x:generate", Some("alt=sse&key=secret&flag")),
            "/models/x:generate?alt&key&flag"
        );
        assert_eq!(audit_path("chat/completions", None), "/chat/completions");
        assert!(audit_path(&"a".repeat(2000), None).len() <= MAX_AUDIT_PATH);
    }
}
