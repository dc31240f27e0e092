#!/usr/bin/env bash
# scripts/detect-gpu.sh against stand-in nvidia-smi and nvcc programs: the architecture comes out
# only when a GPU answers *and* nvcc is there, and every other case says why on stderr.
set -uo pipefail
detect=$1/scripts/detect-gpu.sh
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
fail=0
# The stand-ins' folder is the whole PATH, with links to the two programs the script needs besides
# them: a machine with a real GPU has nvidia-smi (and maybe nvcc) in /usr/bin, which would answer
# the "no driver" case (seen on the H200 that gpu-check.sh ran on).
for tool in bash head; do ln -s "$(command -v $tool)" "$bin/$tool"; done
# check NAME EXPECTED_STDOUT STDERR_PATTERN: runs detect-gpu.sh with PATH=$bin alone.
check() {
  local out err
  out=$(PATH="$bin" "$detect" 2> "$bin/err")
  err=$(cat "$bin/err")
  if [ "$out" != "$2" ] || ! grep -q -- "$3" <<< "$err"; then
    echo "FAIL $1: stdout '$out' (want '$2'), stderr '$err' (want /$3/)"
    fail=1
  else
    echo "ok   $1: '$out' / $err"
  fi
}
stub() { printf '#!/bin/sh\n%s\n' "$2" > "$bin/$1"; chmod +x "$bin/$1"; }

check "no driver" "" "nvidia-smi is not installed"
stub nvidia-smi 'echo "NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver." ; exit 9'
check "driver not answering" "" "could not communicate"
stub nvidia-smi 'echo "NVIDIA H200, 9.0"; echo "NVIDIA H200, 9.0"'
check "GPU without nvcc" "" "nvcc is not on PATH"
stub nvcc 'exit 0'
check "GPU and nvcc" "90" "NORMLAB_CUDA=ON for sm_90"
stub nvidia-smi 'echo "NVIDIA A100-SXM4-80GB, 8.0"'
check "another architecture" "80" "sm_80"
exit $fail
