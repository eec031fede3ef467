#!/usr/bin/env bash
# Where the server's instructions per request go, counted by valgrind's
# callgrind (instruction counts repeat run to run on a noisy machine, unlike
# time). The server runs under callgrind; after WARMUP requests the counters
# are zeroed, REQUESTS requests are sent, and the counts are dumped and
# grouped by what the code does (see docs/benchmarks.md).
#
#   scripts/profile-callgrind.sh [MODEL] [PROTOCOL]     # default iris rest-binary
#
# Environment: REQUESTS (default 2000), WARMUP (default 300), CONCURRENCY
# (default 16), SLUICE_BIN (default target/release/sluice), KEEP=DIR to keep
# the callgrind output there. Needs valgrind (Debian: apt-get install valgrind).
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MODEL="${1:-iris}"
PROTOCOL="${2:-rest-binary}"
REQUESTS="${REQUESTS:-2000}"
WARMUP="${WARMUP:-300}"
CONCURRENCY="${CONCURRENCY:-16}"
SLUICE="${SLUICE_BIN:-target/release/sluice}"
LOAD=target/release/sluice-load
PYTHON="${PYTHON:-python3}"
# shellcheck source=scripts/profile-lib.sh
source "$ROOT/scripts/profile-lib.sh"
command -v valgrind >/dev/null || { echo "needs valgrind" >&2; exit 1; }
[[ -x "$SLUICE" && -x "$LOAD" ]] || { echo "build first: cargo build --release --bin sluice -p sluice-load" >&2; exit 1; }

WORK="${KEEP:-$(mktemp -d)}"
mkdir -p "$WORK"
PID=""
cleanup() {
    if [[ -n "$PID" ]]; then
        kill "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    [[ -n "${KEEP:-}" ]] || rm -rf "$WORK"
}
trap cleanup EXIT
HTTP="$(free_port)"
GRPC="$(free_port)"
write_input "$MODEL" "$WORK/input.json"

# One tokio worker and one model instance, as on one pinned core.
taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out" \
    --dump-instr=no --collect-atstart=yes "$SLUICE" serve --model-repository models \
    --host 127.0.0.1 --http-port "$HTTP" --grpc-port "$GRPC" --log warn >"$WORK/server.log" 2>&1 &
PID=$!
wait_ready "http://127.0.0.1:$HTTP/v2/health/ready" "$PID" "$WORK/server.log"
drive() {
    taskset -c 1 "$LOAD" --quiet --url "http://127.0.0.1:$HTTP" --grpc-url "http://127.0.0.1:$GRPC" \
        --model "$MODEL" --protocol "$PROTOCOL" --input-file "$WORK/input.json" \
        --concurrency "$CONCURRENCY" --requests "$1" --timeout-ms 60000 --output "$WORK/$2.json" >/dev/null
}
drive "$WARMUP" warmup
callgrind_control -z "$PID" >/dev/null
drive "$REQUESTS" measured
callgrind_control -d "$PID" >/dev/null
sleep 1
dump="$(ls -t "$WORK"/callgrind.out.* | head -n1)"
callgrind_annotate --inclusive=yes --threshold=100 "$dump" >"$WORK/inclusive.txt" 2>/dev/null
"$PYTHON" - "$WORK" "$MODEL" "$PROTOCOL" <<'EOF'
import json, re, sys
work, model, proto = sys.argv[1], sys.argv[2], sys.argv[3]
done = sum(r["ok"] + r["error_count"] for r in json.load(open(f"{work}/measured.json")))
rows = []
for line in open(f"{work}/inclusive.txt"):
    m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(\S.*)$", line)
    if m:
        rows.append((int(m.group(1).replace(",", "")), m.group(2)))
total = next(c for c, f in rows if f == "PROGRAM TOTALS")
# Inclusive instructions of the entry points of each stage. callgrind names a
# row by (source file, function), so inlined code shows under the function
# it was inlined into, with the file it came from: hence the file prefixes.
entries = [
    ("HTTP/1 request head parse (hyper, httparse)", r"Http1Transaction>::parse \["),
    ("HTTP/1 response head encode (hyper)", r"Http1Transaction>::encode \["),
    ("routing (NormalizePath, matchit, method router)", r"normalize_path.rs:<tower_http::normalize_path::NormalizePath<S> as tower_service::Service<http::request::Request<ReqBody>>>::call"),
    ("REST app: route match, edge policy, handler (a)-(d)", r"src/http/app.rs:sluice::http::app::App::respond::\{\{closure\}\}( \[.*)?$"),
    # The handler: behind the router (routes.rs), or matched in front of it
    # (app.rs), whichever name the compiler gave its future.
    ("REST handler, all of (a)-(d)", r"(^src/http/routes.rs:sluice::http::routes::infer_common::\{\{closure\}\} \[|src/http/app.rs:sluice::http::app::Direct::infer::\{\{closure\}\}::\{\{closure\}\}::\{\{closure\}\}( \[.*)?$)"),
    # (a) and (b): whichever name the compiler gave them (inlined into the
    # handler, or a function / instrumented future of their own).
    ("  (a) body read, JSON depth check", r"src/http/body.rs:(sluice::http::routes::infer_common::\{\{closure\}\}|sluice::http::app::Direct::infer::\{\{closure\}\}::\{\{closure\}\}::\{\{closure\}\}|<tracing::instrument::Instrumented<T> as core::future::future::Future>::poll)$"),
    ("  (b) request decode (JSON header, tensors)", r"src/http/codec/infer.rs:(sluice::http::routes::infer_common::\{\{closure\}\}$|sluice::http::codec::infer::decode \[|sluice::http::codec::infer::decode_request_with$)"),
    ("  (c) service: checks, queue hand-off, await", r"(src/service/mod.rs:sluice::service::Service::infer::\{\{closure\}\}|src/service/infer.rs:<tracing::instrument::Instrumented<T> as core::future::future::Future>::poll)$"),
    ("  (d) response encode", r"src/http/codec/infer.rs:sluice::http::codec::infer::encode_response$"),
    ("instance worker thread (take batch, run, split)", r"src/scheduler/mod.rs:std::sys::backtrace::__rust_begin_short_backtrace"),
    ("  ONNX Runtime session.run (ort + libonnxruntime)", r"src/scheduler/executor.rs:<sluice::runtime::exec::Instance as sluice::scheduler::executor::Executor>::run_timed \["),
    ("metrics (record_request)", r"src/metrics.rs:sluice::metrics::VersionMetrics::record_request$"),
]
print(f"callgrind: {model} over {proto}, {done} requests after warm-up")
print(f"{'stage (inclusive instructions)':<52} {'per request':>12} {'share':>6}")
print(f"{'server process, everything':<52} {total / done:>12,.0f} {1:>6.0%}")
for name, pat in entries:
    c = max((c for c, f in rows if re.search(pat, f)), default=0)
    print(f"{name:<52} {c / done:>12,.0f} {c / total:>6.1%}")
print("(the rest: tokio's I/O driver and task scheduling, axum/tower middleware, connection tracking)")
EOF
