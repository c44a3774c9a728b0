-- Stored provider credentials (metadata), their sealed versions (envelope per version), and the
-- audit log. Instants are Unix milliseconds.
CREATE TABLE credentials (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider        TEXT NOT NULL,
    kind            TEXT NOT NULL,
    metadata        TEXT NOT NULL DEFAULT '{}',
    current_version INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    expires_at      INTEGER,
    last_used_at    INTEGER,
    deleted_at      INTEGER,
    deleted_reason  TEXT
) STRICT;
CREATE INDEX credentials_by_owner ON credentials (user_id, provider, created_at);

CREATE TABLE credential_versions (
    credential_id TEXT NOT NULL REFERENCES credentials (id) ON DELETE CASCADE,
    version       INTEGER NOT NULL,
    sealed        BLOB NOT NULL,
    wrapped_dek   BLOB NOT NULL,
    kms_provider  TEXT NOT NULL,
    kek_id        TEXT NOT NULL,
    kek_version   INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (credential_id, version)
) STRICT;
CREATE INDEX credential_versions_by_kek ON credential_versions (kms_provider, kek_version);

CREATE TABLE audit_events (
    id            TEXT PRIMARY KEY,
    occurred_at   INTEGER NOT NULL,
    user_id       TEXT,
    actor         TEXT NOT NULL,
    action        TEXT NOT NULL,
    resource_type TEXT,
    resource_id   TEXT,
    client_ip     TEXT,
    user_agent    TEXT,
    request_id    TEXT,
    success       INTEGER NOT NULL,
    reason        TEXT,
    metadata      TEXT NOT NULL DEFAULT '{}'
) STRICT;
CREATE INDEX audit_events_by_resource ON audit_events (resource_type, resource_id, occurred_at);
CREATE INDEX audit_events_by_user ON audit_events (user_id, occurred_at);
