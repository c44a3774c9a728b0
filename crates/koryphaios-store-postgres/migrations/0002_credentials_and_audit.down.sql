DROP TABLE audit_events;
DROP TABLE credential_versions;
DROP TABLE credentials;
