-- Agent tokens (ADR 0018): short-lived, hashed at rest, tied to the key or session that minted
-- them (ON DELETE CASCADE: they never outlive it). `uses` counts authenticated requests when
-- `max_uses` is set and no Redis counts them. API keys gain networks and an own per-minute limit;
-- audit records get their run id as a generated column of the hashed metadata (filterable,
-- covered by the chain).
CREATE TABLE agent_tokens (
    id               TEXT PRIMARY KEY,
    user_id          TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash       TEXT NOT NULL UNIQUE,
    name             TEXT,
    prefix           TEXT NOT NULL,
    scopes           TEXT NOT NULL,
    tier             TEXT NOT NULL CHECK (tier IN ('free', 'premium', 'pro', 'enterprise')),
    credential_ids   TEXT,
    max_uses         INTEGER CHECK (max_uses > 0),
    uses             INTEGER NOT NULL DEFAULT 0,
    allowed_cidrs    TEXT,
    run_id           TEXT,
    parent_key_id    TEXT REFERENCES api_keys (id) ON DELETE CASCADE,
    parent_family_id TEXT REFERENCES session_families (id) ON DELETE CASCADE,
    created_at       INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    revoked_at       INTEGER,
    CHECK ((parent_key_id IS NULL) <> (parent_family_id IS NULL))
) STRICT;
CREATE INDEX agent_tokens_by_owner ON agent_tokens (user_id, created_at);
CREATE INDEX agent_tokens_by_expiry ON agent_tokens (expires_at);
CREATE INDEX agent_tokens_by_parent_key ON agent_tokens (parent_key_id);
CREATE INDEX agent_tokens_by_parent_family ON agent_tokens (parent_family_id);

ALTER TABLE api_keys ADD COLUMN allowed_cidrs TEXT;
ALTER TABLE api_keys ADD COLUMN rate_limit_per_minute INTEGER CHECK (rate_limit_per_minute > 0);

ALTER TABLE audit_events ADD COLUMN run_id TEXT
    GENERATED ALWAYS AS (json_extract(metadata, '$.runId')) VIRTUAL;
CREATE INDEX audit_events_by_run ON audit_events (run_id, occurred_at) WHERE run_id IS NOT NULL;
