#!/usr/bin/env bash
# Makes sure what the tests talk to is here: Redis on 127.0.0.1:6379, PostgreSQL on
# 127.0.0.1:5432 (trust auth, user postgres), the `age` command-line tool, and the AWS KMS emulator
# (moto_server on 127.0.0.1:5999, scripts/moto.sh). Installs them (Debian's packages, PyPI for moto)
# when absent, starts them when stopped. Idempotent; prints what it did.
set -euo pipefail

log() { printf 'services: %s\n' "$*" >&2; }

apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    log "apt-get not available; install $* by hand"; return 1
  fi
  log "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }

ensure_redis() {
  if redis_up; then return 0; fi
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server redis-tools
  mkdir -p /var/lib/redis /var/log/redis
  log "starting redis-server"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 1 50); do redis_up && return 0; sleep 0.1; done
  log "redis did not come up"; return 1
}

postgres_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }

ensure_postgres() {
  if postgres_up; then return 0; fi
  command -v pg_ctlcluster >/dev/null 2>&1 || apt_install postgresql
  local version
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$version" ]; then log "no PostgreSQL cluster found"; return 1; fi
  local hba="/etc/postgresql/$version/main/pg_hba.conf"
  # Tests connect as postgres over TCP without a password, as on the CI machines.
  if ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  log "starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 100); do postgres_up && return 0; sleep 0.1; done
  log "PostgreSQL did not come up"; return 1
}

# The age tool, for the age key provider's interoperability tests.
ensure_age() {
  command -v age >/dev/null 2>&1 || apt_install age
}

# valgrind, for the hot-path instruction budgets (tests/it/hot_path_budgets.rs).
ensure_valgrind() {
  command -v valgrind >/dev/null 2>&1 || apt_install valgrind
}

ensure_redis
ensure_postgres
ensure_age
ensure_valgrind
bash "$(dirname "$0")/moto.sh"
log "redis, postgres, age, valgrind and moto are ready"
