/* test_hoist_take_row.c - the hoist_take_row pass (passes/hoist_take_row.c):
 * an LLM layer's o projection, norms and gated MLP under a prefill's
 * take_row run on the kept row only, with the interpreter's outputs unchanged;
 * a non-row-wise op (softmax over the sequence) blocks it; off without
 * BM_HOIST_TAKE_ROW=1. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../ir/interp.h"
#include "../passes/passes.h"
#include "testutil.h"

#define F32 BM_DTYPE_F32

static bm_node *rand_const(bm_graph *g, int ndim, const int64_t *shape, uint64_t seed) {
  int64_t n = 1;
  for (int d = 0; d < ndim; d++) n *= shape[d];
  float *v = malloc((size_t)n * sizeof *v);
  for (int64_t i = 0; i < n; i++) v[i] = bm_test_rand_uniform(&seed, -0.5f, 0.5f);
  bm_node *c = bm_const(g, F32, ndim, shape, v);
  free(v);
  return c;
}

/* x (2, seq<=5, 16), idx (2): a layer's attention output projection + residual, rms_norm,
 * silu(n Wg^T) * (n Wu^T), down + residual, + bias, under take_row; and take_row(softmax over seq) */
static bm_graph *build(bm_module *m) {
  bm_graph *g = bm_graph_create(m, "prefill");
  int s = bm_sym_declare(g, "seq", 5);
  bm_node *x = bm_input(g, "x", F32, 3, (int64_t[]){2, BM_SYM(s), 16});
  bm_node *idx = bm_input(g, "last", BM_DTYPE_I32, 1, (int64_t[]){2});
  bm_node *w = rand_const(g, 1, (int64_t[]){16}, 1), *bias = rand_const(g, 1, (int64_t[]){16}, 2);
  bm_node *wo = rand_const(g, 2, (int64_t[]){16, 16}, 3), *wg = rand_const(g, 2, (int64_t[]){24, 16}, 4);
  bm_node *wu = rand_const(g, 2, (int64_t[]){24, 16}, 5), *wd = rand_const(g, 2, (int64_t[]){16, 24}, 6);
  bm_node *r = bm_add(g, bm_matmul(g, bm_rms_norm(g, x, w, 1e-5f), wo, false, true), x);
  bm_node *n = bm_rms_norm(g, r, w, 1e-5f);
  bm_node *h = bm_mul(g, bm_silu(g, bm_matmul(g, n, wg, false, true)), bm_matmul(g, n, wu, false, true));
  bm_node *y = bm_add(g, bm_add(g, bm_matmul(g, h, wd, false, true), r), bias);
  bm_output_add(g, "y", bm_take_row(g, y, idx));
  bm_output_add(g, "soft", bm_take_row(g, bm_softmax(g, x, 1), idx));
  return g;
}

static void run(const bm_graph *g, bm_tensor *out) {
  bm_tensor in[2];
  CHECK_OK(bm_tensor_alloc(&in[0], F32, 3, (int64_t[]){2, 5, 16}));
  CHECK_OK(bm_tensor_alloc(&in[1], BM_DTYPE_I32, 1, (int64_t[]){2}));
  uint64_t seed = 42;
  for (int i = 0; i < 2 * 5 * 16; i++) ((float *)in[0].data)[i] = bm_test_rand_uniform(&seed, -1.0f, 1.0f);
  ((int32_t *)in[1].data)[0] = 4;
  ((int32_t *)in[1].data)[1] = 2;
  memset(out, 0, 2 * sizeof *out);
  CHECK_OK(bm_interp_run(g, in, out));
  bm_tensor_free(&in[0]);
  bm_tensor_free(&in[1]);
}

/* matmuls over the whole sequence (a symbolic dim 1) left in g */
static int full_matmuls(const bm_graph *g) {
  int c = 0;
  for (int i = 0; i < g->nnodes; i++)
    if (g->nodes[i]->op == BM_OP_MATMUL && !bm_dim_is_static(g->nodes[i]->shape[1])) c++;
  return c;
}

static void test_hoist(void) {
  bm_module *m = bm_module_create("t");
  bm_graph *g = build(m);
  CHECK_OK(bm_graph_status(g));
  bm_tensor ref[2], got[2];
  run(g, ref);
  CHECK_MSG(full_matmuls(g) == 4, "%d matmuls over the sequence before the pass", full_matmuls(g));
  setenv("BM_HOIST_TAKE_ROW", "1", 1);
  CHECK_OK(bm_pass_hoist_take_row(g, &(bm_pass_options){0}));
  unsetenv("BM_HOIST_TAKE_ROW");
  CHECK_OK(bm_graph_verify(g));
  CHECK_MSG(full_matmuls(g) == 0, "%d matmuls still over the sequence", full_matmuls(g));
  /* the softmax over the sequence is not row-wise: its take_row stays below it */
  const bm_node *soft = g->outputs[1].node;
  CHECK(soft->op == BM_OP_TAKE_ROW && soft->in[0]->op == BM_OP_SOFTMAX);
  run(g, got);
  for (int o = 0; o < 2; o++) {
    CHECK(bm_tensor_numel(&ref[o]) == bm_tensor_numel(&got[o]) && bm_tensor_numel(&ref[o]) == 2 * 16);
    double err = bm_test_rel_err((const float *)got[o].data, (const float *)ref[o].data, bm_tensor_numel(&ref[o]));
    CHECK_MSG(err <= 1e-6, "output %d: rel err %g", o, err);
    bm_tensor_free(&ref[o]);
    bm_tensor_free(&got[o]);
  }
  bm_module_destroy(m);
}

static void test_off_by_default(void) {
  bm_module *m = bm_module_create("t");
  bm_graph *g = build(m);
  unsetenv("BM_HOIST_TAKE_ROW");
  CHECK_OK(bm_pass_hoist_take_row(g, &(bm_pass_options){0}));
  CHECK(full_matmuls(g) == 4);
  bm_module_destroy(m);
}

int main(void) {
  RUN(test_hoist);
  RUN(test_off_by_default);
  return bm_test_finish();
}
