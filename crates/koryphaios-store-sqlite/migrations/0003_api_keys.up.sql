-- API keys (the public handle and its policy) and their secrets (SHA-256 only). A key has one
-- secret, or two for the grace period after a roll.
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    tier         TEXT NOT NULL CHECK (tier IN ('free', 'premium', 'pro', 'enterprise')),
    metadata     TEXT NOT NULL DEFAULT '{}',
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    revoked_at   INTEGER,
    last_used_at INTEGER,
    usage_count  INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX api_keys_by_owner ON api_keys (user_id, created_at);

CREATE TABLE api_key_secrets (
    key_hash   TEXT PRIMARY KEY,
    key_id     TEXT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER
) STRICT;
CREATE INDEX api_key_secrets_by_key ON api_key_secrets (key_id);
