//! Opaque page cursors: a tagged value in URL-safe base64. Each listing has its own tag, so a
//! cursor of one listing is refused by another.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The cursor for `value` in the listing tagged `tag`.
pub fn encode(tag: &str, value: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{tag}:{value}"))
}

/// The value of a cursor issued by [`encode`] with `tag`; `None` for anything else.
pub fn decode(raw: &str, tag: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(raw).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.strip_prefix(tag)?.strip_prefix(':').map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_belong_to_one_listing() {
        let cursor = encode("u1", "usr_0192");
        assert_eq!(decode(&cursor, "u1").as_deref(), Some("usr_0192"));
        assert_eq!(decode(&cursor, "v1"), None, "another listing's cursor");
        assert_eq!(decode("not base64!", "u1"), None);
        assert_eq!(decode(&encode("u10", "x"), "u1"), None);
    }
}
