//! Request schemas built from the validators' own constants, so the OpenAPI document states the
//! bounds the service enforces (lengths, patterns, enums) and cannot drift from them: the
//! provider, kind, tier, role and scope lists and every length limit come from
//! `koryphaios-core`. Used with `#[schema(schema_with = …)]` and `#[param(schema_with = …)]`.
//!
//! Optional fields are nullable (`null` means absent, as serde reads it), so a fuzzer that sends
//! `null` is not told the service should refuse it.

use koryphaios_core::api_keys::{
    MAX_EXPIRES_DAYS, MAX_GRACE_SECONDS, MAX_NAME_CHARS, MAX_RATE_LIMIT_PER_MINUTE, MAX_SCOPES,
};
use koryphaios_core::credentials::{KINDS, MAX_REASON_CHARS, MAX_SECRET_CHARS, PROVIDERS};
use koryphaios_core::networks::MAX_NETWORKS;
use koryphaios_core::tokens::{MAX_CREDENTIAL_IDS, MAX_RUN_ID_CHARS, MAX_TTL_SECONDS, MAX_USES};
use koryphaios_core::users::{PasswordPolicy, Role, Username};
use koryphaios_core::{Scope, tier::Tier};
use serde_json::Value;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    ArrayBuilder, KnownFormat, ObjectBuilder, Schema, SchemaFormat, SchemaType, Type,
};

/// No control characters (Unicode category Cc, what `char::is_control` refuses).
pub const NO_CONTROL_CHARACTERS: &str = "^[^\\x00-\\x1F\\x7F-\\x9F]*$";

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn nullable_string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(SchemaType::from_iter([Type::String, Type::Null]))
}

fn one_of_strings<'a>(
    builder: ObjectBuilder,
    values: impl IntoIterator<Item = &'a str>,
    nullable: bool,
) -> RefOr<Schema> {
    let mut values: Vec<Value> = values.into_iter().map(Value::from).collect();
    if nullable {
        values.push(Value::Null);
    }
    builder.enum_values(Some(values)).into()
}

fn integer(description: &str, minimum: i64, maximum: i64, nullable: bool) -> RefOr<Schema> {
    let schema_type = if nullable {
        SchemaType::from_iter([Type::Integer, Type::Null])
    } else {
        SchemaType::Type(Type::Integer)
    };
    ObjectBuilder::new()
        .schema_type(schema_type)
        .description(Some(description))
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(minimum))
        .maximum(Some(maximum))
        .into()
}

/// A provider (`openai`, …): one of [`PROVIDERS`].
pub fn provider() -> RefOr<Schema> {
    one_of_strings(
        string().description(Some("The provider the secret is for")),
        PROVIDERS.iter().copied(),
        false,
    )
}

/// A provider filter (a query parameter: absent rather than null).
pub fn provider_filter() -> RefOr<Schema> {
    one_of_strings(
        string().description(Some("Only this provider's credentials")),
        PROVIDERS.iter().copied(),
        false,
    )
}

/// A credential's type: one of [`KINDS`], optional.
pub fn credential_kind() -> RefOr<Schema> {
    one_of_strings(
        nullable_string().description(Some("What the secret is (default `api_key`)")),
        KINDS.iter().copied(),
        true,
    )
}

fn secret_bounds(builder: ObjectBuilder) -> ObjectBuilder {
    builder
        .description(Some(format!(
            "The secret, 1 to {MAX_SECRET_CHARS} characters; never returned except by reveal"
        )))
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Password)))
        .min_length(Some(1))
        .max_length(Some(MAX_SECRET_CHARS))
}

/// A provider secret: 1 to [`MAX_SECRET_CHARS`] characters.
pub fn secret() -> RefOr<Schema> {
    secret_bounds(string()).into()
}

/// An optional provider secret.
pub fn optional_secret() -> RefOr<Schema> {
    secret_bounds(nullable_string()).into()
}

/// An optional reason for the audit log: at most [`MAX_REASON_CHARS`], no control characters.
pub fn reason() -> RefOr<Schema> {
    nullable_string()
        .description(Some(format!(
            "Why, for the audit log: at most {MAX_REASON_CHARS} characters, no control characters"
        )))
        .max_length(Some(MAX_REASON_CHARS))
        .pattern(Some(NO_CONTROL_CHARACTERS))
        .into()
}

fn key_name_description() -> String {
    format!("1 to {MAX_NAME_CHARS} characters: letters, digits, `_`, `-`, space")
}

/// An API key name: 1 to [`MAX_NAME_CHARS`] letters, digits, `_`, `-`, spaces.
pub fn key_name() -> RefOr<Schema> {
    string()
        .description(Some(key_name_description()))
        .min_length(Some(1))
        .max_length(Some(MAX_NAME_CHARS))
        .pattern(Some("^[A-Za-z0-9_ -]+$"))
        .examples(["ci deploy"])
        .into()
}

/// An optional API key name.
pub fn optional_key_name() -> RefOr<Schema> {
    nullable_string()
        .description(Some(key_name_description()))
        .min_length(Some(1))
        .max_length(Some(MAX_NAME_CHARS))
        .pattern(Some("^[A-Za-z0-9_ -]+$"))
        .into()
}

/// Every scope a key may carry: `read`, `write`, `admin`, `provider:*`, `proxy:*`, and
/// `provider:<p>` and `proxy:<p>` for each known provider.
fn scope_names() -> Vec<String> {
    let mut names: Vec<String> = [
        Scope::Read,
        Scope::Write,
        Scope::Admin,
        Scope::AnyProvider,
        Scope::AnyProxy,
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    names.extend(
        PROVIDERS
            .iter()
            .map(|provider| Scope::Provider((*provider).to_owned()).to_string()),
    );
    names.extend(
        PROVIDERS
            .iter()
            .map(|provider| Scope::Proxy((*provider).to_owned()).to_string()),
    );
    names
}

/// An optional scope list: 1 to [`MAX_SCOPES`] known scopes.
pub fn scopes() -> RefOr<Schema> {
    let names = scope_names();
    let item = one_of_strings(string(), names.iter().map(String::as_str), false);
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .description(Some(format!(
            "1 to {MAX_SCOPES} scopes, never more than the caller holds (default `[\"read\"]` at creation)"
        )))
        .items(item)
        .min_items(Some(1))
        .max_items(Some(MAX_SCOPES))
        .examples([serde_json::json!(["read", "provider:openai"])])
        .into()
}

/// An optional rate-limit tier: one of [`Tier::ALL`].
pub fn tier() -> RefOr<Schema> {
    one_of_strings(
        nullable_string().description(Some(
            "A rate-limit tier: a key's may not exceed its owner's (403 `tier_not_allowed`)",
        )),
        Tier::ALL.iter().map(|t| t.as_str()),
        true,
    )
}

/// An optional role: `admin` or `user`.
pub fn role() -> RefOr<Schema> {
    one_of_strings(
        nullable_string().description(Some("The user's role")),
        [Role::Admin.as_str(), Role::User.as_str()],
        true,
    )
}

/// An optional expiry in days: 1 to [`MAX_EXPIRES_DAYS`].
pub fn expires_in_days() -> RefOr<Schema> {
    integer(
        "Days until the key expires; omitted, it does not (a key created by a key never outlives it)",
        1,
        MAX_EXPIRES_DAYS,
        true,
    )
}

/// An optional grace period in seconds: 0 to [`MAX_GRACE_SECONDS`].
pub fn grace_period_seconds() -> RefOr<Schema> {
    integer(
        "How long the old secret keeps working, in seconds (default 0)",
        0,
        MAX_GRACE_SECONDS,
        true,
    )
}

/// An optional network list: at most [`MAX_NETWORKS`] IPv4/IPv6 CIDRs.
pub fn cidrs() -> RefOr<Schema> {
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .description(Some(format!(
            "At most {MAX_NETWORKS} IPv4/IPv6 networks (`10.0.0.0/8`, `2001:db8::/32`, or a bare address) \
             the credential may be used from, checked against the client address resolved through \
             trusted proxies (403 `ip_not_allowed` elsewhere); empty or omitted: anywhere"
        )))
        .items(string().max_length(Some(64)))
        .max_items(Some(MAX_NETWORKS))
        .examples([serde_json::json!(["10.0.0.0/8", "2001:db8::/32"])])
        .into()
}

/// A token's lifetime: 1 to [`MAX_TTL_SECONDS`].
pub fn ttl_seconds() -> RefOr<Schema> {
    integer(
        "Seconds the token lives; never beyond the caller's own expiry (a key's, or the session's)",
        1,
        MAX_TTL_SECONDS,
        false,
    )
}

/// An optional use limit: 1 to [`MAX_USES`].
pub fn max_uses() -> RefOr<Schema> {
    integer(
        "How many authenticated requests the token may make (the next: 401 `token_exhausted`), counted exactly across instances",
        1,
        MAX_USES,
        true,
    )
}

/// An optional run id: 1 to [`MAX_RUN_ID_CHARS`] characters, no control characters.
pub fn run_id() -> RefOr<Schema> {
    nullable_string()
        .description(Some(
            "The agent run the token belongs to, stamped on every audit record it causes",
        ))
        .min_length(Some(1))
        .max_length(Some(MAX_RUN_ID_CHARS))
        .pattern(Some(NO_CONTROL_CHARACTERS))
        .into()
}

/// An optional credential restriction: 1 to [`MAX_CREDENTIAL_IDS`] of the caller's credential ids.
pub fn credential_ids() -> RefOr<Schema> {
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .description(Some(format!(
            "1 to {MAX_CREDENTIAL_IDS} of the caller's credential ids: the only ones the token may \
             reveal or use through the proxy (others: 403 `credential_not_allowed`)"
        )))
        .items(string().pattern(Some(koryphaios_core::CredentialId::pattern())))
        .min_items(Some(1))
        .max_items(Some(MAX_CREDENTIAL_IDS))
        .into()
}

/// A key's own per-minute limit: 1 to [`MAX_RATE_LIMIT_PER_MINUTE`], and at most its tier's.
pub fn per_minute() -> RefOr<Schema> {
    integer(
        "Requests per minute this key may make, at most its tier's limit (400 above it)",
        1,
        i64::from(MAX_RATE_LIMIT_PER_MINUTE),
        false,
    )
}

/// A page size (a query parameter): 1 to [`koryphaios_core::pagination::MAX_LIMIT`].
pub fn limit() -> RefOr<Schema> {
    integer(
        "Page size (default 100)",
        1,
        i64::from(koryphaios_core::pagination::MAX_LIMIT),
        false,
    )
}

/// A username: [`Username::MIN_LEN`] to [`Username::MAX_LEN`] letters, digits, `_`, `-`, `.`.
pub fn username() -> RefOr<Schema> {
    string()
        .description(Some(format!(
            "{} to {} characters: letters, digits, `_`, `-`, `.`",
            Username::MIN_LEN,
            Username::MAX_LEN
        )))
        .min_length(Some(Username::MIN_LEN))
        .max_length(Some(Username::MAX_LEN))
        .pattern(Some("^[A-Za-z0-9_.-]+$"))
        .examples(["ada"])
        .into()
}

/// A new password: [`PasswordPolicy::MIN_LEN`] to [`PasswordPolicy::MAX_LEN`] characters (and, not
/// expressible here, at least [`PasswordPolicy::MIN_DISTINCT`] different ones, not containing the
/// username).
pub fn password() -> RefOr<Schema> {
    string()
        .description(Some(format!(
            "{} to {} characters, at least {} different ones, not containing the username",
            PasswordPolicy::MIN_LEN,
            PasswordPolicy::MAX_LEN,
            PasswordPolicy::MIN_DISTINCT
        )))
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Password)))
        .min_length(Some(PasswordPolicy::MIN_LEN))
        .max_length(Some(PasswordPolicy::MAX_LEN))
        .into()
}
