/* fuzz_safetensors.c - libFuzzer target for the safetensors reader
 * (bm_st_open on an in-memory file): a file that opens must describe
 * tensors whose bytes all lie inside the file. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "../runtime/safetensors.h"

static bm_fuzz_file g_file;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  bm_fuzz_file_init(&g_file, "fuzz.safetensors");
  bm_fuzz_file_set(&g_file, data, size);
  bm_st_file *st = NULL;
  bm_status s = bm_st_open(g_file.path, &st);
  if (s) {
    if (st) abort();
    bm_fuzz_check_status(s, "bm_st_open");
    return 0;
  }
  volatile uint8_t x = 0;
  for (int i = 0; i < bm_st_count(st); i++) {
    const bm_st_tensor *t = bm_st_tensor_at(st, i);
    if (t->offset + t->nbytes > size || (i > 0 && strcmp(bm_st_tensor_at(st, i - 1)->name, t->name) > 0)) abort();
    if (t->nbytes) x ^= ((const uint8_t *)t->data)[0] ^ ((const uint8_t *)t->data)[t->nbytes - 1];
    if (bm_st_find(st, t->name) == NULL) abort();
    char buf[128];
    bm_st_shape_str(t->ndim, t->shape, buf, sizeof buf);
    bm_status d = bm_st_check_dtype(t);
    if (d) bm_fuzz_check_status(d, "bm_st_check_dtype");
  }
  for (int i = 0; i < bm_st_metadata_count(st); i++) {
    const char *k, *v;
    bm_st_metadata_at(st, i, &k, &v);
    if (!k || !v || bm_st_metadata(st, k) == NULL) abort();
  }
  const bm_st_tensor *t;
  (void)x;
  s = bm_st_get(st, "no such tensor \x01", &t);
  if (!s || bm_status_code(s) != BM_ERR_NOT_FOUND) abort();
  bm_status_free(s);
  bm_st_close(st);
  return 0;
}
