#!/usr/bin/env bash
# "the sources follow .clang-format": every C++ and CUDA source of the tree, unchanged by
# clang-format (fails listing the files and the first differences).
#   check_format.sh SOURCE_DIR
set -euo pipefail
cd "$1"
command -v clang-format >/dev/null || { echo "check_format: clang-format is missing (scripts/install-deps.sh installs it)"; exit 1; }
mapfile -t files < <(find core kernels nn dist examples tests bench \
                       \( -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) -type f | sort)
if ! clang-format --dry-run -Werror "${files[@]}" 2> /tmp/check_format.$$; then
  grep -E "^[^ ].*error:" /tmp/check_format.$$ | cut -d: -f1 | sort -u | sed 's/^/needs clang-format -i: /'
  head -20 /tmp/check_format.$$
  rm -f /tmp/check_format.$$
  exit 1
fi
rm -f /tmp/check_format.$$
echo "check_format: ${#files[@]} files follow .clang-format"
