#!/usr/bin/env bash
# Benchmark against a bare baseline (issue #14): builds the release binary and the `bare_health`
# example (a bare axum 0.8 server answering only /health, same release profile) once, then for each
# round and each configuration (SQLite or PostgreSQL × memory or Redis limiter) runs
# scripts/loadtest.sh with BASELINE_BIN, which measures the baseline and each scenario interleaved
# (baseline, scenario, baseline, scenario, …). Prints a Markdown table: requests/s, p50, p99, peak
# RSS and the ratio to the baseline measured just before, in the same round. Compare ratios within
# a run: absolute numbers on a shared machine move from one minute to the next.
#
#   scripts/bench.sh                              # every scenario and configuration, 5 s each, 2 rounds
#   scripts/bench.sh -d 2 -r 1 -b sqlite -l memory health list   # a quick run
#
# Options: -d seconds per measurement (5), -c connections (64; login uses LOGIN_CONNECTIONS, 16),
# -t wrk threads (2), -r rounds (2), -b backends (sqlite,postgres), -l limiters (memory,redis).
# Arguments choose scenarios (default: health metrics list keys create reveal login; any of
# loadtest.sh's). PostgreSQL: a fresh database per run on PG_URL (default
# postgres://postgres@127.0.0.1:5432), dropped afterwards; SQLite: loadtest.sh's fresh data dir.
# Redis: REDIS_URL (default redis://127.0.0.1:6379). KORYPHAIOS_BIN / BASELINE_BIN skip the build.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=5 connections=64 threads=2 rounds=2 backends=sqlite,postgres limiters=memory,redis
usage() { sed -n '2,18p' "$0"; exit 2; }
while getopts "d:c:t:r:b:l:h" opt; do
  case "$opt" in
    d) duration="$OPTARG" ;; c) connections="$OPTARG" ;; t) threads="$OPTARG" ;;
    r) rounds="$OPTARG" ;; b) backends="$OPTARG" ;; l) limiters="$OPTARG" ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(health metrics list keys create reveal login)
IFS=, read -r -a backend_list <<<"$backends"
IFS=, read -r -a limiter_list <<<"$limiters"
for backend in "${backend_list[@]}"; do
  case "$backend" in sqlite | postgres) ;; *) echo "backend must be sqlite or postgres" >&2; exit 2 ;; esac
done
pg_url="${PG_URL:-postgres://postgres@127.0.0.1:5432}"

started=$(date +%s)
# Both binaries built once, with the workspace's release profile, where cargo puts them.
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
if [ -z "${KORYPHAIOS_BIN:-}" ] || [ -z "${BASELINE_BIN:-}" ]; then
  cargo build --release --locked -p koryphaios-server --features remote-kms \
    --bin koryphaios --example bare_health >&2
fi
export KORYPHAIOS_BIN="${KORYPHAIOS_BIN:-$target_dir/release/koryphaios}"
export BASELINE_BIN="${BASELINE_BIN:-$target_dir/release/examples/bare_health}"

work=$(mktemp -d)
databases=()
cleanup() {
  for database in "${databases[@]+"${databases[@]}"}"; do
    psql -q "$pg_url/postgres" -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null 2>&1 || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

results="$work/results.tsv"
for round in $(seq 1 "$rounds"); do
  for backend in "${backend_list[@]}"; do
    for limiter in "${limiter_list[@]}"; do
      config="$backend/$limiter"
      echo "== round $round: $config" >&2
      run_results="$work/run.tsv"
      : >"$run_results"
      if [ "$backend" = postgres ]; then
        database="koryphaios_bench_$$_${round}_$limiter"
        databases+=("$database")
        psql -q "$pg_url/postgres" -c "CREATE DATABASE $database" >/dev/null
        KORYPHAIOS_DATABASE_URL="$pg_url/$database" LIMITER="$limiter" RESULTS="$run_results" \
          scripts/loadtest.sh -d "$duration" -c "$connections" -t "$threads" "${scenarios[@]}" >&2
        psql -q "$pg_url/postgres" -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null
      else
        (unset KORYPHAIOS_DATABASE_URL; LIMITER="$limiter" RESULTS="$run_results" \
          scripts/loadtest.sh -d "$duration" -c "$connections" -t "$threads" "${scenarios[@]}" >&2)
      fi
      awk -v c="$config" -v r="$round" 'BEGIN { OFS = "\t" } { print c, r, $0 }' "$run_results" >>"$results"
    done
  done
done

elapsed=$(($(date +%s) - started))
echo
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, wrk -t$threads -c$connections (login -c${LOGIN_CONNECTIONS:-16}) -d${duration}s, $rounds round(s), ${elapsed} s in all"
echo
echo "| Configuration | Scenario | Round | req/s | p50 | p99 | peak RSS (MB) | bare /health req/s | ratio |"
echo "|---|---|---|---|---|---|---|---|---|"
# Rows grouped by configuration and scenario (in the order run), rounds side by side.
awk -F '\t' '
  { key = $1 SUBSEP $3; if (!(key in seen)) { seen[key] = 1; order[++n] = key } rows[key] = rows[key] "\n" $0 }
  END {
    for (i = 1; i <= n; i++) {
      m = split(substr(rows[order[i]], 2), lines, "\n")
      for (j = 1; j <= m; j++) {
        split(lines[j], f, "\t")
        printf "| %s | %s | %s | %.0f | %s | %s | %s | %.0f | %s |\n", f[1], f[3], f[2], f[4], f[5], f[6], f[7], f[8], f[9]
      }
    }
  }' "$results"
# A ratio over error responses measures the error path: say so under the table.
awk -F '\t' '$10 > 0 { printf "\nwarning: %s responses were not 2xx in %s %s (round %s)\n", $10, $1, $3, $2 }' "$results"
