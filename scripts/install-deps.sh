#!/usr/bin/env bash
# Installs the Debian packages normlab needs to build and test. Idempotent: prints what it
# installs and does nothing when everything is present. Runs apt-get as root or through sudo.
# Installs with --no-install-recommends, so a package that a dependency's CMake config needs but
# Debian only recommends must be listed here: make test-fresh proves the list on a pristine
# Debian 12 root every time CI runs.
set -euo pipefail

packages=(
  g++ cmake make pkg-config
  libeigen3-dev      # CPU kernels
  catch2             # tests (v2.13 in Debian 12)
  nlohmann-json3-dev # golden fixtures, results.json
  libbenchmark-dev   # bench/
  libdnnl-dev        # bench/bench_norm: oneDNN, the CPU norm baseline
  ocl-icd-opencl-dev # dnnl-config.cmake calls find_package(OpenCL); Debian only *recommends* it
  libcli11-dev       # compare_norms command line
  libcurl4-openssl-dev libssl-dev libarchive-dev zlib1g-dev  # dataset download and readers
  gnuplot-nox        # compare_norms charts
  openmpi-bin libopenmpi-dev  # nl::dist's MPI backend and its mpirun tests
  dataset-fashion-mnist  # the offline dataset (tests read it too)
  mmdebstrap         # make test-fresh: the pristine Debian 12 root
  ca-certificates    # HTTPS: dataset download, the nvcc wheels from PyPI
  python3-venv       # make test without a CUDA toolkit: nvcc from NVIDIA's PyPI wheels (scripts/cuda-wheels.sh)
  clang libclang-rt-14-dev libomp-14-dev  # make test-fuzz: libFuzzer, its sanitizers, OpenMP for clang
  clang-format       # the layout check (.clang-format)
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
else
  echo "install-deps: need root or sudo to install: ${missing[*]}" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: done"
