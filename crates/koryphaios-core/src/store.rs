//! Storage ports: what the domain needs from a database, whichever database it is.
//!
//! Each method is one transaction in the adapter. SQLite and PostgreSQL implement the same
//! traits and are held to the same behaviour by the contract suite in `testing`.

use std::fmt::Debug;

use async_trait::async_trait;
use time::OffsetDateTime;

use serde_json::{Map, Value};

use crate::api_keys::{ApiKey, KeyLookup, Tier};
use crate::audit::AuditEntry;
use crate::audit::chain::{AuditKey, ChainAnchor, ChainRecord};
use crate::audit::head::ChainHead;
use crate::audit::query::{ActivityCounts, AuditQuery, StoredAuditEntry};
use crate::credentials::{Credential, CredentialFilter, SealedVersion};
use crate::envelope::WrappedDek;
use crate::ids::{ApiKeyId, CredentialId, FamilyId, RefreshTokenId, TokenId, UserId};
use crate::migrations::{MigrationError, MigrationStatus};
use crate::networks::AllowedNetworks;
use crate::pagination::PageRequest;
use crate::scope::ScopeSet;
use crate::secret::TokenHash;
pub use crate::store_error::{StoreError, StoreResult};
use crate::tokens::{AgentToken, TokenInserted, TokenLookup};
use crate::users::{NewUser, PasswordHash, RegistrationPolicy, User, UserCredentials};

/// The outcome of an admin's change to a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserUpdated {
    /// Stored; the user as it is now.
    Updated(User),
    /// No such user.
    NotFound,
    /// The user changed since it was read (another admin got there first).
    Conflict,
    /// The change would leave the install without an admin who can act.
    LastAdmin,
}

/// Why a registration was not stored.
#[derive(Debug, thiserror::Error)]
pub enum RegisterUserError {
    /// Another user has this name (compared case-insensitively).
    #[error("username is taken")]
    UsernameTaken,
    /// The install has users and registration is not open.
    #[error("registration is closed")]
    RegistrationClosed,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A refresh token to store (only its hash).
#[derive(Debug, Clone)]
pub struct NewRefreshToken {
    /// The token's id.
    pub id: RefreshTokenId,
    /// SHA-256 of the token.
    pub token_hash: TokenHash,
    /// When it was issued.
    pub issued_at: OffsetDateTime,
    /// When it stops working.
    pub expires_at: OffsetDateTime,
}

/// The result of presenting a refresh token for rotation.
#[derive(Debug)]
pub enum RotateOutcome {
    /// The token was current: it is now spent, and the new token is stored in its family.
    Rotated {
        /// The session's owner.
        user: User,
        /// The session.
        family: FamilyId,
    },
    /// The token was already spent: someone replayed it, so the whole family is now revoked.
    ReuseDetected {
        /// The session's owner.
        user_id: UserId,
        /// The session just revoked.
        family: FamilyId,
    },
    /// Unknown, expired, or its session is revoked.
    Invalid,
}

/// What an access token's validity depends on, read in one query.
#[derive(Debug, Clone)]
pub struct SessionState {
    /// The token's user, as stored now.
    pub user: User,
    /// The token's session was logged out or revoked.
    pub family_revoked: bool,
    /// This very token was logged out.
    pub token_revoked: bool,
}

/// Users.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Stores a new user with its `register` record; the first user of an empty store becomes
    /// admin, atomically.
    async fn register_user(
        &self,
        user: NewUser,
        policy: RegistrationPolicy,
        audit: &AuditEntry,
    ) -> Result<User, RegisterUserError>;
    /// The user with this name (case-insensitive) and their password hash.
    async fn find_credentials(&self, username: &str) -> StoreResult<Option<UserCredentials>>;
    /// The user with this id.
    async fn find_user(&self, id: &UserId) -> StoreResult<Option<User>>;
    /// Replaces the password, bumps the session epoch and revokes every session, atomically.
    async fn change_password(
        &self,
        id: &UserId,
        hash: &PasswordHash,
        now: OffsetDateTime,
        audit: &AuditEntry,
    ) -> StoreResult<User>;
    /// How many users exist.
    async fn count_users(&self) -> StoreResult<u64>;
    /// Up to `limit` users with ids after `after`, in id (creation) order.
    async fn list_users(&self, after: Option<&UserId>, limit: u32) -> StoreResult<Vec<User>>;
    /// Replaces `expected`'s role, tier, disabled instant, session epoch and update time with
    /// `updated`'s if the stored user still has `expected`'s role, tier and disabled instant
    /// (compare-and-swap), keeping at least one admin who is not disabled. When the change
    /// disables the user, every session family of the user is revoked in the same transaction.
    async fn update_user(
        &self,
        expected: &User,
        updated: &User,
        audit: &AuditEntry,
    ) -> StoreResult<UserUpdated>;
}

/// Login sessions: refresh-token families and revoked access tokens.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Starts a session with its first refresh token.
    async fn create_session(
        &self,
        user: &UserId,
        family: &FamilyId,
        first: &NewRefreshToken,
        audit: &AuditEntry,
    ) -> StoreResult<()>;
    /// Spends `presented` and stores `next` in its family; detects reuse (SPEC §2.1).
    async fn rotate_refresh_token(
        &self,
        presented: &TokenHash,
        next: &NewRefreshToken,
        now: OffsetDateTime,
    ) -> StoreResult<RotateOutcome>;
    /// Ends one session and revokes one access token of it until that token expires.
    async fn end_session(
        &self,
        user: &UserId,
        family: &FamilyId,
        jti: &str,
        token_expires_at: OffsetDateTime,
        now: OffsetDateTime,
        audit: &AuditEntry,
    ) -> StoreResult<()>;
    /// Ends every session of a user: bumps the epoch and revokes every family.
    async fn end_all_sessions(
        &self,
        user: &UserId,
        now: OffsetDateTime,
        audit: &AuditEntry,
    ) -> StoreResult<User>;
    /// What decides whether an access token is still good.
    async fn session_state(
        &self,
        user: &UserId,
        family: &FamilyId,
        jti: &str,
    ) -> StoreResult<Option<SessionState>>;
    /// Deletes expired refresh tokens, dead families and revocations of expired access tokens.
    async fn purge_expired_sessions(&self, now: OffsetDateTime) -> StoreResult<u64>;
}

/// Schema management for one backend.
#[async_trait]
pub trait SchemaMigrator: Send + Sync {
    /// Every known migration with whether and when it was applied.
    async fn migration_status(&self) -> Result<Vec<MigrationStatus>, MigrationError>;
    /// Applies every pending migration in order, each in its own transaction; returns their versions.
    async fn migrate_up(&self) -> Result<Vec<i64>, MigrationError>;
    /// Reverts the newest `steps` applied migrations; returns their versions.
    async fn migrate_down(&self, steps: usize) -> Result<Vec<i64>, MigrationError>;
}

/// The outcome of adding a credential version.
#[derive(Debug)]
pub enum VersionAdded {
    /// Stored; the credential as it is now.
    Added(Credential),
    /// No such live credential for this owner.
    NotFound,
    /// Another rotation got there first (the current version moved).
    Conflict,
}

/// Stored provider credentials. Every change writes its audit record in the same transaction.
#[async_trait]
pub trait CredentialStore: Send + Sync {
    /// Stores a new credential with its first version.
    async fn insert_credential(
        &self,
        credential: &Credential,
        first: &SealedVersion,
        audit: &AuditEntry,
    ) -> StoreResult<()>;
    /// A page of the owner's live credentials, newest first (`created_at`, then id, descending):
    /// at most `page.limit`, strictly after `page.after`.
    async fn list_credentials(
        &self,
        owner: &UserId,
        filter: &CredentialFilter,
        now: OffsetDateTime,
        page: &PageRequest<CredentialId>,
    ) -> StoreResult<Vec<Credential>>;
    /// One live credential of the owner.
    async fn find_credential(
        &self,
        owner: &UserId,
        id: &CredentialId,
    ) -> StoreResult<Option<Credential>>;
    /// Live (not deleted) credentials per provider, across all users (for metrics).
    async fn count_credentials_by_provider(&self) -> StoreResult<Vec<(String, u64)>>;
    /// Whether the owner has (or had: soft-deleted ones count) this credential.
    async fn credential_belongs_to(&self, owner: &UserId, id: &CredentialId) -> StoreResult<bool>;
    /// One live credential of the owner with its current sealed version.
    async fn find_current_version(
        &self,
        owner: &UserId,
        id: &CredentialId,
    ) -> StoreResult<Option<(Credential, SealedVersion)>>;
    /// The owner's newest live credential for `provider` that has not expired at `now`, with its
    /// current sealed version (the credential proxy's default choice, in one read).
    async fn find_newest_active_version(
        &self,
        owner: &UserId,
        provider: &str,
        now: OffsetDateTime,
    ) -> StoreResult<Option<(Credential, SealedVersion)>>;
    /// Replaces the metadata.
    async fn update_credential_metadata(
        &self,
        owner: &UserId,
        id: &CredentialId,
        metadata: &Map<String, Value>,
        now: OffsetDateTime,
        audit: &AuditEntry,
    ) -> StoreResult<Option<Credential>>;
    /// Soft-deletes; `false` when there was no such live credential.
    async fn delete_credential(
        &self,
        owner: &UserId,
        id: &CredentialId,
        reason: Option<&str>,
        now: OffsetDateTime,
        audit: &AuditEntry,
    ) -> StoreResult<bool>;
    /// Adds `version` if the current version is still `expected_current`, and makes it current.
    async fn add_credential_version(
        &self,
        owner: &UserId,
        id: &CredentialId,
        expected_current: i64,
        version: &SealedVersion,
        audit: &AuditEntry,
    ) -> StoreResult<VersionAdded>;
    /// Records a reveal: last-used time and the audit record.
    async fn record_credential_access(
        &self,
        owner: &UserId,
        id: &CredentialId,
        now: OffsetDateTime,
        audit: &AuditEntry,
    ) -> StoreResult<()>;
}

/// What `update_api_key` changes: each field that is `Some`.
#[derive(Debug, Default)]
pub struct ApiKeyChange<'a> {
    /// A new name.
    pub name: Option<&'a str>,
    /// New scopes.
    pub scopes: Option<&'a ScopeSet>,
    /// A new tier.
    pub tier: Option<Tier>,
    /// New networks (empty: anywhere).
    pub allowed_networks: Option<&'a AllowedNetworks>,
    /// A new per-minute limit (`Some(None)`: none).
    pub rate_limit_per_minute: Option<Option<u32>>,
}

/// API keys and their secrets (hashes only).
#[async_trait]
pub trait ApiKeyStore: Send + Sync {
    /// Stores a new key with its secret's hash. A key with a parent is stored only while the
    /// parent is live (not revoked, not expired at the key's creation), checked under a lock the
    /// parent's revocation also takes; `false` when it is not.
    async fn insert_api_key(
        &self,
        key: &ApiKey,
        secret_hash: &TokenHash,
        audit: &AuditEntry,
    ) -> StoreResult<bool>;
    /// A page of the owner's keys, newest first (`created_at`, then id, descending; revoked ones
    /// included, marked): at most `page.limit`, strictly after `page.after`.
    async fn list_api_keys(
        &self,
        owner: &UserId,
        page: &PageRequest<ApiKeyId>,
    ) -> StoreResult<Vec<ApiKey>>;
    /// One key of the owner.
    async fn find_api_key(&self, owner: &UserId, id: &ApiKeyId) -> StoreResult<Option<ApiKey>>;
    /// Changes a live key's fields that `change` names.
    async fn update_api_key(
        &self,
        owner: &UserId,
        id: &ApiKeyId,
        change: &ApiKeyChange<'_>,
        now: OffsetDateTime,
        audit: &AuditEntry,
    ) -> StoreResult<Option<ApiKey>>;
    /// Revokes a live key and, in the same transaction, every live key created through it
    /// (children, their children, …); `false` when there was no live key.
    async fn revoke_api_key(
        &self,
        owner: &UserId,
        id: &ApiKeyId,
        now: OffsetDateTime,
        audit: &AuditEntry,
    ) -> StoreResult<bool>;
    /// Adds a new secret to a live key; its current secrets stop working at `old_expires_at`, and
    /// so do the keys created through it (their expiry is capped there, in the same transaction).
    #[expect(
        clippy::too_many_arguments,
        reason = "the roll is one transaction with these inputs"
    )]
    async fn roll_api_key(
        &self,
        owner: &UserId,
        id: &ApiKeyId,
        new_hash: &TokenHash,
        new_prefix: &str,
        old_expires_at: OffsetDateTime,
        now: OffsetDateTime,
        audit: &AuditEntry,
    ) -> StoreResult<Option<ApiKey>>;
    /// The key a secret hash belongs to, with its owner's role, tier and disabled state (one
    /// read, for verification).
    async fn lookup_api_key(&self, hash: &TokenHash) -> StoreResult<Option<KeyLookup>>;
    /// Adds batched usage counts and last-used times.
    async fn record_api_key_usage(
        &self,
        usage: &[(ApiKeyId, u64, OffsetDateTime)],
    ) -> StoreResult<()>;
}

/// What a retention purge did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPurge {
    /// Records deleted.
    pub deleted: u64,
    /// The anchor the remaining chain now starts from (unchanged when nothing was deleted).
    pub anchor: Option<ChainAnchor>,
}

/// The audit log and its hash chain (see [`crate::audit::chain`]).
///
/// Every record written by any port method is linked into one chain: the adapter reads the
/// stored chain head, writes the new link and moves the head (see [`crate::audit::head`]) inside
/// the record's own transaction, serialised with
/// every other writer (also across processes), with the key given to [`AuditStore::install_audit_key`].
/// Until a key is installed, audited writes fail (closed).
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Gives the store the chain key. When the log has no chain yet (no linked record, no
    /// anchor, no head), records written before the chain existed are linked now; returns how
    /// many. Later unlinked records are never adopted: verification reports them. Under the chain
    /// lock, a missing head is initialised from the newest record (else the anchor, else genesis).
    async fn install_audit_key(&self, key: std::sync::Arc<AuditKey>) -> StoreResult<u64>;
    /// The wrapped audit key, if one was stored.
    async fn audit_key_wrap(&self) -> StoreResult<Option<WrappedDek>>;
    /// Stores `wrapped` unless a key is already stored; returns the stored one (first writer wins).
    async fn store_audit_key_wrap(&self, wrapped: &WrappedDek) -> StoreResult<WrappedDek>;
    /// Replaces the audit key's wrap if it is still `old` (compare-and-swap).
    async fn replace_audit_key_wrap(&self, old: &WrappedDek, new: &WrappedDek)
    -> StoreResult<bool>;
    /// Appends a record on its own (denials and failures, which change nothing else).
    async fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()>;
    /// Records matching `query`, newest first (by chain position).
    async fn query_audit(&self, query: &AuditQuery) -> StoreResult<Vec<StoredAuditEntry>>;
    /// Per-user counts of failed logins, reveals, denials and distinct IPs since `since`, for
    /// users with at least one such event.
    async fn audit_activity(&self, since: OffsetDateTime) -> StoreResult<Vec<ActivityCounts>>;
    /// Up to `limit` chain records after position `after_seq`, in chain order.
    async fn audit_chain_page(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<ChainRecord>>;
    /// Where the chain starts after purges.
    async fn audit_chain_anchor(&self) -> StoreResult<Option<ChainAnchor>>;
    /// The stored chain head (moved by every audit insert, in its transaction); `None` before the
    /// key is first installed, or if the row was deleted.
    async fn audit_chain_head(&self) -> StoreResult<Option<ChainHead>>;
    /// Ids of records outside the chain (no position), at most `limit`.
    async fn unlinked_audit_ids(&self, limit: u32) -> StoreResult<Vec<String>>;
    /// In one transaction: deletes at most `max_records` of the longest prefix of the chain whose
    /// records are all older than `cutoff`, moves the anchor (with its MAC) to the last deleted
    /// link, and appends `record` with the count in its metadata (`deleted`). Nothing is written
    /// when nothing is deleted.
    async fn purge_audit_before(
        &self,
        cutoff: OffsetDateTime,
        now: OffsetDateTime,
        max_records: u32,
        record: &AuditEntry,
    ) -> StoreResult<AuditPurge>;
    /// The owner's records about one resource, newest first.
    async fn audit_for_resource(
        &self,
        owner: &UserId,
        resource_type: &str,
        resource_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<AuditEntry>>;
}

/// How many DEKs are wrapped under one key version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DekCount {
    /// The key provider.
    pub provider: String,
    /// The key id.
    pub kek_id: String,
    /// The key version.
    pub kek_version: i64,
    /// How many credential versions use it.
    pub count: u64,
}

/// One wrapped DEK to re-wrap.
#[derive(Debug, Clone)]
pub struct WrapRecord {
    /// The credential.
    pub credential_id: CredentialId,
    /// The credential version.
    pub version: i64,
    /// The owner (the per-user KEK's context).
    pub owner: UserId,
    /// The DEK as wrapped now.
    pub wrapped: WrappedDek,
}

/// Bookkeeping for key rotation: which DEKs are wrapped under what, and re-wrapping them.
#[async_trait]
pub trait KeyWrapStore: Send + Sync {
    /// DEK counts per provider, key and version (deleted credentials included: their data is still sealed).
    async fn dek_inventory(&self) -> StoreResult<Vec<DekCount>>;
    /// Up to `limit` wraps not under `provider`'s `kek_id` at version `current` (another provider,
    /// key or version), in a stable order after `after`.
    async fn wraps_to_rewrap(
        &self,
        provider: &str,
        kek_id: &str,
        current: i64,
        after: Option<&(CredentialId, i64)>,
        limit: u32,
    ) -> StoreResult<Vec<WrapRecord>>;
    /// Replaces one wrap if it is still the one read (compare-and-swap); `false` if it changed meanwhile.
    async fn replace_wrap(&self, old: &WrapRecord, new: &WrappedDek) -> StoreResult<bool>;
}

/// What a sealed service key is for: each purpose is its own versioned ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyPurpose {
    /// Key-encryption keys: wrapped by the configured key provider, they wrap every DEK.
    Kek,
    /// Access-token signing keys: wrapped by the KEKs.
    Jwt,
}

impl KeyPurpose {
    /// The name stored in the `purpose` column.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyPurpose::Kek => "kek",
            KeyPurpose::Jwt => "jwt",
        }
    }
}

/// One version of a sealed service key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedKey {
    /// The version (1, 2, …): unique per purpose.
    pub version: i64,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// The key, wrapped; `None` once retired (its material is gone).
    pub wrapped: Option<WrappedDek>,
}

/// Service keys kept in the database, sealed: the KEK ring and the JWT signing keys. Inserting a
/// version that exists is refused, which is how instances agree on who created a key.
#[async_trait]
pub trait SealedKeyStore: Send + Sync {
    /// Every version of `purpose`, oldest first.
    async fn sealed_keys(&self, purpose: KeyPurpose) -> StoreResult<Vec<SealedKey>>;
    /// Stores a new version; `false` when that version exists already (someone else won).
    async fn insert_sealed_key(&self, purpose: KeyPurpose, key: &SealedKey) -> StoreResult<bool>;
    /// Replaces a version's wrap if it is still `old` (compare-and-swap).
    async fn replace_sealed_key_wrap(
        &self,
        purpose: KeyPurpose,
        version: i64,
        old: &WrappedDek,
        new: &WrappedDek,
    ) -> StoreResult<bool>;
    /// Destroys a version's material (the row stays, so the version number is never reused).
    async fn retire_sealed_key(&self, purpose: KeyPurpose, version: i64) -> StoreResult<bool>;
}

/// Agent tokens (hashes only) and their use counts.
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// Stores a token while its parent (key or session) is live, checked under a lock the
    /// parent's revocation also takes, and while its owner holds fewer than
    /// [`MAX_LIVE_TOKENS`](crate::tokens::MAX_LIVE_TOKENS) live tokens (counted under a lock on
    /// the owner's row, so concurrent mints cannot pass it); its expiry is capped at the parent's.
    async fn insert_token(
        &self,
        token: &AgentToken,
        secret_hash: &TokenHash,
        audit: &AuditEntry,
    ) -> StoreResult<TokenInserted>;
    /// A page of the owner's live tokens at `now` (not revoked, not expired, parent live), newest
    /// first: at most `page.limit`, strictly after `page.after`.
    async fn list_tokens(
        &self,
        owner: &UserId,
        now: OffsetDateTime,
        page: &PageRequest<TokenId>,
    ) -> StoreResult<Vec<AgentToken>>;
    /// One token of the owner (revoked and expired ones too).
    async fn find_token(&self, owner: &UserId, id: &TokenId) -> StoreResult<Option<AgentToken>>;
    /// Revokes a live token; `false` when there was none.
    async fn revoke_token(
        &self,
        owner: &UserId,
        id: &TokenId,
        now: OffsetDateTime,
        audit: &AuditEntry,
    ) -> StoreResult<bool>;
    /// What authentication needs for a presented token's hash, with its parent's state at `now`.
    async fn lookup_token(
        &self,
        hash: &TokenHash,
        now: OffsetDateTime,
    ) -> StoreResult<Option<TokenLookup>>;
    /// Counts one use if fewer than `max_uses` were counted (one atomic statement); `false` when
    /// the uses are spent.
    async fn consume_token_use(&self, id: &TokenId, max_uses: u32) -> StoreResult<bool>;
    /// Deletes tokens that expired before `now`; how many.
    async fn purge_expired_tokens(&self, now: OffsetDateTime) -> StoreResult<u64>;
}

/// Everything the service stores: the port the composition root holds as `Arc<dyn Store>`.
#[async_trait]
pub trait Store:
    UserStore
    + SessionStore
    + CredentialStore
    + ApiKeyStore
    + TokenStore
    + AuditStore
    + KeyWrapStore
    + SealedKeyStore
    + SchemaMigrator
    + Debug
{
    /// A cheap round trip for readiness checks.
    async fn ping(&self) -> StoreResult<()>;
    /// The backend's name, for logs and health output (`sqlite`, `postgres`).
    fn backend(&self) -> &'static str;
    /// Waits for in-flight writes and closes every connection (at shutdown).
    async fn close(&self);
}
