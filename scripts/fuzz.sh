#!/usr/bin/env bash
# Runs the cargo-fuzz (libFuzzer) targets of fuzz/ for a bounded time each and
# prints, per target, the executions, exec/s, corpus size and whether a crash
# (panic, sanitizer error, timeout or out-of-memory) was found. Exits non-zero
# when any target found one; the input is left in fuzz/artifacts/<target>/.
#
#   make fuzz                               # every target, 60 s each
#   FUZZ_SECONDS=300 scripts/fuzz.sh        # 5 minutes each
#   scripts/fuzz.sh json_request            # only the targets named
#
# Environment:
#   FUZZ_SECONDS    seconds per target (default 60), libFuzzer's -max_total_time
#   FUZZ_SANITIZER  address (default) or none; see below
#   FUZZ_RSS_MB     -rss_limit_mb (default 2048): the whole process
#   FUZZ_MALLOC_MB  -malloc_limit_mb (default 128): any single allocation over
#                   this is a finding (inputs are a few KiB; nothing legitimate
#                   allocates 128 MiB for them)
#   FUZZ_TIMEOUT    -timeout in seconds for one input (default 10)
#
# Stable Rust (1.95) and sanitizers: cargo-fuzz builds with
# `-Cpasses=sancov-module` and `-Cllvm-args=-sanitizer-coverage-*`, which are
# stable, plus `-Zsanitizer=address` for ASan, which is not. Both were tried:
#   * `--sanitizer none` builds and runs on stable as is, but libFuzzer's
#     -malloc_limit_mb needs a sanitizer's allocator hooks, so an oversized
#     allocation that is never touched (a `Vec::with_capacity` sized by a
#     request) goes unseen: RSS does not grow.
#   * `--sanitizer address` works on stable with RUSTC_BOOTSTRAP=1 (the stable
#     toolchain ships librustc-stable_rt.asan.a); it catches oversized
#     allocations (the hooks are installed only with leak detection on, so
#     do not pass -detect_leaks=0) at ~1/7 of the exec/s. It is the default;
#     FUZZ_SANITIZER=none is the fallback (and a faster second pass).
# RUSTC_BOOTSTRAP=1 is set only for the fuzz build, never for the server's.
# Results and findings: docs/fuzzing-results.md.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_SANITIZER=${FUZZ_SANITIZER:-address}
FUZZ_RSS_MB=${FUZZ_RSS_MB:-2048}
FUZZ_MALLOC_MB=${FUZZ_MALLOC_MB:-128}
FUZZ_TIMEOUT=${FUZZ_TIMEOUT:-10}
ALL_TARGETS=(json_request binary_request grpc_infer_request grpc_infer_structured model_config rest_router grpc_service)
if [ $# -gt 0 ]; then targets=("$@"); else targets=("${ALL_TARGETS[@]}"); fi

if ! cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION from crates.io"
  cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

fuzz_args=(--sanitizer "$FUZZ_SANITIZER")
if [ "$FUZZ_SANITIZER" != none ]; then
  export RUSTC_BOOTSTRAP=1 # -Zsanitizer on the stable toolchain (see above)
fi

echo "fuzz: building ${targets[*]} (sanitizer: $FUZZ_SANITIZER)"
for t in "${targets[@]}"; do
  cargo fuzz build "${fuzz_args[@]}" "$t"
done

logs=fuzz/target/logs
mkdir -p "$logs"
failed=0
summary=()
for t in "${targets[@]}"; do
  corpus=fuzz/corpus/$t
  mkdir -p "$corpus" "fuzz/artifacts/$t"
  if [ -d "fuzz/seeds/$t" ]; then cp -n fuzz/seeds/"$t"/* "$corpus"/ 2>/dev/null || true; fi
  log=$logs/$t.log
  echo "fuzz: $t for ${FUZZ_SECONDS}s (log: $log)"
  status=0
  # One process, one worker (no -jobs/-workers): the fuzzer takes one core.
  cargo fuzz run "${fuzz_args[@]}" "$t" "$corpus" -- \
    -max_total_time="$FUZZ_SECONDS" -rss_limit_mb="$FUZZ_RSS_MB" \
    -malloc_limit_mb="$FUZZ_MALLOC_MB" -timeout="$FUZZ_TIMEOUT" \
    -print_final_stats=1 >"$log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  if [ -z "$execs" ]; then # no final stats (a crash): the last "#N" status line
    execs=$(sed -n 's/^#\([0-9][0-9]*\)[[:space:]].*/\1/p' "$log" | tail -1)
  fi
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
  size=$(find "$corpus" -type f | wc -l)
  artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
  if [ "$status" -ne 0 ] || [ -n "$artifact" ]; then
    failed=1
    kind=$(grep -m1 -oE 'panicked at [^ ]+' "$log" ||
      grep -m1 -oE 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer): [a-z-]+( \([^)]*\))?' "$log" ||
      echo "exit $status")
    result="CRASH ($kind) input: ${artifact:-see $log}"
    tail -40 "$log"
  else
    result="no crash"
  fi
  line=$(printf '%-22s %5ss %10s execs %6s exec/s  corpus %5s  %s' "$t" "${secs:-?}" "${execs:-?}" "${rate:-?}" "$size" "$result")
  summary+=("$line")
  echo "fuzz: $line"
done

echo
echo "fuzz summary (${FUZZ_SECONDS}s per target, sanitizer $FUZZ_SANITIZER):"
printf '  %s\n' "${summary[@]}"
exit $failed
