#!/usr/bin/env bash
# fuzz_workers.sh - a long fuzz_tokenize campaign on a machine with many cores
# and no clang (the GPU machine): N independent libFuzzer processes of the
# ASan+UBSan+LSan build from here share one corpus folder; prints the summed
# executions (docs/reliability.md: "campaigns on other machines").
#
#   scripts/fuzz_workers.sh pack DIR [BUILD]  # here, after scripts/fuzz.sh built BUILD
#                                        # (build-fuzz; build-fuzz-nocmp for the --no-cmp
#                                        # build): the target, its libraries, the
#                                        # tokenizers and the corpus into DIR (~12 MB)
#   DIR/fuzz_workers.sh run SECONDS [N]  # there: N processes (default nproc - 1) for
#                                        # SECONDS each, under nice 19, on the CPUs of
#                                        # $FUZZ_CPUS (taskset list) if set; writes
#                                        # $OUT/fuzz_summary.txt and $OUT/fuzz.tgz
#                                        # (logs, the grown corpus, any artifacts)
set -u
mode="${1:-}"
case "$mode" in
  pack)
    root="$(cd "$(dirname "$0")/.." && pwd)" d="${2:?usage: fuzz_workers.sh pack DIR}"
    rm -rf "$d" && mkdir -p "$d/lib"
    b="$root/${3:-build-fuzz}"
    cp "$b/fuzz/fuzz_tokenize" "$0" "$d/" || exit 1
    echo "${3:-build-fuzz} BM_FUZZ_TRACE_CMP=$(grep -oE 'BM_FUZZ_TRACE_CMP:BOOL=[A-Z]+' "$b/CMakeCache.txt" | cut -d= -f2)" >"$d/build.txt"
    ldd "$d/fuzz_tokenize" | awk '$3 ~ /^\// {print $3}' | grep -vE '/lib(c|m|pthread|dl|rt|gcc_s|stdc\+\+)\.so' |
      while read -r l; do cp -L "$l" "$d/lib/"; done
    tar -C "$root/../shared" -czf "$d/tokenizers.tgz" tokenizers
    tar -C "$root/fuzz/corpus" -czf "$d/corpus.tgz" fuzz_tokenize
    du -sh "$d"
    ;;
  run)
    d="$(cd "$(dirname "$0")" && pwd)" out="${OUT:-/tmp/fzout}" secs="${2:-500}" jobs="${3:-$(($(nproc) - 1))}"
    w=/tmp/bm_fuzz_workers
    rm -rf $w && mkdir -p $w/art $w/logs "$out"
    tar -C $w -xzf "$d/tokenizers.tgz" && tar -C $w -xzf "$d/corpus.tgz" || exit 2
    export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    export BM_FUZZ_TOKENIZERS=$w/tokenizers LD_LIBRARY_PATH="$d/lib"
    pin=()
    [ -n "${FUZZ_CPUS:-}" ] && pin=(taskset -c "$FUZZ_CPUS")
    for i in $(seq 1 "$jobs"); do
      "${pin[@]}" nice -n 19 "$d/fuzz_tokenize" -max_total_time="$secs" -max_len=16384 -timeout=10 \
        -rss_limit_mb=4096 -artifact_prefix=$w/art/ -print_final_stats=1 -seed=$((RANDOM * 100 + i)) \
        $w/fuzz_tokenize >$w/logs/w$i.log 2>&1 &
    done
    wait
    {
      lscpu | grep -E "Model name|^CPU\(s\)"
      echo "build: $(cat "$d/build.txt")"
      for f in $w/logs/w*.log; do
        echo "$(basename "$f"): $(grep -E 'stat::number_of_executed_units|^Done' "$f" | tr '\n' ' ')" \
          "$(grep -cE 'ERROR: |runtime error|SUMMARY' "$f") errors"
      done
      tot=$(cat $w/logs/w*.log | grep -oE 'number_of_executed_units: [0-9]+' | awk '{s += $2} END {print s + 0}')
      echo "fuzz_tokenize: $jobs processes x $secs s: $tot executions; findings: $(ls $w/art | wc -l)"
    } >"$out/fuzz_summary.txt"
    tar -C $w -czf "$out/fuzz.tgz" art logs fuzz_tokenize
    tail -1 "$out/fuzz_summary.txt"
    [ -z "$(ls $w/art)" ]
    ;;
  *) sed -n 2,15p "$0"; exit 2 ;;
esac
