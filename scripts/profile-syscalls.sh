#!/usr/bin/env bash
# System calls and context switches per request of the release server (or of
# the echo floor), counted by perf's syscall tracepoints: unlike strace, they
# do not slow the server down, so batching behaves as it does unobserved.
# The server runs on core 0 and `sluice-load` on core 1; after WARMUP
# requests, REQUESTS more are counted.
#
#   scripts/profile-syscalls.sh [MODEL] [PROTOCOL]     # default iris rest-binary
#   ECHO=1 scripts/profile-syscalls.sh iris grpc      # the echo floor instead
#
# Environment: REQUESTS (default 60000), WARMUP (default 3000), CONCURRENCY
# (default 16), SLUICE_BIN (default target/release/sluice). Needs perf with
# tracepoint access (Debian: linux-perf; run as root or lower
# kernel.perf_event_paranoid).
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MODEL="${1:-iris}"
PROTOCOL="${2:-rest-binary}"
REQUESTS="${REQUESTS:-60000}"
WARMUP="${WARMUP:-3000}"
CONCURRENCY="${CONCURRENCY:-16}"
SLUICE="${SLUICE_BIN:-target/release/sluice}"
LOAD=target/release/sluice-load
PYTHON="${PYTHON:-python3}"
# shellcheck source=scripts/profile-lib.sh
source "$ROOT/scripts/profile-lib.sh"
command -v perf >/dev/null || { echo "needs perf (Debian: apt-get install linux-perf)" >&2; exit 1; }
[[ -x "$SLUICE" && -x "$LOAD" ]] || { echo "build first: cargo build --release --bin sluice -p sluice-load" >&2; exit 1; }

WORK="$(mktemp -d)"
PID=""
cleanup() {
    if [[ -n "$PID" ]]; then
        kill "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
HTTP="$(free_port)"
GRPC="$(free_port)"
while [[ "$GRPC" == "$HTTP" ]]; do GRPC="$(free_port)"; done
write_input "$MODEL" "$WORK/input.json"

extra=()
if [[ "${ECHO:-0}" == 1 ]]; then
    taskset -c 0 "$LOAD" --serve-echo "127.0.0.1:$HTTP" --serve-echo-grpc "127.0.0.1:$GRPC" >"$WORK/server.log" 2>&1 &
    ready="http://127.0.0.1:$HTTP/v2/models/echo"
    MODEL=echo
    extra=(--no-validate)
else
    taskset -c 0 "$SLUICE" serve --model-repository models --host 127.0.0.1 \
        --http-port "$HTTP" --grpc-port "$GRPC" --log warn >"$WORK/server.log" 2>&1 &
    ready="http://127.0.0.1:$HTTP/v2/health/ready"
fi
PID=$!
wait_ready "$ready" "$PID" "$WORK/server.log"
drive() {
    taskset -c 1 "$LOAD" --quiet --url "http://127.0.0.1:$HTTP" --grpc-url "http://127.0.0.1:$GRPC" \
        --model "$MODEL" --protocol "$PROTOCOL" --input-file "$WORK/input.json" "${extra[@]}" \
        --concurrency "$CONCURRENCY" --requests "$1" --timeout-ms 60000 --output "$WORK/$2.json" \
        >/dev/null 2>"$WORK/$2.err" || { cat "$WORK/$2.err" >&2; exit 1; }
}
drive "$WARMUP" warmup
events=futex,epoll_wait,recvfrom,read,sendto,writev,write
perf stat -x, -o "$WORK/perf.txt" -p "$PID" -e context-switches \
    $(printf -- '-e syscalls:sys_enter_%s ' ${events//,/ }) &
PERF=$!
# perf attaches within milliseconds; requests sent before it has may go
# uncounted (a few of tens of thousands), so the counts err low, not high.
drive "$REQUESTS" measured
kill -INT "$PERF"
wait "$PERF" || true
"$PYTHON" - "$WORK" "$MODEL" "$PROTOCOL" "$CONCURRENCY" <<'EOF'
import json, sys
work, model, proto, c = sys.argv[1:]
runs = json.load(open(f"{work}/measured.json"))
done = sum(r["ok"] + r["error_count"] for r in runs)
print(f"{model} over {proto} at c={c}: per request, over {done} requests")
for line in open(f"{work}/perf.txt"):
    f = line.strip().split(",")
    if len(f) > 2 and f[0].replace(".", "").isdigit():
        print(f"  {f[2].replace('syscalls:sys_enter_', ''):<18} {float(f[0]) / done:>6.2f}")
EOF
