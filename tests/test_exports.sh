#!/usr/bin/env bash
# test_exports.sh - libbmrt.so exports exactly the functions its public
# headers declare (the version script CMakeLists.txt generates from them):
# each declared function is defined and exported, and no internal helper
# (ELF loader, thread pool, CUDA device, tokenizer/sampler internals) leaks.
# usage: test_exports.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
B=$1
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # $T, ok, bad, expect

lib="$B/libbmrt.so"
map="$B/libbmrt.map"
if [ ! -f "$lib" ] || [ ! -f "$map" ]; then
  echo "test_exports: $lib or $map missing (build the bmrt target)"; exit 1
fi
nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVW]$/ {print $3}' | sort -u >"$T/exported"
grep -oE '^ +bm_[a-z0-9_]+;' "$map" | tr -d ' ;' | sort -u >"$T/declared"
n=$(wc -l <"$T/declared")
[ "$n" -gt 100 ] && ok "the version script lists $n public functions" || bad "the version script lists only $n functions"
missing=$(comm -13 "$T/exported" "$T/declared" | grep -vx 'bm_status' | tr '\n' ' ')
[ -z "$missing" ] && ok "every declared public function is exported" || bad "declared but not exported (not defined?): $missing"
extra=$(comm -23 "$T/exported" "$T/declared" | tr '\n' ' ')
[ -z "$extra" ] && ok "nothing else is exported" || bad "exported but not public: $extra"
for internal in bm_elf_load bm_threadpool_create bm_cuda_run bm_tok_bpe bm_sampler_euler bm_cpu_has_feature; do
  if grep -qx "$internal" "$T/exported"; then bad "internal $internal is exported"; else ok "internal $internal is local"; fi
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
