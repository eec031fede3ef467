#!/usr/bin/env bash
# API fuzzing with schemathesis: installs the pinned schemathesis into
# .venv-fuzz-api/ (once per requirements hash), starts the given sluice binary
# on a free loopback port over tests/models, and runs schemathesis against it
# for a bounded time, in three passes:
#
#   1. docs/openapi.yaml, every operation but unload, every check;
#   2. docs/openapi.yaml, unload alone, every check (last: it may unload the
#      models the other operations use, and a 503 for an unloaded model is
#      the documented answer, which the server-error check would count);
#   3. when FUZZ_API_OIP_SPEC names a copy of the Open Inference Protocol's
#      own description (kserve/open-inference-protocol,
#      specification/protocol/open_inference_rest.yaml; not kept in this
#      repository, whose rules forbid copying others' text), that spec too,
#      checking server errors and that responses match its schemas (it
#      documents only 200s and 400s, so status codes are not checked).
#
# usage: tests/fuzz-api/run.sh [path/to/sluice]   (default target/debug/sluice)
# Environment:
#   FUZZ_API_SECONDS  time budget of pass 1 (default 120); pass 2 gets a
#                     quarter of it, pass 3 half
#   FUZZ_API_SEED     schemathesis seed (default: a random one, printed)
#   FUZZ_API_WORKERS  concurrent schemathesis workers (default 2)
#   FUZZ_API_OIP_SPEC the OIP's open_inference_rest.yaml, for pass 3
# Builds nothing. Reports (ndjson, junit) and the server log are left in
# target/fuzz-api/. Exits non-zero when a pass found a failure, or when the
# server died or logged a panic. The server is always stopped.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
BIN=${1:-target/debug/sluice}
PYTHON=${PYTHON:-python3.11}
VENV="$ROOT/.venv-fuzz-api"
REQ="$ROOT/tests/fuzz-api/requirements.txt"
STAMP="$VENV/.requirements.sha256"
SECONDS_1=${FUZZ_API_SECONDS:-120}
WORKERS=${FUZZ_API_WORKERS:-2}
SEED=${FUZZ_API_SEED:-$(( (RANDOM << 15) | RANDOM ))}
OUT="$ROOT/target/fuzz-api"

[[ -x "$BIN" ]] || { echo "fuzz-api: no sluice binary at $BIN (build it first)" >&2; exit 2; }

hash=$(sha256sum "$REQ" | cut -d' ' -f1)
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$hash" ]]; then
    echo "fuzz-api: installing pinned schemathesis into $VENV"
    timeout 120 "$PYTHON" -m venv "$VENV"
    timeout 900 "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ"
    echo "$hash" > "$STAMP"
fi

rm -rf "$OUT"
mkdir -p "$OUT"
read -r HTTP_PORT GRPC_PORT < <("$VENV/bin/python" - <<'PY'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
PY
)
BASE="http://127.0.0.1:$HTTP_PORT"
LOG="$OUT/server.log"

# tests/models holds a deliberately corrupt model, so readiness is not strict
# here (strict readiness would keep this server unready for ever).
"$BIN" serve --model-repository tests/models --host 127.0.0.1 \
    --http-port "$HTTP_PORT" --grpc-port "$GRPC_PORT" --log warn \
    --strict-readiness false >"$LOG" 2>&1 &
PID=$!
cleanup() {
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
}
trap cleanup EXIT

for _ in $(seq 1 300); do
    "$BIN" healthcheck --url "$BASE/v2/health/ready" >/dev/null 2>&1 && break
    if ! kill -0 "$PID" 2>/dev/null; then
        echo "fuzz-api: the server exited; its log:" >&2
        cat "$LOG" >&2
        exit 1
    fi
    sleep 0.2
done
"$BIN" healthcheck --url "$BASE/v2/health/ready" || {
    echo "fuzz-api: server not ready within 60 s; its log:" >&2
    cat "$LOG" >&2
    exit 1
}

# One pass: its name, its time budget, then schemathesis' arguments. Runs in
# $OUT so that schemathesis' example database stays there.
failed=0
pass() {
    local name=$1 seconds=$2
    shift 2
    echo "fuzz-api: pass '$name', $seconds s, seed $SEED"
    # A run that exceeds its budget by more than a minute is hung: stop it.
    if (cd "$OUT" && timeout $((seconds + 60)) "$VENV/bin/schemathesis" --no-color \
        --config-file "$CONFIG" run \
        --url "$BASE" --max-time "$seconds" --workers "$WORKERS" --seed "$SEED" \
        --request-timeout 30 --report ndjson,junit --report-dir "$OUT/$name" \
        "$@" 2>&1 | tee "$OUT/$name.txt"); then
        :
    else
        failed=1
    fi
}

CONFIG="$ROOT/tests/fuzz-api/schemathesis.toml"
pass sluice "$SECONDS_1" "$ROOT/docs/openapi.yaml" --checks all \
    --exclude-operation-id post-v2-repository-models-model-unload
pass sluice-unload $((SECONDS_1 / 4)) "$ROOT/docs/openapi.yaml" --checks all \
    --include-operation-id post-v2-repository-models-model-unload
# The settings above name this repository's operations and models; the OIP
# pass runs with schemathesis' defaults.
passes=(sluice sluice-unload)
if [ -n "${FUZZ_API_OIP_SPEC:-}" ]; then
    CONFIG=/dev/null
    pass oip $((SECONDS_1 / 2)) "$FUZZ_API_OIP_SPEC" \
        --checks not_a_server_error,response_schema_conformance,content_type_conformance
    passes+=(oip)
else
    echo "fuzz-api: FUZZ_API_OIP_SPEC not set: the OIP spec's own pass is skipped"
fi

if ! kill -0 "$PID" 2>/dev/null; then
    echo "fuzz-api: the server died during the run; its log is $LOG" >&2
    failed=1
fi
if grep -q "panicked" "$LOG"; then
    echo "fuzz-api: the server panicked; see $LOG" >&2
    failed=1
fi

echo
echo "fuzz-api: summary (schemathesis $("$VENV/bin/schemathesis" --version | awk '{print $NF}'), seed $SEED)"
for name in "${passes[@]}"; do
    printf '  %-14s %s\n' "$name:" "$(grep -E '^ *[0-9]+ generated' "$OUT/$name.txt" | tail -n1 | sed 's/^ *//')"
done
exit "$failed"
