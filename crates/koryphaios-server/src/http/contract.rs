//! The API contract, generated from the code (ADR 0013).
//!
//! Every status an operation can answer comes from the code that answers it, never from a list
//! kept by hand beside each route:
//!
//! - **Extractors** implement [`Documented`]: a handler that takes [`CurrentUser`] gets the
//!   security schemes and 401/403; [`ApiJson`]/[`MaybeJson`] the request body schema and
//!   400/413/415; [`ApiQuery`] the query parameters and 400; [`ApiPath`] the typed path id (with
//!   its pattern) and 400/404. [`DocumentedHandler`] sums the extractors of a handler's
//!   signature, so a handler cannot take an extractor that says nothing (it would not compile),
//!   and adding an extractor updates the document.
//! - **The pipeline** ([`document_pipeline`]) adds what the layers around every route answer:
//!   400 (control characters in the URL), 413 (the body limit, on every method), 429 with its
//!   headers (the rate limiter, on every route it limits; its `X-RateLimit-*` headers also on
//!   the successful responses there) and 503 (the request timeout, a store or
//!   key provider that is down, or an instance still waiting for its key provider).
//!
//! The shared responses live once in `components.responses` and operations refer to them; a
//! handler's own `#[utoipa::path]` responses (more specific descriptions, 409s, 404s of the body)
//! take precedence and only borrow the shared response's headers.
//!
//! [`CurrentUser`]: super::extract::CurrentUser
//! [`ApiJson`]: super::json::ApiJson
//! [`MaybeJson`]: super::json::MaybeJson
//! [`ApiQuery`]: super::json::ApiQuery
//! [`ApiPath`]: super::extract::ApiPath

use utoipa::openapi::content::Content;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, Parameter};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{OpenApi, Ref, RefOr, Required};

/// Schemas a handler's description needs in `components.schemas`.
pub type Schemas = Vec<(String, RefOr<Schema>)>;

/// A response every operation of a kind can give, kept once in `components.responses`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shared {
    /// 400: malformed or invalid input.
    BadRequest,
    /// 401: no, or no valid, credentials.
    Unauthenticated,
    /// 403: authenticated but not allowed.
    Forbidden,
    /// 404: no such resource for this caller.
    NotFound,
    /// 413: the body is over the limit.
    PayloadTooLarge,
    /// 415: the body is not JSON.
    UnsupportedMediaType,
    /// 429: a rate limit refused the request.
    RateLimited,
    /// 503: a dependency is down, the request timed out, or the instance is starting.
    Unavailable,
}

impl Shared {
    /// Every shared response.
    pub const ALL: [Self; 8] = [
        Self::BadRequest,
        Self::Unauthenticated,
        Self::Forbidden,
        Self::NotFound,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::RateLimited,
        Self::Unavailable,
    ];

    /// The HTTP status, as the document keys it.
    pub fn status(self) -> &'static str {
        match self {
            Self::BadRequest => "400",
            Self::Unauthenticated => "401",
            Self::Forbidden => "403",
            Self::NotFound => "404",
            Self::PayloadTooLarge => "413",
            Self::UnsupportedMediaType => "415",
            Self::RateLimited => "429",
            Self::Unavailable => "503",
        }
    }

    /// The name under `components.responses`.
    pub fn name(self) -> &'static str {
        match self {
            Self::BadRequest => "BadRequest",
            Self::Unauthenticated => "Unauthenticated",
            Self::Forbidden => "Forbidden",
            Self::NotFound => "NotFound",
            Self::PayloadTooLarge => "PayloadTooLarge",
            Self::UnsupportedMediaType => "UnsupportedMediaType",
            Self::RateLimited => "RateLimited",
            Self::Unavailable => "Unavailable",
        }
    }

    fn description(self) -> &'static str {
        match self {
            Self::BadRequest => {
                "Malformed or invalid input: `validation_failed` (with `details` naming each field), \
                 `malformed_json`, `invalid_query`, `invalid_id`, or `bad_request` (control \
                 characters in the URL)"
            }
            Self::Unauthenticated => {
                "Not authenticated: `unauthenticated`, `invalid_authorization`, `invalid_token`, \
                 `token_expired`, `token_revoked`, `invalid_api_key`, `api_key_expired`, \
                 `api_key_revoked`"
            }
            Self::Forbidden => {
                "Authenticated but not allowed: `insufficient_scope`, `user_disabled`, \
                 `not_a_session`"
            }
            Self::NotFound => "`not_found`: no such resource for this caller",
            Self::PayloadTooLarge => "`payload_too_large`: the request body exceeds 10 KB",
            Self::UnsupportedMediaType => {
                "`unsupported_media_type`: the body needs `Content-Type: application/json`"
            }
            Self::RateLimited => {
                "`rate_limited`: a rate limit refused the request; retry after `Retry-After` \
                 seconds (also `retryAfter` in the body)"
            }
            Self::Unavailable => {
                "`service_unavailable`: a dependency (database, key provider, password hashing) \
                 is unavailable, the request timed out, or the instance is still starting"
            }
        }
    }

    /// The response object kept in `components.responses`.
    pub fn response(self) -> Response {
        let integer = |description: &str| {
            HeaderBuilder::new()
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(0)),
                ))
                .description(Some(description))
                .build()
        };
        let mut response = ResponseBuilder::new()
            .description(self.description())
            .content(
                "application/json",
                Content::new(Some(Ref::from_schema_name("ErrorBody"))),
            );
        match self {
            Self::Unauthenticated => {
                response = response.header(
                    "WWW-Authenticate",
                    HeaderBuilder::new()
                        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                        .description(Some("`Bearer`"))
                        .build(),
                );
            }
            Self::RateLimited => {
                response = response
                    .header("Retry-After", integer("Seconds until a retry can succeed"))
                    .header(
                        "X-RateLimit-Limit",
                        integer("The tightest limit's allowance in its window"),
                    )
                    .header(
                        "X-RateLimit-Remaining",
                        integer("Requests left in that window"),
                    )
                    .header(
                        "X-RateLimit-Reset",
                        integer("When capacity is next freed, Unix seconds"),
                    );
            }
            Self::Unavailable => {
                response = response.header(
                    "Retry-After",
                    integer("Seconds until a retry may succeed (when known)"),
                );
            }
            _ => {}
        }
        response.build()
    }
}

/// One operation being described, with the schemas its description refers to.
pub struct OperationDoc<'a> {
    /// The operation.
    pub operation: &'a mut Operation,
    /// Schemas to add to `components.schemas`.
    pub schemas: &'a mut Schemas,
}

impl std::fmt::Debug for OperationDoc<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperationDoc")
            .field("operation_id", &self.operation.operation_id)
            .finish_non_exhaustive()
    }
}

impl OperationDoc<'_> {
    /// Adds a shared response. A response the handler documents itself for that status wins (its
    /// description is more specific); it gains the shared response's headers it lacks.
    pub fn respond(&mut self, shared: Shared) {
        add_shared(self.operation, shared);
    }

    /// Adds a parameter, unless the handler described one of the same name and place.
    pub fn parameter(&mut self, parameter: Parameter) {
        let parameters = self.operation.parameters.get_or_insert_with(Vec::new);
        let present = parameters.iter().any(|known| match known {
            RefOr::T(known) => {
                known.name == parameter.name && known.parameter_in == parameter.parameter_in
            }
            RefOr::Ref(_) => false,
        });
        if !present {
            parameters.push(RefOr::T(parameter));
        }
    }

    /// Sets the JSON request body to schema `T` (and registers `T`'s schemas).
    pub fn json_body<T: utoipa::ToSchema>(&mut self, required: bool) {
        let name = T::name();
        self.schemas.push((name.to_string(), T::schema()));
        T::schemas(self.schemas);
        let body = RequestBodyBuilder::new()
            .content(
                "application/json",
                Content::new(Some(Ref::from_schema_name(name))),
            )
            .required(Some(if required {
                Required::True
            } else {
                Required::False
            }))
            .description((!required).then_some("Optional: the request may carry no body at all"))
            .build();
        self.operation.request_body = Some(RefOr::T(body));
    }

    /// Requires a session or an API key, unless the handler narrowed the schemes itself (a route
    /// for sessions only lists `bearerAuth` alone).
    pub fn authenticated(&mut self) {
        self.operation.security.get_or_insert_with(|| {
            vec![
                SecurityRequirement::new("bearerAuth", Vec::<String>::new()),
                SecurityRequirement::new("apiKey", Vec::<String>::new()),
            ]
        });
    }
}

fn add_shared(operation: &mut Operation, shared: Shared) {
    let responses = &mut operation.responses.responses;
    match responses.get_mut(shared.status()) {
        None => {
            responses.insert(
                shared.status().to_owned(),
                RefOr::Ref(Ref::from_response_name(shared.name())),
            );
        }
        Some(RefOr::T(own)) => {
            for (name, header) in shared.response().headers {
                own.headers.entry(name).or_insert(header);
            }
        }
        Some(RefOr::Ref(_)) => {}
    }
}

/// What an extractor adds to the description of every handler that takes it.
pub trait Documented {
    /// Adds the extractor's parameters, body, security and responses.
    fn document(operation: &mut OperationDoc<'_>);
}

/// A handler whose every argument is [`Documented`]: its description is the sum of theirs.
pub trait DocumentedHandler<Args> {
    /// Adds every argument's contribution.
    fn document(operation: &mut OperationDoc<'_>);
}

macro_rules! documented_handler {
    ($($arg:ident),*) => {
        impl<F, Fut, $($arg,)*> DocumentedHandler<($($arg,)*)> for F
        where
            F: FnOnce($($arg),*) -> Fut,
            Fut: Future,
            $($arg: Documented,)*
        {
            fn document(operation: &mut OperationDoc<'_>) {
                $(<$arg as Documented>::document(&mut *operation);)*
                // A handler without arguments adds nothing.
                let _ = operation;
            }
        }
    };
}

documented_handler!();
documented_handler!(A1);
documented_handler!(A1, A2);
documented_handler!(A1, A2, A3);
documented_handler!(A1, A2, A3, A4);
documented_handler!(A1, A2, A3, A4, A5);
documented_handler!(A1, A2, A3, A4, A5, A6);
documented_handler!(A1, A2, A3, A4, A5, A6, A7);

impl<S> Documented for axum::extract::State<S> {
    fn document(_: &mut OperationDoc<'_>) {}
}

impl Documented for axum::http::HeaderMap {
    fn document(_: &mut OperationDoc<'_>) {}
}

/// The whole request, for a handler that passes its body on unread (the credential proxy): the
/// handler's own description says what the body may be.
impl Documented for axum::extract::Request {
    fn document(_: &mut OperationDoc<'_>) {}
}

/// Adds the handler's extractor contributions to the operations `routes` describes, and names
/// them `operation_id` (unique by construction: module and function).
pub fn document_handler<H, Args, S>(
    _handler: &H,
    operation_id: &str,
    (mut schemas, mut paths, router): utoipa_axum::router::UtoipaMethodRouter<S>,
) -> utoipa_axum::router::UtoipaMethodRouter<S>
where
    H: DocumentedHandler<Args>,
{
    for item in paths.paths.values_mut() {
        for operation in operations(item) {
            operation.operation_id = Some(operation_id.to_owned());
            H::document(&mut OperationDoc {
                operation,
                schemas: &mut schemas,
            });
        }
    }
    (schemas, paths, router)
}

fn operations(item: &mut utoipa::openapi::path::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.options.as_mut(),
        item.head.as_mut(),
        item.patch.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

/// The `X-RateLimit-*` headers the rate limiter sets on every response it lets through (when
/// limiting is on), on the operation's successful responses.
fn add_rate_limit_headers(operation: &mut Operation) {
    let headers: Vec<_> = Shared::RateLimited
        .response()
        .headers
        .into_iter()
        .filter(|(name, _)| name.starts_with("X-RateLimit-"))
        .collect();
    for (status, response) in &mut operation.responses.responses {
        if let (true, RefOr::T(response)) = (status.starts_with('2'), response) {
            for (name, header) in &headers {
                response
                    .headers
                    .entry(name.clone())
                    .or_insert_with(|| header.clone());
            }
        }
    }
}

/// Adds what the layers around every route answer, and the shared responses themselves.
/// `rate_limited(path)` says whether the rate limiter applies to a path.
pub fn document_pipeline(openapi: &mut OpenApi, rate_limited: impl Fn(&str) -> bool) {
    for (path, item) in &mut openapi.paths.paths {
        let limited = rate_limited(path);
        for operation in operations(item) {
            // url_guard: control characters in the URL.
            add_shared(operation, Shared::BadRequest);
            // body_limit: every method, whether or not the handler reads a body.
            add_shared(operation, Shared::PayloadTooLarge);
            if limited {
                add_shared(operation, Shared::RateLimited);
                add_rate_limit_headers(operation);
            }
            // The request timeout, and the not-ready router while the key provider is awaited.
            add_shared(operation, Shared::Unavailable);
        }
    }
    let components = openapi.components.get_or_insert_with(Default::default);
    for shared in Shared::ALL {
        components
            .responses
            .insert(shared.name().to_owned(), RefOr::T(shared.response()));
    }
}
