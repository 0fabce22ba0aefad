#!/usr/bin/env bash
# Installs what is missing, builds with warnings as errors, runs every test (unit, integration,
# fuzz-corpus replays, benchmark smoke runs) and then each fuzzer for a short time.
# Usage: scripts/test.sh            (FUZZ_SECONDS=N to change the fuzzing time per target)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh build -DMESH_WERROR=ON

status=0
log=$(mktemp)
(cd build && ctest --output-on-failure -j"$(nproc)" --timeout 900) 2>&1 | tee "$log" || status=1
total=$(sed -n 's/.* tests failed out of \([0-9]*\).*/\1/p' "$log" | tail -1)
failed=$(sed -n 's/.*, \([0-9]*\) tests failed out of.*/\1/p' "$log" | tail -1)
rm -f "$log"
total=${total:-0}
failed=${failed:-0}

# Coverage-guided fuzzing of every decoder, briefly: a regression gate, not a campaign
# (docs/TESTING.md records the long runs).
FUZZ_SECONDS=${FUZZ_SECONDS:-15}
if [ "$FUZZ_SECONDS" -gt 0 ]; then
  CC=clang cmake -S . -B build-fuzz -DMESH_FUZZ=ON -DMESH_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  fuzzers=$(cd tests/fuzz && ls fuzz_*.c | sed 's/\.c$//')
  cmake --build build-fuzz -j"$(nproc)" --target $fuzzers >/dev/null
  fuzz_failed=0
  for f in $fuzzers; do
    corpus=tests/fuzz/corpus/${f#fuzz_}
    work=$(mktemp -d)
    cp -r "$corpus"/. "$work"/ 2>/dev/null || true
    total=$((total + 1))
    if build-fuzz/tests/$f -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 "$work" \
         >"$work.log" 2>&1; then
      echo "fuzz: $f ran ${FUZZ_SECONDS}s clean ($(grep -o 'stat::number_of_executed_units: [0-9]*' "$work.log" | grep -o '[0-9]*$') execs)"
    else
      echo "fuzz: $f FAILED"; tail -40 "$work.log"; fuzz_failed=1; failed=$((failed + 1))
    fi
    rm -rf "$work" "$work.log"
  done
  [ $fuzz_failed -eq 0 ] || status=1
fi
# One closing line for the whole run: ctest's tests plus the fuzzing runs.
echo "tests: $((total - failed)) passed, $failed failed"
exit $status
