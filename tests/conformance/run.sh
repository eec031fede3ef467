#!/usr/bin/env bash
# Conformance against the stock Triton clients: installs the pinned
# `tritonclient[http,grpc]` (and onnxruntime for reference results) into
# .venv-conformance/ (once per requirements hash), starts the given sluice
# binary on free loopback ports over tests/models, and runs pytest.
#
# usage: tests/conformance/run.sh [path/to/sluice]   (default target/debug/sluice)
# Builds nothing. Every step is bounded in time; the server is always killed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
BIN=${1:-target/debug/sluice}
PYTHON=${PYTHON:-python3.11}
VENV="$ROOT/.venv-conformance"
REQ="$ROOT/tests/conformance/requirements.txt"
STAMP="$VENV/.requirements.sha256"

[[ -x "$BIN" ]] || { echo "conformance: no sluice binary at $BIN (build it first)" >&2; exit 2; }

hash=$(sha256sum "$REQ" | cut -d' ' -f1)
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$hash" ]]; then
    echo "conformance: installing pinned clients into $VENV"
    timeout 120 "$PYTHON" -m venv "$VENV"
    timeout 900 "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ"
    echo "$hash" > "$STAMP"
fi

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

LOG=$(mktemp -t sluice-conformance.XXXXXX.log)
"$BIN" serve --model-repository tests/models --host 127.0.0.1 \
    --http-port "$HTTP_PORT" --grpc-port "$GRPC_PORT" --log warn >"$LOG" 2>&1 &
PID=$!
cleanup() {
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    rm -f "$LOG"
}
trap cleanup EXIT

for _ in $(seq 1 300); do
    if "$BIN" healthcheck --url "http://127.0.0.1:$HTTP_PORT/v2/health/ready" >/dev/null 2>&1; then
        break
    fi
    if ! kill -0 "$PID" 2>/dev/null; then
        echo "conformance: the server exited; its log:" >&2
        cat "$LOG" >&2
        exit 1
    fi
    sleep 0.2
done
"$BIN" healthcheck --url "http://127.0.0.1:$HTTP_PORT/v2/health/ready" || {
    echo "conformance: server not ready within 60 s; its log:" >&2
    cat "$LOG" >&2
    exit 1
}

SLUICE_HTTP="127.0.0.1:$HTTP_PORT" SLUICE_GRPC="127.0.0.1:$GRPC_PORT" \
    SLUICE_MODELS="$ROOT/tests/models" \
    timeout 300 "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/conformance "${@:2}"
