DROP TABLE revoked_access_tokens;
DROP TABLE refresh_tokens;
DROP TABLE session_families;
DROP TABLE users;
