#!/usr/bin/env bash
# The TypeScript client (clients/typescript, issue 18) against the real service.
#
# Installs the package's pinned dependencies from its lockfile (`npm ci`), checks that the
# committed generated types are what docs/openapi.yaml generates (drift), type-checks the sources,
# tests and examples (`tsc --noEmit`; the examples call every operation of the document), builds,
# and runs the Node test suite, which starts `koryphaios serve` itself (the already-built
# target/debug/koryphaios, no second build) on a free port with a fresh data directory.
# Node and npm come from Debian (apt-get install nodejs npm) when missing.
#
# Environment: KORYPHAIOS_BIN (default target/debug/koryphaios).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${KORYPHAIOS_BIN:-$ROOT/target/debug/koryphaios}
case "$BIN" in /*) ;; *) BIN=$ROOT/$BIN ;; esac
package=$ROOT/clients/typescript

say() { printf 'typescript-client: %s\n' "$*"; }
fail() {
  printf 'typescript-client: FAILED: %s\n' "$*" >&2
  exit 1
}

[ -x "$BIN" ] || fail "$BIN is missing: run cargo test (or cargo build) first"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  command -v apt-get >/dev/null 2>&1 || fail "node and npm are needed (Node 18 or later)"
  say "installing nodejs and npm"
  log=$(mktemp)
  { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm; } \
    >"$log" 2>&1 || { cat "$log" >&2; rm -f "$log"; fail "apt-get install nodejs npm"; }
  rm -f "$log"
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 18 ] || fail "Node 18 or later is needed, found $(node --version)"

cd "$package"
say "npm ci (node $(node --version), npm $(npm --version))"
npm ci --no-audit --no-fund --loglevel=error >/dev/null
say "generated types against docs/openapi.yaml"
node scripts/generate.mjs --check
say "tsc --noEmit: sources, tests and examples (every operation of the document)"
npx --no-install tsc -p tsconfig.json --noEmit
say "build"
npx --no-install tsc -p tsconfig.build.json
say "node --test against $BIN"
started=$(date +%s%N)
KORYPHAIOS_BIN=$BIN node --test --test-reporter=spec dist/test/*.test.js
elapsed_ms=$((($(date +%s%N) - started) / 1000000))
say "the Node suite passed in $((elapsed_ms / 1000)).$(printf '%03d' $((elapsed_ms % 1000))) s"
