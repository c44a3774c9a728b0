//! Redaction of the injected key from a provider's error body, while it streams.
//!
//! Some providers quote the key they were given in a 401 ("Incorrect API key provided: sk-…").
//! Each occurrence is overwritten with `*` of the same length, so `Content-Length` stays true
//! and nothing needs to be buffered but the last `len(key) - 1` bytes of each chunk (an
//! occurrence may straddle two chunks).

use bytes::{Bytes, BytesMut};

/// A streaming search-and-overwrite of one byte string (the key: never printed, zeroed on drop).
pub struct Redactor {
    needle: Vec<u8>,
    held: BytesMut,
}

impl Redactor {
    /// Redacts `needle` (an empty needle redacts nothing).
    pub fn new(needle: &[u8]) -> Self {
        Self {
            needle: needle.to_vec(),
            held: BytesMut::new(),
        }
    }

    fn overwrite(&self, buffer: &mut [u8]) {
        let n = self.needle.len();
        if n == 0 || buffer.len() < n {
            return;
        }
        let mut at = 0;
        while at + n <= buffer.len() {
            if buffer[at..at + n] == self.needle[..] {
                buffer[at..at + n].fill(b'*');
                at += n;
            } else {
                at += 1;
            }
        }
    }

    /// Takes the next chunk; returns what can be sent on (all but a possible partial match).
    pub fn push(&mut self, chunk: &[u8]) -> Bytes {
        self.held.extend_from_slice(chunk);
        let mut buffer = std::mem::take(&mut self.held);
        self.overwrite(&mut buffer);
        let keep = self.needle.len().saturating_sub(1).min(buffer.len());
        self.held = buffer.split_off(buffer.len() - keep);
        buffer.freeze()
    }

    /// The bytes still held at the end of the body (too short to be the key).
    pub fn finish(&mut self) -> Bytes {
        std::mem::take(&mut self.held).freeze()
    }
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("needle", &"[REDACTED]")
            .field("held", &self.held.len())
            .finish()
    }
}

impl Drop for Redactor {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.needle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(needle: &str, chunks: &[&str]) -> String {
        let mut redactor = Redactor::new(needle.as_bytes());
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend_from_slice(&redactor.push(chunk.as_bytes()));
        }
        out.extend_from_slice(&redactor.finish());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_key_is_overwritten_even_across_chunks_and_the_length_kept() {
        let body = r#"{"error":"Incorrect API key provided: sk-abc123. Again: sk-abc123"}"#;
        let expected = body.replace("sk-abc123", "*********");
        assert_eq!(run("sk-abc123", &[body]), expected);
        for split in 1..body.len() {
            let (a, b) = body.split_at(split);
            assert_eq!(run("sk-abc123", &[a, b]), expected, "split at {split}");
        }
        let bytewise: Vec<String> = body.chars().map(String::from).collect();
        let refs: Vec<&str> = bytewise.iter().map(String::as_str).collect();
        assert_eq!(run("sk-abc123", &refs), expected);
    }

    #[test]
    fn debug_never_shows_the_key() {
        let mut redactor = Redactor::new(b"sk-abc123");
        redactor.push(b"xx sk-abc");
        let printed = format!("{redactor:?}");
        assert!(!printed.contains("sk-abc"), "{printed}");
    }

    #[test]
    fn bodies_without_the_key_pass_unchanged() {
        assert_eq!(
            run("sk-abc123", &["{\"error\":", "\"sk-abc12\"}"]),
            "{\"error\":\"sk-abc12\"}"
        );
        assert_eq!(run("", &["abc"]), "abc");
    }
}
