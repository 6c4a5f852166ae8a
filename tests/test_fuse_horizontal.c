/* test_fuse_horizontal.c - the fuse_horizontal pass (q/k/v linears -> one
 * matmul over concatenated weights, parts read as SLICEs, the q/k ropes
 * merged) and the SLICE views of plan_memory: compiled for the CPU against
 * the reference interpreter, fused against unfused, and what the pass did. */
#include <stdlib.h>
#include <string.h>

#include "../passes/passes.h"
#include "opcheck.h"
#include "testutil.h"

enum { K = 64, HD = 16, H = 4, KV = 2 };

static float wq[H * HD * K], wk[KV * HD * K], wv[KV * HD * K], wg[96 * K], wu[96 * K];
static float bq[H * HD], bk[KV * HD], bv[KV * HD];

static void fill(float *w, int n, uint64_t seed) {
  uint64_t st = seed;
  for (int i = 0; i < n; i++) w[i] = bm_test_rand_uniform(&st, -0.2f, 0.2f);
}

static void init_weights(void) {
  fill(wq, (int)(sizeof wq / sizeof *wq), 1);
  fill(wk, (int)(sizeof wk / sizeof *wk), 2);
  fill(wv, (int)(sizeof wv / sizeof *wv), 3);
  fill(wg, (int)(sizeof wg / sizeof *wg), 4);
  fill(wu, (int)(sizeof wu / sizeof *wu), 5);
  fill(bq, H * HD, 6);
  fill(bk, KV * HD, 7);
  fill(bv, KV * HD, 8);
}

static bm_node *w2(bm_graph *g, const char *name, float *data, int64_t n) {
  int64_t s[2] = {n, K};
  return bm_weight(g, name, BM_DTYPE_F32, 2, s, data, sizeof(float) * (size_t)(n * K));
}

static bm_node *w1(bm_graph *g, const char *name, float *data, int64_t n) {
  int64_t s[1] = {n};
  return bm_weight(g, name, BM_DTYPE_F32, 1, s, data, sizeof(float) * (size_t)n);
}

/* An attention block's projections at one position: x (B, 1, K) with B <=
 * bmax -> rope(q) (B, 1, H, HD), rope(k) (B, 1, KV, HD), v (B, 1, KV, HD). */
static bm_graph *qkv_graph(bm_module *m, int64_t bmax, bool bias) {
  bm_graph *g = bm_graph_create(m, "main");
  int64_t B = BM_SYM(bm_sym_declare(g, "batch", bmax));
  int64_t xs[3] = {B, 1, K}, ps[2] = {B, 1}, fs[1] = {HD / 2};
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 3, xs);
  bm_node *pos = bm_input(g, "pos", BM_DTYPE_I32, 2, ps);
  float freqs[HD / 2];
  for (int i = 0; i < HD / 2; i++) freqs[i] = 1.0f / (float)(1 << i);
  bm_node *f = bm_const(g, BM_DTYPE_F32, 1, fs, freqs);
  bm_node *q = bm_linear(g, x, w2(g, "q.weight", wq, H * HD), bias ? w1(g, "q.bias", bq, H * HD) : NULL);
  bm_node *k = bm_linear(g, x, w2(g, "k.weight", wk, KV * HD), bias ? w1(g, "k.bias", bk, KV * HD) : NULL);
  bm_node *v = bm_linear(g, x, w2(g, "v.weight", wv, KV * HD), bias ? w1(g, "v.bias", bv, KV * HD) : NULL);
  int64_t qs[4] = {B, 1, H, HD}, ks[4] = {B, 1, KV, HD};
  bm_output_add(g, "q", bm_rope(g, bm_reshape(g, q, 4, qs), pos, f, 0));
  bm_output_add(g, "k", bm_rope(g, bm_reshape(g, k, 4, ks), pos, f, 0));
  bm_output_add(g, "v", bm_reshape(g, v, 4, ks));
  return g;
}

static int count(const bm_graph *g, bm_op op) {
  int c = 0;
  for (int i = 0; i < g->nnodes; i++) c += g->nodes[i]->op == op;
  return c;
}

/* SLICEs that are views (no kernel) / that run a kernel */
static void count_slices(const bm_graph *g, int *views, int *copies) {
  *views = *copies = 0;
  for (int i = 0; i < g->nnodes; i++) {
    const bm_node *n = g->nodes[i];
    if (n->op != BM_OP_SLICE) continue;
    if (n->storage == BM_STORAGE_ALIAS && !n->kernel)
      ++*views;
    else
      ++*copies;
  }
}

/* Compiles g (fused or not) against the interpreter at batch `b`. */
static double check(bm_graph *g, int64_t b, bool fuse) {
  bm_tensor in[4] = {0};
  int64_t syms[1] = {b};
  double err = 1e30;
  CHECK_OK(bm_opcheck_random_inputs(g, syms, 11, in));
  bm_opcheck_options o = {.fuse = fuse};
  CHECK_OK(bm_opcheck(g, in, &o, &err));
  for (int i = 0; i < g->ninputs; i++) bm_tensor_free(&in[i]);
  return err;
}

/* batch <= 1 (decode): one matmul, the parts and the rope halves are views,
 * one rope for q and k */
static void test_decode_views(void) {
  for (int bias = 0; bias < 2; bias++) {
    bm_module *m = bm_module_create("t");
    bm_graph *g = qkv_graph(m, 1, bias);
    CHECK_OK(bm_graph_status(g));
    double err = check(g, 1, true);
    CHECK_MSG(err < 1e-5, "bias %d: rel err %g", bias, err);
    int views, copies;
    count_slices(g, &views, &copies);
    CHECK_MSG(count(g, BM_OP_MATMUL) == 1, "bias %d: %d matmuls", bias, count(g, BM_OP_MATMUL));
    CHECK_MSG(count(g, BM_OP_ROPE) == 1, "bias %d: %d ropes", bias, count(g, BM_OP_ROPE));
    CHECK_MSG(views >= 3 && copies == 0, "bias %d: %d view slices, %d copies", bias, views, copies);
    bm_module_destroy(m);
  }
  /* batch 0 (no rows) still runs */
  bm_module *m = bm_module_create("t");
  bm_graph *g = qkv_graph(m, 1, true);
  double err = check(g, 0, true);
  CHECK_MSG(err < 1e-5 || err == 0, "batch 0: rel err %g", err);
  bm_module_destroy(m);
}

/* batch up to 2: fused, the parts are copies, the ropes stay apart */
static void test_batch_copies(void) {
  bm_module *m = bm_module_create("t");
  bm_graph *g = qkv_graph(m, 2, true);
  double err = check(g, 2, true);
  CHECK_MSG(err < 1e-5, "rel err %g", err);
  int views, copies;
  count_slices(g, &views, &copies);
  CHECK(count(g, BM_OP_MATMUL) == 1);
  CHECK(count(g, BM_OP_ROPE) == 2);
  CHECK_MSG(views == 0 && copies == 3, "%d view slices, %d copies", views, copies);
  bm_module_destroy(m);
}

/* unfused and BM_NO_HFUSE=1: three matmuls, same results */
static void test_off(void) {
  bm_module *m = bm_module_create("t");
  bm_graph *g = qkv_graph(m, 1, true);
  double err = check(g, 1, false);
  CHECK(err < 1e-5);
  CHECK(count(g, BM_OP_MATMUL) == 3);
  bm_module_destroy(m);
  setenv("BM_NO_HFUSE", "1", 1);
  m = bm_module_create("t");
  g = qkv_graph(m, 1, true);
  err = check(g, 1, true);
  CHECK(err < 1e-5);
  CHECK(count(g, BM_OP_MATMUL) == 3);
  bm_module_destroy(m);
  unsetenv("BM_NO_HFUSE");
}

/* a gated MLP (silu(gate) * up: parts read by elementwise ops) is left alone */
static void test_mlp_not_fused(void) {
  bm_module *m = bm_module_create("t");
  bm_graph *g = bm_graph_create(m, "main");
  int64_t B = BM_SYM(bm_sym_declare(g, "batch", 1));
  int64_t xs[3] = {B, 1, K};
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 3, xs);
  bm_node *h = bm_mul(g, bm_silu(g, bm_linear(g, x, w2(g, "gate", wg, 96), NULL)),
                      bm_linear(g, x, w2(g, "up", wu, 96), NULL));
  bm_output_add(g, "h", h);
  double err = check(g, 1, true);
  CHECK(err < 1e-5);
  CHECK(count(g, BM_OP_MATMUL) == 2);
  bm_module_destroy(m);
}

/* a weight read elsewhere too (here by a second linear layer) stays apart:
 * concatenating it would store it twice */
static void test_shared_part_not_fused(void) {
  bm_module *m = bm_module_create("t");
  bm_graph *g = bm_graph_create(m, "main");
  int64_t B = BM_SYM(bm_sym_declare(g, "batch", 1));
  int64_t xs[3] = {B, 1, K};
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 3, xs), *y = bm_input(g, "y", BM_DTYPE_F32, 3, xs);
  bm_node *wkn = w2(g, "k.weight", wk, KV * HD);
  int64_t ks[4] = {B, 1, KV, HD};
  bm_output_add(g, "q", bm_linear(g, x, w2(g, "q.weight", wq, H * HD), NULL));
  bm_output_add(g, "k", bm_reshape(g, bm_linear(g, x, wkn, NULL), 4, ks));
  bm_output_add(g, "k2", bm_linear(g, y, wkn, NULL));
  double err = check(g, 1, true);
  CHECK(err < 1e-5);
  CHECK_MSG(count(g, BM_OP_MATMUL) == 3, "%d matmuls", count(g, BM_OP_MATMUL));
  bm_module_destroy(m);
}

/* two functions of one module fuse the same weights into one, stored once */
static void test_shared_weight(void) {
  bm_module *m = bm_module_create("t");
  bm_graph *g1 = qkv_graph(m, 1, false);
  bm_graph *g2 = qkv_graph(m, 2, false);
  g2->name = "second";
  bm_pass_options po = {.verify_each = true};
  CHECK_OK(bm_pipeline_run(g1, &po));
  CHECK_OK(bm_pipeline_run(g2, &po));
  const bm_node *c1 = NULL, *c2 = NULL;
  for (int i = 0; i < g1->nnodes; i++)
    if (g1->nodes[i]->op == BM_OP_WEIGHT) c1 = g1->nodes[i];
  for (int i = 0; i < g2->nnodes; i++)
    if (g2->nodes[i]->op == BM_OP_WEIGHT) c2 = g2->nodes[i];
  CHECK(c1 && c2 && count(g1, BM_OP_WEIGHT) == 1 && count(g2, BM_OP_WEIGHT) == 1);
  if (c1 && c2) {
    CHECK(!strcmp(c1->name, "q.weight+k.weight+v.weight") && !strcmp(c1->name, c2->name));
    CHECK(c1->data == c2->data && c1->shape[0].add == (H + 2 * KV) * HD);
    CHECK(!memcmp((const char *)c1->data + sizeof wq, wk, sizeof wk));
  }
  bm_module_destroy(m);
}

/* bm_slice_view: leading dims, alignment, the storage kind */
static void test_slice_view_rule(void) {
  bm_module *m = bm_module_create("t");
  bm_graph *g = bm_graph_create(m, "main");
  int64_t B1 = BM_SYM(bm_sym_declare(g, "b1", 1)), B2 = BM_SYM(bm_sym_declare(g, "b2", 2));
  int64_t s1[2] = {B1, 64}, s2[2] = {B2, 64}, sw[2] = {1, 64};
  bm_node *a = bm_unary(g, BM_OP_EXP, bm_input(g, "a", BM_DTYPE_F32, 2, s1));
  bm_node *b = bm_unary(g, BM_OP_EXP, bm_input(g, "b", BM_DTYPE_F32, 2, s2));
  static float wdata[64];
  bm_node *w = bm_weight(g, "w", BM_DTYPE_F32, 2, sw, wdata, sizeof wdata);
  int64_t off = -1;
  CHECK(bm_slice_view(g, bm_slice(g, a, 1, 16, 64, 1), &off) && off == 64);
  CHECK(bm_slice_view(g, bm_slice(g, a, 1, 0, 8, 1), &off) && off == 0);
  CHECK(!bm_slice_view(g, bm_slice(g, a, 1, 4, 64, 1), &off)); /* 16 bytes: not 64-aligned */
  CHECK(!bm_slice_view(g, bm_slice(g, a, 1, 16, 64, 2), &off)); /* strided */
  CHECK(!bm_slice_view(g, bm_slice(g, b, 1, 16, 64, 1), &off)); /* two rows */
  CHECK(!bm_slice_view(g, bm_slice(g, w, 1, 16, 64, 1), &off)); /* a weight */
  CHECK(!bm_slice_view(g, a, &off));
  bm_module_destroy(m);
}

int main(void) {
  init_weights();
  RUN(test_decode_views);
  RUN(test_batch_copies);
  RUN(test_off);
  RUN(test_mlp_not_fused);
  RUN(test_shared_part_not_fused);
  RUN(test_shared_weight);
  RUN(test_slice_view_rule);
  return bm_test_finish();
}
