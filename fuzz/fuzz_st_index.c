/* fuzz_st_index.c - libFuzzer target for sharded safetensors checkpoints:
 * the input is model.safetensors.index.json, opened (bm_st_open_dir) in a
 * scratch folder that holds two valid shards:
 *   model-00001-of-00002.safetensors: a (2, 3) f32, b (4) f16
 *   model-00002-of-00002.safetensors: c (1) i32 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "../runtime/safetensors.h"

static char g_index[512];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  const char *dir = bm_fuzz_tmpdir();
  char p[512];
  float a[6] = {1, 2, 3, 4, 5, 6};
  uint16_t b[4] = {0x3c00, 0x4000, 0x4200, 0x4400};
  int32_t c[1] = {7};
  bm_tensor_info i1[2] = {{.name = "a", .dtype = BM_DTYPE_F32, .ndim = 2, .shape = {2, 3}},
                          {.name = "b", .dtype = BM_DTYPE_F16, .ndim = 1, .shape = {4}}};
  const void *d1[2] = {a, b};
  snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", dir);
  bm_status s = bm_st_write(p, 2, i1, d1, NULL);
  bm_tensor_info i2[1] = {{.name = "c", .dtype = BM_DTYPE_I32, .ndim = 1, .shape = {1}}};
  const void *d2[1] = {c};
  snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
  if (!s) s = bm_st_write(p, 1, i2, d2, NULL);
  if (s) {
    fprintf(stderr, "fuzz_st_index: cannot write the shards: %s\n", bm_status_message(s));
    abort();
  }
  snprintf(g_index, sizeof g_index, "%s/model.safetensors.index.json", dir);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  bm_fuzz_write(g_index, data, size);
  bm_st_set *set = NULL;
  /* alternately through the folder and through the index path */
  char dir[512];
  snprintf(dir, sizeof dir, "%s", bm_fuzz_tmpdir());
  bm_status s = bm_st_open_dir(size % 2 ? dir : g_index, &set);
  if (s) {
    if (set) abort();
    bm_fuzz_check_status(s, "bm_st_open_dir");
    return 0;
  }
  for (int i = 0; i < bm_st_set_count(set); i++) {
    const bm_st_tensor *t = bm_st_set_tensor_at(set, i);
    const bm_st_file *f = NULL;
    const bm_st_tensor *u = NULL;
    bm_status g = bm_st_set_get(set, t->name, &u, &f);
    if (g || u != t || !f) abort();
  }
  for (int i = 0; i < bm_st_set_file_count(set); i++) (void)bm_st_path(bm_st_set_file(set, i));
  bm_st_set_close(set);
  return 0;
}
