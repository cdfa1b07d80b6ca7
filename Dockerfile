# syntax=docker/dockerfile:1
#
# argilla-gateway: a static (musl) release binary on distroless/static, run as a non-root user.
#
#   docker build -t argilla-gateway .
#   docker run --rm -i argilla-gateway hash-password      # bcrypt hash for users.yml
#
# The whole stack (Elasticsearch, Argilla 1.5, the gateway): docker-compose.yml, deploy/README.md.
#
# Image layout:
#   /usr/local/bin/argilla-gateway           the binary (ENTRYPOINT; default command `serve`)
#   /etc/argilla-gateway/gateway.toml        the default configuration (ARGILLA_GATEWAY_CONFIG)
#   /etc/argilla-gateway/users/users.yml     the users file: mount its FOLDER, read-only
# Environment variables override gateway.toml (see README.md, Configuration).

# Keep equal to `rust-version` in Cargo.toml (.ci/docker-check.sh checks it).
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
# musl-tools: the C compiler for ring's C and assembly parts on the musl target. Debian
# stable's own version; the base image tag pins the release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "$(uname -m)-unknown-linux-musl"
WORKDIR /src
# Only what the release build reads (.dockerignore keeps the context to these, too).
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
COPY src ./src
# A static binary: it runs on distroless/static and needs no libc in the image.
# The registry and target folders are BuildKit caches, so rebuilds after a source change only
# compile this crate.
ENV CARGO_PROFILE_RELEASE_STRIP=symbols
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --target "$(uname -m)-unknown-linux-musl" \
 && install -D -m 0755 "target/$(uname -m)-unknown-linux-musl/release/argilla-gateway" \
        /out/argilla-gateway

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="argilla-gateway" \
      org.opencontainers.image.description="Authenticating, workspace-checking reverse proxy for Argilla 1.x" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/argilla-gateway /usr/local/bin/argilla-gateway
COPY gateway.toml /etc/argilla-gateway/gateway.toml
ENV ARGILLA_GATEWAY_CONFIG=/etc/argilla-gateway/gateway.toml \
    ARGILLA_GATEWAY_LISTEN=0.0.0.0:6900 \
    ARGILLA_LOCAL_AUTH_USERS_DB_FILE=/etc/argilla-gateway/users/users.yml
# distroless "nonroot" (65532), numeric so that Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
EXPOSE 6900
# The binary probes its own /healthz (plain HTTP on the configured listen port): no curl needed.
HEALTHCHECK --interval=15s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/argilla-gateway", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/argilla-gateway"]
CMD ["serve"]
