#!/usr/bin/env bash
# Sluice against two Python KServe v2 servers, MLServer and the KServe model
# server, on the same ONNX files, the same machine and the same load, in one
# run. Not part of `make test` (it installs Python packages and takes minutes).
#
#   scripts/bench-peers.sh            # or: make bench-peers
#
# Steps
#   1. Pinned peers, each in its own virtualenv under .venv-peers/ (ignored by
#      git), installed once and re-installed only when the pins change:
#        mlserver  MLServer $MLSERVER_VERSION + onnxruntime, with the custom
#                  runtime scripts/peers/mlserver_onnx (MLServer ships no ONNX
#                  runtime); uvloop pinned below 0.22, whose get_event_loop()
#                  kills MLServer 1.7's inference-pool workers at start.
#        kserve    kserve $KSERVE_VERSION + onnxruntime, with the kserve.Model
#                  subclass scripts/peers/kserve_onnx.py.
#      Both peers run one onnxruntime session per model (CPU, 1 intra-op
#      thread) and otherwise their own defaults. A peer that cannot be
#      installed or started is reported and skipped; the others still run.
#   2. One server at a time, on free loopback ports, serving
#      models/iris/1/model.onnx and models/dense/1/model.onnx: Sluice
#      (target/release/sluice serve, defaults), then MLServer, then KServe.
#   3. For each server and model: `sluice-load --protocol rest-json` (KServe
#      v2 REST, inline JSON), closed loop at each of $CONCURRENCY, $DURATION s
#      per step after $WARMUP s of warm-up.
#   4. A markdown table (req/s, p50, p99 per server, model and concurrency,
#      and Sluice's ratios to each peer) on stdout and in $OUT_MD.
#
# Environment: DURATION (default 10), WARMUP (default 2), CONCURRENCY
# (default 1,32), MODELS (default "iris dense"), PEERS (default "mlserver
# kserve"), OUT_MD (default docs/benchmarks-peers.md), PEERS_VENV (default
# .venv-peers), PYTHON (default python3, must be 3.11 for the cached
# onnxruntime wheel; any 3.9-3.12 works with network access).
# Every step is bounded by `timeout`; every server started here is stopped on
# any exit (trap), by its process group.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
CONCURRENCY="${CONCURRENCY:-1,32}"
MODELS="${MODELS:-iris dense}"
PEERS="${PEERS:-mlserver kserve}"
OUT_MD="${OUT_MD:-docs/benchmarks-peers.md}"
VENV="${PEERS_VENV:-$ROOT/.venv-peers}"
PYTHON="${PYTHON:-python3}"

MLSERVER_VERSION=1.7.1
KSERVE_VERSION=0.21.0
ORT_VERSION=1.32.0
UVLOOP_PIN="uvloop==0.21.0"

WORK="$(mktemp -d)"
SERVER_PGID=""
stop_server() {
    if [[ -n "$SERVER_PGID" ]]; then
        kill -TERM -- "-$SERVER_PGID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 -- "-$SERVER_PGID" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL -- "-$SERVER_PGID" 2>/dev/null || true
        wait "$SERVER_PGID" 2>/dev/null || true
        SERVER_PGID=""
    fi
}
cleanup() {
    stop_server
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "== $*" >&2; }

free_port() {
    "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# venv NAME PIN... : (re)creates $VENV/NAME when its pins changed.
venv() {
    local name="$1"
    shift
    local dir="$VENV/$name" pins="$*"
    if [[ -x "$dir/bin/python" && "$(cat "$dir/.pins" 2>/dev/null)" == "$pins" ]]; then
        return 0
    fi
    log "installing $name into $dir: $pins"
    rm -rf "$dir"
    "$PYTHON" -m venv "$dir" || return 1
    # --find-links: use the onnxruntime wheel `make setup` already fetched.
    timeout 1200 "$dir/bin/pip" install --quiet --disable-pip-version-check \
        --find-links "$ROOT/.cache/wheels" "$@" || return 1
    echo "$pins" >"$dir/.pins"
}

# start LABEL LOG CMD... : starts CMD in its own process group.
start() {
    local label="$1" logfile="$2"
    shift 2
    log "starting $label"
    setsid "$@" >"$logfile" 2>&1 &
    SERVER_PGID=$!
}

# ready URL LOG : waits up to 180 s for GET URL to answer 200.
ready() {
    for _ in $(seq 1 900); do
        if curl -fsS -o /dev/null "$1" 2>/dev/null; then
            return 0
        fi
        if ! kill -0 "$SERVER_PGID" 2>/dev/null; then
            echo "server exited; last lines of its log:" >&2
            tail -n 20 "$2" >&2
            return 1
        fi
        sleep 0.2
    done
    echo "not ready within 180 s; last lines of its log:" >&2
    tail -n 20 "$2" >&2
    return 1
}

steps="$(tr ',' ' ' <<<"$CONCURRENCY" | wc -w)"
BOUND=$(((DURATION + WARMUP) * steps + 120))

# load LABEL URL : one sluice-load sweep per model, results in $WORK.
load() {
    local label="$1" url="$2" model
    for model in $MODELS; do
        log "$label / $model: rest-json, c=$CONCURRENCY, ${DURATION}s per step"
        timeout "$BOUND" target/release/sluice-load --quiet --url "$url" --model "$model" \
            --protocol rest-json --sweep-concurrency "$CONCURRENCY" \
            --duration-secs "$DURATION" --warmup-secs "$WARMUP" \
            --output "$WORK/$label.$model.json" >&2 ||
            echo "sluice-load against $label / $model failed" >&2
    done
}

log "building sluice and sluice-load (release)"
timeout 1800 cargo build --release --locked --bin sluice >&2
timeout 1800 cargo build --release --locked -p sluice-load --bin sluice-load >&2

# --- Sluice ---
HTTP_PORT="$(free_port)"
GRPC_PORT="$(free_port)"
REPO="$WORK/repo"
for model in $MODELS; do
    mkdir -p "$REPO/$model/1"
    ln -s "$ROOT/models/$model/1/model.onnx" "$REPO/$model/1/model.onnx"
done
start sluice "$WORK/sluice.log" target/release/sluice serve --model-repository "$REPO" \
    --host 127.0.0.1 --http-port "$HTTP_PORT" --grpc-port "$GRPC_PORT" --log warn
if ready "http://127.0.0.1:$HTTP_PORT/v2/health/ready" "$WORK/sluice.log"; then
    load sluice "http://127.0.0.1:$HTTP_PORT"
fi
stop_server

# --- MLServer ---
if [[ " $PEERS " == *" mlserver "* ]]; then
    if venv mlserver "mlserver==$MLSERVER_VERSION" "onnxruntime==$ORT_VERSION" "$UVLOOP_PIN"; then
        HTTP_PORT="$(free_port)"
        GRPC_PORT="$(free_port)"
        METRICS_PORT="$(free_port)"
        MLS="$WORK/mlserver"
        mkdir -p "$MLS"
        printf '{"host": "127.0.0.1", "http_port": %s, "grpc_port": %s, "metrics_port": %s, "debug": false}\n' \
            "$HTTP_PORT" "$GRPC_PORT" "$METRICS_PORT" >"$MLS/settings.json"
        for model in $MODELS; do
            mkdir -p "$MLS/$model"
            printf '{"name": "%s", "implementation": "mlserver_onnx.OnnxRuntime", "parameters": {"uri": "%s"}}\n' \
                "$model" "$ROOT/models/$model/1/model.onnx" >"$MLS/$model/model-settings.json"
        done
        start mlserver "$WORK/mlserver.log" env PYTHONPATH="$ROOT/scripts/peers" \
            "$VENV/mlserver/bin/mlserver" start "$MLS"
        if ready "http://127.0.0.1:$HTTP_PORT/v2/health/ready" "$WORK/mlserver.log"; then
            load mlserver "http://127.0.0.1:$HTTP_PORT"
        else
            echo "MLServer did not start; skipped" >&2
        fi
        stop_server
    else
        echo "MLServer $MLSERVER_VERSION could not be installed; skipped" >&2
    fi
fi

# --- KServe model server ---
if [[ " $PEERS " == *" kserve "* ]]; then
    if venv kserve "kserve==$KSERVE_VERSION" "onnxruntime==$ORT_VERSION"; then
        HTTP_PORT="$(free_port)"
        args=()
        for model in $MODELS; do
            args+=(--model "$model=$ROOT/models/$model/1/model.onnx")
        done
        start kserve "$WORK/kserve.log" "$VENV/kserve/bin/python" "$ROOT/scripts/peers/kserve_onnx.py" \
            --http_port "$HTTP_PORT" --enable_grpc false "${args[@]}"
        if ready "http://127.0.0.1:$HTTP_PORT/v2/health/ready" "$WORK/kserve.log"; then
            load kserve "http://127.0.0.1:$HTTP_PORT"
        else
            echo "KServe did not start; skipped" >&2
        fi
        stop_server
    else
        echo "kserve $KSERVE_VERSION could not be installed; skipped" >&2
    fi
fi

# --- report ---
mkdir -p "$(dirname "$OUT_MD")"
CPU="$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
export CPU DURATION WARMUP CONCURRENCY MLSERVER_VERSION KSERVE_VERSION ORT_VERSION
export CORES="$(nproc)" DATE="$(date -u '+%Y-%m-%d %H:%M UTC')"
export RUSTC="$(rustc --version | cut -d' ' -f1-2)"
"$PYTHON" - "$WORK" "$MODELS" >"$WORK/table.md" <<'EOF'
import json, os, sys

work, models = sys.argv[1], sys.argv[2].split()
servers = [("sluice", "Sluice"), ("mlserver", "MLServer " + os.environ["MLSERVER_VERSION"]),
           ("kserve", "KServe " + os.environ["KSERVE_VERSION"])]
runs = {}
for key, _ in servers:
    for model in models:
        path = os.path.join(work, f"{key}.{model}.json")
        if os.path.exists(path):
            for r in json.load(open(path)):
                runs[(key, model, r["concurrency"])] = r
env = os.environ
print("# Sluice against MLServer and the KServe Python server\n")
print(f"Generated by `scripts/bench-peers.sh` (`make bench-peers`) on {env['DATE']}: "
      f"{env['CORES']} cores ({env['CPU']}), no GPU, shared by the server and the load generator; "
      f"{env['RUSTC']}, ONNX Runtime {env['ORT_VERSION']} (CPU) everywhere.\n")
print(f"Load: `sluice-load --protocol rest-json --sweep-concurrency {env['CONCURRENCY']} "
      f"--duration-secs {env['DURATION']} --warmup-secs {env['WARMUP']}` against one server at a time on "
      "loopback (KServe v2 REST, inline JSON tensors, one row per request, random inputs, every "
      "response decoded). Sluice runs with its defaults (one instance per core, dynamic batching); "
      "each peer runs one onnxruntime session per model (1 intra-op thread) with its own server "
      "defaults (MLServer: one inference-pool worker process; KServe: one uvicorn worker, access and "
      "latency logging on). Latencies in ms.\n")
print("| model | c | server | req/s | p50 ms | p99 ms | errors | Sluice req/s ÷ server | server p50 ÷ Sluice p50 |")
print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
missing = []
for model in models:
    levels = sorted({c for (_, m, c) in runs if m == model})
    for c in levels:
        s = runs.get(("sluice", model, c))
        for key, label in servers:
            r = runs.get((key, model, c))
            if r is None:
                missing.append(f"{label} / {model} / c={c}")
                continue
            lat = r["latency_us"]
            ratio_t = ratio_p = "—"
            if s is not None and key != "sluice" and r["throughput_rps"] > 0:
                ratio_t = f"{s['throughput_rps'] / r['throughput_rps']:.1f}×"
                ratio_p = f"{lat['p50'] / max(s['latency_us']['p50'], 1):.1f}×"
            print(f"| {model} | {c} | {label} | {r['throughput_rps']:.0f} | {lat['p50'] / 1000:.2f} | "
                  f"{lat['p99'] / 1000:.2f} | {r['error_count']} | {ratio_t} | {ratio_p} |")
if missing:
    print("\nNo result (not installed, not started, or the load failed): " + ", ".join(sorted(set(missing))) + ".")
EOF
cat "$WORK/table.md"
cp "$WORK/table.md" "$OUT_MD"
log "written to $OUT_MD"
