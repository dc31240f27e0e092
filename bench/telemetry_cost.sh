#!/usr/bin/env bash
# The cost of compare_norms' stability telemetry: epoch wall time with and without
# --no-telemetry, alternating, one thread pinned to core 0, on the real CIFAR-10 subset.
#   bench/telemetry_cost.sh [COMPARE_NORMS] [DATA_DIR] [ROUNDS]
# Prints one line per run: on|off, norm, each epoch's seconds, their mean.
set -euo pipefail
bin=${1:-build/examples/compare_norms/compare_norms}
data=${2:-../shared/data/cifar10-subset}
rounds=${3:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for round in $(seq "$rounds"); do
  for mode in on off; do
    extra=()
    [ "$mode" = off ] && extra=(--no-telemetry)
    taskset -c 0 "$bin" --data-dir "$data" --norms bn,gn --epochs 3 --threads 1 --device cpu --no-progress \
      --out "$work/$mode-$round" "${extra[@]}" > /dev/null
    python3 - "$work/$mode-$round/metrics.csv" "$mode" << 'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
for n in ("bn", "gn"):
    s = [float(r["seconds"]) for r in rows if r["norm"] == n]
    print(sys.argv[2], n, " ".join(f"{x:.2f}" for x in s), f"mean {sum(s) / len(s):.2f}")
EOF
  done
done
