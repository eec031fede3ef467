#!/usr/bin/env bash
# A real Prometheus for tests: installed from Debian, started on loopback with a given
# configuration and a bounded lifetime, queried, and stopped.
#
#   scripts/prometheus.sh install                     # Debian's prometheus (with promtool), if missing
#   scripts/prometheus.sh start DIR CONFIG [SECONDS]  # start; prints its base URL
#   scripts/prometheus.sh query DIR EXPR              # instant query; prints the API's JSON
#   scripts/prometheus.sh stop DIR                    # stop it (idempotent)
#
# start: DIR is the instance's own folder (created if missing): TSDB in DIR/data, log in
# DIR/prometheus.log, pid in DIR/pid, URL in DIR/url. CONFIG is a prometheus.yml; relative paths in
# it (rule_files) resolve against its folder. Prometheus cannot listen on port 0, so a free loopback
# port is picked here (and another one if it was taken meanwhile). The process runs under
# `timeout SECONDS` (default 300): it ends by itself even if the caller dies without stopping it.
# start returns once /-/ready answers (at most 30 s), or fails with the end of the log.
#
# Used by scripts/test-prometheus.sh (make test-prometheus); written to be reused by other tests
# that need a Prometheus scraping real processes.
set -Eeuo pipefail

PROMETHEUS="${PROMETHEUS:-prometheus}"
READY_SECS=30

die() {
  printf 'prometheus.sh: %s\n' "$*" >&2
  exit 1
}

# A loopback TCP port that is free now (the kernel's choice for port 0).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

cmd_install() {
  if command -v "$PROMETHEUS" >/dev/null && command -v promtool >/dev/null; then
    return
  fi
  command -v apt-get >/dev/null || die "prometheus and promtool are missing and this is not a Debian machine"
  ((EUID == 0)) || die "prometheus is missing: run as root once, or apt-get install prometheus"
  echo "prometheus.sh: installing Debian's prometheus (brings promtool)" >&2
  # Debian's package would start a service where systemd runs; nothing here relies on it.
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } ||
    die "apt-get install prometheus failed"
  if ! command -v "$PROMETHEUS" >/dev/null || ! command -v promtool >/dev/null; then
    die "prometheus installed but not on PATH"
  fi
}

alive() { [[ -f "$1/pid" ]] && kill -0 "$(cat "$1/pid")" 2>/dev/null; }

cmd_start() {
  local dir="$1" config="$2" secs="${3:-300}"
  [[ -f "$config" ]] || die "no such configuration: $config"
  command -v "$PROMETHEUS" >/dev/null || die "prometheus is not installed (scripts/prometheus.sh install)"
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  alive "$dir" && die "a Prometheus already runs from $dir (pid $(cat "$dir/pid"))"
  local attempt port pid deadline
  for attempt in 1 2 3; do
    port="$(free_port)"
    rm -rf "$dir/data"
    timeout --kill-after=5 "$secs" "$PROMETHEUS" \
      --config.file="$config" \
      --web.listen-address="127.0.0.1:$port" \
      --storage.tsdb.path="$dir/data" \
      --storage.tsdb.retention.time=1d \
      --log.level=warn \
      >"$dir/prometheus.log" 2>&1 &
    pid=$!
    echo "$pid" >"$dir/pid"
    echo "http://127.0.0.1:$port" >"$dir/url"
    deadline=$((SECONDS + READY_SECS))
    while ((SECONDS < deadline)); do
      if ! kill -0 "$pid" 2>/dev/null; then
        break
      fi
      if curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port/-/ready" 2>/dev/null; then
        cat "$dir/url"
        return
      fi
      sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
      cmd_stop "$dir"
      die "not ready within ${READY_SECS}s; log: $(tail -n 5 "$dir/prometheus.log" | tr '\n' ' ')"
    fi
    rm -f "$dir/pid"
    grep -q 'address already in use' "$dir/prometheus.log" || break
    echo "prometheus.sh: port $port was taken meanwhile (attempt $attempt), trying another" >&2
  done
  die "prometheus exited at start; log: $(tail -n 5 "$dir/prometheus.log" | tr '\n' ' ')"
}

cmd_query() {
  local dir="$1" expr="$2"
  [[ -f "$dir/url" ]] || die "no Prometheus started from $dir"
  curl -fsS --max-time 10 --get --data-urlencode "query=$expr" "$(cat "$dir/url")/api/v1/query"
  echo
}

cmd_stop() {
  local dir="$1" pid i
  [[ -f "$dir/pid" ]] || return 0
  pid="$(cat "$dir/pid")"
  # `timeout` passes the TERM on to Prometheus, which shuts down cleanly.
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$dir/pid"
}

case "${1:-}" in
  install) cmd_install ;;
  start)
    (($# >= 3)) || die "usage: $0 start DIR CONFIG [SECONDS]"
    cmd_start "$2" "$3" "${4:-300}"
    ;;
  query)
    (($# == 3)) || die "usage: $0 query DIR EXPR"
    cmd_query "$2" "$3"
    ;;
  stop)
    (($# == 2)) || die "usage: $0 stop DIR"
    cmd_stop "$2"
    ;;
  *) die "usage: $0 install | start DIR CONFIG [SECONDS] | query DIR EXPR | stop DIR" ;;
esac
