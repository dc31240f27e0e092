#!/usr/bin/env bash
# Compiles every kernels/cuda/*.cu (and tests/cuda/primitives_nvcc.cu) with nvcc for sm_80 and
# sm_90 with ptxas verbose output, writes the register/spill report, and fails on any register
# spill in a kernel (the norm and conv kernels are designed to keep everything in registers; a
# spill means a regression).
# nvcc: $NVCC, else the one on PATH, else NVIDIA's toolkit wheels (scripts/cuda-wheels.sh). Where
# none can be had, the check is skipped with one loud line and exit 0 only under
# NORMLAB_NVCC_OPTIONAL=1 (make test); otherwise it fails.
#   scripts/check-nvcc.sh [report-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build/nvcc}
mkdir -p "$out"
nvcc=${NVCC:-}
if [ -z "$nvcc" ]; then
  if command -v nvcc >/dev/null; then
    nvcc=nvcc
  elif ! nvcc=$(scripts/cuda-wheels.sh); then
    if [ "${NORMLAB_NVCC_OPTIONAL:-0}" = 1 ]; then
      echo "check-nvcc: SKIPPED: no nvcc (none on PATH, the PyPI wheels could not be installed): kernels/cuda/*.cu were NOT compiled by nvcc" >&2
      exit 0
    fi
    echo "check-nvcc: nvcc not found, and the PyPI wheels could not be installed (scripts/cuda-wheels.sh)" >&2
    exit 1
  fi
fi
command -v "$nvcc" >/dev/null || { echo "check-nvcc: $nvcc not found" >&2; exit 1; }
echo "check-nvcc: $("$nvcc" --version | tail -2 | head -1) ($nvcc)"
report="$out/ptxas-report.txt"
: > "$report"
status=0
# Every kernels/cuda/*.cu, and the test kernels of the warp-level primitives (their inline PTX
# only ptxas can check); one nvcc per file, $JOBS (default: the cores) at a time; the report keeps
# the files' order.
files=(kernels/cuda/*.cu tests/cuda/primitives_nvcc.cu)
export nvcc out
printf '%s\n' "${files[@]}" | xargs -P "${JOBS:-$(nproc)}" -I{} sh -c '
  name=$(basename "$1" .cu)
  if "$nvcc" -std=c++20 -O3 -I. -Icore/include \
      -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
      -Xptxas -v -c "$1" -o "$out/$name.o" > "$out/$name.log" 2>&1; then
    rm -f "$out/$name.failed"
  else
    touch "$out/$name.failed"
  fi' _ {}
for cu in "${files[@]}"; do
  name=$(basename "$cu" .cu)
  if [ -e "$out/$name.failed" ]; then
    echo "check-nvcc: nvcc failed on $cu:" >&2
    cat "$out/$name.log" >&2
    status=1
    continue
  fi
  cat "$out/$name.log" >> "$report"
done
# One line per kernel and architecture: registers and spills.
summary="$out/ptxas-summary.txt"
awk '
  /Compiling entry function/ { fn = $7; gsub(/\047/, "", fn); arch = $9; gsub(/\047/, "", arch) }
  /spill stores/ { stack = $1; st = $5; ld = $9 }
  /Used [0-9]+ registers/ { printf "%-6s %4s regs  stack %4s  spill stores %4s  loads %4s  %s\n", arch, $5, stack, st, ld, fn }
' "$report" | c++filt > "$summary"
cat "$summary"
# The instruction mix of every kernel (bench/gpu_model's issue and latency terms): cuobjdump from
# beside nvcc, from PATH, or from the toolkit wheels.
cuobjdump=$(dirname "$(command -v "$nvcc")")/cuobjdump
[ -x "$cuobjdump" ] || cuobjdump=$(command -v cuobjdump || true)
if [ -z "$cuobjdump" ] && wheel_nvcc=$(scripts/cuda-wheels.sh); then
  cuobjdump=$(dirname "$wheel_nvcc")/cuobjdump
fi
objects=()
for cu in "${files[@]}"; do objects+=("$out/$(basename "$cu" .cu).o"); done
if [ $status -eq 0 ] && [ -x "$cuobjdump" ]; then
  if python3 scripts/sass_summary.py --cuobjdump "$cuobjdump" "${objects[@]}" > "$out/sass-summary.json.tmp"; then
    mv "$out/sass-summary.json.tmp" "$out/sass-summary.json"
    echo "check-nvcc: instruction mix of every kernel in $out/sass-summary.json"
  else
    rm -f "$out/sass-summary.json.tmp"
    echo "check-nvcc: the SASS summary failed" >&2
    status=1
  fi
elif [ $status -eq 0 ]; then
  echo "check-nvcc: no cuobjdump (none beside nvcc or on PATH, no wheels): no SASS summary for the GPU model" >&2
fi
if grep -E "spill stores +[1-9]|loads +[1-9]" "$summary"; then
  echo "check-nvcc: register spills above" >&2
  status=1
fi
[ $status -eq 0 ] && echo "check-nvcc: ${#files[@]} files, $(wc -l < "$summary") kernel builds, no spills"
exit $status
