#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: starts (or installs) the services the tests
# need, runs every test of the workspace (SQLite, plus the PostgreSQL store's own suite), then
# runs the HTTP suite a second time with every instance on PostgreSQL. One build serves both
# passes. The remote KMS providers are built in (feature `remote-kms`): the `aws` tests run against
# moto_server, the others against in-process fakes. Last, scripts/check_deploy.sh checks deploy/
# with nginx, promtool and the compose schema, and runs the two-instance topology on that build's
# target/debug/koryphaios. Between the two, scripts/schemathesis.sh fuzzes that same binary against
# its OpenAPI document, and scripts/typescript_client.sh runs the TypeScript client's suite (Node)
# against it. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/services.sh
export KORYPHAIOS_TEST_REDIS_URL="${KORYPHAIOS_TEST_REDIS_URL:-redis://127.0.0.1:6379}"
export KORYPHAIOS_TEST_POSTGRES_URL="${KORYPHAIOS_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export KORYPHAIOS_TEST_AWS_ENDPOINT="${KORYPHAIOS_TEST_AWS_ENDPOINT:-http://127.0.0.1:5999}"
# The same feature set for both passes, so pass 2 reuses pass 1's build.
features=(--features koryphaios-server/remote-kms)

# Test databases of earlier runs (each test creates its own `kor_test_…` database).
psql "$KORYPHAIOS_TEST_POSTGRES_URL" -Atqc \
    "SELECT datname FROM pg_database WHERE datname LIKE 'kor\_test\_%'" 2>/dev/null |
    while read -r name; do
        psql "$KORYPHAIOS_TEST_POSTGRES_URL" -qc "DROP DATABASE IF EXISTS \"$name\"" >/dev/null 2>&1 || true
    done || true

echo "test: pass 1 of 2: the workspace (HTTP suite on SQLite)"
cargo test --workspace --locked "${features[@]}" "$@"
echo "test: pass 2 of 2: the HTTP suite on PostgreSQL"
# `--workspace` keeps the feature set of pass 1, so its test binary is reused, not rebuilt.
KORYPHAIOS_TEST_DATABASE=postgres cargo test --workspace --locked "${features[@]}" --test it "$@"
echo "test: the API contract, fuzzed by Schemathesis (scripts/schemathesis.sh)"
bash scripts/schemathesis.sh
echo "test: the TypeScript client against the same binary (scripts/typescript_client.sh)"
bash scripts/typescript_client.sh
echo "test: deployment files and the two-instance topology (scripts/check_deploy.sh)"
bash scripts/check_deploy.sh
