DROP TABLE audit_key;
DROP TABLE audit_chain_anchor;
DROP INDEX audit_events_by_time;
DROP INDEX audit_events_by_action_seq;
DROP INDEX audit_events_by_user_seq;
DROP INDEX audit_events_by_seq;
ALTER TABLE audit_events DROP COLUMN hash;
ALTER TABLE audit_events DROP COLUMN prev_hash;
ALTER TABLE audit_events DROP COLUMN seq;
