/* test_fuse_glu.c - the gated-MLP half of fuse_horizontal: act(x Wg^T) *
 * (x Wu^T) -> MATMUL_GLU (x, Wg, Wu) at <= 4 rows where the backend
 * supports it; the op's shape checks and reference (the interpreter before
 * and after the pass), and where the pass must not fire. */
#include <stdlib.h>
#include <string.h>

#include "../passes/passes.h"
#include "opcheck.h"
#include "testutil.h"

enum { K = 48, N = 40 };

static float wg[N * K], wu[N * K];

static void fill(float *w, int n, uint64_t seed) {
  uint64_t st = seed;
  for (int i = 0; i < n; i++) w[i] = bm_test_rand_uniform(&st, -0.3f, 0.3f);
}

static int yes(const bm_node *n) { return n != NULL; }
static int no_glu(const bm_node *n) { return n->op != BM_OP_MATMUL_GLU; }

static float gamma_[K];
static bool prenorm; /* mlp() with an rms_norm before the projections */

/* x (m, K) with m <= rows -> h = act(x Wg^T) * (x Wu^T) (gate first or second) */
static bm_graph *mlp(bm_module *m, int64_t rows, bm_op act, bool up_first) {
  bm_graph *g = bm_graph_create(m, "main");
  int64_t xs[2] = {BM_SYM(bm_sym_declare(g, "m", rows)), K}, ws[2] = {N, K};
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 2, xs);
  if (prenorm) x = bm_rms_norm(g, x, bm_weight(g, "norm", BM_DTYPE_F32, 1, (int64_t[]){K}, gamma_, sizeof gamma_), 1e-5f);
  bm_node *gt = bm_linear(g, x, bm_weight(g, "gate", BM_DTYPE_F32, 2, ws, wg, sizeof wg), NULL);
  bm_node *up = bm_linear(g, x, bm_weight(g, "up", BM_DTYPE_F32, 2, ws, wu, sizeof wu), NULL);
  bm_node *a = bm_unary(g, act, gt);
  bm_output_add(g, "h", up_first ? bm_mul(g, up, a) : bm_mul(g, a, up));
  return g;
}

static int count(const bm_graph *g, bm_op op) {
  int c = 0;
  for (int i = 0; i < g->nnodes; i++) c += g->nodes[i]->op == op;
  return c;
}

/* Runs the pass with `supports`; returns the max abs difference of the
 * interpreter's output before and after (and the output's max abs). */
static double run_pass(bm_graph *g, int (*supports)(const bm_node *), int64_t m_val, double *refmax) {
  int64_t syms[BM_MAX_SYMS] = {m_val};
  bm_tensor in[1], before[2], after[2]; /* at most 2 outputs */
  memset(before, 0, sizeof before), memset(after, 0, sizeof after);
  CHECK_OK(bm_opcheck_random_inputs(g, syms, 5, in));
  CHECK_OK(bm_interp_run(g, in, before));
  bm_pass_options po = {.verify_each = true, .supports = supports};
  CHECK_OK(bm_pass_fuse_horizontal(g, &po));
  CHECK_OK(bm_graph_verify(g));
  CHECK_OK(bm_interp_run(g, in, after));
  double d = 0, mx = 0;
  int64_t n = bm_tensor_numel(before);
  for (int64_t i = 0; i < n && after[0].data; i++) {
    double r = bm_load_f32(before[0].data, before[0].dtype, i), v = bm_load_f32(after[0].data, after[0].dtype, i);
    if (r < 0 ? -r > mx : r > mx) mx = r < 0 ? -r : r;
    if ((v - r < 0 ? r - v : v - r) > d) d = v - r < 0 ? r - v : v - r;
  }
  *refmax = mx;
  bm_tensor_free(&in[0]);
  for (int i = 0; i < 2; i++) bm_tensor_free(&before[i]), bm_tensor_free(&after[i]);
  return d;
}

static void test_glu_fused(void) {
  bm_op acts[2] = {BM_OP_SILU, BM_OP_GELU_TANH};
  for (int a = 0; a < 2; a++)
    for (int order = 0; order < 2; order++) {
      bm_module *m = bm_module_create("t");
      bm_graph *g = mlp(m, 4, acts[a], order);
      double mx = 0, d = run_pass(g, yes, 3, &mx);
      CHECK_MSG(count(g, BM_OP_MATMUL_GLU) == 1 && count(g, BM_OP_MATMUL) == 0 && count(g, BM_OP_MUL) == 0,
                "act %d order %d: %d matmul_glu, %d matmul", a, order, count(g, BM_OP_MATMUL_GLU),
                count(g, BM_OP_MATMUL));
      CHECK_MSG(mx > 0.01 && d <= 1e-5 * mx, "act %d order %d: |after - before| %g, max|ref| %g", a, order, d, mx);
      for (int i = 0; i < g->nnodes; i++)
        if (g->nodes[i]->op == BM_OP_MATMUL_GLU) CHECK(g->nodes[i]->a.act == (int32_t)acts[a]);
      bm_module_destroy(m);
    }
}

/* more than 4 rows (prefill, batched decode), no capability hook, a backend without the
 * op, BM_NO_GLU=1, an activation that is not silu/gelu_tanh: left alone */
static void test_glu_not_fused(void) {
  struct { int64_t rows; bm_op act; int (*sup)(const bm_node *); const char *env; } t[] = {
      {5, BM_OP_SILU, yes, NULL},         {4, BM_OP_SILU, NULL, NULL},   {1, BM_OP_SILU, no_glu, NULL},
      {1, BM_OP_SILU, yes, "BM_NO_GLU"}, {4, BM_OP_GELU, yes, NULL},   {4, BM_OP_SILU, yes, "BM_NO_HFUSE"}};
  for (int i = 0; i < (int)(sizeof t / sizeof t[0]); i++) {
    if (t[i].env) setenv(t[i].env, "1", 1);
    bm_module *m = bm_module_create("t");
    bm_graph *g = mlp(m, t[i].rows, t[i].act, false);
    double mx = 0, d = run_pass(g, t[i].sup, 1, &mx);
    CHECK_MSG(count(g, BM_OP_MATMUL_GLU) == 0 && count(g, BM_OP_MATMUL) == 2, "case %d: fused", i);
    CHECK(d == 0);
    bm_module_destroy(m);
    if (t[i].env) unsetenv(t[i].env);
  }
}

/* the gate's value read elsewhere too (an output) keeps its matmul */
static void test_glu_gate_shared(void) {
  bm_module *m = bm_module_create("t");
  bm_graph *g = mlp(m, 4, BM_OP_SILU, false);
  bm_node *gate = NULL;
  for (int i = 0; i < g->nnodes; i++)
    if (g->nodes[i]->op == BM_OP_MATMUL && !gate) gate = g->nodes[i];
  bm_output_add(g, "gate", gate);
  bm_pass_options po = {.supports = yes};
  CHECK_OK(bm_pass_fuse_horizontal(g, &po));
  CHECK(count(g, BM_OP_MATMUL_GLU) == 0);
  bm_module_destroy(m);
}

/* shape inference names the problem */
static void test_glu_shape_errors(void) {
  bm_module *m = bm_module_create("t");
  bm_graph *g = bm_graph_create(m, "main");
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 2, (int64_t[]){2, K});
  bm_node *w = bm_weight(g, "w", BM_DTYPE_F32, 2, (int64_t[]){N, K}, wg, sizeof wg);
  bm_node *w2 = bm_weight(g, "w2", BM_DTYPE_F32, 2, (int64_t[]){N - 1, K}, wu, sizeof(float) * (N - 1) * K);
  bm_attrs a = {0};
  a.act = BM_OP_SILU;
  bm_node *ok = bm_node_make(g, BM_OP_MATMUL_GLU, 3, (bm_node *[]){x, w, w}, &a);
  CHECK(ok && ok->ndim == 2 && ok->shape[0].add == 2 && ok->shape[1].add == N && ok->dtype == BM_DTYPE_F32);
  CHECK(bm_node_make(g, BM_OP_MATMUL_GLU, 3, (bm_node *[]){x, w, w2}, &a) == NULL);
  CHECK(bm_graph_status(g) && strstr(bm_status_message(bm_graph_status(g)), "w_up")); /* owned by g */
  bm_module_destroy(m);
  m = bm_module_create("t2");
  g = bm_graph_create(m, "main");
  x = bm_input(g, "x", BM_DTYPE_F32, 2, (int64_t[]){2, K});
  w = bm_weight(g, "w", BM_DTYPE_F32, 2, (int64_t[]){N, K}, wg, sizeof wg);
  a.act = BM_OP_RELU;
  CHECK(bm_node_make(g, BM_OP_MATMUL_GLU, 3, (bm_node *[]){x, w, w}, &a) == NULL);
  CHECK(bm_graph_status(g) && strstr(bm_status_message(bm_graph_status(g)), "act must be silu or gelu_tanh"));
  bm_module_destroy(m);
}

/* on the CPU (no MATMUL_GLU there) the compiled MLP still matches */
static void test_glu_cpu_compile(void) {
  bm_module *m = bm_module_create("t");
  bm_graph *g = mlp(m, 2, BM_OP_GELU_TANH, true);
  int64_t syms[BM_MAX_SYMS] = {2};
  bm_tensor in[1];
  CHECK_OK(bm_opcheck_random_inputs(g, syms, 9, in));
  bm_opcheck_options o = {.fuse = true};
  double err = 1;
  CHECK_OK(bm_opcheck(g, in, &o, &err));
  CHECK_MSG(err < 1e-5, "rel err %g", err);
  CHECK(count(g, BM_OP_MATMUL_GLU) == 0);
  bm_tensor_free(&in[0]);
  bm_module_destroy(m);
}

/* rms_norm -> MATMUL_GLU / linear: one RMS_MATMUL, the same values; with
 * BM_NO_RMSMM=1 or a second reader of the norm, not folded */
static void test_rms_folded(void) {
  prenorm = true;
  for (int c = 0; c < 4; c++) {
    if (c == 2) setenv("BM_NO_RMSMM", "1", 1);
    bm_module *m = bm_module_create("t");
    bm_graph *g;
    if (c == 1) { /* a plain linear: x -> rms_norm -> x Wg^T */
      g = bm_graph_create(m, "main");
      int64_t xs[2] = {BM_SYM(bm_sym_declare(g, "m", 4)), K}, ws[2] = {N, K};
      bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 2, xs);
      bm_node *nw = bm_weight(g, "norm", BM_DTYPE_F32, 1, (int64_t[]){K}, gamma_, sizeof gamma_);
      x = bm_rms_norm(g, x, nw, 1e-5f);
      bm_output_add(g, "y", bm_linear(g, x, bm_weight(g, "gate", BM_DTYPE_F32, 2, ws, wg, sizeof wg), NULL));
    } else {
      g = mlp(m, 4, BM_OP_SILU, false);
    }
    if (c == 3) bm_output_add(g, "normed", g->nodes[2]); /* the rms_norm read twice */
    CHECK(c != 3 || g->nodes[2]->op == BM_OP_RMS_NORM);
    double mx = 0, d = run_pass(g, yes, 3, &mx);
    int want = c == 0 || c == 1 ? 1 : 0;
    CHECK_MSG(count(g, BM_OP_RMS_MATMUL) == want && count(g, BM_OP_RMS_NORM) == 1 - want,
              "case %d: %d rms_matmul, %d rms_norm", c, count(g, BM_OP_RMS_MATMUL), count(g, BM_OP_RMS_NORM));
    CHECK_MSG(mx > 0.01 && d <= 2e-6 * mx * K / 8, "case %d: |after - before| %g, max|ref| %g", c, d, mx);
    bm_module_destroy(m);
    if (c == 2) unsetenv("BM_NO_RMSMM");
  }
  prenorm = false;
}

int main(void) {
  fill(wg, N * K, 1);
  fill(wu, N * K, 2);
  fill(gamma_, K, 3);
  for (int i = 0; i < K; i++) gamma_[i] += 1.0f;
  RUN(test_rms_folded);
  RUN(test_glu_fused);
  RUN(test_glu_not_fused);
  RUN(test_glu_gate_shared);
  RUN(test_glu_shape_errors);
  RUN(test_glu_cpu_compile);
  return bm_test_finish();
}
