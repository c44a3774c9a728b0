-- Agent tokens (ADR 0018): short-lived, hashed at rest, tied to the key or session that minted
-- them (ON DELETE CASCADE: they never outlive it). `uses` counts authenticated requests when
-- `max_uses` is set and no Redis counts them. API keys gain networks and an own per-minute limit;
-- audit records are found by the run id in their hashed metadata through an expression index (a
-- stored generated column would rewrite the whole table under an exclusive lock).
CREATE TABLE agent_tokens (
    id               TEXT COLLATE "C" PRIMARY KEY,
    user_id          TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash       TEXT COLLATE "C" NOT NULL UNIQUE,
    name             TEXT,
    prefix           TEXT NOT NULL,
    scopes           TEXT NOT NULL,
    tier             TEXT NOT NULL CHECK (tier IN ('free', 'premium', 'pro', 'enterprise')),
    credential_ids   TEXT,
    max_uses         BIGINT CHECK (max_uses > 0),
    uses             BIGINT NOT NULL DEFAULT 0,
    allowed_cidrs    TEXT,
    run_id           TEXT,
    parent_key_id    TEXT COLLATE "C" REFERENCES api_keys (id) ON DELETE CASCADE,
    parent_family_id TEXT COLLATE "C" REFERENCES session_families (id) ON DELETE CASCADE,
    created_at       BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    revoked_at       BIGINT,
    CHECK ((parent_key_id IS NULL) <> (parent_family_id IS NULL))
);
CREATE INDEX agent_tokens_by_owner ON agent_tokens (user_id, created_at);
CREATE INDEX agent_tokens_by_expiry ON agent_tokens (expires_at);
CREATE INDEX agent_tokens_by_parent_key ON agent_tokens (parent_key_id);
CREATE INDEX agent_tokens_by_parent_family ON agent_tokens (parent_family_id);

ALTER TABLE api_keys ADD COLUMN allowed_cidrs TEXT;
ALTER TABLE api_keys ADD COLUMN rate_limit_per_minute BIGINT CHECK (rate_limit_per_minute > 0);

CREATE INDEX audit_events_by_run ON audit_events ((metadata::jsonb ->> 'runId'), occurred_at)
    WHERE (metadata::jsonb ->> 'runId') IS NOT NULL;
