-- Per-user tiers (every session and key of a user shares the user's allowance), disabled users,
-- the last login, and keys created by keys (a child never outlives or survives its parent).
-- Existing users get the free tier and admins the top one; an admin raises the others.
ALTER TABLE users ADD COLUMN tier TEXT NOT NULL DEFAULT 'free'
    CHECK (tier IN ('free', 'premium', 'pro', 'enterprise'));
ALTER TABLE users ADD COLUMN disabled_at INTEGER;
ALTER TABLE users ADD COLUMN last_login_at INTEGER;
UPDATE users SET tier = 'enterprise' WHERE role = 'admin';

-- No REFERENCES: SQLite cannot drop a foreign-key column, and keys are never deleted on their
-- own (only with their owner, who owns the whole tree).
ALTER TABLE api_keys ADD COLUMN parent_id TEXT;
CREATE INDEX api_keys_by_parent ON api_keys (parent_id) WHERE parent_id IS NOT NULL;
