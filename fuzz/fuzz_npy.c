/* fuzz_npy.c - libFuzzer target for the .npy reader (bm_npy_parse). */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "../runtime/npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  bm_npy_array a;
  bm_status s = bm_npy_parse(data, size, "fuzz.npy", &a);
  if (s) {
    bm_fuzz_check_status(s, "bm_npy_parse");
    return 0;
  }
  /* the array must be self-consistent: touch every byte */
  if (a.nbytes != bm_dtype_nbytes(a.dtype, a.numel)) abort();
  volatile uint8_t x = 0;
  for (size_t i = 0; i < a.nbytes; i++) x ^= ((const uint8_t *)a.data)[i];
  (void)x;
  bm_npy_free(&a);
  return 0;
}
