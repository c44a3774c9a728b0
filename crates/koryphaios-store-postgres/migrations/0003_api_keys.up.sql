-- API keys (the public handle and its policy) and their secrets (SHA-256 only). A key has one
-- secret, or two for the grace period after a roll.
CREATE TABLE api_keys (
    id           TEXT COLLATE "C" PRIMARY KEY,
    user_id      TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    tier         TEXT NOT NULL CHECK (tier IN ('free', 'premium', 'pro', 'enterprise')),
    metadata     TEXT NOT NULL DEFAULT '{}',
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    revoked_at   BIGINT,
    last_used_at BIGINT,
    usage_count  BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX api_keys_by_owner ON api_keys (user_id, created_at);

CREATE TABLE api_key_secrets (
    key_hash   TEXT COLLATE "C" PRIMARY KEY,
    key_id     TEXT COLLATE "C" NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT
);
CREATE INDEX api_key_secrets_by_key ON api_key_secrets (key_id);
