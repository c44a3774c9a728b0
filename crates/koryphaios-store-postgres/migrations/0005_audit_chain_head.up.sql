-- The audit chain's head (ADR 0007): the newest link's position, hash and time, with an HMAC under
-- the audit key. Every audit insert links after it and moves it in the same transaction, so
-- deleting the newest records no longer goes unnoticed. Left empty here: the service initialises
-- it from the newest record under the chain lock when it installs the key (the MAC needs the key).
CREATE TABLE audit_chain_head (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    seq         BIGINT NOT NULL,
    hash        BYTEA NOT NULL,
    occurred_at BIGINT NOT NULL,
    mac         BYTEA NOT NULL
);
