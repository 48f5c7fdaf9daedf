#!/usr/bin/env bash
# Writes build/function-order.txt: the functions an idle broker runs (start-up,
# health checks, health probes), then those its calls run, as the linker
# should lay them out (build.rs hands the file to lld for `--profile dist`).
#
# Why: the kernel maps a binary's code into memory 64 KiB at a time around
# each page a process touches. Laid out as the compiler emits them, the few
# thousand functions a broker runs are spread over most of its 23 MB of
# code, and an idle broker had 15 MiB of it resident; packed together, they
# take a few MiB (docs/performance.md, "Function order").
#
#   scripts/order-functions.sh [BINARY]
#
# BINARY defaults to target/dist/broker; build it first (`cargo build
# --profile dist --locked --bin broker`), then rebuild after this script so
# the new order is linked in. `broker serve` runs under valgrind's callgrind,
# twice (one worker as the benchmark and ECS run it, then the default),
# against the PostgreSQL at DATABASE_URL (default: a database of its own on
# 127.0.0.1:5432, dropped at the end) and `broker dev`'s local S3 server;
# it idles with health checks and probes, then the interop client (.venv,
# `scripts/setup.sh`) makes every kind of call. Symbol names hold a hash of
# the crate's build settings: the file matches the `dist` profile built by
# this toolchain, and names it does not match are ignored by the linker.
set -euo pipefail
cd "$(dirname "$0")/.."

binary=${1:-target/dist/broker}
python=.venv/bin/python
out=build/function-order.txt

[ -x "$binary" ] || { echo "no broker binary at $binary: cargo build --profile dist --locked --bin broker" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "valgrind is not installed (scripts/setup.sh)" >&2; exit 1; }
"$python" -c 'import grpc, grpc_tools' 2>/dev/null || { echo "no grpcio/grpcio-tools in .venv: run scripts/setup.sh" >&2; exit 1; }

work=$(mktemp -d)
free_port() { "$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
own_database=
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
  [ -n "$own_database" ] && psql -q "$own_database" -c 'DROP DATABASE IF EXISTS broker_order_functions WITH (FORCE)' 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
# A database of its own (the calls create tables), unless one is given.
if [ -z "${DATABASE_URL:-}" ]; then
  own_database=postgres://postgres@127.0.0.1:5432/postgres
  psql -q "$own_database" -c 'CREATE DATABASE broker_order_functions' >/dev/null 2>&1 || true
  export DATABASE_URL=postgres://postgres@127.0.0.1:5432/broker_order_functions
fi

# The object store: `broker dev`'s local S3 server, outside callgrind.
secret=order-functions-$RANDOM$RANDOM
BROKER_DEV_S3_SECRET=$secret RUST_LOG=error "$binary" dev --addr "127.0.0.1:$(free_port)" \
  --data-dir "$work/dev" --bucket order-functions >"$work/dev.log" 2>&1 &
pids+=($!)
endpoint=
for _ in $(seq 1 300); do
  endpoint=$(grep -so 'over S3 at http://[0-9.:]*' "$work/dev.log" | cut -d' ' -f4 || true)
  [ -n "$endpoint" ] && break
  sleep 0.1
done
[ -n "$endpoint" ] || { cat "$work/dev.log" >&2; echo "broker dev did not start" >&2; exit 1; }

# Waits until the broker on $1 is SERVING (or 120 s), as ECS's health
# check and the benchmark ask.
probe() {
  "$python" - "$1" <<'EOF'
import sys, time, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
deadline = time.time() + 120
while True:
    try:
        with grpc.insecure_channel(sys.argv[1]) as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
            if status == health_pb2.HealthCheckResponse.SERVING:
                break
    except grpc.RpcError:
        pass
    if time.time() > deadline:
        sys.exit("the broker did not become SERVING under callgrind within 120 s")
    time.sleep(0.2)
EOF
}

# `broker serve` as the benchmark runs it (one worker, errors only), then
# as it runs by default (a worker per core, info logs); each idle for a
# while with health checks every 100 ms and probes, then called.
profiles=()
for run in one-worker default; do
  port=$(free_port)
  if [ "$run" = one-worker ]; then settings=(TOKIO_WORKER_THREADS=1 RUST_LOG=error); else settings=(); fi
  env "${settings[@]}" BROKER_ADDR="127.0.0.1:$port" BROKER_HEALTH_INTERVAL=100ms \
    S3_BUCKET=order-functions S3_ENDPOINT_URL="$endpoint" AWS_REGION=eu-west-3 \
    AWS_ACCESS_KEY_ID=broker-dev AWS_SECRET_ACCESS_KEY="$secret" \
    valgrind --tool=callgrind --demangle=no --callgrind-out-file="$work/$run.%p" \
    "$binary" serve >"$work/$run.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  probe "127.0.0.1:$port" || { cat "$work/$run.log" >&2; exit 1; }
  sleep 2
  probe "127.0.0.1:$port"
  curl -fsS "http://127.0.0.1:$port/health" >/dev/null
  callgrind_control --dump "$pid" >/dev/null 2>&1
  # Calls: every kind the interop client makes, then the HTTP endpoints.
  "$python" tests/interop/python_client.py "127.0.0.1:$port" >/dev/null
  curl -fsS "http://127.0.0.1:$port/metrics" >/dev/null
  callgrind_control --dump "$pid" >/dev/null 2>&1
  for dump in 1 2; do
    for _ in $(seq 1 100); do [ -s "$work/$run.$pid.$dump" ] && break; sleep 0.1; done
    [ -s "$work/$run.$pid.$dump" ] || { echo "callgrind wrote no profile $dump for $run" >&2; exit 1; }
  done
  profiles+=("$work/$run.$pid.1:$work/$run.$pid.2")
done

# The functions of the broker binary each profile names, in order of first
# mention: those of the idle broker, then those only its calls ran.
mkdir -p build
"$python" - "$(basename "$binary")" "${profiles[@]}" >"$out" <<'EOF'
import re, sys
binary, pairs = sys.argv[1], [pair.split(":") for pair in sys.argv[2:]]
profiles = [idle for idle, _ in pairs] + [calls for _, calls in pairs]
seen, order = set(), []
for path in profiles:
    objects, names = {}, {}
    ob = cob = None
    for line in open(path, errors="replace"):
        m = re.match(r"(c?ob|c?fn)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
        if not m:
            continue
        kind, ident, name = m.groups()
        table = objects if kind.endswith("ob") else names
        if name is not None:
            table[ident] = name
        value = table.get(ident, "")
        if kind == "ob":
            ob = cob = value
        elif kind == "cob":
            cob = value
        else:
            obj = ob if kind == "fn" else cob
            if kind == "cfn":
                cob = ob
            if obj.endswith("/" + binary) and re.fullmatch(r"[A-Za-z_][\w.$]*", value) and value not in seen:
                seen.add(value)
                order.append(value)
for name in order:
    print(name)
EOF
echo "$out: $(wc -l <"$out") functions"
