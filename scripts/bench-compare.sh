#!/usr/bin/env bash
# Sluice against raw ONNX Runtime, batching on against off, and the three wire
# protocols against each other, in one run on the same cores (on a shared
# machine the ratios are what count, not the absolute figures).
#
#   scripts/bench-compare.sh          # or: make bench-compare
#
# Steps
#   1. `cargo bench --bench compare -- iris`: one iris row, sequential, server
#      (REST JSON) against `session.run`; prints both p50s and their ratio.
#   2. `cargo bench --bench compare -- batching`: dense, concurrency sweep,
#      dynamic batching on against off, and the best raw rows/s.
#   3. `target/release/sluice serve --model-repository models` on free
#      loopback ports, then a `sluice-load` concurrency sweep over REST JSON,
#      REST binary and gRPC on iris; prints each protocol against REST JSON
#      and, at concurrency 1, the latency Sluice adds over raw `session.run`
#      (the raw p50 of step 1).
#
# Environment: SWEEP (default 1,8,32), DURATION (seconds per step, default 5),
# WARMUP (default 1), MODEL (default iris), BATCH (rows per request, default 1),
# SKIP_CARGO_BENCH=1 to run step 3 only. Every step is bounded by `timeout`;
# the server is stopped on any exit (trap).
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SWEEP="${SWEEP:-1,8,32}"
DURATION="${DURATION:-5}"
WARMUP="${WARMUP:-1}"
MODEL="${MODEL:-iris}"
BATCH="${BATCH:-1}"
PYTHON="${PYTHON:-python3}"

WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
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

raw_p50=""
if [[ "${SKIP_CARGO_BENCH:-0}" != 1 ]]; then
    echo "== cargo bench --bench compare -- iris"
    timeout 900 cargo bench --locked --bench compare -- iris | tee "$WORK/iris.txt"
    raw_p50="$(awk '$1 == "raw" && $2 == "p50" {print $3}' "$WORK/iris.txt" | head -n1)"
    echo
    echo "== cargo bench --bench compare -- batching"
    timeout 900 cargo bench --locked --bench compare -- batching
    echo
fi

echo "== sluice-load sweep (c=$SWEEP, ${DURATION}s per step, model $MODEL, $BATCH row(s) per request)"
[[ -x target/release/sluice ]] || timeout 900 cargo build --release --locked --bin sluice
timeout 900 cargo build --release --locked -p sluice-load --bin sluice-load

HTTP_PORT="$(free_port)"
GRPC_PORT="$(free_port)"
while [[ "$GRPC_PORT" == "$HTTP_PORT" ]]; do GRPC_PORT="$(free_port)"; done
target/release/sluice serve --model-repository models --host 127.0.0.1 \
    --http-port "$HTTP_PORT" --grpc-port "$GRPC_PORT" --log warn >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 600); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$HTTP_PORT/v2/health/ready" 2>/dev/null; then
        break
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log"; exit 1; }
    sleep 0.1
done
curl -fsS -o /dev/null "http://127.0.0.1:$HTTP_PORT/v2/health/ready" || {
    echo "server not ready within 60 s" >&2
    cat "$WORK/server.log" >&2
    exit 1
}

steps="$(tr ',' ' ' <<<"$SWEEP" | wc -w)"
bound=$(((DURATION + WARMUP) * steps + 60))
for protocol in rest-json rest-binary grpc; do
    timeout "$bound" target/release/sluice-load --quiet \
        --url "http://127.0.0.1:$HTTP_PORT" --grpc-url "http://127.0.0.1:$GRPC_PORT" \
        --model "$MODEL" --batch-size "$BATCH" --protocol "$protocol" \
        --sweep-concurrency "$SWEEP" --duration-secs "$DURATION" --warmup-secs "$WARMUP" \
        --output "$WORK/$protocol.json"
done

echo
RAW_P50="$raw_p50" "$PYTHON" - "$WORK" <<'EOF'
import json, os, sys

work = sys.argv[1]
runs = {p: json.load(open(os.path.join(work, p + ".json")))
        for p in ("rest-json", "rest-binary", "grpc")}
raw = os.environ.get("RAW_P50") or ""
raw = float(raw) if raw else None
print("protocol ratios against REST JSON at each concurrency (same server, same run)")
print(f"{'protocol':<12} {'c':>4} {'req/s':>9} {'p50 µs':>8} {'p99 µs':>8} {'req/s ÷ json':>13} {'p50 ÷ json':>11}")
base = {r["concurrency"]: r for r in runs["rest-json"]}
for proto, results in runs.items():
    for r in results:
        b = base.get(r["concurrency"])
        lat = r["latency_us"]
        assert r["error_count"] == 0, f"{proto} c={r['concurrency']}: errors {r['errors']}"
        print(f"{proto:<12} {r['concurrency']:>4} {r['throughput_rps']:>9.0f} {lat['p50']:>8} {lat['p99']:>8}"
              f" {r['throughput_rps'] / b['throughput_rps']:>12.2f}x {lat['p50'] / b['latency_us']['p50']:>10.2f}x")
if raw is not None:
    print()
    print(f"added latency at concurrency 1 over raw session.run (raw p50 {raw:.1f} µs, from step 1)")
    for proto, results in runs.items():
        for r in results:
            if r["concurrency"] == 1:
                p50 = r["latency_us"]["p50"]
                print(f"  {proto:<12} p50 {p50:>6} µs  added {p50 - raw:>7.1f} µs  ({p50 / raw:.1f}x raw)")
EOF
