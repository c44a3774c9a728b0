#!/usr/bin/env bash
# Fuzzes the running service against its own OpenAPI document with Schemathesis (issue 13).
#
# Starts `koryphaios serve` (the already-built target/debug/koryphaios, no second build) on a free
# port with a temporary data directory and rate limiting off, registers the first user (the
# admin), logs in and issues an API key with every scope, then runs `schemathesis run` against
# /openapi.json with that key: the examples, coverage and fuzzing phases, a fixed seed and a
# bounded number of examples per operation, and the checks
#   not_a_server_error, status_code_conformance, content_type_conformance,
#   response_schema_conformance, negative_data_rejection.
# Any failure exits non-zero. Schemathesis is installed from PyPI, pinned, into a virtualenv under
# target/schemathesis the first time (with Debian's python3-venv when venv is missing).
#
# Environment: KORYPHAIOS_BIN (default target/debug/koryphaios), SCHEMATHESIS_MAX_EXAMPLES
# (default 100), SCHEMATHESIS_SEED (default 1313), SCHEMATHESIS_WORKERS (default 2),
# SCHEMATHESIS_TIMEOUT_SECS (a hard cap on the whole run, default 900). Extra arguments go to
# `schemathesis run`. The JUnit report is written to target/schemathesis-report/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SCHEMATHESIS_VERSION=4.32.5
BIN=${KORYPHAIOS_BIN:-$ROOT/target/debug/koryphaios}
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-100}
SEED=${SCHEMATHESIS_SEED:-1313}
# One worker: Debian 12's Python 3.11 raises `SystemError: AST constructor recursion depth
# mismatch` when Hypothesis parses lambdas in two threads at once (CPython gh-106905).
WORKERS=${SCHEMATHESIS_WORKERS:-1}
TIMEOUT_SECS=${SCHEMATHESIS_TIMEOUT_SECS:-900}
venv=$ROOT/target/schemathesis
report_dir=$ROOT/target/schemathesis-report
started_at=$(date +%s)

say() { printf 'schemathesis: %s\n' "$*"; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/kor-schemathesis.XXXXXX")
server_pid=""
upstream_pid=""
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  set +e
  [ -n "$upstream_pid" ] && kill "$upstream_pid" 2>/dev/null
  if [ -n "$server_pid" ]; then
    kill -TERM "$server_pid" 2>/dev/null
    for _ in $(seq 1 50); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$server_pid" 2>/dev/null
  fi
  if [ "$status" -ne 0 ] && [ -s "$tmp/server.log" ]; then
    printf -- '--- koryphaios (last 40 lines of its output) ---\n' >&2
    tail -n 40 "$tmp/server.log" >&2
  fi
  rm -rf "$tmp"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
  printf 'schemathesis: FAILED: %s\n' "$*" >&2
  exit 1
}

[ -x "$BIN" ] || fail "$BIN is missing: run cargo test (or cargo build) first"
command -v python3 >/dev/null 2>&1 || fail "python3 is needed to install schemathesis"
command -v curl >/dev/null 2>&1 || fail "curl is needed"

# 1. Schemathesis, pinned, in a virtualenv of its own.
if [ "$("$venv/bin/schemathesis" --version 2>/dev/null | awk '{print $NF}')" != "$SCHEMATHESIS_VERSION" ]; then
  say "installing schemathesis $SCHEMATHESIS_VERSION into target/schemathesis"
  rm -rf "$venv"
  if ! python3 -m venv "$venv" >"$tmp/venv.log" 2>&1; then
    # Debian ships venv separately (python3-venv).
    command -v apt-get >/dev/null 2>&1 || { cat "$tmp/venv.log" >&2; fail "python3 -m venv (install python3-venv)"; }
    say "installing python3-venv"
    rm -rf "$venv"
    { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv python3-pip; } \
      >>"$tmp/venv.log" 2>&1 || { cat "$tmp/venv.log" >&2; fail "apt-get install python3-venv"; }
    python3 -m venv "$venv" >>"$tmp/venv.log" 2>&1 || { cat "$tmp/venv.log" >&2; fail "python3 -m venv"; }
  fi
  "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" \
    >>"$tmp/venv.log" 2>&1 || { cat "$tmp/venv.log" >&2; rm -rf "$venv"; fail "pip install schemathesis"; }
fi

# 2. The service: a free port, a fresh data directory, no rate limits, nothing from the caller's
# KORYPHAIOS_* environment.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
unset_vars=()
while IFS= read -r name; do unset_vars+=(-u "$name"); done < <(compgen -e | grep '^KORYPHAIOS_' || true)
# The proxy must never reach a real provider from the fuzzer: every provider's base URL (the table
# in src/proxy/providers.rs) points at a local stand-in that answers any call 200 with a small JSON
# body (scripts/stub_provider.py), so proxied calls exercise the whole path and answer 2xx.
upstream_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 "$ROOT/scripts/stub_provider.py" "$upstream_port" >"$tmp/upstream.log" 2>&1 &
upstream_pid=$!
for _ in $(seq 1 50); do
  curl -fsS "http://127.0.0.1:$upstream_port/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
provider_urls=()
for provider in OPENAI ANTHROPIC GOOGLE XAI OPENROUTER GROQ MISTRAL DEEPSEEK TOGETHERAI FIREWORKS \
  CEREBRAS HUGGINGFACE COHERE PERPLEXITY REPLICATE AZURE OLLAMA CUSTOM; do
  provider_urls+=("KORYPHAIOS_PROVIDER_${provider}_BASE_URL=http://127.0.0.1:$upstream_port/$provider")
done
env "${unset_vars[@]}" "${provider_urls[@]}" \
  KORYPHAIOS_DATA_DIR="$tmp/data" \
  KORYPHAIOS_HOST=127.0.0.1 \
  KORYPHAIOS_PORT="$port" \
  KORYPHAIOS_RATE_LIMIT_ENABLED=false \
  KORYPHAIOS_LOG_LEVEL=warn \
  "$BIN" serve >"$tmp/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  curl -fsS "$base/health" >/dev/null 2>&1 && break
  kill -0 "$server_pid" 2>/dev/null || fail "koryphaios serve exited"
  sleep 0.1
done
curl -fsS "$base/health" >/dev/null 2>&1 || fail "koryphaios did not answer /health within 10 s"

# 3. The admin (the first user) and an API key with every scope.
json_field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
credentials='{"username":"schemathesis","password":"fuzzing the contract, 2026"}'
curl -fsS -X POST "$base/api/auth/register" -H 'content-type: application/json' -d "$credentials" \
  >/dev/null || fail "register the admin"
access=$(curl -fsS -X POST "$base/api/auth/login" -H 'content-type: application/json' -d "$credentials" |
  json_field accessToken) || fail "log in"
key=$(curl -fsS -X POST "$base/api/v1/keys" -H "Authorization: Bearer $access" \
  -H 'content-type: application/json' \
  -d '{"name":"schemathesis","scopes":["admin","write","read","provider:*"]}' |
  json_field key) || fail "create the API key"

# 4. The run.
say "schemathesis $SCHEMATHESIS_VERSION against $base/openapi.json (seed $SEED, at most $MAX_EXAMPLES examples per operation)"
rm -rf "$report_dir"
status=0
# From the temporary directory: Schemathesis keeps a crash cache in its working directory.
cd "$tmp"
timeout "$TIMEOUT_SECS" "$venv/bin/schemathesis" --config-file "$ROOT/scripts/schemathesis.toml" \
  run "$base/openapi.json" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,negative_data_rejection \
  --phases examples,coverage,fuzzing \
  --seed "$SEED" \
  --max-examples "$MAX_EXAMPLES" \
  --workers "$WORKERS" \
  --request-timeout 10 \
  --generation-database none \
  --header "X-API-Key: $key" \
  --report junit --report-dir "$report_dir" \
  --no-color \
  "$@" || status=$?
elapsed=$(($(date +%s) - started_at))
if [ "$status" -ne 0 ]; then
  [ "$status" -eq 124 ] && say "the run took longer than $TIMEOUT_SECS s"
  fail "schemathesis exited with $status after ${elapsed} s (report: target/schemathesis-report/)"
fi
say "0 failures in ${elapsed} s"
