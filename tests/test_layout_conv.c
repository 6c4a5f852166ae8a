/* test_layout_conv.c - the layout_conv pass (CONV2D -> NHWC x, (O, KH, KW, Cg)
 * weights where the backend supports it): the interpreter gives the same
 * result before and after, refused or odd convs stay as they were, the
 * NHWC conv's shape checks and text form, and which CUDA kernel it gets. */
#include <stdlib.h>
#include <string.h>

#include "../codegen/codegen.h"
#include "../passes/passes.h"
#include "cuda_source.h"
#include "opcheck.h"
#include "testutil.h"

static int yes(const bm_node *n) { return n != NULL; }
static int no_nhwc(const bm_node *n) { return !(n->op == BM_OP_CONV2D && n->a.layout == BM_CONV_NHWC); }

static int count_nhwc(const bm_graph *g) {
  int c = 0;
  for (int i = 0; i < g->nnodes; i++) c += g->nodes[i]->op == BM_OP_CONV2D && g->nodes[i]->a.layout == BM_CONV_NHWC;
  return c;
}
static int count_op(const bm_graph *g, bm_op op) {
  int c = 0;
  for (int i = 0; i < g->nnodes; i++) c += g->nodes[i]->op == op;
  return c;
}

/* a bound (o, c, k, k) weight of dtype t, values in [-0.3, 0.3) */
static bm_node *weight(bm_graph *g, const char *name, bm_dtype t, int64_t o, int64_t c, int64_t k, uint64_t seed) {
  int64_t n = o * c * k * k;
  size_t es = bm_dtype_nbytes(t, 1);
  void *d = bm_arena_alloc(g->module->arena, (size_t)n * es);
  uint64_t st = seed;
  for (int64_t i = 0; d && i < n; i++) bm_store_f32(d, t, i, bm_test_rand_uniform(&st, -0.3f, 0.3f));
  return bm_weight(g, name, t, 4, (int64_t[]){o, c, k, k}, d, (size_t)n * es);
}

typedef struct conv_cfg {
  bm_dtype t;
  int64_t nb, c, h, w, o;
  int k, stride, pad, dil, groups;
  bool bias, winput; /* winput: w is a graph input (the pass permutes it at run time) */
} conv_cfg;

/* y = conv(x, w, b) and a second conv of the same x (the permute of x is shared) */
static bm_graph *conv_graph(bm_module *m, const conv_cfg *c, bool two) {
  bm_graph *g = bm_graph_create(m, "main");
  bm_node *x = bm_input(g, "x", c->t, 4, (int64_t[]){c->nb, c->c, c->h, c->w});
  bm_node *w = c->winput ? bm_input(g, "w", c->t, 4, (int64_t[]){c->o, c->c / c->groups, c->k, c->k})
                         : weight(g, "w", c->t, c->o, c->c / c->groups, c->k, 3);
  bm_node *b = c->bias ? bm_input(g, "b", c->t, 1, (int64_t[]){c->o}) : NULL;
  bm_output_add(g, "y", bm_conv2d(g, x, w, b, c->stride, c->stride, c->pad, c->pad, c->dil, c->dil, c->groups));
  if (two) bm_output_add(g, "y2", bm_conv2d(g, x, weight(g, "w2", c->t, 64, c->c, 1, 9), NULL, 1, 1, 0, 0, 1, 1, 1));
  return g;
}

/* Runs layout_conv with `supports`; returns the largest |after - before| of
 * the interpreter's outputs relative to max|before|. */
static double run_pass(bm_graph *g, int (*supports)(const bm_node *)) {
  bm_tensor in[4], before[2], after[2];
  memset(in, 0, sizeof in), memset(before, 0, sizeof before), memset(after, 0, sizeof after);
  CHECK_OK(bm_opcheck_random_inputs(g, NULL, 5, in));
  CHECK_OK(bm_interp_run(g, in, before));
  bm_pass_options po = {.verify_each = true, .supports = supports};
  CHECK_OK(bm_pass_run_named(g, "layout_conv", &po));
  CHECK_OK(bm_graph_verify(g));
  CHECK_OK(bm_interp_run(g, in, after));
  double d = 0, mx = 0;
  for (int o = 0; o < g->noutputs; o++) {
    int64_t n = before[o].data && after[o].data ? bm_tensor_numel(&before[o]) : 0;
    CHECK(n > 0);
    for (int64_t i = 0; i < n; i++) {
      double r = bm_load_f32(before[o].data, before[o].dtype, i), v = bm_load_f32(after[o].data, after[o].dtype, i);
      mx = r < 0 ? (-r > mx ? -r : mx) : (r > mx ? r : mx);
      d = (v > r ? v - r : r - v) > d ? (v > r ? v - r : r - v) : d;
    }
  }
  for (int i = 0; i < 4; i++) bm_tensor_free(&in[i]);
  for (int i = 0; i < 2; i++) bm_tensor_free(&before[i]), bm_tensor_free(&after[i]);
  CHECK(mx > 0.01);
  return mx > 0 ? d / mx : d;
}

/* rewritten: the same values (the interpreter sums in the same order, so
 * exactly), the weight reordered at compile time (no permute of it) or
 * permuted at run time when it is an input; one permute of a shared x */
static void test_rewrite_same_result(void) {
  const conv_cfg cs[] = {
      {BM_DTYPE_F32, 2, 64, 9, 7, 24, 3, 1, 1, 1, 1, true, false},   {BM_DTYPE_F16, 1, 16, 8, 8, 8, 3, 2, 1, 1, 1, false, false},
      {BM_DTYPE_BF16, 1, 8, 10, 6, 8, 3, 1, 2, 2, 2, true, false},  {BM_DTYPE_F32, 2, 12, 5, 5, 6, 1, 1, 0, 1, 1, false, true},
      {BM_DTYPE_F32, 1, 64, 6, 6, 16, 3, 1, 1, 1, 1, false, false},
  };
  for (int i = 0; i < (int)(sizeof cs / sizeof *cs); i++) {
    bm_module *m = bm_module_create("t");
    const bool two = i == 4;
    bm_graph *g = conv_graph(m, &cs[i], two);
    double d = run_pass(g, yes);
    CHECK_MSG(d == 0, "case %d: |after - before| / max|before| = %g", i, d);
    CHECK_MSG(count_nhwc(g) == (two ? 2 : 1), "case %d: %d NHWC convs", i, count_nhwc(g));
    /* x permuted once; w too when it is an input */
    CHECK_MSG(count_op(g, BM_OP_PERMUTE) == 1 + cs[i].winput, "case %d: %d permutes", i, count_op(g, BM_OP_PERMUTE));
    for (int j = 0; j < g->nnodes; j++) {
      const bm_node *n = g->nodes[j];
      if (n->op == BM_OP_CONV2D) CHECK(n->in[0]->op == BM_OP_PERMUTE && n->in[0]->shape[3].add == cs[i].c);
      if (n->op == BM_OP_CONV2D && !cs[i].winput)
        CHECK(n->in[1]->op == BM_OP_WEIGHT && strstr(n->in[1]->name, ".ohwi") != NULL);
    }
    bm_module_destroy(m);
  }
}

/* two convs of one weight: one reordered weight node */
static void test_shared_weight(void) {
  bm_module *m = bm_module_create("t");
  bm_graph *g = bm_graph_create(m, "main");
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 4, (int64_t[]){1, 8, 6, 6});
  bm_node *w = weight(g, "w", BM_DTYPE_F32, 8, 8, 3, 4);
  bm_node *y = bm_conv2d(g, x, w, NULL, 1, 1, 1, 1, 1, 1, 1);
  bm_output_add(g, "y", bm_conv2d(g, y, w, NULL, 1, 1, 1, 1, 1, 1, 1));
  double d = run_pass(g, yes);
  CHECK(d == 0);
  CHECK(count_nhwc(g) == 2 && count_op(g, BM_OP_WEIGHT) == 1);
  bm_module_destroy(m);
}

/* no capability hook, or a backend that refuses the NHWC form (the CPU): unchanged */
static void test_refused_unchanged(void) {
  const bm_backend *cpu = NULL;
  bm_status s = bm_backend_find("cpu", &cpu);
  bm_status_free(s);
  int (*sup[])(const bm_node *) = {NULL, no_nhwc, cpu ? cpu->supports : no_nhwc};
  for (int i = 0; i < 3; i++) {
    bm_module *m = bm_module_create("t");
    conv_cfg c = {BM_DTYPE_F32, 1, 64, 8, 8, 16, 3, 1, 1, 1, 1, true, false};
    bm_graph *g = conv_graph(m, &c, false);
    int nn = g->nnodes;
    double d = run_pass(g, sup[i]);
    CHECK(d == 0);
    CHECK_MSG(count_nhwc(g) == 0 && count_op(g, BM_OP_PERMUTE) == 0 && g->nnodes == nn, "hook %d rewrote", i);
    bm_module_destroy(m);
  }
}

/* the CUDA backend's predicate (bm_clike_supports -> ck_conv_nhwc_ok): f16/bf16,
 * channels a multiple of 64, stride 1 (or 2 with OW 2..128 dividing 256),
 * groups 1, OW dividing 256 or a multiple of it, OH*OW >= 256, static
 * spatial dims; everything else keeps NCHW */
static void test_cuda_predicate(void) {
  struct { conv_cfg c; bool sym; bool want; } t[] = {
      {{BM_DTYPE_F16, 1, 64, 16, 16, 128, 3, 1, 1, 1, 1, true, false}, false, true},
      {{BM_DTYPE_BF16, 2, 128, 8, 64, 64, 1, 1, 0, 1, 1, false, false}, false, true},
      {{BM_DTYPE_F16, 1, 64, 16, 16, 128, 3, 1, 1, 1, 1, true, true}, false, true},    /* w an input */
      {{BM_DTYPE_F16, 1, 40, 16, 16, 128, 3, 1, 1, 1, 1, true, false}, false, false},  /* 40 channels */
      {{BM_DTYPE_F16, 1, 64, 32, 32, 128, 3, 2, 1, 1, 1, true, false}, false, true},   /* stride 2 (16x16) */
      {{BM_DTYPE_F16, 1, 128, 16, 16, 128, 3, 1, 1, 1, 2, true, false}, false, false}, /* groups */
      {{BM_DTYPE_F16, 1, 64, 8, 8, 128, 3, 1, 1, 1, 1, true, false}, false, false},    /* 64 positions */
      {{BM_DTYPE_F16, 1, 64, 16, 24, 128, 3, 1, 1, 1, 1, true, false}, false, false},  /* OW 24 */
      {{BM_DTYPE_F32, 1, 64, 16, 16, 128, 3, 1, 1, 1, 1, true, false}, false, false},  /* f32 */
      {{BM_DTYPE_F16, 1, 64, 16, 16, 128, 3, 1, 1, 1, 1, true, false}, true, false},   /* symbolic height */
  };
  for (int i = 0; i < (int)(sizeof t / sizeof *t); i++) {
    bm_module *m = bm_module_create("t");
    bm_graph *g;
    if (t[i].sym) {
      g = bm_graph_create(m, "main");
      int64_t xs[4] = {1, 64, BM_SYM(bm_sym_declare(g, "h", 32)), 16};
      bm_node *x = bm_input(g, "x", BM_DTYPE_F16, 4, xs);
      bm_output_add(g, "y", bm_conv2d(g, x, weight(g, "w", BM_DTYPE_F16, 128, 64, 3, 3), NULL, 1, 1, 1, 1, 1, 1, 1));
    } else {
      g = conv_graph(m, &t[i].c, false);
    }
    bm_pass_options po = {.supports = bm_clike_supports};
    CHECK_OK(bm_pass_run_named(g, "layout_conv", &po));
    CHECK_MSG(count_nhwc(g) == (int)t[i].want, "case %d: %d NHWC convs, want %d", i, count_nhwc(g), t[i].want);
    bm_module_destroy(m);
  }
  /* BM_CUDA_CONV=old keeps the NCHW kernel */
  setenv("BM_CUDA_CONV", "old", 1);
  bm_module *m = bm_module_create("t");
  bm_graph *g = conv_graph(m, &t[0].c, false);
  bm_pass_options po = {.supports = bm_clike_supports};
  CHECK_OK(bm_pass_run_named(g, "layout_conv", &po));
  CHECK(count_nhwc(g) == 0);
  unsetenv("BM_CUDA_CONV");
  bm_module_destroy(m);
  /* BM_CUDA_CONV_S2=0 keeps stride 2 on the NCHW kernel */
  setenv("BM_CUDA_CONV_S2", "0", 1);
  m = bm_module_create("t");
  g = conv_graph(m, &t[4].c, false);
  CHECK_OK(bm_pass_run_named(g, "layout_conv", &po));
  CHECK_MSG(count_nhwc(g) == 0, "BM_CUDA_CONV_S2=0: %d NHWC convs", count_nhwc(g));
  bm_module_destroy(m);
  /* stride 2 (the default; BM_CUDA_CONV_S2=1 as well): OW 2..128 dividing 256 (the strided box: 2 OW columns) */
  setenv("BM_CUDA_CONV_S2", "1", 1);
  struct { conv_cfg c; bool want; } s2[] = {
      {{BM_DTYPE_F16, 1, 64, 32, 32, 128, 3, 2, 1, 1, 1, true, false}, true},    /* 16x16 */
      {{BM_DTYPE_BF16, 2, 128, 64, 64, 320, 3, 2, 1, 1, 1, true, false}, true},  /* 32x32 */
      {{BM_DTYPE_F16, 1, 64, 4, 512, 64, 3, 2, 1, 1, 1, false, false}, false},   /* OW 256 */
      {{BM_DTYPE_F16, 1, 64, 48, 24, 64, 3, 2, 1, 1, 1, false, false}, false},   /* OW 12 */
      {{BM_DTYPE_F16, 1, 64, 46, 46, 64, 3, 3, 1, 1, 1, false, false}, false},   /* stride 3 (16x16) */
  };
  for (int i = 0; i < (int)(sizeof s2 / sizeof *s2); i++) {
    m = bm_module_create("t");
    g = conv_graph(m, &s2[i].c, false);
    CHECK_OK(bm_pass_run_named(g, "layout_conv", &po));
    CHECK_MSG(count_nhwc(g) == (int)s2[i].want, "stride 2 case %d: %d NHWC convs, want %d", i, count_nhwc(g),
              s2[i].want);
    bm_module_destroy(m);
  }
  unsetenv("BM_CUDA_CONV_S2");
}

/* the generated CUDA: the TMA conv (a 4-d box per K step, the tmd2 record);
 * by default multicast in clusters of 2 when ceil(O / 128) is even (O 256),
 * without clusters when odd (O 320); BM_CUDA_CONV=tma_n256s4c2e forces
 * clusters, tma_n256s4e none, old the im2col gather */
static void test_cuda_source(void) {
  struct { const char *env; int64_t o; int want; } t[] = { /* want: 0 multicast, 1 plain 4-d load, 2 gather */
      {NULL, 256, 0}, {NULL, 320, 1}, {"tma_n256s4c2e", 320, 0}, {"tma_n256s4e", 256, 1}, {"old", 256, 2}};
  for (int i = 0; i < (int)(sizeof t / sizeof *t); i++) {
    if (t[i].env) setenv("BM_CUDA_CONV", t[i].env, 1);
    bm_module *m = bm_module_create("t");
    bm_graph *g = bm_graph_create(m, "main");
    bm_node *x = bm_input(g, "x", BM_DTYPE_F16, 4, (int64_t[]){2, 320, 64, 64});
    bm_output_add(g, "y", bm_silu(g, bm_conv2d(g, x, weight(g, "w", BM_DTYPE_F16, t[i].o, 320, 3, 1), NULL, 1, 1, 1,
                                               1, 1, 1, 1)));
    char *src = bm_test_cuda_source(m, g);
    CHECK(src != NULL);
    if (src) {
      CHECK_MSG((strstr(src, "bm_tma_load4d_mc(sa") != NULL) == (t[i].want == 0), "case %d: multicast 4-d load", i);
      CHECK_MSG((strstr(src, "bm_tma_load4d(sa") != NULL) == (t[i].want == 1), "case %d: 4-d load", i);
      CHECK_MSG((strstr(src, "xv[j] = ok ?") != NULL) == (t[i].want == 2), "case %d: im2col gather", i);
      CHECK((strstr(src, "845442420ll") != NULL) == (t[i].want != 2)); /* "tmd2" */
    }
    free(src);
    bm_module_destroy(m);
    if (t[i].env) unsetenv("BM_CUDA_CONV");
  }
}

/* count of needle in hay */
static int count_str(const char *hay, const char *needle) {
  int c = 0;
  for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle)) c++;
  return c;
}

/* the NHWC conv's other bodies (owner: conv2): the mma.sync tile with B rows by
 * cp.async from NHWC x (tc_load_conv_nhwc), once as the sm_90a kernel's
 * no-maps fallback and once under #else (sm_80/86/89, the PTX); no scalar
 * tile and no static shared memory in the kernel (the TMA body needs 225 of
 * the 227 KiB); the 384-thread launch of the TMA body */
static void test_cuda_fallback_source(void) {
  bm_module *m = bm_module_create("t");
  bm_graph *g = bm_graph_create(m, "main");
  bm_node *x = bm_input(g, "x", BM_DTYPE_BF16, 4, (int64_t[]){1, 128, 16, 32});
  bm_output_add(g, "y", bm_conv2d(g, x, weight(g, "w", BM_DTYPE_BF16, 320, 128, 3, 3), NULL, 1, 1, 1, 1, 1, 1, 1));
  char *src = bm_test_cuda_source(m, g);
  CHECK(src != NULL);
  const char *kern = src ? strstr(src, "_conv2d(") : NULL;
  CHECK(kern != NULL);
  if (kern) {
    CHECK(strstr(src, "__launch_bounds__(384, 1)") != NULL);
    /* two bodies, each loading in its prologue and its main loop */
    CHECK_MSG(count_str(kern, "tap = gk / Cin") == 4, "NHWC cp.async B loads: %d", count_str(kern, "tap = gk / Cin"));
    CHECK(count_str(kern, "bm_mma_bf16(") == 2);
    CHECK(strstr(kern, "As[16][68]") == NULL); /* no scalar tile */
    CHECK(strstr(kern, "bm_sm[") == NULL);     /* no static shared memory */
    CHECK(strstr(kern, "xb[i]") == NULL);      /* no register-staged im2col */
    CHECK(strstr(kern, "bm_tma_load4d(sa") != NULL);
  }
  free(src);
  bm_module_destroy(m);
}

/* shape inference of the NHWC form names the layout; the text form keeps it */
static void test_shape_and_text(void) {
  bm_module *m = bm_module_create("t");
  bm_graph *g = bm_graph_create(m, "main");
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 4, (int64_t[]){1, 6, 5, 8});
  bm_node *w = bm_input(g, "w", BM_DTYPE_F32, 4, (int64_t[]){4, 3, 3, 8});
  bm_attrs a = {0};
  a.stride[0] = a.stride[1] = a.dilation[0] = a.dilation[1] = a.groups = 1;
  a.pad[0] = a.pad[1] = 1;
  a.layout = BM_CONV_NHWC;
  bm_node *in[2] = {x, w};
  bm_node *y = bm_node_make(g, BM_OP_CONV2D, 2, in, &a);
  CHECK(y != NULL);
  if (y) CHECK(y->shape[0].add == 1 && y->shape[1].add == 4 && y->shape[2].add == 6 && y->shape[3].add == 5);
  bm_output_add(g, "y", y);
  char *txt = NULL;
  CHECK_OK(bm_graph_to_text(g, &txt));
  CHECK(txt && strstr(txt, "layout=1") != NULL);
  bm_module *m2 = bm_module_create("t2");
  bm_graph *g2 = NULL;
  CHECK_OK(bm_graph_parse(m2, txt, &g2));
  if (g2) CHECK(count_nhwc(g2) == 1);
  free(txt);
  bm_module_destroy(m2);
  /* x NCHW given to an NHWC conv: channels do not match */
  bm_node *xb = bm_input(g, "xb", BM_DTYPE_F32, 4, (int64_t[]){1, 8, 6, 5});
  in[0] = xb;
  CHECK(bm_node_make(g, BM_OP_CONV2D, 2, in, &a) == NULL);
  bm_status e = bm_graph_status(g); /* borrowed */
  CHECK(e && bm_status_code(e) == BM_ERR_INVALID_ARGUMENT && strstr(bm_status_message(e), "channels do not match"));
  bm_module_destroy(m);
  /* an unknown layout */
  m = bm_module_create("t");
  g = bm_graph_create(m, "main");
  in[0] = bm_input(g, "x", BM_DTYPE_F32, 4, (int64_t[]){1, 8, 6, 5});
  in[1] = bm_input(g, "w", BM_DTYPE_F32, 4, (int64_t[]){4, 8, 3, 3});
  a.layout = 7;
  CHECK(bm_node_make(g, BM_OP_CONV2D, 2, in, &a) == NULL);
  e = bm_graph_status(g);
  CHECK(e && strstr(bm_status_message(e), "layout must be") != NULL);
  bm_module_destroy(m);
}

int main(void) {
  RUN(test_rewrite_same_result);
  RUN(test_shared_weight);
  RUN(test_refused_unchanged);
  RUN(test_cuda_predicate);
  RUN(test_cuda_source);
  RUN(test_cuda_fallback_source);
  RUN(test_shape_and_text);
  return bm_test_finish();
}
