#!/usr/bin/env bash
# test.sh - set up, build and run the whole test suite (CTest), then again
# under AddressSanitizer + UBSan. Usage: scripts/test.sh [--no-sanitize]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
JOBS=$(nproc)

echo "== build (Release) and test"
cmake -S . -B build-test -DCMAKE_BUILD_TYPE=Release -DBM_BUILD_BENCH=ON >/dev/null
cmake --build build-test -j"$JOBS"
(cd build-test && ctest --output-on-failure -j"$JOBS")

if [ "${1:-}" != "--no-sanitize" ]; then
  echo "== build with ASan+UBSan and test"
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DBM_SANITIZE=ON -DBM_BUILD_BENCH=OFF >/dev/null
  cmake --build build-asan -j"$JOBS"
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
     ctest --output-on-failure -j"$JOBS")
fi
if [ "${1:-}" != "--no-sanitize" ] && command -v clang >/dev/null; then
  # a short fuzz smoke run (about 1 s per target, fixed seed): every parser's
  # libFuzzer target builds and survives; long campaigns: docs/reliability.md
  echo "== fuzz smoke run"
  rc=0
  scripts/fuzz.sh --build build-fuzz --time 1 --seed 1 --jobs "$JOBS" || rc=$?
  [ "$rc" -eq 3 ] && echo "(skipped: no libFuzzer)"
  [ "$rc" -eq 0 ] || [ "$rc" -eq 3 ] || exit "$rc"
fi
echo "== all tests passed"
