#!/bin/bash
# expect_failure.sh SECONDS REGEX COMMAND...: passes when COMMAND fails (non-zero exit) within
# SECONDS and its output matches REGEX (grep -E): a dead or hung rank must end the job, in
# bounded time, with a message that names the problem.
set -u
limit=$1 regex=$2
shift 2
start=$(date +%s)
out=$(timeout -k 5 "$limit" "$@" 2>&1)
rc=$?
elapsed=$(( $(date +%s) - start ))
printf '%s\n' "$out"
echo "expect_failure: exit status $rc after ${elapsed} s"
[ "$rc" -ne 0 ] || { echo "expect_failure: FAILED: the command succeeded"; exit 1; }
# (not the status: mpirun itself returns 137 when a rank was killed)
[ "$elapsed" -lt "$limit" ] || { echo "expect_failure: FAILED: still running after ${limit} s"; exit 1; }
printf '%s\n' "$out" | grep -Eq "$regex" || { echo "expect_failure: FAILED: no line matches '$regex'"; exit 1; }
echo "expect_failure: failed as expected"
