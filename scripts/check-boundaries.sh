#!/usr/bin/env bash
# Enforces the module boundaries of docs/architecture (README): only
# src/runtime/ talks to ONNX Runtime, and the core never imports a transport.
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0
check() { # pattern, allowed-path-regex, message
  local hits
  hits=$(grep -rnE "$1" src --include='*.rs' | grep -vE "$2" || true)
  if [ -n "$hits" ]; then echo "boundary violation: $3"; echo "$hits"; fail=1; fi
}
check '\bort::|use ort\b' '^src/runtime/' "only src/runtime/ may use the ort crate"
check '\b(axum|tonic)::' '^src/(http|grpc)/|^src/lib\.rs|^src/main\.rs' "only the adapters may use axum or tonic"
check 'crate::http\b' '^src/(http/|lib\.rs|main\.rs)' "the gRPC adapter and the core must not import the REST adapter"
check 'crate::grpc\b' '^src/(grpc/|lib\.rs|main\.rs)' "the REST adapter and the core must not import the gRPC adapter"
exit $fail
