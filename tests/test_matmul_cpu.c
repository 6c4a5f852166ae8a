/* test_matmul_cpu.c - matmul, qmatmul and conv2d of the LLVM CPU backend
 * (the tiled GEMM engine, codegen/llvm/matmul.c + conv.c) against the
 * reference interpreter: odd sizes, every trans combination, batching and
 * broadcasting, f16/bf16 B, symbolic M, fused epilogues, int8/int4 weights,
 * convolutions of every flavour, 1 and 2 threads. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "opcheck.h"
#include "testutil.h"

/* ------------------------------------------------------------------ harness */

typedef void (*build_fn)(bm_graph *g, const void *arg);

#define TOL_F32 1e-5
#define TOL_F16_OUT 5e-4 /* f16 outputs: one rounding step of the result (2^-11) */

static double g_tol = TOL_F32; /* tolerance of run_case */

/* Builds with `build`, runs the interpreter and the compiled kernel with 1
 * and 2 threads (fused; unfused too when both_fusions), checks rel err. */
static void run_case(const char *name, build_fn build, const void *arg, const int64_t *syms,
                     bool both_fusions) {
  for (int fuse = both_fusions ? 0 : 1; fuse < 2; fuse++) {
    for (int threads = 1; threads <= 2; threads++) {
      bm_module *m = bm_module_create("t");
      bm_graph *g = bm_graph_create(m, "main");
      build(g, arg);
      bm_status gs = bm_graph_status(g);
      if (gs) {
        fprintf(stderr, "%s: build failed: %s\n", name, bm_status_message(gs));
        bm_test_failed_checks++;
        bm_module_destroy(m);
        return;
      }
      bm_tensor in[8] = {0};
      CHECK_OK(bm_opcheck_random_inputs(g, syms, 77 + (uint64_t)threads, in));
      bm_opcheck_options o = {.fuse = fuse, .threads = threads};
      double err = INFINITY;
      bm_status s = bm_opcheck(g, in, &o, &err);
      if (s) {
        fprintf(stderr, "%s (fuse %d, threads %d): %s\n", name, fuse, threads, bm_status_message(s));
        bm_status_free(s);
        bm_test_failed_checks++;
      } else {
        CHECK_MSG(err <= g_tol, "%s (fuse %d, threads %d): rel err %g > %g", name, fuse, threads,
                  err, g_tol);
      }
      for (int i = 0; i < g->ninputs && i < 8; i++) bm_tensor_free(&in[i]);
      bm_module_destroy(m);
    }
  }
}

/* ------------------------------------------------------------------ matmul */

typedef struct mm_case {
  int64_t m, k, n;
  bool ta, tb;
  bm_dtype bdt;
  int epi; /* 0 none, 1 bias, 2 bias+gelu, 3 bias+gelu+residual */
} mm_case;

static void build_mm(bm_graph *g, const void *arg) {
  const mm_case *c = arg;
  int64_t sa[2] = {c->ta ? c->k : c->m, c->ta ? c->m : c->k};
  int64_t sb[2] = {c->tb ? c->n : c->k, c->tb ? c->k : c->n};
  bm_node *a = bm_input(g, "a", BM_DTYPE_F32, 2, sa);
  bm_node *b = bm_input(g, "b", c->bdt, 2, sb);
  bm_node *y = bm_matmul(g, a, b, c->ta, c->tb);
  if (c->epi >= 1) y = bm_add(g, y, bm_input(g, "bias", BM_DTYPE_F32, 1, &c->n));
  if (c->epi >= 2) y = bm_gelu(g, y);
  if (c->epi >= 3) {
    int64_t so[2] = {c->m, c->n};
    y = bm_add(g, y, bm_input(g, "res", BM_DTYPE_F32, 2, so));
  }
  bm_output_add(g, "y", y);
}

static void test_matmul_sizes(void) {
  static const int64_t sz[][3] = {
      {1, 1, 1},    {2, 3, 7},    {3, 7, 2},     {7, 17, 31},  {17, 31, 64},  {31, 64, 17},
      {64, 64, 64}, {12, 32, 32}, {13, 33, 33},  {100, 257, 33}, {257, 100, 17}, {4, 5, 100},
      {33, 700, 45}, {130, 520, 530}, {5, 1000, 3},
  };
  for (size_t i = 0; i < sizeof sz / sizeof sz[0]; i++) {
    mm_case c = {sz[i][0], sz[i][1], sz[i][2], false, false, BM_DTYPE_F32, 0};
    char name[96];
    snprintf(name, sizeof name, "matmul %lldx%lldx%lld", (long long)c.m, (long long)c.k, (long long)c.n);
    run_case(name, build_mm, &c, NULL, false);
  }
}

static void test_matmul_trans(void) {
  static const int64_t sz[][3] = {{1, 9, 20}, {2, 17, 3}, {19, 40, 37}, {45, 600, 70}};
  for (size_t i = 0; i < sizeof sz / sizeof sz[0]; i++)
    for (int t = 0; t < 4; t++) {
      mm_case c = {sz[i][0], sz[i][1], sz[i][2], t & 1, (t >> 1) & 1, BM_DTYPE_F32, 0};
      char name[96];
      snprintf(name, sizeof name, "matmul %lldx%lldx%lld ta %d tb %d", (long long)c.m,
               (long long)c.k, (long long)c.n, c.ta, c.tb);
      run_case(name, build_mm, &c, NULL, false);
    }
}

static void test_matmul_half_b(void) {
  bm_dtype dts[2] = {BM_DTYPE_F16, BM_DTYPE_BF16};
  for (int d = 0; d < 2; d++)
    for (int tb = 0; tb < 2; tb++) {
      mm_case c1 = {23, 70, 41, false, tb, dts[d], 0};
      mm_case c2 = {1, 70, 41, false, tb, dts[d], 0};
      run_case(d ? "matmul bf16 b" : "matmul f16 b", build_mm, &c1, NULL, false);
      run_case(d ? "gemv bf16 b" : "gemv f16 b", build_mm, &c2, NULL, false);
    }
}

static void test_matmul_epilogue(void) {
  for (int epi = 1; epi <= 3; epi++) {
    mm_case cs[] = {
        {37, 50, 45, false, false, BM_DTYPE_F32, epi},
        {37, 700, 45, false, true, BM_DTYPE_F32, epi}, /* several K blocks */
        {1, 64, 45, false, true, BM_DTYPE_F32, epi},   /* GEMV */
        {2, 64, 45, false, false, BM_DTYPE_F32, epi},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
      char name[96];
      snprintf(name, sizeof name, "matmul epilogue %d case %zu", epi, i);
      run_case(name, build_mm, &cs[i], NULL, epi == 3); /* unfused too for the full chain */
    }
  }
}

/* half-precision output: a and b f16 (or bf16), C in that dtype; K in one block */
static void build_half_out(bm_graph *g, const void *arg) {
  const bm_dtype *dt = arg;
  int64_t sa[2] = {37, 600}, sb[2] = {600, 45};
  bm_node *y = bm_matmul(g, bm_input(g, "a", *dt, 2, sa), bm_input(g, "b", *dt, 2, sb), false, false);
  bm_output_add(g, "y", bm_gelu(g, y));
}

static void test_matmul_half_out(void) {
  bm_dtype dts[2] = {BM_DTYPE_F16, BM_DTYPE_BF16};
  for (int d = 0; d < 2; d++) {
    g_tol = d ? 4e-3 : TOL_F16_OUT; /* bf16: one rounding step is 2^-8 */
    run_case(d ? "matmul bf16 out" : "matmul f16 out", build_half_out, &dts[d], NULL, false);
  }
  g_tol = TOL_F32;
}

/* batched: a (2, 3, M, K) @ b of shape bshape */
typedef struct bmm_case {
  int an, bn;
  int64_t ashape[4], bshape[4];
  bool tb;
} bmm_case;

static void build_bmm(bm_graph *g, const void *arg) {
  const bmm_case *c = arg;
  bm_node *a = bm_input(g, "a", BM_DTYPE_F32, c->an, c->ashape);
  bm_node *b = bm_input(g, "b", BM_DTYPE_F32, c->bn, c->bshape);
  bm_node *y = bm_matmul(g, a, b, false, c->tb);
  int64_t one = 1;
  y = bm_add(g, y, bm_silu(g, bm_input(g, "r", BM_DTYPE_F32, 1, &one)));
  bm_output_add(g, "y", bm_silu(g, y));
}

static void test_matmul_batched(void) {
  bmm_case cs[] = {
      {4, 2, {2, 3, 13, 20}, {20, 17}, false},         /* shared b: folded into M */
      {4, 2, {2, 3, 13, 20}, {17, 20}, true},
      {4, 4, {2, 3, 13, 20}, {1, 3, 20, 17}, false},   /* broadcast over the first dim */
      {4, 4, {2, 1, 13, 20}, {2, 3, 17, 20}, true},    /* a broadcast */
      {2, 3, {13, 20}, {3, 20, 17}, false},            /* a shared */
      {3, 3, {4, 1, 20}, {4, 20, 33}, false},          /* batched GEMV */
      {3, 3, {4, 40, 20}, {4, 20, 33}, false},
      {4, 4, {2, 3, 64, 128}, {1, 3, 128, 96}, false}, /* several tasks per batch */
      {3, 2, {3, 100, 96}, {80, 96}, true},            /* folded, several tasks */
  };
  for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
    char name[64];
    snprintf(name, sizeof name, "batched matmul %zu", i);
    run_case(name, build_bmm, &cs[i], NULL, i == 0);
  }
}

/* symbolic M: x (seq, K) @ w^T with bias, seq bound below its max */
static void build_sym(bm_graph *g, const void *arg) {
  const int64_t *kn = arg;
  int s = bm_sym_declare(g, "seq", 300);
  int64_t sx[3] = {1, BM_SYM(s), kn[0]};
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 3, sx);
  int64_t sw[2] = {kn[1], kn[0]};
  bm_node *w = bm_input(g, "w", BM_DTYPE_F32, 2, sw);
  bm_node *y = bm_matmul(g, x, w, false, true);
  y = bm_add(g, y, bm_input(g, "bias", BM_DTYPE_F32, 1, &kn[1]));
  bm_output_add(g, "y", y);
}

static void test_matmul_symbolic(void) {
  int64_t kn[2] = {128, 90}; /* above the one-task size at the bound */
  int64_t seqs[] = {1, 2, 5, 37, 300};
  for (size_t i = 0; i < sizeof seqs / sizeof seqs[0]; i++) {
    char name[64];
    snprintf(name, sizeof name, "symbolic M seq=%lld", (long long)seqs[i]);
    run_case(name, build_sym, kn, &seqs[i], i == 3);
  }
}

/* symbolic batch: a (batch, 9, 20) @ b (batch, 20, 14) */
static void build_sym_batch(bm_graph *g, const void *arg) {
  int s = bm_sym_declare(g, "batch", 6);
  int64_t sa[3] = {BM_SYM(s), 40, 64}, sb[3] = {BM_SYM(s), 64, 200};
  bm_node *y = bm_matmul(g, bm_input(g, "a", BM_DTYPE_F32, 3, sa), bm_input(g, "b", BM_DTYPE_F32, 3, sb),
                         false, false);
  bm_output_add(g, "y", y);
}

/* attention-like: p (1, 3, seq, seq) @ v (1, 3, seq, 16), and q @ k^T */
static void build_sym_k(bm_graph *g, const void *arg) {
  int s = bm_sym_declare(g, "seq", 256);
  int64_t sp[4] = {1, 3, BM_SYM(s), BM_SYM(s)}, sv[4] = {1, 3, BM_SYM(s), 16};
  bm_node *p = bm_input(g, "p", BM_DTYPE_F32, 4, sp), *v = bm_input(g, "v", BM_DTYPE_F32, 4, sv);
  bm_output_add(g, "pv", bm_matmul(g, p, v, false, false));
  bm_output_add(g, "qk", bm_matmul(g, v, v, false, true));
}

static void test_matmul_symbolic_batch_k(void) {
  int64_t b[] = {1, 4};
  for (int i = 0; i < 2; i++) run_case("symbolic batch", build_sym_batch, NULL, &b[i], false);
  int64_t seq[] = {1, 3, 130};
  for (int i = 0; i < 3; i++) run_case("symbolic K", build_sym_k, NULL, &seq[i], false);
}

/* ------------------------------------------------------------------ qmatmul */

typedef struct q_case {
  int64_t m, k, n, groups;
  bm_dtype qdt;
  bool epi;
} q_case;

static void build_q(bm_graph *g, const void *arg) {
  const q_case *c = arg;
  int64_t sx[2] = {c->m, c->k}, sq[2] = {c->n, c->k}, ss[2] = {c->n, c->groups};
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 2, sx);
  int64_t nq = c->n * c->k;
  size_t qbytes = bm_dtype_nbytes(c->qdt, nq);
  uint8_t *qd = bm_arena_alloc(g->module->arena, qbytes);
  float *sd = bm_arena_alloc(g->module->arena, sizeof(float) * (size_t)(c->n * c->groups));
  uint64_t st = 99;
  for (int64_t i = 0; i < nq; i++) {
    int v = (int)(bm_test_rand_u64(&st) % 16) - 8; /* -8 .. 7 */
    if (c->qdt == BM_DTYPE_I8) {
      ((int8_t *)qd)[i] = (int8_t)(v * 15);
    } else {
      uint8_t nib = (uint8_t)(v & 15);
      if (i & 1)
        qd[i / 2] = (uint8_t)((qd[i / 2] & 0x0f) | (nib << 4));
      else
        qd[i / 2] = (uint8_t)((qd[i / 2] & 0xf0) | nib);
    }
  }
  for (int64_t i = 0; i < c->n * c->groups; i++) sd[i] = bm_test_rand_uniform(&st, 0.001f, 0.05f);
  bm_node *q = bm_weight(g, "q", c->qdt, 2, sq, qd, qbytes);
  bm_node *s = bm_weight(g, "s", BM_DTYPE_F32, 2, ss, sd, sizeof(float) * (size_t)(c->n * c->groups));
  bm_node *y = bm_qmatmul(g, x, q, s);
  if (c->epi) y = bm_gelu(g, bm_add(g, y, bm_input(g, "bias", BM_DTYPE_F32, 1, &c->n)));
  bm_output_add(g, "y", y);
}

static void test_qmatmul(void) {
  q_case cs[] = {
      {1, 64, 33, 1, BM_DTYPE_I8, false},   {1, 64, 33, 2, BM_DTYPE_I8, false},
      {1, 128, 20, 4, BM_DTYPE_I4, false},  {1, 128, 20, 2, BM_DTYPE_I4, true},
      {1, 17, 9, 1, BM_DTYPE_I8, false},    {1, 17, 9, 1, BM_DTYPE_I4, false},
      {2, 96, 9, 3, BM_DTYPE_I4, false},    {5, 64, 33, 1, BM_DTYPE_I8, true},
      {37, 128, 70, 4, BM_DTYPE_I4, false}, {37, 128, 70, 2, BM_DTYPE_I8, false},
      {29, 17, 21, 1, BM_DTYPE_I4, false},  {40, 640, 50, 10, BM_DTYPE_I8, true},
      {40, 640, 50, 1, BM_DTYPE_I4, false}, {16, 96, 40, 2, BM_DTYPE_I8, false},
      {64, 640, 96, 10, BM_DTYPE_I8, true}, {64, 512, 80, 8, BM_DTYPE_I4, false}, /* several tasks */
      {1, 512, 4096, 16, BM_DTYPE_I4, false}, /* GEMV over several tasks */
  };
  for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
    char name[96];
    snprintf(name, sizeof name, "qmatmul %s %lldx%lldx%lld group %lld", bm_dtype_name(cs[i].qdt),
             (long long)cs[i].m, (long long)cs[i].k, (long long)cs[i].n,
             (long long)(cs[i].k / cs[i].groups));
    run_case(name, build_q, &cs[i], NULL, false);
  }
}

/* ------------------------------------------------------------------ conv2d */

typedef struct conv_case {
  int64_t n, c, h, w, o, kh, kw;
  int stride, pad, dil, groups;
  bool bias, silu, residual;
} conv_case;

static void build_conv(bm_graph *g, const void *arg) {
  const conv_case *c = arg;
  int64_t sx[4] = {c->n, c->c, c->h, c->w}, sw[4] = {c->o, c->c / c->groups, c->kh, c->kw};
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 4, sx);
  bm_node *w = bm_input(g, "w", BM_DTYPE_F32, 4, sw);
  bm_node *b = c->bias ? bm_input(g, "b", BM_DTYPE_F32, 1, &c->o) : NULL;
  bm_node *y = bm_conv2d(g, x, w, b, c->stride, c->stride, c->pad, c->pad, c->dil, c->dil, c->groups);
  if (c->silu) y = bm_silu(g, y);
  if (c->residual) { /* an (N, O, OH, OW) operand and a (1, O, 1, 1) one */
    int64_t oh = (c->h + 2 * c->pad - c->dil * (c->kh - 1) - 1) / c->stride + 1;
    int64_t ow = (c->w + 2 * c->pad - c->dil * (c->kw - 1) - 1) / c->stride + 1;
    int64_t so[4] = {c->n, c->o, oh, ow}, sc[4] = {1, c->o, 1, 1};
    y = bm_add(g, y, bm_input(g, "res", BM_DTYPE_F32, 4, so));
    y = bm_mul(g, y, bm_input(g, "scale", BM_DTYPE_F32, 4, sc));
  }
  bm_output_add(g, "y", y);
}

static void test_conv2d(void) {
  conv_case cs[] = {
      {1, 3, 8, 8, 4, 3, 3, 1, 1, 1, 1, false, false, false},    /* 3x3 pad 1 */
      {2, 5, 9, 7, 6, 3, 3, 2, 1, 1, 1, true, false, false},     /* stride 2, odd sizes */
      {1, 16, 5, 7, 24, 1, 1, 1, 0, 1, 1, true, true, false},    /* 1x1 */
      {2, 8, 11, 6, 8, 3, 3, 1, 1, 1, 8, true, false, false},    /* depthwise */
      {1, 4, 13, 12, 5, 3, 3, 1, 2, 2, 1, false, false, false},  /* dilation 2 */
      {1, 6, 9, 9, 40, 3, 3, 1, 1, 1, 1, true, true, false},     /* bias + silu */
      {1, 32, 17, 19, 16, 3, 3, 1, 1, 1, 1, true, true, true},   /* K = 288, 323 pixels */
      {2, 8, 7, 5, 12, 3, 2, 1, 0, 1, 2, true, false, false},    /* groups 2, non-square kernel */
      {1, 3, 1, 1, 2, 1, 1, 1, 0, 1, 1, false, false, false},
      {1, 40, 6, 6, 30, 3, 3, 1, 1, 1, 1, false, false, false},  /* K = 360 */
      {1, 64, 10, 10, 20, 3, 3, 2, 1, 1, 1, true, false, true},  /* K = 576: two K blocks */
      {2, 32, 16, 16, 32, 3, 3, 1, 1, 1, 1, true, true, false},  /* several tasks */
      {2, 128, 32, 32, 128, 3, 3, 1, 1, 1, 128, true, false, false}, /* depthwise, several tasks */
  };
  for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
    char name[64];
    snprintf(name, sizeof name, "conv2d case %zu", i);
    run_case(name, build_conv, &cs[i], NULL, cs[i].silu || cs[i].residual);
  }
}

/* symbolic spatial size: x (2, 6, h, w) with a 3x3 conv, stride 1, pad 1 */
static void build_conv_sym(bm_graph *g, const void *arg) {
  int h = bm_sym_declare(g, "h", 40), w = bm_sym_declare(g, "w", 48);
  int64_t sx[4] = {2, 6, BM_SYM(h), BM_SYM(w)}, sw[4] = {16, 6, 3, 3};
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 4, sx);
  bm_node *y = bm_conv2d(g, x, bm_input(g, "w", BM_DTYPE_F32, 4, sw), NULL, 1, 1, 1, 1, 1, 1, 1);
  bm_output_add(g, "y", bm_silu(g, y));
}

static void test_conv2d_symbolic(void) {
  int64_t hw[][2] = {{7, 9}, {40, 48}, {1, 1}};
  for (int i = 0; i < 3; i++) run_case("conv2d symbolic h, w", build_conv_sym, NULL, hw[i], false);
}

int main(void) {
  RUN(test_matmul_sizes);
  RUN(test_matmul_trans);
  RUN(test_matmul_half_b);
  RUN(test_matmul_half_out);
  RUN(test_matmul_epilogue);
  RUN(test_matmul_batched);
  RUN(test_matmul_symbolic);
  RUN(test_matmul_symbolic_batch_k);
  RUN(test_qmatmul);
  RUN(test_conv2d);
  RUN(test_conv2d_symbolic);
  return bm_test_finish();
}
