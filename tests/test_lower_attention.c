/* test_lower_attention.c - the lower_attention pass (ATTENTION -> Q K^T,
 * softmax, P V where the backend's sized answer prefers it: CUDA for f16 /
 * bf16 head dims above 256): the interpreter gives the attention's result
 * within the rounding the lowered form adds, only plain attentions are
 * lowered, nothing happens without a sized answer, and CUDA's answer. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../codegen/clike/clike.h"
#include "../passes/passes.h"
#include "opcheck.h"
#include "testutil.h"

static int count_op(const bm_graph *g, bm_op op) {
  int c = 0;
  for (int i = 0; i < g->nnodes; i++) c += g->nodes[i]->op == op;
  return c;
}

/* a sized answer as CUDA's: no to attention above head dim 256 */
static int no_wide_attention(const bm_graph *g, const bm_node *n) {
  (void)g;
  return !(n->op == BM_OP_ATTENTION && n->in[0]->shape[3].add > 256);
}

typedef struct at_case {
  bm_dtype t;
  int64_t h, hkv, sq, sk, d;
  bool causal;
} at_case;

static bm_graph *attn_graph(bm_module *m, const at_case *c) {
  bm_graph *g = bm_graph_create(m, "main");
  bm_node *q = bm_input(g, "q", c->t, 4, (int64_t[]){1, c->h, c->sq, c->d});
  bm_node *k = bm_input(g, "k", c->t, 4, (int64_t[]){1, c->hkv, c->sk, c->d});
  bm_node *v = bm_input(g, "v", c->t, 4, (int64_t[]){1, c->hkv, c->sk, c->d});
  bm_output_add(g, "o", bm_attention(g, q, k, v, NULL, 0.0f, c->causal, 0, 0.0f));
  return g;
}

/* max |after - before| / max |before| of the interpreter's output across the
 * pass; *rho = max |before|, *smax = the largest |q . k| / sqrt(D) */
static double lower(bm_graph *g, const bm_pass_options *po, double *rho, double *smax) {
  bm_tensor in[3], before[1], after[1];
  memset(in, 0, sizeof in), memset(before, 0, sizeof before), memset(after, 0, sizeof after);
  CHECK_OK(bm_opcheck_random_inputs(g, NULL, 11, in));
  CHECK_OK(bm_interp_run(g, in, before));
  const int64_t H = in[0].shape[1], Sq = in[0].shape[2], Sk = in[1].shape[2], D = in[0].shape[3];
  *smax = 0;
  for (int64_t h = 0; in[0].data && in[1].data && h < H; h++)
    for (int64_t i = 0; i < Sq; i++)
      for (int64_t j = 0; j < Sk; j++) {
        double dot = 0;
        for (int64_t d = 0; d < D; d++)
          dot += (double)bm_load_f32(in[0].data, in[0].dtype, (h * Sq + i) * D + d) *
                 bm_load_f32(in[1].data, in[1].dtype, (h * Sk + j) * D + d);
        dot = fabs(dot) / sqrt((double)D);
        if (dot > *smax) *smax = dot;
      }
  CHECK_OK(bm_pass_run_named(g, "lower_attention", po));
  CHECK_OK(bm_graph_verify(g));
  CHECK_OK(bm_interp_run(g, in, after));
  double d = 0, mx = 0;
  int64_t n = before[0].data && after[0].data ? bm_tensor_numel(&before[0]) : 0;
  CHECK(n > 0 && after[0].dtype == before[0].dtype);
  for (int64_t i = 0; i < n; i++) {
    double r = bm_load_f32(before[0].data, before[0].dtype, i), v = bm_load_f32(after[0].data, after[0].dtype, i);
    if ((r < 0 ? -r : r) > mx) mx = r < 0 ? -r : r;
    if ((v > r ? v - r : r - v) > d) d = v > r ? v - r : r - v;
  }
  for (int i = 0; i < 3; i++) bm_tensor_free(&in[i]);
  bm_tensor_free(&before[0]), bm_tensor_free(&after[0]);
  CHECK(mx > 0.01);
  *rho = mx;
  return mx > 0 ? d / mx : 1;
}

/* The wide heads are lowered to 2 matmuls and a softmax; the error is the
 * rounding of the scores and of P to the input dtype (test_ops_cuda's
 * TOL_LOW_*: (1 + smax) u / rho + 2u', rho and smax measured here) */
static void test_lowered_matches(void) {
  const at_case cs[] = {{BM_DTYPE_F16, 1, 1, 40, 40, 512, false}, {BM_DTYPE_BF16, 2, 2, 17, 33, 320, false}};
  for (int i = 0; i < 2; i++) {
    bm_module *m = bm_module_create("t");
    bm_graph *g = attn_graph(m, &cs[i]);
    bm_pass_options po = {.verify_each = true, .supports_in = no_wide_attention};
    double rho = 0, smax = 0;
    const double u = cs[i].t == BM_DTYPE_F16 ? 0x1p-11 : 0x1p-8, err = lower(g, &po, &rho, &smax);
    CHECK(count_op(g, BM_OP_ATTENTION) == 0 && count_op(g, BM_OP_MATMUL) == 2 && count_op(g, BM_OP_SOFTMAX) == 1);
    const double tol = (1 + smax) * u / rho + 2 * u;
    CHECK_MSG(err < tol, "case %d: lowered vs attention rel err %g > %g (rho %g, smax %g)", i, err, tol, rho, smax);
    bm_module_destroy(m);
  }
}

/* left alone: a head dim the backend takes, a causal mask, GQA, no sized answer */
static void test_left_alone(void) {
  const at_case cs[] = {{BM_DTYPE_F16, 1, 1, 40, 40, 128, false},
                        {BM_DTYPE_F16, 1, 1, 40, 40, 512, true},
                        {BM_DTYPE_F16, 4, 2, 20, 20, 512, false}};
  for (int i = 0; i < 3; i++) {
    bm_module *m = bm_module_create("t");
    bm_graph *g = attn_graph(m, &cs[i]);
    bm_pass_options po = {.verify_each = true, .supports_in = no_wide_attention};
    CHECK_OK(bm_pass_run_named(g, "lower_attention", &po));
    CHECK_MSG(count_op(g, BM_OP_ATTENTION) == 1, "case %d lowered", i);
    bm_module_destroy(m);
  }
  bm_module *m = bm_module_create("t");
  bm_graph *g = attn_graph(m, &(at_case){BM_DTYPE_F16, 1, 1, 40, 40, 512, false});
  bm_pass_options po = {.verify_each = true, .supports = NULL};
  CHECK_OK(bm_pass_run_named(g, "lower_attention", &po));
  CHECK(count_op(g, BM_OP_ATTENTION) == 1);
  bm_module_destroy(m);
}

/* CUDA's sized answer: no to f16/bf16 head dims above 256, yes to 256 and to f32 (the scalar kernel) */
static void test_cuda_answer(void) {
  const struct { at_case c; int want; } t[] = {
      {{BM_DTYPE_F16, 1, 1, 40, 40, 512, false}, 0},
      {{BM_DTYPE_BF16, 1, 1, 40, 40, 320, false}, 0},
      {{BM_DTYPE_F16, 1, 1, 40, 40, 256, false}, 1},
      {{BM_DTYPE_F32, 1, 1, 40, 40, 512, false}, 1},
  };
  for (int i = 0; i < 4; i++) {
    bm_module *m = bm_module_create("t");
    bm_graph *g = attn_graph(m, &t[i].c);
    const bm_node *a = NULL;
    for (int j = 0; j < g->nnodes; j++)
      if (g->nodes[j]->op == BM_OP_ATTENTION) a = g->nodes[j];
    CHECK(a && bm_clike_cuda_supports_in(g, a) == t[i].want);
    bm_module_destroy(m);
  }
}

int main(void) {
  RUN(test_lowered_matches);
  RUN(test_left_alone);
  RUN(test_cuda_answer);
  return bm_test_finish();
}
