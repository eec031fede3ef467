#!/usr/bin/env bash
# Installs the real object stores that the remote-repository tests run against, once:
#   - moto (PyPI) in server mode, an S3-compatible server, and WsgiDAV, a WebDAV server for http://
#     repositories, into .venv-stores/ (pinned with hashes by tests/stores/requirements.txt, which
#     also brings azure-storage-blob to create containers);
#   - Azurite (npm), Azure's own storage emulator, into .tools-stores/ (pinned by
#     tests/stores/package-lock.json).
# Re-installs only when the pins change. Nothing here runs a server: each test starts its own, on
# 127.0.0.1, and stops it (tests/it/remote/).
#
#   scripts/setup-stores.sh        # prints the two tool paths it checked
#
# Environment: PYTHON (default python3).
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PINS="$ROOT/tests/stores"
VENV="$ROOT/.venv-stores"
NODE_DIR="$ROOT/.tools-stores"
PYTHON="${PYTHON:-python3}"

die() { echo "setup-stores: $*" >&2; exit 1; }
pins_hash() { cat "$@" | sha256sum | cut -d' ' -f1; }

want="$(pins_hash "$PINS/requirements.txt")"
if [[ ! -f "$VENV/.pins" || "$(cat "$VENV/.pins")" != "$want" || ! -x "$VENV/bin/moto_server" || ! -x "$VENV/bin/wsgidav" ]]; then
  echo "setup-stores: installing moto, WsgiDAV and azure-storage-blob into .venv-stores (pinned with hashes)"
  "$PYTHON" -m venv --clear "$VENV" || die "cannot create $VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    --require-hashes -r "$PINS/requirements.txt" || die "pip install of tests/stores/requirements.txt failed"
  printf '%s\n' "$want" >"$VENV/.pins"
fi

want="$(pins_hash "$PINS/package.json" "$PINS/package-lock.json")"
if [[ ! -f "$NODE_DIR/.pins" || "$(cat "$NODE_DIR/.pins")" != "$want" || ! -x "$NODE_DIR/node_modules/.bin/azurite-blob" ]]; then
  command -v npm >/dev/null || die "npm is required (Node.js >= 20)"
  echo "setup-stores: installing Azurite into .tools-stores (pinned by tests/stores/package-lock.json)"
  mkdir -p "$NODE_DIR"
  rm -f "$NODE_DIR/.pins"
  cp "$PINS/package.json" "$PINS/package-lock.json" "$NODE_DIR/"
  # --ignore-scripts: no install script may fetch anything from outside the registry.
  (cd "$NODE_DIR" && npm install --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null) ||
    die "npm install of Azurite failed"
  cmp -s "$PINS/package-lock.json" "$NODE_DIR/package-lock.json" ||
    die "npm resolved something else than tests/stores/package-lock.json; regenerate the lock"
  printf '%s\n' "$want" >"$NODE_DIR/.pins"
fi
echo "setup-stores: moto, WsgiDAV and Azurite are ready"
