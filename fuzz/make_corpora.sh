#!/usr/bin/env bash
# make_corpora.sh - builds the fuzz seed corpora into fuzz/corpus/<target>/
# (git-ignored): packages compiled by the suite (test_corruption with
# BM_SEED_OUT), their ELF code, IR text dumped by bmc, and small files made
# from ../shared/golden and ../shared/tokenizers, hand-made PNGs (every color
# type, bit depth, interlacing, text chunk) with truncations, and diffusers
# model_index.json / component configs (make_corpora.py).
# usage: fuzz/make_corpora.sh [BUILD_DIR]   (a normal build with bmc and
#        test_corruption; default build-test). Needs python3.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build-test}
OUT=fuzz/corpus
SHARED=${BM_SHARED_DIR:-$(cd .. && pwd)/shared}
command -v python3 >/dev/null || { echo "make_corpora: python3 not found, skipping seed corpora"; exit 0; }
SEEDS=$(mktemp -d)
trap 'rm -rf "$SEEDS"' EXIT
if [ -x "$B/test_corruption" ] && [ -x "$B/bmc" ]; then
  BM_SEED_OUT="$SEEDS" "$B/test_corruption" >/dev/null 2>&1 || echo "make_corpora: test_corruption failed (seed packages may be missing)"
  "$B/bmc" compile --model tiny --print-after all -o "$SEEDS/tiny.bmpk.out" > "$SEEDS/tiny.ir" 2>/dev/null || true
  rm -f "$SEEDS/tiny.bmpk.out"
else
  echo "make_corpora: $B/bmc or $B/test_corruption missing: no package, ELF or IR seeds (build first)"
fi
if command -v cc >/dev/null; then # a small ELF object like the kernels LLVM emits
  printf '%s\n' '#include <stdint.h>' \
    'void k_fma(void *const *b, const int64_t *s, int64_t lo, int64_t hi, void *t) {' \
    '  float *x = b[0], *y = b[1]; for (int64_t i = lo; i < hi; i++) y[i] = x[i] * 2.0f + 1.0f; }' \
    'static const double tab[4] = {1, 2, 3, 4}; double k_tab(int i) { return tab[i & 3]; }' \
    'float k_call(float x) { extern float expf(float); return expf(x); }' > "$SEEDS/k.c"
  cc -c -O2 -fPIC -o "$SEEDS/k.o" "$SEEDS/k.c" 2>/dev/null || true
fi
rm -rf "$OUT"
python3 fuzz/make_corpora.py "$OUT" "$SHARED" "$SEEDS"
