# syntax=docker/dockerfile:1
#
# Koryphaios: one static-ish binary (`koryphaios`) on Debian slim, running as an unprivileged user.
#
#   docker build -t koryphaios .
#   docker run -p 3000:3000 -v koryphaios-data:/var/lib/koryphaios koryphaios
#
# Configuration is environment variables only (README, "Configuration"). The image sets
# KORYPHAIOS_HOST=0.0.0.0 (the binary's default, 127.0.0.1, is unreachable from outside a
# container) and KORYPHAIOS_DATA_DIR=/var/lib/koryphaios (the local key ring kms/local.keyring,
# the generated JWT secret and, without KORYPHAIOS_DATABASE_URL, the SQLite database).
# Back that volume up: without the key ring nothing stored can be decrypted.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---------------------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
WORKDIR /src

# The whole workspace is needed: Cargo loads every member's manifest (and their declared bench
# targets) even when building one package. .dockerignore keeps target/, .git/ and local data out.
COPY . .

# Registry, git checkouts and the target dir live in BuildKit caches, so rebuilds after a source
# change recompile only the workspace crates. The target dir is a cache mount (not in the layer),
# so the binary is copied out within the same RUN. The image carries every key provider
# (`remote-kms`: aws, vault, gcp, azure besides local and age).
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p koryphaios-server --features remote-kms --bin koryphaios \
 && install -D -m 0755 target/release/koryphaios /out/koryphaios

# ---------------------------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime

# ca-certificates: rediss:// and TLS to PostgreSQL; curl: the HEALTHCHECK below. Nothing else.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*

# Fixed uid/gid so a volume's ownership means the same thing across images and hosts.
RUN groupadd --system --gid 10001 koryphaios \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/koryphaios \
      --no-create-home --shell /usr/sbin/nologin koryphaios \
 && install -d -m 0700 -o 10001 -g 10001 /var/lib/koryphaios

COPY --from=builder /out/koryphaios /usr/local/bin/koryphaios

ENV KORYPHAIOS_HOST=0.0.0.0 \
    KORYPHAIOS_PORT=3000 \
    KORYPHAIOS_DATA_DIR=/var/lib/koryphaios

# A fresh named volume is initialised from the image: owned by 10001:10001, mode 0700.
VOLUME ["/var/lib/koryphaios"]
WORKDIR /var/lib/koryphaios
USER 10001:10001
EXPOSE 3000

# Ready = the database and the key provider answer (a Redis outage only degrades rate limiting
# to per-instance memory, which stays ready). The liveness route is GET /health.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD curl -fsS -o /dev/null "http://127.0.0.1:${KORYPHAIOS_PORT:-3000}/health/ready" || exit 1

# `serve` migrates the database first (on PostgreSQL under an advisory lock, so replicas starting
# together are safe), then serves; SIGTERM drains in-flight requests (KORYPHAIOS_SHUTDOWN_GRACE_SECS).
ENTRYPOINT ["koryphaios"]
CMD ["serve"]
