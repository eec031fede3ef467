# syntax=docker/dockerfile:1.7
#
# Sluice: ONNX model inference server (KServe v2 over HTTP :8000 and gRPC :8001).
#
# One Dockerfile, two variants (see docs/deploy.md):
#   docker build -t sluice:0.1.0 .                                   # VARIANT=cpu  (debian:bookworm-slim)
#   docker build --build-arg VARIANT=cuda -t sluice:0.1.0-cuda .     # VARIANT=cuda (CUDA 13 + cuDNN 9 runtime)
#
# Stages: chef -> planner -> builder (cargo-chef dependency caching), onnxruntime (runs
# scripts/setup-onnxruntime.sh, the same script developers run locally) and runtime-${VARIANT}.
# The Rust binary is identical for both variants (ONNX Runtime is loaded dynamically); only the
# ONNX Runtime libraries and the runtime base image differ.
#
# Offline (no registry): BINARY_SOURCE=context takes the binary and the ONNX Runtime libraries
# from a build context named sluice-dist instead of the builder and onnxruntime stages, and
# DEBIAN_IMAGE names a local base. scripts/test-image.sh builds it that way with podman, from a
# debootstrap base and the host's `cargo build --release` (docs/deploy.md):
#   podman build --format docker --pull=never --build-arg VARIANT=cpu --build-arg BINARY_SOURCE=context \
#     --build-arg DEBIAN_IMAGE=localhost/sluice-debootstrap:bookworm \
#     --build-context sluice-dist=DIR -t sluice:0.1.0 .
# DIR holds `sluice` and the libonnxruntime* files of .onnxruntime/lib (symlink included; for
# VARIANT=cuda, those of `scripts/setup-onnxruntime.sh gpu DIR`).
#
# The runtime image runs as uid/gid 10001 (numeric USER, checked by scripts/validate-deploy.sh)
# and works with a read-only root filesystem. Give it a writable /tmp (TMPDIR; TensorRT engine
# caches configured under /tmp land there) and nothing else:
#   docker run --rm --read-only --tmpfs /tmp -p 8000:8000 -p 8001:8001 sluice:0.1.0
# Kubernetes (deploy/base/deployment.yaml): readOnlyRootFilesystem: true plus an emptyDir at /tmp.
# Verified with strace: serving and inference write no file at all once ONNX Runtime's telemetry
# is off (ORT_DISABLE_TELEMETRY below); the home directory /nonexistent does not exist.

# ---- build arguments (pin base images by digest in CI, e.g. with Renovate) ------------------
ARG VARIANT=cpu
ARG RUST_VERSION=1.95
ARG CARGO_CHEF_VERSION=0.1.78
ARG DEBIAN_IMAGE=debian:bookworm-slim
# builder: build the binary and fetch ONNX Runtime in the stages below; context: take both from
# the build context `sluice-dist` (see the top of this file).
ARG BINARY_SOURCE=builder
# CUDA 13.0 + cuDNN 9 runtime on Ubuntu 24.04, matching onnxruntime-gpu 1.31.1 (CUDA 13 build).
# NVIDIA publishes this tag pattern as <cuda>-cudnn-runtime-<os>; check the exact patch release
# against the registry (hub.docker.com/r/nvidia/cuda/tags or nvcr.io/nvidia/cuda) before pinning.
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

# ---- Rust toolchain + cargo-chef ---------------------------------------------------------------
# Bookworm builder: its glibc (2.36) is not newer than either runtime base (bookworm 2.36,
# Ubuntu 24.04 2.39), so the binary runs on both.
FROM rust:${RUST_VERSION}-slim-bookworm AS chef
ARG CARGO_CHEF_VERSION
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}" \
    && rm -rf "${CARGO_HOME}/registry" "${CARGO_HOME}/git"
WORKDIR /src

# Compute the dependency "recipe" (Cargo.toml/Cargo.lock skeleton) from the full source tree.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# Build dependencies first (cached as long as Cargo.toml/Cargo.lock do not change), then Sluice.
FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# Only the server's dependencies: load-tests/ is a workspace member with its own dependencies.
RUN cargo chef cook --release --locked --package sluice --bin sluice --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --package sluice --bin sluice \
    && install -D -m 0755 target/release/sluice /out/sluice

# ---- ONNX Runtime shared libraries ---------------------------------------------------------------
# Runs the repository's own scripts/setup-onnxruntime.sh (pinned cp311/manylinux wheel, sha256
# checked; pip download with an explicit --python-version/--platform, so the host's python3
# version does not matter).
FROM ${DEBIAN_IMAGE} AS onnxruntime
ARG VARIANT
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Throw-away stage: unpinned distro packages only fetch a wheel that is itself checked by sha256.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates python3 python3-pip unzip \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY scripts/setup-onnxruntime.sh scripts/setup-onnxruntime.sh
# VARIANT (image naming: cpu|cuda) -> setup script flavour (cpu|gpu). The libraries go next to
# the binary (/opt/sluice/bin), one of the places the binary searches; the script also creates the
# unversioned libonnxruntime.so symlink that ORT_DYLIB_PATH names below.
RUN case "${VARIANT}" in \
        cpu) flavour=cpu ;; \
        cuda) flavour=gpu ;; \
        *) echo "VARIANT must be cpu or cuda, got '${VARIANT}'" >&2; exit 1 ;; \
    esac \
    && bash scripts/setup-onnxruntime.sh "${flavour}" /opt/sluice/bin \
    && test -r /opt/sluice/bin/libonnxruntime.so \
    && ls -l /opt/sluice/bin

# ---- the binary and its ONNX Runtime, from one of two sources --------------------------------------
# Only the stage that BINARY_SOURCE selects is built (BuildKit and buildah skip unused stages), so
# the default build never looks for sluice-dist and the offline one never pulls the Rust image.
FROM scratch AS binary-builder
COPY --from=onnxruntime /opt/sluice/bin/ /opt/sluice/bin/
COPY --from=builder /out/sluice /opt/sluice/bin/sluice

FROM scratch AS binary-context
# sluice-dist is a named build context (--build-context), not a stage.
# hadolint ignore=DL3022
COPY --from=sluice-dist / /opt/sluice/bin/

# hadolint ignore=DL3006
FROM binary-${BINARY_SOURCE} AS binary

# ---- runtime bases -------------------------------------------------------------------------------
FROM ${DEBIAN_IMAGE} AS runtime-cpu
ARG DEBIAN_IMAGE
LABEL org.opencontainers.image.base.name="${DEBIAN_IMAGE}"

FROM ${CUDA_IMAGE} AS runtime-cuda
ARG CUDA_IMAGE
LABEL org.opencontainers.image.base.name="${CUDA_IMAGE}"

# ---- final image ---------------------------------------------------------------------------------
# hadolint ignore=DL3006
FROM runtime-${VARIANT} AS runtime
ARG VARIANT
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=1970-01-01T00:00:00Z
ARG SOURCE=https://example.invalid/sluice
ARG LICENSES=NOASSERTION
LABEL org.opencontainers.image.title="sluice" \
      org.opencontainers.image.description="Sluice ONNX model inference server (KServe v2 HTTP :8000, gRPC :8001), ${VARIANT} variant" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.url="${SOURCE}" \
      org.opencontainers.image.documentation="${SOURCE}/blob/main/docs/deploy.md" \
      org.opencontainers.image.licenses="${LICENSES}" \
      org.opencontainers.image.vendor="Sluice"

# Fixed, numeric, non-root identity (Kubernetes runAsNonRoot can only verify a numeric USER).
RUN groupadd --system --gid 10001 sluice \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin sluice

# Everything is owned by root and read-only for uid 10001.
COPY --from=binary /opt/sluice/bin/ /opt/sluice/bin/
COPY models/ /models/

# Every CLI flag also reads its SLUICE_* variable; override them with `docker run -e` or the
# Kubernetes ConfigMap (deploy/base). ORT_DYLIB_PATH pins the ONNX Runtime library explicitly.
# ORT_DISABLE_TELEMETRY=1: otherwise ONNX Runtime (seen with 1.32 on Linux) starts its telemetry
# client, which looks up mobile.events.data.microsoft.com to upload events and tries to write a
# device id and an SQLite event store under $HOME/.cache plus $TMPDIR/.ses. Sluice itself makes
# no outbound connections (deploy/base/networkpolicy.yaml allows DNS only); checked by
# scripts/validate-deploy.sh.
ENV SLUICE_MODEL_REPOSITORY=/models \
    SLUICE_HTTP_PORT=8000 \
    SLUICE_GRPC_PORT=8001 \
    ORT_DYLIB_PATH=/opt/sluice/bin/libonnxruntime.so \
    ORT_DISABLE_TELEMETRY=1 \
    TMPDIR=/tmp

WORKDIR /opt/sluice
USER 10001:10001
EXPOSE 8000 8001
STOPSIGNAL SIGTERM

# The slim base has no curl/wget: the binary probes itself (`sluice healthcheck` exits 0 when the
# URL answers 2xx, 1 otherwise). Kubernetes ignores HEALTHCHECK and uses the probes in deploy/.
# The URL comes from SLUICE_HEALTHCHECK_URL (default http://127.0.0.1:8000/v2/health/ready); with
# TLS on, run with -e SLUICE_HEALTHCHECK_URL=https://127.0.0.1:8000/v2/health/ready.
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
    CMD ["/opt/sluice/bin/sluice", "healthcheck"]

ENTRYPOINT ["/opt/sluice/bin/sluice"]
CMD ["serve"]
