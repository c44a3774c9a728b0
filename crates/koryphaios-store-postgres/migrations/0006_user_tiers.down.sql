DROP INDEX api_keys_by_parent;
ALTER TABLE api_keys DROP COLUMN parent_id;
ALTER TABLE users DROP COLUMN last_login_at;
ALTER TABLE users DROP COLUMN disabled_at;
ALTER TABLE users DROP COLUMN tier;
