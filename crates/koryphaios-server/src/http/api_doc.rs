//! The OpenAPI document's skeleton: info, tags, the error schemas and the security schemes.
//! The router starts from it ([`crate::http::routes::api_routes`]) and adds the paths; it is a
//! module of its own so the router and `crate::openapi` (which asks the router for the full
//! document) do not import each other.

use utoipa::Modify;
use utoipa::openapi::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::error::{ErrorBody, FieldDetail};

/// Document-level information; paths are added by the router.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    info(
        title = "Koryphaios",
        description = "Keeps third-party provider credentials under envelope encryption, issues and verifies API keys, rate limits callers and writes a tamper-evident audit log.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(ErrorBody, FieldDetail)),
    modifiers(&BearerAuth),
    tags(
        (name = "health", description = "Liveness and readiness"),
        (name = "auth", description = "Users and sessions"),
        (name = "credentials", description = "Provider credentials under envelope encryption"),
        (name = "keys", description = "API keys: issue, verify, roll, revoke"),
        (name = "tokens", description = "Short-lived agent tokens: minted by a key or session for one agent run"),
        (name = "audit", description = "The tamper-evident audit log: query, verify, export"),
        (name = "users", description = "User administration (admins): roles, tiers, disabling"),
        (name = "proxy", description = "Credential brokering: call a provider with a stored key the caller never sees"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Header(
                utoipa::openapi::security::ApiKeyValue::new("X-API-Key"),
            )),
        );
        components.add_security_scheme(
            "bearerAuth",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}
