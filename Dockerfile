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
# The base images, as build arguments so that a machine without a registry can build from bases
# made locally (deploy/compose-test.sh does); the defaults are the published images.
ARG BUILD_IMAGE=rust:${RUST_VERSION}-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM ${BUILD_IMAGE} AS build
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

FROM ${RUNTIME_IMAGE} AS runtime
LABEL org.opencontainers.image.title="argilla-gateway" \
      org.opencontainers.image.description="Authenticating, workspace-checking reverse proxy for Argilla 1.x" \
      org.opencontainers.image.licenses="Apache-2.0"
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

# `--target prebuilt`: the static binary that the host built with
# `cargo build --release --locked --target <arch>-unknown-linux-musl` into target/docker-musl (as
# .ci/docker-check.sh does), for machines where no toolchain can be fetched inside a build.
# MUSL_TARGET names the host's target (aarch64-unknown-linux-musl on arm64).
FROM runtime AS prebuilt
ARG MUSL_TARGET=x86_64-unknown-linux-musl
COPY target/docker-musl/${MUSL_TARGET}/release/argilla-gateway /usr/local/bin/argilla-gateway

# The default: the binary compiled in the build stage above.
FROM runtime
COPY --from=build /out/argilla-gateway /usr/local/bin/argilla-gateway
