#!/usr/bin/env bash
# The server's own cost per request, measured with the server and the load
# generator on separate cores, in one run:
#
#   scripts/bench-pinned.sh            # or: make bench-pinned
#
# Steps (every process pinned with `taskset -c`):
#   1. raw ONNX Runtime on the server's cores (`benches/compare.rs raw`):
#      rows/s of iris and dense at batch 1, 8, 32, 64, one session per core;
#   2. the echo floors on the server's cores, driven with the same request
#      bodies as step 3: `sluice-load --serve-echo` (raw TCP, HTTP/1.1: it
#      answers a fixed body without parsing the request, the least any HTTP
#      server can cost here) over REST JSON and REST binary, and
#      `--serve-echo-grpc` (HTTP/2 through the `h2` crate, a fixed gRPC
#      answer after reading the body undecoded: the least a gRPC server on
#      h2 can cost) over gRPC;
#   3. `sluice serve --model-repository models` on the server's cores, iris
#      and dense over REST JSON, REST binary and gRPC at each concurrency;
#   4. (BATCHING_OFF=1, the default) dense over REST binary and gRPC against
#      a second server with `max_batch_size = 0`, for batching on against off.
#
# `sluice-load --server-pid` reads the serving process's CPU time (utime +
# stime from /proc/<pid>/stat) before and after each measured step, so "CPU
# µs/req" is the server's cost alone whatever the generator spends. Printed
# per step: req/s, rows/s, p50/p99, CPU µs per request, that CPU against the
# echo floor's at the same concurrency and protocol (gRPC also against the
# REST binary floor, as runs before the gRPC floor existed were), rows/s against raw
# ONNX Runtime at its best batch on the same cores, and, for one-row
# requests, against the floor-limited rate 1 / (raw µs per row + floor CPU
# µs per request). A JSON summary of every figure goes to $OUTPUT if set.
#
# Environment:
#   SERVER_CORES  cores for the server, the echo endpoint and raw ORT (default 0)
#   LOAD_CORES    cores for the generator (default: every other core; with one
#                 core, no pinning and a warning)
#   SWEEP         concurrencies (default 1,16,64)   MODELS (default iris,dense)
#   PROTOCOLS     default rest-json,rest-binary,grpc
#   DURATION      measured seconds per step (default 5)  WARMUP (default 1)
#   RAW_SECS      seconds per raw point (default 2)   BATCHING_OFF (default 1)
#   PROFILE       release (default) or debug: which builds to run
#   SKIP_BUILD=1  use the binaries already built    OUTPUT  summary JSON path
#   SLUICE_BIN    the server binary to measure (default target/$PROFILE/sluice),
#                 e.g. a copy built from an earlier commit, for before/after
#   RAW_BIN       the raw-ORT runner (default: the `compare` bench, built)
#   SMOKE=1       a check that the script works, not a measurement: debug
#                 builds, c=16, 1 s per step, iris only, RAW_SECS 0.3
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
if [[ "${SMOKE:-0}" == 1 ]]; then
    : "${PROFILE:=debug}" "${SWEEP:=16}" "${DURATION:=1}" "${WARMUP:=0.2}"
    : "${MODELS:=iris}" "${RAW_SECS:=0.3}" "${BATCHING_OFF:=0}"
fi
PROFILE="${PROFILE:-release}"
SWEEP="${SWEEP:-1,16,64}"
MODELS="${MODELS:-iris,dense}"
PROTOCOLS="${PROTOCOLS:-rest-json,rest-binary,grpc}"
DURATION="${DURATION:-5}"
WARMUP="${WARMUP:-1}"
export RAW_SECS="${RAW_SECS:-2}"
BATCHING_OFF="${BATCHING_OFF:-1}"

ncpu="$(nproc)"
SERVER_CORES="${SERVER_CORES:-0}"
if [[ -z "${LOAD_CORES:-}" ]]; then
    if ((ncpu > 1)); then LOAD_CORES="1-$((ncpu - 1))"; else LOAD_CORES=""; fi
fi
pin_server=(taskset -c "$SERVER_CORES")
pin_load=(taskset -c "$LOAD_CORES")
if [[ -z "$LOAD_CORES" ]] || ! command -v taskset >/dev/null; then
    echo "warning: one core or no taskset: nothing pinned, figures mix server and generator" >&2
    pin_server=()
    pin_load=()
fi

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cargo_profile=()
[[ "$PROFILE" == release ]] && cargo_profile=(--release)
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    timeout 1800 cargo build "${cargo_profile[@]}" --locked --bin sluice -p sluice
    timeout 1800 cargo build "${cargo_profile[@]}" --locked -p sluice-load --bin sluice-load
fi
# The raw-ORT runner is the `compare` bench binary (`cargo bench` builds it
# in the bench profile, `cargo test` in the debug one); find its path.
if [[ "$PROFILE" == release ]]; then build_bench=(cargo bench --no-run); else build_bench=(cargo test --no-run); fi
[[ -n "${RAW_BIN:-}" ]] || RAW_BIN="$(timeout 1800 "${build_bench[@]}" --locked --bench compare --message-format=json 2>/dev/null |
    "$PYTHON" -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "compare" and m.get("executable"):
        print(m["executable"])')"
SLUICE="${SLUICE_BIN:-target/$PROFILE/sluice}"
LOAD="target/$PROFILE/sluice-load"
for b in "$SLUICE" "$LOAD" "$RAW_BIN"; do
    [[ -x "$b" ]] || { echo "missing binary ${b:-compare bench}" >&2; exit 1; }
done

# free_port, wait_ready, write_input
# shellcheck source=scripts/profile-lib.sh
source "$ROOT/scripts/profile-lib.sh"

# Request bodies: the same values for the server and the echo floor, FP32
# rounded and written as a numpy user's json.dumps(arr.tolist()) writes them.
for m in iris dense; do
    write_input "$m" "$WORK/$m-input.json"
done

steps="$(tr ',' ' ' <<<"$SWEEP" | wc -w)"
bound="$(awk -v d="$DURATION" -v w="$WARMUP" -v s="$steps" 'BEGIN { print int((d + w) * s + 60) }')"
# load NAME URL GRPC_URL MODEL PROTOCOL PID [extra sluice-load flags]: one sweep, JSON to $WORK/NAME.json
load() {
    local name="$1" url="$2" grpc="$3" model="$4" proto="$5" pid="$6"
    shift 6
    timeout "$bound" "${pin_load[@]}" "$LOAD" --quiet --url "$url" --grpc-url "$grpc" \
        --model "$model" --protocol "$proto" --sweep-concurrency "$SWEEP" \
        --duration-secs "$DURATION" --warmup-secs "$WARMUP" --server-pid "$pid" \
        --output "$WORK/$name.json" "$@" >/dev/null 2>"$WORK/$name.err" ||
        { cat "$WORK/$name.err" >&2; exit 1; }
}

echo "== raw ONNX Runtime on cores $SERVER_CORES"
(cd "$ROOT" && timeout 600 "${pin_server[@]}" "$RAW_BIN" raw) | tee "$WORK/raw.txt"

echo "== echo floor on cores $SERVER_CORES (generator on ${LOAD_CORES:-any})"
ECHO_PORT="$(free_port)"
ECHO_GRPC_PORT="$(free_port)"
while [[ "$ECHO_GRPC_PORT" == "$ECHO_PORT" ]]; do ECHO_GRPC_PORT="$(free_port)"; done
"${pin_server[@]}" "$LOAD" --serve-echo "127.0.0.1:$ECHO_PORT" \
    --serve-echo-grpc "127.0.0.1:$ECHO_GRPC_PORT" >"$WORK/echo.log" 2>&1 &
ECHO_PID=$!
PIDS+=("$ECHO_PID")
wait_ready "http://127.0.0.1:$ECHO_PORT/v2/models/echo" "$ECHO_PID" "$WORK/echo.log"
IFS=, read -ra models <<<"$MODELS"
IFS=, read -ra protocols <<<"$PROTOCOLS"
for m in "${models[@]}"; do
    # REST binary always: gRPC is also held against it.
    for p in rest-json rest-binary grpc; do
        [[ "$p" == rest-binary || ",$PROTOCOLS," == *,$p,* ]] || continue
        load "echo-$m-$p" "http://127.0.0.1:$ECHO_PORT" "http://127.0.0.1:$ECHO_GRPC_PORT" echo "$p" "$ECHO_PID" \
            --no-validate --input-file "$WORK/$m-input.json"
    done
done
kill "$ECHO_PID" 2>/dev/null || true

# serve NAME REPO: starts a pinned server, sets HTTP_URL, GRPC_URL, SERVER_PID
serve() {
    local http grpc
    http="$(free_port)"
    grpc="$(free_port)"
    while [[ "$grpc" == "$http" ]]; do grpc="$(free_port)"; done
    "${pin_server[@]}" "$SLUICE" serve --model-repository "$2" --host 127.0.0.1 \
        --http-port "$http" --grpc-port "$grpc" --log warn >"$WORK/$1.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    HTTP_URL="http://127.0.0.1:$http"
    GRPC_URL="http://127.0.0.1:$grpc"
    wait_ready "$HTTP_URL/v2/health/ready" "$SERVER_PID" "$WORK/$1.log"
}

echo "== sluice on cores $SERVER_CORES"
serve server models
for m in "${models[@]}"; do
    for p in "${protocols[@]}"; do
        load "sluice-$m-$p" "$HTTP_URL" "$GRPC_URL" "$m" "$p" "$SERVER_PID" --input-file "$WORK/$m-input.json"
    done
done
kill "$SERVER_PID" 2>/dev/null || true

if [[ "$BATCHING_OFF" == 1 && ",$MODELS," == *,dense,* ]]; then
    echo "== sluice, dense with max_batch_size = 0"
    mkdir -p "$WORK/off/dense/1"
    cp models/dense/1/model.onnx "$WORK/off/dense/1/"
    echo "max_batch_size = 0" >"$WORK/off/dense/config.toml"
    serve server-off "$WORK/off"
    for p in rest-binary grpc; do
        [[ ",$PROTOCOLS," == *,$p,* ]] || continue
        load "off-dense-$p" "$HTTP_URL" "$GRPC_URL" dense "$p" "$SERVER_PID" --input-file "$WORK/dense-input.json"
    done
fi

echo
"$PYTHON" "$ROOT/scripts/bench-pinned-report.py" "$WORK" "$SERVER_CORES" "${LOAD_CORES:-unpinned}" ${OUTPUT:+"$OUTPUT"}
