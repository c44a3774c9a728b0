//! The OpenAPI document: generated from the handlers' annotations and extractors, served at
//! `/openapi.json`, printed by `koryphaios openapi`, and committed as `docs/openapi.yaml` (a test
//! checks drift). The document's skeleton (info, tags, security schemes) is
//! [`crate::http::api_doc`]; the responses come from [`crate::http::contract`].

use utoipa::openapi::OpenApi;

/// The full document, with every route.
pub fn document() -> OpenApi {
    let (_, mut openapi) = crate::http::routes::api_routes().split_for_parts();
    // The version is the crate's, so the committed file changes only when the API does or a release is cut.
    openapi.info.version = env!("CARGO_PKG_VERSION").to_owned();
    openapi
}

/// The document as YAML, as committed in `docs/openapi.yaml`.
pub fn yaml() -> anyhow::Result<String> {
    Ok(document().to_yaml()?)
}
