#!/usr/bin/env bash
# Instructions the broker executes per Query call, counted by valgrind's
# callgrind. Seconds on a shared 2-core VM move by a third from hour to hour
# (README, "Performance"); this count does not, so it shows what a change
# to the broker's own code does to it. Kernel work (system calls, wake-ups)
# is not counted.
#
#   scripts/count-instructions.sh [BINARY] [CALLS] [CONCURRENCY] [SQL]
#
# BINARY defaults to target/dist/broker (build it first: `cargo build
# --profile dist --bin broker`). The broker runs under callgrind against the
# PostgreSQL at DATABASE_URL (default: the `postgres` database on
# 127.0.0.1:5432) and a closed S3 port (Query does not need S3); a Python
# gRPC client (.venv, `scripts/setup.sh`) makes 300 calls to warm up, then
# the counters are zeroed and CALLS calls (default 4000) are counted, from
# CONCURRENCY callers at once (default 16) on one HTTP/2 connection.
set -euo pipefail
cd "$(dirname "$0")/.."

binary=${1:-target/dist/broker}
calls=${2:-4000}
concurrency=${3:-16}
sql=${4:-select 1}
python=.venv/bin/python

[ -x "$binary" ] || { echo "no broker binary at $binary: cargo build --profile dist --bin broker" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
"$python" -c 'import grpc' 2>/dev/null || { echo "no grpcio in .venv: run scripts/setup.sh" >&2; exit 1; }

work=$(mktemp -d)
port=$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
broker_pid=
cleanup() {
  [ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null && wait "$broker_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

BROKER_ADDR=127.0.0.1:$port \
DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres} \
S3_BUCKET=instructions S3_ENDPOINT_URL=http://127.0.0.1:9 \
AWS_ACCESS_KEY_ID=count AWS_SECRET_ACCESS_KEY=count AWS_REGION=eu-west-3 \
TOKIO_WORKER_THREADS=1 RUST_LOG=error BROKER_HEALTH_INTERVAL=60s \
  valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.%p" "$binary" serve \
  >"$work/broker.log" 2>&1 &
broker_pid=$!

drive() {
  "$python" - "127.0.0.1:$port" "$1" "$concurrency" "$sql" <<'EOF'
import asyncio, sys, grpc
address, calls, concurrency, sql = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].encode()
# broker.v1.QueryRequest { sql } by hand: field 1, length-delimited.
request = b"\x0a" + bytes([len(sql)]) + sql
async def main():
    async with grpc.aio.insecure_channel(address) as channel:
        query = channel.unary_unary("/broker.v1.Database/Query")
        left = [calls]
        async def caller():
            while left[0] > 0:
                left[0] -= 1
                await query(request, timeout=600, wait_for_ready=True)
        await asyncio.gather(*[caller() for _ in range(concurrency)])
asyncio.run(main())
EOF
}

if [ "${#sql}" -gt 127 ]; then echo "SQL longer than 127 bytes is not supported here" >&2; exit 1; fi
drive 300 || { cat "$work/broker.log" >&2; exit 1; }
callgrind_control --zero "$broker_pid" >/dev/null 2>&1
drive "$calls"
callgrind_control --dump "$broker_pid" >/dev/null 2>&1
# The first dump asked for is numbered 1; the broker's own at exit has no number.
dump="$work/callgrind.$broker_pid.1"
for _ in $(seq 1 50); do [ -s "$dump" ] && break; sleep 0.1; done
total=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")
echo "$(basename "$binary"): $((total / calls)) instructions per call ($calls calls of \"$sql\", $concurrency at once)"
if [ -n "${KEEP_PROFILE:-}" ]; then
  cp "$dump" "$KEEP_PROFILE"
  echo "profile: $KEEP_PROFILE (callgrind_annotate --inclusive=yes $KEEP_PROFILE)"
fi
