#!/bin/bash
# The step-by-step parity check run live: a fresh fixture from the PyTorch installed here (e.g. the
# newest from PyPI in a venv), then normlab's trajectory test against it instead of the committed
# one. Plain and augmented+dropout trajectories for BN, GN and LN (tests/test_trajectory.cpp).
#
#   bench/peer/trajectory_live.sh [--python PY] [--build DIR] [--data DIR]
#
# Defaults: python3, build/, ../shared/data/cifar10-subset (the subset normlab_tests was built
# with). About 6-15 minutes on 2 cores, most of it PyTorch's float64 and float32 ensemble runs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
python=python3 build="$root/build" data="$root/../shared/data/cifar10-subset"
while [ $# -gt 0 ]; do
  case "$1" in
    --python) python=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    -h|--help) sed -n 2,10p "$0"; exit 0 ;;
    *) echo "trajectory_live.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
tests="$build/tests/normlab_tests"
[ -x "$tests" ] || { echo "trajectory_live.sh: $tests not found: build first (make build)" >&2; exit 1; }
"$python" -c "import torch" 2>/dev/null || { echo "trajectory_live.sh: '$python' has no torch" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "fixture from torch $("$python" -c 'import torch; print(torch.__version__)') into $out"
"$python" "$root/tests/golden/make_trajectory.py" "$data" --out "$out"
NORMLAB_TRAJECTORY_DIR="$out" "$tests" "[trajectory]"
