#!/usr/bin/env bash
# Makes .gpu-deps/, the folder that travels with the checkout to a GPU machine that has nvcc,
# CMake, ninja, a host g++ and Python with PyTorch, but no Debian dev packages and no network
# (see scripts/gpu-check.sh). Run it here, on Debian 12 with Debian's mirror reachable:
#
#   scripts/gpu-deps.sh [DIR]        (default DIR: .gpu-deps, git-ignored)
#
# What it holds (about 30 MB, within the 64 MiB that travels):
#   root/                 the Debian packages below unpacked with dpkg -x (headers, CMake configs,
#                         Google Benchmark's and zlib's libraries); absolute symlinks inside made
#                         relative so the folder works wherever it lands
#   data/cifar10-subset/  the real CIFAR-10 subset (../shared beside the checkout does not travel)
#   MANIFEST              package versions and the files gpu-check.sh --dry-run checks
# The GPU build uses NORMLAB_DOWNLOAD=OFF (no libcurl/libarchive/OpenSSL, whose runtime closure
# would not fit) and NORMLAB_BENCH_ONEDNN=OFF (oneDNN is the CPU peer, not needed there).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-.gpu-deps}
shared=../shared/data/cifar10-subset

packages=(
  libeigen3-dev                         # CPU kernels (header-only)
  catch2                                # tests (header-only, with Catch.cmake)
  nlohmann-json3-dev                    # results.json, golden fixtures (header-only)
  libcli11-dev                          # command lines (header-only)
  libbenchmark-dev libbenchmark1debian  # bench/: Google Benchmark and its shared library
  zlib1g-dev zlib1g                     # Fashion-MNIST IDX reader (header, library)
)
# Files that must be there for the GPU build: gpu-check.sh checks each one (--dry-run included).
required=(
  usr/include/eigen3/Eigen/Core
  usr/share/eigen3/cmake/Eigen3Config.cmake
  usr/include/catch2/catch.hpp
  usr/lib/cmake/Catch2/Catch2Config.cmake
  usr/lib/cmake/Catch2/Catch.cmake
  usr/include/nlohmann/json.hpp
  usr/share/cmake/nlohmann_json/nlohmann_jsonConfig.cmake
  usr/include/CLI/CLI.hpp
  usr/share/cmake/CLI11/CLI11Config.cmake
  usr/include/benchmark/benchmark.h
  usr/lib/x86_64-linux-gnu/cmake/benchmark/benchmarkConfig.cmake
  usr/lib/x86_64-linux-gnu/libbenchmark.so
  usr/include/zlib.h
  usr/lib/x86_64-linux-gnu/libz.so
)

say() { echo "gpu-deps: $*"; }
die() { echo "gpu-deps: $*" >&2; exit 1; }

command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || die "needs Debian's apt-get and dpkg-deb (run it on the Debian 12 machine, not on the GPU machine)"
[ -d "$shared/cifar-10-batches-bin" ] || die "$shared/cifar-10-batches-bin is missing: the CIFAR-10 subset must be beside the checkout"

tmp=$(mktemp -d "${dir%/}.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/debs" "$tmp/root" "$tmp/data"

# apt-get download runs as _apt when it can; a root-owned mktemp folder is not writable to it.
chmod 755 "$tmp" "$tmp/debs"
download() { (cd "$tmp/debs" && apt-get download -q "${packages[@]}"); }
if ! download > "$tmp/apt.log" 2>&1; then
  # A machine whose package lists are missing or stale: refresh them once (as root) and retry.
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && download > "$tmp/apt.log" 2>&1 || { cat "$tmp/apt.log" >&2; die "apt-get download failed"; }
  else
    cat "$tmp/apt.log" >&2
    die "apt-get download failed; run 'apt-get update' as root and try again"
  fi
fi

{
  echo "# .gpu-deps made by scripts/gpu-deps.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "# package version sha256-of-deb"
} > "$tmp/MANIFEST"
for deb in "$tmp"/debs/*.deb; do
  dpkg-deb -x "$deb" "$tmp/root"
  printf '%s %s %s\n' "$(dpkg-deb -f "$deb" Package)" "$(dpkg-deb -f "$deb" Version)" \
    "$(sha256sum "$deb" | cut -d' ' -f1)" >> "$tmp/MANIFEST"
done
rm -rf "$tmp/debs" "$tmp/apt.log"
# Documentation and man pages are not needed for a build.
rm -rf "$tmp/root/usr/share/doc" "$tmp/root/usr/share/man" "$tmp/root/usr/share/lintian"

# Absolute links (zlib1g-dev's libz.so -> /lib/x86_64-linux-gnu/libz.so.1.2.13) would point into
# whichever machine the folder lands on: make those whose target is inside the folder relative.
while IFS= read -r -d '' link; do
  target=$(readlink "$link")
  case "$target" in
    /*)
      for candidate in "$tmp/root$target" "$tmp/root/usr$target"; do
        if [ -e "$candidate" ]; then
          ln -sfn "$(realpath --relative-to="$(dirname "$link")" "$candidate")" "$link"
          break
        fi
      done
      ;;
  esac
done < <(find "$tmp/root" -type l -print0)

missing=0
echo "# required files" >> "$tmp/MANIFEST"
for f in "${required[@]}"; do
  if [ -e "$tmp/root/$f" ]; then
    echo "file $f" >> "$tmp/MANIFEST"
  else
    echo "gpu-deps: missing after unpacking: $f" >&2
    missing=1
  fi
done
[ $missing -eq 0 ] || die "the packages did not provide every required file"

cp -a "$shared" "$tmp/data/cifar10-subset"
echo "file data/cifar10-subset/cifar-10-batches-bin/test_batch.bin" >> "$tmp/MANIFEST"

rm -rf "$dir"
mv "$tmp" "$dir"
trap - EXIT
say "made $dir ($(du -sh "$dir" | cut -f1)): ${#packages[@]} packages, the CIFAR-10 subset; carry it to the GPU machine"
