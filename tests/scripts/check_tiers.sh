#!/usr/bin/env bash
# "every test belongs to one tier": each test of this build tree carries exactly one of the ctest
# labels quick (make test) and full (make test-all only); docs/testing.md. A test's tier comes from
# its own declaration (Catch2 tags or LABELS at add_test), so renaming it does not move it.
#   check_tiers.sh CTEST BUILD_DIR
set -euo pipefail
ctest=$1
cd "$2"
listed() { "$ctest" -N "$@" | sed -n 's/^ *Test *#[0-9]*: //p'; }
none=$(listed -LE '^(quick|full)$')
both=$(listed -L '^quick$' -L '^full$')
total=$("$ctest" -N | sed -n 's/^Total Tests: //p')
rc=0
if [ -n "$none" ]; then
  echo "tests in no tier (tag the TEST_CASE [quick] or [full], or set LABELS where add_test registers it):"
  echo "$none" | sed 's/^/  /'
  rc=1
fi
if [ -n "$both" ]; then
  echo "tests in both tiers (quick and full):"
  echo "$both" | sed 's/^/  /'
  rc=1
fi
[ $rc -eq 0 ] && echo "check_tiers: all $total tests belong to one tier"
exit $rc
