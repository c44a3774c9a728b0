#!/usr/bin/env bash
# Load test: builds the release binary, starts it on a temporary data dir on 127.0.0.1, runs wrk
# against named scenarios for a bounded time, and prints requests/s, p50/p99 latency and the
# server's peak RSS per scenario. The `startup` scenario measures process start → /health 200.
#
#   scripts/loadtest.sh                          # every scenario, 10 s each, 64 connections
#   scripts/loadtest.sh -d 5 -c 32 health me     # chosen scenarios and settings
#
# The rate limiter is on, in memory, with limits high enough that requests are admitted (the cost
# measured is the limiter's decision, not the 429 path; in-flight logins count against the login
# failure limit until verified, so that is raised too). LIMITER=off|memory|redis chooses; redis
# uses REDIS_URL (default redis://127.0.0.1:6379). The key provider is the environment's
# (KORYPHAIOS_KMS_PROVIDER and its settings; local by default): e.g. aws against moto_server with
# KORYPHAIOS_KMS_PROVIDER=aws AWS_KMS_KEY_ID=… AWS_REGION=us-east-1 AWS_ENDPOINT_URL_KMS=http://127.0.0.1:5999.
#
# The server logs at KORYPHAIOS_LOG_LEVEL (default warn; `info` adds an access log line per request).
# KORYPHAIOS_BIN=/path/to/koryphaios uses that binary instead of building this tree (otherwise it is
# built into ${CARGO_TARGET_DIR:-target}/release).
#
# BASELINE_BIN=/path/to/bare_health (the workspace's `bare_health` example, see scripts/bench.sh)
# starts that bare axum server beside ours and measures its /health with the same wrk settings just
# before each scenario, printing its requests/s and our ratio to it (baseline, scenario, baseline,
# scenario, …). RESULTS=FILE appends one tab-separated line per scenario (name, requests/s, p50,
# p99, peak RSS in MB, baseline requests/s, ratio, non-2xx responses) for scripts/bench.sh.
#
# Scenarios: startup, health, me (an authenticated GET /api/auth/me with a session token),
# apikey (the same read authenticated with an API key in X-API-Key), metrics (GET /metrics),
# list (GET /api/v1/credentials with the API key), keys (GET /api/v1/keys with the API key),
# login (POST /api/auth/login: argon2 verification + session issue, at LOGIN_CONNECTIONS, default 16),
# reveal (POST /api/v1/credentials/{id}/reveal: unwrap + open + audit record), create (POST
# /api/v1/credentials: seal + wrap + insert + audit record, SQLite), proxy (the credential proxy:
# first `direct`, GET /health of a local upstream, then `proxy`, the same call through
# /api/v1/proxy/openai/health with the API key; the upstream is the bare_health example, given as
# UPSTREAM_BIN or BASELINE_BIN).
set -euo pipefail
cd "$(dirname "$0")/.."

duration=10 connections=64 threads=2
while getopts "d:c:t:" opt; do
  case "$opt" in
    d) duration="$OPTARG" ;; c) connections="$OPTARG" ;; t) threads="$OPTARG" ;;
    *) sed -n '2,10p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(startup health me apikey reveal create)

if ! command -v wrk >/dev/null 2>&1; then
  echo "installing wrk" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
# KORYPHAIOS_BIN runs a binary built elsewhere (comparing two commits in one run); otherwise this
# tree's release build.
if [ -n "${KORYPHAIOS_BIN:-}" ]; then
  binary="$KORYPHAIOS_BIN"
else
  cargo build --release --locked -p koryphaios-server --features remote-kms >&2
  binary="${CARGO_TARGET_DIR:-$PWD/target}/release/koryphaios"
fi
baseline="${BASELINE_BIN:-}"
results="${RESULTS:-}"
login_connections="${LOGIN_CONNECTIONS:-16}"

work=$(mktemp -d)
server_pid="" baseline_pid="" upstream_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null
  [ -n "$baseline_pid" ] && kill "$baseline_pid" 2>/dev/null
  [ -n "$upstream_pid" ] && kill "$upstream_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
base="http://127.0.0.1:$port"
export KORYPHAIOS_DATA_DIR="$work/data" KORYPHAIOS_PORT="$port" KORYPHAIOS_LOG_LEVEL="${KORYPHAIOS_LOG_LEVEL:-warn}"
high=10000000
export KORYPHAIOS_RATE_LIMIT_IP_PER_MINUTE=$high KORYPHAIOS_RATE_LIMIT_AUTH_PER_MINUTE=$high \
  KORYPHAIOS_RATE_LIMIT_TIER_PREMIUM=$high KORYPHAIOS_RATE_LIMIT_TIER_ENTERPRISE=$high \
  KORYPHAIOS_RATE_LIMIT_SENSITIVE_PREMIUM="$high:$high" KORYPHAIOS_RATE_LIMIT_SENSITIVE_ENTERPRISE="$high:$high" \
  KORYPHAIOS_RATE_LIMIT_LOGIN_FAILURES=$high KORYPHAIOS_RATE_LIMIT_LOGIN_FAILURES_PER_USER=$high
case "${LIMITER:-memory}" in
  off) export KORYPHAIOS_RATE_LIMIT_ENABLED=false ;;
  memory) ;;
  redis) export KORYPHAIOS_REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}" ;;
  *) echo "LIMITER must be off, memory or redis" >&2; exit 2 ;;
esac
echo "rate limiter: ${LIMITER:-memory}" >&2

# The proxy scenario's provider: the bare_health example on its own port, as `openai`.
upstream_bin="${UPSTREAM_BIN:-$baseline}"
if [[ " ${scenarios[*]} " == *" proxy "* ]]; then
  [ -n "$upstream_bin" ] || { echo "the proxy scenario needs UPSTREAM_BIN (or BASELINE_BIN): the bare_health example" >&2; exit 2; }
  upstream_port=$(free_port)
  "$upstream_bin" "$upstream_port" 2>>"$work/upstream.log" &
  upstream_pid=$!
  for _ in $(seq 1 200); do curl -fsS "http://127.0.0.1:$upstream_port/health" >/dev/null 2>&1 && break; sleep 0.05; done
  export KORYPHAIOS_PROVIDER_OPENAI_BASE_URL="http://127.0.0.1:$upstream_port"
fi

start_server() {
  "$binary" serve 2>>"$work/server.log" &
  server_pid=$!
  for _ in $(seq 1 200); do curl -fsS "$base/health" >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "server did not start; log:" >&2; cat "$work/server.log" >&2; exit 1
}

stop_server() { kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""; }

# Samples the server's resident set every 100 ms into a file until told to stop.
sample_rss() {
  local pid=$1 out=$2
  while kill -0 "$pid" 2>/dev/null && [ ! -f "$out.stop" ]; do
    awk '/^VmRSS/ {print $2}' "/proc/$pid/status" >>"$out" 2>/dev/null || true
    sleep 0.1
  done
}

mb() { awk -v kb="$1" 'BEGIN { printf "%.1f", kb / 1024 }'; }

if [ -n "$baseline" ]; then
  baseline_port=$(free_port)
  "$baseline" "$baseline_port" 2>>"$work/baseline.log" &
  baseline_pid=$!
  for _ in $(seq 1 200); do curl -fsS "http://127.0.0.1:$baseline_port/health" >/dev/null 2>&1 && break; sleep 0.05; done
  curl -fsS "http://127.0.0.1:$baseline_port/health" >/dev/null || { echo "baseline did not start" >&2; cat "$work/baseline.log" >&2; exit 1; }
  printf '%-10s %12s %10s %10s %14s %12s %7s\n' scenario "requests/s" "p50" "p99" "peak RSS (MB)" "bare/s" "ratio"
else
  printf '%-10s %12s %10s %10s %14s\n' scenario "requests/s" "p50" "p99" "peak RSS (MB)"
fi

# run_wrk NAME PATH [wrk options…]; CONNECTIONS overrides the connection count for one scenario.
run_wrk() {
  local name=$1 path=$2; shift 2
  local conns="${CONNECTIONS:-$connections}"
  local bare_rps="" ratio=""
  if [ -n "$baseline" ]; then
    # The baseline, with the same wrk settings, immediately before the scenario.
    bare_rps=$(wrk -t "$threads" -c "$conns" -d "${duration}s" "http://127.0.0.1:$baseline_port/health" | awk '/^Requests\/sec/ {print $2}')
  fi
  local rss="$work/rss.$name"
  rm -f "$rss" "$rss.stop"
  sample_rss "$server_pid" "$rss" &
  local sampler=$!
  local report
  report=$(wrk --latency -t "$threads" -c "$conns" -d "${duration}s" "$@" "${TARGET:-$base}$path")
  touch "$rss.stop"; wait "$sampler" 2>/dev/null || true
  local rps p50 p99 peak non2xx
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$report")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$report")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$report")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$report")
  peak=$(sort -n "$rss" | tail -n 1)
  if [ -n "$baseline" ]; then
    ratio=$(awk -v a="$rps" -v b="$bare_rps" 'BEGIN { if (b > 0) printf "%.3g", a / b; else print "-" }')
    printf '%-10s %12s %10s %10s %14s %12s %7s\n' "$name" "$rps" "$p50" "$p99" "$(mb "${peak:-0}")" "$bare_rps" "$ratio"
  else
    printf '%-10s %12s %10s %10s %14s\n' "$name" "$rps" "$p50" "$p99" "$(mb "${peak:-0}")"
  fi
  if [ -n "$results" ]; then
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$rps" "$p50" "$p99" "$(mb "${peak:-0}")" "${bare_rps:--}" "${ratio:--}" "${non2xx:-0}" >>"$results"
  fi
  if [ -n "$non2xx" ]; then echo "  warning: $non2xx non-2xx responses in $name" >&2; fi
}

start_server
# Idle: a started server that has served nothing yet.
idle_rss=$(awk '/^VmRSS/ {print $2}' "/proc/$server_pid/status")
printf '%-10s %12s %10s %10s %14s\n' idle - - - "$(mb "$idle_rss")"
curl -fsS -X POST "$base/api/auth/register" -H 'content-type: application/json' \
  -d '{"username":"loadtest","password":"load test passphrase 1"}' >/dev/null
token=$(curl -fsS -X POST "$base/api/auth/login" -H 'content-type: application/json' \
  -d '{"username":"loadtest","password":"load test passphrase 1"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["accessToken"])')
credential_id=$(curl -fsS -X POST "$base/api/v1/credentials" -H 'content-type: application/json' -H "Authorization: Bearer $token" \
  -d '{"provider":"openai","credential":"sk-loadtest-0123456789abcdefghijklmnopqrstuvwxyz"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
api_key=$(curl -fsS -X POST "$base/api/v1/keys" -H 'content-type: application/json' -H "Authorization: Bearer $token" \
  -d '{"name":"loadtest","scopes":["read","write","provider:*"],"rateLimitTier":"enterprise"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
cat >"$work/post.lua" <<'LUA'
wrk.method = "POST"
LUA
cat >"$work/login.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"username":"loadtest","password":"load test passphrase 1"}'
LUA
cat >"$work/create.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"provider":"anthropic","credential":"sk-ant-loadtest-0123456789abcdefghijklmnopqrstuvwxyz","metadata":{"team":"load"}}'
LUA

for scenario in "${scenarios[@]}"; do
  case "$scenario" in
    health) run_wrk health /health ;;
    me) run_wrk me /api/auth/me -H "Authorization: Bearer $token" ;;
    apikey) run_wrk apikey /api/auth/me -H "X-API-Key: $api_key" ;;
    metrics) run_wrk metrics /metrics ;;
    list) run_wrk list /api/v1/credentials -H "X-API-Key: $api_key" ;;
    keys) run_wrk keys /api/v1/keys -H "X-API-Key: $api_key" ;;
    login) CONNECTIONS="$login_connections" run_wrk login /api/auth/login -s "$work/login.lua" ;;
    reveal) run_wrk reveal "/api/v1/credentials/$credential_id/reveal" -s "$work/post.lua" -H "Authorization: Bearer $token" ;;
    create) run_wrk create /api/v1/credentials -s "$work/create.lua" -H "Authorization: Bearer $token" ;;
    proxy)
      TARGET="http://127.0.0.1:$upstream_port" run_wrk direct /health
      run_wrk proxy /api/v1/proxy/openai/health -H "X-API-Key: $api_key" ;;
    startup)
      stop_server
      # Process start until /health answers 200, on the existing data dir; 10 runs.
      python3 - "$binary" "$port" <<'PY'
import subprocess, sys, time, socket, statistics
binary, port = sys.argv[1], int(sys.argv[2])
def healthy():
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.05) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(16).startswith(b"HTTP/1.1 200")
    except OSError:
        return False
times = []
for _ in range(10):
    started = time.perf_counter()
    proc = subprocess.Popen([binary, "serve"], stderr=subprocess.DEVNULL)
    while not healthy():
        if proc.poll() is not None: sys.exit("server exited during startup")
        time.sleep(0.001)
    times.append((time.perf_counter() - started) * 1000)
    proc.terminate(); proc.wait()
times.sort()
print(f"{'startup':<10} {'-':>12} {statistics.median(times):>8.1f}ms {times[-1]:>8.1f}ms {'(median/max of 10)':>14}")
PY
      start_server ;;
    *) echo "unknown scenario $scenario (startup, health, me, apikey, metrics, list, keys, login, reveal, create, proxy)" >&2; exit 2 ;;
  esac
done
