#!/usr/bin/env bash
# Runs the benchmark on the `dist` build (release + fat LTO, as the image
# ships; ~15 minutes to build the first time), installing PgBouncer first (the peer
# reference for SQL) when it can. Extra arguments go to `broker bench`.
#   bash scripts/bench.sh                      # full run, about 3 minutes
#   bash scripts/bench.sh --duration 1s --concurrency 16
set -euo pipefail
cd "$(dirname "$0")/.."
if ! [ -x /usr/sbin/pgbouncer ] && ! command -v pgbouncer >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bench: installing pgbouncer (apt-get install pgbouncer)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbouncer >/dev/null 2>&1 || {
      apt-get update -q >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbouncer >/dev/null
    }
    # Debian starts a system PgBouncer on 6432; the bench runs its own.
    service pgbouncer stop >/dev/null 2>&1 || true
  else
    echo "bench: pgbouncer is not installed; SQL is compared with direct only" >&2
  fi
fi
cargo build --profile dist --locked --bin broker
exec target/dist/broker bench "$@"
