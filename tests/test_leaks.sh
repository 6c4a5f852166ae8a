#!/usr/bin/env bash
# test_leaks.sh - bmc compile and bmrun on the built-in model report no
# leaks and no memory errors: under valgrind (--leak-check=full; definite
# and indirect leaks are errors) for a normal build, under LeakSanitizer for
# an ASan build (valgrind cannot run those). Skips cleanly without valgrind.
# The package targets x86-64-v3 (AVX2): valgrind does not emulate AVX-512.
# usage: test_leaks.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
B=$1
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # $T, ok, bad, expect

# (ldd's output is captured first: with pipefail, `ldd | grep -q` fails at
# random when grep exits early and ldd gets SIGPIPE)
LDD_OUT=$(ldd "$B/bmc" 2>/dev/null || true)
if grep -q libasan <<<"$LDD_OUT"; then
  MODE=lsan
  export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=97:${ASAN_OPTIONS:-}"
  CHECKER=()
elif command -v valgrind >/dev/null; then
  MODE=valgrind
  CHECKER=(valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect --error-exitcode=97
           --suppressions=/dev/null)
else
  echo "skip: valgrind not installed and not an ASan build"
  exit 0
fi
echo "leak checker: $MODE"

run() { # run DESC -- CMD...: must exit 0 with no checker report
  local desc=$1; shift 2
  local out rc
  out=$("${CHECKER[@]}" "$@" 2>&1); rc=$?
  if [ "$rc" -eq 0 ]; then ok "$desc"; else bad "$desc (exit $rc): $(tail -30 <<<"$out")"; fi
}
# one compile under the checker (the slow part: LLVM), one without
run "bmc compile tiny --compress" -- "$B/bmc" compile --model tiny -O 0 --cpu x86-64-v3 --compress -o "$T/c.bmpk"
"$B/bmc" compile --model tiny -O 0 --cpu x86-64-v3 -o "$T/a.bmpk" >/dev/null 2>&1 || bad "bmc compile tiny"
run "bmc inspect" -- "$B/bmc" inspect "$T/a.bmpk"
run "bmrun tiny (2 threads, outputs written)" -- "$B/bmrun" "$T/a.bmpk" --random-inputs 1 --threads 2 --output "$T/out"
run "bmrun compressed tiny, profiled" -- "$B/bmrun" "$T/c.bmpk" --random-inputs 2 --threads 1 --profile
run "bmrun --list" -- "$B/bmrun" "$T/a.bmpk" --list
# error paths free what they allocated too
head -c 5000 "$T/a.bmpk" > "$T/trunc.bmpk"
out=$("${CHECKER[@]}" "$B/bmrun" "$T/trunc.bmpk" --random-inputs 1 2>&1); rc=$?
[ "$rc" -eq 1 ] && ok "bmrun on a truncated package: clean error, no leak" || bad "truncated package: exit $rc: $out"
out=$("${CHECKER[@]}" "$B/bmrun" "$T/a.bmpk" --input "image=$T/none.npy" 2>&1); rc=$?
[ "$rc" -eq 1 ] && ok "bmrun with a missing input file: clean error, no leak" || bad "missing input: exit $rc: $out"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
