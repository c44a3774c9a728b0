-- Service keys kept in the database, sealed (ADR 0011): the key-encryption keys (wrapped by the
-- configured key provider) and the access-token signing keys (wrapped by a KEK). A retired
-- version keeps its row without material, so its number is never handed out again.
CREATE TABLE sealed_keys (
    purpose      TEXT NOT NULL CHECK (purpose IN ('kek', 'jwt')),
    version      INTEGER NOT NULL CHECK (version > 0),
    created_at   INTEGER NOT NULL,
    wrapped_key  BLOB,
    kms_provider TEXT,
    kek_id       TEXT,
    kek_version  INTEGER,
    retired_at   INTEGER,
    PRIMARY KEY (purpose, version),
    CHECK ((wrapped_key IS NULL) = (retired_at IS NOT NULL))
) STRICT;
