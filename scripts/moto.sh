#!/usr/bin/env bash
# The AWS KMS emulator for the `aws` key provider's tests: moto_server (PyPI `moto[server]`) on
# 127.0.0.1:5999 (MOTO_PORT to change). Installs it with pip when absent, starts it in the
# background when it is not answering. Idempotent and quiet; prints only what it did.
set -euo pipefail

port="${MOTO_PORT:-5999}"
log() { printf 'moto: %s\n' "$*" >&2; }

moto_up() { curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port/moto-api/" 2>/dev/null; }

if moto_up; then exit 0; fi

python=$(command -v python3 || command -v python || true)
if [ -z "$python" ]; then log "python3 not found; install python3 and pip"; exit 1; fi
# moto_server needs moto's server extra (flask, flask-cors) and the KMS backend's cryptography.
if ! "$python" -c 'import moto.server, flask, flask_cors, cryptography' >/dev/null 2>&1; then
  log "installing moto[server]"
  "$python" -m pip install --quiet --disable-pip-version-check 'moto[server]' >/dev/null 2>&1 ||
    "$python" -m pip install --quiet --disable-pip-version-check --break-system-packages 'moto[server]' >/dev/null
fi

log "starting moto_server on 127.0.0.1:$port"
mkdir -p /tmp/koryphaios-moto
nohup "$python" -m moto.server -H 127.0.0.1 -p "$port" >/tmp/koryphaios-moto/moto.log 2>&1 &
for _ in $(seq 1 100); do moto_up && exit 0; sleep 0.1; done
log "moto_server did not come up (see /tmp/koryphaios-moto/moto.log)"; exit 1
