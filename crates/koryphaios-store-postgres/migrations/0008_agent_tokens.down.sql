DROP INDEX audit_events_by_run;
ALTER TABLE api_keys DROP COLUMN rate_limit_per_minute;
ALTER TABLE api_keys DROP COLUMN allowed_cidrs;
DROP TABLE agent_tokens;
