#!/usr/bin/env bash
# Runs every libFuzzer harness built in BUILD_DIR (make test-fuzz: 30 s each; make fuzz: longer):
# first each committed regression input in tests/fuzz/regressions/<name>/ (a past crash must
# stay fixed), then fuzzing from tests/fuzz/corpus/<name>/ copied to a scratch corpus, so the
# committed seeds never change. Crash inputs land in BUILD_DIR/crashes/ and fail the run; keep
# them as regressions once fixed. One line per harness: executions, rate, new corpus entries.
# Harnesses run side by side, FUZZ_JOBS at a time (default: the cores; each is one process on
# one core), and their lines are printed in name order once all have ended.
#   scripts/run-fuzzers.sh BUILD_DIR SECONDS
set -euo pipefail
cd "$(dirname "$0")/.."
build=$1
seconds=$2
jobs=${FUZZ_JOBS:-$(nproc)}
mkdir -p "$build/crashes"

# One harness; its summary goes to $build/$name.result, its status is the exit code.
fuzz_one() {
  local bin=$1 name work log execs rate new
  name=$(basename "$bin")
  if [ -d "tests/fuzz/regressions/$name" ] && [ -n "$(ls -A "tests/fuzz/regressions/$name")" ]; then
    if ! "$bin" "tests/fuzz/regressions/$name"/* > "$build/$name.regressions.log" 2>&1; then
      echo "run-fuzzers: $name: a regression input crashes again; see $build/$name.regressions.log"
      return 1
    fi
  fi
  work=$build/corpus-$name
  rm -rf "$work"
  mkdir -p "$work"
  cp tests/fuzz/corpus/"$name"/* "$work"/
  log=$build/$name.log
  # -rss_limit_mb: a reader that inflates a bomb or trusts a huge header is caught as an OOM.
  if "$bin" -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=1024 -max_len=65536 \
       -artifact_prefix="$build/crashes/$name-" "$work" > "$log" 2>&1; then
    execs=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
    rate=$(grep -m1 'stat::average_exec_per_sec' "$log" | awk '{print $2}')
    new=$(grep -m1 'stat::new_units_added' "$log" | awk '{print $2}')
    printf 'run-fuzzers: %-18s ok  %10s executions in %s s (%s/s), %s new corpus entries\n' "$name" "$execs" "$seconds" "$rate" "$new"
  else
    echo "run-fuzzers: $name FOUND A CRASH; input in $build/crashes/, log $log:"
    grep -E 'ERROR|SUMMARY|Test unit written' "$log" | head -10
    return 1
  fi
}

names=()
for bin in "$build"/tests/fuzz/fuzz_*; do
  [ -x "$bin" ] || continue
  name=$(basename "$bin")
  names+=("$name")
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  ( if fuzz_one "$bin" > "$build/$name.result" 2>&1; then echo 0; else echo 1; fi > "$build/$name.status" ) &
done
wait
[ ${#names[@]} -gt 0 ] || { echo "run-fuzzers: no harness in $build/tests/fuzz" >&2; exit 1; }
status=0
for name in "${names[@]}"; do
  cat "$build/$name.result"
  [ "$(cat "$build/$name.status")" = 0 ] || status=1
done
exit $status
