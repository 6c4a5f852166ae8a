# lib.sh - the shared harness of the shell tests (tests/test_*.sh), sourced
# by each: a temporary directory $T removed on exit, pass/fail counters,
# ok/bad, and expect. A test ends with:
#   echo "$pass passed, $fail failed"; [ "$fail" -eq 0 ]
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0 fail=0
ok()  { pass=$((pass+1)); echo "ok   $1"; }
bad() { fail=$((fail+1)); echo "FAIL $1"; }
# expect CODE PATTERN DESC -- CMD...: the command exits with CODE and its
# stdout+stderr matches PATTERN (extended regex, case-insensitive; "" = any).
# Never use `cmd | grep -q` under pipefail in these tests: grep exits early
# and the writer's SIGPIPE fails the pipeline at random.
expect() {
  local code=$1 pat=$2 desc=$3; shift 4
  local out rc
  out=$("$@" 2>&1); rc=$?
  if [ "$rc" -ne "$code" ]; then bad "$desc (exit $rc, want $code): $(head -c 2000 <<<"$out")"; return; fi
  if [ -n "$pat" ] && ! grep -qiE -- "$pat" <<<"$out"; then bad "$desc (no '$pat' in: $(head -c 2000 <<<"$out"))"; return; fi
  ok "$desc"
}
