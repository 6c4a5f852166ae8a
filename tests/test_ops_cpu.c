/* test_ops_cpu.c - every non-GEMM op of the LLVM CPU backend against the
 * reference interpreter (tests/opcheck.h): odd shapes, broadcasting,
 * f16/bf16, symbolic dims bound below their max, fused and unfused, 1 and 2
 * threads; plus per-element accuracy of the vector math (exp, tanh, erf...)
 * and the target/backend plumbing. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../codegen/llvm/cg.h"
#include "opcheck.h"
#include "testutil.h"

/* ------------------------------------------------------------------ harness */

/* Builds the graph under test into g (inputs, ops, outputs). */
typedef void (*build_fn)(bm_graph *g, const void *arg);

typedef struct run_opts {
  const int64_t *syms;   /* bound symbol values (NULL = max) */
  double tol;            /* max relative error (max|out-ref| / max|ref|) */
  bool fused_only;       /* skip the unfused run */
} run_opts;

/* The op under test of the current case: the unfused run must have compiled
 * a kernel for it (so nothing folded or aliased it away). */
static bm_op expect_op = BM_OP_COUNT;

static bool has_kernel_for(const bm_graph *g, bm_op op) {
  for (int i = 0; i < g->nnodes; i++)
    if (g->nodes[i]->op == op && g->nodes[i]->kernel) return true;
  return false;
}

/* Runs one case fused and unfused with 1 and 2 threads. */
static void run_case(const char *name, build_fn build, const void *arg, const run_opts *ro) {
  expect_op = BM_OP_COUNT;
  for (int fuse = 0; fuse < 2; fuse++) {
    if (!fuse && ro->fused_only) continue;
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
      CHECK_OK(bm_opcheck_random_inputs(g, ro->syms, 1234 + (uint64_t)threads, in));
      bm_opcheck_options o = {.fuse = fuse, .threads = threads};
      double err = INFINITY;
      bm_status s = bm_opcheck(g, in, &o, &err);
      if (s) {
        fprintf(stderr, "%s (fuse %d, threads %d): %s\n", name, fuse, threads, bm_status_message(s));
        bm_status_free(s);
        bm_test_failed_checks++;
      } else {
        if (getenv("BM_TEST_VERBOSE"))
          fprintf(stderr, "  %s (fuse %d, threads %d): rel err %g\n", name, fuse, threads, err);
        CHECK_MSG(err <= ro->tol, "%s (fuse %d, threads %d): rel err %g > %g", name, fuse, threads,
                  err, ro->tol);
        if (!fuse && expect_op != BM_OP_COUNT)
          CHECK_MSG(has_kernel_for(g, expect_op), "%s: no %s kernel was compiled", name,
                    bm_op_name(expect_op));
      }
      for (int i = 0; i < g->ninputs && i < 8; i++) bm_tensor_free(&in[i]);
      bm_module_destroy(m);
    }
  }
}

static const run_opts F32 = {.tol = 2e-6};

/* ------------------------------------------------------------------ elementwise */

typedef struct ew_case {
  bm_op op;
  int ndim;
  int64_t shape[4];
  bm_dtype dtype;
} ew_case;

static bool positive_domain(bm_op op) {
  return op == BM_OP_LOG || op == BM_OP_SQRT || op == BM_OP_RSQRT || op == BM_OP_RECIP;
}

static void build_unary(bm_graph *g, const void *arg) {
  const ew_case *c = arg;
  expect_op = c->op;
  bm_node *x = bm_input(g, "x", c->dtype, c->ndim, c->shape);
  /* 3x spans more of each function; positive-domain ops get |3x| + 0.25 */
  bm_node *t = bm_mul(g, x, bm_scalar(g, 3.0f));
  if (positive_domain(c->op)) t = bm_add(g, bm_unary(g, BM_OP_ABS, t), bm_scalar(g, 0.25f));
  bm_node *y = bm_unary(g, c->op, t);
  bm_output_add(g, "y", y);
}

static void test_unary_all(void) {
  static const bm_op ops[] = {BM_OP_NEG,  BM_OP_ABS,     BM_OP_EXP,       BM_OP_LOG,
                              BM_OP_SQRT, BM_OP_RSQRT,   BM_OP_RECIP,     BM_OP_SQUARE,
                              BM_OP_SIN,  BM_OP_COS,     BM_OP_TANH,      BM_OP_ERF,
                              BM_OP_SIGMOID, BM_OP_RELU, BM_OP_SILU,      BM_OP_GELU,
                              BM_OP_GELU_TANH, BM_OP_QUICK_GELU};
  for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
    ew_case c = {ops[i], 2, {3, 1037}, BM_DTYPE_F32};
    run_case(bm_op_name(ops[i]), build_unary, &c, &F32);
  }
}

static void test_unary_shapes_dtypes(void) {
  ew_case a = {BM_OP_GELU, 1, {1}, BM_DTYPE_F32};
  run_case("gelu (1)", build_unary, &a, &F32);
  ew_case b = {BM_OP_SILU, 3, {3, 17, 33}, BM_DTYPE_F32};
  run_case("silu (3,17,33)", build_unary, &b, &F32);
  ew_case c = {BM_OP_TANH, 2, {17, 33}, BM_DTYPE_F16};
  run_case("tanh f16", build_unary, &c, &(run_opts){.tol = 2e-3});
  ew_case d = {BM_OP_EXP, 2, {5, 33}, BM_DTYPE_BF16};
  run_case("exp bf16", build_unary, &d, &(run_opts){.tol = 1e-2});
  ew_case e = {BM_OP_NEG, 0, {0}, BM_DTYPE_F32};
  run_case("neg rank 0", build_unary, &e, &F32);
}

typedef struct bin_case {
  bm_op op;
  int na, nb;
  int64_t sa[4], sb[4];
  bm_dtype ta, tb;
} bin_case;

static void build_binary(bm_graph *g, const void *arg) {
  const bin_case *c = arg;
  expect_op = c->op;
  bm_node *a = bm_input(g, "a", c->ta, c->na, c->sa);
  bm_node *b = bm_input(g, "b", c->tb, c->nb, c->sb);
  if (c->op == BM_OP_POW) a = bm_add(g, bm_unary(g, BM_OP_ABS, a), bm_scalar(g, 0.5f));
  if (c->op == BM_OP_DIV) b = bm_add(g, bm_unary(g, BM_OP_ABS, b), bm_scalar(g, 0.5f));
  bm_output_add(g, "y", bm_binary(g, c->op, a, b));
}

static void test_binary_broadcast(void) {
  static const bm_op ops[] = {BM_OP_ADD, BM_OP_SUB, BM_OP_MUL, BM_OP_DIV,
                              BM_OP_POW, BM_OP_MAX, BM_OP_MIN};
  for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
    bin_case c = {ops[i], 2, 2, {4, 1003}, {4, 1003}, BM_DTYPE_F32, BM_DTYPE_F32};
    run_case(bm_op_name(ops[i]), build_binary, &c, &F32);
  }
  const bin_case cases[] = {
      {BM_OP_ADD, 3, 1, {2, 3, 17}, {17}, BM_DTYPE_F32, BM_DTYPE_F32},         /* bias */
      {BM_OP_MUL, 3, 2, {2, 3, 17}, {3, 1}, BM_DTYPE_F32, BM_DTYPE_F32},       /* row scale */
      {BM_OP_SUB, 3, 3, {2, 1, 17}, {1, 3, 1}, BM_DTYPE_F32, BM_DTYPE_F32},    /* both */
      {BM_OP_ADD, 0, 2, {0}, {33, 5}, BM_DTYPE_F32, BM_DTYPE_F32},             /* scalar */
      {BM_OP_MAX, 2, 1, {33, 5}, {1}, BM_DTYPE_F32, BM_DTYPE_F32},             /* (1,) */
      {BM_OP_MUL, 4, 4, {2, 1, 3, 1}, {1, 5, 1, 7}, BM_DTYPE_F32, BM_DTYPE_F32},
      {BM_OP_ADD, 2, 2, {1, 1}, {1, 1}, BM_DTYPE_F32, BM_DTYPE_F32},
      {BM_OP_ADD, 3, 1, {2, 3, 17}, {17}, BM_DTYPE_F16, BM_DTYPE_F16},
      {BM_OP_MUL, 2, 2, {7, 33}, {7, 1}, BM_DTYPE_BF16, BM_DTYPE_BF16},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char name[64];
    snprintf(name, sizeof name, "broadcast case %zu", i);
    bool half = cases[i].ta == BM_DTYPE_F16 || cases[i].ta == BM_DTYPE_BF16;
    run_opts ro = {.tol = half ? (cases[i].ta == BM_DTYPE_F16 ? 2e-3 : 1e-2) : 2e-6};
    run_case(name, build_binary, &cases[i], &ro);
  }
}

typedef struct cast_case {
  bm_dtype from, to;
} cast_case;

static void build_cast(bm_graph *g, const void *arg) {
  const cast_case *c = arg;
  expect_op = BM_OP_CAST;
  int64_t shape[2] = {3, 37};
  bm_node *x = bm_input(g, "x", c->from, 2, shape);
  bm_node *y = bm_cast(g, x, c->to);
  bm_output_add(g, "y", y);
}

static void test_cast(void) {
  const cast_case cases[] = {
      {BM_DTYPE_F32, BM_DTYPE_F16}, {BM_DTYPE_F16, BM_DTYPE_F32}, {BM_DTYPE_F32, BM_DTYPE_BF16},
      {BM_DTYPE_BF16, BM_DTYPE_F32}, {BM_DTYPE_F32, BM_DTYPE_I32}, {BM_DTYPE_I32, BM_DTYPE_F32},
      {BM_DTYPE_I32, BM_DTYPE_I64}, {BM_DTYPE_I64, BM_DTYPE_I8},   {BM_DTYPE_F16, BM_DTYPE_BF16},
      {BM_DTYPE_I8, BM_DTYPE_F16},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char name[64];
    snprintf(name, sizeof name, "cast %s -> %s", bm_dtype_name(cases[i].from), bm_dtype_name(cases[i].to));
    run_case(name, build_cast, &cases[i], &(run_opts){.tol = 0});
  }
}

/* a (seq, 33) + b (33) and c (seq, 1): symbolic rows, bound below the max */
static void build_sym(bm_graph *g, const void *arg) {
  int s = bm_sym_declare(g, "seq", 40);
  int64_t sa[2] = {BM_SYM(s), 33}, sb[1] = {33}, sc[2] = {BM_SYM(s), 1};
  bm_node *a = bm_input(g, "a", BM_DTYPE_F32, 2, sa);
  bm_node *b = bm_input(g, "b", BM_DTYPE_F32, 1, sb);
  bm_node *c = bm_input(g, "c", BM_DTYPE_F32, 2, sc);
  bm_output_add(g, "y", bm_mul(g, bm_add(g, a, b), c));
}

/* two symbols: a (n, m) + b (m) */
static void build_sym2(bm_graph *g, const void *arg) {
  int n = bm_sym_declare(g, "n", 9), m = bm_sym_declare(g, "m", 50);
  int64_t sa[2] = {BM_SYM(n), BM_SYM(m)}, sb[1] = {BM_SYM(m)};
  bm_node *a = bm_input(g, "a", BM_DTYPE_F32, 2, sa);
  bm_node *b = bm_input(g, "b", BM_DTYPE_F32, 1, sb);
  bm_output_add(g, "y", bm_silu(g, bm_add(g, a, b)));
}

static void test_symbolic(void) {
  int64_t seq[1] = {17};
  run_case("sym (seq,33)", build_sym, NULL, &(run_opts){.syms = seq, .tol = 2e-6});
  int64_t seq1[1] = {1};
  run_case("sym seq=1", build_sym, NULL, &(run_opts){.syms = seq1, .tol = 2e-6});
  int64_t nm[2] = {5, 37};
  run_case("sym (n,m)", build_sym2, NULL, &(run_opts){.syms = nm, .tol = 2e-6});
}

/* silu(a) * b + c * 0.5 - chains that the fusion pass turns into one FUSED node */
static void build_chain(bm_graph *g, const void *arg) {
  int64_t sa[3] = {2, 17, 65}, sb[3] = {2, 1, 65}, sc[1] = {65};
  bm_node *a = bm_input(g, "a", BM_DTYPE_F32, 3, sa);
  bm_node *b = bm_input(g, "b", BM_DTYPE_F32, 3, sb);
  bm_node *c = bm_input(g, "c", BM_DTYPE_F32, 1, sc);
  bm_node *y = bm_add(g, bm_mul(g, bm_silu(g, a), b), bm_mul(g, c, bm_scalar(g, 0.5f)));
  y = bm_gelu_tanh(g, bm_div(g, y, bm_add(g, bm_unary(g, BM_OP_ABS, c), bm_scalar(g, 1.0f))));
  bm_output_add(g, "y", y);
}

static void test_fused_chain(void) { run_case("fused chain", build_chain, NULL, &F32); }


/* ------------------------------------------------------------------ movement */

typedef struct perm_case {
  int ndim;
  int64_t shape[4];
  int perm[4];
  bm_dtype t;
} perm_case;

static void build_permute(bm_graph *g, const void *arg) {
  const perm_case *c = arg;
  expect_op = BM_OP_PERMUTE;
  bm_node *x = bm_input(g, "x", c->t, c->ndim, c->shape);
  /* the copy must be a real kernel: add after it so it is not an output alias */
  bm_node *y = bm_permute(g, x, c->perm);
  bm_output_add(g, "y", y);
}

static void test_permute(void) {
  const perm_case cases[] = {
      {4, {2, 3, 4, 5}, {0, 2, 1, 3}, BM_DTYPE_F32},
      {4, {2, 3, 4, 5}, {3, 1, 0, 2}, BM_DTYPE_F32},
      {2, {17, 33}, {1, 0}, BM_DTYPE_F16},
      {3, {1, 7, 1003}, {2, 0, 1}, BM_DTYPE_BF16},
      {3, {3, 5, 7}, {1, 2, 0}, BM_DTYPE_I32},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char name[64];
    snprintf(name, sizeof name, "permute case %zu", i);
    run_case(name, build_permute, &cases[i], &(run_opts){.tol = 0});
  }
}

typedef struct slice_case {
  int ndim;
  int64_t shape[4];
  int axis;
  int64_t begin, end, step;
} slice_case;

static void build_slice(bm_graph *g, const void *arg) {
  const slice_case *c = arg;
  expect_op = BM_OP_SLICE;
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, c->ndim, c->shape);
  bm_output_add(g, "y", bm_slice(g, x, c->axis, c->begin, c->end, c->step));
}

static void test_slice(void) {
  const slice_case cases[] = {
      {3, {2, 17, 33}, 1, 1, 8, 2},
      {3, {2, 17, 33}, 2, 3, INT64_MAX, 3},
      {3, {2, 17, 33}, 2, 0, 16, 1},
      {2, {17, 1003}, 0, -5, INT64_MAX, 1},
      {1, {1000}, 0, 7, 999, 1},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char name[64];
    snprintf(name, sizeof name, "slice case %zu", i);
    run_case(name, build_slice, &cases[i], &(run_opts){.tol = 0});
  }
}

/* slice of a symbolic axis */
static void build_slice_sym(bm_graph *g, const void *arg) {
  int s = bm_sym_declare(g, "seq", 64);
  int64_t sh[3] = {2, BM_SYM(s), 9};
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 3, sh);
  bm_output_add(g, "y", bm_slice(g, x, 1, 2, INT64_MAX, 1));
}

typedef struct concat_case {
  int n, ndim, axis;
  int64_t shapes[3][4];
  bm_dtype t;
} concat_case;

static void build_concat(bm_graph *g, const void *arg) {
  const concat_case *c = arg;
  expect_op = BM_OP_CONCAT;
  bm_node *xs[3];
  for (int i = 0; i < c->n; i++) {
    char name[8];
    snprintf(name, sizeof name, "x%d", i);
    xs[i] = bm_input(g, name, c->t, c->ndim, c->shapes[i]);
  }
  bm_output_add(g, "y", bm_concat(g, c->n, xs, c->axis));
}

static void test_concat(void) {
  const concat_case cases[] = {
      {2, 2, 0, {{3, 33}, {5, 33}}, BM_DTYPE_F32},
      {3, 3, 1, {{2, 1, 7}, {2, 4, 7}, {2, 2, 7}}, BM_DTYPE_F32},
      {3, 3, 2, {{2, 3, 1}, {2, 3, 17}, {2, 3, 5}}, BM_DTYPE_F16},
      {2, 4, 2, {{1, 2, 300, 16}, {1, 2, 1, 16}}, BM_DTYPE_F32}, /* kv cache append */
      {2, 1, 0, {{20000}, {20001}}, BM_DTYPE_I32},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char name[64];
    snprintf(name, sizeof name, "concat case %zu", i);
    run_case(name, build_concat, &cases[i], &(run_opts){.tol = 0});
  }
}

typedef struct gather_case {
  int tdim, idim;
  int64_t tshape[3], ishape[3];
  bm_dtype tt, it;
} gather_case;

static void build_gather(bm_graph *g, const void *arg) {
  const gather_case *c = arg;
  expect_op = BM_OP_GATHER;
  int64_t tn = 1;
  for (int d = 0; d < c->tdim; d++) tn *= c->tshape[d];
  float *data = malloc(sizeof(float) * (size_t)tn);
  bm_test_fill_uniform(data, tn, 77, -1, 1);
  /* the table as a weight in its dtype */
  size_t nb = bm_dtype_nbytes(c->tt, tn);
  void *raw = calloc(1, nb);
  for (int64_t i = 0; i < tn; i++) bm_store_f32(raw, c->tt, i, data[i]);
  bm_node *t = bm_const(g, c->tt, c->tdim, c->tshape, raw);
  free(raw);
  free(data);
  bm_node *idx = bm_input(g, "idx", c->it, c->idim, c->ishape);
  bm_output_add(g, "y", bm_gather(g, t, idx));
}

static void test_gather(void) {
  const gather_case cases[] = {
      {2, 2, {50, 17}, {2, 3}, BM_DTYPE_F32, BM_DTYPE_I32},
      {2, 1, {4, 1003}, {7}, BM_DTYPE_F16, BM_DTYPE_I64},
      {3, 2, {5, 3, 4}, {1, 1}, BM_DTYPE_BF16, BM_DTYPE_I32},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char name[64];
    snprintf(name, sizeof name, "gather case %zu", i);
    run_case(name, build_gather, &cases[i], &(run_opts){.tol = 0});
  }
}

typedef struct pad_case {
  int ndim;
  int64_t shape[4];
  int64_t pads[8];
  float value;
  bm_dtype t;
} pad_case;

static void build_pad(bm_graph *g, const void *arg) {
  const pad_case *c = arg;
  expect_op = BM_OP_PAD;
  bm_node *x = bm_input(g, "x", c->t, c->ndim, c->shape);
  bm_output_add(g, "y", bm_pad(g, x, c->pads, c->value));
}

static void test_pad_upsample(void) {
  const pad_case cases[] = {
      {3, {2, 3, 5}, {0, 1, 2, 0, 1, 3}, 0.5f, BM_DTYPE_F32},
      {4, {1, 3, 7, 9}, {0, 0, 0, 0, 1, 1, 1, 1}, 0.0f, BM_DTYPE_F32},
      {2, {17, 33}, {0, 0, 0, 40}, -2.0f, BM_DTYPE_F16},
      {1, {5}, {3, 0}, 7.0f, BM_DTYPE_I32},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char name[64];
    snprintf(name, sizeof name, "pad case %zu", i);
    run_case(name, build_pad, &cases[i], &(run_opts){.tol = 0});
  }
}

static void build_upsample(bm_graph *g, const void *arg) {
  const int *scale = arg;
  expect_op = BM_OP_UPSAMPLE;
  int64_t sh[4] = {2, 3, 5, 7};
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 4, sh);
  bm_output_add(g, "y", bm_upsample_nearest(g, x, *scale));
}

static void test_upsample(void) {
  int s2 = 2, s3 = 3;
  run_case("upsample x2", build_upsample, &s2, &(run_opts){.tol = 0});
  run_case("upsample x3", build_upsample, &s3, &(run_opts){.tol = 0});
}

typedef struct dq_case {
  bm_dtype qt;
  int64_t n, k, groups;
  bool matmul_input; /* dequant feeding an add so it is not fused away */
} dq_case;

static void build_dequant(bm_graph *g, const void *arg) {
  const dq_case *c = arg;
  expect_op = BM_OP_DEQUANT;
  int64_t qs[2] = {c->n, c->k}, ss[2] = {c->n, c->groups};
  int64_t cnt = c->n * c->k;
  /* weights (not constants, which would be folded): data lives in the module arena */
  size_t qbytes = bm_dtype_nbytes(c->qt, cnt), sbytes = sizeof(float) * (size_t)(c->n * c->groups);
  void *qd = bm_arena_alloc(g->module->arena, qbytes);
  uint64_t st = 5;
  for (int64_t i = 0; i < cnt; i++) {
    int v = (int)(bm_test_rand_u64(&st) % (c->qt == BM_DTYPE_I4 ? 16 : 256)) - (c->qt == BM_DTYPE_I4 ? 8 : 128);
    bm_store_f32(qd, c->qt, i, (float)v);
  }
  float *sd = bm_arena_alloc(g->module->arena, sbytes);
  bm_test_fill_uniform(sd, c->n * c->groups, 9, 0.01f, 0.1f);
  bm_node *q = bm_weight(g, "q", c->qt, 2, qs, qd, qbytes);
  bm_node *s = bm_weight(g, "scale", BM_DTYPE_F32, 2, ss, sd, sbytes);
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 2, qs);
  bm_output_add(g, "y", bm_add(g, bm_dequant(g, q, s), x));
}

static void test_dequant(void) {
  const dq_case cases[] = {
      {BM_DTYPE_I8, 5, 64, 1},  {BM_DTYPE_I8, 3, 96, 3},  {BM_DTYPE_I4, 5, 64, 1},
      {BM_DTYPE_I4, 3, 96, 4},  {BM_DTYPE_I4, 3, 33, 1},  {BM_DTYPE_I4, 2, 10, 5},
      {BM_DTYPE_I8, 7, 35, 5},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char name[64];
    snprintf(name, sizeof name, "dequant %s case %zu", bm_dtype_name(cases[i].qt), i);
    run_case(name, build_dequant, &cases[i], &(run_opts){.tol = 2e-6, .fused_only = false});
  }
}

/* ------------------------------------------------------------------ reductions */

typedef struct red_case {
  bm_op op;
  int ndim;
  int64_t shape[4];
  uint32_t axes;
  bool keepdim;
  bm_dtype t;
} red_case;

static void build_reduce(bm_graph *g, const void *arg) {
  const red_case *c = arg;
  expect_op = c->op;
  bm_node *x = bm_input(g, "x", c->t, c->ndim, c->shape);
  bm_output_add(g, "y", bm_reduce(g, c->op, x, c->axes, c->keepdim));
}

static void test_reduce(void) {
  static const bm_op ops[] = {BM_OP_SUM, BM_OP_MEAN, BM_OP_REDUCE_MAX};
  const red_case shapes[] = {
      {0, 3, {2, 3, 1037}, 1u << 2, false, BM_DTYPE_F32},    /* last axis */
      {0, 3, {2, 3, 17}, 1u << 2, true, BM_DTYPE_F32},
      {0, 3, {2, 33, 17}, 1u << 1, false, BM_DTYPE_F32},     /* middle */
      {0, 3, {33, 2, 17}, 1u << 0, true, BM_DTYPE_F32},      /* first */
      {0, 3, {5, 6, 7}, (1u << 1) | (1u << 2), false, BM_DTYPE_F32},
      {0, 3, {5, 6, 7}, (1u << 0) | (1u << 2), false, BM_DTYPE_F32}, /* general */
      {0, 4, {2, 1, 3, 5}, (1u << 1) | (1u << 3), true, BM_DTYPE_F32},
      {0, 2, {3, 17}, 3u, false, BM_DTYPE_F32},              /* everything */
      {0, 2, {7, 300}, 1u << 1, false, BM_DTYPE_F16},
      {0, 3, {1, 9, 33}, 1u << 1, false, BM_DTYPE_BF16},
  };
  for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++)
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
      red_case c = shapes[i];
      c.op = ops[o];
      char name[64];
      snprintf(name, sizeof name, "%s case %zu", bm_op_name(c.op), i);
      double tol = c.t == BM_DTYPE_F16 ? 2e-3 : c.t == BM_DTYPE_BF16 ? 1e-2 : 1e-5;
      run_case(name, build_reduce, &c, &(run_opts){.tol = tol});
    }
}

typedef struct sm_case {
  int ndim;
  int64_t shape[4];
  int axis;
  bm_dtype t;
} sm_case;

static void build_softmax(bm_graph *g, const void *arg) {
  const sm_case *c = arg;
  expect_op = BM_OP_SOFTMAX;
  bm_node *x = bm_input(g, "x", c->t, c->ndim, c->shape);
  x = bm_mul(g, x, bm_scalar(g, 8.0f)); /* peaky distributions */
  bm_output_add(g, "y", bm_softmax(g, x, c->axis));
}

static void test_softmax(void) {
  const sm_case cases[] = {
      {2, {3, 1037}, 1, BM_DTYPE_F32}, {3, {2, 5, 17}, 2, BM_DTYPE_F32},
      {3, {2, 5, 17}, 1, BM_DTYPE_F32}, {3, {7, 5, 3}, 0, BM_DTYPE_F32},
      {2, {4, 1}, 1, BM_DTYPE_F32},    {2, {9, 65}, 1, BM_DTYPE_F16},
      {3, {2, 33, 1}, 1, BM_DTYPE_F32},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char name[64];
    snprintf(name, sizeof name, "softmax case %zu", i);
    run_case(name, build_softmax, &cases[i],
             &(run_opts){.tol = cases[i].t == BM_DTYPE_F16 ? 2e-3 : 2e-6});
  }
}

/* softmax over a symbolic last axis bound below its max */
static void build_softmax_sym(bm_graph *g, const void *arg) {
  int s = bm_sym_declare(g, "seq", 100);
  int64_t sh[3] = {2, BM_SYM(s), BM_SYM(s)};
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 3, sh);
  bm_output_add(g, "y", bm_softmax(g, x, 2));
  bm_output_add(g, "m", bm_mean(g, x, 1, false));
}

static void test_reduce_symbolic(void) {
  int64_t seq[1] = {37};
  run_case("softmax/mean (2, seq, seq)", build_softmax_sym, NULL, &(run_opts){.syms = seq, .tol = 2e-6});
  int64_t one[1] = {1};
  run_case("softmax/mean seq=1", build_softmax_sym, NULL, &(run_opts){.syms = one, .tol = 2e-6});
  int64_t s17[1] = {17};
  run_case("slice of seq", build_slice_sym, NULL, &(run_opts){.syms = s17, .tol = 0});
}

/* ------------------------------------------------------------------ norms */

typedef struct norm_case {
  bm_op op;
  int ndim;
  int64_t shape[4];
  int params;      /* 0: none, 1: w, 2: w and b */
  int groups;
  int epilogue;    /* 0: none, 1: silu, 2: + residual input, 3: * (D) vector and gelu */
  bm_dtype t;
} norm_case;

static void build_norm(bm_graph *g, const void *arg) {
  const norm_case *c = arg;
  expect_op = c->op;
  bm_node *x = bm_input(g, "x", c->t, c->ndim, c->shape);
  int64_t pd = c->op == BM_OP_GROUP_NORM ? c->shape[1] : c->shape[c->ndim - 1];
  bm_node *w = NULL, *b = NULL;
  if (c->params >= 1) w = bm_input(g, "w", c->t, 1, &pd);
  if (c->params >= 2) b = bm_input(g, "b", c->t, 1, &pd);
  bm_node *y;
  if (c->op == BM_OP_LAYER_NORM)
    y = bm_layer_norm(g, x, w, b, 1e-5f);
  else if (c->op == BM_OP_RMS_NORM)
    y = bm_rms_norm(g, x, w, 1e-6f);
  else
    y = bm_group_norm(g, x, w, b, c->groups, 1e-5f);
  if (c->epilogue == 1) y = bm_silu(g, y);
  if (c->epilogue == 2) y = bm_add(g, y, bm_input(g, "r", c->t, c->ndim, c->shape));
  if (c->epilogue == 3) {
    int64_t last = c->shape[c->ndim - 1];
    y = bm_gelu(g, bm_mul(g, y, bm_input(g, "s", c->t, 1, &last)));
  }
  bm_output_add(g, "y", y);
}

static void test_norms(void) {
  const norm_case cases[] = {
      {BM_OP_LAYER_NORM, 3, {2, 3, 1037}, 2, 0, 0, BM_DTYPE_F32},
      {BM_OP_LAYER_NORM, 2, {5, 17}, 0, 0, 0, BM_DTYPE_F32},
      {BM_OP_LAYER_NORM, 2, {5, 33}, 1, 0, 2, BM_DTYPE_F32},
      {BM_OP_LAYER_NORM, 3, {2, 7, 64}, 2, 0, 3, BM_DTYPE_F16},
      {BM_OP_RMS_NORM, 3, {2, 3, 1037}, 1, 0, 0, BM_DTYPE_F32},
      {BM_OP_RMS_NORM, 2, {1, 1}, 0, 0, 0, BM_DTYPE_F32},
      {BM_OP_RMS_NORM, 2, {9, 40}, 1, 0, 2, BM_DTYPE_BF16},
      {BM_OP_RMS_NORM, 3, {2, 3, 17}, 1, 0, 3, BM_DTYPE_F32},
      {BM_OP_GROUP_NORM, 4, {2, 6, 5, 7}, 2, 3, 0, BM_DTYPE_F32},
      {BM_OP_GROUP_NORM, 4, {1, 8, 9, 17}, 2, 4, 1, BM_DTYPE_F32}, /* GroupNorm + SiLU */
      {BM_OP_GROUP_NORM, 3, {2, 4, 33}, 0, 2, 0, BM_DTYPE_F32},
      {BM_OP_GROUP_NORM, 2, {3, 6}, 2, 3, 1, BM_DTYPE_F32},
      {BM_OP_GROUP_NORM, 4, {1, 4, 3, 5}, 2, 2, 2, BM_DTYPE_F32},
      {BM_OP_GROUP_NORM, 4, {2, 8, 4, 4}, 2, 2, 1, BM_DTYPE_F16},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char name[64];
    snprintf(name, sizeof name, "%s case %zu", bm_op_name(cases[i].op), i);
    double tol = cases[i].t == BM_DTYPE_F16 ? 2e-3 : cases[i].t == BM_DTYPE_BF16 ? 1e-2 : 1e-5;
    run_case(name, build_norm, &cases[i], &(run_opts){.tol = tol});
  }
}

/* layer norm over a symbolic number of rows */
static void build_norm_sym(bm_graph *g, const void *arg) {
  int s = bm_sym_declare(g, "seq", 50);
  int64_t sh[3] = {1, BM_SYM(s), 48}, d = 48;
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 3, sh);
  bm_node *w = bm_input(g, "w", BM_DTYPE_F32, 1, &d);
  bm_output_add(g, "y", bm_add(g, bm_rms_norm(g, x, w, 1e-6f), x));
}

static void test_norm_symbolic(void) {
  int64_t seq[1] = {13};
  run_case("rms_norm (1, seq, 48) + x", build_norm_sym, NULL, &(run_opts){.syms = seq, .tol = 1e-5});
}

/* ------------------------------------------------------------------ rope */

typedef struct rope_case {
  int mode;
  int64_t b, s, h, d, half;
  bool pos_1d, pos_i64;
  bm_dtype t;
} rope_case;

static void build_rope(bm_graph *g, const void *arg) {
  const rope_case *c = arg;
  expect_op = BM_OP_ROPE;
  int64_t xs[4] = {c->b, c->s, c->h, c->d}, ps[2] = {c->b, c->s};
  bm_node *x = bm_input(g, "x", c->t, 4, xs);
  bm_node *pos = c->pos_1d ? bm_input(g, "pos", c->pos_i64 ? BM_DTYPE_I64 : BM_DTYPE_I32, 1, &c->s)
                           : bm_input(g, "pos", c->pos_i64 ? BM_DTYPE_I64 : BM_DTYPE_I32, 2, ps);
  float fr[64];
  for (int i = 0; i < c->half; i++) fr[i] = powf(10000.0f, -2.0f * (float)i / (float)(2 * c->half));
  bm_node *freqs = bm_const(g, BM_DTYPE_F32, 1, &c->half, fr);
  bm_output_add(g, "y", bm_rope(g, x, pos, freqs, c->mode));
}

static void test_rope(void) {
  const rope_case cases[] = {
      {0, 2, 5, 3, 8, 4, false, false, BM_DTYPE_F32},
      {1, 2, 5, 3, 8, 4, false, true, BM_DTYPE_F32},
      {0, 1, 7, 2, 64, 16, true, false, BM_DTYPE_F32},  /* partial rotary */
      {1, 1, 7, 2, 10, 3, true, true, BM_DTYPE_F32},
      {0, 2, 3, 4, 128, 64, false, false, BM_DTYPE_F16},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char name[64];
    snprintf(name, sizeof name, "rope case %zu", i);
    run_case(name, build_rope, &cases[i],
             &(run_opts){.tol = cases[i].t == BM_DTYPE_F16 ? 2e-3 : 2e-6});
  }
}


/* ------------------------------------------------------------------ other targets and exact inputs */

/* Compiles g for `cpu` (NULL = host), runs it on inputs and returns output 0
 * as f32 in *out (malloc'd, *n elements). Optionally also the interpreter's
 * result (computed before compiling) in *ref. */
static bm_status compile_run(bm_graph *g, const char *cpu, const bm_tensor *inputs, float **out,
                             float **ref, int64_t *n) {
  *out = NULL;
  if (ref) *ref = NULL;
  bm_tensor rt = {0};
  if (ref) {
    BM_RETURN_IF_ERROR(bm_interp_run(g, inputs, &rt));
    int64_t cnt = bm_tensor_numel(&rt);
    *ref = malloc(sizeof(float) * (size_t)(cnt ? cnt : 1));
    for (int64_t i = 0; i < cnt; i++) (*ref)[i] = bm_load_f32(rt.data, rt.dtype, i);
    bm_tensor_free(&rt);
  }
  static int counter;
  char path[512];
  snprintf(path, sizeof path, "%s/target_%d.bmpk", bm_test_tmpdir(), counter++);
  bm_compile_options co;
  bm_compile_options_init(&co);
  co.target.cpu = cpu;
  const char *fname = g->name;
  BM_RETURN_IF_ERROR(bm_compile_module(g->module, &co, path));
  bm_package *pkg = NULL;
  bm_session *ses = NULL;
  int f;
  bm_status s = bm_package_open(path, NULL, &pkg);
  if (!s) s = bm_package_find_function(pkg, fname, &f);
  if (!s) s = bm_session_create(pkg, &(bm_session_options){.threads = 2}, &ses);
  for (int i = 0; !s && i < g->ninputs; i++)
    s = bm_session_set_input(ses, f, i, inputs[i].data, inputs[i].dtype, inputs[i].ndim, inputs[i].shape);
  if (!s) s = bm_session_run(ses, f);
  const void *data;
  bm_tensor_info info;
  if (!s) s = bm_session_get_output(ses, f, 0, &data, &info);
  if (!s) {
    int64_t cnt = 1;
    for (int d = 0; d < info.ndim; d++) cnt *= info.shape[d];
    *n = cnt;
    *out = malloc(sizeof(float) * (size_t)(cnt ? cnt : 1));
    for (int64_t i = 0; i < cnt; i++) (*out)[i] = bm_load_f32(data, info.dtype, i);
  }
  bm_session_destroy(ses);
  bm_package_close(pkg);
  return s;
}

/* x (n) -> op(x), with x given exactly */
static void math_accuracy(bm_op op, const float *xs, int64_t n, double max_rel, double abs_floor) {
  bm_module *m = bm_module_create("t");
  bm_graph *g = bm_graph_create(m, "main");
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 1, &n);
  bm_output_add(g, "y", bm_unary(g, op, x));
  bm_tensor in;
  CHECK_OK(bm_tensor_alloc(&in, BM_DTYPE_F32, 1, &n));
  memcpy(in.data, xs, sizeof(float) * (size_t)n);
  float *out = NULL;
  int64_t cnt = 0;
  CHECK_OK(compile_run(g, NULL, &in, &out, NULL, &cnt));
  int bad = 0;
  for (int64_t i = 0; out && i < cnt && bad < 5; i++) {
    float want = bm_ref_unary_f32(op, xs[i]);
    float got = out[i];
    bool ok;
    if (isnan(want))
      ok = isnan(got);
    else if (isinf(want))
      ok = got == want;
    else
      ok = fabs((double)got - want) <= max_rel * fabs(want) + abs_floor;
    if (!ok) {
      fprintf(stderr, "%s(%.9g) = %.9g, libm %.9g\n", bm_op_name(op), xs[i], got, want);
      bad++;
    }
  }
  CHECK_MSG(bad == 0, "%s: %d values out of tolerance", bm_op_name(op), bad);
  free(out);
  bm_tensor_free(&in);
  bm_module_destroy(m);
}

static void test_math_accuracy(void) {
  enum { N = 4099 };
  static float xs[N];
  for (int i = 0; i < N - 7; i++) xs[i] = -110.0f + 220.0f * (float)i / (float)(N - 8);
  const float special[7] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 1e-30f, -1e-30f};
  memcpy(xs + N - 7, special, sizeof special);
  math_accuracy(BM_OP_EXP, xs, N, 4e-7, 1e-44);
  math_accuracy(BM_OP_SIGMOID, xs, N, 4e-7, 1e-44);
  math_accuracy(BM_OP_SILU, xs, N, 4e-7, 1e-40);
  math_accuracy(BM_OP_TANH, xs, N, 3e-7, 0);
  math_accuracy(BM_OP_GELU_TANH, xs, N, 1e-6, 1e-30);
  static float small[N]; /* tanh / erf / gelu around the origin, relative */
  for (int i = 0; i < N - 7; i++) small[i] = -6.0f + 12.0f * (float)i / (float)(N - 8);
  memcpy(small + N - 7, special, sizeof special);
  math_accuracy(BM_OP_TANH, small, N, 3e-7, 0);
  math_accuracy(BM_OP_ERF, small, N, 1e-6, 1e-30);
  /* gelu's negative tail, 0.5 x (1 + erf(x / sqrt 2)), cancels in the reference
   * formulation itself (as in PyTorch): 1 + erf keeps only the absolute accuracy
   * of f32 erf near -1 (one ulp, 6e-8), so the tail is compared in absolute terms:
   * 0.5 * |x| (<= 6) * 6e-8 = 1.8e-7 */
  math_accuracy(BM_OP_GELU, small, N, 1e-6, 1.8e-7);
  math_accuracy(BM_OP_QUICK_GELU, small, N, 1e-6, 1e-30);
  static float pos[N]; /* log over many binades, subnormals included */
  for (int i = 0; i < N - 7; i++) pos[i] = ldexpf(1.0f + (float)(i % 97) / 97.0f, (i % 300) - 149);
  memcpy(pos + N - 7, special, sizeof special);
  pos[N - 1] = -1.0f;
  math_accuracy(BM_OP_LOG, pos, N, 3e-7, 0);
}

/* a graph that exercises f16/bf16 conversion, fused math and reductions,
 * compiled for a baseline x86-64 (no AVX, no F16C: integer f16 code, 4 lanes)
 * and for x86-64-v3 (8 lanes), run on this host */
static void build_mixed(bm_graph *g) {
  int64_t sh[2] = {5, 67};
  bm_node *a = bm_input(g, "a", BM_DTYPE_F16, 2, sh);
  bm_node *b = bm_input(g, "b", BM_DTYPE_BF16, 2, sh);
  bm_node *y = bm_add(g, bm_cast(g, a, BM_DTYPE_F32), bm_gelu(g, bm_cast(g, b, BM_DTYPE_F32)));
  y = bm_softmax(g, bm_layer_norm(g, y, NULL, NULL, 1e-5f), 1);
  bm_output_add(g, "y", bm_cast(g, bm_unary(g, BM_OP_EXP, y), BM_DTYPE_F16));
}

static void test_targets(void) {
  const char *cpus[] = {"x86-64", "x86-64-v3", "x86-64-v4", NULL};
  for (int c = 0; c < 4; c++) {
    bm_module *m = bm_module_create("t");
    bm_graph *g = bm_graph_create(m, "main");
    build_mixed(g);
    bm_tensor in[2] = {0};
    CHECK_OK(bm_opcheck_random_inputs(g, NULL, 99, in));
    /* values of every magnitude and sign, plus f16 subnormals */
    for (int64_t i = 0; i < 5 * 67; i++)
      bm_store_f32(in[0].data, BM_DTYPE_F16, i, ldexpf(bm_load_f32(in[0].data, BM_DTYPE_F16, i), (int)(i % 40) - 25));
    float *out = NULL, *ref = NULL;
    int64_t n = 0;
    bm_status s = compile_run(g, cpus[c], in, &out, &ref, &n);
    if (s && bm_status_code(s) == BM_ERR_INCOMPATIBLE) { /* host lacks the ISA */
      bm_status_free(s);
    } else {
      CHECK_OK(s);
      if (out && ref) {
        double e = bm_test_rel_err(out, ref, n);
        CHECK_MSG(e <= 2e-3, "cpu %s: rel err %g", cpus[c] ? cpus[c] : "host", e);
      }
    }
    free(out);
    free(ref);
    bm_tensor_free(&in[0]);
    bm_tensor_free(&in[1]);
    bm_module_destroy(m);
  }
}

/* f16 <-> f32 conversion of every f16 bit pattern with the integer code path */
static void test_f16_all_patterns(void) {
  for (int pass = 0; pass < 2; pass++) {
    const char *cpu = pass ? "x86-64" : NULL;
    int64_t n = 65536;
    bm_module *m = bm_module_create("t");
    bm_graph *g = bm_graph_create(m, "main");
    bm_node *x = bm_input(g, "x", BM_DTYPE_F16, 1, &n);
    /* f16 -> f32 -> f16 round trip, and f32 -> bf16 through an f32 product */
    bm_output_add(g, "y", bm_cast(g, bm_mul(g, bm_cast(g, x, BM_DTYPE_F32), bm_scalar(g, 1.0f / 3.0f)), BM_DTYPE_F16));
    bm_tensor in;
    CHECK_OK(bm_tensor_alloc(&in, BM_DTYPE_F16, 1, &n));
    for (int i = 0; i < 65536; i++) ((uint16_t *)in.data)[i] = (uint16_t)i;
    float *out = NULL, *ref = NULL;
    int64_t cnt = 0;
    CHECK_OK(compile_run(g, cpu, &in, &out, &ref, &cnt));
    int bad = 0;
    for (int64_t i = 0; out && ref && i < cnt; i++) {
      bool same = (isnan(out[i]) && isnan(ref[i])) || memcmp(&out[i], &ref[i], 4) == 0;
      if (!same && bad++ < 3)
        fprintf(stderr, "f16 pattern 0x%04llx: got %.9g, want %.9g\n", (long long)i, out[i], ref[i]);
    }
    CHECK_MSG(bad == 0, "cpu %s: %d f16 patterns differ", cpu ? cpu : "host", bad);
    free(out);
    free(ref);
    bm_tensor_free(&in);
    bm_module_destroy(m);
  }
}

/* ------------------------------------------------------------------ backend plumbing */

static void test_backend_plumbing(void) {
  const bm_backend *be = NULL;
  CHECK_OK(bm_backend_find("cpu", &be));
  CHECK(be && strcmp(be->name, "cpu") == 0);
  CHECK_OK(bm_backend_find("null", &be));
  CHECK(be && be->supports && !be->supports(NULL));
  bm_module *m = bm_module_create("t");
  bm_object obj = {0};
  CHECK_ERR(be->compile(m, NULL, &obj), BM_ERR_UNSUPPORTED, "unimplemented");
  CHECK_ERR(bm_backend_find("tpu", &be), BM_ERR_NOT_FOUND, "tpu");
  /* cuda exists when NVRTC can be loaded; otherwise it says why it is unavailable */
  bm_status cs = bm_backend_find("cuda", &be);
  CHECK(cs == NULL || (bm_status_code(cs) == BM_ERR_UNSUPPORTED && strstr(bm_status_message(cs), "cuda")));
  bm_status_free(cs);
  CHECK_ERR(bm_backend_find("metal", &be), BM_ERR_UNSUPPORTED, "metal");

  /* a module for several targets: required features and determinism */
  bm_graph *g = bm_graph_create(m, "main");
  int64_t sh[1] = {100};
  bm_output_add(g, "y", bm_silu(g, bm_input(g, "x", BM_DTYPE_F32, 1, sh)));
  bm_pass_options po = {0};
  CHECK_OK(bm_pipeline_run(g, &po));
  CHECK_OK(bm_backend_find("cpu", &be));
  bm_target t = {.backend = "cpu", .cpu = "x86-64-v3", .opt_level = 3};
  bm_object a = {0}, b = {0};
  CHECK_OK(be->compile(m, &t, &a));
  CHECK_OK(be->compile(m, &t, &b));
  CHECK(a.size > 0 && a.size == b.size && memcmp(a.data, b.data, a.size) == 0);
  CHECK(strcmp(a.format, "elf64-x86_64-rel") == 0);
  CHECK_MSG(strcmp(a.required, "avx,avx2,fma,f16c,bmi2") == 0, "required '%s'", a.required);
  CHECK(strcmp(a.cpu, "x86-64-v3") == 0);
  CHECK(strncmp(a.triple, "x86_64", 6) == 0);
  bm_object_free(&a);
  bm_object_free(&b);
  t.cpu = "x86-64-v4";
  CHECK_OK(be->compile(m, &t, &a));
  CHECK_MSG(strstr(a.required, "avx512f") && strstr(a.required, "avx512bw"), "required '%s'", a.required);
  bm_object_free(&a);
  t.cpu = "x86-64";
  CHECK_OK(be->compile(m, &t, &a));
  CHECK_MSG(a.required[0] == 0, "required '%s'", a.required);
  bm_object_free(&a);
  t.cpu = "x86-64-v3";
  t.features = "-fma";
  CHECK_OK(be->compile(m, &t, &a));
  CHECK_MSG(strcmp(a.required, "avx,avx2,f16c,bmi2") == 0, "required '%s'", a.required);
  bm_object_free(&a);
  t.features = NULL;
  t.cpu = "pentium-9000";
  CHECK_ERR(be->compile(m, &t, &a), BM_ERR_INVALID_ARGUMENT, "pentium-9000");
  t.cpu = NULL;
  t.triple = "aarch64-unknown-linux-gnu";
  CHECK_ERR(be->compile(m, &t, &a), BM_ERR_UNSUPPORTED, "aarch64");
  CHECK(a.data == NULL);
  bm_module_destroy(m);
}

/* ------------------------------------------------------------------ main */

int main(void) {
  RUN(test_backend_plumbing);
  RUN(test_math_accuracy);
  RUN(test_f16_all_patterns);
  RUN(test_targets);
  RUN(test_unary_all);
  RUN(test_unary_shapes_dtypes);
  RUN(test_binary_broadcast);
  RUN(test_cast);
  RUN(test_symbolic);
  RUN(test_fused_chain);
  RUN(test_permute);
  RUN(test_slice);
  RUN(test_concat);
  RUN(test_gather);
  RUN(test_pad_upsample);
  RUN(test_upsample);
  RUN(test_dequant);
  RUN(test_reduce);
  RUN(test_softmax);
  RUN(test_reduce_symbolic);
  RUN(test_norms);
  RUN(test_norm_symbolic);
  RUN(test_rope);
  return bm_test_finish();
}
