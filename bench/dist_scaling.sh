#!/usr/bin/env bash
# Data-parallel scaling of the comparison network on this machine: images/s of compare_norms'
# training with 1 process (1 thread) and with K processes under mpirun (1 thread each), per norm,
# and the scaling efficiency (images/s with K) / (K x images/s with 1). Run it on an idle machine.
#
#   bench/dist_scaling.sh [--app build/examples/compare_norms/compare_norms] [--norms bn,sbn,gn]
#                         [--processes 2] [--epochs 3] [--data-dir ../shared/data/cifar10-subset]
#
# An epoch's time is read from metrics.csv (training plus the evaluation of the test set, which
# every process does in full: see docs/scaling-out.md); the first epoch is left out (warm-up),
# the median of the others is reported. The batch stays 128 over all processes (each takes 128/K).
set -euo pipefail
app=build/examples/compare_norms/compare_norms norms=bn,sbn,gn K=2 epochs=3 data=../shared/data/cifar10-subset
while [ $# -gt 0 ]; do
  case $1 in
    --app) app=$2; shift 2 ;;
    --norms) norms=$2; shift 2 ;;
    --processes) K=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --data-dir) data=$2; shift 2 ;;
    *) echo "dist_scaling: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x "$app" ] || { echo "dist_scaling: $app is not built" >&2; exit 1; }
[ "$epochs" -ge 2 ] || { echo "dist_scaling: --epochs must be at least 2 (the first is left out)" >&2; exit 2; }
root=()
[ "$(id -u)" -eq 0 ] && root=(--allow-run-as-root)
work=$(mktemp -d "${TMPDIR:-/tmp}/normlab-dist-scaling.XXXXXX")
trap 'rm -rf "$work"' EXIT
args=(--data-dir "$data" --norms "$norms" --epochs "$epochs" --no-progress --no-telemetry --device cpu)

"$app" "${args[@]}" --threads 1 --out "$work/one" > "$work/one.log"
OMP_NUM_THREADS=1 mpirun "${root[@]}" --oversubscribe -np "$K" "$app" "${args[@]}" --threads 1 --out "$work/many" > "$work/many.log"
images=$(grep -o '[0-9]* training' "$work/one.log" | head -1 | cut -d' ' -f1)

echo "dist_scaling: $images training images per epoch, batch 128, $(nproc) cores, $(date -u +%F)"
printf '%-6s %14s %14s %12s\n' norm "1 proc img/s" "$K proc img/s" efficiency
for n in ${norms//,/ }; do
  # Median epoch time of epochs 2.. for norm n.
  median() { awk -F, -v n="$n" 'NR > 1 && $1 == n && $3 > 1 { print $8 }' "$1" | sort -g |
             awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
  t1=$(median "$work/one/metrics.csv") tk=$(median "$work/many/metrics.csv")
  awk -v n="$n" -v i="$images" -v t1="$t1" -v tk="$tk" -v k="$K" \
    'BEGIN { a = i / t1; b = i / tk; printf "%-6s %14.0f %14.0f %11.0f%%\n", n, a, b, 100 * b / (k * a) }'
done
