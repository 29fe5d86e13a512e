# syntax=docker/dockerfile:1
#
# snaproll's container image: the binary on distroless/cc, running as a non-root user.
#
# Why distroless/cc and not a fully static (musl) binary on distroless/static: git2's `https`
# and `ssh` features link OpenSSL (openssl-sys, also used by libssh2), and a static musl OpenSSL
# build needs a musl cross toolchain and a vendored OpenSSL. distroless/cc-debian12 carries exactly
# what the glibc binary needs (glibc, libgcc, libssl3, CA certificates) and nothing else: no
# shell, no package manager. The builder is Debian 12 too, so the libssl it links against is the
# one the runtime image has.
#
# Built (and pushed on release tags) by .github/workflows/release.yml; ci.yml builds it without
# pushing on every pull request. Locally: docker build -t snaproll .

ARG RUST_VERSION=1.90

FROM rust:${RUST_VERSION}-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The cache mounts keep the registry and target directory across builds on one builder; the
# binary is copied out of the cached target directory because cache mounts do not persist
# into the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin snaproll \
 && install -D -m 0755 target/release/snaproll /out/snaproll

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="snaproll" \
      org.opencontainers.image.description="Dataset rollouts on Kubernetes with volume snapshots" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/snaproll /usr/local/bin/snaproll
# 65532 is distroless's `nonroot` user; `snaproll install` renders a CronJob that runs as it,
# with a read-only root file system and /tmp as an emptyDir.
USER 65532:65532
ENV HOME=/tmp
ENTRYPOINT ["/usr/local/bin/snaproll"]
CMD ["--help"]
