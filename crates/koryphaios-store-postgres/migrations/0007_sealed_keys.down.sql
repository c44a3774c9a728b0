-- Refused while the table holds keys: they wrap every data key, the audit key and the signing
-- keys, so dropping them would make every credential unreadable (ADR 0011).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM sealed_keys) THEN
        RAISE EXCEPTION 'sealed_keys holds the key-encryption and signing keys: reverting migration 7 would make every credential unreadable (ADR 0011)';
    END IF;
END $$;
DROP TABLE sealed_keys;
