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

free_ports() {
    "$VENV/bin/python" - <<'PY'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
PY
}
read -r HTTP_PORT GRPC_PORT < <(free_ports)
read -r HTTPS_PORT GRPCS_PORT < <(free_ports)
read -r TRITON_HTTP_PORT TRITON_GRPC_PORT < <(free_ports)

# A second server with TLS and bearer tokens, for test_secure.py: a throwaway
# CA and a localhost certificate made here with openssl, and a token file.
if ! command -v openssl >/dev/null; then
    echo "conformance: installing openssl (Debian) for the throwaway CA"
    if [[ $(id -u) == 0 ]]; then
        timeout 300 apt-get install -y -qq openssl >/dev/null 2>&1 ||
            { timeout 300 apt-get update -qq && timeout 300 apt-get install -y -qq openssl >/dev/null; }
    else
        timeout 300 sudo apt-get install -y -qq openssl >/dev/null
    fi
fi
SECRETS=$(mktemp -d -t sluice-conformance-secrets.XXXXXX)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=sluice conformance ca" -keyout "$SECRETS/ca.key" -out "$SECRETS/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
    -keyout "$SECRETS/tls.key" -out "$SECRETS/tls.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$SECRETS/ext.cnf"
openssl x509 -req -in "$SECRETS/tls.csr" -CA "$SECRETS/ca.crt" -CAkey "$SECRETS/ca.key" \
    -CAcreateserial -days 2 -extfile "$SECRETS/ext.cnf" -out "$SECRETS/tls.crt" 2>/dev/null
INFER_TOKEN="infer-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
ADMIN_TOKEN="admin-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf '# conformance tokens\ninfer %s\ninfer,admin %s\n' "$INFER_TOKEN" "$ADMIN_TOKEN" >"$SECRETS/tokens"

LOG=$(mktemp -t sluice-conformance.XXXXXX.log)
SECURE_LOG=$(mktemp -t sluice-conformance-secure.XXXXXX.log)
TRITON_LOG=$(mktemp -t sluice-conformance-triton.XXXXXX.log)
# tests/models holds a deliberately corrupt model, so readiness is not strict
# here (strict readiness would keep this server unready for ever).
"$BIN" serve --model-repository tests/models --host 127.0.0.1 \
    --http-port "$HTTP_PORT" --grpc-port "$GRPC_PORT" --log warn \
    --strict-readiness false >"$LOG" 2>&1 &
PID=$!
"$BIN" serve --model-repository tests/models --host 127.0.0.1 \
    --http-port "$HTTPS_PORT" --grpc-port "$GRPCS_PORT" --log warn \
    --tls-cert "$SECRETS/tls.crt" --tls-key "$SECRETS/tls.key" \
    --auth-token-file "$SECRETS/tokens" --load-model iris,fixed >"$SECURE_LOG" 2>&1 &
SECURE_PID=$!
# A third server over a Triton-style repository (config.pbtxt files), started
# the way a Triton container's args read: no subcommand, Triton's flag names
# in their --flag=value form.
"$BIN" --model-repository=tests/triton_repo --http-port="$TRITON_HTTP_PORT" \
    --grpc-port="$TRITON_GRPC_PORT" --model-control-mode=explicit --load-model='*' \
    --strict-model-config=false --exit-on-error=true --log-verbose=0 >"$TRITON_LOG" 2>&1 &
TRITON_PID=$!
cleanup() {
    kill "$PID" "$SECURE_PID" "$TRITON_PID" 2>/dev/null || true
    wait "$PID" "$SECURE_PID" "$TRITON_PID" 2>/dev/null || true
    if grep -qF -e "$INFER_TOKEN" -e "$ADMIN_TOKEN" "$LOG" "$SECURE_LOG"; then
        echo "conformance: a token appeared in a server log" >&2
        exit 1
    fi
    rm -rf "$LOG" "$SECURE_LOG" "$TRITON_LOG" "$SECRETS"
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
for _ in $(seq 1 300); do
    "$BIN" healthcheck --url "http://127.0.0.1:$TRITON_HTTP_PORT/v2/health/ready" >/dev/null 2>&1 && break
    kill -0 "$TRITON_PID" 2>/dev/null || break
    sleep 0.2
done
"$BIN" healthcheck --url "http://127.0.0.1:$TRITON_HTTP_PORT/v2/health/ready" || {
    echo "conformance: the Triton-style server is not ready; its log:" >&2
    cat "$TRITON_LOG" >&2
    exit 1
}
kill -0 "$SECURE_PID" 2>/dev/null || {
    echo "conformance: the TLS server exited; its log:" >&2
    cat "$SECURE_LOG" >&2
    exit 1
}

SLUICE_HTTP="127.0.0.1:$HTTP_PORT" SLUICE_GRPC="127.0.0.1:$GRPC_PORT" \
    SLUICE_MODELS="$ROOT/tests/models" \
    SLUICE_TRITON_HTTP="127.0.0.1:$TRITON_HTTP_PORT" SLUICE_TRITON_GRPC="127.0.0.1:$TRITON_GRPC_PORT" \
    SLUICE_HTTPS="localhost:$HTTPS_PORT" SLUICE_GRPCS="localhost:$GRPCS_PORT" \
    SLUICE_CA="$SECRETS/ca.crt" SLUICE_INFER_TOKEN="$INFER_TOKEN" SLUICE_ADMIN_TOKEN="$ADMIN_TOKEN" \
    timeout 300 "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/conformance "${@:2}"
