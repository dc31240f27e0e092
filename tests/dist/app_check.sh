#!/usr/bin/env bash
# compare_norms under mpirun: 2 processes against 1 on the real subset (dropout off, augmentation
# on), then the failure paths. Registered in ctest (label dist) as
#   app_check.sh COMPARE_NORMS SUBSET_DIR MPIRUN [MPIRUN ARGS...]
# Checks:
#  - SyncBatchNorm, GroupNorm and LayerNorm on 2 processes give one process's losses (every epoch,
#    2e-4 relative: float sums in another order over 2 epochs; measured 6e-5, 6e-6, 0); the last batch (451 images, batch 128)
#    splits 33 / 34, so the unequal-share weighting is exercised, and the augmentation draws of the
#    other process's rows must be replayed for the batches to match;
#  - plain BatchNorm keeps per-process statistics: its losses must differ from one process's by
#    more than 5x SyncBatchNorm's (measured 2.6e-3 against 6e-5);
#  - rank 0 alone writes one complete report (report.md, its pictures, results.json with processes 2);
#  - a resume with another process count is refused naming it;
#  - an error on rank 0 (a folder holding another run) ends the whole job, non-zero, within 60 s;
#  - normlab_study --processes 2 runs every run under the launcher.
set -uo pipefail
app=$1 subset=$2
shift 2
mpirun=("$@")
work=$(mktemp -d "${TMPDIR:-/tmp}/normlab-app-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail() { echo "app_check: FAIL: $*" >&2; exit 1; }
# The sanitizer build runs a lighter twin (NORMLAB_APP_CHECK_LIGHT=1: 195 images, which still
# split their last batch 33 / 34, 100 test images, BatchNorm and SyncBatchNorm: the two whose
# data-parallel paths differ; GroupNorm's and LayerNorm's are the per-process code BatchNorm's
# also runs): it hunts memory errors, which need every code path once, not the whole run (the full
# one took 6 minutes under ASan, the twin with three norms and 200 test images 3).
images=451 norms=bn,sbn,gn,ln test_images=200 study_images=451
# The study's part checks that each run starts under the launcher: one batch (128 images) in the twin.
[ "${NORMLAB_APP_CHECK_LIGHT:-0}" = 1 ] && images=195 norms=bn,sbn test_images=100 study_images=128
args=(--data-dir "$subset" --epochs 2 --limit-train "$images" --limit-test "$test_images" --norms "$norms" --dropout 0
      --no-progress --no-telemetry --device cpu)

"$app" "${args[@]}" --threads 1 --out "$work/one" > "$work/one.log" 2>&1 || { cat "$work/one.log"; fail "the one-process run failed"; }
OMP_NUM_THREADS=1 "${mpirun[@]}" -np 2 "$app" "${args[@]}" --out "$work/two" > "$work/two.log" 2>&1 ||
  { cat "$work/two.log"; fail "the 2-process run failed"; }
grep -q "data parallel over 2 processes" "$work/two.log" || fail "the 2-process run did not say it ran data parallel"

# norm epoch train_loss test_loss of both runs side by side.
join -t, <(awk -F, 'NR > 1 { print $1 "/" $3 "," $4 "," $6 }' "$work/one/metrics.csv" | sort) \
         <(awk -F, 'NR > 1 { print $1 "/" $3 "," $4 "," $6 }' "$work/two/metrics.csv" | sort) > "$work/joined.csv"
nnorms=$(echo "$norms" | tr ',' '\n' | wc -l)
[ "$(wc -l < "$work/joined.csv")" -eq $((2 * nnorms)) ] || { cat "$work/joined.csv"; fail "expected $nnorms norms x 2 epochs in both metrics.csv"; }
awk -F, '
  function rel(a, b) { d = a - b; if (d < 0) d = -d; return d / (b < 0 ? -b : b) }
  {
    split($1, k, "/"); tr = rel($4, $2); te = rel($5, $3)
    worst = tr > te ? tr : te
    printf "app_check: %-3s epoch %s: train loss %s vs %s, test loss %s vs %s (2 vs 1 process, %.2g relative)\n", k[1], k[2], $4, $2, $5, $3, worst
    if (k[1] == "sbn" && worst > sbn) sbn = worst
    if (k[1] == "bn") { if (worst > bn) bn = worst }
    else if (worst > 2e-4) { print "app_check: FAIL: " k[1] " epoch " k[2] " differs by " worst " (limit 2e-4)"; bad = 1 }
  }
  END {
    # Per-process statistics move BatchNorm away from one process far more than the summation
    # order moves SyncBatchNorm (measured 43x, 44x and 12x at 451, 195 and 323 images).
    if (bn < 5 * sbn || bn < 2e-5) { print "app_check: FAIL: BatchNorm on 2 processes is as close to one process (" bn ") as SyncBatchNorm (" sbn "): its statistics were not per process"; bad = 1 }
    exit bad
  }' "$work/joined.csv" || fail "losses (above)"

for f in report.md results.json train_loss.png test_accuracy.png misclassified_sbn.png confusion_sbn.png; do
  [ -s "$work/two/$f" ] || fail "the 2-process run wrote no $f"
done
# Every picture the report links exists (with --no-telemetry there are no telemetry charts to link).
for p in $(grep -o '([^)]*\.png)' "$work/two/report.md" | tr -d '()'); do
  [ -s "$work/two/$p" ] || fail "report.md links $p, which is missing"
done
! grep -q "gnuplot failed" "$work/two.log" || fail "gnuplot failed: $(cat "$work/two/gnuplot.log")"
grep -q '"processes": 2' "$work/two/results.json" || fail "results.json does not record 2 processes"
grep -q 'data parallel over 2 processes' "$work/two/report.md" || fail "report.md does not say it ran on 2 processes"
[ "$(grep -c '^== ' "$work/two.log")" -eq "$nnorms" ] || fail "the run headers were printed by more than rank 0"

# A resume with one process of the 2-process folder: refused, naming the process count.
if "$app" "${args[@]}" --threads 1 --out "$work/two" --resume > "$work/resume.log" 2>&1; then
  fail "a 1-process --resume of a 2-process folder was accepted"
fi
grep -q "processes" "$work/resume.log" || { cat "$work/resume.log"; fail "the refused resume does not name the process count"; }

# Rank 0 refuses the folder (it holds the one-process run): every process ends, non-zero, quickly.
start=$SECONDS
if OMP_NUM_THREADS=1 timeout 60 "${mpirun[@]}" -np 2 "$app" "${args[@]}" --out "$work/one" > "$work/refused.log" 2>&1; then
  fail "2 processes writing into another run's folder succeeded"
fi
[ $((SECONDS - start)) -lt 60 ] || fail "the refused 2-process job did not end within 60 s"
grep -q "compare_norms (rank 0): .*$work/one already holds" "$work/refused.log" || { cat "$work/refused.log"; fail "rank 0's reason is missing"; }
# The study runs each of its runs under the launcher.
study=$(dirname "$app")/normlab_study
"$study" --norms sbn,gn --seeds 0 --epochs 2 --limit-train "$study_images" --limit-test "$test_images" --data-dir "$subset" --processes 2 \
  --launcher "${mpirun[*]}" --out "$work/study" --no-progress > "$work/study.log" 2>&1 || { cat "$work/study.log"; fail "the study with --processes 2 failed"; }
[ "$(grep -c ',ok,' "$work/study/study.csv")" -eq 2 ] || { cat "$work/study/study.csv"; fail "the study's 2 runs did not finish"; }
[ "$(grep -l 'data parallel over 2 processes' "$work"/study/logs/*.log | wc -l)" -eq 2 ] || fail "a study run did not run on 2 processes"
echo "app_check: 2 processes match one (SyncBN, GN, LN), BN per process, one report by rank 0, failures bounded ($((SECONDS - start)) s)"
