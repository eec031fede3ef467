#!/usr/bin/env bash
# make test-image: build Sluice's container image with podman, offline, and run it as Kubernetes
# would (read-only root, uid 10001, no capabilities, /tmp the only writable path) in a network
# namespace of its own that a real HTTP client on the host reaches through a veth pair.
#
#   scripts/test-image.sh      # from anywhere; exit status != 0 on any failure
#
# 1. Debian packages, installed with apt-get when missing: podman, runc, debootstrap, iproute2,
#    python3, binutils, curl.
# 2. The base image: Debian bookworm made by `debootstrap --variant=minbase` from the mirror apt
#    already uses, slimmed (apt lists and caches, documentation but its copyright files, man
#    pages, locales), made once and cached as a tarball under $SLUICE_CLUSTER_CACHE/image/ (default
#    ~/.cache/sluice-cluster), keyed by a hash of the recipe below; imported into podman as
#    localhost/sluice-debootstrap:bookworm when podman lacks it. No registry is used.
# 3. `cargo build --release --locked --bin sluice` on the host (bookworm: the glibc the base has)
#    and the ONNX Runtime libraries of .onnxruntime/lib (`make setup`) as the build context
#    sluice-dist, and `podman build --build-arg BINARY_SOURCE=context` of the Dockerfile's
#    runtime stage (--format docker: the OCI format has no HEALTHCHECK). The default
#    `docker build .` path is unchanged; this one skips the builder and onnxruntime stages.
# 4. The container: --read-only with a tmpfs at /tmp only, --cap-drop all, no-new-privileges, the
#    image's USER (checked: uid 10001 in /proc), in network namespace sluice-image-$$ whose veth
#    peer on the host is $HOST_ADDR. Checks: `podman healthcheck run` passes, KServe v2 metadata
#    and readiness, an inference on each bundled model with the answers of models/README.md
#    (scripts/image-proof.py serve), then SIGTERM with requests in flight (image-proof.py
#    drain), on the timeline of docs/deploy.md (SLUICE_SHUTDOWN_DELAY_SECS=5, as deploy/base, and
#    clients that stop when readiness turns 503): none fails, a request held open across the
#    listeners' close gets 200, the log shows the drain, the container exits 0.
# 5. Prints the image's size (podman's, the base's, the layers on top, and `podman save | gzip -1`,
#    about what a registry stores) and writes it to $SLUICE_CLUSTER_CACHE/image/last-run.txt.
#
# Bounded in time (every step under `timeout`, every wait polls with a deadline, no sleeps) and
# always torn down (trap: container, network namespace, veth, work folder; the image tag
# localhost/sluice:test-image stays, for the layer cache). Needs Debian x86_64, as root.
# Environment: SLUICE_CLUSTER_CACHE, SLUICE_DEBIAN_MIRROR (default: the first URI of apt's
# sources, else http://deb.debian.org/debian), SLUICE_IMAGE_STRIP=1 (strip the binary's debug
# line tables in the image; default keeps them, as the docker build does), CARGO_TARGET_DIR.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
START=$SECONDS

CACHE="${SLUICE_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice-cluster}"
SUITE=bookworm
BASE_IMAGE="localhost/sluice-debootstrap:$SUITE"
IMAGE=localhost/sluice:test-image
CTR="sluice-test-image-$$"
NETNS="sluice-image-$$"
HOST_IF="slimg$$h"
NS_IF="slimg$$c"
# A /30 nothing else here uses (checked below): the host end and the container's end.
HOST_ADDR=10.213.250.1
CTR_ADDR=10.213.250.2
URL="http://$CTR_ADDR:8000"
PACKAGES=(podman runc debootstrap iproute2 python3 binutils curl)
# runc, not crun: crun fails on this kind of machine's cgroup v1 set-up.
PODMAN=(podman --runtime runc)
# As deploy/base's ConfigMap: after SIGTERM the listeners stay open this long while readiness is
# false, so a balancer that polls readiness stops sending before they close (image-proof.py drain).
SHUTDOWN_DELAY=5
# Upper bounds per step; a cached run takes about 15 s in all.
T_APT=600 T_DEBOOTSTRAP=900 T_CARGO=2400 T_BUILD=600 T_READY=180 T_DRAIN=240

log() { echo "test-image: $*" >&2; }
die() {
  log "FAIL $*"
  exit 1
}
step() { log "[$((SECONDS - START)) s] $*"; }

[[ $(uname -m) == x86_64 ]] || die "x86_64 only (the pinned ONNX Runtime wheel is)"
[[ $(id -u) == 0 ]] || die "this needs root (apt-get, podman's rootful storage, ip netns)"
command -v apt-get >/dev/null || die "this needs Debian's apt-get (packages: ${PACKAGES[*]})"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/sluice-image.XXXXXX")"
CTR_STARTED=0
cleanup() {
  local rc=$?
  if ((CTR_STARTED)); then
    if ((rc != 0)); then
      log "last lines of the container's log:"
      "${PODMAN[@]}" logs --tail 30 "$CTR" >&2 2>&1 || true
    fi
    timeout 60 "${PODMAN[@]}" rm --force --time 5 "$CTR" >/dev/null 2>&1 || true
  fi
  ip netns delete "$NETNS" 2>/dev/null || true
  ip link delete "$HOST_IF" 2>/dev/null || true
  rm -rf "$WORK"
  if ((rc == 0)); then
    step "passed"
  else
    log "FAILED after $((SECONDS - START)) s"
  fi
}
trap cleanup EXIT
# A signal (an outer `timeout`, ^C) ends the script through the EXIT trap too.
trap 'exit 143' TERM
trap 'exit 130' INT

# ---- 1. packages --------------------------------------------------------------------------------
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} > 0)); then
  step "apt-get install ${missing[*]}"
  timeout "$T_APT" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive timeout "$T_APT" \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[[ -r .onnxruntime/lib/libonnxruntime.so ]] || die ".onnxruntime/lib is empty: run 'make setup' first"
mkdir -p "$CACHE/image"
exec 9>"$CACHE/image/.lock"
flock --nonblock 9 || die "another scripts/test-image.sh holds $CACHE/image/.lock"

# ---- 2. the base image --------------------------------------------------------------------------
mirror() {
  if [[ -n ${SLUICE_DEBIAN_MIRROR:-} ]]; then
    echo "$SLUICE_DEBIAN_MIRROR"
    return
  fi
  # The first deb.debian.org-style URI apt uses for the main archive (not -security).
  local uri
  uri="$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null |
    tr ' ' '\n' | grep -v -- '-security' | head -n 1 || true)"
  [[ -n $uri ]] || uri="$(awk '$1 == "deb" && $3 !~ /-security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)"
  echo "${uri:-http://deb.debian.org/debian}"
}
MIRROR="$(mirror)"
# Anything that changes what the base holds goes into this recipe; its hash names the cache.
# (The mirror is not part of it: any Debian mirror serves the same suite.)
RECIPE="suite=$SUITE variant=minbase slim=apt-lists,apt-cache,doc-but-copyright,man,info,locale v=1"
KEY="$(printf '%s' "$RECIPE" | sha256sum | cut -c1-12)"
BASE_TAR="$CACHE/image/debootstrap-$SUITE-$KEY.tar"
BASE_TAG="$BASE_IMAGE-$KEY"

make_base() {
  local root="$CACHE/image/rootfs.$$"
  # What an interrupted run left (runs are serialised by the lock above).
  rm -rf "$CACHE"/image/rootfs.* "$BASE_TAR.tmp"
  step "debootstrap --variant=minbase $SUITE from $MIRROR (once; a few minutes)"
  if ! timeout "$T_DEBOOTSTRAP" debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" \
    >"$WORK/debootstrap.log" 2>&1; then
    tail -n 20 "$WORK/debootstrap.log" >&2
    rm -rf "$root"
    die "debootstrap failed"
  fi
  # What debian:bookworm-slim also leaves out; the copyright files stay.
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
    "$root"/var/log/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/*
  find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
  # shellcheck disable=SC2016 # dpkg-query's own format, not the shell's
  dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Package} ${Version}\n' >"$BASE_TAR.packages"
  date -u +%Y-%m-%dT%H:%M:%SZ >"$BASE_TAR.made"
  tar --numeric-owner --xattrs -C "$root" -cf "$BASE_TAR.tmp" .
  mv "$BASE_TAR.tmp" "$BASE_TAR"
  rm -rf "$root"
}

if [[ ! -s $BASE_TAR ]]; then
  make_base
fi
if ! "${PODMAN[@]}" image exists "$BASE_TAG"; then
  step "podman import $BASE_TAR as $BASE_TAG"
  timeout 300 "${PODMAN[@]}" import --quiet --change 'CMD ["/bin/bash"]' \
    --message "debootstrap --variant=minbase $SUITE, made $(cat "$BASE_TAR.made" 2>/dev/null || echo '?')" \
    "$BASE_TAR" "$BASE_TAG" >/dev/null
fi
"${PODMAN[@]}" tag "$BASE_TAG" "$BASE_IMAGE"
step "base $BASE_IMAGE: $(wc -l <"$BASE_TAR.packages") packages, made $(cat "$BASE_TAR.made")"

# ---- 3. the binary and the image ----------------------------------------------------------------
step "cargo build --release --locked --bin sluice"
timeout "$T_CARGO" cargo build --release --locked --bin sluice --quiet
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/sluice"
[[ -x $BIN ]] || die "no binary at $BIN"
# The binary links against the host's glibc: it runs on the base only if that is not older.
host_glibc="$(getconf GNU_LIBC_VERSION | awk '{print $2}')"
base_glibc="$(awk '$1 == "libc6" {print $2}' "$BASE_TAR.packages")"
dpkg --compare-versions "$host_glibc" le "${base_glibc%%-*}" ||
  die "the host's glibc $host_glibc is newer than the base's ($base_glibc): build on Debian $SUITE"
DIST="$WORK/sluice-dist"
mkdir -p "$DIST"
cp -a .onnxruntime/lib/libonnxruntime* "$DIST/"
if [[ ${SLUICE_IMAGE_STRIP:-0} == 1 ]]; then
  strip --strip-debug -o "$DIST/sluice" "$BIN"
else
  cp "$BIN" "$DIST/sluice"
fi

image_ids() { "${PODMAN[@]}" images --all --quiet --no-trunc | sed 's/^sha256://' | sort -u; }
OLD_ID="$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
BEFORE="$(image_ids)"
step "podman build --build-arg BINARY_SOURCE=context (base $BASE_IMAGE)"
# VARIANT=cpu is the Dockerfile's default, but podman 4.3 (buildah 1.28) resolves `FROM
# runtime-${VARIANT}` when it picks the stages to build only from --build-arg, not from defaults.
if ! timeout "$T_BUILD" "${PODMAN[@]}" build --format docker --pull=never --network none \
  --build-arg VARIANT=cpu --build-arg BINARY_SOURCE=context --build-arg DEBIAN_IMAGE="$BASE_IMAGE" \
  --build-arg REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
  --build-context sluice-dist="$DIST" --tag "$IMAGE" --file Dockerfile . >"$WORK/build.log" 2>&1; then
  tail -n 30 "$WORK/build.log" >&2
  die "podman build failed"
fi
NEW_ID="$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$IMAGE")"
# podman's layer cache keeps an image per build step and stage; each new binary would leave ~100
# MB behind. The images our builds made are listed in $OURS; those no longer in the new image's
# parent chain go (a few passes: a parent goes once its children have). Nobody else's images are
# touched.
OURS="$CACHE/image/podman-images"
{
  cat "$OURS" 2>/dev/null || true
  comm -13 <(printf '%s\n' "$BEFORE") <(image_ids)
  [[ -z $OLD_ID ]] || echo "$OLD_ID"
} | sort -u >"$WORK/ours"
id="$NEW_ID"
while [[ -n $id ]]; do
  echo "$id"
  id="$("${PODMAN[@]}" image inspect --format '{{.Parent}}' "$id" 2>/dev/null || true)"
done | sort -u >"$WORK/chain"
for _ in 1 2 3; do
  comm -23 "$WORK/ours" "$WORK/chain" | xargs -r "${PODMAN[@]}" rmi >/dev/null 2>&1 || true
done
comm -12 "$WORK/ours" <(image_ids) >"$OURS"
[[ "$("${PODMAN[@]}" image inspect --format '{{.Config.User}}' "$IMAGE")" == 10001:10001 ]] ||
  die "the image's USER is not 10001:10001"
"${PODMAN[@]}" image inspect --format '{{json .Config.Healthcheck}}' "$IMAGE" | grep -q healthcheck ||
  die "the image lost its HEALTHCHECK (built without --format docker?)"

# ---- 4. run it ----------------------------------------------------------------------------------
if ip -4 -o addr show | grep -q ' 10\.213\.250\.'; then
  die "10.213.250.0/30 is already in use here (another run?): $(ip -4 -o addr show | grep ' 10\.213\.250\.')"
fi
ip netns add "$NETNS"
ip link add "$HOST_IF" type veth peer name "$NS_IF"
ip link set "$NS_IF" netns "$NETNS"
ip addr add "$HOST_ADDR/30" dev "$HOST_IF"
ip link set "$HOST_IF" up
ip -n "$NETNS" addr add "$CTR_ADDR/30" dev "$NS_IF"
ip -n "$NETNS" link set "$NS_IF" up
ip -n "$NETNS" link set lo up

step "podman run --read-only (tmpfs /tmp only) --cap-drop all in netns $NETNS ($CTR_ADDR)"
CTR_STARTED=1
# --health-interval disable: no systemd timer (there may be no systemd); the check runs below.
# Without systemd podman 4.3 still logs that it cannot reach it, hence stderr to a file.
if ! "${PODMAN[@]}" run --detach --name "$CTR" \
  --network "ns:/run/netns/$NETNS" \
  --read-only --read-only-tmpfs=false --tmpfs /tmp:rw,nosuid,nodev,size=64m \
  --cap-drop all --security-opt no-new-privileges \
  --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 \
  --health-interval disable --stop-timeout 60 \
  --env SLUICE_SHUTDOWN_DELAY_SECS="$SHUTDOWN_DELAY" \
  "$IMAGE" >/dev/null 2>"$WORK/run.err"; then
  cat "$WORK/run.err" >&2
  die "podman run failed"
fi

state() { "${PODMAN[@]}" inspect --format '{{.State.Status}}' "$CTR" 2>/dev/null || echo gone; }
ready() {
  local code
  code="$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$URL/v2/health/ready" || true)"
  [[ $code == 200 ]]
}
deadline=$((SECONDS + T_READY))
until ready; do
  [[ $(state) == running ]] || die "the container stopped before it was ready ($(state))"
  ((SECONDS < deadline)) || die "not ready within $T_READY s"
  sleep 0.2 # the poll interval; ready() decides
done
step "ready at $URL"

pid="$("${PODMAN[@]}" inspect --format '{{.State.Pid}}' "$CTR")"
uids="$(awk '/^Uid:/ {print $2, $3, $4, $5}' "/proc/$pid/status")"
gids="$(awk '/^Gid:/ {print $2, $3, $4, $5}' "/proc/$pid/status")"
[[ $uids == "10001 10001 10001 10001" && $gids == "10001 10001 10001 10001" ]] ||
  die "the server runs as uid [$uids] gid [$gids], not 10001"
caps="$(awk '/^CapEff:/ {print $2}' "/proc/$pid/status")"
[[ $caps == 0000000000000000 ]] || die "the server has capabilities: CapEff $caps"
inside_id="$(timeout 60 "${PODMAN[@]}" exec "$CTR" id)"
[[ $inside_id == "uid=10001(sluice) gid=10001(sluice) groups=10001(sluice)" ]] ||
  die "id inside the container: $inside_id"
if timeout 60 "${PODMAN[@]}" exec "$CTR" touch /opt/sluice/written 2>/dev/null; then
  die "the root filesystem is writable"
fi
timeout 60 "${PODMAN[@]}" exec "$CTR" touch /tmp/written || die "/tmp is not writable"
log "process uid/gid 10001 (from /proc/$pid/status), no capabilities, root read-only, /tmp writable"

timeout 60 "${PODMAN[@]}" healthcheck run "$CTR" || die "podman healthcheck run: unhealthy"
health="$("${PODMAN[@]}" inspect --format '{{.State.Health.Status}}' "$CTR" 2>/dev/null)"
[[ $health == healthy ]] || die "podman healthcheck run passed, but the container's health is '$health'"
log "podman healthcheck run: passed (the image's HEALTHCHECK, sluice healthcheck); health: $health"

timeout 120 python3 scripts/image-proof.py serve "$URL"

step "SIGTERM with requests in flight"
timeout "$T_DRAIN" python3 scripts/image-proof.py drain "$URL" 3 \
  --term "${PODMAN[@]}" kill --signal TERM "$CTR" \
  --logs "${PODMAN[@]}" logs "$CTR"
exit_code="$(timeout 90 "${PODMAN[@]}" wait "$CTR")" || die "the container did not exit within 90 s"
[[ $exit_code == 0 ]] || die "the container exited with $exit_code"
"${PODMAN[@]}" logs "$CTR" 2>&1 | grep -q 'stopped' || die "no 'stopped' line in the log"
if "${PODMAN[@]}" logs "$CTR" 2>&1 | grep -q 'grace period over'; then
  die "the grace period ran out with requests open"
fi
log "container exited 0; log: $("${PODMAN[@]}" logs "$CTR" 2>&1 | grep -E 'shutting down|stopped' | tr '\n' '|')"

# ---- 5. sizes ----------------------------------------------------------------------------------
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
size="$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE")"
base_size="$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$BASE_IMAGE")"
bin_size="$(stat -c %s "$DIST/sluice")"
ort_size="$(du -bc "$DIST"/libonnxruntime* | tail -n 1 | cut -f1)"
models_size="$(du -bs models | cut -f1)"
gz_size="$(timeout 300 "${PODMAN[@]}" save --format docker-archive "$IMAGE" 2>/dev/null | gzip -1 | wc -c)"
layers="$("${PODMAN[@]}" image inspect --format '{{len .RootFS.Layers}}' "$IMAGE")"
stripped=""
[[ ${SLUICE_IMAGE_STRIP:-0} != 1 ]] || stripped=", stripped of debug info"
report="image $IMAGE ($NEW_ID): $(mib "$size") ($size bytes, $layers layers, uncompressed as podman counts it);
  base $BASE_IMAGE: $(mib "$base_size"); on top of it: $(mib $((size - base_size)))
  (sluice $(mib "$bin_size")$stripped, ONNX Runtime $(mib "$ort_size"), models $(mib "$models_size"));
  podman save (docker-archive) | gzip -1, about what a registry stores: $(mib "$gz_size")
run took $((SECONDS - START)) s ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
printf '%s\n' "$report" | tee "$CACHE/image/last-run.txt" >&2
