#!/usr/bin/env bash
# Build once, and cache outside the clone, the real Kubernetes control plane that
# `make test-cluster` runs: kube-apiserver, kube-controller-manager and kubectl from Debian's
# source package `kubernetes` (the upstream tree with vendor/), plus Debian's etcd, Go, podman,
# runc and debootstrap.
#
#   scripts/setup-cluster.sh        # prints the folder holding bin/ on its last line
#
# The binaries are cached under $SLUICE_CLUSTER_CACHE (default ~/.cache/sluice-cluster), in a
# folder named by the source package's version, so only a fresh machine pays the build (7 to 14
# minutes on 2 cores, measured, with about 3 GB of disk while it builds; the source tree and Go's build
# cache are removed afterwards, leaving about 320 MB). Needs Debian, as root (apt-get).
#
# How the build goes: GOPATH mode (GO111MODULE=off, the tree at $GOPATH/src/k8s.io/kubernetes),
# `make generated_files` first (the build fails on openapi.GetOpenAPIDefinitions without it), then
# `go build` of the three commands with CGO_ENABLED=0.
set -Eeuo pipefail

CACHE="${SLUICE_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice-cluster}"
PACKAGES=(golang-go golang-github-modern-go-reflect2-dev rsync etcd-server dpkg-dev podman runc debootstrap iproute2 python3-yaml curl)
COMMANDS=(kube-apiserver kube-controller-manager kubectl)

log() { echo "setup-cluster: $*" >&2; }
die() { log "$*"; exit 1; }

command -v apt-get >/dev/null || die "this needs Debian's apt-get (packages: ${PACKAGES[*]})"
[[ $(id -u) == 0 ]] || die "this needs root, for apt-get"

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

# deb-src lines for the mirrors apt already uses, in a file of our own.
SRC_LIST=/etc/apt/sources.list.d/sluice-deb-src.sources
if [[ ! -f $SRC_LIST ]]; then
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f && $f != "$SRC_LIST" ]] || continue
    sed -n 's/^Types:.*\bdeb\b.*$/Types: deb-src/;p' "$f"
    echo
  done >"$SRC_LIST.tmp"
  if [[ -f /etc/apt/sources.list ]]; then
    grep -E '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' >/etc/apt/sources.list.d/sluice-deb-src.list || true
  fi
  mv "$SRC_LIST.tmp" "$SRC_LIST"
  updated=0
else
  updated=1
fi
if ((${#missing[@]} > 0)) || ((updated == 0)); then
  log "apt-get install ${missing[*]:-(nothing; refreshing deb-src)}"
  apt-get update -qq
  if ((${#missing[@]} > 0)); then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

VERSION="$(apt-cache showsrc kubernetes | sed -n 's/^Version: //p' | sort -V | tail -n 1)"
[[ -n $VERSION ]] || die "no source package 'kubernetes' in the deb-src lines of $SRC_LIST"
# "+reflect2-1.0.2": builds cached before that fix crash on custom resources; rebuild them.
DEST="$CACHE/kubernetes-$VERSION+reflect2-1.0.2"
if [[ -x $DEST/bin/kube-apiserver && -x $DEST/bin/kube-controller-manager && -x $DEST/bin/kubectl ]]; then
  log "cached: $DEST/bin"
  echo "$DEST"
  exit 0
fi

mkdir -p "$CACHE"
BUILD="$(mktemp -d "$CACHE/build.XXXXXX")"
trap 'rm -rf "$BUILD"' EXIT
log "building Kubernetes $VERSION from Debian's source package into $DEST (one time; about 15 minutes)"
(cd "$BUILD" && apt-get source -qq --download-only kubernetes >/dev/null &&
  dpkg-source --no-check -x ./*.dsc src >/dev/null)
export GOPATH="$BUILD/gopath" GOCACHE="$BUILD/gocache" GO111MODULE=off CGO_ENABLED=0
mkdir -p "$GOPATH/src/k8s.io"
mv "$BUILD/src" "$GOPATH/src/k8s.io/kubernetes"
cd "$GOPATH/src/k8s.io/kubernetes"
# NOTE: Kubernetes 1.20 vendors github.com/modern-go/reflect2 1.0.1, whose map iteration faults
# under Go >= 1.18 (modern-go/reflect2#24): kube-apiserver dies with "fatal error: fault" in
# mapiterinit as soon as it handles CRDs or custom resources. 1.0.2 fixes it; Debian ships it.
rm -rf vendor/github.com/modern-go/reflect2
cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 vendor/github.com/modern-go/reflect2
rm -f vendor/github.com/modern-go/reflect2/go.mod  # GOPATH mode, like the rest of vendor/
start=$SECONDS
log "make generated_files"
timeout 1800 make generated_files >"$BUILD/generate.log" 2>&1 || { tail -n 30 "$BUILD/generate.log" >&2; die "make generated_files failed"; }
mkdir -p "$BUILD/bin"
for cmd in "${COMMANDS[@]}"; do
  log "go build ./cmd/$cmd ($((SECONDS - start)) s so far)"
  timeout 1800 go build -o "$BUILD/bin/$cmd" "./cmd/$cmd" 2>"$BUILD/build.log" || { tail -n 30 "$BUILD/build.log" >&2; die "go build ./cmd/$cmd failed"; }
done
log "built in $((SECONDS - start)) s"
rm -rf "$DEST"
mkdir -p "$DEST"
mv "$BUILD/bin" "$DEST/bin"
# Earlier builds (another package version or recipe) are not used again.
find "$CACHE" -mindepth 1 -maxdepth 1 -name 'kubernetes-*' ! -path "$DEST" -exec rm -rf {} +
chmod -R a+rX "$DEST"
echo "$DEST"
