#!/usr/bin/env bash
# fuzz.sh - builds the libFuzzer targets of fuzz/ (clang, ASan+UBSan, LSan on)
# and runs each for a given time or number of executions, then reports
# executions, executions/s and findings (crash, leak, timeout, oom) per target.
#
# usage: scripts/fuzz.sh [--time SECONDS] [--runs N] [--jobs J] [--build DIR]
#                        [--corpus] [--max-len BYTES] [--out DIR] [TARGET...]
#   --time S     seconds per target (default 60); --runs N stops at N executions
#                (whichever comes first when both are given)
#   --jobs J     targets run at the same time (default 1), each under nice -n 19
#   --build DIR  the fuzz build folder (default build-fuzz)
#   --seed N     libFuzzer's random seed (default: random; fixed for CI smoke runs)
#   --out DIR    findings and logs go to DIR/<target>/ and DIR/<target>.log
#                (default fuzz/out; long campaigns use their own, so a smoke
#                run of scripts/test.sh does not overwrite their logs)
#   --no-cmp     the build without comparison tracing (BM_FUZZ_TRACE_CMP=OFF, in
#                build-fuzz-nocmp unless --build): ~3x the executions per second, same
#                sanitizers, no CMP-guided mutations; for long campaigns on a mature
#                corpus, beside a run of the full build
#   --corpus     (re)build the seed corpora first (fuzz/make_corpora.sh; needs
#                a normal build, BM_BUILD or build-test)
#   TARGET       fuzz_package, fuzz_npy, fuzz_png, fuzz_model_index, ... (default: all)
# New inputs go to fuzz/corpus/<target>/, findings to OUT/<target>/ and
# logs to OUT/<target>.log (OUT: --out, default fuzz/out). Exit status:
# 0 nothing found, 1 a target found something, 2 build or usage error,
# 3 clang or libFuzzer missing.
set -uo pipefail
cd "$(dirname "$0")/.."
TIME=60 RUNS=0 JOBS=1 BUILD="" CORPUS=0 MAXLEN="" SEED="" OUT=fuzz/out CMP=ON
TARGETS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --time) TIME=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --jobs) JOBS=$2; shift 2 ;;
    --build) BUILD=$2; shift 2 ;;
    --corpus) CORPUS=1; shift ;;
    --no-cmp) CMP=OFF; shift ;;
    --max-len) MAXLEN=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n 2,26p "$0"; exit 0 ;;
    *) TARGETS+=("$1"); shift ;;
  esac
done
[ -z "$BUILD" ] && { [ "$CMP" = ON ] && BUILD=build-fuzz || BUILD=build-fuzz-nocmp; }
CC_FUZZ=$(command -v clang || command -v clang-14 || true)
if [ -z "$CC_FUZZ" ]; then echo "fuzz: clang not found (apt-get install clang libclang-rt-14-dev)"; exit 3; fi
echo 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { return 0; }' > /tmp/bm_fuzz_probe.c
if ! "$CC_FUZZ" -fsanitize=fuzzer /tmp/bm_fuzz_probe.c -o /tmp/bm_fuzz_probe 2>/dev/null; then
  echo "fuzz: $CC_FUZZ has no libFuzzer (apt-get install libclang-rt-14-dev)"; exit 3
fi
rm -f /tmp/bm_fuzz_probe /tmp/bm_fuzz_probe.c

# one build at a time in $BUILD (a campaign and a smoke run may start together)
build() {
  cmake -S . -B "$BUILD" -DCMAKE_C_COMPILER="$CC_FUZZ" -DBM_FUZZ=ON -DBM_FUZZ_TRACE_CMP="$CMP" -DBM_BUILD_BENCH=OFF \
        -DCMAKE_BUILD_TYPE=Debug >/dev/null &&
    cmake --build "$BUILD" -j"$(nproc)" --target fuzz_all >/dev/null
}
mkdir -p "$BUILD"
exec 9>"$BUILD/.fuzz_build.lock"
command -v flock >/dev/null && flock 9
build || { echo "fuzz: build failed"; exit 2; }
exec 9>&- # closing it releases the lock
[ "$CORPUS" = 1 ] && fuzz/make_corpora.sh "${BM_BUILD:-build-test}"
if [ ${#TARGETS[@]} -eq 0 ]; then
  for f in "$BUILD"/fuzz/fuzz_*; do [ -x "$f" ] && TARGETS+=("$(basename "$f")"); done
fi

# input size limits: big enough for the seed packages and tokenizer files
max_len() {
  [ -n "$MAXLEN" ] && { echo "$MAXLEN"; return; }
  case "$1" in
    fuzz_package|fuzz_elf) echo 131072 ;;
    fuzz_tok_*|fuzz_safetensors) echo 65536 ;;
    fuzz_png|fuzz_model_index) echo 16384 ;;
    *) echo 16384 ;;
  esac
}

export ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
run_one() {
  local t=$1 out=$OUT/$1
  mkdir -p "$out" "fuzz/corpus/$t"
  local args=(-max_total_time="$TIME" -max_len="$(max_len "$t")" -timeout=10 -rss_limit_mb=4096
              -artifact_prefix="$out/" -print_final_stats=1)
  # a PNG of at most max_len bytes decodes to a few MB: any bigger allocation is a finding
  [ "$t" = fuzz_png ] && args+=(-malloc_limit_mb=256)
  [ "$RUNS" != 0 ] && args+=(-runs="$RUNS")
  [ -n "$SEED" ] && args+=(-seed="$SEED")
  nice -n 19 "$BUILD/fuzz/$t" "${args[@]}" "fuzz/corpus/$t" > "$OUT/$t.log" 2>&1
}
mkdir -p "$OUT"
# findings are the artifacts this run writes: older ones (already fixed and
# kept as regression inputs) do not count
STAMP=$(mktemp "$OUT/.run.XXXXXX")
trap 'rm -f "$STAMP"' EXIT
running=0
for t in "${TARGETS[@]}"; do
  [ -x "$BUILD/fuzz/$t" ] || { echo "fuzz: no target $t"; exit 2; }
  run_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$JOBS" ]; then wait -n; running=$((running - 1)); fi
done
wait

status=0
printf '| target | executions | seconds | exec/s | corpus | findings |\n|---|---:|---:|---:|---:|---|\n'
for t in "${TARGETS[@]}"; do
  log=$OUT/$t.log
  runs=$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$log" | grep -oE '[0-9]+$' || echo 0)
  secs=$(grep -oE '^Done [0-9]+ runs in [0-9]+ second' "$log" | grep -oE '[0-9]+ second' | grep -oE '[0-9]+' || echo "$TIME")
  [ -z "$runs" ] && runs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
  [ -z "$secs" ] && secs=$TIME
  finds=$(find "$OUT/$t" -maxdepth 1 -type f -newer "$STAMP" -printf '%f\n' 2>/dev/null |
          grep -E '^(crash|leak|timeout|oom|slow-unit)-' | tr '\n' ' ')
  grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error|^fuzz: .* broke|SUMMARY' "$log" && [ -z "$finds" ] && finds="see $log"
  [ -n "$finds" ] && status=1
  printf '| %s | %s | %s | %s | %s | %s |\n' "$t" "${runs:-0}" "$secs" "$(( ${runs:-0} / (secs > 0 ? secs : 1) ))" \
    "$(ls "fuzz/corpus/$t" | wc -l)" "${finds:-none}"
done
exit $status
