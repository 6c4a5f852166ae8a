/* test_cuda_prefill_source.c - which CUDA kernels an LLM prefill's head split,
 * rope, kv_write and MLP epilogue get (docs/cuda.md "Prefill: the profile"):
 * 16-byte vector copies over a symbolic (batch, seq), the vector rope and
 * kv_write, the TMA GEMM's prefetched epilogue inputs, and the knobs that keep
 * the previous kernels (BM_CUDA_MOVE=static, BM_CUDA_ROPE=old,
 * BM_CUDA_EPI_PREFETCH=0). Source text only (test_ops_cuda runs the `pf_*` cases). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_source.h"
#include "testutil.h"

#define BF16 BM_DTYPE_BF16

#define VEC16 "/* a strided copy of 16-byte vectors"
#define ROPE8 "/* rope: 8 pairs"
#define KV16 "/* 16-byte vectors (8 elements) */"
#define EPI_PRE "unsigned int ex[1][16];"

static bool has(const char *src, const char *s) { return src && strstr(src, s); }

/* LLaMA-shaped prefill pieces at batch <= 1, seq <= 2048, 8 heads / 2 KV heads of 128 (caller frees) */
static char *prefill_source(void) {
  bm_module *m = bm_module_create("pf");
  bm_graph *g = bm_graph_create(m, "prefill");
  int b = bm_sym_declare(g, "batch", 1), s = bm_sym_declare(g, "seq", 2048);
  bm_node *qkv = bm_input(g, "qkv", BF16, 3, (int64_t[]){BM_SYM(b), BM_SYM(s), 1536});
  bm_node *q = bm_reshape(g, bm_slice(g, qkv, 2, 0, 1024, 1), 4, (int64_t[]){BM_SYM(b), BM_SYM(s), 8, 128});
  bm_node *k = bm_reshape(g, bm_slice(g, qkv, 2, 1024, 1280, 1), 4, (int64_t[]){BM_SYM(b), BM_SYM(s), 2, 128});
  bm_node *pos = bm_input(g, "pos", BM_DTYPE_I32, 2, (int64_t[]){BM_SYM(b), BM_SYM(s)});
  float fr[64];
  for (int i = 0; i < 64; i++) fr[i] = powf(500000.0f, -(float)i / 64.0f);
  bm_node *f = bm_const(g, BM_DTYPE_F32, 1, (int64_t[]){64}, fr);
  bm_output_add(g, "q", bm_permute(g, bm_rope(g, q, pos, f, 0), (int[]){0, 2, 1, 3}));
  bm_node *kh = bm_permute(g, bm_rope(g, k, pos, f, 0), (int[]){0, 2, 1, 3});
  bm_node *cache = bm_state(g, "k_cache", BF16, 4, (int64_t[]){1, 2, 4096, 128});
  bm_node *start = bm_input(g, "start", BM_DTYPE_I32, 1, (int64_t[]){BM_SYM(b)});
  bm_output_add(g, "kc", bm_kv_write(g, cache, kh, start));
  /* the MLP's silu(x Wg^T) * (x Wu^T) */
  bm_node *x = bm_input(g, "x", BF16, 3, (int64_t[]){BM_SYM(b), BM_SYM(s), 512});
  bm_node *wg = bm_input(g, "wg", BF16, 2, (int64_t[]){1024, 512}), *wu = bm_input(g, "wu", BF16, 2, (int64_t[]){1024, 512});
  bm_node *up = bm_matmul(g, x, wu, false, true);
  bm_output_add(g, "h", bm_mul(g, bm_silu(g, bm_matmul(g, x, wg, false, true)), up));
  char *src = bm_test_cuda_source(m, g);
  bm_module_destroy(m);
  return src;
}

static void test_default(void) {
  char *src = prefill_source();
  CHECK(src != NULL);
  CHECK_MSG(has(src, VEC16), "the q/k slices and head split permutes copy 16-byte vectors");
  CHECK_MSG(has(src, ROPE8), "the rope rotates 8 pairs a thread");
  CHECK_MSG(has(src, KV16), "the kv_write copies 16-byte vectors");
  CHECK_MSG(has(src, EPI_PRE), "the gate GEMM prefetches its epilogue input (up)");
  free(src);
}

static void test_knobs(void) {
  setenv("BM_CUDA_MOVE", "static", 1);
  setenv("BM_CUDA_ROPE", "old", 1);
  setenv("BM_CUDA_EPI_PREFETCH", "0", 1);
  char *src = prefill_source();
  unsetenv("BM_CUDA_MOVE");
  unsetenv("BM_CUDA_ROPE");
  unsetenv("BM_CUDA_EPI_PREFETCH");
  CHECK(src != NULL);
  CHECK_MSG(!has(src, VEC16), "BM_CUDA_MOVE=static: symbolic strides take the element-wise kernel");
  CHECK_MSG(!has(src, ROPE8) && !has(src, KV16), "BM_CUDA_ROPE=old: the element-wise rope and kv_write");
  CHECK_MSG(!has(src, EPI_PRE), "BM_CUDA_EPI_PREFETCH=0: epilogue inputs loaded per element");
  free(src);
}

int main(void) {
  RUN(test_default);
  RUN(test_knobs);
  return bm_test_finish();
}
