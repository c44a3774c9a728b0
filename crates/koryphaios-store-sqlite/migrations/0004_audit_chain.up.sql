-- The audit hash chain (SPEC §5): each record's position, its predecessor's hash and its own
-- HMAC; the anchor retention leaves behind (with its own HMAC); and the wrapped key the chain is computed with.
-- Records written before this migration are linked when the service installs the key.
ALTER TABLE audit_events ADD COLUMN seq INTEGER;
ALTER TABLE audit_events ADD COLUMN prev_hash BLOB;
ALTER TABLE audit_events ADD COLUMN hash BLOB;
CREATE UNIQUE INDEX audit_events_by_seq ON audit_events (seq);
CREATE INDEX audit_events_by_user_seq ON audit_events (user_id, seq);
CREATE INDEX audit_events_by_action_seq ON audit_events (action, seq);
CREATE INDEX audit_events_by_time ON audit_events (occurred_at);

CREATE TABLE audit_chain_anchor (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    seq       INTEGER NOT NULL,
    hash      BLOB NOT NULL,
    purged_at INTEGER NOT NULL,
    mac       BLOB NOT NULL
) STRICT;

CREATE TABLE audit_key (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    wrapped_key  BLOB NOT NULL,
    kms_provider TEXT NOT NULL,
    kek_id       TEXT NOT NULL,
    kek_version  INTEGER NOT NULL,
    created_at   INTEGER NOT NULL
) STRICT;
