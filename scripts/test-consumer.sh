#!/usr/bin/env bash
# Installs normlab from a build tree into a temporary prefix, then configures, builds and runs
# examples/consumer against it with find_package(normlab CONFIG REQUIRED). Registered as a
# ctest test, so `make test` proves the installed package works.
set -euo pipefail
build_dir=$1
src_dir=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build_dir" --prefix "$work/prefix" >/dev/null
cmake -S "$src_dir/examples/consumer" -B "$work/consumer" -DCMAKE_PREFIX_PATH="$work/prefix" \
  -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$work/consumer" -j 2 >/dev/null
"$work/consumer/consumer"
