#!/usr/bin/env bash
# The first real-GPU run, prepared as ONE command that finishes in about 9 minutes on a GPU
# machine (16 cores, one H100/H200-class GPU, nvcc, CMake, ninja, Python with PyTorch, no Debian
# dev packages, no network):
#
#   scripts/gpu-deps.sh                  here, once: makes .gpu-deps/ (headers, CMake configs,
#                                        Google Benchmark, zlib, the CIFAR-10 subset)
#   scripts/gpu-check.sh                 there, with .gpu-deps/ carried along
#   scripts/gpu-check.sh --dry-run       anywhere: prints the plan and checks without a GPU what
#                                        it can, above all that .gpu-deps/ is complete (CI runs it)
#   options: --out DIR (default $OUT when set, else runs/gpu-check)
#            --budget SECONDS (default 540: every part's time limit is cut to what is left)
#
# Parts, each reported PASS / FAIL / SKIP with a reason, none stopping the others:
#   environment   GPU, driver, nvcc, CMake, ninja, g++; the GPU's architecture; cuDNN and NCCL
#   deps          .gpu-deps/ holds every file the build needs
#   build         NORMLAB_CUDA=ON for this GPU only, tests + benchmarks + compare_norms, all cores
#   ctest         the full suite: CPU tests and the [cuda gpu] registrations on the GPU
#   bench-norm    bench_norm_cuda: our norm kernels against cuDNN, GB/s and % of queried peak,
#                 and our outputs against cuDNN's (max relative difference, fails above 1e-3)
#   train-step    bench_train_step --device cuda --profile: images/s of the comparison network's
#                 step, and every launch of one traced step with its device time; bench_conv
#                 --device cuda: every convolution alone (the dry run makes both tables from
#                 build-profile/'s binaries (make test-profile): cuemu times)
#   train-peer    the same step in PyTorch on the same GPU, NCHW and channels_last, in one run
#   compare       compare_norms, 3 epochs on the real subset, on the GPU and on the CPU; their
#                 per-epoch losses compared
#   sanitizer     compute-sanitizer memcheck, racecheck, synccheck and initcheck on the CUDA op
#                 tests that reach every path ([medium] and [cuda-vs-cpu] on device cuda; racecheck
#                 without the training-step test, which takes minutes under it)
#   nccl          nl::dist's NCCL backend: dist_check collectives, one process per GPU (under
#                 mpirun when Open MPI is here, else RANK/WORLD_SIZE and a rendezvous file)
# Writes into the output folder (at most 8 files, none deeper than the folder itself):
#   summary.md  logs.tar.gz  bench_norm_cuda.json  train_step_cuda.json  train_step_vs_torch.md  compare_norms.json
#   model_vs_measured.md (each normlab norm row's measured time beside bench/gpu_model's prediction)
#   train_step_profile.md (every launch of one training step per norm and batch, with its time;
#                          every convolution of the network alone, per pass and batch)
# Exit status: 0 when every part passed or was skipped for a stated reason, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

dry_run=0
out=${OUT:-runs/gpu-check}
budget=540
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --out) [ $# -ge 2 ] || { echo "gpu-check: --out needs a folder" >&2; exit 2; }; out=$2; shift ;;
    --budget) [[ ${2:-} =~ ^[0-9]+$ ]] || { echo "gpu-check: --budget needs a whole number of seconds" >&2; exit 2; }; budget=$2; shift ;;
    -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu-check: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done

deps=$repo/.gpu-deps
build=$repo/build-gpu-check
jobs=$(nproc)
start=$SECONDS
mkdir -p "$out" || { echo "gpu-check: cannot create $out" >&2; exit 2; }
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
logs=$work/logs
mkdir -p "$logs"
trap 'rm -rf "$work"' EXIT

rows=()
failed=0
# record PART STATUS DETAIL: one line now, one row of summary.md later.
record() {
  rows+=("| $1 | $2 | ${3//|/\\|} |")
  [ "$2" = FAIL ] && failed=1
  printf 'gpu-check: %-12s %-4s %s\n' "$1" "$2" "$3"
}
left() { echo $((budget - (SECONDS - start))); }
# run_part NAME LIMIT CMD...: runs CMD with its output in logs/NAME.log, under the smaller of
# LIMIT and the time left; returns CMD's status (124 on timeout).
run_part() {
  local name=$1 limit=$2
  shift 2
  local l
  l=$(left)
  [ "$l" -lt "$limit" ] && limit=$l
  if [ "$limit" -le 5 ]; then
    echo "not started: the time budget is spent" > "$logs/$name.log"
    return 124
  fi
  timeout --kill-after=10 "$limit" "$@" > "$logs/$name.log" 2>&1
}
tail_of() { tail -n "${2:-5}" "$logs/$1.log" | tr '\n' ' ' | cut -c1-300; }

# --- environment ------------------------------------------------------------------------------
gpu_arch=""
gpu_name=""
if command -v nvidia-smi > /dev/null && q=$(nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader 2>&1 | head -1) \
   && [[ $q =~ ^(.+),\ ([0-9]+)\.([0-9]+),\ ([^,]+),\ (.+)$ ]]; then
  gpu_name=${BASH_REMATCH[1]}
  gpu_arch=${BASH_REMATCH[2]}${BASH_REMATCH[3]}
  gpu_line="$gpu_name, sm_$gpu_arch, driver ${BASH_REMATCH[4]}, ${BASH_REMATCH[5]}"
else
  gpu_line="no GPU: ${q:-nvidia-smi is not installed}"
fi
nvcc_line=$(command -v nvcc > /dev/null && nvcc --version | tail -n 2 | head -n 1 || echo "nvcc not on PATH")
cmake_line=$(cmake --version 2> /dev/null | head -n 1 || echo "cmake missing")
gxx_line=$(g++ --version 2> /dev/null | head -n 1 || echo "g++ missing")
generator=()
command -v ninja > /dev/null && generator=(-G Ninja)
{
  echo "GPU: $gpu_line"
  echo "nvcc: $nvcc_line"
  echo "cmake: $cmake_line"
  echo "g++: $gxx_line"
  echo "ninja: $(command -v ninja || echo 'missing (make is used)')"
  echo "cores: $jobs"
} > "$logs/environment.log"

# cuDNN and NCCL: in the CUDA toolkit's folders (this Debian image) or in pip's nvidia-* packages
# beside PyTorch (the GPU machine). Prints "LIBRARY INCLUDE_DIR" or nothing.
find_nvidia_lib() {
  local lib=$1 header=$2 pymod=$3 d
  local dirs=()
  if command -v nvcc > /dev/null; then
    local root
    root=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
    dirs+=("$root/lib64:$root/include" "$root/lib:$root/include")
  fi
  dirs+=("/usr/lib/x86_64-linux-gnu:/usr/include" "/usr/local/lib:/usr/local/include")
  if command -v python3 > /dev/null; then
    local p
    p=$(python3 -c "import importlib.util as u, os; s = u.find_spec('$pymod'); print(list(s.submodule_search_locations)[0] if s else '')" 2> /dev/null)
    [ -n "$p" ] && dirs+=("$p/lib:$p/include")
  fi
  for d in "${dirs[@]}"; do
    local l=${d%%:*} i=${d#*:} f
    for f in "$l/$lib.so" "$l/$lib.so."[0-9]*; do
      if [ -e "$f" ] && [ -e "$i/$header" ]; then
        echo "$f $i"
        return
      fi
    done
  done
}
read -r cudnn_lib cudnn_inc <<< "$(find_nvidia_lib libcudnn cudnn.h nvidia.cudnn)"
read -r nccl_lib nccl_inc <<< "$(find_nvidia_lib libnccl nccl.h nvidia.nccl)"
{
  echo "cuDNN: ${cudnn_lib:-not found} ${cudnn_inc:+(headers $cudnn_inc)}"
  echo "NCCL: ${nccl_lib:-not found} ${nccl_inc:+(headers $nccl_inc)}"
} >> "$logs/environment.log"
cat "$logs/environment.log" | sed 's/^/gpu-check:   /'

if [ $dry_run -eq 1 ]; then
  echo "gpu-check: --dry-run: the plan (every part runs on the GPU machine; here, only the checks marked 'now')"
  cat << EOF
  1 environment  nvidia-smi, nvcc, cmake, ninja, g++; cuDNN and NCCL located        (now)
  2 deps         .gpu-deps/ complete: every file in its MANIFEST                     (now; made by scripts/gpu-deps.sh if absent)
  3 build        cmake ${generator[*]} -DNORMLAB_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=<the GPU's>
                 -DNORMLAB_DOWNLOAD=OFF -DNORMLAB_BENCH_ONEDNN=OFF, packages only from .gpu-deps/;
                 cmake --build -j $jobs                                               (now: configure, and a probe that
                                                                                   compiles and links against .gpu-deps/ only)
  4 ctest        ctest -j $jobs: CPU tests + [cuda gpu] registrations; Fashion-MNIST tests left out
                 (its 30 MB dataset is not carried; CI runs them)
  5 bench-norm   bench_norm_cuda --iters 20 --json bench_norm_cuda.json; outputs vs cuDNN's within 1e-3;
                 measured times beside the model's (bench/gpu_model_norms.json): model_vs_measured.md
    norm-peer    bench/peer/norm_vs_torch.py --device cuda: the GroupNorm rows against PyTorch's aten
                 kernels (cuDNN has none), NCHW and channels_last; the table in the logs  (now: on the CPU)
  6 train-step   bench_train_step --device cuda --batches 128,512 --json --profile: images/s, and every
                 launch of one traced step with its device time; bench_conv --device cuda: each
                 convolution alone; both in train_step_profile.md                         (now: from
                                                                                   build-profile/, cuemu times)
    train-peer   bench/peer/train_step_vs_torch.py --device cuda: PyTorch eager, NCHW and channels_last
  7 compare      compare_norms --epochs 3 on the subset, --device cuda and --device cpu;
                 per-epoch train loss within 5 % and test accuracy within 5 pp
  8 sanitizer    compute-sanitizer --tool memcheck|racecheck|synccheck|initcheck on
                 normlab_tests "[medium],[cuda-vs-cpu]" (device cuda), 40 s each; racecheck 100 s
                 without the training-step test (too slow under it)
  9 nccl         dist_check collectives over NCCL, one process per GPU: mpirun -np <GPUs> when
                 Open MPI is there, else RANK/WORLD_SIZE + NORMLAB_DIST_INIT_FILE (no MPI needed)
  output: summary.md, logs.tar.gz, bench_norm_cuda.json, train_step_cuda.json, train_step_vs_torch.md, compare_norms.json,
          model_vs_measured.md, train_step_profile.md
          in ${OUT:-runs/gpu-check} (\$OUT when set)
EOF
fi

if [ -n "$gpu_arch" ]; then
  record environment PASS "$gpu_line; $nvcc_line; cuDNN ${cudnn_lib:-not found}; NCCL ${nccl_lib:-not found}"
elif [ $dry_run -eq 1 ]; then
  record environment SKIP "dry run: $gpu_line; $nvcc_line; cuDNN ${cudnn_lib:-not found}; NCCL ${nccl_lib:-not found}"
else
  record environment FAIL "$gpu_line"
fi

# --- deps -------------------------------------------------------------------------------------
deps_ok=0
if [ ! -f "$deps/MANIFEST" ] && [ $dry_run -eq 1 ] && command -v apt-get > /dev/null; then
  echo "gpu-check: .gpu-deps/ is absent: making it with scripts/gpu-deps.sh"
  scripts/gpu-deps.sh "$deps" > "$logs/gpu-deps.log" 2>&1 || true
fi
if [ ! -f "$deps/MANIFEST" ]; then
  record deps FAIL ".gpu-deps/MANIFEST missing: run scripts/gpu-deps.sh on the Debian machine and carry .gpu-deps"
else
  missing=$(awk '$1 == "file" { print $2 }' "$deps/MANIFEST" | while read -r f; do
    case "$f" in data/*) p=$deps/$f ;; *) p=$deps/root/$f ;; esac
    [ -e "$p" ] || echo "$f"
  done)
  if [ -n "$missing" ]; then
    record deps FAIL "missing from .gpu-deps: $(echo $missing)"
  else
    deps_ok=1
    record deps PASS "$(grep -c '^file ' "$deps/MANIFEST") required files present ($(du -sh "$deps" | cut -f1))"
  fi
fi

# --- build ------------------------------------------------------------------------------------
# Packages come only from .gpu-deps/ (CMAKE_FIND_ROOT_PATH_MODE_PACKAGE=ONLY): on a machine that
# also has them installed, a file missing from the folder still fails here, as it would there.
cuda_mode=ON
[ -n "$gpu_arch" ] || cuda_mode=$([ $dry_run -eq 1 ] && command -v nvcc > /dev/null && echo ON || echo OFF)
arch=${gpu_arch:-90}
configure=(cmake -S "$repo" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release
  -DNORMLAB_CUDA=$cuda_mode -DCMAKE_CUDA_ARCHITECTURES="$arch"
  -DNORMLAB_BUILD_TESTS=ON -DNORMLAB_BUILD_EXAMPLES=ON -DNORMLAB_BUILD_BENCH=ON
  -DNORMLAB_DOWNLOAD=OFF -DNORMLAB_BENCH_ONEDNN=OFF
  -DCMAKE_FIND_ROOT_PATH="$deps/root" -DCMAKE_FIND_ROOT_PATH_MODE_PACKAGE=ONLY
  -DNORMLAB_CIFAR_SUBSET="$deps/data/cifar10-subset")
# NCCL from pip's nvidia-nccl beside PyTorch (no libnccl.so link there, only libnccl.so.2).
[ -n "$nccl_lib" ] && configure+=(-DNORMLAB_NCCL_LIBRARY="$nccl_lib" -DNORMLAB_NCCL_INCLUDE_DIR="$nccl_inc")
if [ -n "$cudnn_lib" ]; then
  configure+=(-DNORMLAB_BENCH_CUDNN=ON -DCUDNN_LIBRARY="$cudnn_lib" -DCUDNN_INCLUDE_DIR="$cudnn_inc")
else
  configure+=(-DNORMLAB_BENCH_CUDNN=OFF)
fi
# The consumer test (install + find_package(normlab)) finds the carried packages through this.
export CMAKE_PREFIX_PATH="$deps/root/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
# cuDNN 9 loads its engine libraries from the library path.
[ -n "$cudnn_lib" ] && export LD_LIBRARY_PATH="$(dirname "$cudnn_lib")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

built=0
if [ $deps_ok -eq 0 ]; then
  record build SKIP "no complete .gpu-deps/"
elif [ $dry_run -eq 1 ]; then
  rm -rf "$build"
  if ! run_part configure 120 "${configure[@]}"; then
    record build FAIL "configure (NORMLAB_CUDA=$cuda_mode) failed: $(grep -A3 'CMake Error' "$logs/configure.log" | head -4 | tr '\n' ' ')"
  else
    # A probe that includes every carried header and links the carried libraries, with the
    # compiler's own list of the headers it read: none may come from the host's packages.
    cat > "$work/probe.cpp" << 'EOF'
#include <CLI/CLI.hpp>
#include <Eigen/Core>
#include <benchmark/benchmark.h>
#include <nlohmann/json.hpp>
#include <zlib.h>
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
int main() {
  Eigen::Matrix2f m = Eigen::Matrix2f::Identity();
  nlohmann::json j = {{"trace", m.trace()}};
  CLI::App app{"probe"};
  benchmark::Initialize(nullptr, nullptr);
  return j["trace"] == 2.0f && zlibVersion()[0] != '\0' ? 0 : 1;
}
EOF
    inc=(-isystem "$deps/root/usr/include" -isystem "$deps/root/usr/include/eigen3")
    lib=$deps/root/usr/lib/x86_64-linux-gnu
    if ! run_part probe 120 bash -c '
        g++ -std=c++20 "$@" -MD -MF "'"$work"'/probe.d" -c "'"$work"'/probe.cpp" -o "'"$work"'/probe.o" &&
        g++ "'"$work"'/probe.o" -L"'"$lib"'" -Wl,-rpath,"'"$lib"'" -lbenchmark -lz -o "'"$work"'/probe" &&
        "'"$work"'/probe" && ldd "'"$work"'/probe"' _ "${inc[@]}"; then
      record build FAIL "probe against .gpu-deps/ failed: $(tail_of probe 3)"
    else
      host_headers=$(tr ' \\' '\n\n' < "$work/probe.d" | grep -E '/(eigen3|catch2|nlohmann|CLI|benchmark)/|/z(lib|conf)\.h$' | grep -v "^$deps/" || true)
      # At run time libz.so.1 may be the machine's own (every Linux has it, ABI-stable since
      # 2006); Google Benchmark's library exists only in .gpu-deps/.
      host_libs=$(grep -E 'libbenchmark\.so' "$logs/probe.log" | grep -v "$deps/" || true)
      if [ -n "$host_headers$host_libs" ]; then
        record build FAIL "the probe used the host's files, not .gpu-deps/: $(echo $host_headers $host_libs | cut -c1-300)"
      else
        record build PASS "dry run: configure (NORMLAB_CUDA=$cuda_mode, sm_$arch) with packages from .gpu-deps/ only; probe compiled, linked and ran against .gpu-deps/ only"
      fi
    fi
  fi
elif [ -z "$gpu_arch" ]; then
  record build SKIP "no GPU"
else
  if run_part configure 120 "${configure[@]}" && run_part build 330 cmake --build "$build" -j "$jobs"; then
    built=1
    record build PASS "NORMLAB_CUDA=ON sm_$arch, $(grep -c 'Building\|Linking' "$logs/build.log") steps ($((SECONDS - start)) s since start)"
  else
    record build FAIL "$(grep -h -m3 -E 'error|CMake Error' "$logs/configure.log" "$logs/build.log" | tr '\n' ' ' | cut -c1-300)"
  fi
fi

# --- ctest ------------------------------------------------------------------------------------
if [ $built -eq 0 ]; then
  record ctest SKIP "$([ $dry_run -eq 1 ] && echo 'dry run' || echo 'no build')"
else
  n_gpu=$(cd "$build" && ctest -N | grep -c '\[cuda gpu\]')
  # Fashion-MNIST's dataset (a Debian package, 30 MB) is not carried: the one test that reads it
  # is left out (the corrupt-IDX test writes its own files and runs).
  # Pictures need gnuplot, a Debian package the GPU machine lacks: there the app tests check the
  # fallback (plots.gp + data + the message) instead, and the summary says so.
  no_gnuplot=0
  command -v gnuplot > /dev/null || no_gnuplot=1
  # Two OpenMP threads per test (the CI machine's count): 16 tests at once, each with 16 threads,
  # made the CPU gradchecks take 190 s on the first run (2026-11-30).
  if (cd "$build" && NORMLAB_TEST_NO_GNUPLOT=$no_gnuplot OMP_NUM_THREADS=2 \
        run_part ctest 200 ctest --output-on-failure -j "$jobs" -E 'Fashion-MNIST reads'); then
    record ctest PASS "$(grep -m1 'tests passed' "$logs/ctest.log"); $n_gpu on the GPU; Fashion-MNIST tests left out (dataset not carried)$([ $no_gnuplot = 1 ] && echo '; no gnuplot here: the app tests checked plots.gp and its data instead of PNGs')"
  else
    record ctest FAIL "$(grep -m1 'tests passed' "$logs/ctest.log" || tail_of ctest 3); failed: $(grep -E '^\s+[0-9]+ - ' "$logs/ctest.log" | head -8 | sed 's/^ *//' | tr '\n' ';' | cut -c1-400)"
  fi
fi

# --- bench-norm -------------------------------------------------------------------------------
if [ $built -eq 0 ]; then
  record bench-norm SKIP "$([ $dry_run -eq 1 ] && echo 'dry run' || echo 'no build')"
elif [ ! -x "$build/bench/bench_norm_cuda" ]; then
  record bench-norm SKIP "cuDNN not found (looked in the toolkit, /usr, /usr/local and pip's nvidia.cudnn)"
elif run_part bench-norm 120 "$build/bench/bench_norm_cuda" --iters 20 --json "$out/bench_norm_cuda.json"; then
  record bench-norm PASS "$(python3 - "$out/bench_norm_cuda.json" "$repo/bench/gpu_model_norms.json" "$out/model_vs_measured.md" << 'EOF' 2>&1
import json, statistics, sys
d = json.load(open(sys.argv[1]))
ours = [r for r in d["rows"] if "cudnn" not in r["name"].lower()]
peer = [r for r in d["rows"] if "cudnn" in r["name"].lower()]
med = lambda rs: statistics.median(r["pct_of_peak"] for r in rs) if rs else float("nan")
diffs = [r["max_rel_diff_vs_normlab"] for r in peer if r.get("max_rel_diff_vs_normlab") is not None]
line = (f'{d["device"]}, peak {d["peak_gbs"]:.0f} GB/s: ours median {med(ours):.1f}% of peak '
        f'({len(ours)} rows), cuDNN median {med(peer):.1f}% ({len(peer)} rows)')
if diffs:
    line += f'; outputs vs cuDNN: max relative difference {max(diffs):.1e} over {len(diffs)} rows'
# The model's prediction beside each measured normlab row (bench/gpu_model_norms.json, made
# without a GPU by `make gpu-model`), for the GPU the name says, else the H100's column.
try:
    model = json.load(open(sys.argv[2]))
    gpu = next((g for g in model["gpus"] if g in d["device"]), "H100")
    col = model["gpus"].index(gpu)
    pred = {r["name"]: r["us"][col] for r in model["rows"]}
    rows = [(r["name"], r["ms"] * 1e3, pred[r["name"]]) for r in ours if r["name"] in pred]
    with open(sys.argv[3], "w") as f:
        f.write(f"# normlab norm kernels: measured on {d['device']} vs the model's {gpu} prediction\n\n")
        f.write("| row | measured us | model us | measured / model |\n|---|---|---|---|\n")
        for name, m, p in rows:
            f.write(f"| {name} | {m:.1f} | {p:.1f} | {m / p:.2f} |\n")
    if rows:
        ratios = sorted(m / p for _, m, p in rows)
        line += (f'; measured/model ({gpu} column) median {ratios[len(ratios) // 2]:.2f}, '
                 f'range {ratios[0]:.2f}-{ratios[-1]:.2f} (model_vs_measured.md)')
except (OSError, ValueError, KeyError) as e:
    line += f'; no model comparison ({e})'
print(line)
EOF
)"
else
  record bench-norm FAIL "$(tail_of bench-norm 3)"
fi

# --- norm-peer --------------------------------------------------------------------------------
# The GroupNorm rows (GN4, LN over C, H, W) have no cuDNN engine: PyTorch's aten kernels are their
# peer, NCHW and channels_last, same shapes and timing (bench/peer/norm_vs_torch.py). The dry run
# runs the same code on the CPU with a batch of 2 (the JSON's form; its times mean nothing).
torch_py=""
for py in python3 /usr/bin/python3; do
  if "$py" -c 'import torch' 2> /dev/null; then
    torch_py=$py
    break
  fi
done
if [ $built -eq 0 ] && [ $dry_run -eq 1 ] && [ -n "$torch_py" ]; then
  if run_part norm-peer 60 "$torch_py" "$repo/bench/peer/norm_vs_torch.py" --device cpu --iters 1 \
        --json "$logs/norm_vs_torch.json"; then
    record norm-peer PASS "dry run on the CPU: $(grep -c '/torch:' "$logs/norm-peer.log") rows (logs: norm_vs_torch.json; times mean nothing)"
  else
    record norm-peer FAIL "$(tail_of norm-peer 3)"
  fi
elif [ $built -eq 0 ]; then
  record norm-peer SKIP "$([ $dry_run -eq 1 ] && echo 'dry run, and no python3 with PyTorch' || echo 'no build')"
elif [ -z "$torch_py" ] || ! "$torch_py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2> /dev/null; then
  record norm-peer SKIP "no python3 with PyTorch and CUDA here"
elif [ ! -f "$out/bench_norm_cuda.json" ]; then
  record norm-peer SKIP "no bench_norm_cuda.json from bench-norm to compare with"
elif run_part norm-peer 90 "$torch_py" "$repo/bench/peer/norm_vs_torch.py" --device cuda --iters 20 \
      --json "$logs/norm_vs_torch.json" --normlab "$out/bench_norm_cuda.json" --md "$logs/norm_vs_torch.md"; then
  record norm-peer PASS "$(python3 - "$logs/norm_vs_torch.md" << 'EOF' 2>&1
import statistics, sys
r = [float(l.split("|")[4].strip().rstrip("x")) for l in open(sys.argv[1]) if l.startswith(("| GN4", "| LN"))]
print(f"normlab vs PyTorch's faster layout on {len(r)} GroupNorm rows: median {statistics.median(r):.2f}x, "
      f"range {min(r):.2f}-{max(r):.2f}x, faster on {sum(x >= 1 for x in r)} (logs: norm_vs_torch.md)" if r else "no rows")
EOF
)"
else
  record norm-peer FAIL "$(tail_of norm-peer 3)"
fi

# --- train-step -------------------------------------------------------------------------------
# Images/s, then one traced step per norm and batch: every launch with its device time
# (train_step_profile.md). The dry run makes the same table from an emulated build's binary
# (cuemu: the CPU's times, the table's form).
# The convolutions one by one (bench_conv --device cuda) are appended to the same file.
emulated_bench=${NORMLAB_EMULATED_BENCH:-$repo/build-profile/bench/bench_train_step}
emulated_conv=$(dirname "$emulated_bench")/bench_conv
if [ $built -eq 0 ] && [ $dry_run -eq 1 ] && [ -x "$emulated_bench" ] && [ -x "$emulated_conv" ]; then
  if run_part train-step 120 "$emulated_bench" --device cuda --batches 8 --norms bn,ln --warmup 0 --steps 1 \
      --threads 1 --profile --profile-md "$out/train_step_profile.md" &&
     run_part bench-conv 120 "$emulated_conv" --device cuda --batches 2 --iters 1 --warmup 0 --flush-mb 0 &&
     grep '^[#|]' "$logs/bench-conv.log" | sed '1s/^/\n/' >> "$out/train_step_profile.md" &&
     n=$(grep -c '^| [0-9]' "$out/train_step_profile.md") && c=$(grep -c '^| [Cc][0-9]' "$out/train_step_profile.md") &&
     [ "$n" -gt 0 ] && [ "$c" -gt 0 ]; then
    record train-step PASS "dry run: train_step_profile.md from the emulated build, $n launches and $c convolutions listed (cuemu times)"
  else
    record train-step FAIL "dry run: the per-launch table was not produced: $(tail_of train-step 3)"
  fi
elif [ $built -eq 0 ]; then
  record train-step SKIP "$([ $dry_run -eq 1 ] && echo "dry run, and no emulated build at $emulated_bench (make test-profile)" || echo 'no build')"
elif run_part train-step 90 "$build/bench/bench_train_step" --device cuda --batches 128,512 --json \
    --profile --profile-md "$out/train_step_profile.md"; then
  grep '^{' "$logs/train-step.log" > "$out/train_step_cuda.json"
  if run_part bench-conv 60 "$build/bench/bench_conv" --device cuda --batches 128,512 --iters 20; then
    grep '^[#|]' "$logs/bench-conv.log" | sed '1s/^/\n/' >> "$out/train_step_profile.md"
    conv_note="per-launch and per-convolution tables: train_step_profile.md"
  else
    conv_note="per-launch table: train_step_profile.md; bench_conv failed: $(tail_of bench-conv 2)"
  fi
  record train-step PASS "$(python3 -c '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("; ".join(", ".join(f"{k} {v}" for k, v in r.items() if k in ("norm", "batch", "img_per_s", "median_ms")) for r in rows))
' "$out/train_step_cuda.json" 2>&1 | cut -c1-400); $conv_note"
else
  record train-step FAIL "$(tail_of train-step 3)"
fi

# --- train-peer -------------------------------------------------------------------------------
# The same step in PyTorch on the same GPU, in one run with ours (bench/peer/train_step_vs_torch.py:
# eager NCHW and channels_last, cudnn.benchmark on).
if [ $built -eq 0 ]; then
  record train-peer SKIP "$([ $dry_run -eq 1 ] && echo 'dry run' || echo 'no build')"
elif ! python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2> /dev/null; then
  record train-peer SKIP "python3 has no PyTorch with CUDA here"
elif run_part train-peer 100 python3 "$repo/bench/peer/train_step_vs_torch.py" --device cuda \
      --bin "$build/bench/bench_train_step" --batches 128,512 --warmup 10 --steps 30 --rounds 2; then
  grep -E '^[#|]' "$logs/train-peer.log" > "$out/train_step_vs_torch.md"
  record train-peer PASS "$(grep -E '^\| (bn|gn|ln) ' "$logs/train-peer.log" | awk -F'|' '{gsub(/ /, ""); printf "%s b%s %s; ", $2, $3, $7}' | tr -s ' ' | cut -c1-300)(ratio = normlab / PyTorch's faster layout; train_step_vs_torch.md)"
else
  record train-peer FAIL "$(tail_of train-peer 3)"
fi

# --- compare ----------------------------------------------------------------------------------
if [ $built -eq 0 ]; then
  record compare SKIP "$([ $dry_run -eq 1 ] && echo 'dry run' || echo 'no build')"
else
  app=$build/examples/compare_norms/compare_norms
  common=(--data-dir "$deps/data/cifar10-subset" --epochs 3 --no-progress)
  if run_part compare-gpu 120 "$app" "${common[@]}" --device cuda --out "$work/cmp-gpu" &&
     run_part compare-cpu 240 "$app" "${common[@]}" --device cpu --threads "$jobs" --out "$work/cmp-cpu"; then
    verdict=$(python3 - "$work/cmp-gpu/metrics.csv" "$work/cmp-cpu/metrics.csv" "$out/compare_norms.json" << 'EOF' 2>&1
import csv, json, sys
# Epoch rows only (a diverged run's marker row has no numbers; its absence on one side fails).
rows_of = lambda p: {(r["norm"], r["epoch"]): r for r in csv.DictReader(open(p)) if r.get("status", "ok") == "ok"}
gpu, cpu = rows_of(sys.argv[1]), rows_of(sys.argv[2])
rows, ok = [], set(gpu) == set(cpu)
for key in sorted(gpu):
    g, c = gpu[key], cpu.get(key)
    if c is None: continue
    rel = abs(float(g["train_loss"]) - float(c["train_loss"])) / abs(float(c["train_loss"]))
    dacc = abs(float(g["test_acc"]) - float(c["test_acc"]))
    ok &= rel <= 0.05 and dacc <= 5.0
    rows.append({"norm": key[0], "epoch": int(key[1]), "train_loss_gpu": float(g["train_loss"]),
                 "train_loss_cpu": float(c["train_loss"]), "rel_diff": rel,
                 "test_acc_gpu": float(g["test_acc"]), "test_acc_cpu": float(c["test_acc"]),
                 "seconds_gpu": float(g["seconds"]), "seconds_cpu": float(c["seconds"])})
json.dump({"tolerance": {"train_loss_rel": 0.05, "test_acc_pp": 5.0}, "pass": ok, "rows": rows},
          open(sys.argv[3], "w"), indent=1)
worst = max(rows, key=lambda r: r["rel_diff"]) if rows else None
print(("PASS" if ok else "FAIL") + (f' worst train-loss difference {100 * worst["rel_diff"]:.2f}% '
      f'({worst["norm"]} epoch {worst["epoch"]}); epoch time gpu/cpu '
      f'{sum(r["seconds_gpu"] for r in rows):.1f}/{sum(r["seconds_cpu"] for r in rows):.1f} s' if worst else " no rows"))
EOF
)
    # Anything but a verdict (a Python error) is a failure too.
    case "$verdict" in
      PASS\ *) record compare PASS "${verdict#* }" ;;
      *) record compare FAIL "${verdict#FAIL }" ;;
    esac
  else
    record compare FAIL "$(tail_of compare-gpu 2) $(tail_of compare-cpu 2 2> /dev/null)"
  fi
fi

# --- sanitizer --------------------------------------------------------------------------------
# The emulated race check (make test-race) covers what cuemu can see; these are NVIDIA's own
# checkers on the real hardware: out-of-bounds and misaligned accesses (memcheck), shared-memory
# hazards (racecheck), illegal barriers (synccheck), reads of uninitialised device memory
# (initcheck). Each on the medium-shape and CUDA-vs-CPU tests, 45 s at most; last, so the
# measurements above come first when the budget is tight.
sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2> /dev/null | head -1)
if [ $built -eq 0 ]; then
  record sanitizer SKIP "$([ $dry_run -eq 1 ] && echo 'dry run' || echo 'no build')"
elif [ -z "$sanitizer" ]; then
  record sanitizer SKIP "compute-sanitizer not found (PATH, /usr/local/cuda/bin)"
else
  san_ok=() san_bad=()
  for tool in memcheck racecheck synccheck initcheck; do
    # racecheck is the slowest by far: under it the training-step test (every variant of the app's
    # table, the same kernels at the network's shapes) was still running after 100 s on the H200
    # (2026-11-30, no hazard reported up to there), so racecheck runs the op tests, which reach
    # every kernel path, and the other three tools run the training step too.
    limit=40 filter="[medium],[cuda-vs-cpu]"
    [ $tool = racecheck ] && limit=100 filter="[medium],[cuda-vs-cpu]~[train]"
    if NORMLAB_TEST_DEVICE=cuda run_part "san-$tool" $limit "$sanitizer" --tool "$tool" --error-exitcode 99 \
        "$build/tests/normlab_tests" "$filter"; then
      san_ok+=("$tool")
    else
      san_bad+=("$tool: $(grep -m2 -E '=+ (ERROR|Invalid|Race|Barrier|Uninitialized)|test cases|not started' "$logs/san-$tool.log" | tr '\n' ' ' | cut -c1-160)")
    fi
  done
  if [ ${#san_bad[@]} -eq 0 ]; then
    record sanitizer PASS "${san_ok[*]} clean on [medium],[cuda-vs-cpu] (device cuda; racecheck without the training-step test, see the script)"
  else
    record sanitizer FAIL "$(printf '%s; ' "${san_bad[@]}")clean: ${san_ok[*]:-none}"
  fi
fi

# --- nccl -------------------------------------------------------------------------------------
# nl::dist's NCCL backend: the collectives check on one rank per GPU (NCCL refuses two ranks on one
# GPU), CUDA tensors reduced in place. Under mpirun when this machine has Open MPI (and the build
# found it); otherwise one process per GPU with RANK/WORLD_SIZE set, meeting through a file, as
# torchrun starts them (docs/scaling-out.md).
if [ $built -eq 0 ]; then
  record nccl SKIP "$([ $dry_run -eq 1 ] && echo 'dry run' || echo 'no build')"
elif [ ! -x "$build/tests/dist_check" ]; then
  record nccl SKIP "no NCCL backend was built (NCCL: ${nccl_lib:-not found}; see logs/configure.log)"
else
  gpus=$(nvidia-smi -L 2> /dev/null | wc -l)
  if command -v mpirun > /dev/null && ldd "$build/tests/dist_check" 2> /dev/null | grep -q libmpi; then
    how="mpirun -np $gpus"
    run_part nccl 60 env NORMLAB_DIST_BACKEND=nccl NORMLAB_TEST_DEVICE=cuda \
        mpirun --allow-run-as-root --oversubscribe -np "$gpus" "$build/tests/dist_check" collectives
    rc=$?
  else
    how="$gpus process(es) with RANK/WORLD_SIZE, meeting through a file"
    # shellcheck disable=SC2016
    run_part nccl 60 bash -c '
      pids=()
      for ((r = 0; r < $1; ++r)); do
        RANK=$r WORLD_SIZE=$1 LOCAL_RANK=$r NORMLAB_DIST_INIT_FILE="$2/nccl-rendezvous" NORMLAB_DIST_BACKEND=nccl \
          NORMLAB_TEST_DEVICE=cuda "$3" collectives & pids+=($!)
      done
      rc=0
      for p in "${pids[@]}"; do wait "$p" || rc=1; done
      exit $rc' _ "$gpus" "$work" "$build/tests/dist_check"
    rc=$?
  fi
  if [ $rc -eq 0 ]; then
    record nccl PASS "collectives on $gpus GPU(s) over NCCL ($how): $(grep -m1 'collectives ok' "$logs/nccl.log")"
  else
    record nccl FAIL "$how: $(tail_of nccl 3)"
  fi
fi

# --- summary ----------------------------------------------------------------------------------
{
  echo "# gpu-check $([ $dry_run -eq 1 ] && echo '(dry run)')"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git -C "$repo" rev-parse --short HEAD 2> /dev/null || echo unknown), $((SECONDS - start)) s"
  echo
  echo '```'
  cat "$logs/environment.log"
  echo '```'
  echo
  echo "| part | status | detail |"
  echo "|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "Logs of every part: logs.tar.gz. Overall: $([ $failed -eq 0 ] && echo PASS || echo FAIL)"
} > "$out/summary.md"
tar -czf "$out/logs.tar.gz" -C "$work" logs
echo "gpu-check: $([ $failed -eq 0 ] && echo passed || echo FAILED) in $((SECONDS - start)) s; summary: $out/summary.md"
exit $failed
