-- Stored provider credentials (metadata), their sealed versions (envelope per version), and the
-- audit log. Instants are Unix milliseconds (BIGINT); JSON metadata is TEXT, as in SQLite.
CREATE TABLE credentials (
    id              TEXT COLLATE "C" PRIMARY KEY,
    user_id         TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider        TEXT COLLATE "C" NOT NULL,
    kind            TEXT NOT NULL,
    metadata        TEXT NOT NULL DEFAULT '{}',
    current_version BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    expires_at      BIGINT,
    last_used_at    BIGINT,
    deleted_at      BIGINT,
    deleted_reason  TEXT
);
CREATE INDEX credentials_by_owner ON credentials (user_id, provider, created_at);

CREATE TABLE credential_versions (
    credential_id TEXT COLLATE "C" NOT NULL REFERENCES credentials (id) ON DELETE CASCADE,
    version       BIGINT NOT NULL,
    sealed        BYTEA NOT NULL,
    wrapped_dek   BYTEA NOT NULL,
    kms_provider  TEXT COLLATE "C" NOT NULL,
    kek_id        TEXT COLLATE "C" NOT NULL,
    kek_version   BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (credential_id, version)
);
CREATE INDEX credential_versions_by_kek ON credential_versions (kms_provider, kek_version);

CREATE TABLE audit_events (
    id            TEXT COLLATE "C" PRIMARY KEY,
    occurred_at   BIGINT NOT NULL,
    user_id       TEXT COLLATE "C",
    actor         TEXT NOT NULL,
    action        TEXT NOT NULL,
    resource_type TEXT COLLATE "C",
    resource_id   TEXT COLLATE "C",
    client_ip     TEXT,
    user_agent    TEXT,
    request_id    TEXT,
    success       BOOLEAN NOT NULL,
    reason        TEXT,
    metadata      TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_by_resource ON audit_events (resource_type, resource_id, occurred_at);
CREATE INDEX audit_events_by_user ON audit_events (user_id, occurred_at);
