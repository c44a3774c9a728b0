//! The providers the proxy can reach: each one's base URL and how its key is presented.
//!
//! The table is closed: a provider name from a request is only ever looked up here, so it never
//! becomes a metric label, an audit value or a URL unless it is one of these names.
//! `KORYPHAIOS_PROVIDER_<NAME>_BASE_URL` replaces a base URL (a self-hosted gateway, a test
//! upstream) and gives one to the providers that have none built in (`azure`, `ollama`,
//! `custom`). Bedrock and Vertex AI sign requests (SigV4, OAuth) instead of presenting a key, so
//! they are not proxied.

use reqwest::Url;

/// How a provider expects its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthStyle {
    /// `Authorization: Bearer <key>` (OpenAI and every OpenAI-compatible API).
    Bearer,
    /// The key as the whole value of this header (`x-api-key`, `x-goog-api-key`, `api-key`).
    Header(&'static str),
}

/// One provider the proxy knows.
#[derive(Debug, Clone, Copy)]
pub struct BuiltIn {
    /// The name (one of `koryphaios_core::credentials::PROVIDERS`).
    pub name: &'static str,
    /// `KORYPHAIOS_PROVIDER_<NAME>_BASE_URL`, which overrides the base URL.
    pub variable: &'static str,
    /// The built-in base URL, if any.
    pub base_url: Option<&'static str>,
    /// How the key is sent.
    pub auth: AuthStyle,
}

macro_rules! built_in {
    ($name:literal, $upper:literal, $base:expr, $auth:expr) => {
        BuiltIn {
            name: $name,
            variable: concat!("KORYPHAIOS_PROVIDER_", $upper, "_BASE_URL"),
            base_url: $base,
            auth: $auth,
        }
    };
}

/// Every proxied provider.
pub const BUILT_IN: &[BuiltIn] = &[
    built_in!(
        "openai",
        "OPENAI",
        Some("https://api.openai.com/v1"),
        AuthStyle::Bearer
    ),
    built_in!(
        "anthropic",
        "ANTHROPIC",
        Some("https://api.anthropic.com/v1"),
        AuthStyle::Header("x-api-key")
    ),
    built_in!(
        "google",
        "GOOGLE",
        Some("https://generativelanguage.googleapis.com/v1beta"),
        AuthStyle::Header("x-goog-api-key")
    ),
    built_in!("xai", "XAI", Some("https://api.x.ai/v1"), AuthStyle::Bearer),
    built_in!(
        "openrouter",
        "OPENROUTER",
        Some("https://openrouter.ai/api/v1"),
        AuthStyle::Bearer
    ),
    built_in!(
        "groq",
        "GROQ",
        Some("https://api.groq.com/openai/v1"),
        AuthStyle::Bearer
    ),
    built_in!(
        "mistral",
        "MISTRAL",
        Some("https://api.mistral.ai/v1"),
        AuthStyle::Bearer
    ),
    built_in!(
        "deepseek",
        "DEEPSEEK",
        Some("https://api.deepseek.com/v1"),
        AuthStyle::Bearer
    ),
    built_in!(
        "togetherai",
        "TOGETHERAI",
        Some("https://api.together.xyz/v1"),
        AuthStyle::Bearer
    ),
    built_in!(
        "fireworks",
        "FIREWORKS",
        Some("https://api.fireworks.ai/inference/v1"),
        AuthStyle::Bearer
    ),
    built_in!(
        "cerebras",
        "CEREBRAS",
        Some("https://api.cerebras.ai/v1"),
        AuthStyle::Bearer
    ),
    built_in!(
        "huggingface",
        "HUGGINGFACE",
        Some("https://router.huggingface.co/v1"),
        AuthStyle::Bearer
    ),
    built_in!(
        "cohere",
        "COHERE",
        Some("https://api.cohere.com/v2"),
        AuthStyle::Bearer
    ),
    built_in!(
        "perplexity",
        "PERPLEXITY",
        Some("https://api.perplexity.ai"),
        AuthStyle::Bearer
    ),
    built_in!(
        "replicate",
        "REPLICATE",
        Some("https://api.replicate.com/v1"),
        AuthStyle::Bearer
    ),
    built_in!("azure", "AZURE", None, AuthStyle::Header("api-key")),
    built_in!("ollama", "OLLAMA", None, AuthStyle::Bearer),
    built_in!("custom", "CUSTOM", None, AuthStyle::Bearer),
];

/// Whether `variable` is one of the base-URL overrides (for the unknown-variable warning).
pub fn is_base_url_variable(variable: &str) -> bool {
    BUILT_IN.iter().any(|known| known.variable == variable)
}

/// One reachable provider.
#[derive(Debug, Clone)]
pub struct Provider {
    /// Its name, from [`BUILT_IN`] (a closed set: safe as a metric label).
    pub name: &'static str,
    /// The base URL: scheme, host, optional port and path prefix; no trailing `/`, no query.
    pub base_url: Url,
    /// How the key is sent.
    pub auth: AuthStyle,
}

/// The providers with a base URL (built in or configured).
#[derive(Debug, Clone, Default)]
pub struct ProviderTable(Vec<Provider>);

impl ProviderTable {
    /// The table from [`BUILT_IN`] and the `overrides` (provider name → base URL).
    pub fn new(overrides: &[(&'static str, Url)]) -> Self {
        let providers = BUILT_IN
            .iter()
            .filter_map(|known| {
                let configured = overrides
                    .iter()
                    .find(|(overridden, _)| *overridden == known.name)
                    .map(|(_, url)| url.clone());
                let base_url =
                    configured.or_else(|| known.base_url.and_then(|raw| Url::parse(raw).ok()))?;
                Some(Provider {
                    name: known.name,
                    base_url,
                    auth: known.auth,
                })
            })
            .collect();
        Self(providers)
    }

    /// The provider called `name`, if it can be reached.
    pub fn get(&self, name: &str) -> Option<&Provider> {
        self.0.iter().find(|provider| provider.name == name)
    }

    /// Every reachable provider's name (the closed label set of the proxy metrics).
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.0.iter().map(|provider| provider.name)
    }
}

/// Checks a configured base URL: `http` or `https`, a host, no user info, query or fragment.
/// Returns it without a trailing `/` on its path.
pub fn parse_base_url(raw: &str) -> Result<Url, &'static str> {
    let mut url = Url::parse(raw).map_err(|_| "expected an absolute http(s) URL")?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("expected an absolute http(s) URL");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry user info (the key is injected per request)");
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not carry a query or fragment");
    }
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&path);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_proxied_provider_is_a_known_credential_provider() {
        for known in BUILT_IN {
            assert!(
                koryphaios_core::credentials::PROVIDERS.contains(&known.name),
                "{}",
                known.name
            );
            let upper = known.name.to_ascii_uppercase();
            assert_eq!(
                known.variable,
                format!("KORYPHAIOS_PROVIDER_{upper}_BASE_URL")
            );
        }
    }

    #[test]
    fn overrides_replace_or_add_base_urls() {
        let local = parse_base_url("http://127.0.0.1:9/v1/").unwrap();
        let table = ProviderTable::new(&[("openai", local.clone()), ("custom", local.clone())]);
        assert_eq!(table.get("openai").unwrap().base_url, local);
        assert_eq!(table.get("custom").unwrap().auth, AuthStyle::Bearer);
        assert_eq!(
            table.get("anthropic").unwrap().base_url.as_str(),
            "https://api.anthropic.com/v1"
        );
        assert!(table.get("azure").is_none(), "no built-in URL");
        assert!(
            table.get("bedrock").is_none(),
            "signed requests are not proxied"
        );
        assert!(table.get("nope").is_none());
        assert_eq!(local.as_str(), "http://127.0.0.1:9/v1");
    }

    #[test]
    fn base_urls_are_checked() {
        for bad in [
            "ftp://example.com",
            "example.com",
            "http://user:pw@example.com",
            "https://example.com/v1?key=1",
            "https://example.com/#x",
        ] {
            assert!(parse_base_url(bad).is_err(), "{bad}");
        }
        assert!(is_base_url_variable("KORYPHAIOS_PROVIDER_OLLAMA_BASE_URL"));
        assert!(!is_base_url_variable(
            "KORYPHAIOS_PROVIDER_BEDROCK_BASE_URL"
        ));
    }
}
