/* test_passes.c - every pass on small graphs built with the builder API:
 * results agree with the reference interpreter before and after (fused vs
 * unfused), and the graph's structure changed as expected. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../ir/interp.h"
#include "../models/models.h"
#include "../passes/passes.h"
#include "testutil.h"

/* ------------------------------------------------------------------ helpers */

static int count_op(const bm_graph *g, bm_op op) {
  int c = 0;
  for (int i = 0; i < g->nnodes; i++) c += g->nodes[i]->op == op;
  return c;
}

static bm_node *find_op(const bm_graph *g, bm_op op) {
  for (int i = 0; i < g->nnodes; i++)
    if (g->nodes[i]->op == op) return g->nodes[i];
  return NULL;
}

/* Number of nodes that are not sources (what would need a kernel). */
static int count_compute(const bm_graph *g) {
  int c = 0;
  for (int i = 0; i < g->nnodes; i++) c += !(bm_op_table[g->nodes[i]->op].flags & BM_OPF_SOURCE);
  return c;
}

/* Random f32 inputs for every INPUT of g (symbols at their max). */
typedef struct inputs {
  bm_tensor t[16];
  int n;
} inputs;

static void make_inputs(const bm_graph *g, uint64_t seed, inputs *in) {
  memset(in, 0, sizeof *in);
  in->n = g->ninputs < 16 ? g->ninputs : 16;
  for (int i = 0; i < g->ninputs && i < 16; i++) {
    const bm_node *x = g->inputs[i];
    int64_t shape[BM_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++)
      shape[d] = bm_dim_is_static(x->shape[d]) ? x->shape[d].add
                                               : x->shape[d].mul * g->syms[x->shape[d].sym].max + x->shape[d].add;
    CHECK_OK(bm_tensor_alloc(&in->t[i], x->dtype, x->ndim, shape));
    int64_t n = bm_tensor_numel(&in->t[i]);
    for (int64_t e = 0; e < n; e++) {
      uint64_t s = seed * 1000003u + (uint64_t)i * 7919u + (uint64_t)e;
      bm_store_f32(in->t[i].data, x->dtype, e, bm_test_rand_uniform(&s, -1.0f, 1.0f));
    }
  }
}

static void free_inputs(inputs *in) {
  for (int i = 0; i < in->n; i++) bm_tensor_free(&in->t[i]);
}

/* Interpreter outputs of g (caller frees with free_outputs). */
typedef struct outputs {
  bm_tensor t[16];
  int n;
} outputs;

static void run(const bm_graph *g, const inputs *in, outputs *out) {
  memset(out, 0, sizeof *out);
  out->n = g->noutputs;
  CHECK_OK(bm_interp_run(g, in->t, out->t));
}

static void free_outputs(outputs *out) {
  for (int i = 0; i < out->n; i++) bm_tensor_free(&out->t[i]);
}

/* Compares two sets of outputs as f32 with a relative tolerance. */
static void check_close(const outputs *a, const outputs *b, double tol) {
  CHECK(a->n == b->n);
  for (int i = 0; i < a->n && i < b->n; i++) {
    CHECK(bm_tensor_numel(&a->t[i]) == bm_tensor_numel(&b->t[i]));
    if (!a->t[i].data || !b->t[i].data || bm_tensor_numel(&a->t[i]) != bm_tensor_numel(&b->t[i]))
      continue;
    int64_t n = bm_tensor_numel(&a->t[i]);
    float *fa = malloc((size_t)n * sizeof *fa), *fb = malloc((size_t)n * sizeof *fb);
    for (int64_t e = 0; e < n; e++) {
      fa[e] = bm_load_f32(a->t[i].data, a->t[i].dtype, e);
      fb[e] = bm_load_f32(b->t[i].data, b->t[i].dtype, e);
    }
    double err = bm_test_rel_err(fa, fb, n);
    CHECK_MSG(err <= tol, "output %d: relative error %g > %g", i, err, tol);
    free(fa);
    free(fb);
  }
}

/* Runs g, then the named passes (NULL-terminated, verifying after each),
 * then g again, and checks the results agree. */
static void run_passes_and_compare(bm_graph *g, const char *const *passes, double tol) {
  CHECK_OK(bm_graph_status(g));
  CHECK_OK(bm_graph_verify(g));
  inputs in;
  outputs before, after;
  make_inputs(g, 42, &in);
  run(g, &in, &before);
  bm_pass_options o = {.verify_each = true};
  for (int i = 0; passes[i]; i++) CHECK_OK(bm_pass_run_named(g, passes[i], &o));
  run(g, &in, &after);
  check_close(&after, &before, tol);
  free_outputs(&before);
  free_outputs(&after);
  free_inputs(&in);
}

static bm_graph *new_graph(bm_module **m) {
  *m = bm_module_create("test");
  return bm_graph_create(*m, "main");
}

static float *rand_data(int64_t n, uint64_t seed) {
  float *p = malloc((size_t)n * sizeof *p);
  bm_test_fill_uniform(p, n, seed, -1.0f, 1.0f);
  return p;
}

/* ------------------------------------------------------------------ shape, dce */

static void test_shape_pass(void) {
  bm_module *m;
  bm_graph *g = new_graph(&m);
  int64_t s23[2] = {2, 3}, s4[1] = {4};
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 2, s23);
  bm_node *z = bm_input(g, "z", BM_DTYPE_F32, 1, s4);
  bm_node *a = bm_add(g, bm_unary(g, BM_OP_EXP, x), x);
  bm_output_add(g, "a", a);
  CHECK_OK(bm_graph_status(g));
  bm_pass_options o = {0};
  CHECK_OK(bm_pass_shape(g, &o));
  /* a pass that broke shapes is caught, naming the node */
  a->in[1] = z;
  bm_status s = bm_pass_shape(g, &o);
  CHECK(s != NULL);
  CHECK_MSG(s && strstr(bm_status_message(s), "add"), "%s", bm_status_message(s));
  bm_status_free(s);
  /* and through the pipeline the error names the pass */
  o.verify_each = true;
  s = bm_pipeline_run(g, &o);
  CHECK_MSG(s && strstr(bm_status_message(s), "pass 'shape'"), "%s", bm_status_message(s));
  bm_status_free(s);
  bm_module_destroy(m);
}

static void test_dce(void) {
  bm_module *m;
  bm_graph *g = new_graph(&m);
  int64_t s[2] = {2, 3};
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 2, s);
  bm_node *unused = bm_input(g, "unused", BM_DTYPE_F32, 2, s);
  bm_unary(g, BM_OP_EXP, x); /* dead */
  bm_unary(g, BM_OP_SIN, unused); /* dead */
  bm_output_add(g, "y", bm_unary(g, BM_OP_TANH, x));
  const char *passes[] = {"dce", NULL};
  run_passes_and_compare(g, passes, 0);
  CHECK(count_op(g, BM_OP_EXP) == 0);
  CHECK(count_op(g, BM_OP_SIN) == 0);
  CHECK(count_op(g, BM_OP_TANH) == 1);
  CHECK(count_op(g, BM_OP_INPUT) == 2); /* inputs are kept */
  bm_module_destroy(m);
}

/* ------------------------------------------------------------------ fold */

static void test_fold_constants(void) {
  bm_module *m;
  bm_graph *g = new_graph(&m);
  int64_t s[2] = {2, 3};
  float ca[6] = {1, 2, 3, 4, 5, 6}, cb[6] = {0.5f, -1, 2, 0, 1, 3};
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 2, s);
  bm_node *w = bm_weight(g, "w", BM_DTYPE_F32, 2, s, cb, sizeof cb);
  bm_node *a = bm_const(g, BM_DTYPE_F32, 2, s, ca);
  bm_node *b = bm_const(g, BM_DTYPE_F32, 2, s, cb);
  bm_node *c = bm_unary(g, BM_OP_EXP, bm_add(g, a, b)); /* folds twice */
  bm_node *y = bm_mul(g, x, c);
  bm_node *yw = bm_add(g, w, a); /* a WEIGHT is not a constant */
  bm_output_add(g, "y", y);
  bm_output_add(g, "yw", yw);
  const char *passes[] = {"fold", NULL};
  run_passes_and_compare(g, passes, 0);
  CHECK(count_op(g, BM_OP_EXP) == 0);
  CHECK(count_op(g, BM_OP_ADD) == 1); /* w + a stays */
  CHECK(count_op(g, BM_OP_MUL) == 1);
  const bm_node *k = g->outputs[0].node->in[1];
  CHECK(k->op == BM_OP_CONST && k->data_size == sizeof(float) * 6);
  if (k->op == BM_OP_CONST) CHECK(fabsf(((const float *)k->data)[1] - expf(1.0f)) < 1e-6f); /* exp(2 + -1) */
  bm_module_destroy(m);
}

static void test_fold_algebra(void) {
  bm_module *m;
  bm_graph *g = new_graph(&m);
  int64_t s[3] = {2, 3, 4}, s12[2] = {6, 4}, s24[1] = {24};
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 3, s);
  bm_node *t = bm_mul(g, x, bm_scalar(g, 1.0f));
  t = bm_add(g, bm_scalar(g, 0.0f), t);
  t = bm_div(g, t, bm_scalar(g, 1.0f));
  t = bm_reshape(g, bm_reshape(g, t, 2, s12), 1, s24); /* -> one reshape */
  bm_output_add(g, "flat", t);
  int p1[3] = {1, 0, 2}, p2[3] = {1, 0, 2}, p3[3] = {2, 0, 1}, p4[3] = {1, 2, 0};
  bm_node *u = bm_permute(g, bm_permute(g, x, p1), p2); /* identity */
  bm_node *v = bm_permute(g, bm_permute(g, x, p3), p4); /* composes to identity too */
  int p5[3] = {0, 2, 1};
  bm_node *w = bm_permute(g, bm_permute(g, x, p3), p5); /* one permute */
  bm_output_add(g, "u", bm_unary(g, BM_OP_EXP, u));
  bm_output_add(g, "v", bm_unary(g, BM_OP_SIN, v));
  bm_output_add(g, "w", w);
  bm_output_add(g, "x2", bm_mul(g, x, bm_scalar(g, 2.0f))); /* not trivial */
  const char *passes[] = {"fold", NULL};
  run_passes_and_compare(g, passes, 0);
  CHECK(count_op(g, BM_OP_RESHAPE) == 1);
  CHECK(count_op(g, BM_OP_ADD) == 0);
  CHECK(count_op(g, BM_OP_DIV) == 0);
  CHECK(count_op(g, BM_OP_MUL) == 1);
  CHECK(count_op(g, BM_OP_PERMUTE) == 1);
  CHECK(g->outputs[0].node->in[0] == x);
  CHECK(g->outputs[1].node->in[0] == x);
  CHECK(g->outputs[2].node->in[0] == x);
  bm_module_destroy(m);
}

/* ------------------------------------------------------------------ cse */

static void test_cse(void) {
  bm_module *m;
  bm_graph *g = new_graph(&m);
  int64_t s[2] = {3, 4};
  float c[4] = {1, 2, 3, 4};
  int64_t s4[1] = {4};
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 2, s);
  bm_node *x2 = bm_input(g, "x2", BM_DTYPE_F32, 2, s); /* same type, never merged */
  bm_node *e1 = bm_unary(g, BM_OP_EXP, x), *e2 = bm_unary(g, BM_OP_EXP, x);
  bm_node *c1 = bm_const(g, BM_DTYPE_F32, 1, s4, c), *c2 = bm_const(g, BM_DTYPE_F32, 1, s4, c);
  bm_node *a1 = bm_add(g, e1, c1), *a2 = bm_add(g, e2, c2); /* merge after their inputs do */
  bm_node *sm0 = bm_softmax(g, x, 0), *sm1 = bm_softmax(g, x, 1); /* attrs differ */
  bm_node *y = bm_add(g, bm_mul(g, a1, a2), bm_add(g, sm0, sm1));
  bm_output_add(g, "y", y);
  bm_output_add(g, "z", bm_sub(g, x, x2));
  bm_output_add(g, "a2", a2);
  const char *passes[] = {"cse", NULL};
  run_passes_and_compare(g, passes, 0);
  CHECK(count_op(g, BM_OP_EXP) == 1);
  CHECK(count_op(g, BM_OP_CONST) == 1);
  CHECK(count_op(g, BM_OP_SOFTMAX) == 2);
  CHECK(count_op(g, BM_OP_INPUT) == 2);
  CHECK(count_op(g, BM_OP_ADD) == 3); /* a1 (= a2), the softmax sum and y */
  bm_node *mul = find_op(g, BM_OP_MUL);
  CHECK(mul && mul->in[0] == mul->in[1]);
  CHECK(g->outputs[2].node == (mul ? mul->in[0] : NULL)); /* output redirected */
  bm_module_destroy(m);
}

/* Programs compare by their instructions (immediates included). */
static void test_cse_programs(void) {
  bm_module *m;
  bm_graph *g = new_graph(&m);
  int64_t s[1] = {8};
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 1, s);
  bm_attrs a = {0};
  a.prog.nin = 1;
  a.prog.n = 2;
  a.prog.ins[0] = (bm_prog_ins){.op = BM_OP_MUL, .a = 0, .flags = BM_PROG_IMM_B, .imm = 3.0f};
  a.prog.ins[1] = (bm_prog_ins){.op = BM_OP_EXP, .a = 1};
  bm_node *f1 = bm_node_make(g, BM_OP_FUSED, 1, &x, &a);
  bm_node *f2 = bm_node_make(g, BM_OP_FUSED, 1, &x, &a);
  a.prog.ins[0].imm = 4.0f;
  bm_node *f3 = bm_node_make(g, BM_OP_FUSED, 1, &x, &a);
  bm_output_add(g, "y", bm_add(g, bm_add(g, f1, f2), f3));
  const char *passes[] = {"cse", NULL};
  run_passes_and_compare(g, passes, 0);
  CHECK(count_op(g, BM_OP_FUSED) == 2);
  bm_module_destroy(m);
}

/* ------------------------------------------------------------------ fuse_attention */

/* q, k, v (B, H, S, D) inputs; scores scaled by mul/div; optional mask. */
static bm_graph *attention_graph(bm_module **m, int scale_kind, bool mask, bool extra_use) {
  bm_graph *g = new_graph(m);
  int64_t sq[4] = {2, 3, 4, 8}, sk[4] = {2, 3, 5, 8}, sv[4] = {2, 3, 5, 6}, sm[4] = {1, 1, 4, 5};
  bm_node *q = bm_input(g, "q", BM_DTYPE_F32, 4, sq);
  bm_node *k = bm_input(g, "k", BM_DTYPE_F32, 4, sk);
  bm_node *v = bm_input(g, "v", BM_DTYPE_F32, 4, sv);
  int kt[4] = {0, 1, 3, 2};
  bm_node *s = scale_kind == 3 ? bm_matmul(g, q, bm_permute(g, k, kt), false, false)
                               : bm_matmul(g, q, k, false, true); // (2, 3, 4, 5)
  bm_node *scores = s;
  if (scale_kind == 1) s = bm_mul(g, s, bm_scalar(g, 0.35f));
  if (scale_kind == 2) s = bm_div(g, s, bm_scalar(g, 2.0f));
  if (scale_kind == 3) s = bm_mul(g, bm_scalar(g, 0.5f), s);
  if (mask) s = bm_add(g, bm_input(g, "mask", BM_DTYPE_F32, 4, sm), s);
  bm_node *p = bm_softmax(g, s, -1);
  bm_output_add(g, "o", bm_matmul(g, p, v, false, false)); // (2, 3, 4, 6)
  if (extra_use) bm_output_add(g, "scores", scores);
  return g;
}

static void test_fuse_attention(void) {
  const char *passes[] = {"fuse_attention", NULL};
  const float want_scale[4] = {1.0f, 0.35f, 0.5f, 0.5f};
  for (int kind = 0; kind < 4; kind++)
    for (int mask = 0; mask < 2; mask++) {
      bm_module *m;
      bm_graph *g = attention_graph(&m, kind, mask, false);
      run_passes_and_compare(g, passes, 1e-5);
      CHECK_MSG(count_op(g, BM_OP_ATTENTION) == 1, "kind %d mask %d", kind, mask);
      CHECK(count_op(g, BM_OP_SOFTMAX) == 0);
      CHECK(count_op(g, BM_OP_MATMUL) == 0);
      CHECK(count_compute(g) == 1); /* no (Sq, Sk) intermediate is left, nor k^T */
      bm_node *a = find_op(g, BM_OP_ATTENTION);
      if (a) {
        CHECK(a->a.attn_scale == want_scale[kind]);
        CHECK(a->nin == 3 + mask);
      }
      bm_module_destroy(m);
    }
  /* the scores have a second use: nothing may change */
  bm_module *m;
  bm_graph *g = attention_graph(&m, 1, true, true);
  run_passes_and_compare(g, passes, 0);
  CHECK(count_op(g, BM_OP_ATTENTION) == 0);
  CHECK(count_op(g, BM_OP_SOFTMAX) == 1);
  bm_module_destroy(m);
}

/* ------------------------------------------------------------------ fuse_dequant */

static void test_fuse_dequant(void) {
  bm_module *m;
  bm_graph *g = new_graph(&m);
  int64_t sx[3] = {2, 3, 16}, sq[2] = {8, 16}, ss[2] = {8, 2};
  int8_t qd[8 * 16];
  for (int i = 0; i < 8 * 16; i++) qd[i] = (int8_t)((i * 37) % 255 - 127);
  float *sd = rand_data(16, 3);
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 3, sx);
  bm_node *q = bm_weight(g, "q", BM_DTYPE_I8, 2, sq, qd, sizeof qd);
  bm_node *s = bm_weight(g, "s", BM_DTYPE_F32, 2, ss, sd, 16 * sizeof(float));
  bm_output_add(g, "y", bm_matmul(g, x, bm_dequant(g, q, s), false, true)); // (2, 3, 8)
  const char *passes[] = {"fuse_dequant", NULL};
  run_passes_and_compare(g, passes, 1e-5);
  CHECK(count_op(g, BM_OP_QMATMUL) == 1);
  CHECK(count_op(g, BM_OP_DEQUANT) == 0);
  CHECK(count_op(g, BM_OP_MATMUL) == 0);
  bm_module_destroy(m);
  free(sd);
}

/* ------------------------------------------------------------------ fuse_epilogue */

static void test_fuse_group_norm_silu(void) {
  bm_module *m;
  bm_graph *g = new_graph(&m);
  int64_t sx[4] = {2, 4, 3, 3}, sc[1] = {4};
  float *wd = rand_data(4, 1), *bd = rand_data(4, 2);
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 4, sx);
  bm_node *w = bm_weight(g, "w", BM_DTYPE_F32, 1, sc, wd, 16);
  bm_node *b = bm_weight(g, "b", BM_DTYPE_F32, 1, sc, bd, 16);
  bm_output_add(g, "y", bm_silu(g, bm_group_norm(g, x, w, b, 2, 1e-5f)));
  const char *passes[] = {"fuse_epilogue", NULL};
  run_passes_and_compare(g, passes, 1e-5);
  CHECK(count_op(g, BM_OP_SILU) == 0);
  CHECK(count_compute(g) == 1);
  bm_node *gn = find_op(g, BM_OP_GROUP_NORM);
  CHECK(gn && gn->a.prog.n == 1 && gn->a.prog.nin == 1 && gn->a.prog.ins[0].op == BM_OP_SILU);
  CHECK(gn && gn->nin == 3);
  bm_module_destroy(m);
  free(wd);
  free(bd);
}

/* y = gelu(x @ w^T + bias) + residual: one MATMUL carrying the epilogue. */
static bm_graph *linear_graph(bm_module **m, float **wd, float **bd) {
  bm_graph *g = new_graph(m);
  int64_t sx[2] = {4, 8}, sw[2] = {6, 8}, sb[1] = {6}, sr[2] = {4, 6};
  *wd = rand_data(48, 5);
  *bd = rand_data(6, 6);
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 2, sx);
  bm_node *r = bm_input(g, "res", BM_DTYPE_F32, 2, sr);
  bm_node *w = bm_weight(g, "w", BM_DTYPE_F32, 2, sw, *wd, 48 * sizeof(float));
  bm_node *b = bm_weight(g, "b", BM_DTYPE_F32, 1, sb, *bd, 6 * sizeof(float));
  bm_node *y = bm_gelu(g, bm_linear(g, x, w, b));
  y = bm_add(g, r, y);                              /* the residual on the left */
  y = bm_mul(g, y, bm_scalar(g, 0.5f));             /* an immediate */
  bm_output_add(g, "y", y);
  return g;
}

static int supports_short_epilogues(const bm_node *n) { return n->a.prog.n <= 1; }

static void test_fuse_matmul_epilogue(void) {
  bm_module *m;
  float *wd, *bd;
  bm_graph *g = linear_graph(&m, &wd, &bd);
  const char *passes[] = {"fuse_epilogue", NULL};
  run_passes_and_compare(g, passes, 1e-5);
  CHECK(count_compute(g) == 1);
  bm_node *mm = find_op(g, BM_OP_MATMUL);
  CHECK(mm != NULL);
  if (mm) {
    const bm_prog *p = &mm->a.prog;
    CHECK(p->n == 4);
    CHECK(p->nin == 3);             /* result, bias, residual */
    CHECK(mm->nin == 4);
    CHECK(bm_node_base_nin(mm) == 2);
    CHECK(p->ins[0].op == BM_OP_ADD && p->ins[1].op == BM_OP_GELU && p->ins[2].op == BM_OP_ADD);
    CHECK(p->ins[3].op == BM_OP_MUL && (p->ins[3].flags & BM_PROG_IMM_B) && p->ins[3].imm == 0.5f);
  }
  bm_module_destroy(m);
  free(wd);
  free(bd);

  /* a backend that takes only one epilogue instruction: the rest stays */
  g = linear_graph(&m, &wd, &bd);
  bm_pass_options o = {.verify_each = true, .supports = supports_short_epilogues};
  inputs in;
  outputs before, after;
  make_inputs(g, 7, &in);
  run(g, &in, &before);
  CHECK_OK(bm_pass_run_named(g, "fuse_epilogue", &o));
  run(g, &in, &after);
  check_close(&after, &before, 1e-5);
  mm = find_op(g, BM_OP_MATMUL);
  CHECK(mm && mm->a.prog.n == 1);
  CHECK(count_op(g, BM_OP_GELU) == 1);
  free_outputs(&before);
  free_outputs(&after);
  free_inputs(&in);
  bm_module_destroy(m);
  free(wd);
  free(bd);
}

/* An epilogue operand that would grow the output is not fused. */
static void test_fuse_epilogue_shape_guard(void) {
  bm_module *m;
  bm_graph *g = new_graph(&m);
  int64_t sx[2] = {4, 8}, sw[2] = {6, 8}, sr[3] = {3, 4, 6};
  float *wd = rand_data(48, 9);
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 2, sx);
  bm_node *r = bm_input(g, "r", BM_DTYPE_F32, 3, sr);
  bm_node *w = bm_weight(g, "w", BM_DTYPE_F32, 2, sw, wd, 48 * sizeof(float));
  bm_output_add(g, "y", bm_add(g, bm_matmul(g, x, w, false, true), r)); // (3, 4, 6)
  const char *passes[] = {"fuse_epilogue", NULL};
  run_passes_and_compare(g, passes, 0);
  CHECK(count_op(g, BM_OP_ADD) == 1);
  bm_module_destroy(m);
  free(wd);
}

/* Many residual operands: the epilogue stops at BM_MAX_IN inputs; a
 * producer with two uses is left alone. */
static void test_fuse_epilogue_limits(void) {
  bm_module *m;
  bm_graph *g = new_graph(&m);
  int64_t sx[2] = {4, 8}, sw[2] = {6, 8}, sr[2] = {4, 6};
  float *wd = rand_data(48, 11);
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 2, sx);
  bm_node *w = bm_weight(g, "w", BM_DTYPE_F32, 2, sw, wd, 48 * sizeof(float));
  bm_node *y = bm_matmul(g, x, w, false, true);
  char name[16];
  for (int i = 0; i < 10; i++) {
    snprintf(name, sizeof name, "r%d", i);
    y = bm_add(g, y, bm_input(g, name, BM_DTYPE_F32, 2, sr));
  }
  bm_output_add(g, "y", y);
  bm_node *shared = bm_matmul(g, x, w, false, true);
  bm_output_add(g, "s1", bm_unary(g, BM_OP_TANH, shared));
  bm_output_add(g, "s2", shared);
  const char *passes[] = {"fuse_epilogue", NULL};
  run_passes_and_compare(g, passes, 1e-5);
  int with_epi = 0;
  for (int i = 0; i < g->nnodes; i++) {
    bm_node *n = g->nodes[i];
    if (n->op != BM_OP_MATMUL) continue;
    CHECK(n->nin <= BM_MAX_IN);
    if (n->a.prog.n > 0) {
      with_epi++;
      CHECK(n->a.prog.n == BM_MAX_IN - 2 && n->nin == BM_MAX_IN);
    }
  }
  CHECK(with_epi == 1);
  CHECK(count_op(g, BM_OP_ADD) == 10 - (BM_MAX_IN - 2));
  CHECK(count_op(g, BM_OP_TANH) == 1);
  bm_module_destroy(m);
  free(wd);
}

/* ------------------------------------------------------------------ fuse_elementwise */

static void test_fuse_elementwise_chain(void) {
  bm_module *m;
  bm_graph *g = new_graph(&m);
  int64_t sx[2] = {3, 5}, sy[1] = {5};
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 2, sx);
  bm_node *y = bm_input(g, "y", BM_DTYPE_F32, 1, sy);
  bm_node *t = bm_unary(g, BM_OP_EXP, x);
  t = bm_mul(g, t, y);                         /* broadcast leaf */
  t = bm_add(g, bm_scalar(g, 0.5f), t);        /* immediate (commuted) */
  t = bm_unary(g, BM_OP_TANH, t);
  t = bm_sub(g, bm_scalar(g, 2.0f), t);        /* non-commutative: scalar leaf */
  bm_output_add(g, "out", t);
  const char *passes[] = {"fuse_elementwise", NULL};
  run_passes_and_compare(g, passes, 1e-6);
  CHECK(count_compute(g) == 1);
  bm_node *f = find_op(g, BM_OP_FUSED);
  CHECK(f != NULL);
  if (f) {
    CHECK(f->a.prog.n == 5);
    CHECK(f->a.prog.nin == f->nin);
    CHECK(f->nin == 3); /* x, y, the 2.0 scalar */
  }
  bm_module_destroy(m);
}

/* A tree with many leaves and a long chain: limits are respected. */
static void test_fuse_elementwise_limits(void) {
  bm_module *m;
  bm_graph *g = new_graph(&m);
  int64_t s[1] = {16};
  bm_node *leaves[12];
  char name[16];
  for (int i = 0; i < 12; i++) {
    snprintf(name, sizeof name, "x%d", i);
    leaves[i] = bm_input(g, name, BM_DTYPE_F32, 1, s);
  }
  bm_node *t = leaves[0];
  for (int i = 1; i < 12; i++) t = bm_add(g, t, bm_unary(g, BM_OP_SIN, leaves[i]));
  for (int i = 0; i < 40; i++) t = bm_unary(g, i % 2 ? BM_OP_TANH : BM_OP_SIN, t);
  bm_output_add(g, "out", t);
  /* a shared intermediate is not duplicated */
  bm_node *sh = bm_unary(g, BM_OP_EXP, leaves[0]);
  bm_output_add(g, "o2", bm_add(g, sh, bm_unary(g, BM_OP_NEG, sh)));
  const char *passes[] = {"fuse_elementwise", NULL};
  run_passes_and_compare(g, passes, 1e-6);
  int nf = 0;
  for (int i = 0; i < g->nnodes; i++) {
    bm_node *n = g->nodes[i];
    if (n->op != BM_OP_FUSED) continue;
    nf++;
    CHECK(n->nin <= BM_MAX_IN && n->a.prog.n <= BM_MAX_PROG && n->a.prog.nin == n->nin);
  }
  CHECK(nf >= 3);
  CHECK(count_op(g, BM_OP_EXP) == 1);
  CHECK(count_compute(g) < 30);
  bm_module_destroy(m);
}

/* ------------------------------------------------------------------ plan_memory */

static bm_node *root_of(bm_node *n) {
  while (n->storage == BM_STORAGE_ALIAS) n = n->alias;
  return n;
}

/* Independent check of a memory plan: every arena buffer is aligned and
 * inside the arena, no two buffers live at the same time overlap, and no
 * kernel's output overlaps one of its inputs. Returns the sum of sizes. */
static int64_t check_plan(bm_graph *g) {
  int n = g->nnodes;
  int *start = calloc((size_t)n, sizeof *start), *end = calloc((size_t)n, sizeof *end);
  int64_t sum = 0;
  for (int i = 0; i < n; i++) {
    bm_node *x = g->nodes[i];
    x->id = i;
    start[i] = x->op == BM_OP_INPUT ? 0 : i;
    end[i] = i;
    if (x->op == BM_OP_WEIGHT || x->op == BM_OP_CONST) CHECK(x->storage == BM_STORAGE_WEIGHT);
    else if (x->op == BM_OP_RESHAPE) CHECK(x->storage == BM_STORAGE_ALIAS && x->alias);
    else CHECK(x->storage == BM_STORAGE_ARENA);
    if (x->storage == BM_STORAGE_ARENA) {
      CHECK(x->offset % 64 == 0);
      CHECK(x->nbytes > 0 && x->offset + x->nbytes <= g->arena_bytes);
      sum += x->nbytes;
    }
  }
  for (int i = 0; i < n; i++)
    for (int k = 0; k < g->nodes[i]->nin; k++) {
      bm_node *r = root_of(g->nodes[i]->in[k]);
      if (end[r->id] < i) end[r->id] = i;
    }
  for (int k = 0; k < g->noutputs; k++) end[root_of(g->outputs[k].node)->id] = n;
  for (int i = 0; i < n; i++) {
    bm_node *a = g->nodes[i];
    if (a->storage != BM_STORAGE_ARENA) continue;
    for (int j = i + 1; j < n; j++) {
      bm_node *b = g->nodes[j];
      if (b->storage != BM_STORAGE_ARENA) continue;
      bool live_together = start[i] <= end[j] && start[j] <= end[i];
      bool overlap = a->offset < b->offset + b->nbytes && b->offset < a->offset + a->nbytes;
      CHECK_MSG(!(live_together && overlap), "nodes %d and %d overlap while both live", i, j);
    }
    for (int k = 0; k < a->nin; k++) {
      bm_node *r = root_of(a->in[k]);
      if (r->storage != BM_STORAGE_ARENA) continue;
      CHECK(!(a->offset < r->offset + r->nbytes && r->offset < a->offset + a->nbytes));
    }
  }
  free(start);
  free(end);
  return sum;
}

static void test_plan_memory_chain(void) {
  bm_module *m;
  bm_graph *g = new_graph(&m);
  int64_t s[2] = {64, 64}, s2[1] = {4096};
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 2, s);
  bm_node *t = x;
  for (int i = 0; i < 20; i++) {
    t = bm_unary(g, i % 3 == 0 ? BM_OP_SIN : BM_OP_TANH, t);
    if (i == 7) t = bm_reshape(g, bm_reshape(g, t, 1, s2), 2, s); /* views */
    if (i == 10) t = bm_add(g, t, x);                          /* x stays live */
  }
  bm_output_add(g, "y", t);
  CHECK_OK(bm_graph_status(g));
  bm_pass_options o = {.verify_each = true};
  CHECK_OK(bm_pass_run_named(g, "plan_memory", &o));
  int64_t sum = check_plan(g);
  CHECK_MSG(g->arena_bytes < sum / 4, "arena %lld, sum %lld", (long long)g->arena_bytes, (long long)sum);
  CHECK(g->arena_bytes >= 3 * 64 * 64 * 4); /* x, a live input and the output of a kernel */
  bm_node *r = find_op(g, BM_OP_RESHAPE);
  CHECK(r && r->alias && r->alias->op != BM_OP_RESHAPE && r->alias->storage == BM_STORAGE_ARENA);
  /* the interpreter still runs the planned graph */
  inputs in;
  outputs out;
  make_inputs(g, 1, &in);
  run(g, &in, &out);
  free_outputs(&out);
  free_inputs(&in);
  bm_module_destroy(m);
}

/* Diamonds and symbolic shapes, through the whole pipeline. */
static void test_plan_memory_pipeline(void) {
  bm_module *m;
  bm_graph *g = new_graph(&m);
  int seq = bm_sym_declare(g, "seq", 32);
  int64_t s[2] = {BM_SYM(seq), 16}, sw[2] = {16, 16};
  float *wd = rand_data(256, 4);
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 2, s);
  bm_node *w = bm_weight(g, "w", BM_DTYPE_F32, 2, sw, wd, sizeof(float) * 256);
  bm_node *h = x;
  for (int i = 0; i < 6; i++) {
    bm_node *a = bm_matmul(g, h, w, false, true);
    bm_node *b = bm_softmax(g, h, 1);
    h = bm_add(g, bm_unary(g, BM_OP_TANH, a), b);
  }
  bm_output_add(g, "h", h);
  bm_output_add(g, "first", x);
  bm_pass_options o = {.verify_each = true};
  CHECK_OK(bm_pipeline_run(g, &o));
  check_plan(g);
  CHECK(x->nbytes == 32 * 16 * 4);
  bm_module_destroy(m);
  free(wd);
}

static void test_plan_memory_overflow(void) {
  bm_module *m;
  bm_graph *g = new_graph(&m);
  int big = bm_sym_declare(g, "big", (int64_t)1 << 40);
  int64_t s[2] = {BM_SYM(big), 1 << 20};
  bm_node *x = bm_input(g, "huge", BM_DTYPE_F32, 2, s);
  bm_output_add(g, "y", bm_unary(g, BM_OP_EXP, x));
  CHECK_OK(bm_graph_status(g)); /* legal IR: only the memory plan cannot hold it */
  bm_pass_options o = {0};
  CHECK_ERR(bm_pass_run_named(g, "plan_memory", &o), BM_ERR_OUT_OF_MEMORY, "huge");
  bm_module_destroy(m);
}

/* ------------------------------------------------------------------ pipeline */

typedef struct print_log {
  char names[32][32];
  int n;
  int nodes_after_epilogue;
} print_log;

static void log_print(const char *pass, const bm_graph *g, void *user) {
  print_log *l = user;
  if (l->n < 32) snprintf(l->names[l->n++], sizeof l->names[0], "%s", pass);
  if (strcmp(pass, "fuse_epilogue") == 0) l->nodes_after_epilogue = g->nnodes;
}

static void test_pipeline(void) {
  for (int no_fuse = 0; no_fuse < 2; no_fuse++) {
    bm_module *m;
    float *wd, *bd;
    bm_graph *g = linear_graph(&m, &wd, &bd);
    inputs in;
    outputs before, after;
    make_inputs(g, 3, &in);
    run(g, &in, &before);
    print_log log = {0};
    bm_pass_options o = {.verify_each = true, .no_fuse = no_fuse, .print_after = "fuse_epilogue",
                         .print = log_print, .print_user = &log};
    CHECK_OK(bm_pipeline_run(g, &o));
    run(g, &in, &after);
    check_close(&after, &before, 1e-5);
    if (!no_fuse) {
      CHECK(log.n == 1 && strcmp(log.names[0], "fuse_epilogue") == 0);
      CHECK(log.nodes_after_epilogue > 0);
      CHECK(count_compute(g) == 1);
    } else {
      CHECK(log.n == 0); /* the fusion pass did not run */
      CHECK(count_compute(g) == 5);
    }
    CHECK(g->arena_bytes > 0);
    free_outputs(&before);
    free_outputs(&after);
    free_inputs(&in);
    bm_module_destroy(m);
    free(wd);
    free(bd);
  }

  /* "all" prints after every pass; a bad name is an error */
  bm_module *m;
  float *wd, *bd;
  bm_graph *g = linear_graph(&m, &wd, &bd);
  print_log log = {0};
  bm_pass_options o = {.print_after = "all", .print = log_print, .print_user = &log};
  CHECK_OK(bm_pipeline_run(g, &o));
  CHECK(log.n == bm_pipeline_len);
  CHECK(strcmp(log.names[0], "shape") == 0 && strcmp(log.names[log.n - 1], "plan_memory") == 0);
  o.print_after = "no_such_pass";
  CHECK_ERR(bm_pipeline_run(g, &o), BM_ERR_INVALID_ARGUMENT, "no_such_pass");
  CHECK_ERR(bm_pass_run_named(g, "nope", &o), BM_ERR_NOT_FOUND, "nope");
  bm_module_destroy(m);
  free(wd);
  free(bd);
}

/* The built-in tiny model through the whole pipeline: same results, and
 * the fusions it was written to exercise happened. */
static void test_pipeline_tiny_model(void) {
  bm_model_options mo = {.seed = 1, .max_batch = 1};
  bm_module *m = NULL;
  bm_weight_source *src = NULL;
  CHECK_OK(bm_model_build("tiny", &mo, &m, &src));
  if (!m) {
    bm_weight_source_close(src);
    return;
  }
  bm_graph *g = m->graphs[0];
  inputs in;
  outputs before, after;
  make_inputs(g, 5, &in);
  run(g, &in, &before);
  int softmax_before = count_op(g, BM_OP_SOFTMAX);
  bm_pass_options o = {.verify_each = true};
  CHECK_OK(bm_pipeline_run(g, &o));
  run(g, &in, &after);
  check_close(&after, &before, 1e-4);
  CHECK(count_op(g, BM_OP_ATTENTION) >= 1);
  CHECK(count_op(g, BM_OP_ATTENTION) == softmax_before - 1); /* all but the final probs */
  CHECK(count_op(g, BM_OP_SILU) == 0);                       /* GroupNorm+SiLU everywhere */
  for (int i = 0; i < g->nnodes; i++)
    if (g->nodes[i]->op == BM_OP_GROUP_NORM) CHECK(g->nodes[i]->a.prog.n == 1);
  check_plan(g);
  free_outputs(&before);
  free_outputs(&after);
  free_inputs(&in);
  bm_module_destroy(m);
  bm_weight_source_close(src);
}

int main(void) {
  RUN(test_shape_pass);
  RUN(test_dce);
  RUN(test_fold_constants);
  RUN(test_fold_algebra);
  RUN(test_cse);
  RUN(test_cse_programs);
  RUN(test_fuse_attention);
  RUN(test_fuse_dequant);
  RUN(test_fuse_group_norm_silu);
  RUN(test_fuse_matmul_epilogue);
  RUN(test_fuse_epilogue_shape_guard);
  RUN(test_fuse_epilogue_limits);
  RUN(test_fuse_elementwise_chain);
  RUN(test_fuse_elementwise_limits);
  RUN(test_plan_memory_chain);
  RUN(test_plan_memory_pipeline);
  RUN(test_plan_memory_overflow);
  RUN(test_pipeline);
  RUN(test_pipeline_tiny_model);
  return bm_test_finish();
}
