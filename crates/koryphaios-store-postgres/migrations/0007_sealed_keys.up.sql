-- Service keys kept in the database, sealed (ADR 0011): the key-encryption keys (wrapped by the
-- configured key provider) and the access-token signing keys (wrapped by a KEK). A retired
-- version keeps its row without material, so its number is never handed out again.
CREATE TABLE sealed_keys (
    purpose      TEXT COLLATE "C" NOT NULL CHECK (purpose IN ('kek', 'jwt')),
    version      BIGINT NOT NULL CHECK (version > 0),
    created_at   BIGINT NOT NULL,
    wrapped_key  BYTEA,
    kms_provider TEXT COLLATE "C",
    kek_id       TEXT COLLATE "C",
    kek_version  BIGINT,
    retired_at   BIGINT,
    PRIMARY KEY (purpose, version),
    CHECK ((wrapped_key IS NULL) = (retired_at IS NOT NULL))
);
