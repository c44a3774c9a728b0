//! The `model` of a JSON request body, found while the body streams past, for the audit record.
//!
//! Only the first [`PEEK_BYTES`] are kept (prompts carrying images run to megabytes; the body is
//! never buffered for this). The top-level object's keys are read in order and the search stops
//! at `model`, so a truncated prefix still yields it when it comes before the images, as in the
//! OpenAI, Anthropic and Mistral request formats.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

/// How much of a body is looked at.
pub const PEEK_BYTES: usize = 64 * 1024;
/// The longest model name recorded.
const MAX_MODEL_CHARS: usize = 128;

/// The first bytes of a JSON body (a prompt: `Debug` shows only its length).
#[derive(Default)]
pub struct ModelPeek {
    buffer: Vec<u8>,
}

impl fmt::Debug for ModelPeek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelPeek")
            .field("bytes", &self.buffer.len())
            .finish()
    }
}

impl ModelPeek {
    /// Keeps what still fits of `chunk`.
    pub fn push(&mut self, chunk: &[u8]) {
        let room = PEEK_BYTES.saturating_sub(self.buffer.len());
        self.buffer
            .extend_from_slice(&chunk[..room.min(chunk.len())]);
    }

    /// The model named by the body seen so far, if any.
    pub fn model(&self) -> Option<String> {
        find_model(&self.buffer)
    }
}

struct FindModel<'a>(&'a mut Option<String>);

impl<'de> Visitor<'de> for FindModel<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "model" {
                if let Ok(model) = map.next_value::<String>() {
                    *self.0 = Some(model);
                }
                // Stop here: the rest may be cut off at the peek's end.
                return Err(de::Error::custom("found"));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
}

/// Whether `c` may appear in a recorded model name. Model ids are ASCII (`gpt-4o`,
/// `claude-3-5-sonnet@20240620`, `models/gemini-1.5-pro`, `ft:gpt-4o:org::id`, `a+b`); anything
/// else (bidi overrides, zero-width or look-alike characters, quotes, spaces) could make an audit
/// record or its export read other than it is.
fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '/' | '@' | '+' | '-')
}

/// The top-level `model` string of a JSON object (possibly truncated after it): bounded, and
/// only from [`allowed`] characters, else none at all (it ends up in audit records and their
/// exports; a caller-chosen string is not trusted there).
pub fn find_model(body: &[u8]) -> Option<String> {
    let mut found = None;
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    // The search ends in an error by design (found, or truncated input): only `found` matters.
    let _ = deserializer.deserialize_map(FindModel(&mut found));
    found
        .filter(|model| !model.is_empty() && model.chars().all(allowed))
        .map(|model| model.chars().take(MAX_MODEL_CHARS).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_is_found_in_whole_and_truncated_bodies() {
        let body =
            br#"{"stream":true,"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
        assert_eq!(find_model(body).as_deref(), Some("gpt-4o"));
        assert_eq!(find_model(&body[..40]).as_deref(), Some("gpt-4o"));
        let mut peek = ModelPeek::default();
        peek.push(br#"{"model":"claude-x","#);
        peek.push(&vec![b' '; PEEK_BYTES * 2]);
        assert_eq!(peek.model().as_deref(), Some("claude-x"));
        assert_eq!(peek.buffer.len(), PEEK_BYTES);
    }

    #[test]
    fn no_model_means_none() {
        for body in [
            &br#"{"messages":[]}"#[..],
            b"[1,2]",
            b"not json",
            br#"{"model":42}"#,
            br#"{"model":"a\nb"}"#,
            br#"{"nested":{"model":"x"}}"#,
            b"",
        ] {
            assert_eq!(find_model(body), None, "{}", String::from_utf8_lossy(body));
        }
        let long = format!(r#"{{"model":"{}"}}"#, "m".repeat(1000));
        assert_eq!(find_model(long.as_bytes()).unwrap().len(), MAX_MODEL_CHARS);
    }

    #[test]
    fn only_plain_model_ids_are_recorded() {
        for model in [
            "gpt-4o-mini",
            "claude-3-5-sonnet@20240620",
            "models/gemini-1.5-pro",
            "ft:gpt-4o:org::abc_1",
            "a+b",
        ] {
            let body = format!(r#"{{"model":"{model}"}}"#);
            assert_eq!(find_model(body.as_bytes()).as_deref(), Some(model));
        }
        for model in [
            // A right-to-left override, zero-width space and joiner, a BOM, a Cyrillic "о".
            "gpt-4\u{202e}o",
            "gpt\u{200b}-4o",
            "gpt\u{200d}-4o",
            "\u{feff}gpt-4o",
            "gpt-4\u{043e}",
            "gpt 4o",
            "gpt\"4o",
            "<script>",
            "a;b",
            "",
        ] {
            let body = serde_json::json!({ "model": model }).to_string();
            assert_eq!(find_model(body.as_bytes()), None, "{model:?}");
        }
    }
}
