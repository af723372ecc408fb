# replica-relay container image: docker build -t replica-relay .
# Build stage: dependencies are compiled in their own layer, cached until Cargo.lock changes.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && cargo build --release --locked \
 && rm -rf src target/release/replica-relay target/release/deps/replica_relay-*
COPY src ./src
# The image's binary carries no debug information (most of its size); the symbols stay in the
# build stage, and the next stage exports them.
WORKDIR /src/target/release
RUN cargo build --release --locked \
 && objcopy --only-keep-debug replica-relay replica-relay.debug \
 && objcopy --strip-debug --add-gnu-debuglink=replica-relay.debug replica-relay

# The binary's debug symbols, for a debugger or a backtrace with file and line:
#   docker build --target symbols --output type=local,dest=symbols .
FROM scratch AS symbols
COPY --from=build /src/target/release/replica-relay.debug /

# Runtime stage: a small Debian, a non-root user, the store on a volume.
FROM debian:bookworm-slim
# libssl3: the compactor runs the master image's own redis-server or valkey-server (copied in by
# an init container, see deploy/kubernetes/master.yaml), which the official images link against
# OpenSSL 3. Not pinned: each build takes the release's security updates.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl3 \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 relay \
 && useradd --system --uid 10001 --gid relay --home-dir /data --shell /usr/sbin/nologin relay \
 && mkdir /data \
 && chown relay:relay /data
COPY --from=build /src/target/release/replica-relay /usr/local/bin/replica-relay
COPY config/relay.toml /etc/replica-relay/relay.example.toml
# Listen on all interfaces inside the container. Protected mode stays on: set
# REPLICA_RELAY_REQUIREPASS (replicas use it as their masterauth), or, on a private network
# only, REPLICA_RELAY_PROTECTED_MODE=no. The master: REPLICA_RELAY_REPLICAOF="host port".
ENV REPLICA_RELAY_DIR=/data \
    REPLICA_RELAY_BIND=0.0.0.0 \
    REPLICA_RELAY_METRICS_BIND=0.0.0.0
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 6380 9480
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 CMD ["replica-relay", "healthcheck"]
ENTRYPOINT ["replica-relay"]
