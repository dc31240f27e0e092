#!/usr/bin/env bash
# Prints the CUDA architecture of this machine's GPU (e.g. 90 for an H100/H200) when both a
# usable GPU and nvcc are here, and nothing otherwise; says which and why in one line on stderr.
# `make run` builds with NORMLAB_CUDA=ON for that architecture when it prints one.
set -uo pipefail
if ! command -v nvidia-smi > /dev/null; then
  echo "no GPU found (no NVIDIA driver: nvidia-smi is not installed)" >&2
  exit 0
fi
q=$(nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader 2>&1 | head -n 1)
if ! [[ $q =~ ^(.+),\ ([0-9]+)\.([0-9]+)$ ]]; then
  echo "no GPU found (nvidia-smi: $q)" >&2
  exit 0
fi
name=${BASH_REMATCH[1]}
arch=${BASH_REMATCH[2]}${BASH_REMATCH[3]}
if ! command -v nvcc > /dev/null; then
  echo "GPU $name (sm_$arch) found, but nvcc is not on PATH: building for the CPU (put the CUDA toolkit's bin/ on PATH for a GPU build)" >&2
  exit 0
fi
echo "GPU $name (sm_$arch) and nvcc found: building with NORMLAB_CUDA=ON for sm_$arch" >&2
echo "$arch"
