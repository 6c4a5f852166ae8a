/* test_cuda_smallm_source.c - which CUDA kernel a few-row MATMUL/QMATMUL gets
 * (codegen/clike/emit_gemm_small.c vs the GEMV of emit_gemv.c): the row and
 * dtype ranges, the configuration per shape, BM_CUDA_SMALLM and
 * BM_CUDA_SMALLM_ROWS. Source text only (no NVRTC, no GPU: test_ops_cuda
 * compiles and runs the kernels). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../codegen/clike/clike.h"
#include "../passes/passes.h"
#include "cuda_source.h"
#include "testutil.h"

typedef struct mm_case {
  bm_dtype at, wt;    /* activations, weights (I8/I4: QMATMUL) */
  int64_t m, n, k, g; /* g: scale groups per row (QMATMUL) */
  bool computed_w;    /* the weights come out of an op (not a graph source) */
} mm_case;

/* the CUDA source of y (m, n) = x (m, k) @ W (n, k)^T; caller frees */
static char *mm_source(mm_case c) {
  bm_module *m = bm_module_create("mm");
  bm_graph *g = bm_graph_create(m, "main");
  bm_node *x = bm_input(g, "x", c.at, 2, (int64_t[]){c.m, c.k}); // (rows, K)
  bm_node *w = bm_input(g, "w", c.wt, 2, (int64_t[]){c.n, c.k}); // (N, K)
  if (c.computed_w) w = bm_unary(g, BM_OP_NEG, w);
  bm_node *y;
  if (c.wt == BM_DTYPE_I8 || c.wt == BM_DTYPE_I4)
    y = bm_qmatmul(g, x, w, bm_input(g, "s", BM_DTYPE_F32, 2, (int64_t[]){c.n, c.g}));
  else
    y = bm_matmul(g, x, w, false, true);
  bm_output_add(g, "y", y);
  char *src = bm_test_cuda_source(m, g);
  bm_module_destroy(m);
  return src;
}

/* the small-M kernel's comment in its body (NULL: another kernel) */
static const char *smallm(const char *src) { return src ? strstr(src, "  /* small-M GEMM (") : NULL; }

/* the small-M kernel with this configuration text after "small-M GEMM (" */
static bool smallm_is(const char *src, const char *cfg) {
  const char *s = smallm(src);
  return s && strncmp(s + strlen("  /* small-M GEMM ("), cfg, strlen(cfg)) == 0;
}

#define BF16 BM_DTYPE_BF16
#define F16 BM_DTYPE_F16
#define F32 BM_DTYPE_F32
#define I8 BM_DTYPE_I8
#define I4 BM_DTYPE_I4

static void test_row_ranges(void) {
  struct {
    mm_case c;
    bool small;
  } t[] = {
      {{BF16, BF16, 8, 4096, 4096, 0, false}, true},
      {{BF16, BF16, 4, 4096, 4096, 0, false}, false},  /* the GEMV up to 4 rows */
      {{BF16, BF16, 2, 4096, 14336, 0, false}, true},  /* but rows of 8192+ elements */
      {{F32, BF16, 5, 512, 256, 0, false}, true},      /* f32 activations: hi + lo */
      {{F16, F16, 64, 512, 256, 0, false}, true},
      {{BF16, BF16, 65, 512, 256, 0, false}, false},   /* more rows: the tensor-core GEMM */
      {{BF16, I8, 4, 4096, 4096, 1, false}, false},    /* int8: the GEMV up to 4 rows */
      {{BF16, I8, 5, 4096, 4096, 1, false}, true},
      {{F32, I4, 2, 4096, 4096, 128, false}, true},    /* int4 from 2 rows */
      {{BF16, BF16, 1, 4096, 4096, 0, false}, false},  /* one row: the GEMV */
      {{F32, F32, 8, 512, 256, 0, false}, false},      /* f32 weights */
      {{F16, BF16, 8, 512, 256, 0, false}, false},     /* mixed 16-bit dtypes */
      {{BF16, BF16, 8, 512, 100, 0, false}, false},    /* K not a multiple of the round (32) */
      {{BF16, I4, 8, 512, 192, 3, false}, false},      /* int4 K not a multiple of 128 */
      {{BF16, I4, 8, 512, 256, 16, false}, false},     /* groups of 16 split the 32-nibble chunks */
      {{BF16, I4, 8, 512, 384, 4, false}, false},      /* groups of 3 chunks straddle the rounds */
      {{BF16, BF16, 8, 512, 256, 0, true}, false},     /* weights written by an earlier kernel */
  };
  for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
    char *src = mm_source(t[i].c);
    CHECK(src != NULL);
    CHECK_MSG((smallm(src) != NULL) == t[i].small, "case %zu: %s x %s, %lld rows, K %lld: small-M %d expected", i,
              bm_dtype_name(t[i].c.at), bm_dtype_name(t[i].c.wt), (long long)t[i].c.m, (long long)t[i].c.k,
              t[i].small);
    free(src);
  }
}

/* the measured configuration per shape (bench/RESULTS.md) */
static void test_default_configs(void) {
  struct {
    mm_case c;
    const char *cfg;
    bool pipelined; /* the weights double buffered */
  } t[] = {
      {{BF16, BF16, 8, 14336, 4096, 0, false}, "default): 8 rows at most, 16 weight rows per block (1 tile(s) of 16), K over 4 warps", true},
      {{BF16, BF16, 16, 4096, 14336, 0, false}, "default): 16 rows at most, 32 weight rows per block (2 tile(s) of 16), K over 16 warps", true},
      {{BF16, BF16, 16, 1024, 4096, 0, false}, "default): 16 rows at most, 16 weight rows per block (1 tile(s) of 16), K over 16 warps", true},
      {{BF16, I8, 8, 14336, 4096, 1, false}, "default): 8 rows at most, 16 weight rows per block (1 tile(s) of 16), K over 16 warps", false},
      {{BF16, I8, 16, 4096, 4096, 1, false}, "default): 16 rows at most, 32 weight rows per block (2 tile(s) of 16), K over 16 warps", true},
      {{BF16, I8, 16, 14336, 4096, 1, false}, "default): 16 rows at most, 32 weight rows per block (2 tile(s) of 16), K over 8 warps", true},
      {{F32, I8, 16, 14336, 4096, 1, false}, "default): 16 rows at most, 16 weight rows per block (1 tile(s) of 16), K over 8 warps", true},
      {{BF16, I4, 8, 14336, 4096, 128, false}, "default): 8 rows at most, 32 weight rows per block (2 tile(s) of 16), K over 8 warps", false},
      {{BF16, I4, 16, 4096, 14336, 448, false}, "default): 16 rows at most, 16 weight rows per block (1 tile(s) of 16), K over 8 warps", true},
      {{BF16, BF16, 64, 4096, 4096, 0, false}, "default): 64 rows at most, 16 weight rows per block (1 tile(s) of 16), K over 4 warps", true},
  };
  for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
    char *src = mm_source(t[i].c);
    CHECK_MSG(smallm_is(src, t[i].cfg), "case %zu: expected \"%s\", got \"%.140s\"", i, t[i].cfg,
              smallm(src) ? smallm(src) : "(no small-M kernel)");
    CHECK_MSG((src && strstr(src, "loaded a step ahead")) == t[i].pipelined, "case %zu: double buffer %d expected", i,
              t[i].pipelined);
    /* no L2 prefetch by default (slower on an H100) */
    CHECK(src && !strstr(src, "bm_prefetch_l2(bm_buf(1)"));
    free(src);
  }
}

static void test_env(void) {
  mm_case c = {BF16, BF16, 8, 4096, 4096, 0, false}, c2 = {BF16, BF16, 2, 4096, 4096, 0, false};
  setenv("BM_CUDA_SMALLM", "0", 1);
  char *src = mm_source(c);
  CHECK(src && !smallm(src));
  free(src);
  setenv("BM_CUDA_SMALLM", "t2w8s0p1", 1); /* a named configuration with flags */
  src = mm_source(c);
  CHECK(smallm_is(src, "t2w8): 8 rows at most, 32 weight rows per block (2 tile(s) of 16), K over 8 warps"));
  CHECK(src && !strstr(src, "loaded a step ahead") && strstr(src, "bm_prefetch_l2(bm_buf(1)"));
  free(src);
  setenv("BM_CUDA_SMALLM", "t4w8", 1); /* 64 rows: the K reduction's shared memory caps the tiles per warp */
  mm_case c64 = {BF16, BF16, 64, 4096, 4096, 0, false};
  src = mm_source(c64);
  CHECK(smallm_is(src, "t4w8): 64 rows at most, 16 weight rows per block (1 tile(s) of 16), K over 8 warps"));
  free(src);
  unsetenv("BM_CUDA_SMALLM");
  setenv("BM_CUDA_SMALLM_ROWS", "2-64", 1);
  src = mm_source(c2);
  CHECK(src && smallm(src));
  free(src);
  unsetenv("BM_CUDA_SMALLM_ROWS");
  src = mm_source(c2);
  CHECK(src && !smallm(src));
  free(src);
}

int main(void) {
  RUN(test_row_ranges);
  RUN(test_default_configs);
  RUN(test_env);
  return bm_test_finish();
}
