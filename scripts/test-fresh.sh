#!/usr/bin/env bash
# make test-fresh: proves the README's two commands on a pristine Debian 12, every time.
#
# A developer machine (and CI, which runs on one) has packages from earlier hand installs, so a
# package missing from scripts/install-deps.sh stays invisible there. This stage builds a minimal
# Debian 12 root with mmdebstrap (nothing cached between runs), copies in the *committed* tree
# (git archive HEAD) and ../shared, installs only what the README says a user must have first
# (make), and inside a chroot runs:
#   scripts/install-deps.sh  ->  make test-cpu  ->  make run (short)  ->  gpu-check.sh --dry-run
# and checks that report.md and its pictures exist. One line per phase with its duration; the
# full logs stay in build-fresh/ after the root is gone.
#
#   scripts/test-fresh.sh            (as root: mmdebstrap --mode=root, chroot and mount need it)
#   NORMLAB_FRESH_TMP=/somewhere     where the ~3 GB root is made (default: /var/tmp)
#
# The root is unmounted and removed on every exit path (success, failure, Ctrl-C, TERM); it is
# never removed while anything is still mounted below it.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
shared=$(cd "$repo/.." && pwd)/shared
logs=$repo/build-fresh
start=$SECONDS

say() { echo "test-fresh: $*"; }
die() { echo "test-fresh: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (mmdebstrap --mode=root, chroot and mount); run it as root or with sudo"
command -v mmdebstrap >/dev/null || die "mmdebstrap is missing: run scripts/install-deps.sh (it installs it)"
git -C "$repo" rev-parse --verify -q HEAD >/dev/null || die "$repo is not a git checkout with a commit"
[ -d "$shared/data/cifar10-subset" ] || die "$shared/data/cifar10-subset is missing (the real CIFAR-10 subset)"
if [ -n "$(git -C "$repo" status --porcelain --untracked-files=no)" ]; then
  say "note: uncommitted changes are NOT tested: this stage tests the committed tree (HEAD)"
fi

rm -rf "$logs"
mkdir -p "$logs"
root=$(mktemp -d "${NORMLAB_FRESH_TMP:-/var/tmp}/normlab-fresh.XXXXXX")

# Everything mounted at or below the root, deepest first.
mounts_below() {
  findmnt -rn -o TARGET | while read -r m; do
    case "$m" in "$root" | "$root"/*) echo "$m" ;; esac
  done | sort -r
}

# The running phase's process and everything it started (mmdebstrap's helpers, make's compilers).
phase_pid=""
kill_tree() {
  local child
  for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do kill_tree "$child"; done
  kill -KILL "$1" 2>/dev/null || true
}

# Processes whose root directory is the chroot (a Ctrl-C reaches them through the terminal, a
# TERM sent to make does not): they would keep /proc busy and write into a folder being removed.
kill_chroot_processes() {
  local p pids=()
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] && pids+=("${p#/proc/}")
  done
  [ ${#pids[@]} -eq 0 ] && return 0
  kill -KILL "${pids[@]}" 2>/dev/null || true
  sleep 1
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  [ -n "$phase_pid" ] && kill_tree "$phase_pid"
  kill_chroot_processes
  local m
  for m in $(mounts_below); do umount "$m" 2>/dev/null || { sleep 1; umount "$m"; }; done
  if [ -n "$(mounts_below)" ]; then
    echo "test-fresh: still mounted below $root, so it was NOT removed:" >&2
    mounts_below >&2
    exit 1
  fi
  # --one-file-system: even a mount that appeared after the check is never descended into.
  rm -rf --one-file-system "$root"
  [ $rc -eq 0 ] && say "passed in $((SECONDS - start)) s" || say "FAILED (exit $rc); logs in $logs"
  exit $rc
}
trap cleanup EXIT
trap 'echo; say "interrupted"; exit 130' INT
trap 'say "terminated"; exit 143' TERM

# phase NAME COMMAND...: runs one phase with its output in build-fresh/NAME.log, prints one line
# with its duration, and on failure the lines that say why.
phase() {
  local name=$1 t0=$SECONDS rc=0
  shift
  # In the background and waited for: bash runs a trap only between commands, and `wait` is one
  # that a signal interrupts, so Ctrl-C or a TERM from make is handled at once, not after the
  # phase (minutes of compiling) has finished by itself.
  "$@" > "$logs/$name.log" 2>&1 &
  phase_pid=$!
  wait "$phase_pid" || rc=$?
  phase_pid=""
  if [ $rc -eq 0 ]; then
    printf 'test-fresh: %-14s ok      %4d s\n' "$name" $((SECONDS - t0))
    return 0
  fi
  printf 'test-fresh: %-14s FAILED  %4d s (exit %d), last lines of %s:\n' "$name" $((SECONDS - t0)) $rc "$logs/$name.log"
  # CMake's own error block first when there is one: it names the missing package.
  grep -A6 'CMake Error' "$logs/$name.log" | head -40 || true
  tail -n 40 "$logs/$name.log"
  exit 1
}

# inside CMD: runs CMD in the root as a new user's login would, with none of the host's
# environment (no CMAKE_PREFIX_PATH, CUDA or compiler variables leaking in).
inside() {
  chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    /bin/bash -euo pipefail -c "$1"
}

make_root() {
  mmdebstrap --variant=apt --mode=root bookworm "$root"
  # The host's name resolution and local certificate authorities (a proxy on this network may
  # need one), as a fresh machine on this network would have.
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  if compgen -G "/usr/local/share/ca-certificates/*.crt" > /dev/null; then
    mkdir -p "$root/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    # Where the root already has Debian's ca-certificates; otherwise its install adds them.
    if [ -x "$root/usr/sbin/update-ca-certificates" ]; then chroot "$root" update-ca-certificates > /dev/null; fi
  fi
  mount -t proc proc "$root/proc"
  # mmdebstrap made the /dev nodes; only /dev/shm needs a filesystem (POSIX shared memory).
  mkdir -p "$root/dev/shm"
  mount -t tmpfs -o mode=1777,nosuid,nodev shm "$root/dev/shm"
}

copy_tree() {
  mkdir -p "$root/work/normlab"
  git -C "$repo" archive --format=tar HEAD | tar -x -C "$root/work/normlab"
  # -L: a shared/ that is a symbolic link (or holds some) arrives as the files, not as a link
  # that dangles inside the root.
  mkdir -p "$root/work/shared" && cp -aL "$shared/." "$root/work/shared/"
  echo "copied $(git -C "$repo" rev-parse --short HEAD) and $(du -sh "$shared" | cut -f1) of shared/"
}

check_report() {
  local out=$root/work/normlab/runs/fresh f
  for f in report.md metrics.csv results.json train_loss.png test_accuracy.png; do
    [ -s "$out/$f" ] || { echo "missing or empty: runs/fresh/$f"; ls -la "$out"; return 1; }
  done
  local pngs
  pngs=$(find "$out" -name '*.png' | wc -l)
  # Each picture the report links must exist.
  grep -o '([^)]*\.png)' "$out/report.md" | tr -d '()' | while read -r p; do
    [ -s "$out/$p" ] || { echo "report.md links $p, which is missing"; exit 1; }
  done
  echo "report.md and $pngs pictures in runs/fresh"
  cp "$out/report.md" "$logs/report.md"
}

say "pristine Debian 12 root in $root (logs: $logs)"
phase root         make_root
phase copy         copy_tree
phase make         inside 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends make'
phase install-deps inside 'cd /work/normlab && scripts/install-deps.sh'
# The README's make test, exactly: the quick tier and the nvcc check (from the PyPI wheels here).
phase make-test    inside 'cd /work/normlab && make test'
# Its summary, so the stage shows what was checked (the whole log stays in build-fresh/).
grep -E '^(100% tests passed|[0-9]+% tests passed)|^check-nvcc: |^make test: ' "$logs/make-test.log" | sed 's/^/test-fresh:   /'
phase run          inside 'cd /work/normlab && make run RUN_ARGS="--data-dir ../shared/data/cifar10-subset --epochs 2 --limit-train 1024 --limit-test 256 --out runs/fresh --no-progress"'
phase report       check_report
# The GPU machine's travelling folder, made and checked on a machine that never had it.
phase gpu-dry-run  inside 'cd /work/normlab && scripts/gpu-check.sh --dry-run --out build-gpu-check/summary'
