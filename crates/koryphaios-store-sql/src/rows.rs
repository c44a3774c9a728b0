//! Row mappings shared by several ports: users (never their password hash), wrapped keys, and
//! the policy columns of keys and tokens (scopes, networks, per-minute limits).

use koryphaios_core::clock::from_unix_ms;
use koryphaios_core::envelope::WrappedDek;
use koryphaios_core::ids::UserId;
use koryphaios_core::networks::AllowedNetworks;
use koryphaios_core::scope::{Scope, ScopeSet};
use koryphaios_core::store::StoreResult;
use koryphaios_core::tier::Tier;
use koryphaios_core::users::{Role, User};

use crate::backend::{Backend, Conn};
use crate::driver::{Columns, Query};

/// A value in the database that the domain refuses (a corrupt id, an unknown role).
pub(crate) fn decode_err(error: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::Decode(error.to_string().into())
}

/// The columns [`user_from_row`] reads (never the password hash).
pub(crate) const USER_COLUMNS: &str =
    "id, username, role, tier, disabled_at, session_epoch, created_at, updated_at, last_login_at";

/// An optional instant column.
pub(crate) fn instant(
    row: &impl Columns,
    column: &str,
) -> Result<Option<time::OffsetDateTime>, sqlx::Error> {
    Ok(row.try_get::<Option<i64>>(column)?.map(from_unix_ms))
}

pub(crate) fn user_from_row(row: &impl Columns) -> Result<User, sqlx::Error> {
    let id: String = row.try_get("id")?;
    let role: String = row.try_get("role")?;
    let tier: String = row.try_get("tier")?;
    Ok(User {
        id: UserId::parse(&id).map_err(decode_err)?,
        username: row.try_get("username")?,
        role: Role::parse(&role).ok_or_else(|| decode_err(format!("unknown role {role:?}")))?,
        tier: tier_from_text(&tier)?,
        disabled_at: instant(row, "disabled_at")?,
        session_epoch: row.try_get("session_epoch")?,
        created_at: from_unix_ms(row.try_get("created_at")?),
        updated_at: from_unix_ms(row.try_get("updated_at")?),
        last_login_at: instant(row, "last_login_at")?,
    })
}

/// The user with this id, read on `conn` (a pool connection or the caller's transaction).
pub(crate) async fn fetch_user<B: Backend>(
    conn: &mut Conn<B>,
    id: &str,
) -> StoreResult<Option<User>> {
    let row = Query::<B::Db>::new(format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
        .map_err(B::map_err)?;
    row.as_ref()
        .map(user_from_row)
        .transpose()
        .map_err(B::map_err)
}

/// A wrapped key from the columns `kms_provider`, `kek_id`, `kek_version` and `ciphertext`.
pub(crate) fn wrap_from_row(
    row: &impl Columns,
    ciphertext: &str,
) -> Result<WrappedDek, sqlx::Error> {
    Ok(WrappedDek {
        provider: row.try_get("kms_provider")?,
        kek_id: row.try_get("kek_id")?,
        kek_version: row.try_get("kek_version")?,
        ciphertext: row.try_get(ciphertext)?,
    })
}

/// A tier column.
pub(crate) fn tier_from_text(tier: &str) -> Result<Tier, sqlx::Error> {
    Tier::parse(tier).ok_or_else(|| decode_err(format!("unknown tier {tier:?}")))
}

/// A scope set column (space-separated scopes).
pub(crate) fn scopes_from_text(text: &str) -> Result<ScopeSet, sqlx::Error> {
    text.split_whitespace()
        .map(str::parse::<Scope>)
        .collect::<Result<Vec<_>, _>>()
        .map(ScopeSet::new)
        .map_err(decode_err)
}

/// A networks column (space-separated CIDRs, NULL for anywhere).
pub(crate) fn networks(row: &impl Columns, column: &str) -> Result<AllowedNetworks, sqlx::Error> {
    AllowedNetworks::from_stored(row.try_get::<Option<String>>(column)?.as_deref())
        .map_err(decode_err)
}

/// An optional non-negative count or limit column (a per-minute limit, a use limit).
pub(crate) fn optional_u32(row: &impl Columns, column: &str) -> Result<Option<u32>, sqlx::Error> {
    row.try_get::<Option<i64>>(column)?
        .map(|n| u32::try_from(n).map_err(decode_err))
        .transpose()
}
