#!/usr/bin/env bash
# Enforces the module boundaries of the README's architecture section:
# only src/runtime/ talks to ONNX Runtime, the core never imports a
# transport, the adapters reach the models only through the service, and no
# two files of src/ import each other in a cycle.
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0
check() { # pattern, allowed-path-regex, message
  local hits
  hits=$(grep -rnE "$1" src --include='*.rs' | grep -vE "$2" || true)
  if [ -n "$hits" ]; then echo "boundary violation: $3"; echo "$hits"; fail=1; fi
}
# The composition root (server, config, cli, main) wires the layers together;
# so does fuzzing.rs, which builds what server.rs serves for the fuzz targets.
root='^src/(server|cli|main|lib|fuzzing)\.rs|^src/(config|cli)/'
check '\bort::|use ort\b' '^src/runtime/' "only src/runtime/ may use the ort crate"
check '\b(axum|tonic)::' "^src/(http|grpc)/|$root" "only the adapters may use axum or tonic"
check 'crate::http\b' "^src/http/|$root" "the gRPC adapter and the core must not import the REST adapter"
check 'crate::grpc\b' "^src/grpc/|$root" "the REST adapter and the core must not import the gRPC adapter"
adapters=$(grep -rlE 'crate::(registry|scheduler|runtime)\b' src/http src/grpc src/net src/edge.rs || true)
if [ -n "$adapters" ]; then
  echo "boundary violation: the adapters and the edge reach models only through crate::service, never the registry, scheduler or runtime"
  grep -nE 'crate::(registry|scheduler|runtime)\b' $adapters; fail=1
fi
python3 scripts/check-cycles.py || fail=1
exit $fail
