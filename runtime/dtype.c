/* dtype.c - dtype names and sizes (shared by compiler and runtime). */
#include <stdint.h>
#include <string.h>

#include "bm_runtime.h"

static const struct {
  const char *name;
  int bits;
} dtypes[BM_DTYPE_COUNT] = {
    [BM_DTYPE_F32] = {"f32", 32},          [BM_DTYPE_F16] = {"f16", 16},
    [BM_DTYPE_BF16] = {"bf16", 16},        [BM_DTYPE_I8] = {"i8", 8},
    [BM_DTYPE_I4] = {"i4", 4},             [BM_DTYPE_FP8_E4M3] = {"fp8_e4m3", 8},
    [BM_DTYPE_FP8_E5M2] = {"fp8_e5m2", 8}, [BM_DTYPE_I32] = {"i32", 32},
    [BM_DTYPE_I64] = {"i64", 64},
};
_Static_assert(BM_DTYPE_COUNT == 9, "update the dtype table");

const char *bm_dtype_name(bm_dtype t) {
  return (unsigned)t < BM_DTYPE_COUNT ? dtypes[t].name : "?";
}

int bm_dtype_from_name(const char *s, bm_dtype *out) {
  for (int i = 0; i < BM_DTYPE_COUNT; i++)
    if (s && strcmp(s, dtypes[i].name) == 0) {
      *out = (bm_dtype)i;
      return 0;
    }
  return -1;
}

size_t bm_dtype_nbytes(bm_dtype t, int64_t n) {
  if ((unsigned)t >= BM_DTYPE_COUNT || n < 0) return 0;
  /* a shape read from a file can make n * bits pass 2^63 (signed overflow
   * before); saturate, so the size never matches a real buffer */
  uint64_t bits = (uint64_t)dtypes[t].bits;
  if ((uint64_t)n > (UINT64_MAX - 7) / bits) return SIZE_MAX;
  return (size_t)(((uint64_t)n * bits + 7) / 8);
}
