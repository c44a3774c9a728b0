-- Refused while the table holds keys: they wrap every data key, the audit key and the signing
-- keys, so dropping them would make every credential unreadable (ADR 0011).
CREATE TEMP TABLE migration_0007_guard (
    sealed_keys_present INTEGER NOT NULL CHECK (sealed_keys_present = 0)
);
INSERT INTO migration_0007_guard SELECT COUNT(*) FROM sealed_keys;
DROP TABLE migration_0007_guard;
DROP TABLE sealed_keys;
