/* fuzz_package.c - libFuzzer target for the package loader (bm_package_open
 * on an in-memory file) and, when a package opens, its accessors and
 * bm_session_create (kernels are never run: a package is trusted code).
 *
 * Input: one mode byte, then the package bytes. Mode bit 0 re-signs the
 * package (sets the header's file size and recomputes the manifest and
 * header checksums) so that mutations reach the manifest validator instead
 * of stopping at a checksum; bit 1 opens with BM_OPEN_SKIP_CHECKSUMS so
 * that damaged weights and code reach zstd and the ELF loader. */
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "fuzz_common.h"
#include "../runtime/internal.h"

static bm_fuzz_file g_file;

static void resign(uint8_t *b, size_t n) {
  if (n < BM_PKG_HEADER_SIZE) return;
  bm_wr_u64(b + BM_PKG_OFF_FILE_SIZE, n);
  uint64_t mo = bm_rd_u64(b + BM_PKG_OFF_MANIFEST_OFFSET), ms = bm_rd_u64(b + BM_PKG_OFF_MANIFEST_SIZE);
  if (mo <= n && ms <= n - mo) bm_wr_u64(b + BM_PKG_OFF_MANIFEST_HASH, XXH3_64bits(b + mo, ms));
  bm_wr_u64(b + BM_PKG_OFF_HEADER_HASH, XXH3_64bits(b, BM_PKG_OFF_HEADER_HASH));
}

static void exercise(bm_package *pkg) {
  (void)bm_package_model_name(pkg);
  (void)strlen(bm_package_manifest_json(pkg));
  (void)bm_package_arena_bytes(pkg);
  (void)bm_package_weight_bytes(pkg);
  int nf = bm_package_function_count(pkg);
  for (int f = 0; f < nf; f++) {
    const char *name = bm_package_function_name(pkg, f);
    int g = -1;
    bm_fuzz_check_status(bm_package_find_function(pkg, name, &g), "find_function");
    if (g != f && g >= 0 && strcmp(bm_package_function_name(pkg, g), name) != 0) abort();
    bm_tensor_info info;
    for (int i = 0; i < bm_function_input_count(pkg, f); i++) {
      bm_fuzz_check_status(bm_function_input_info(pkg, f, i, &info), "input_info");
      int k;
      bm_fuzz_check_status(bm_function_find_input(pkg, f, info.name, &k), "find_input");
    }
    for (int i = 0; i < bm_function_output_count(pkg, f); i++)
      bm_fuzz_check_status(bm_function_output_info(pkg, f, i, &info), "output_info");
  }
  bm_session *s = NULL;
  bm_session_options so = {.threads = 1};
  bm_status st = bm_session_create(pkg, &so, &s);
  if (st) {
    if (bm_status_code(st) != BM_ERR_OUT_OF_MEMORY) bm_fuzz_check_status(st, "session_create");
    else bm_status_free(st);
    return;
  }
  bm_session_reset_state(s);
  bm_session_destroy(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  bm_fuzz_file_init(&g_file, "fuzz.bmpk");
  uint8_t mode = data[0];
  size_t n = size - 1;
  uint8_t *b = malloc(n ? n : 1);
  if (n) memcpy(b, data + 1, n);
  if (mode & 1) resign(b, n);
  bm_fuzz_file_set(&g_file, b, n);
  free(b);
  bm_open_options o = {.flags = (mode & 2) ? BM_OPEN_SKIP_CHECKSUMS : 0};
  bm_package *pkg = NULL;
  bm_status s = bm_package_open(g_file.path, &o, &pkg);
  if (s) {
    if (pkg) abort(); /* *out must stay NULL on failure */
    bm_fuzz_check_status(s, "bm_package_open");
    return 0;
  }
  exercise(pkg);
  bm_package_close(pkg);
  return 0;
}
