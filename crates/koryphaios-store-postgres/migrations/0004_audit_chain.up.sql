-- The audit hash chain (SPEC §5): each record's position, its predecessor's hash and its own
-- HMAC; the anchor retention leaves behind (with its own HMAC); and the wrapped key the chain is computed with.
-- Records written before this migration are linked when the service installs the key.
ALTER TABLE audit_events ADD COLUMN seq BIGINT;
ALTER TABLE audit_events ADD COLUMN prev_hash BYTEA;
ALTER TABLE audit_events ADD COLUMN hash BYTEA;
CREATE UNIQUE INDEX audit_events_by_seq ON audit_events (seq);
CREATE INDEX audit_events_by_user_seq ON audit_events (user_id, seq);
CREATE INDEX audit_events_by_action_seq ON audit_events (action, seq);
CREATE INDEX audit_events_by_time ON audit_events (occurred_at);

CREATE TABLE audit_chain_anchor (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    seq       BIGINT NOT NULL,
    hash      BYTEA NOT NULL,
    purged_at BIGINT NOT NULL,
    mac       BYTEA NOT NULL
);

CREATE TABLE audit_key (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    wrapped_key  BYTEA NOT NULL,
    kms_provider TEXT COLLATE "C" NOT NULL,
    kek_id       TEXT COLLATE "C" NOT NULL,
    kek_version  BIGINT NOT NULL,
    created_at   BIGINT NOT NULL
);
