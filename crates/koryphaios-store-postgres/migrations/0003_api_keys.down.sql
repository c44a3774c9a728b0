DROP TABLE api_key_secrets;
DROP TABLE api_keys;
