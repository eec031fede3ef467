#!/usr/bin/env bash
# What tracing costs when it is off: the release server from before traces
# existed against the current one (tracing off, the default), iris over REST
# JSON at one concurrency, in one run on the same cores. The two servers run
# side by side and are loaded in turn (ABAB...), so drift on a shared machine
# hits both; the medians' ratios are the figure (docs/benchmarks.md).
#
#   scripts/bench-tracing.sh
#
# Environment: BEFORE (the commit to compare with; default: the parent of the
# commit that added traces), ROUNDS (default 3), DURATION (seconds per load,
# default 10), CONCURRENCY (default 8), PROTOCOL (default rest-json).
# The "before" tree is built in target/bench-tracing/ (a detached worktree,
# its own target dir); every step is bounded by `timeout`; both servers are
# stopped on any exit (trap).
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BEFORE="${BEFORE:-$(git log --format=%H -1 --grep='^Traces: OpenTelemetry export')^}"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10}"
CONCURRENCY="${CONCURRENCY:-8}"
PROTOCOL="${PROTOCOL:-rest-json}"
PYTHON="${PYTHON:-python3}"
WORK_DIR="$ROOT/target/bench-tracing"
TREE="$WORK_DIR/before"
LIB="$ROOT/.onnxruntime/lib/libonnxruntime.so"

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[[ -e "$LIB" ]] || make setup
mkdir -p "$WORK_DIR"
before_rev="$(git rev-parse "$BEFORE")"
if [[ ! -d "$TREE" ]] || [[ "$(git -C "$TREE" rev-parse HEAD)" != "$before_rev" ]]; then
    git worktree remove --force "$TREE" 2>/dev/null || rm -rf "$TREE"
    git worktree prune
    git worktree add --detach "$TREE" "$before_rev" >/dev/null
fi
echo "== building before ($(git log --format='%h %s' -1 "$before_rev" | cut -c1-70)) and after (this tree)"
(cd "$TREE" && CARGO_TARGET_DIR="$WORK_DIR/target" timeout 1800 cargo build --release --locked --bin sluice)
timeout 1800 cargo build --release --locked --bin sluice
timeout 1800 cargo build --release --locked -p sluice-load --bin sluice-load

free_port() {
    "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
PORT=""
start() { # name binary: starts it, sets PORT to its HTTP port
    local grpc
    PORT="$(free_port)"
    grpc="$(free_port)"
    "$2" serve --model-repository models --onnxruntime-lib "$LIB" --host 127.0.0.1 \
        --http-port "$PORT" --grpc-port "$grpc" --log warn >"$WORK_DIR/$1.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 600); do
        curl -fsS -o /dev/null "http://127.0.0.1:$PORT/v2/health/ready" 2>/dev/null && break
        sleep 0.1
    done
    curl -fsS -o /dev/null "http://127.0.0.1:$PORT/v2/health/ready"
}
start before "$WORK_DIR/target/release/sluice"
before_port=$PORT
start after target/release/sluice
after_port=$PORT

for round in $(seq 1 "$ROUNDS"); do
    for side in before after; do
        port=$before_port
        [[ $side == after ]] && port=$after_port
        timeout $((DURATION + 60)) target/release/sluice-load --quiet \
            --url "http://127.0.0.1:$port" --model iris --protocol "$PROTOCOL" \
            --concurrency "$CONCURRENCY" --duration-secs "$DURATION" --warmup-secs 2 \
            --output "$WORK_DIR/$side-$round.json"
    done
done

"$PYTHON" - "$WORK_DIR" "$ROUNDS" <<'EOF'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
def runs(side):
    out = []
    for i in range(1, rounds + 1):
        (r,) = json.load(open(f"{work}/{side}-{i}.json"))
        assert r["error_count"] == 0, f"{side} round {i}: {r['errors']}"
        out.append(r)
    return out
med = {}
for side in ("before", "after"):
    rs = runs(side)
    med[side] = {
        "rps": statistics.median(r["throughput_rps"] for r in rs),
        "p50": statistics.median(r["latency_us"]["p50"] for r in rs),
        "p99": statistics.median(r["latency_us"]["p99"] for r in rs),
    }
    print(f"{side:<7} req/s " + " ".join(f"{r['throughput_rps']:.0f}" for r in rs)
          + f"  (median {med[side]['rps']:.0f}), p50 µs median {med[side]['p50']:.0f}, p99 µs median {med[side]['p99']:.0f}")
b, a = med["before"], med["after"]
print(f"after ÷ before: throughput {a['rps'] / b['rps']:.3f}x, p50 {a['p50'] / b['p50']:.3f}x, p99 {a['p99'] / b['p99']:.3f}x")
EOF
