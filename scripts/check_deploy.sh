#!/usr/bin/env bash
# Validates deploy/ with the real tools, then runs the compose topology without Docker.
#
#   1. deploy/compose.yaml against the Compose Specification's JSON schema (check-jsonschema, kept
#      in a virtualenv under target/deploy-tools; skipped with a note where Python cannot make one).
#   2. `nginx -t` on deploy/nginx.conf, rendered for this host: the replicas' names, the listen port
#      and the pid path replaced (the names resolve only on the compose network).
#   3. `promtool check config` on deploy/prometheus/prometheus.yml (a copy whose credentials_file
#      points at a token file in a temporary directory), `promtool check rules` and
#      `promtool test rules` on alerts.yml / alerts_test.yml.
#   4. The topology: two `koryphaios serve` processes (the already-built target/debug/koryphaios)
#      with separate data directories, on one fresh PostgreSQL database and one Redis, behind nginx
#      (the rendered config), scraped by Prometheus (a rendered config with the alert rules). It
#      checks /health through nginx; register and login through nginx, then that session on each
#      instance directly; a credential stored through one instance and revealed through the other
#      (one key ring); /metrics refused by nginx; both scrape targets `up` in Prometheus, the
#      metrics the alert rules use exported by both, and the rules loaded.
#
# Installs nginx, prometheus (promtool) and jq from Debian when absent; starts Redis and PostgreSQL
# through scripts/services.sh when they are not running. Quiet on success (a few summary lines); on
# failure prints the failing program's output. Every process it starts is stopped on exit, the
# database dropped and the temporary directory removed.
#
# Environment: KORYPHAIOS_BIN (default target/debug/koryphaios), KORYPHAIOS_TEST_POSTGRES_URL
# (an admin connection, default postgres://postgres@127.0.0.1:5432/postgres),
# KORYPHAIOS_TEST_REDIS_URL (default redis://127.0.0.1:6379), CHECK_DEPLOY_KEYRING=auto|file|copy
# (see "Key ring and access-token signing keys" below).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

BIN=${KORYPHAIOS_BIN:-$ROOT/target/debug/koryphaios}
PG_ADMIN_URL=${KORYPHAIOS_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
REDIS_URL=${KORYPHAIOS_TEST_REDIS_URL:-redis://127.0.0.1:6379}
started_at=$(date +%s%N)

say() { printf 'check_deploy: %s\n' "$*"; }
elapsed() { printf '%d.%d s' $((($(date +%s%N) - started_at) / 1000000000)) $(((($(date +%s%N) - started_at) / 100000000) % 10)); }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/kor-deploy.XXXXXX")
pids=()
database=""
failed_shown=0
interrupted=0

# Prints the last lines of each named log (a file under $tmp/logs, without .log).
show_logs() {
  local name
  for name in "$@"; do
    [ -s "$tmp/logs/$name.log" ] || continue
    printf -- '--- %s (last 40 lines of its output) ---\n' "$name" >&2
    tail -n 40 "$tmp/logs/$name.log" >&2
  done
}

# fail MESSAGE [LOG…]: reports and exits (the EXIT trap cleans up).
fail() {
  local message=$1
  shift
  printf 'check_deploy: FAILED: %s\n' "$message" >&2
  show_logs "$@"
  failed_shown=1
  exit 1
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  set +e
  if [ "$interrupted" -eq 1 ]; then
    printf 'check_deploy: interrupted; stopping what it started\n' >&2
  elif [ "$status" -ne 0 ] && [ "$failed_shown" -eq 0 ]; then
    printf 'check_deploy: FAILED (exit status %s)\n' "$status" >&2
    show_logs instance-a instance-b nginx prometheus
  fi
  local pid _
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for _ in $(seq 1 50); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" -eq 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  if [ -n "$database" ]; then
    psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS \"$database\" WITH (FORCE)" >/dev/null 2>&1 ||
      printf 'check_deploy: could not drop database %s\n' "$database" >&2
  fi
  rm -rf "$tmp"
  exit "$status"
}
trap cleanup EXIT
trap 'interrupted=1; exit 130' INT
trap 'interrupted=1; exit 143' TERM

# run NAME COMMAND…: runs a check, silently when it passes, with its output when it fails.
run() {
  local name=$1
  shift
  if ! "$@" >"$tmp/logs/$name.log" 2>&1; then
    fail "$name: $*" "$name"
  fi
}

mkdir -p "$tmp/logs"

# --- Tools --------------------------------------------------------------------------------------

apt_install() {
  command -v apt-get >/dev/null 2>&1 || fail "apt-get not available; install $* by hand"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$tmp/logs/apt.log" 2>&1 || fail "apt-get update" apt
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" \
    >>"$tmp/logs/apt.log" 2>&1 || fail "apt-get install $*" apt
}
missing=()
command -v nginx >/dev/null 2>&1 || missing+=(nginx)
{ command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; } || missing+=(prometheus)
command -v jq >/dev/null 2>&1 || missing+=(jq)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi
# The Debian packages do not start anything here (no init system); nothing else is listening.

[ -x "$BIN" ] || fail "$BIN is missing: build it first (cargo build -p koryphaios-server --bin koryphaios)"
if ! { redis-cli -u "$REDIS_URL" ping 2>/dev/null | grep -q PONG && psql "$PG_ADMIN_URL" -Atqc 'SELECT 1' >/dev/null 2>&1; }; then
  run services bash scripts/services.sh
fi

# --- Ports, secrets ----------------------------------------------------------------------------

# A port nothing listens on, below the ephemeral range (outgoing connections never hold it).
used_ports=" "
free_port() {
  local port _
  for _ in $(seq 1 200); do
    port=$((20000 + RANDOM % 12000))
    [[ $used_ports == *" $port "* ]] && continue
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      used_ports+="$port "
      REPLY=$port
      return 0
    fi
  done
  fail "no free port found"
}
free_port; port_a=$REPLY
free_port; metrics_a=$REPLY
free_port; port_b=$REPLY
free_port; metrics_b=$REPLY
free_port; port_lb=$REPLY
free_port; port_prom=$REPLY

random_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }
metrics_token=$(random_hex 24)
passphrase=$(random_hex 16)
password=$(random_hex 16)

# replace SOURCE DEST FROM TO [FROM TO]…: DEST = SOURCE with each literal FROM replaced by TO;
# fails when a FROM is absent (the source changed under the script).
replace() {
  local source=$1 dest=$2 text
  shift 2
  text=$(<"$source")
  while [ "$#" -gt 0 ]; do
    [[ $text == *"$1"* ]] || fail "$source no longer contains '$1' (update scripts/check_deploy.sh)"
    text=${text//"$1"/"$2"}
    shift 2
  done
  printf '%s\n' "$text" >"$dest"
}

# --- Prometheus, started first ------------------------------------------------------------------

# It reports its first targets about 5 s after it starts (service discovery's update interval), so
# it starts before everything else; promtool below checks the same file, and a broken one stops
# it. The running copy of prometheus.yml: the instances' local metrics listeners, a token file, and
# a short scrape and evaluation interval so the first scrapes come within a second.
mkdir -p "$tmp/prometheus/check" "$tmp/prometheus/data"
printf '%s' "$metrics_token" >"$tmp/prometheus/metrics_token"
chmod 600 "$tmp/prometheus/metrics_token"
cp deploy/prometheus/alerts.yml "$tmp/prometheus/alerts.yml"
replace deploy/prometheus/prometheus.yml "$tmp/prometheus/prometheus.yml" \
  "credentials_file: /run/secrets/metrics_token" "credentials_file: $tmp/prometheus/metrics_token" \
  '"koryphaios-1:9100", "koryphaios-2:9100"' "\"127.0.0.1:$metrics_a\", \"127.0.0.1:$metrics_b\"" \
  '"localhost:9090"' "\"127.0.0.1:$port_prom\"" \
  "scrape_interval: 15s" "scrape_interval: 1s" \
  "scrape_timeout: 5s" "scrape_timeout: 1s" \
  "evaluation_interval: 15s" "evaluation_interval: 1s"
prometheus --config.file="$tmp/prometheus/prometheus.yml" --storage.tsdb.path="$tmp/prometheus/data" \
  --web.listen-address="127.0.0.1:$port_prom" >"$tmp/logs/prometheus.log" 2>&1 &
pids+=($!)
prometheus_pid=$!

# --- Static checks ------------------------------------------------------------------------------

# The Compose Specification's schema, as vendored by check-jsonschema (no Docker engine here).
schema_note="compose.yaml: schema check skipped (no Python virtualenv)"
venv=$ROOT/target/deploy-tools
if [ ! -x "$venv/bin/check-jsonschema" ] && command -v python3 >/dev/null 2>&1; then
  if python3 -m venv "$venv" >"$tmp/logs/venv.log" 2>&1 &&
    "$venv/bin/pip" install -q --disable-pip-version-check check-jsonschema==0.39.0 >>"$tmp/logs/venv.log" 2>&1; then
    :
  else
    rm -rf "$venv"
  fi
fi
if [ -x "$venv/bin/check-jsonschema" ]; then
  run compose-schema "$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml
  schema_note="compose.yaml matches the Compose Specification schema"
fi

# --- nginx -t ------------------------------------------------------------------------------------

mkdir -p "$tmp/nginx"
replace deploy/nginx.conf "$tmp/nginx/nginx.conf" \
  "server koryphaios-1:3000" "server 127.0.0.1:$port_a" \
  "server koryphaios-2:3000" "server 127.0.0.1:$port_b" \
  "listen 80;" "listen 127.0.0.1:$port_lb;" \
  "pid /tmp/nginx.pid;" "pid $tmp/nginx/nginx.pid;"
# The rendering keeps every line in place: line numbers in nginx's messages are deploy/nginx.conf's.
nginx_args=(-p "$tmp/nginx/" -c "$tmp/nginx/nginx.conf" -e stderr)
run nginx-t nginx -t -q "${nginx_args[@]}"

# --- promtool ------------------------------------------------------------------------------------

# prometheus.yml unchanged but for where the metrics-token secret is (compose mounts it at
# /run/secrets/metrics_token); rule_files (alerts.yml) resolve beside the copy.
cp deploy/prometheus/alerts.yml "$tmp/prometheus/check/alerts.yml"
replace deploy/prometheus/prometheus.yml "$tmp/prometheus/check/prometheus.yml" \
  "credentials_file: /run/secrets/metrics_token" "credentials_file: $tmp/prometheus/metrics_token"
run promtool-check-config promtool check config "$tmp/prometheus/check/prometheus.yml"
run promtool-check-rules promtool check rules deploy/prometheus/alerts.yml
run promtool-test-rules promtool test rules deploy/prometheus/alerts_test.yml
rule_count=$(grep -c '^      - alert:' deploy/prometheus/alerts.yml)
static_note="$schema_note; nginx -t passes ($(nginx -v 2>&1 | sed 's/.*version: //')); promtool: config ok, $rule_count alert rules ok, rule tests pass"

# --- The topology --------------------------------------------------------------------------------

database="kor_deploy_$(random_hex 6)"
run createdb psql "$PG_ADMIN_URL" -qc "CREATE DATABASE \"$database\""
database_url="${PG_ADMIN_URL%/*}/$database"

# Key ring and access-token signing keys, as compose.yaml hands them out:
#   file: one ring file made by `koryphaios kms init-keyring`, given to both instances as
#         KORYPHAIOS_KMS_LOCAL_KEYRING_FILE (compose: the secret /run/secrets/koryphaios_keyring);
#         no JWT secret (the signing keys are in the database); both start at once.
#   copy: binaries without `kms init-keyring`: both share KORYPHAIOS_JWT_SECRET, instance A
#         creates the ring in its data dir, and B starts with a copy of it once A is ready.
#         Delete this mode (and `auto`) when no binary without the file mode is in use.
keyring_mode=${CHECK_DEPLOY_KEYRING:-auto}
if [ "$keyring_mode" = auto ]; then
  kms_help=$("$BIN" kms --help 2>/dev/null || true)
  if [[ $kms_help == *init-keyring* ]]; then keyring_mode="file"; else keyring_mode="copy"; fi
fi
case "$keyring_mode" in file | copy) ;; *) fail "CHECK_DEPLOY_KEYRING: expected auto, file or copy, got $keyring_mode" ;; esac

# What compose.yaml sets, with this host's addresses. The caller's KORYPHAIOS_* variables are
# not passed on.
clean_env=()
for name in $(compgen -e); do
  case "$name" in KORYPHAIOS_*) clean_env+=(-u "$name") ;; esac
done
common_env=(
  KORYPHAIOS_HOST=127.0.0.1
  KORYPHAIOS_DATABASE_URL="$database_url"
  KORYPHAIOS_DATABASE_MAX_CONNECTIONS=4
  KORYPHAIOS_REDIS_URL="$REDIS_URL"
  KORYPHAIOS_KMS_PROVIDER=local
  KORYPHAIOS_KMS_PASSPHRASE="$passphrase"
  KORYPHAIOS_METRICS_TOKEN="$metrics_token"
  KORYPHAIOS_TRUSTED_PROXIES=127.0.0.1
  KORYPHAIOS_ALLOW_REGISTRATION=true
  # Every run logs in from 127.0.0.1, and Redis keeps the counts between runs: the default (10
  # a minute) would refuse the fourth run within a minute.
  KORYPHAIOS_RATE_LIMIT_AUTH_PER_MINUTE=1000
  KORYPHAIOS_SHUTDOWN_GRACE_SECS=2
  KORYPHAIOS_LOG_FORMAT=json
)
keyring_dir=$tmp/secrets
if [ "$keyring_mode" = file ]; then
  mkdir -m 700 "$keyring_dir"
  run init-keyring env "${clean_env[@]}" KORYPHAIOS_KMS_PASSPHRASE="$passphrase" \
    KORYPHAIOS_DATA_DIR="$tmp/init-data" "$BIN" kms init-keyring "$keyring_dir/koryphaios_keyring"
  # Compose mounts only the ring file, in a read-only /run/secrets: nothing may appear beside it.
  rm -f "$keyring_dir/koryphaios_keyring.lock"
  keyring_listing=$(ls -A "$keyring_dir")
  common_env+=(KORYPHAIOS_KMS_LOCAL_KEYRING_FILE="$keyring_dir/koryphaios_keyring")
else
  common_env+=(KORYPHAIOS_JWT_SECRET="$(random_hex 32)")
fi

# start NAME PORT METRICS_PORT: one instance with its own data directory; its pid in `started`.
start() {
  local name=$1 port=$2 metrics=$3
  mkdir -p "$tmp/$name"
  env "${clean_env[@]}" "${common_env[@]}" KORYPHAIOS_DATA_DIR="$tmp/$name/data" \
    KORYPHAIOS_PORT="$port" KORYPHAIOS_METRICS_ADDR="127.0.0.1:$metrics" \
    "$BIN" serve >"$tmp/logs/instance-$name.log" 2>&1 &
  started=$!
  pids+=("$started")
}

# wait_for URL PID LOG SECONDS: until URL answers 2xx; fails if the process exits.
wait_for() {
  local url=$1 pid=$2 log=$3 deadline=$((SECONDS + $4))
  until curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || fail "$log exited before $url answered" "$log"
    [ "$SECONDS" -lt "$deadline" ] || fail "$url did not answer within $4 s" "$log"
    sleep 0.1
  done
}

start a "$port_a" "$metrics_a"
pid_a=$started
if [ "$keyring_mode" = copy ]; then
  wait_for "http://127.0.0.1:$port_a/health/ready" "$pid_a" instance-a 30
  # The switch to the file mode above replaces exactly this copy.
  install -d -m 700 "$tmp/b/data/kms"
  install -m 600 "$tmp/a/data/kms/local.keyring" "$tmp/b/data/kms/local.keyring"
fi
start b "$port_b" "$metrics_b"
pid_b=$started
wait_for "http://127.0.0.1:$port_a/health/ready" "$pid_a" instance-a 30
wait_for "http://127.0.0.1:$port_b/health/ready" "$pid_b" instance-b 30

nginx "${nginx_args[@]}" -g "daemon off;" >"$tmp/logs/nginx.log" 2>&1 &
pids+=($!)
nginx_pid=$!
wait_for "http://127.0.0.1:$port_lb/health" "$nginx_pid" nginx 10
topology_at=$(elapsed)

# --- Requests ------------------------------------------------------------------------------------

# http METHOD URL [JSON [BEARER]]: sets status and body.
http() {
  local args=(-sS -o "$tmp/body" -w '%{http_code}' -X "$1" --max-time 10)
  [ -n "${3-}" ] && args+=(-H 'content-type: application/json' --data "$3")
  [ -n "${4-}" ] && args+=(-H "authorization: Bearer $4")
  status=$(curl "${args[@]}" "$2" 2>"$tmp/logs/curl.log") || true
  body=$(cat "$tmp/body" 2>/dev/null || true)
}
# expect STATUS WHAT: the last response had STATUS.
expect() {
  [ "$status" = "$1" ] ||
    fail "$2: expected HTTP $1, got ${status:-none}: $body $(cat "$tmp/logs/curl.log")" nginx instance-a instance-b
}
# field JQ_PATH WHAT: sets `value` to that field of the last response's body.
field() { value=$(jq -er "$1" <<<"$body" 2>/dev/null) || fail "$2: no $1 in $body" nginx instance-a instance-b; }

lb=http://127.0.0.1:$port_lb
a=http://127.0.0.1:$port_a
b=http://127.0.0.1:$port_b
credentials='{"username":"deploy_check","password":"'"$password"'"}'

http GET "$lb/health"
expect 200 "GET /health through nginx"
field .ok "GET /health through nginx"
[ "$value" = true ] || fail "GET /health through nginx: $body"
http GET "$lb/metrics"
expect 404 "GET /metrics through nginx (refused at the edge)"
http POST "$lb/api/auth/register" "$credentials"
expect 201 "register through nginx"
http POST "$lb/api/auth/login" "$credentials"
expect 200 "login through nginx"
field .accessToken "login through nginx"
access=$value
for instance in a b; do
  url=$a
  [ "$instance" = b ] && url=$b
  http GET "$url/api/auth/me" "" "$access"
  expect 200 "the session from nginx on instance $instance (GET /api/auth/me)"
  field .username "GET /api/auth/me on instance $instance"
  [ "$value" = deploy_check ] || fail "GET /api/auth/me on instance $instance: $body"
done
secret="sk-deploy-check-$(random_hex 12)"
http POST "$a/api/v1/credentials" '{"provider":"openai","credential":"'"$secret"'"}' "$access"
expect 201 "store a credential on instance a"
field .id "store a credential on instance a"
credential_id=$value
http POST "$b/api/v1/credentials/$credential_id/reveal" '{"reason":"scripts/check_deploy.sh"}' "$access"
expect 200 "reveal on instance b the credential stored on instance a"
field .credential "reveal on instance b"
[ "$value" = "$secret" ] || fail "reveal on instance b returned another value"
http GET "http://127.0.0.1:$metrics_a/metrics"
expect 401 "the metrics listener without the token"

# --- Prometheus ----------------------------------------------------------------------------------

prom=http://127.0.0.1:$port_prom
# promql QUERY: the query's first value ("" when the result is empty).
promql() {
  curl -fsS --max-time 5 -G "$prom/api/v1/query" --data-urlencode "query=$1" 2>/dev/null |
    jq -r '.data.result[0].value[1] // ""' 2>/dev/null || true
}
deadline=$((SECONDS + 30))
until [ "$(curl -fsS --max-time 2 "$prom/api/v1/targets" 2>/dev/null |
  jq '[.data.activeTargets[] | select(.labels.job == "koryphaios" and .health == "up")] | length' 2>/dev/null)" = 2 ]; do
  kill -0 "$prometheus_pid" 2>/dev/null || fail "prometheus exited" prometheus
  if [ "$SECONDS" -ge "$deadline" ]; then
    body=$(curl -sS --max-time 2 "$prom/api/v1/targets" 2>&1 |
      jq -c '.data.activeTargets[] | {scrapeUrl, health, lastError}' 2>/dev/null || true)
    fail "Prometheus: both koryphaios targets not up within 30 s: $body" prometheus
  fi
  sleep 0.2
done
targets_at=$(elapsed)

# The metrics the alert rules read, from both instances, in their healthy state.
checks=(
  'count(up{job="koryphaios"} == 1)'
  'count(audit_chain_head_seq{job="koryphaios"} > 0)'
  'count(rate_limit_backend{job="koryphaios", backend="redis"} == 1)'
)
kms_note="kms_root_up 1 on both"
http GET "http://127.0.0.1:$metrics_a/metrics" "" "$metrics_token"
expect 200 "the metrics listener with the token"
if grep -q '^kms_root_up' <<<"$body"; then
  checks+=('count(kms_root_up{job="koryphaios"} == 1)')
else
  kms_note="NOTE: this binary exports no kms_root_up, so KoryphaiosKmsUnreachable cannot fire"
fi
for query in "${checks[@]}"; do
  deadline=$((SECONDS + 10))
  until [ "$(promql "$query")" = 2 ]; do
    [ "$SECONDS" -lt "$deadline" ] || fail "Prometheus: $query is '$(promql "$query")', expected 2" prometheus
    sleep 0.2
  done
done
loaded=$(curl -fsS --max-time 5 "$prom/api/v1/rules" |
  jq '[.data.groups[].rules[] | select(.type == "alerting" and .health != "err")] | length')
[ "$loaded" = "$rule_count" ] || fail "Prometheus loaded $loaded healthy alert rules, expected $rule_count" prometheus

if [ "$keyring_mode" = file ] && [ "$(ls -A "$keyring_dir")" != "$keyring_listing" ]; then
  fail "an instance wrote beside the key ring file (in a container /run/secrets is read-only): $(ls -A "$keyring_dir")"
fi

# Failover: with instance B stopped, nginx sends every request to A (a connection refused by B
# is retried on A; B is then skipped for fail_timeout).
kill -TERM "$pid_b"
wait "$pid_b" 2>/dev/null || true
remaining=()
for pid in "${pids[@]}"; do [ "$pid" = "$pid_b" ] || remaining+=("$pid"); done
pids=("${remaining[@]}")
for _ in 1 2 3 4; do
  http GET "$lb/health/ready"
  expect 200 "GET /health/ready through nginx with instance b stopped"
done

if [ "$keyring_mode" = file ]; then
  sharing="one key ring file (KORYPHAIOS_KMS_LOCAL_KEYRING_FILE), signing keys in the database"
else
  sharing="key ring copied from A to B, shared KORYPHAIOS_JWT_SECRET"
fi
say "$static_note"
say "2 instances ($sharing) on PostgreSQL and Redis behind nginx, up at $topology_at: health, register/login via nginx, the session on both, sealed on A and revealed on B, served by A alone once B stopped"
say "Prometheus: both targets up at $targets_at, alert metrics present ($kms_note), $loaded alert rules loaded; passed in $(elapsed)"
