#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: starts (or installs) the services the tests
# need, then runs every test of the workspace. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/services.sh
export KORYPHAIOS_TEST_REDIS_URL="${KORYPHAIOS_TEST_REDIS_URL:-redis://127.0.0.1:6379}"
export KORYPHAIOS_TEST_DATABASE_URL="${KORYPHAIOS_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

cargo test --workspace --locked "$@"
