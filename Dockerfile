# syntax=docker/dockerfile:1
#
# snaproll's container image: one static binary on distroless/static, running as a non-root
# user (no shell, no package manager, no libc).
#
# The binary is static because every C dependency is vendored and built by cargo (libgit2,
# OpenSSL for https and libssh2, zlib, the mimalloc allocator; see Cargo.toml) and linked
# against musl. Two ways to get it:
#   - BINARY=source (default): compile it here, natively for the build platform's architecture
#     (x86_64 or aarch64 -unknown-linux-musl, with musl-tools for the C parts). This is what
#     `docker build -t snaproll .` and ci.yml do.
#   - BINARY=prebuilt: copy dist/linux-<arch>/snaproll from the build context, one per target
#     platform. The release workflow builds the musl binaries natively (an x86_64 and an arm64
#     runner) and assembles the multi-architecture image from them, so nothing is ever compiled
#     under QEMU emulation.
#
# Built only in GitHub Actions (.github/workflows/ci.yml on every pull request, release.yml on
# version tags); the development machines have no Docker.

ARG RUST_VERSION=1.90
ARG BINARY=source

FROM rust:${RUST_VERSION}-bookworm AS build
# musl-tools: the musl C compiler for the vendored C libraries; perl and make (in the base
# image) build OpenSSL.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
RUN rustup target add "$(uname -m)-unknown-linux-musl"
WORKDIR /src
COPY . .
# The cache mounts keep the registry and target directory across builds on one builder; the
# binary is copied out of the cached target directory because cache mounts do not persist
# into the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(uname -m)-unknown-linux-musl" \
 && export "CC_$(echo "$target" | tr - _)=musl-gcc" \
 && cargo build --release --locked --bin snaproll --target "$target" \
 && install -D -m 0755 "target/$target/release/snaproll" /out/snaproll \
 && if ldd /out/snaproll 2>/dev/null | grep -q '=>'; then echo "not static" >&2; exit 1; fi

FROM scratch AS source
COPY --from=build /out/snaproll /snaproll

FROM scratch AS prebuilt
ARG TARGETARCH
COPY dist/linux-${TARGETARCH}/snaproll /snaproll

FROM ${BINARY} AS binary

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="snaproll" \
      org.opencontainers.image.description="Dataset rollouts on Kubernetes with volume snapshots" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=binary --chmod=0755 /snaproll /usr/local/bin/snaproll
# 65532 is distroless's `nonroot` user; `snaproll install` renders a CronJob that runs as it,
# with a read-only root file system and /tmp as an emptyDir.
USER 65532:65532
ENV HOME=/tmp
ENTRYPOINT ["/usr/local/bin/snaproll"]
CMD ["--help"]
