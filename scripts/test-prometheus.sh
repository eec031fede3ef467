#!/usr/bin/env bash
# make test-prometheus: prove deploy/'s PromQL on a real Prometheus scraping real Sluice processes.
#
#   scripts/test-prometheus.sh      # from anywhere; exit status != 0 on any failure
#
# 1. promtool check rules and promtool test rules: deploy/monitoring's PrometheusRule, written out
#    as a plain rules file, against the unit tests in deploy/monitoring/tests/ (each alert must
#    have a firing case, each recording rule a test).
# 2. Two real `sluice serve` processes (the debug build) on loopback, labelled by the scrape
#    configuration as the Prometheus Operator would label two pods of namespace "sluice": track
#    stable and track canary. Each serves a small repository built from tests/models and
#    tests/fixtures (prometheus-proof.py describes it) and gets load from closed-loop clients
#    (prometheus-proof.py load), bounded in time: a model that holds a known number of requests in flight (3 on stable, 2 on canary),
#    iris traffic, and on the canary failing runs, a corrupt model and refusals at its in-flight
#    cap.
# 3. Prometheus (Debian's package, scripts/prometheus.sh) on loopback with 1 s scrapes and the
#    rules loaded, started once both servers hold their in-flight requests, so every sample it
#    ever has is taken under the same load.
# 4. scripts/prometheus-proof.py evaluates, through Prometheus' HTTP API, the prometheus-adapter
#    rules filled in as the adapter fills them, the KEDA query, the canary AnalysisTemplate's
#    queries, every dashboard query, every recording rule and the alerts' states, and checks
#    every metric name against the servers' live /metrics.
#
# Every process runs under `timeout` and is stopped on exit (trap). No fixed sleeps: every wait
# polls for its condition with a deadline. Needs: Debian (apt-get, as root, installs prometheus
# and python3-yaml when missing), curl, cargo. Environment: SLUICE_PROOF_KEEP=1 keeps the work
# folder (logs, Prometheus config, rules) for inspection.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
START=$SECONDS
# Upper bound on every process this script starts; the whole run takes well under it.
LIFETIME=300
# In-flight requests held on the `held` model by each server (prometheus-proof.py checks them).
HELD_STABLE=3
HELD_CANARY=2

WORK="$(mktemp -d "${TMPDIR:-/tmp}/sluice-prometheus.XXXXXX")"
PIDS=()

cleanup() {
  local rc=$?
  # Load generators and servers first (a server drains its held requests in about a second), then
  # Prometheus.
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  "$ROOT/scripts/prometheus.sh" stop "$WORK/prometheus" || true
  if ((rc != 0)); then
    echo "test-prometheus: FAILED after $((SECONDS - START))s; last lines of the logs:" >&2
    for log in "$WORK"/*.log "$WORK"/prometheus/prometheus.log; do
      [[ -s "$log" ]] || continue
      echo "--- ${log#"$WORK"/}" >&2
      tail -n 15 "$log" >&2
    done
  fi
  if [[ "${SLUICE_PROOF_KEEP:-0}" == 1 ]]; then
    echo "test-prometheus: work folder kept: $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n== %s (%ss)\n' "$*" "$((SECONDS - START))"; }
die() {
  printf 'test-prometheus: %s\n' "$*" >&2
  exit 1
}

# ---- tools ------------------------------------------------------------------------------------

step "tools"
"$ROOT/scripts/prometheus.sh" install
PY=""
for candidate in python3 /usr/bin/python3; do
  if command -v "$candidate" >/dev/null && "$candidate" -c 'import yaml' 2>/dev/null; then
    PY="$candidate"
    break
  fi
done
if [[ -z "$PY" ]]; then
  ((EUID == 0)) || die "python3 with PyYAML is needed: apt-get install python3-yaml"
  echo "installing Debian's python3-yaml"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-yaml >/dev/null || die "apt-get install python3-yaml failed"
  PY=/usr/bin/python3
fi
printf '%s; %s; %s\n' "$(prometheus --version 2>&1 | head -n 1)" "$(promtool --version 2>&1 | head -n 1)" "$("$PY" --version)"

# ---- 1. promtool ------------------------------------------------------------------------------

step "promtool check rules, promtool test rules"
mkdir -p "$WORK/rules"
"$PY" "$ROOT/scripts/prometheus-proof.py" rules "$ROOT/deploy/monitoring/prometheusrule.yaml" \
  "$WORK/rules/sluice.rules.yaml" "$ROOT"/deploy/monitoring/tests/*.yaml
TESTS=()
for t in "$ROOT"/deploy/monitoring/tests/*.yaml; do
  cp "$t" "$WORK/rules/"
  TESTS+=("$(basename "$t")")
done
(cd "$WORK/rules" && promtool check rules sluice.rules.yaml)
(cd "$WORK/rules" && promtool test rules "${TESTS[@]}")

# ---- 2. two Sluice processes under load ----------------------------------------------------------

step "build sluice"
cargo build --locked --quiet --bin sluice
SLUICE="$ROOT/target/debug/sluice"

# Free loopback ports, all distinct (bound together, then released for the servers).
read -r HTTP_A GRPC_A HTTP_B GRPC_B DEAD < <("$PY" -c '
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
for s in socks:
    s.close()')
STABLE="http://127.0.0.1:$HTTP_A"
CANARY="http://127.0.0.1:$HTTP_B"

step "start two Sluice processes (stable $STABLE, canary $CANARY)"
"$PY" "$ROOT/scripts/prometheus-proof.py" repo "$ROOT" "$WORK/repo-stable" stable
"$PY" "$ROOT/scripts/prometheus-proof.py" repo "$ROOT" "$WORK/repo-canary" canary
serve() { # name repo http grpc [extra flags]
  local name=$1 repo=$2 http=$3 grpc=$4
  shift 4
  timeout --kill-after=5 "$LIFETIME" "$SLUICE" serve --model-repository "$repo" --host 127.0.0.1 \
    --http-port "$http" --grpc-port "$grpc" --log warn "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
}
serve stable "$WORK/repo-stable" "$HTTP_A" "$GRPC_A"
# The canary's in-flight cap leaves room for its ordinary traffic, not for a burst (below).
CANARY_CAP=$((HELD_CANARY + 3))
serve canary "$WORK/repo-canary" "$HTTP_B" "$GRPC_B" --max-inflight-requests "$CANARY_CAP"

# Model readiness, not server readiness: the canary holds a corrupt model on purpose.
wait_ready() { # url model...
  local url=$1 model deadline=$((SECONDS + 60))
  shift
  for model in "$@"; do
    until curl -fsS -o /dev/null --max-time 2 "$url/v2/models/$model/ready" 2>/dev/null; do
      ((SECONDS < deadline)) || die "$url: model $model not ready within 60 s"
      sleep 0.2
    done
  done
}
wait_ready "$STABLE" held iris swap
wait_ready "$CANARY" held iris matmul_dyn

step "load: held requests in flight, iris traffic, failing runs on the canary"
IRIS='{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}'
# x of shape [1, 2] passes validation and fails inside ONNX Runtime (matmul_dyn runs only dim 3).
BAD_MATMUL='{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1.0,2.0]}]}'
# Refusals (sluice_refused_requests_total{reason="inflight_limit"}): a burst of 8 held requests at
# once over the canary's cap of 5, before any other load and before Prometheus starts, so that it
# neither races the clients below nor disturbs the in-flight figures Prometheus will average.
timeout 60 "$PY" "$ROOT/scripts/prometheus-proof.py" burst "$CANARY" held "$IRIS" 8
canary_metrics="$(curl -fsS "$CANARY/metrics")"
[[ "$canary_metrics" == *'reason="inflight_limit"'* ]] ||
  die "the burst over the canary's in-flight cap ($CANARY_CAP) was not refused"

# Clients (prometheus-proof.py load): CLIENTS threads sending requests back to back, PAUSE seconds
# apart (0: a closed loop, one request in flight per client), until LIFETIME runs out.
load() { # name url model body clients pause
  timeout --kill-after=5 "$LIFETIME" "$PY" "$ROOT/scripts/prometheus-proof.py" load "$2" "$3" "$4" "$5" "$6" \
    "$LIFETIME" >"$WORK/load-$1.log" 2>&1 &
  PIDS+=($!)
}
load held-stable "$STABLE" held "$IRIS" "$HELD_STABLE" 0
load held-canary "$CANARY" held "$IRIS" "$HELD_CANARY" 0
load iris-stable "$STABLE" iris "$IRIS" 2 0.05
load iris-canary "$CANARY" iris "$IRIS" 1 0.05
load matmul-canary "$CANARY" matmul_dyn "$BAD_MATMUL" 1 0.2

"$PY" "$ROOT/scripts/prometheus-proof.py" wait-held "$STABLE" "$HELD_STABLE" "$CANARY" "$HELD_CANARY"

# ---- 3. Prometheus ----------------------------------------------------------------------------

step "start Prometheus (1 s scrapes, rules loaded)"
# Target labels as the Prometheus Operator sets them from deploy/base's ServiceMonitor (namespace,
# service, pod, container, endpoint; job = the Service's name) plus its podTargetLabels (track,
# app_kubernetes_io_version). A third target has nothing listening: a pod that cannot be scraped.
cat >"$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - $WORK/rules/sluice.rules.yaml
scrape_configs:
  - job_name: sluice
    metrics_path: /metrics
    static_configs:
      - targets: ["127.0.0.1:$HTTP_A"]
        labels: {namespace: sluice, service: sluice, container: sluice, endpoint: http,
                 pod: sluice-7d9f8b6c5-stable, track: stable, app_kubernetes_io_version: "0.1.0"}
      - targets: ["127.0.0.1:$HTTP_B"]
        labels: {namespace: sluice, service: sluice, container: sluice, endpoint: http,
                 pod: sluice-5c4b7a9d8-canary, track: canary, app_kubernetes_io_version: "0.2.0"}
      - targets: ["127.0.0.1:$DEAD"]
        labels: {namespace: sluice, service: sluice, container: sluice, endpoint: http,
                 pod: sluice-7d9f8b6c5-gone, track: stable, app_kubernetes_io_version: "0.1.0"}
EOF
promtool check config "$WORK/prometheus.yml" >/dev/null
PROM_URL="$("$ROOT/scripts/prometheus.sh" start "$WORK/prometheus" "$WORK/prometheus.yml" "$LIFETIME")"
echo "Prometheus at $PROM_URL"

# ---- 4. the proof -------------------------------------------------------------------------------

step "evaluate deploy/'s PromQL through the Prometheus API"
"$PY" "$ROOT/scripts/prometheus-proof.py" prove \
  --root "$ROOT" --prometheus "$PROM_URL" --work "$WORK" \
  --server "stable,$STABLE,sluice-7d9f8b6c5-stable,$HELD_STABLE" \
  --server "canary,$CANARY,sluice-5c4b7a9d8-canary,$HELD_CANARY" \
  --dead-pod sluice-7d9f8b6c5-gone

printf '\ntest-prometheus: all checks passed (%ss)\n' "$((SECONDS - START))"
