#!/usr/bin/env bash
# Prints the path of an nvcc for make test's compile check on a machine without the CUDA toolkit:
# NVIDIA's toolkit wheels from PyPI (the compiler, the runtime headers, CCCL, cuobjdump and the
# nvdisasm it runs, for the GPU model's instruction mix) in a project-local virtual environment,
# .cuda-venv/. Made once; later runs reuse it without downloading.
#   scripts/cuda-wheels.sh        -> .../.cuda-venv/.../nvidia/cu13/bin/nvcc on stdout
#   (cuobjdump and nvdisasm are beside it)
# Progress and errors go to stderr; exit 1 when the wheels cannot be had (no network, no venv).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.cuda-venv
# Pinned: the check's results (registers, spills) depend on the compiler's version.
wheels=(nvidia-cuda-nvcc==13.5.37 nvidia-cuda-runtime==13.5.37 nvidia-cuda-cccl==13.3.5.0.6
  nvidia-cuda-cuobjdump==13.5.37 nvidia-cuda-nvdisasm==13.5.37)
stamp="$venv/wheels.txt"

find_nvcc() { ls "$venv"/lib/python3*/site-packages/nvidia/cu13/bin/nvcc 2>/dev/null | head -1; }

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "${wheels[*]}" ] && [ -n "$(find_nvcc)" ]; then
  find_nvcc
  exit 0
fi
command -v python3 >/dev/null || { echo "cuda-wheels: python3 is missing" >&2; exit 1; }
echo "cuda-wheels: installing ${wheels[*]} into $venv (about 60 MB, once)" >&2
# The system's certificate authorities (Debian's ca-certificates bundle, with any local CA a proxy
# on this network needs) rather than the copy pip carries, unless PIP_CERT says otherwise.
if [ -z "${PIP_CERT:-}" ] && [ -s /etc/ssl/certs/ca-certificates.crt ]; then
  export PIP_CERT=/etc/ssl/certs/ca-certificates.crt
fi
rm -rf "$venv.tmp"
python3 -m venv "$venv.tmp" >&2 || { echo "cuda-wheels: python3 -m venv failed (Debian: python3-venv)" >&2; exit 1; }
"$venv.tmp/bin/pip" install -q --disable-pip-version-check "${wheels[@]}" >&2 ||
  { echo "cuda-wheels: pip could not install the wheels" >&2; rm -rf "$venv.tmp"; exit 1; }
echo "${wheels[*]}" > "$venv.tmp/wheels.txt"
# Made under a temporary name and renamed: an interrupted install is never taken for a finished one.
rm -rf "$venv"
mv "$venv.tmp" "$venv"
# The venv's scripts name its own path; nvcc does not, so the rename is safe for what is used here.
find_nvcc
