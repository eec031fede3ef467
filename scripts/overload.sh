#!/usr/bin/env bash
# Overload measurement on the release binary: offered load at 1x, 2x, 5x and
# 10x the measured capacity of a model with a small queue, over loopback.
# Records, per level: throughput, admitted p50/p99, rejection rate and
# latency, peak RSS of the server, time to recover once the load stops, and
# the queue-depth gauge afterwards. Results: docs/overload-results.md.
#
#   scripts/overload.sh                        # ~2.5 min
#   LEVELS=10 DURATION=5 scripts/overload.sh   # one quick level
#
# Setup: `tests/fixtures/slow.onnx` (~100 ms a run) with one instance of one
# intra-op thread, batching off and `max_queue_size = $QUEUE`, so capacity is
# C = 1 / service time. C is measured first (closed loop, 2 clients); each
# level then runs `sluice-load` in open loop at (L x C - probe rate) req/s for
# $DURATION s while a curl probe sends one small REST request every
# $PROBE_GAP s (so the total offered is L x C) and times each answer: the
# rejection latency, which `sluice-load` does not report (its latencies are of
# successful requests, measured from the intended send time). Recovery is the
# time from the end of the sending window to the first 200 of a probe loop.
# Levels run over REST JSON, then over gRPC; last, 1 MiB JSON bodies (a real
# [BIG_ROWS, 1] FP32 tensor) at BIG_LEVEL x C.
#
# Environment:
#   LEVELS      multiples of C to run (default 1,2,5,10)
#   DURATION    seconds of sending per level (default 10)
#   PROTOCOLS   default rest-json,grpc; empty runs only the 1 MiB case
#   QUEUE       the model's max_queue_size (default 4)
#   BIG_ROWS    rows of the 1 MiB case (default 100000, ~10 JSON bytes each; 0 skips it)
#   BIG_LEVEL   its load in multiples of C (default 10)
#   SERVER_FLAGS extra `sluice serve` flags, e.g. "--max-inflight-requests 16"
#   KEEP        a folder to copy the raw sluice-load JSON and probe logs into
#   SKIP_BUILD=1 use the binaries already in target/release
# Loopback only; every step is bounded by `timeout`; the server is stopped on
# any exit.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
LEVELS="${LEVELS:-1,2,5,10}"
DURATION="${DURATION:-10}"
QUEUE="${QUEUE:-4}"
BIG_ROWS="${BIG_ROWS:-100000}"
BIG_LEVEL="${BIG_LEVEL:-10}"
PROTOCOLS="${PROTOCOLS-rest-json,grpc}"
PROBE_GAP="${PROBE_GAP:-0.5}"
PYTHON="${PYTHON:-python3}"
read -r -a SERVER_FLAGS <<<"${SERVER_FLAGS:-}"
TIMEOUT_MS=20000

WORK="$(mktemp -d)"
SERVER_PID=""
BG_PIDS=()
cleanup() {
    for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
now() { date +%s.%N; }

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    timeout 1800 cargo build --release --locked --bin sluice
    timeout 1800 cargo build --release --locked -p sluice-load --bin sluice-load
fi
SLUICE=target/release/sluice
LOAD=target/release/sluice-load

mkdir -p "$WORK/repo/slow/1"
cp tests/fixtures/slow.onnx "$WORK/repo/slow/1/model.onnx"
cat >"$WORK/repo/slow/config.toml" <<EOF
instances = 1
intra_op_threads = 1
max_batch_size = 0
[dynamic_batching]
max_queue_size = $QUEUE
EOF

HTTP_PORT="$(free_port)"
GRPC_PORT="$(free_port)"
while [[ "$GRPC_PORT" == "$HTTP_PORT" ]]; do GRPC_PORT="$(free_port)"; done
BASE="http://127.0.0.1:$HTTP_PORT"
"$SLUICE" serve --model-repository "$WORK/repo" --host 127.0.0.1 \
    --http-port "$HTTP_PORT" --grpc-port "$GRPC_PORT" --log warn "${SERVER_FLAGS[@]}" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 600); do
    curl -fsS -o /dev/null "$BASE/v2/health/ready" 2>/dev/null && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; exit 1; }
    sleep 0.1
done
curl -fsS -o /dev/null "$BASE/v2/health/ready" || { echo "not ready within 60 s" >&2; exit 1; }

SMALL='{"inputs":[{"name":"x","shape":[1,1],"datatype":"FP32","data":[0.5]}]}'
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status"; }
baseline_rss="$(rss_kib)"

# Peak VmRSS of the server while $1.stop does not exist, written to $1.
rss_sampler() {
    local out="$1" max=0 key value _
    while [[ ! -e "$out.stop" ]]; do
        while read -r key value _; do
            if [[ "$key" == VmRSS: ]]; then
                ((value > max)) && max=$value
                break
            fi
        done <"/proc/$SERVER_PID/status"
        echo "$max" >"$out"
        sleep 0.05
    done
}

# One small REST request every $PROBE_GAP s until $1.stop exists: "status seconds retry-after" lines.
prober() {
    local out="$1"
    while [[ ! -e "$out.stop" ]]; do
        curl -s -o /dev/null -w '%{http_code} %{time_total} %header{retry-after}\n' --max-time 20 \
            -H 'content-type: application/json' -d "$SMALL" "$BASE/v2/models/slow/infer" >>"$out" || true
        sleep "$PROBE_GAP"
    done
}

# Seconds from now + $1 until a probe gets 200, written to $2.
recovery() {
    sleep "$1"
    local t0 code
    t0="$(now)"
    for _ in $(seq 1 600); do
        code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 20 \
            -H 'content-type: application/json' -d "$SMALL" "$BASE/v2/models/slow/infer" || true)"
        if [[ "$code" == 200 ]]; then
            echo "$(now) - $t0" | bc >"$2"
            return
        fi
        sleep 0.05
    done
    echo "none" >"$2"
}

pending_gauge() {
    curl -fsS "$BASE/metrics" | awk '/^sluice_pending_requests\{/ && /model="slow"/ {print $2}'
}

# Capacity: 2 closed-loop clients keep the one instance busy.
timeout 120 "$LOAD" --quiet --url "$BASE" --model slow --concurrency 2 \
    --duration-secs 5 --warmup-secs 1 --output "$WORK/capacity.json"
CAPACITY="$(jq '.[0].throughput_rps' "$WORK/capacity.json")"
echo "capacity: $CAPACITY req/s (2 clients, closed loop); baseline RSS $((baseline_rss / 1024)) MiB"

# run_level NAME PROTOCOL MULTIPLE [extra sluice-load flags...]
run_level() {
    local name="$1" protocol="$2" multiple="$3"
    shift 3
    local rate probe_rate
    probe_rate="$(echo "1 / $PROBE_GAP" | bc -l)"
    rate="$(echo "$multiple * $CAPACITY - $probe_rate" | bc -l)"
    rm -f "$WORK/$name".*
    rss_sampler "$WORK/$name.rss" &
    local sampler_pid=$!
    prober "$WORK/$name.probe" &
    local prober_pid=$!
    recovery "$DURATION" "$WORK/$name.recovery" &
    local recovery_pid=$!
    BG_PIDS=("$sampler_pid" "$prober_pid" "$recovery_pid")
    timeout $((DURATION + TIMEOUT_MS / 1000 + 60)) "$LOAD" --quiet \
        --url "$BASE" --grpc-url "http://127.0.0.1:$GRPC_PORT" --model slow --protocol "$protocol" \
        --rate "$rate" --duration-secs "$DURATION" --timeout-ms "$TIMEOUT_MS" \
        --output "$WORK/$name.json" "$@" >/dev/null
    touch "$WORK/$name.probe.stop"
    wait "$recovery_pid" "$prober_pid" || true
    sleep 0.5
    touch "$WORK/$name.rss.stop"
    wait "$sampler_pid" || true
    BG_PIDS=()
    # The queue is empty again (the gauge is set on the worker's next pass).
    local gauge="" tries
    for tries in $(seq 1 40); do
        gauge="$(pending_gauge)"
        [[ "$gauge" == 0 ]] && break
        sleep 0.05
    done
    echo "$gauge" >"$WORK/$name.pending"
    printf '%s %s %s\n' "$name" "$protocol" "$multiple" >>"$WORK/levels"
    echo "done: $name ($protocol at ${multiple}x C = $(echo "$multiple * $CAPACITY" | bc -l | cut -c1-6) req/s)" >&2
}

for protocol in $(tr ',' ' ' <<<"$PROTOCOLS"); do
    for level in $(tr ',' ' ' <<<"$LEVELS"); do
        run_level "$protocol-$level" "$protocol" "$level"
    done
done
if [[ "$BIG_ROWS" != 0 ]]; then
    run_level "big-$BIG_LEVEL" rest-json "$BIG_LEVEL" --batch-size "$BIG_ROWS"
fi
final_hwm="$(awk '/^VmHWM:/ {print $2}' "/proc/$SERVER_PID/status")"
kill -0 "$SERVER_PID" || { echo "server died" >&2; exit 1; }

if [[ -n "${KEEP:-}" ]]; then
    mkdir -p "$KEEP"
    find "$WORK" -maxdepth 1 -type f -exec cp {} "$KEEP"/ \;
fi

DURATION="$DURATION" PROBE_GAP="$PROBE_GAP" CAPACITY="$CAPACITY" BASELINE="$baseline_rss" HWM="$final_hwm" QUEUE="$QUEUE" \
    "$PYTHON" - "$WORK" <<'EOF'
import json, os, sys

work = sys.argv[1]
cap = float(os.environ["CAPACITY"])
duration = float(os.environ["DURATION"])
service_ms = 1000 / cap
print()
print(f"capacity C = {cap:.2f} req/s (service time {service_ms:.0f} ms), queue {os.environ['QUEUE']}, "
      f"baseline RSS {int(os.environ['BASELINE']) / 1024:.0f} MiB, final VmHWM {int(os.environ['HWM']) / 1024:.0f} MiB")
print()
print("| load | protocol | offered req/s | sent | admitted (200) | rejected (503/429) | other errors "
      "| admitted/s | admitted p50 | admitted p99 | rejection rate | rejection p50 / p99 (probe) "
      "| Retry-After on probes | peak RSS | recovery | queue after |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|")

def q(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[max(0, min(len(xs) - 1, int(-(-p * len(xs) // 1)) - 1))]

for line in open(os.path.join(work, "levels")):
    name, protocol, multiple = line.split()
    r = json.load(open(os.path.join(work, name + ".json")))[0]
    probes = [l.split() for l in open(os.path.join(work, name + ".probe")) if l.strip()]
    rej = [float(p[1]) * 1000 for p in probes if p[0] in ("503", "429")]
    rej_with_retry = sum(1 for p in probes if p[0] in ("503", "429") and len(p) > 2 and p[2])
    p_ok = sum(1 for p in probes if p[0] == "200")
    p_other = [p[0] for p in probes if p[0] not in ("200", "503", "429")]
    rejected = sum(v for k, v in r["errors"].items()
                   if k in ("http_503", "http_429", "grpc_unavailable", "grpc_resourceexhausted"))
    other = r["error_count"] - rejected + len(p_other)
    sent = r["sent"] + len(probes)
    admitted = r["ok"] + p_ok
    rejected += len(rej)
    lat = r["latency_us"]
    rss = int(open(os.path.join(work, name + ".rss")).read().strip() or 0) / 1024
    rec = open(os.path.join(work, name + ".recovery")).read().strip()
    rec = f"{float(rec):.2f} s" if rec != "none" else "none"
    pending = open(os.path.join(work, name + ".pending")).read().strip()
    label = f"{multiple}x C" + (f", {r['rows_per_request']} rows (1 MiB JSON)" if name.startswith("big") else "")
    rej_lat = f"{q(rej, 0.5):.1f} / {q(rej, 0.99):.1f} ms" if rej else "n/a"
    offered = r["sent"] / duration + 1 / float(os.environ["PROBE_GAP"])
    print(f"| {label} | {protocol} | {offered:.1f} | {sent} | {admitted} | {rejected} | {other} "
          f"| {admitted / duration:.2f} | {lat['p50'] / 1000:.0f} ms | {lat['p99'] / 1000:.0f} ms "
          f"| {100 * rejected / max(sent, 1):.0f} % | {rej_lat} | {rej_with_retry}/{len(rej)} "
          f"| {rss:.0f} MiB | {rec} | {pending} |")
    if r["error_count"] - (rejected - len(rej)) > 0:
        print(f"<!-- {name}: errors {r['errors']} -->")
EOF
