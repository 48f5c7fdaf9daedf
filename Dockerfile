# syntax=docker/dockerfile:1
# One image for the broker and the three agents.
#   docker build -t resource-broker .
#   docker run -p 8000:8000 -e S3_BUCKET=... -e POSTGRES_HOST=... resource-broker          # broker serve
#   docker run resource-broker orchestrator                                                # an agent

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Dependencies first, against stub sources, so that this layer is reused
# until Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
RUN mkdir -p src/bin \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && for agent in orchestrator extractor archivist; do echo 'fn main() {}' > "src/bin/${agent}.rs"; done \
    && cargo build --profile dist --locked --bins \
    && rm -rf src
# Then the real sources, and the order the linker lays the broker's
# functions out in (build.rs; scripts/order-functions.sh).
COPY build ./build
COPY src ./src
RUN touch src/main.rs src/lib.rs \
    && cargo build --profile dist --locked --bins \
    && mkdir -p /out \
    && cp target/dist/broker target/dist/orchestrator target/dist/extractor target/dist/archivist /out/

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin broker \
    && install -d -o broker -g broker -m 0700 /run/broker
COPY --from=build /out/ /usr/local/bin/
# Task-private files (the access policy the ECS init step writes for
# BROKER_POLICY_FILE): a volume, so that Fargate's bind mount there keeps
# this owner and mode under a read-only root file system.
VOLUME ["/run/broker"]
USER 10001
ENV BROKER_ADDR=0.0.0.0:8000 \
    BROKER_LOG_FORMAT=json
EXPOSE 8000
# Liveness: the broker answers on its port (GET /metrics is always 200).
# Not the gRPC overall health, which is NOT_SERVING while S3 or PostgreSQL
# is down: restarting the broker cannot fix a backend (readiness is
# `broker healthcheck --addr 127.0.0.1:8000`, or GET /health). Agents
# override it with `broker healthcheck --addr 127.0.0.1:PORT --http-path /health`.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["broker", "healthcheck", "--addr", "127.0.0.1:8000", "--http-path", "/metrics"]
# Exec form: the process is PID 1 and receives SIGTERM itself (graceful drain).
CMD ["broker", "serve"]
